//! The work item: the one message both ingest paths put on the work queue and the
//! processor consumes.
//!
//! It is a tagged, versioned JSON document:
//!
//! ```json
//! {"version":1,"kind":"file","dataset":"orders","bucket":"landing","key":"orders/2024-01-01.csv",
//!  "etag":"9b2cf535f27731c974343645a3985328","size":1024,"format":"csv","compression":"none"}
//! ```
//!
//! Every item has an [idempotency key](WorkItem::idempotency_key) that is the same for a
//! redelivery of the message, a re-upload of the same object content and a replay of the
//! same sequence range, so the processor's load ledger can skip what it already loaded.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::catalog::{Compression, FileFormat};
use crate::error::{BoxError, Classify, Retryability};

/// The work-item schema version this build writes and reads.
pub(crate) const WORK_ITEM_VERSION: u32 = 1;

/// The largest SQS message: 1 MiB.
pub(crate) const SQS_MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// The default message size limit: 256 KiB, the limit of SQS queues created before the
/// 1 MiB increase, so the platform works with every queue out of the box.
pub(crate) const DEFAULT_MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// A work item of the current version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WorkItem {
    File(FileItem),
    Records(RecordsItem),
}

/// A whole S3 object, or a byte range of one when a large file is split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileItem {
    pub dataset: String,
    pub bucket: String,
    /// The object key, already URL-decoded (S3 event notifications encode it).
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    /// The entity tag without surrounding quotes (see [`normalize_etag`]).
    pub etag: String,
    /// Size of the whole object in bytes.
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<ByteRange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<Part>,
    pub format: FileFormat,
    pub compression: Compression,
    /// When the item was created (milliseconds since the Unix epoch), for latency metrics.
    /// Not part of the idempotency key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at_ms: Option<i64>,
}

/// A half-open byte range `[start, end)` of an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

/// Which part of a split file this item is: `index` counts from 1 to `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Part {
    pub index: u32,
    pub count: u32,
}

/// A packed batch of already-validated stream records from one shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordsItem {
    pub dataset: String,
    pub stream: String,
    pub shard_id: String,
    pub first: StreamPosition,
    pub last: StreamPosition,
    pub payload: RecordsPayload,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at_ms: Option<i64>,
    /// Set by `processor replay` (an id of the replay): the item then has an idempotency
    /// key of its own, so the ledger does not skip records loaded before, and the rows'
    /// lineage (or key) keeps them from being doubled. Deleted rows come back this way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<String>,
}

/// The position of one user record in a shard: the Kinesis sequence number plus the
/// sub-sequence number of a user record inside a KPL-aggregated record (0 otherwise).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamPosition {
    /// Kept as text: Kinesis sequence numbers are up to 128 decimal digits, emulators use
    /// short counters; never assume a length.
    pub sequence_number: String,
    #[serde(default)]
    pub sub_sequence_number: u64,
}

/// The records themselves, or a claim check pointing to an S3 object holding them as
/// JSON lines of [`StreamRecord`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RecordsPayload {
    Inline(Vec<StreamRecord>),
    S3(ClaimCheck),
}

/// One stream record with its identity, so it can be loaded with lineage columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamRecord {
    #[serde(flatten)]
    pub position: StreamPosition,
    /// `ApproximateArrivalTimestamp` in milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arrival_ms: Option<i64>,
    pub data: serde_json::Value,
}

/// Where records that did not fit in a message were put.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimCheck {
    pub bucket: String,
    pub key: String,
    pub record_count: u64,
    pub size: u64,
}

/// A stable identifier of the data a work item carries: the load ledger's primary key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The most bytes a serialized work item may have; between 1 KiB and 1 MiB (the SQS
/// limit), 256 KiB by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageSizeLimit(usize);

impl MessageSizeLimit {
    pub const MIN_BYTES: usize = 1024;

    pub fn new(bytes: usize) -> Result<Self, EnvelopeError> {
        if (Self::MIN_BYTES..=SQS_MAX_MESSAGE_BYTES).contains(&bytes) {
            Ok(Self(bytes))
        } else {
            Err(EnvelopeError::InvalidSizeLimit { bytes })
        }
    }

    pub fn bytes(self) -> usize {
        self.0
    }
}

impl Default for MessageSizeLimit {
    fn default() -> Self {
        Self(DEFAULT_MAX_MESSAGE_BYTES)
    }
}

/// Why a work item could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("work item is not valid JSON")]
    NotJson { source: serde_json::Error },
    #[error("work item has no numeric \"version\" field")]
    MissingVersion,
    #[error(
        "work item version {found} is not supported by this build (it reads version {supported}); upgrade the processor or redrive the message later"
    )]
    UnsupportedVersion { found: u64, supported: u32 },
    #[error("work item of version {WORK_ITEM_VERSION} is malformed")]
    Malformed { source: BoxError },
    #[error("work item for dataset {dataset:?} is invalid: {reason}")]
    Invalid { dataset: String, reason: String },
    #[error(
        "work item for dataset {dataset:?} is {size} bytes, over the {limit}-byte message limit"
    )]
    TooLarge {
        dataset: String,
        size: usize,
        limit: usize,
    },
    #[error(
        "message size limit of {bytes} bytes is outside the allowed {} to {} bytes",
        MessageSizeLimit::MIN_BYTES,
        SQS_MAX_MESSAGE_BYTES
    )]
    InvalidSizeLimit { bytes: usize },
}

impl Classify for EnvelopeError {
    fn retryability(&self) -> Retryability {
        // A document does not get better by reading it again; a newer version may be
        // readable after an upgrade, which is what DLQ redrive is for.
        Retryability::Permanent
    }
}

/// The same entity tag whether it came quoted (`ListObjectsV2`, `HeadObject`) or bare
/// (S3 event notifications).
pub fn normalize_etag(etag: &str) -> String {
    etag.trim().trim_matches('"').to_owned()
}

#[derive(Serialize)]
struct Versioned<'a> {
    version: u32,
    #[serde(flatten)]
    item: &'a WorkItem,
}

impl WorkItem {
    pub fn dataset(&self) -> &str {
        match self {
            WorkItem::File(file) => &file.dataset,
            WorkItem::Records(records) => &records.dataset,
        }
    }

    /// When the item's data arrived (milliseconds since the Unix epoch), the start of its
    /// end-to-end latency: the S3 event time of a file, the earliest Kinesis arrival of
    /// inline records, else when the item was created.
    pub fn arrived_at_ms(&self) -> Option<i64> {
        match self {
            WorkItem::File(file) => file.created_at_ms,
            WorkItem::Records(records) => match &records.payload {
                RecordsPayload::Inline(list) => list
                    .iter()
                    .filter_map(|record| record.arrival_ms)
                    .min()
                    .or(records.created_at_ms),
                RecordsPayload::S3(_) => records.created_at_ms,
            },
        }
    }

    /// Bytes of source data the item covers: its byte range (or the whole object) for a
    /// file; for records, `message_bytes`, the size of the message carrying them.
    pub fn source_bytes(&self, message_bytes: usize) -> u64 {
        match self {
            WorkItem::File(file) => file
                .range
                .map_or(file.size, |range| range.end.saturating_sub(range.start)),
            WorkItem::Records(_) => message_bytes as u64,
        }
    }

    /// Reads a work item, checking the version before the shape so a message from a
    /// newer producer gets a clear "unsupported version" error.
    pub fn from_json(text: &str) -> Result<Self, EnvelopeError> {
        let document: serde_json::Value =
            serde_json::from_str(text).map_err(|source| EnvelopeError::NotJson { source })?;
        let serde_json::Value::Object(mut fields) = document else {
            return Err(EnvelopeError::Malformed {
                source: "expected a JSON object".into(),
            });
        };
        let version = fields
            .remove("version")
            .and_then(|v| v.as_u64())
            .ok_or(EnvelopeError::MissingVersion)?;
        if version != u64::from(WORK_ITEM_VERSION) {
            return Err(EnvelopeError::UnsupportedVersion {
                found: version,
                supported: WORK_ITEM_VERSION,
            });
        }
        let item: WorkItem = serde_json::from_value(serde_json::Value::Object(fields))
            .map_err(|err| EnvelopeError::Malformed { source: err.into() })?;
        item.validate()?;
        Ok(item)
    }

    /// Writes the work item as JSON, refusing one over `limit`.
    pub fn to_json(&self, limit: MessageSizeLimit) -> Result<String, EnvelopeError> {
        self.validate()?;
        let text = serde_json::to_string(&Versioned {
            version: WORK_ITEM_VERSION,
            item: self,
        })
        .map_err(|err| EnvelopeError::Malformed { source: err.into() })?;
        if text.len() > limit.bytes() {
            return Err(EnvelopeError::TooLarge {
                dataset: self.dataset().to_owned(),
                size: text.len(),
                limit: limit.bytes(),
            });
        }
        Ok(text)
    }

    /// Checks what the types alone cannot: ranges, parts and sequence order.
    pub fn validate(&self) -> Result<(), EnvelopeError> {
        let invalid = |reason: String| EnvelopeError::Invalid {
            dataset: self.dataset().to_owned(),
            reason,
        };
        if self.dataset().is_empty() {
            return Err(invalid("dataset is empty".into()));
        }
        match self {
            WorkItem::File(file) => {
                if file.bucket.is_empty() || file.key.is_empty() {
                    return Err(invalid("bucket and key must not be empty".into()));
                }
                if let Some(range) = file.range
                    && (range.start >= range.end || range.end > file.size)
                {
                    return Err(invalid(format!(
                        "byte range {}..{} is empty or beyond the object size {}",
                        range.start, range.end, file.size
                    )));
                }
                match (file.part, file.range) {
                    (Some(part), Some(_)) if part.index == 0 || part.index > part.count => {
                        return Err(invalid(format!(
                            "part {} of {} is out of range",
                            part.index, part.count
                        )));
                    }
                    (Some(_), None) => return Err(invalid("a part must have a byte range".into())),
                    _ => {}
                }
            }
            WorkItem::Records(records) => {
                if records.stream.is_empty() || records.shard_id.is_empty() {
                    return Err(invalid("stream and shard_id must not be empty".into()));
                }
                if compare_positions(&records.first, &records.last) == std::cmp::Ordering::Greater {
                    return Err(invalid(format!(
                        "first position {} is after last position {}",
                        records.first, records.last
                    )));
                }
                if let RecordsPayload::Inline(list) = &records.payload
                    && list.is_empty()
                {
                    return Err(invalid("inline payload holds no records".into()));
                }
            }
        }
        Ok(())
    }

    /// The key the load ledger records, stable across redelivery, re-upload of the same
    /// object content and replay of the same sequence range.
    ///
    /// It is the SHA-256 of a canonical description (see [`WorkItem::idempotency_source`]),
    /// prefixed with the item kind, so it has a fixed length whatever the key length.
    pub fn idempotency_key(&self) -> IdempotencyKey {
        let kind = match self {
            WorkItem::File(_) => "file",
            WorkItem::Records(_) => "records",
        };
        let digest = Sha256::digest(self.idempotency_source().as_bytes());
        IdempotencyKey(format!("{kind}-{}", hex::encode(digest)))
    }

    /// The canonical text the idempotency key hashes. Fields are separated by NUL, which
    /// cannot occur in S3 keys, stream names or sequence numbers.
    ///
    /// A file is identified by bucket, key, entity tag and byte range: the version id is
    /// left out so that uploading identical content again is recognised as the same data.
    /// Records are identified by stream, shard and the first and last position.
    pub fn idempotency_source(&self) -> String {
        match self {
            WorkItem::File(file) => {
                let range = match file.range {
                    Some(range) => format!("{}-{}", range.start, range.end),
                    None => "whole".to_owned(),
                };
                [
                    "file/v1",
                    &file.dataset,
                    &file.bucket,
                    &file.key,
                    &normalize_etag(&file.etag),
                    &range,
                ]
                .join("\0")
            }
            WorkItem::Records(records) => {
                let mut source = [
                    "records/v1",
                    &records.dataset,
                    &records.stream,
                    &records.shard_id,
                    &records.first.to_string(),
                    &records.last.to_string(),
                ]
                .join("\0");
                if let Some(replay) = &records.replay {
                    source.push_str("\0replay\0");
                    source.push_str(replay);
                }
                source
            }
        }
    }
}

impl FileItem {
    /// Identifies one load of a whole file, however it was split: the object's content
    /// (bucket, key, entity tag), its dataset and how many parts it was cut into. Every
    /// part of a file carries the same id, so the processor can tell when all are loaded.
    pub fn file_id(&self) -> String {
        let parts = self.part.map_or(1, |p| p.count).to_string();
        let source = [
            "file-load/v1",
            &self.dataset,
            &self.bucket,
            &self.key,
            &normalize_etag(&self.etag),
            &parts,
        ]
        .join("\0");
        format!("load-{}", hex::encode(Sha256::digest(source.as_bytes())))
    }

    /// How many parts the file was cut into (1 when it is loaded whole).
    pub fn parts_total(&self) -> u32 {
        self.part.map_or(1, |p| p.count)
    }
}

impl fmt::Display for StreamPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.sequence_number, self.sub_sequence_number)
    }
}

/// Orders two positions of one shard. Sequence numbers are decimal strings of any
/// length: a longer one (without leading zeros) is larger.
pub(crate) fn compare_positions(a: &StreamPosition, b: &StreamPosition) -> std::cmp::Ordering {
    compare_sequence_numbers(&a.sequence_number, &b.sequence_number)
        .then(a.sub_sequence_number.cmp(&b.sub_sequence_number))
}

/// Orders Kinesis sequence numbers, which are decimal strings too long for any integer.
pub fn compare_sequence_numbers(a: &str, b: &str) -> std::cmp::Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_item() -> WorkItem {
        WorkItem::File(FileItem {
            dataset: "orders".into(),
            bucket: "landing".into(),
            key: "orders/2024 01/été.csv".into(),
            version_id: Some("v1".into()),
            etag: "\"abc\"".into(),
            size: 100,
            range: None,
            part: None,
            format: FileFormat::Csv,
            compression: Compression::None,
            created_at_ms: Some(1),
        })
    }

    #[test]
    fn round_trips_through_json() {
        let item = file_item();
        let text = item.to_json(MessageSizeLimit::default()).expect("fits");
        assert!(
            text.starts_with("{\"version\":1,\"kind\":\"file\""),
            "{text}"
        );
        assert_eq!(WorkItem::from_json(&text).expect("reads back"), item);
    }

    #[test]
    fn numbers_in_records_are_the_same_after_every_hop() {
        // A long decimal parsed without correct rounding printed a float that parsed to a
        // neighbouring one, so the value changed between the Lambda and the processor.
        let text = r#"{"version":1,"kind":"records","dataset":"d","stream":"s","shard_id":"shardId-0",
            "first":{"sequence_number":"1","sub_sequence_number":0},
            "last":{"sequence_number":"1","sub_sequence_number":0},
            "payload":{"inline":[{"sequence_number":"1","sub_sequence_number":0,
            "data":{"amount":11111111111100000000000008289434033540599222,"rate":0.30000000000000004}}]}}"#;
        let item = WorkItem::from_json(text).expect("valid");
        let again = WorkItem::from_json(&item.to_json(MessageSizeLimit::default()).expect("fits"))
            .expect("reads back");
        assert_eq!(again, item);
    }

    #[test]
    fn etag_quotes_and_version_id_and_timestamps_do_not_change_the_key() {
        let a = file_item();
        let mut b = file_item();
        if let WorkItem::File(file) = &mut b {
            file.etag = "abc".into();
            file.version_id = Some("v2".into());
            file.created_at_ms = Some(99);
        }
        assert_eq!(a.idempotency_key(), b.idempotency_key());
    }

    #[test]
    fn content_range_and_dataset_change_the_key() {
        let base = file_item().idempotency_key();
        let mutations: [fn(&mut FileItem); 5] = [
            |f| f.etag = "def".into(),
            |f| f.key = "orders/other.csv".into(),
            |f| f.bucket = "other".into(),
            |f| f.dataset = "customers".into(),
            |f| {
                f.range = Some(ByteRange { start: 0, end: 50 });
                f.part = Some(Part { index: 1, count: 2 });
            },
        ];
        for mutate in mutations {
            let mut item = file_item();
            if let WorkItem::File(file) = &mut item {
                mutate(file);
            }
            assert_ne!(item.idempotency_key(), base, "{item:?}");
        }
    }

    #[test]
    fn every_part_of_a_file_shares_its_file_id() {
        let WorkItem::File(whole) = file_item() else {
            unreachable!("a file item")
        };
        let part = |index: u64| FileItem {
            range: Some(ByteRange {
                start: index * 10,
                end: index * 10 + 10,
            }),
            part: Some(Part {
                index: u32::try_from(index).expect("small") + 1,
                count: 3,
            }),
            ..whole.clone()
        };
        assert_eq!(part(0).file_id(), part(2).file_id());
        assert_ne!(part(0).file_id(), whole.file_id(), "split differently");
        assert_eq!((part(1).parts_total(), whole.parts_total()), (3, 1));
        assert!(whole.file_id().starts_with("load-"));
    }

    #[test]
    fn a_replay_gets_keys_of_its_own() {
        let position = |n: &str| StreamPosition {
            sequence_number: n.into(),
            sub_sequence_number: 0,
        };
        let item = |replay: Option<&str>| {
            WorkItem::Records(RecordsItem {
                dataset: "events".into(),
                stream: "s".into(),
                shard_id: "shardId-0".into(),
                first: position("1"),
                last: position("2"),
                payload: RecordsPayload::Inline(vec![StreamRecord {
                    position: position("1"),
                    arrival_ms: None,
                    data: serde_json::json!({}),
                }]),
                created_at_ms: None,
                replay: replay.map(str::to_owned),
            })
        };
        assert_ne!(
            item(None).idempotency_key(),
            item(Some("r1")).idempotency_key()
        );
        assert_ne!(
            item(Some("r1")).idempotency_key(),
            item(Some("r2")).idempotency_key()
        );
        let text = item(None)
            .to_json(MessageSizeLimit::default())
            .expect("fits");
        assert!(!text.contains("replay"), "absent unless set: {text}");
    }

    #[test]
    fn key_has_a_fixed_shape_whatever_the_object_key_length() {
        let mut item = file_item();
        if let WorkItem::File(file) = &mut item {
            file.key = "k".repeat(1024);
        }
        let key = item.idempotency_key();
        assert!(key.as_str().starts_with("file-"));
        assert_eq!(key.as_str().len(), "file-".len() + 64);
    }

    #[test]
    fn sequence_numbers_compare_numerically_whatever_their_length() {
        use std::cmp::Ordering::*;
        assert_eq!(compare_sequence_numbers("9", "10"), Less);
        assert_eq!(compare_sequence_numbers("010", "10"), Equal);
        assert_eq!(
            compare_sequence_numbers(
                "49590338271490256608559692538361571095921575989136588898",
                "49590338271490256608559692538361571095921575989136588899"
            ),
            Less
        );
    }

    #[test]
    fn size_limit_is_enforced_and_bounded() {
        let item = file_item();
        let limit = MessageSizeLimit::new(1024).expect("valid limit");
        let mut big = item.clone();
        if let WorkItem::File(file) = &mut big {
            file.key = "x".repeat(2000);
        }
        assert!(item.to_json(limit).is_ok());
        let err = big.to_json(limit).expect_err("too large");
        assert!(
            matches!(err, EnvelopeError::TooLarge { limit: 1024, .. }),
            "{err}"
        );
        assert!(MessageSizeLimit::new(1023).is_err());
        assert!(MessageSizeLimit::new(SQS_MAX_MESSAGE_BYTES + 1).is_err());
        assert_eq!(MessageSizeLimit::default().bytes(), 256 * 1024);
    }

    #[test]
    fn arrival_and_bytes_for_the_latency_and_volume_metrics() {
        let position = |n: &str| StreamPosition {
            sequence_number: n.to_owned(),
            sub_sequence_number: 0,
        };
        let record = |n: &str, arrival_ms: Option<i64>| StreamRecord {
            position: position(n),
            arrival_ms,
            data: serde_json::json!({}),
        };
        let mut records = RecordsItem {
            dataset: "d".into(),
            stream: "s".into(),
            shard_id: "shard".into(),
            first: position("1"),
            last: position("3"),
            payload: RecordsPayload::Inline(vec![
                record("1", Some(30)),
                record("2", None),
                record("3", Some(20)),
            ]),
            created_at_ms: Some(50),
            replay: None,
        };
        let item = WorkItem::Records(records.clone());
        assert_eq!(item.arrived_at_ms(), Some(20), "the earliest arrival");
        assert_eq!(item.source_bytes(777), 777);
        records.payload = RecordsPayload::Inline(vec![record("1", None)]);
        assert_eq!(
            WorkItem::Records(records).arrived_at_ms(),
            Some(50),
            "else creation"
        );
        let file = FileItem {
            dataset: "d".into(),
            bucket: "b".into(),
            key: "k".into(),
            version_id: None,
            etag: "e".into(),
            size: 1000,
            range: Some(ByteRange {
                start: 100,
                end: 400,
            }),
            part: Some(Part { index: 1, count: 3 }),
            format: FileFormat::Csv,
            compression: Compression::None,
            created_at_ms: Some(7),
        };
        let whole = FileItem {
            range: None,
            part: None,
            ..file.clone()
        };
        assert_eq!(
            WorkItem::File(file).source_bytes(5),
            300,
            "the part's range"
        );
        assert_eq!(WorkItem::File(whole.clone()).source_bytes(5), 1000);
        assert_eq!(
            WorkItem::File(whole).arrived_at_ms(),
            Some(7),
            "the S3 event time"
        );
    }
}
