//! Reading the platform tables for the operator's commands (`rejects`, `status`): what
//! differs between the sinks' SQL, and bound values turned into each driver's parameters.
//! Values are always bound, never written into the SQL.

use std::time::SystemTime;

use rusqlite::types::Value;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::WarehouseError;
use super::connection::{Connection, statement_error};
use crate::timefmt::iso_utc_millis;

/// A bound value of a WHERE clause.
#[derive(Debug, Clone)]
pub(crate) enum Bound {
    Text(String),
    Time(SystemTime),
}

/// How a sink writes what the platform queries need.
pub(crate) struct Dialect {
    /// The parameter numbered `n` (from 1).
    pub placeholder: fn(usize) -> String,
    /// "`haystack` contains `needle`".
    pub contains: fn(&str, &str) -> String,
    /// A time column as whole milliseconds since the Unix epoch (a `bigint`).
    pub epoch_millis: fn(&str) -> String,
}

/// PostgreSQL and Redshift (whose `TIMESTAMP` columns hold UTC). Redshift's
/// `EXTRACT(EPOCH …)` of a `TIMESTAMP` is an `INTEGER` of whole seconds and its
/// `MILLISECOND` the milliseconds alone; PostgreSQL's are fractional, its `MILLISECOND`
/// counts the seconds too: whole seconds × 1000 in `bigint`, plus milliseconds modulo
/// 1000, is the same on both (r_EXTRACT_function.html).
pub(crate) const WIRE: Dialect = Dialect {
    placeholder: |n| format!("${n}"),
    contains: |haystack, needle| format!("POSITION({needle} IN {haystack}) > 0"),
    epoch_millis: |column| {
        format!(
            "(CAST(FLOOR(EXTRACT(EPOCH FROM {column})) AS bigint) * 1000 + CAST(FLOOR(EXTRACT(MILLISECOND FROM {column})) AS bigint) % 1000)"
        )
    },
};

/// SQLite, whose times are ISO 8601 text in UTC.
pub(crate) const SQLITE: Dialect = Dialect {
    placeholder: |n| format!("?{n}"),
    contains: |haystack, needle| format!("instr({haystack}, {needle}) > 0"),
    epoch_millis: |column| {
        format!("CAST(ROUND((julianday({column}) - 2440587.5) * 86400000.0) AS integer)")
    },
};

/// Runs `sql` with `bound` over the PostgreSQL wire (PostgreSQL, Redshift).
pub(crate) async fn query_wire(
    connection: &Connection,
    sql: &str,
    bound: Vec<Bound>,
    action: &'static str,
) -> Result<Vec<Row>, WarehouseError> {
    let params: Vec<Box<dyn ToSql + Sync + Send>> = bound
        .into_iter()
        .map(|value| -> Box<dyn ToSql + Sync + Send> {
            match value {
                Bound::Text(text) => Box::new(text),
                Bound::Time(time) => Box::new(time),
            }
        })
        .collect();
    let refs: Vec<&(dyn ToSql + Sync)> = params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect();
    let client = connection.client().await?;
    client
        .query(sql, &refs)
        .await
        .map_err(statement_error("(platform)", action))
}

/// `bound` as SQLite values: times as ISO 8601 text in UTC, the form the tables hold, so
/// they compare.
pub(crate) fn sqlite_values(bound: Vec<Bound>) -> Vec<Value> {
    bound
        .into_iter()
        .map(|value| match value {
            Bound::Text(text) => Value::Text(text),
            Bound::Time(time) => Value::Text(iso_utc_millis(shared::stream::epoch_millis(time))),
        })
        .collect()
}
