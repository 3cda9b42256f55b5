//! Stream progress: the `stream_loads` table (platform schema) has one row per loaded
//! `records` work item — its stream, shard, first and last sequence numbers, how many
//! records it held and when the newest of them arrived in the stream — written in the
//! load's transaction beside its ledger row. `processor status` reads the newest arrival
//! committed per dataset (the stream's lag); retention prunes it with the ledger.

use shared::envelope::{RecordsItem, RecordsPayload};

use super::sql::{Dialect, platform_sort_key, quote_ident};

/// The stream records a work item held, for `stream_loads`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamPart {
    pub stream: String,
    pub shard_id: String,
    pub first_sequence: String,
    pub last_sequence: String,
    pub records: i64,
    /// When the newest record arrived in the stream (milliseconds since the epoch), when the
    /// item says (items of a claim check do not carry arrival times).
    pub newest_arrival_ms: Option<i64>,
}

impl StreamPart {
    pub fn of(item: &RecordsItem) -> Self {
        let (records, newest_arrival_ms) = match &item.payload {
            RecordsPayload::Inline(list) => (
                list.len(),
                list.iter().filter_map(|record| record.arrival_ms).max(),
            ),
            RecordsPayload::S3(claim) => (usize::try_from(claim.record_count).unwrap_or(0), None),
        };
        Self {
            stream: item.stream.clone(),
            shard_id: item.shard_id.clone(),
            first_sequence: item.first.sequence_number.clone(),
            last_sequence: item.last.sequence_number.clone(),
            records: i64::try_from(records).unwrap_or(i64::MAX),
            newest_arrival_ms,
        }
    }
}

/// A loaded records item and its stream part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LoadedStream {
    pub key: String,
    pub part: StreamPart,
}

/// The columns an insert names, in order (the dataset is the second).
pub(crate) const COLUMNS: [&str; 8] = [
    "idempotency_key",
    "dataset",
    "stream",
    "shard_id",
    "first_sequence",
    "last_sequence",
    "records",
    "newest_arrival_at",
];

pub(crate) fn stream_loads_table(schema: &str) -> String {
    format!("{}.\"stream_loads\"", quote_ident(schema))
}

pub(crate) fn create_stream_loads(schema: &str, dialect: Dialect) -> String {
    let (text, timestamp, now) = (dialect.text, dialect.timestamp, dialect.now);
    format!(
        "CREATE TABLE IF NOT EXISTS {} (\n  \"idempotency_key\" {text} NOT NULL PRIMARY KEY,\n  \"dataset\" {text} NOT NULL,\n  \"stream\" {text} NOT NULL,\n  \"shard_id\" {text} NOT NULL,\n  \"first_sequence\" {text} NOT NULL,\n  \"last_sequence\" {text} NOT NULL,\n  \"records\" bigint NOT NULL,\n  \"newest_arrival_at\" {timestamp},\n  \"loaded_at\" {timestamp} NOT NULL DEFAULT {now}\n){}",
        stream_loads_table(schema),
        platform_sort_key(dialect, "loaded_at")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::envelope::{StreamPosition, StreamRecord};

    #[test]
    fn a_part_names_its_shard_range_and_newest_arrival() {
        let position = |n: &str| StreamPosition {
            sequence_number: n.to_owned(),
            sub_sequence_number: 0,
        };
        let record = |n: &str, arrival_ms| StreamRecord {
            position: position(n),
            arrival_ms,
            data: serde_json::json!({}),
        };
        let item = RecordsItem {
            dataset: "events".into(),
            stream: "clicks".into(),
            shard_id: "shardId-000000000001".into(),
            first: position("10"),
            last: position("12"),
            payload: RecordsPayload::Inline(vec![
                record("10", Some(5_000)),
                record("11", None),
                record("12", Some(4_000)),
            ]),
            created_at_ms: None,
            replay: None,
        };
        let part = StreamPart::of(&item);
        assert_eq!(
            (part.first_sequence.as_str(), part.last_sequence.as_str()),
            ("10", "12")
        );
        assert_eq!((part.records, part.newest_arrival_ms), (3, Some(5_000)));
    }
}
