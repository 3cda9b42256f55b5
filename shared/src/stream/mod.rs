//! The record stream: a small interface, with Kinesis Data Streams (`kinesis`) and an
//! embedded SQLite stream log for the local platform (`embedded`) behind it.

#[cfg(feature = "embedded")]
mod embedded;
mod kinesis;

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::{BoxError, Classify, Retryability};
use crate::retry::EntryReport;

#[cfg(feature = "embedded")]
pub use embedded::EmbeddedStream;
pub use kinesis::KinesisStream;

/// The most records one `PutRecords` call accepts.
pub const KINESIS_MAX_BATCH_RECORDS: usize = 500;
/// The most bytes (data plus partition keys) one `PutRecords` call accepts.
pub const KINESIS_MAX_BATCH_BYTES: usize = 5 * 1024 * 1024;
/// The most bytes (data plus partition key) of one record.
pub const KINESIS_MAX_RECORD_BYTES: usize = 1024 * 1024;
/// The longest partition key, in characters.
pub const KINESIS_MAX_PARTITION_KEY_CHARS: usize = 256;

/// A record to put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingRecord {
    pub partition_key: String,
    pub data: Bytes,
}

impl OutgoingRecord {
    fn size(&self) -> usize {
        self.partition_key.len() + self.data.len()
    }
}

/// Where a put record landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutLocation {
    pub shard_id: String,
    pub sequence_number: String,
}

pub type PutReport = EntryReport<PutLocation>;

/// A shard, open or closed (a closed shard has an ending sequence number: it was split or
/// merged and its children hold newer records).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    pub shard_id: String,
    pub parent_shard_id: Option<String>,
    pub adjacent_parent_shard_id: Option<String>,
    pub starting_sequence_number: String,
    pub ending_sequence_number: Option<String>,
}

impl ShardInfo {
    pub fn is_closed(&self) -> bool {
        self.ending_sequence_number.is_some()
    }
}

/// Where to start reading a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartPosition {
    TrimHorizon,
    Latest,
    AtSequenceNumber(String),
    AfterSequenceNumber(String),
    /// Records that arrived at or after this time.
    AtTimestamp(SystemTime),
}

/// A record read from a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardRecord {
    pub sequence_number: String,
    pub partition_key: String,
    pub data: Bytes,
    /// `ApproximateArrivalTimestamp`, milliseconds since the Unix epoch.
    pub arrival_ms: Option<i64>,
}

/// One page of a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordsPage {
    pub records: Vec<ShardRecord>,
    /// `None` once a closed shard has been read to its end.
    pub next_iterator: Option<String>,
    pub millis_behind_latest: Option<i64>,
}

/// A whole stream call failed (after the SDK's own retries).
#[derive(Debug, thiserror::Error)]
#[error("{operation} on stream {stream}{} failed", shard.as_deref().map(|s| format!(" shard {s}")).unwrap_or_default())]
pub struct StreamError {
    pub operation: &'static str,
    pub stream: String,
    pub shard: Option<String>,
    pub source: BoxError,
    pub retryability: Retryability,
}

impl Classify for StreamError {
    fn retryability(&self) -> Retryability {
        self.retryability
    }
}

/// What the platform needs from a record stream.
#[async_trait]
pub trait RecordStream: Send + Sync + fmt::Debug {
    fn name(&self) -> &str;

    /// Puts records in as few calls as the limits allow, retrying only failed records.
    async fn put_records(&self, records: &[OutgoingRecord]) -> PutReport;

    /// Every shard the stream still has records in, closed ones included.
    async fn list_shards(&self) -> Result<Vec<ShardInfo>, StreamError>;

    async fn shard_iterator(
        &self,
        shard_id: &str,
        start: &StartPosition,
    ) -> Result<String, StreamError>;

    async fn get_records(&self, iterator: &str, limit: u32) -> Result<RecordsPage, StreamError>;
}

/// Milliseconds since the Unix epoch of a point in time (0 before the epoch).
pub fn epoch_millis(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The point in time `millis` after the Unix epoch.
pub fn from_epoch_millis(millis: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(millis.max(0).unsigned_abs())
}
