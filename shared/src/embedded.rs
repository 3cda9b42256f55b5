//! Embedded backends for running the platform on one machine with no services: a work
//! queue with the SQS semantics the platform relies on and a stream log with the Kinesis
//! semantics it relies on, both in one SQLite database file (the local warehouse can
//! share it). They implement the same [`WorkQueue`] and [`RecordStream`] interfaces as
//! SQS and Kinesis, and the same contract tests run against both.
//!
//! Everything is durable across a restart of the process: the file is opened in WAL mode
//! and every call is one transaction. SQLite calls block, so they run on tokio's blocking
//! threads.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use md5::{Digest, Md5};
use rusqlite::{Connection, OptionalExtension, params};

use crate::envelope::MessageSizeLimit;
use crate::error::{Classify, Retryability};
use crate::queue::{
    DeleteReport, OutgoingMessage, QueueDepth, QueueError, ReceivedMessage, SendReport, WorkQueue,
};
use crate::retry::{EntryFailure, EntryReport};
use crate::stream::{
    KINESIS_MAX_RECORD_BYTES, OutgoingRecord, PutLocation, PutReport, RecordStream, RecordsPage,
    ShardInfo, ShardRecord, StartPosition, StreamError, epoch_millis,
};

/// How long a call waits for another connection's write transaction to end.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a long poll looks for messages sent by another process.
const RECEIVE_POLL: Duration = Duration::from_millis(25);
/// Sequence numbers are zero-padded, so they also sort as text.
const SEQUENCE_DIGITS: usize = 20;

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
    #[error("embedded database {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error("embedded database, {action}: {source}")]
    Sql {
        action: &'static str,
        source: rusqlite::Error,
    },
    #[error("embedded database, {action}: the blocking task failed: {reason}")]
    Task {
        action: &'static str,
        reason: String,
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
        let open_error = |reason: String| EmbeddedError::Open {
            path: path.to_owned(),
            reason,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|err| open_error(err.to_string()))?;
        }
        let connection = Connection::open(path).map_err(|err| open_error(err.to_string()))?;
        connection
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(|err| open_error(err.to_string()))?;
        // WAL: readers never wait for the writer; NORMAL sync is durable across a crash
        // of the process (not of the machine), which is what the local mode promises.
        connection
            .execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
            .map_err(|err| open_error(err.to_string()))?;
        connection
            .execute_batch(SCHEMA)
            .map_err(|err| open_error(err.to_string()))?;
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
        .map_err(|err| EmbeddedError::Task {
            action,
            reason: err.to_string(),
        })?
    }
}

fn now_ms() -> i64 {
    epoch_millis(SystemTime::now())
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Every entry of a batch call that failed as a whole.
fn whole_call_failed<S>(indices: &[usize], err: &EmbeddedError) -> EntryReport<S> {
    EntryReport::all_failed(
        indices,
        "EmbeddedDatabase",
        &err.to_string(),
        err.is_retryable(),
    )
}

/// The report of a batch call that is one transaction: its entries succeeded together,
/// or all failed with the call.
fn entry_report<S>(
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

/// A queue of the embedded database, with an optional dead-letter queue.
#[derive(Debug, Clone)]
pub struct EmbeddedQueue {
    db: EmbeddedDb,
    name: String,
    size_limit: MessageSizeLimit,
    redrive: Option<Redrive>,
}

/// Like an SQS redrive policy: a message received `max_receive_count` times and not
/// deleted moves to `dead_letter` instead of being received again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redrive {
    pub dead_letter: String,
    pub max_receive_count: u32,
}

impl EmbeddedQueue {
    pub fn new(
        db: EmbeddedDb,
        name: impl Into<String>,
        size_limit: MessageSizeLimit,
        redrive: Option<Redrive>,
    ) -> Self {
        Self {
            db,
            name: name.into(),
            size_limit,
            redrive,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn error(&self, operation: &'static str, err: &EmbeddedError) -> QueueError {
        QueueError {
            operation,
            queue_url: format!("sqlite://{}#{}", self.db.path.display(), self.name),
            message: err.to_string(),
            retryability: err.retryability(),
        }
    }

    /// Moves up to `limit` messages of another queue (a dead-letter queue) to this one,
    /// oldest first, with their receive counts reset, like SQS's `StartMessageMoveTask`.
    pub async fn move_from(&self, source: &str, limit: u64) -> Result<u64, QueueError> {
        let (queue, source) = (self.name.clone(), source.to_owned());
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.db
            .call("moving messages", move |conn| {
                conn.execute(
                    "UPDATE queue_messages SET queue = ?1, receive_count = 0, receipt = NULL, visible_at_ms = ?2
                     WHERE id IN (SELECT id FROM queue_messages WHERE queue = ?3 ORDER BY id LIMIT ?4)",
                    params![queue, now_ms(), source, limit],
                )
                .map(|moved| moved as u64)
                .map_err(sql_error("moving messages"))
            })
            .await
            .map_err(|err| self.error("MoveMessages", &err))
    }

    /// The bodies and attributes of the messages the queue holds, oldest first, without
    /// receiving them (for inspection: the demo's summary of dead letters).
    pub async fn peek(
        &self,
        limit: u32,
    ) -> Result<Vec<(String, std::collections::BTreeMap<String, String>)>, QueueError> {
        let queue = self.name.clone();
        self.db
            .call("reading messages", move |conn| {
                let mut select = conn
                    .prepare_cached(
                        "SELECT body, attributes FROM queue_messages WHERE queue = ?1 ORDER BY id LIMIT ?2",
                    )
                    .map_err(sql_error("reading messages"))?;
                select
                    .query_map(params![queue, limit], |row| {
                        let attributes: String = row.get(1)?;
                        Ok((
                            row.get(0)?,
                            serde_json::from_str(&attributes).unwrap_or_default(),
                        ))
                    })
                    .and_then(Iterator::collect)
                    .map_err(sql_error("reading messages"))
            })
            .await
            .map_err(|err| self.error("PeekMessages", &err))
    }

    async fn receive_once(
        &self,
        max_messages: u8,
        visibility: Duration,
    ) -> Result<Vec<ReceivedMessage>, EmbeddedError> {
        let queue = self.name.clone();
        let redrive = self.redrive.clone();
        let visibility = millis(visibility);
        self.db
            .call("receiving messages", move |conn| {
                let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(sql_error("receiving messages"))?;
                let now = now_ms();
                if let Some(redrive) = &redrive {
                    tx.execute(
                        "UPDATE queue_messages SET queue = ?1, receive_count = 0, receipt = NULL
                         WHERE queue = ?2 AND visible_at_ms <= ?3 AND receive_count >= ?4",
                        params![redrive.dead_letter, queue, now, redrive.max_receive_count],
                    )
                    .map_err(sql_error("moving messages to the dead-letter queue"))?;
                }
                let ids: Vec<i64> = {
                    let mut select = tx
                        .prepare_cached(
                            "SELECT id FROM queue_messages WHERE queue = ?1 AND visible_at_ms <= ?2 ORDER BY id LIMIT ?3",
                        )
                        .map_err(sql_error("receiving messages"))?;
                    select
                        .query_map(params![queue, now, max_messages], |row| row.get(0))
                        .and_then(Iterator::collect)
                        .map_err(sql_error("receiving messages"))?
                };
                let mut received = Vec::with_capacity(ids.len());
                for id in ids {
                    let receipt = format!("{id}-{:016x}", rand::random::<u64>());
                    let message = tx
                        .query_row(
                            "UPDATE queue_messages SET visible_at_ms = ?1, receive_count = receive_count + 1, receipt = ?2
                             WHERE id = ?3
                             RETURNING message_id, body, receive_count, sent_at_ms, attributes",
                            params![now.saturating_add(visibility), receipt, id],
                            |row| {
                                Ok((
                                    row.get::<_, String>(0)?,
                                    row.get::<_, String>(1)?,
                                    row.get::<_, u32>(2)?,
                                    row.get::<_, i64>(3)?,
                                    row.get::<_, String>(4)?,
                                ))
                            },
                        )
                        .map_err(sql_error("receiving messages"))?;
                    let (message_id, body, receive_count, sent_at_ms, attributes) = message;
                    received.push(ReceivedMessage {
                        message_id,
                        receipt_handle: receipt,
                        body,
                        receive_count,
                        sent_at_ms: Some(sent_at_ms),
                        // Written by `send` from a map: a parse failure means a damaged file.
                        attributes: serde_json::from_str(&attributes).unwrap_or_default(),
                    });
                }
                tx.commit().map_err(sql_error("receiving messages"))?;
                Ok(received)
            })
            .await
    }
}

#[async_trait]
impl WorkQueue for EmbeddedQueue {
    async fn send(&self, messages: &[OutgoingMessage]) -> SendReport {
        let limit = self.size_limit.bytes();
        let (sendable, oversized): (Vec<usize>, Vec<usize>) =
            (0..messages.len()).partition(|&i| messages[i].size() <= limit);
        let mut report = EntryReport::all_failed(
            &oversized,
            "MessageTooLong",
            &format!("message is over the {limit}-byte limit"),
            false,
        );
        let rows: Vec<(usize, String, String)> = sendable
            .iter()
            .map(|&i| {
                let attributes = serde_json::to_string(&messages[i].attributes)
                    .expect("a map of strings serialises");
                (i, messages[i].body.clone(), attributes)
            })
            .collect();
        let queue = self.name.clone();
        let sent = self
            .db
            .call("sending messages", move |conn| {
                let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(sql_error("sending messages"))?;
                let now = now_ms();
                let mut ids = Vec::with_capacity(rows.len());
                {
                    let mut insert = tx
                        .prepare_cached(
                            "INSERT INTO queue_messages (queue, message_id, body, attributes, sent_at_ms, visible_at_ms)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                        )
                        .map_err(sql_error("sending messages"))?;
                    for (index, body, attributes) in rows {
                        let message_id = format!(
                            "{:08x}-{:04x}-{:04x}-{:016x}",
                            rand::random::<u32>(),
                            rand::random::<u16>(),
                            rand::random::<u16>(),
                            rand::random::<u64>()
                        );
                        insert
                            .execute(params![queue, message_id, body, attributes, now])
                            .map_err(sql_error("sending messages"))?;
                        ids.push((index, message_id));
                    }
                }
                tx.commit().map_err(sql_error("sending messages"))?;
                Ok(ids)
            })
            .await;
        report.merge(entry_report(&sendable, sent));
        report.sort_by_index();
        report
    }

    async fn receive(
        &self,
        max_messages: u8,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        let max_messages = max_messages.clamp(1, 10);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let received = self
                .receive_once(max_messages, visibility)
                .await
                .map_err(|err| self.error("ReceiveMessage", &err))?;
            if !received.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(received);
            }
            tokio::time::sleep(RECEIVE_POLL.min(deadline - tokio::time::Instant::now())).await;
        }
    }

    async fn delete(&self, receipt_handles: &[String]) -> DeleteReport {
        let queue = self.name.clone();
        let handles = receipt_handles.to_vec();
        let deleted = self
            .db
            .call("deleting messages", move |conn| {
                let tx = conn
                    .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                    .map_err(sql_error("deleting messages"))?;
                let mut found = Vec::with_capacity(handles.len());
                for handle in &handles {
                    let rows = tx
                        .execute(
                            "DELETE FROM queue_messages WHERE queue = ?1 AND receipt = ?2",
                            params![queue, handle],
                        )
                        .map_err(sql_error("deleting messages"))?;
                    found.push(rows > 0);
                }
                tx.commit().map_err(sql_error("deleting messages"))?;
                Ok(found)
            })
            .await;
        let indices: Vec<usize> = (0..receipt_handles.len()).collect();
        match deleted {
            Ok(found) => {
                let mut report = DeleteReport::default();
                for (index, found) in found.into_iter().enumerate() {
                    if found {
                        report.succeeded.push((index, ()));
                    } else {
                        // Received again by someone else (or already deleted): the handle
                        // no longer names the message.
                        report.failed.push(EntryFailure {
                            index,
                            code: "ReceiptHandleIsInvalid".to_owned(),
                            message: "the receipt handle is no longer valid".to_owned(),
                            retryable: false,
                        });
                    }
                }
                report
            }
            Err(err) => whole_call_failed(&indices, &err),
        }
    }

    async fn depth(&self) -> Result<QueueDepth, QueueError> {
        let queue = self.name.clone();
        self.db
            .call("counting messages", move |conn| {
                conn.query_row(
                    "SELECT coalesce(sum(visible_at_ms <= ?2), 0), coalesce(sum(visible_at_ms > ?2), 0)
                     FROM queue_messages WHERE queue = ?1",
                    params![queue, now_ms()],
                    |row| {
                        Ok(QueueDepth {
                            visible: row.get::<_, i64>(0)?.unsigned_abs(),
                            in_flight: row.get::<_, i64>(1)?.unsigned_abs(),
                        })
                    },
                )
                .map_err(sql_error("counting messages"))
            })
            .await
            .map_err(|err| self.error("GetQueueAttributes", &err))
    }

    async fn extend_visibility(
        &self,
        receipt_handle: &str,
        timeout: Duration,
    ) -> Result<(), QueueError> {
        let (queue, handle) = (self.name.clone(), receipt_handle.to_owned());
        let changed = self
            .db
            .call("extending visibility", move |conn| {
                conn.execute(
                    "UPDATE queue_messages SET visible_at_ms = ?1 WHERE queue = ?2 AND receipt = ?3",
                    params![now_ms().saturating_add(millis(timeout)), queue, handle],
                )
                .map_err(sql_error("extending visibility"))
            })
            .await
            .map_err(|err| self.error("ChangeMessageVisibility", &err))?;
        if changed == 0 {
            return Err(QueueError {
                operation: "ChangeMessageVisibility",
                queue_url: format!("sqlite://{}#{}", self.db.path.display(), self.name),
                message: "the receipt handle is no longer valid".to_owned(),
                retryability: Retryability::Permanent,
            });
        }
        Ok(())
    }
}

/// A stream of the embedded database: shards chosen by the MD5 of the partition key over
/// equal hash ranges (as Kinesis does), sequence numbers that grow with every put,
/// arrival timestamps, and retention.
#[derive(Debug, Clone)]
pub struct EmbeddedStream {
    db: EmbeddedDb,
    name: String,
    shard_count: u32,
}

impl EmbeddedStream {
    /// Opens the stream, creating it with `shard_count` shards and `retention` when it
    /// does not exist yet (an existing stream keeps its own).
    pub async fn create(
        db: EmbeddedDb,
        name: impl Into<String>,
        shard_count: u32,
        retention: Duration,
    ) -> Result<Self, StreamError> {
        let name = name.into();
        let stream = name.clone();
        let shard_count = shard_count.max(1);
        let count = db
            .call("creating the stream", move |conn| {
                conn.execute(
                    "INSERT INTO streams (name, shard_count, retention_ms) VALUES (?1, ?2, ?3) ON CONFLICT (name) DO NOTHING",
                    params![stream, shard_count, millis(retention)],
                )
                .map_err(sql_error("creating the stream"))?;
                conn.query_row(
                    "SELECT shard_count FROM streams WHERE name = ?1",
                    params![stream],
                    |row| row.get::<_, u32>(0),
                )
                .map_err(sql_error("creating the stream"))
            })
            .await
            .map_err(|err| stream_error(&name, "CreateStream", None, &err))?;
        Ok(Self {
            db,
            name,
            shard_count: count,
        })
    }

    fn shard_id(index: u32) -> String {
        format!("shardId-{index:012}")
    }

    fn shard_for(&self, partition_key: &str) -> String {
        let digest = Md5::digest(partition_key.as_bytes());
        let hash = u128::from_be_bytes(digest.into());
        let width = u128::MAX / u128::from(self.shard_count) + 1;
        let index = u32::try_from(hash / width).expect("below the shard count");
        Self::shard_id(index)
    }

    /// How many records the stream holds.
    pub async fn record_count(&self) -> Result<u64, StreamError> {
        let stream = self.name.clone();
        self.db
            .call("counting records", move |conn| {
                conn.query_row(
                    "SELECT count(*) FROM stream_records WHERE stream = ?1",
                    params![stream],
                    |row| row.get::<_, i64>(0),
                )
                .map(i64::unsigned_abs)
                .map_err(sql_error("counting records"))
            })
            .await
            .map_err(|err| self.error("DescribeStream", None, &err))
    }

    /// The sequence number of each shard's newest record (shards without records are
    /// left out).
    pub async fn newest_sequences(
        &self,
    ) -> Result<std::collections::BTreeMap<String, String>, StreamError> {
        let stream = self.name.clone();
        self.db
            .call("reading the tip", move |conn| {
                let mut select = conn
                    .prepare_cached(
                        "SELECT shard_id, max(seq) FROM stream_records WHERE stream = ?1 GROUP BY shard_id",
                    )
                    .map_err(sql_error("reading the tip"))?;
                select
                    .query_map(params![stream], |row| {
                        Ok((row.get::<_, String>(0)?, sequence_text(row.get(1)?)))
                    })
                    .and_then(Iterator::collect)
                    .map_err(sql_error("reading the tip"))
            })
            .await
            .map_err(|err| self.error("DescribeStream", None, &err))
    }

    fn error(
        &self,
        operation: &'static str,
        shard: Option<&str>,
        err: &EmbeddedError,
    ) -> StreamError {
        stream_error(&self.name, operation, shard, err)
    }

    fn bad_iterator(&self, iterator: &str) -> StreamError {
        StreamError {
            operation: "GetRecords",
            stream: self.name.clone(),
            shard: None,
            message: format!("invalid shard iterator {iterator:?}"),
            retryability: Retryability::Permanent,
        }
    }
}

fn stream_error(
    stream: &str,
    operation: &'static str,
    shard: Option<&str>,
    err: &EmbeddedError,
) -> StreamError {
    StreamError {
        operation,
        stream: stream.to_owned(),
        shard: shard.map(str::to_owned),
        message: err.to_string(),
        retryability: err.retryability(),
    }
}

fn sequence_text(seq: i64) -> String {
    format!("{seq:0width$}", width = SEQUENCE_DIGITS)
}

/// An iterator names a shard and the last sequence number already read.
fn encode_iterator(shard_id: &str, after: i64) -> String {
    format!("{shard_id}/{after}")
}

fn decode_iterator(iterator: &str) -> Option<(&str, i64)> {
    let (shard, after) = iterator.rsplit_once('/')?;
    Some((shard, after.parse().ok()?))
}

#[async_trait]
impl RecordStream for EmbeddedStream {
    fn name(&self) -> &str {
        &self.name
    }

    async fn put_records(&self, records: &[OutgoingRecord]) -> PutReport {
        let (sendable, too_large): (Vec<usize>, Vec<usize>) = (0..records.len()).partition(|&i| {
            records[i].partition_key.len() + records[i].data.len() <= KINESIS_MAX_RECORD_BYTES
        });
        let mut report = EntryReport::all_failed(
            &too_large,
            "RecordTooLarge",
            &format!("record is over the {KINESIS_MAX_RECORD_BYTES}-byte limit"),
            false,
        );
        let rows: Vec<(usize, String, String, Bytes)> = sendable
            .iter()
            .map(|&i| {
                let record = &records[i];
                (
                    i,
                    self.shard_for(&record.partition_key),
                    record.partition_key.clone(),
                    record.data.clone(),
                )
            })
            .collect();
        let stream = self.name.clone();
        let put = self
            .db
            .call("putting records", move |conn| {
                let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(sql_error("putting records"))?;
                let now = now_ms();
                let retention: i64 = tx
                    .query_row(
                        "SELECT retention_ms FROM streams WHERE name = ?1",
                        params![stream],
                        |row| row.get(0),
                    )
                    .map_err(sql_error("putting records"))?;
                tx.execute(
                    "DELETE FROM stream_records WHERE stream = ?1 AND arrival_ms < ?2",
                    params![stream, now.saturating_sub(retention)],
                )
                .map_err(sql_error("trimming records past retention"))?;
                let mut locations = Vec::with_capacity(rows.len());
                {
                    let mut insert = tx
                        .prepare_cached(
                            "INSERT INTO stream_records (stream, shard_id, partition_key, data, arrival_ms)
                             VALUES (?1, ?2, ?3, ?4, ?5) RETURNING seq",
                        )
                        .map_err(sql_error("putting records"))?;
                    for (index, shard_id, partition_key, data) in rows {
                        let seq: i64 = insert
                            .query_row(
                                params![stream, shard_id, partition_key, data.as_ref(), now],
                                |row| row.get(0),
                            )
                            .map_err(sql_error("putting records"))?;
                        locations.push((
                            index,
                            PutLocation {
                                shard_id,
                                sequence_number: sequence_text(seq),
                            },
                        ));
                    }
                }
                tx.commit().map_err(sql_error("putting records"))?;
                Ok(locations)
            })
            .await;
        report.merge(entry_report(&sendable, put));
        report.sort_by_index();
        report
    }

    async fn list_shards(&self) -> Result<Vec<ShardInfo>, StreamError> {
        Ok((0..self.shard_count)
            .map(|index| ShardInfo {
                shard_id: Self::shard_id(index),
                parent_shard_id: None,
                adjacent_parent_shard_id: None,
                starting_sequence_number: sequence_text(0),
                ending_sequence_number: None,
            })
            .collect())
    }

    async fn shard_iterator(
        &self,
        shard_id: &str,
        start: &StartPosition,
    ) -> Result<String, StreamError> {
        let known = (0..self.shard_count).any(|index| Self::shard_id(index) == shard_id);
        if !known {
            return Err(StreamError {
                operation: "GetShardIterator",
                stream: self.name.clone(),
                shard: Some(shard_id.to_owned()),
                message: "no such shard".to_owned(),
                retryability: Retryability::Permanent,
            });
        }
        let parse = |seq: &str| -> Result<i64, StreamError> {
            seq.parse().map_err(|_| StreamError {
                operation: "GetShardIterator",
                stream: self.name.clone(),
                shard: Some(shard_id.to_owned()),
                message: format!("invalid sequence number {seq:?}"),
                retryability: Retryability::Permanent,
            })
        };
        let after = match start {
            StartPosition::TrimHorizon => 0,
            StartPosition::AfterSequenceNumber(seq) => parse(seq)?,
            StartPosition::AtSequenceNumber(seq) => parse(seq)?.saturating_sub(1),
            StartPosition::Latest | StartPosition::AtTimestamp(_) => {
                let (stream, shard) = (self.name.clone(), shard_id.to_owned());
                let at = match start {
                    StartPosition::AtTimestamp(time) => Some(epoch_millis(*time)),
                    _ => None,
                };
                self.db
                    .call("positioning an iterator", move |conn| {
                        let found: Option<i64> = match at {
                            // Just before the first record that arrived at or after `at`.
                            Some(at) => conn
                                .query_row(
                                    "SELECT min(seq) - 1 FROM stream_records WHERE stream = ?1 AND shard_id = ?2 AND arrival_ms >= ?3",
                                    params![stream, shard, at],
                                    |row| row.get(0),
                                )
                                .optional()
                                .map_err(sql_error("positioning an iterator"))?
                                .flatten()
                                // Nothing that late yet: everything so far is before it.
                                .or(conn
                                    .query_row("SELECT max(seq) FROM stream_records", [], |row| row.get(0))
                                    .map_err(sql_error("positioning an iterator"))?),
                            None => conn
                                .query_row("SELECT max(seq) FROM stream_records", [], |row| row.get(0))
                                .map_err(sql_error("positioning an iterator"))?,
                        };
                        Ok(found.unwrap_or(0))
                    })
                    .await
                    .map_err(|err| self.error("GetShardIterator", Some(shard_id), &err))?
            }
        };
        Ok(encode_iterator(shard_id, after))
    }

    async fn get_records(&self, iterator: &str, limit: u32) -> Result<RecordsPage, StreamError> {
        let (shard, after) =
            decode_iterator(iterator).ok_or_else(|| self.bad_iterator(iterator))?;
        let (stream, shard_id) = (self.name.clone(), shard.to_owned());
        let limit = limit.clamp(1, 10_000);
        let (records, behind) = self
            .db
            .call("reading records", move |conn| {
                let mut select = conn
                    .prepare_cached(
                        "SELECT seq, partition_key, data, arrival_ms FROM stream_records
                         WHERE stream = ?1 AND shard_id = ?2 AND seq > ?3 ORDER BY seq LIMIT ?4",
                    )
                    .map_err(sql_error("reading records"))?;
                let records: Vec<(i64, String, Vec<u8>, i64)> = select
                    .query_map(params![stream, shard_id, after, limit], |row| {
                        Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
                    })
                    .and_then(Iterator::collect)
                    .map_err(sql_error("reading records"))?;
                let last = records.last().map_or(after, |r| r.0);
                // How far the page ends from the tip: the age of the next unread record.
                let next_arrival: Option<i64> = conn
                    .query_row(
                        "SELECT arrival_ms FROM stream_records WHERE stream = ?1 AND shard_id = ?2 AND seq > ?3 ORDER BY seq LIMIT 1",
                        params![stream, shard_id, last],
                        |row| row.get(0),
                    )
                    .optional()
                    .map_err(sql_error("reading records"))?;
                let behind = next_arrival.map_or(0, |at| now_ms().saturating_sub(at).max(1));
                Ok((records, behind))
            })
            .await
            .map_err(|err| self.error("GetRecords", Some(shard), &err))?;
        let last = records.last().map_or(after, |r| r.0);
        Ok(RecordsPage {
            records: records
                .into_iter()
                .map(|(seq, partition_key, data, arrival_ms)| ShardRecord {
                    sequence_number: sequence_text(seq),
                    partition_key,
                    data: Bytes::from(data),
                    arrival_ms: Some(arrival_ms),
                })
                .collect(),
            next_iterator: Some(encode_iterator(shard, last)),
            millis_behind_latest: Some(behind),
        })
    }
}
