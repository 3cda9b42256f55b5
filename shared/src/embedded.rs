//! The embedded database of the local platform: one SQLite file that holds the work
//! queue (`queue::EmbeddedQueue`, the SQS semantics the platform relies on) and the
//! stream log (`stream::EmbeddedStream`, the Kinesis semantics it relies on); the local
//! warehouse can share it. Both implement the same interfaces as SQS and Kinesis, and the
//! same contract tests run against both.
//!
//! Everything is durable across a restart of the process: the file is opened in WAL mode
//! and every call is one transaction. SQLite calls block, so they run on tokio's blocking
//! threads.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rusqlite::Connection;

use crate::error::{BoxError, Classify, Retryability, report};
use crate::retry::EntryReport;
use crate::stream::epoch_millis;

/// How long a call waits for another connection's write transaction to end.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS queue_messages (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  queue TEXT NOT NULL,
  message_id TEXT NOT NULL,
  body TEXT NOT NULL,
  attributes TEXT NOT NULL,
  sent_at_ms INTEGER NOT NULL,
  visible_at_ms INTEGER NOT NULL,
  receive_count INTEGER NOT NULL DEFAULT 0,
  receipt TEXT
);
CREATE INDEX IF NOT EXISTS queue_messages_ready ON queue_messages (queue, visible_at_ms, id);
CREATE INDEX IF NOT EXISTS queue_messages_receipt ON queue_messages (receipt);
CREATE TABLE IF NOT EXISTS streams (
  name TEXT PRIMARY KEY,
  shard_count INTEGER NOT NULL,
  retention_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS stream_records (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  stream TEXT NOT NULL,
  shard_id TEXT NOT NULL,
  partition_key TEXT NOT NULL,
  data BLOB NOT NULL,
  arrival_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS stream_records_shard ON stream_records (stream, shard_id, seq);
CREATE INDEX IF NOT EXISTS stream_records_arrival ON stream_records (stream, shard_id, arrival_ms);
";

/// A failure of the embedded database.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error("cannot open embedded database {path}")]
    Open { path: PathBuf, source: BoxError },
    #[error("embedded database, {action}")]
    Sql {
        action: &'static str,
        source: rusqlite::Error,
    },
    #[error("embedded database, {action}: the blocking task failed")]
    Task {
        action: &'static str,
        source: tokio::task::JoinError,
    },
}

impl Classify for EmbeddedError {
    /// A busy or locked database clears up; anything else will not by itself.
    fn retryability(&self) -> Retryability {
        match self {
            EmbeddedError::Sql {
                source: rusqlite::Error::SqliteFailure(failure, _),
                ..
            } if matches!(
                failure.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ) =>
            {
                Retryability::Retryable
            }
            EmbeddedError::Task { .. } => Retryability::Retryable,
            _ => Retryability::Permanent,
        }
    }
}

/// Wraps a rusqlite error with what was being done.
pub fn sql_error(action: &'static str) -> impl FnOnce(rusqlite::Error) -> EmbeddedError {
    move |source| EmbeddedError::Sql { action, source }
}

/// One connection to the embedded database file. Clones share the connection; open the
/// file again for another connection (writers take turns, readers do not wait).
#[derive(Debug, Clone)]
pub struct EmbeddedDb {
    path: PathBuf,
    connection: Arc<Mutex<Connection>>,
}

impl EmbeddedDb {
    /// Opens (or creates) the database file and the queue and stream tables.
    pub fn open(path: &Path) -> Result<Self, EmbeddedError> {
        let open_error = |source: BoxError| EmbeddedError::Open {
            path: path.to_owned(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|err| open_error(err.into()))?;
        }
        let connection = Connection::open(path).map_err(|err| open_error(err.into()))?;
        connection
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(|err| open_error(err.into()))?;
        // WAL: readers never wait for the writer; NORMAL sync is durable across a crash
        // of the process (not of the machine), which is what the local mode promises.
        connection
            .execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
            .map_err(|err| open_error(err.into()))?;
        connection
            .execute_batch(SCHEMA)
            .map_err(|err| open_error(err.into()))?;
        Ok(Self {
            path: path.to_owned(),
            connection: Arc::new(Mutex::new(connection)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `work` on the connection on a blocking thread.
    pub async fn call<T, F>(&self, action: &'static str, work: F) -> Result<T, EmbeddedError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, EmbeddedError> + Send + 'static,
    {
        let connection = Arc::clone(&self.connection);
        tokio::task::spawn_blocking(move || {
            // A panic inside `work` poisons the lock; the connection itself is still sound
            // (an open transaction was rolled back when it was dropped).
            let mut connection = connection
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            work(&mut connection)
        })
        .await
        .map_err(|source| EmbeddedError::Task { action, source })?
    }
}

pub(crate) fn now_ms() -> i64 {
    epoch_millis(SystemTime::now())
}

pub(crate) fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Every entry of a batch call that failed as a whole.
pub(crate) fn whole_call_failed<S>(indices: &[usize], err: &EmbeddedError) -> EntryReport<S> {
    EntryReport::all_failed(
        indices,
        "EmbeddedDatabase",
        &report(err),
        err.is_retryable(),
    )
}

/// The report of a batch call that is one transaction: its entries succeeded together,
/// or all failed with the call.
pub(crate) fn entry_report<S>(
    indices: &[usize],
    result: Result<Vec<(usize, S)>, EmbeddedError>,
) -> EntryReport<S> {
    match result {
        Ok(succeeded) => EntryReport {
            succeeded,
            failed: Vec::new(),
        },
        Err(err) => whole_call_failed(indices, &err),
    }
}
