//! What loaded, per dataset, since a time (`processor status` and the `/status` page):
//! work items, rows loaded and rejected, and files completed, counted in the ledger and
//! the `file_loads` table — counted, never estimated. One statement builder serves every
//! sink; the only bound value is the window's start.

use std::collections::BTreeMap;
use std::time::SystemTime;

use super::WarehouseError;
use super::connection::Connection;
use super::platform_query::{Bound, Dialect, WIRE, query_wire};

/// What to count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActivityQuery {
    /// Loads committed at or after this time.
    pub since: SystemTime,
    /// The width of one point of the rows-over-time series, in milliseconds.
    pub bucket_ms: i64,
    /// A file counts as incomplete once its first part loaded before this and others have
    /// not (parts of a file being loaded are not yet a problem).
    pub incomplete_before: SystemTime,
}

/// One dataset's loads in the window.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DatasetActivity {
    pub dataset: String,
    /// Work items of files (whole files or parts of split ones) loaded.
    pub file_items: u64,
    /// Work items of stream records loaded.
    pub stream_items: u64,
    /// Rows inserted or updated.
    pub rows_loaded: u64,
    pub rows_rejected: u64,
    /// The last load's commit, milliseconds since the epoch.
    pub last_loaded_ms: Option<i64>,
    /// When the newest stream record loaded in the window arrived in its stream
    /// (`stream_loads`), milliseconds since the epoch.
    pub last_arrival_ms: Option<i64>,
    /// Files whose last part loaded in the window.
    pub files_completed: u64,
    /// Files whose first part loaded in the window, before
    /// [`ActivityQuery::incomplete_before`], with parts still to load.
    pub files_incomplete: u64,
    /// Rows per point of time, oldest first; points without loads are left out.
    pub series: Vec<ActivityPoint>,
}

/// Rows loaded and rejected in one bucket of time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ActivityPoint {
    /// The bucket's start, milliseconds since the epoch.
    pub start_ms: i64,
    pub rows_loaded: u64,
    pub rows_rejected: u64,
}

/// The statements of one count: the ledger's with the window's start as their parameter,
/// `file_totals` with the window's start and the incomplete cut-off.
pub(crate) struct ActivityStatements {
    /// dataset, file items, stream items, rows loaded, rows rejected, last load (ms).
    pub ledger_totals: String,
    /// dataset, bucket number, rows loaded, rows rejected.
    pub ledger_series: String,
    /// dataset, files completed, files incomplete.
    pub file_totals: String,
    /// dataset, newest arrival (ms).
    pub stream_totals: String,
    pub ledger_bound: Vec<Bound>,
    pub file_bound: Vec<Bound>,
}

pub(crate) fn statements(
    (ledger, file_loads, stream_loads): (&str, &str, &str),
    query: &ActivityQuery,
    dialect: &Dialect,
) -> ActivityStatements {
    let since = (dialect.placeholder)(1);
    let loaded_at = (dialect.epoch_millis)("\"loaded_at\"");
    let sum = |column: &str| format!("CAST(COALESCE(SUM(\"{column}\"), 0) AS bigint)");
    let (loaded, rejected) = (sum("rows_loaded"), sum("rows_rejected"));
    ActivityStatements {
        ledger_totals: format!(
            "SELECT \"dataset\", COUNT(CASE WHEN \"source\" LIKE 's3://%' THEN 1 END), COUNT(CASE WHEN \"source\" LIKE 'kinesis://%' THEN 1 END), {loaded}, {rejected}, MAX({loaded_at}) FROM {ledger} WHERE \"loaded_at\" >= {since} GROUP BY \"dataset\""
        ),
        ledger_series: format!(
            "SELECT \"dataset\", {loaded_at} / {}, {loaded}, {rejected} FROM {ledger} WHERE \"loaded_at\" >= {since} GROUP BY 1, 2",
            query.bucket_ms.max(1)
        ),
        file_totals: format!(
            "SELECT \"dataset\", COUNT(CASE WHEN \"completed_at\" IS NOT NULL THEN 1 END), COUNT(CASE WHEN \"completed_at\" IS NULL AND \"first_loaded_at\" < {cutoff} THEN 1 END) FROM {file_loads} WHERE \"completed_at\" >= {since} OR (\"completed_at\" IS NULL AND \"first_loaded_at\" >= {since}) GROUP BY \"dataset\"",
            cutoff = (dialect.placeholder)(2)
        ),
        stream_totals: format!(
            "SELECT \"dataset\", MAX({}) FROM {stream_loads} WHERE \"loaded_at\" >= {since} GROUP BY \"dataset\"",
            (dialect.epoch_millis)("\"newest_arrival_at\"")
        ),
        ledger_bound: vec![Bound::Time(query.since)],
        file_bound: vec![
            Bound::Time(query.since),
            Bound::Time(query.incomplete_before),
        ],
    }
}

/// A row of [`ActivityStatements::ledger_totals`].
pub(crate) type LedgerTotals = (String, i64, i64, i64, i64, Option<i64>);
/// A row of [`ActivityStatements::ledger_series`].
pub(crate) type SeriesRow = (String, i64, i64, i64);
/// A row of [`ActivityStatements::file_totals`].
pub(crate) type FileTotals = (String, i64, i64);
/// A row of [`ActivityStatements::stream_totals`].
pub(crate) type StreamTotals = (String, Option<i64>);

/// The rows of the four statements.
#[derive(Debug, Default)]
pub(crate) struct ActivityRows {
    pub totals: Vec<LedgerTotals>,
    pub series: Vec<SeriesRow>,
    pub files: Vec<FileTotals>,
    pub streams: Vec<StreamTotals>,
}

/// The statements' rows as one activity per dataset, by name.
pub(crate) fn assemble(query: &ActivityQuery, rows: ActivityRows) -> Vec<DatasetActivity> {
    let ActivityRows {
        totals,
        series,
        files,
        streams,
    } = rows;
    let count = |n: i64| n.unsigned_abs();
    let mut datasets: BTreeMap<String, DatasetActivity> = BTreeMap::new();
    for (name, file_items, stream_items, loaded, rejected, last) in totals {
        let activity = datasets.entry(name.clone()).or_default();
        activity.dataset = name;
        activity.file_items = count(file_items);
        activity.stream_items = count(stream_items);
        activity.rows_loaded = count(loaded);
        activity.rows_rejected = count(rejected);
        activity.last_loaded_ms = last;
    }
    for (name, bucket, loaded, rejected) in series {
        let activity = datasets.entry(name.clone()).or_default();
        activity.dataset = name;
        activity.series.push(ActivityPoint {
            start_ms: bucket.saturating_mul(query.bucket_ms.max(1)),
            rows_loaded: count(loaded),
            rows_rejected: count(rejected),
        });
    }
    for (name, completed, incomplete) in files {
        let activity = datasets.entry(name.clone()).or_default();
        activity.dataset = name;
        activity.files_completed = count(completed);
        activity.files_incomplete = count(incomplete);
    }
    for (name, newest) in streams {
        let activity = datasets.entry(name.clone()).or_default();
        activity.dataset = name;
        activity.last_arrival_ms = newest;
    }
    let mut list: Vec<DatasetActivity> = datasets.into_values().collect();
    for activity in &mut list {
        activity.series.sort_by_key(|point| point.start_ms);
    }
    list
}

/// Counts over the PostgreSQL wire (PostgreSQL, Redshift); `tables`: the ledger,
/// `file_loads` and `stream_loads`.
pub(crate) async fn count(
    connection: &Connection,
    tables: (&str, &str, &str),
    query: &ActivityQuery,
) -> Result<Vec<DatasetActivity>, WarehouseError> {
    let statements = statements(tables, query, &WIRE);
    let bound = || statements.ledger_bound.clone();
    let action = "counting loads";
    let totals = query_wire(connection, &statements.ledger_totals, bound(), action).await?;
    let series = query_wire(connection, &statements.ledger_series, bound(), action).await?;
    let file_bound = statements.file_bound.clone();
    let files = query_wire(connection, &statements.file_totals, file_bound, action).await?;
    let streams = query_wire(connection, &statements.stream_totals, bound(), action).await?;
    let rows = ActivityRows {
        totals: totals
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
            .collect(),
        series: series
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect(),
        files: files
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect(),
        streams: streams.iter().map(|r| (r.get(0), r.get(1))).collect(),
    };
    Ok(assemble(query, rows))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::warehouse::platform_query::{SQLITE, WIRE};

    #[test]
    fn the_window_start_is_the_only_bound_value() {
        let query = ActivityQuery {
            since: SystemTime::UNIX_EPOCH,
            bucket_ms: 3_600_000,
            incomplete_before: SystemTime::UNIX_EPOCH,
        };
        let tables = (
            "\"ingest\".\"ledger\"",
            "\"ingest\".\"file_loads\"",
            "\"ingest\".\"stream_loads\"",
        );
        let wire = statements(tables, &query, &WIRE);
        assert_eq!((wire.ledger_bound.len(), wire.file_bound.len()), (1, 2));
        assert!(
            wire.ledger_totals
                .contains("\"loaded_at\" >= $1 GROUP BY \"dataset\"")
        );
        assert!(
            wire.ledger_series.contains("/ 3600000"),
            "{}",
            wire.ledger_series
        );
        assert!(wire.file_totals.contains("\"completed_at\" >= $1 OR"));
        assert!(wire.file_totals.contains("\"first_loaded_at\" < $2"));
        assert!(wire.stream_totals.contains("\"loaded_at\" >= $1"));
        let tables = ("ingest_ledger", "ingest_file_loads", "ingest_stream_loads");
        let sqlite = statements(tables, &query, &SQLITE);
        assert!(
            sqlite.ledger_totals.contains(">= ?1"),
            "{}",
            sqlite.ledger_totals
        );
        assert!(sqlite.ledger_series.contains("julianday"));
        assert!(
            sqlite
                .stream_totals
                .contains("FROM ingest_stream_loads WHERE")
        );
    }

    #[test]
    fn rows_of_the_four_statements_make_one_activity_per_dataset() {
        let query = ActivityQuery {
            since: SystemTime::UNIX_EPOCH,
            bucket_ms: 1000,
            incomplete_before: SystemTime::UNIX_EPOCH,
        };
        let rows = ActivityRows {
            totals: vec![("orders".into(), 2, 1, 30, 3, Some(5_000))],
            series: vec![
                ("orders".into(), 4, 10, 1),
                ("orders".into(), 3, 20, 2),
                ("events".into(), 4, 0, 0),
            ],
            files: vec![("orders".into(), 1, 1)],
            streams: vec![("orders".into(), Some(4_000))],
        };
        let list = assemble(&query, rows);
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].dataset, "events");
        let orders = &list[1];
        assert_eq!((orders.file_items, orders.stream_items), (2, 1));
        assert_eq!((orders.rows_loaded, orders.rows_rejected), (30, 3));
        assert_eq!((orders.files_completed, orders.files_incomplete), (1, 1));
        assert_eq!(orders.last_arrival_ms, Some(4_000));
        assert_eq!(orders.series[0].start_ms, 3000);
        assert_eq!(orders.series[1].rows_loaded, 10);
    }
}
