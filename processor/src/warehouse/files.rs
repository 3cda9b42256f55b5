//! File completion: which parts of each file have loaded, so that exactly one `file
//! loaded` announcement follows the last part, even when parts finish on different tasks
//! at the same moment.
//!
//! The `file_loads` table (platform schema) has one row per file load. The load
//! transaction of each part adds the part to its file's row — under a lock on that row's
//! file (an advisory lock in PostgreSQL, a table lock in Redshift, which has none), so two
//! parts committing together count one after the other — and the part that brings the
//! count to the total stamps `completed_at`, in the same transaction as its rows and
//! ledger entry. Afterwards a worker *claims* the completed file (at most one claim is
//! live at a time), announces it, and marks it `published_at`; a claim not marked within
//! [`CLAIM_TIMEOUT_SECS`] may be taken again, so a worker that died mid-announcement
//! delays the event instead of losing it.

use shared::envelope::FileItem;
use tokio_postgres::Transaction;
use tokio_postgres::types::ToSql;

use super::WarehouseError;
use super::connection::Connection;
use super::protocol::LoadedPart;
use super::sql::{Dialect, POSTGRES, quote_ident};

/// How long a claimed, unannounced completion stays with its claimer.
pub(crate) const CLAIM_TIMEOUT_SECS: u32 = 120;

/// The file an item is one part of (a whole file is its only part).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePart {
    pub file_id: String,
    pub dataset: String,
    pub bucket: String,
    pub key: String,
    pub version_id: Option<String>,
    pub etag: String,
    pub parts_total: i32,
}

impl FilePart {
    pub fn of(item: &FileItem) -> Self {
        Self {
            file_id: item.file_id(),
            dataset: item.dataset.clone(),
            bucket: item.bucket.clone(),
            key: item.key.clone(),
            version_id: item.version_id.clone(),
            etag: shared::envelope::normalize_etag(&item.etag),
            parts_total: i32::try_from(item.parts_total()).unwrap_or(i32::MAX),
        }
    }
}

/// A file whose every part has loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCompletion {
    pub file_id: String,
    /// Identifies this claim: only its holder can end it.
    pub claim_token: String,
    pub dataset: String,
    pub bucket: String,
    pub key: String,
    pub version_id: Option<String>,
    pub etag: String,
    pub parts: i32,
    pub rows_loaded: i64,
    pub rows_rejected: i64,
}

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Parts are still missing (or the file is unknown): nothing to announce yet.
    NotComplete,
    /// Complete and this caller holds the claim: announce, then mark it published.
    Claimed(FileCompletion),
    /// Another worker claimed it moments ago and has not marked it published yet.
    ClaimedElsewhere,
    /// Already announced.
    Published,
}

/// The `file_loads` table of the platform schema, quoted.
pub(crate) fn file_loads_table(schema: &str) -> String {
    format!("{}.\"file_loads\"", quote_ident(schema))
}

pub(crate) fn create_file_loads(schema: &str, dialect: Dialect) -> String {
    let (text, timestamp, now) = (dialect.text, dialect.timestamp, dialect.now);
    format!(
        "CREATE TABLE IF NOT EXISTS {} (\n  \"file_id\" {text} NOT NULL PRIMARY KEY,\n  \"dataset\" {text} NOT NULL,\n  \"bucket\" {text} NOT NULL,\n  \"object_key\" {text} NOT NULL,\n  \"version_id\" {text},\n  \"etag\" {text} NOT NULL,\n  \"parts_total\" integer NOT NULL,\n  \"parts_loaded\" integer NOT NULL,\n  \"rows_loaded\" bigint NOT NULL,\n  \"rows_rejected\" bigint NOT NULL,\n  \"first_loaded_at\" {timestamp} NOT NULL DEFAULT {now},\n  \"completed_at\" {timestamp},\n  \"claimed_at\" {timestamp},\n  \"claim_token\" {text},\n  \"published_at\" {timestamp}\n){}",
        file_loads_table(schema),
        super::sql::platform_sort_key(dialect, "first_loaded_at")
    )
}

/// Serialises writers of one file's row: an advisory lock on the file id in PostgreSQL,
/// a lock on the table in Redshift (no advisory locks there).
fn lock_statement(table: &str, dialect: Dialect) -> (String, bool) {
    if dialect == POSTGRES {
        (
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 1))".to_owned(),
            true,
        )
    } else {
        (format!("LOCK {table}"), false)
    }
}

async fn lock_file(
    tx: &Transaction<'_>,
    table: &str,
    dialect: Dialect,
    file_id: &str,
    dataset: &str,
) -> Result<(), WarehouseError> {
    let (statement, takes_id) = lock_statement(table, dialect);
    let params: Vec<&(dyn ToSql + Sync)> = if takes_id { vec![&file_id] } else { vec![] };
    tx.execute(&statement, &params)
        .await
        .map_err(super::connection::statement_error(
            dataset,
            "locking the file's progress row",
        ))?;
    Ok(())
}

/// Adds loaded parts to their files' rows, inside the load transaction; the part that
/// completes a file stamps `completed_at`.
pub(crate) async fn record_parts(
    tx: &Transaction<'_>,
    table: &str,
    dialect: Dialect,
    parts: &[LoadedPart],
) -> Result<(), WarehouseError> {
    let now = dialect.now;
    let update = format!(
        "UPDATE {table} SET \"parts_loaded\" = \"parts_loaded\" + 1, \"rows_loaded\" = \"rows_loaded\" + $2, \"rows_rejected\" = \"rows_rejected\" + $3, \"completed_at\" = CASE WHEN \"parts_loaded\" + 1 >= \"parts_total\" THEN {now} ELSE NULL END WHERE \"file_id\" = $1"
    );
    let insert = format!(
        "INSERT INTO {table} (\"file_id\", \"dataset\", \"bucket\", \"object_key\", \"version_id\", \"etag\", \"parts_total\", \"parts_loaded\", \"rows_loaded\", \"rows_rejected\", \"completed_at\") VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, $9, CASE WHEN $10::boolean THEN {now} ELSE NULL END)"
    );
    for LoadedPart {
        part,
        rows,
        rejected,
    } in parts
    {
        let dataset = part.dataset.as_str();
        lock_file(tx, table, dialect, &part.file_id, dataset).await?;
        let updated = tx
            .execute(&update, &[&part.file_id, rows, rejected])
            .await
            .map_err(super::connection::statement_error(
                dataset,
                "counting the file's parts",
            ))?;
        if updated == 0 {
            let complete = part.parts_total <= 1;
            tx.execute(
                &insert,
                &[
                    &part.file_id,
                    &part.dataset,
                    &part.bucket,
                    &part.key,
                    &part.version_id,
                    &part.etag,
                    &part.parts_total,
                    rows,
                    rejected,
                    &complete,
                ],
            )
            .await
            .map_err(super::connection::statement_error(
                dataset,
                "recording the file's first part",
            ))?;
        }
    }
    Ok(())
}

/// A new claim token of `claimant`: the claimant, then a random part, so a retry of the
/// same claimant knows its own claim and a stale attempt's token ends nothing.
pub(crate) fn new_claim_token(claimant: &str) -> String {
    format!("{claimant}/{:016x}", rand::random::<u64>())
}

/// Whether a live claim's token is `claimant`'s.
pub(crate) fn claimed_by(token: Option<&str>, claimant: &str) -> bool {
    token
        .and_then(|token| token.rsplit_once('/'))
        .is_some_and(|(holder, _)| holder == claimant)
}

/// What a claim by `claimant` finds in a file's row when it cannot take the claim;
/// `None` when it can (the file is complete, unpublished, and unclaimed, its claim timed
/// out, or the live claim is the claimant's own). Every warehouse decides by this.
pub(crate) fn unclaimable(
    complete: bool,
    published: bool,
    live_claim: bool,
    token: Option<&str>,
    claimant: &str,
) -> Option<Claim> {
    if published {
        Some(Claim::Published)
    } else if !complete {
        Some(Claim::NotComplete)
    } else if live_claim && !claimed_by(token, claimant) {
        Some(Claim::ClaimedElsewhere)
    } else {
        None
    }
}

/// Claims a completed, unannounced file for announcement by `claimant`.
pub async fn claim(
    connection: &Connection,
    table: &str,
    dialect: Dialect,
    file_id: &str,
    claimant: &str,
) -> Result<Claim, WarehouseError> {
    let now = dialect.now;
    let select = format!(
        "SELECT \"dataset\", \"bucket\", \"object_key\", \"version_id\", \"etag\", \"parts_total\", \"rows_loaded\", \"rows_rejected\", \"completed_at\" IS NOT NULL, \"published_at\" IS NOT NULL, \"claimed_at\" IS NOT NULL AND \"claimed_at\" > {now} - INTERVAL '{CLAIM_TIMEOUT_SECS} seconds', \"claim_token\" FROM {table} WHERE \"file_id\" = $1"
    );
    let mark = format!(
        "UPDATE {table} SET \"claimed_at\" = {now}, \"claim_token\" = $2 WHERE \"file_id\" = $1"
    );
    let action = "claiming a completed file";
    let mut client = connection.client().await?;
    let tx = client
        .transaction()
        .await
        .map_err(super::connection::statement_error("(platform)", action))?;
    lock_file(&tx, table, dialect, file_id, "(platform)").await?;
    let Some(row) = tx
        .query_opt(&select, &[&file_id])
        .await
        .map_err(super::connection::statement_error("(platform)", action))?
    else {
        return Ok(Claim::NotComplete);
    };
    let (complete, published, claimed): (bool, bool, bool) = (row.get(8), row.get(9), row.get(10));
    let token: Option<String> = row.get(11);
    let claim = if let Some(found) =
        unclaimable(complete, published, claimed, token.as_deref(), claimant)
    {
        found
    } else {
        let claim_token = new_claim_token(claimant);
        tx.execute(&mark, &[&file_id, &claim_token])
            .await
            .map_err(super::connection::statement_error("(platform)", action))?;
        Claim::Claimed(FileCompletion {
            file_id: file_id.to_owned(),
            claim_token,
            dataset: row.get(0),
            bucket: row.get(1),
            key: row.get(2),
            version_id: row.get(3),
            etag: row.get(4),
            parts: row.get(5),
            rows_loaded: row.get(6),
            rows_rejected: row.get(7),
        })
    };
    tx.commit()
        .await
        .map_err(super::connection::statement_error("(platform)", action))?;
    Ok(claim)
}

/// Marks a claimed file announced (`published`), or gives the claim back (`false`) when
/// announcing failed, so the next attempt need not wait for the claim to time out. Only
/// the claim's holder can do either: a claim that timed out and was taken by another
/// worker is left alone.
pub(crate) async fn finish_claim(
    connection: &Connection,
    table: &str,
    dialect: Dialect,
    completion: &FileCompletion,
    published: bool,
) -> Result<(), WarehouseError> {
    let statement = if published {
        format!(
            "UPDATE {table} SET \"published_at\" = {} WHERE \"file_id\" = $1 AND \"claim_token\" = $2",
            dialect.now
        )
    } else {
        format!(
            "UPDATE {table} SET \"claimed_at\" = NULL, \"claim_token\" = NULL WHERE \"file_id\" = $1 AND \"claim_token\" = $2"
        )
    };
    let client = connection.client().await?;
    client
        .execute(&statement, &[&completion.file_id, &completion.claim_token])
        .await
        .map_err(super::connection::statement_error(
            "(platform)",
            "finishing a file's claim",
        ))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::warehouse::sql::REDSHIFT;

    #[test]
    fn a_claim_token_names_its_claimant() {
        let token = new_claim_token("5fa3-message");
        assert!(claimed_by(Some(&token), "5fa3-message"));
        assert!(!claimed_by(Some(&token), "5fa3"));
        assert!(!claimed_by(Some(&token), "another"));
        assert!(
            claimed_by(Some("a/b/0123"), "a/b"),
            "the claimant may hold a slash"
        );
        assert!(
            !claimed_by(Some("0123456789abcdef"), ""),
            "a token without a claimant"
        );
        assert!(!claimed_by(None, "5fa3-message"));
        assert_ne!(new_claim_token("m"), new_claim_token("m"));
    }

    #[test]
    fn each_dialect_locks_its_own_way() {
        let table = file_loads_table("ingest");
        assert_eq!(table, "\"ingest\".\"file_loads\"");
        assert_eq!(
            lock_statement(&table, POSTGRES),
            (
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 1))".to_owned(),
                true
            )
        );
        assert_eq!(
            lock_statement(&table, REDSHIFT),
            ("LOCK \"ingest\".\"file_loads\"".to_owned(), false)
        );
        let ddl = create_file_loads("ingest", REDSHIFT);
        assert!(
            ddl.contains("\"file_id\" VARCHAR(65535) NOT NULL PRIMARY KEY"),
            "{ddl}"
        );
        assert!(ddl.contains("\"completed_at\" TIMESTAMP,"), "{ddl}");
    }
}
