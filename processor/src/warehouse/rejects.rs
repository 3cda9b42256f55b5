//! Finding rejected rows (`processor rejects`): by dataset, source, reason and time, newest
//! first, one bounded page at a time. The filters a query has become a WHERE clause with
//! one bound parameter each (values are data, never SQL); the page bounds are numbers.
//! One statement builder serves the wire sinks (PostgreSQL, Redshift) and SQLite.

use std::time::SystemTime;

use super::WarehouseError;
use super::connection::Connection;
use super::platform_query::{Bound, Dialect, WIRE, query_wire};
use crate::timefmt::iso_utc_millis;

/// The most rows one page holds.
pub const MAX_PAGE: u32 = 1000;

/// Which rejects to find.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectQuery {
    pub dataset: Option<String>,
    /// A part of the source URL (`s3://bucket/key`, `kinesis://stream/shard/…`).
    pub source: Option<String>,
    /// A part of the reason.
    pub reason: Option<String>,
    /// Only rejects of these work items (by idempotency key); empty: any.
    pub keys: Vec<String>,
    /// Rejected at or after this time.
    pub since: Option<SystemTime>,
    /// At most this many rows (up to [`MAX_PAGE`]), after skipping `offset`.
    pub limit: u32,
    pub offset: u32,
}

/// One rejected row.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FoundReject {
    pub dataset: String,
    pub source: String,
    pub row_number: Option<i64>,
    /// The row as it was read (personal data may be in it).
    pub raw: Option<String>,
    pub reason: String,
    /// ISO 8601, UTC.
    pub rejected_at: String,
}

/// The SELECT of a query on `table` and its bound values, in placeholder order.
pub(crate) fn statement(
    table: &str,
    query: &RejectQuery,
    dialect: &Dialect,
) -> (String, Vec<Bound>) {
    let mut conditions = Vec::new();
    let mut bound = Vec::new();
    let mut next = |value: Bound| {
        bound.push(value);
        (dialect.placeholder)(bound.len())
    };
    if let Some(dataset) = &query.dataset {
        conditions.push(format!(
            "\"dataset\" = {}",
            next(Bound::Text(dataset.clone()))
        ));
    }
    if let Some(source) = &query.source {
        let needle = next(Bound::Text(source.clone()));
        conditions.push((dialect.contains)("\"source\"", &needle));
    }
    if let Some(reason) = &query.reason {
        let needle = next(Bound::Text(reason.clone()));
        conditions.push((dialect.contains)("\"reason\"", &needle));
    }
    if !query.keys.is_empty() {
        let placeholders: Vec<String> = query
            .keys
            .iter()
            .map(|key| next(Bound::Text(key.clone())))
            .collect();
        conditions.push(format!(
            "\"idempotency_key\" IN ({})",
            placeholders.join(", ")
        ));
    }
    if let Some(since) = query.since {
        conditions.push(format!("\"rejected_at\" >= {}", next(Bound::Time(since))));
    }
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    };
    let sql = format!(
        "SELECT \"dataset\", \"source\", \"row_number\", \"raw\", \"reason\", \"rejected_at\" FROM {table}{filter} ORDER BY \"rejected_at\" DESC, \"source\", \"row_number\", \"reason\", \"idempotency_key\" LIMIT {} OFFSET {}",
        query.limit.clamp(1, MAX_PAGE),
        query.offset
    );
    (sql, bound)
}

/// Finds rejects in `table` over the PostgreSQL wire (PostgreSQL, Redshift).
pub(crate) async fn find(
    connection: &Connection,
    table: &str,
    query: &RejectQuery,
) -> Result<Vec<FoundReject>, WarehouseError> {
    let (sql, bound) = statement(table, query, &WIRE);
    let rows = query_wire(connection, &sql, bound, "reading the rejects").await?;
    Ok(rows
        .iter()
        .map(|row| FoundReject {
            dataset: row.get(0),
            source: row.get(1),
            row_number: row.get(2),
            raw: row.get(3),
            reason: row.get(4),
            rejected_at: iso_utc_millis(shared::stream::epoch_millis(row.get::<_, SystemTime>(5))),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::warehouse::platform_query::SQLITE;

    #[test]
    fn only_the_filters_given_are_bound_and_the_page_is_bounded() {
        let query = RejectQuery {
            dataset: Some("orders".into()),
            source: None,
            reason: Some("'; DROP TABLE x; --".into()),
            keys: Vec::new(),
            since: None,
            limit: 5000,
            offset: 20,
        };
        let (sql, bound) = statement("\"ingest\".\"rejects\"", &query, &WIRE);
        assert_eq!(
            sql,
            "SELECT \"dataset\", \"source\", \"row_number\", \"raw\", \"reason\", \"rejected_at\" FROM \"ingest\".\"rejects\" WHERE \"dataset\" = $1 AND POSITION($2 IN \"reason\") > 0 ORDER BY \"rejected_at\" DESC, \"source\", \"row_number\", \"reason\", \"idempotency_key\" LIMIT 1000 OFFSET 20"
        );
        assert_eq!(bound.len(), 2);
        let (sql, _) = statement(
            "ingest_rejects",
            &RejectQuery {
                dataset: None,
                reason: None,
                limit: 1,
                ..query
            },
            &SQLITE,
        );
        assert!(sql.contains("FROM ingest_rejects ORDER BY"), "{sql}");
    }
}
