//! Retention of the platform tables: rows older than `[retention]` says are deleted by
//! `processor prune` (or counted, on a dry run). The ledger is kept for ever unless the
//! config says otherwise (see `shared::config::MIN_LEDGER_RETENTION_DAYS`).

use std::time::{Duration, SystemTime};

use shared::config::RetentionSettings;
use tokio_postgres::GenericClient;

use super::WarehouseError;
use super::connection::{Connection, statement_error};
use super::files::file_loads_table;
use super::sql::{ledger_table, rejects_table};
use super::streams::stream_loads_table;

/// What to prune: the cut-off time of each table (rows older go), `None` keeps the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PruneRequest {
    pub rejects_before: Option<SystemTime>,
    pub file_loads_before: Option<SystemTime>,
    pub ledger_before: Option<SystemTime>,
    /// Count what would go; delete nothing.
    pub dry_run: bool,
}

impl PruneRequest {
    /// The cut-offs of `retention` as of `now`.
    pub fn new(retention: &RetentionSettings, now: SystemTime, dry_run: bool) -> Self {
        let before = |keep: Option<Duration>| keep.and_then(|keep| now.checked_sub(keep));
        Self {
            rejects_before: before(retention.rejects),
            file_loads_before: before(retention.file_loads),
            ledger_before: before(retention.ledger),
            dry_run,
        }
    }

    /// Each table with its cut-off; stream progress goes with the ledger.
    pub(crate) fn tables(&self) -> [(PlatformTable, Option<SystemTime>); 4] {
        [
            (PlatformTable::Rejects, self.rejects_before),
            (PlatformTable::FileLoads, self.file_loads_before),
            (PlatformTable::Ledger, self.ledger_before),
            (PlatformTable::StreamLoads, self.ledger_before),
        ]
    }
}

/// A platform table retention applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PlatformTable {
    Rejects,
    FileLoads,
    Ledger,
    StreamLoads,
}

impl PlatformTable {
    /// The column whose time decides a row's age. A file's progress row ages from its
    /// completion only: a file still missing parts stays until it is looked into.
    pub(crate) fn time_column(self) -> &'static str {
        match self {
            PlatformTable::Rejects => "rejected_at",
            PlatformTable::FileLoads => "completed_at",
            PlatformTable::Ledger | PlatformTable::StreamLoads => "loaded_at",
        }
    }

    /// The table in a PostgreSQL or Redshift schema, quoted.
    fn quoted_name(self, schema: &str) -> String {
        match self {
            PlatformTable::Rejects => rejects_table(schema),
            PlatformTable::FileLoads => file_loads_table(schema),
            PlatformTable::Ledger => ledger_table(schema),
            PlatformTable::StreamLoads => stream_loads_table(schema),
        }
    }
}

/// Rows pruned (or, on a dry run, that would be) per table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneReport {
    pub rejects: u64,
    pub file_loads: u64,
    pub ledger: u64,
    pub stream_loads: u64,
}

impl PruneReport {
    pub(crate) fn add(&mut self, table: PlatformTable, rows: u64) {
        match table {
            PlatformTable::Rejects => self.rejects += rows,
            PlatformTable::FileLoads => self.file_loads += rows,
            PlatformTable::Ledger => self.ledger += rows,
            PlatformTable::StreamLoads => self.stream_loads += rows,
        }
    }
}

/// The statement that prunes (or counts) the rows of `table`, stored as `name`, older than
/// the one parameter (`placeholder`: `$1` for PostgreSQL and Redshift, `?1` for SQLite).
pub(crate) fn prune_statement(
    name: &str,
    table: PlatformTable,
    placeholder: &str,
    dry_run: bool,
) -> String {
    let condition = format!("\"{}\" < {placeholder}", table.time_column());
    if dry_run {
        format!("SELECT count(*) FROM {name} WHERE {condition}")
    } else {
        format!("DELETE FROM {name} WHERE {condition}")
    }
}

/// Prunes the platform tables of `schema` on PostgreSQL or Redshift, one statement (and
/// one commit) per table: each is complete on its own, so an interrupted prune is simply
/// run again.
pub(crate) async fn prune(
    connection: &Connection,
    schema: &str,
    request: &PruneRequest,
) -> Result<PruneReport, WarehouseError> {
    let client = connection.client().await?;
    let mut report = PruneReport::default();
    for (table, before) in request.tables() {
        let Some(before) = before else { continue };
        let rows = prune_table(&*client, schema, table, before, request.dry_run).await?;
        report.add(table, rows);
    }
    Ok(report)
}

async fn prune_table(
    client: &impl GenericClient,
    schema: &str,
    table: PlatformTable,
    before: SystemTime,
    dry_run: bool,
) -> Result<u64, WarehouseError> {
    let statement = prune_statement(&table.quoted_name(schema), table, "$1", dry_run);
    let failed = statement_error("(platform)", "pruning the platform tables");
    if dry_run {
        let row = client
            .query_one(&statement, &[&before])
            .await
            .map_err(failed)?;
        Ok(row.get::<_, i64>(0).unsigned_abs())
    } else {
        client.execute(&statement, &[&before]).await.map_err(failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_offs_follow_the_retention_and_the_ledger_is_kept_by_default() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(400 * 86_400);
        let request = PruneRequest::new(&RetentionSettings::default(), now, false);
        let ninety_days_ago = now - Duration::from_secs(90 * 86_400);
        assert_eq!(request.rejects_before, Some(ninety_days_ago));
        assert_eq!(request.file_loads_before, Some(ninety_days_ago));
        assert_eq!(request.ledger_before, None);
        let (file_loads, ledger) = (PlatformTable::FileLoads, PlatformTable::Ledger);
        assert_eq!(
            prune_statement(&file_loads.quoted_name("ingest"), file_loads, "$1", false),
            "DELETE FROM \"ingest\".\"file_loads\" WHERE \"completed_at\" < $1"
        );
        assert_eq!(
            prune_statement(&ledger.quoted_name("ingest"), ledger, "$1", true),
            "SELECT count(*) FROM \"ingest\".\"load_ledger\" WHERE \"loaded_at\" < $1"
        );
        let streams = PlatformTable::StreamLoads;
        assert_eq!(
            prune_statement(&streams.quoted_name("ingest"), streams, "$1", false),
            "DELETE FROM \"ingest\".\"stream_loads\" WHERE \"loaded_at\" < $1"
        );
        assert!(
            request
                .tables()
                .contains(&(PlatformTable::StreamLoads, request.ledger_before)),
            "stream progress goes with the ledger"
        );
    }
}
