//! What the platform tables know of one file (`processor trace`): the ledger entries of its
//! work items, by idempotency key, and its row in `file_loads`. Lookups by primary key;
//! one statement builder serves every sink.

use super::WarehouseError;
use super::connection::Connection;
use super::platform_query::{Bound, Dialect, WIRE, query_wire};

/// The most keys one lookup takes (a file of more parts is looked up in chunks).
pub const MAX_KEYS: usize = 500;

/// A work item the ledger holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LedgerEntry {
    pub idempotency_key: String,
    pub rows_loaded: i64,
    pub rows_rejected: i64,
    pub loaded_at_ms: i64,
}

/// A file's row in `file_loads`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FileLoadRow {
    pub parts_total: i64,
    pub parts_loaded: i64,
    pub rows_loaded: i64,
    pub rows_rejected: i64,
    pub first_loaded_at_ms: Option<i64>,
    pub completed_at_ms: Option<i64>,
    /// When its `File Loaded` event was sent.
    pub published_at_ms: Option<i64>,
}

/// The ledger lookup of `keys` (at most [`MAX_KEYS`]).
pub(crate) fn ledger_statement(
    ledger: &str,
    keys: &[String],
    dialect: &Dialect,
) -> (String, Vec<Bound>) {
    let placeholders: Vec<String> = (1..=keys.len()).map(dialect.placeholder).collect();
    let sql = format!(
        "SELECT \"idempotency_key\", CAST(\"rows_loaded\" AS bigint), CAST(\"rows_rejected\" AS bigint), {} FROM {ledger} WHERE \"idempotency_key\" IN ({})",
        (dialect.epoch_millis)("\"loaded_at\""),
        placeholders.join(", ")
    );
    (sql, keys.iter().cloned().map(Bound::Text).collect())
}

/// The `file_loads` lookup of `file_id`.
pub(crate) fn file_statement(
    file_loads: &str,
    file_id: &str,
    dialect: &Dialect,
) -> (String, Vec<Bound>) {
    let epoch = |column: &str| (dialect.epoch_millis)(&format!("\"{column}\""));
    let sql = format!(
        "SELECT CAST(\"parts_total\" AS bigint), CAST(\"parts_loaded\" AS bigint), CAST(\"rows_loaded\" AS bigint), CAST(\"rows_rejected\" AS bigint), {}, {}, {} FROM {file_loads} WHERE \"file_id\" = {}",
        epoch("first_loaded_at"),
        epoch("completed_at"),
        epoch("published_at"),
        (dialect.placeholder)(1)
    );
    (sql, vec![Bound::Text(file_id.to_owned())])
}

/// Looks both up over the PostgreSQL wire (PostgreSQL, Redshift).
pub(crate) async fn find(
    connection: &Connection,
    ledger: &str,
    file_loads: &str,
    keys: &[String],
    file_id: &str,
) -> Result<(Vec<LedgerEntry>, Option<FileLoadRow>), WarehouseError> {
    let mut entries = Vec::new();
    for chunk in keys.chunks(MAX_KEYS) {
        let (sql, bound) = ledger_statement(ledger, chunk, &WIRE);
        let rows = query_wire(connection, &sql, bound, "reading the ledger").await?;
        entries.extend(rows.iter().map(|r| LedgerEntry {
            idempotency_key: r.get(0),
            rows_loaded: r.get(1),
            rows_rejected: r.get(2),
            loaded_at_ms: r.get(3),
        }));
    }
    let (sql, bound) = file_statement(file_loads, file_id, &WIRE);
    let rows = query_wire(connection, &sql, bound, "reading the file's loads").await?;
    let file = rows.first().map(|r| FileLoadRow {
        parts_total: r.get(0),
        parts_loaded: r.get(1),
        rows_loaded: r.get(2),
        rows_rejected: r.get(3),
        first_loaded_at_ms: r.get(4),
        completed_at_ms: r.get(5),
        published_at_ms: r.get(6),
    });
    Ok((entries, file))
}
