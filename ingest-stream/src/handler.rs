//! One batch of Kinesis records → `records` work items on the queue, invalid records to
//! quarantine, and the position to retry from when something could not be sent.
//!
//! For each Kinesis record, in order: de-aggregate (KPL), decompress, parse JSON, route
//! by stream and discriminator, validate against the dataset's columns. Invalid records
//! are written to quarantine (one JSON-lines object per batch, each with its reason) and
//! count as handled; valid ones are packed per dataset and shard into work items up to
//! the message size limit, a record too large for one going by claim check (an S3 object
//! and a pointer). Then the items are sent, in record order.
//!
//! The outcome names the first Kinesis record not safely handled (its items not all
//! sent, or its quarantine entry not written): Lambda, told so through
//! `batchItemFailures`, retries from exactly there, so nothing earlier is sent again and
//! nothing is reported as processed that was not.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use shared::catalog::Catalog;
use shared::config::S3Location;
use shared::envelope::{
    ClaimCheck, MessageSizeLimit, RecordsItem, RecordsPayload, StreamPosition, StreamRecord,
    WorkItem,
};
use shared::error::{BoxError, Retryability, classify_sdk_error, report};
use shared::queue::{OutgoingMessage, WorkQueue};
use shared::telemetry::names;
use shared::validate::validate_record;

use crate::decode::{json_value, user_records};

/// One Kinesis record as the handler needs it (from a Lambda event or `GetRecords`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingRecord {
    pub stream: String,
    pub shard_id: String,
    pub sequence_number: String,
    /// `ApproximateArrivalTimestamp`, milliseconds since the epoch.
    pub arrival_ms: Option<i64>,
    pub data: Vec<u8>,
}

/// What a batch came to.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct BatchOutcome {
    /// Kinesis records in the batch.
    pub records: usize,
    /// User records (after KPL de-aggregation).
    pub user_records: usize,
    pub quarantined: usize,
    pub work_items_sent: usize,
    pub claim_checks: usize,
    /// The sequence number of the first Kinesis record not safely handled: Lambda
    /// retries from it. `None` when the whole batch is done.
    pub retry_from: Option<String>,
    /// Why, when `retry_from` is set.
    pub failure: Option<String>,
}

/// Why writing an object failed.
#[derive(Debug, thiserror::Error)]
#[error("writing s3://{bucket}/{key} failed")]
pub struct PutError {
    pub bucket: String,
    pub key: String,
    pub source: BoxError,
    pub retryable: bool,
}

/// Where quarantine files and claim checks are written.
#[async_trait]
pub trait ObjectWriter: Send + Sync + fmt::Debug {
    async fn put(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<(), PutError>;
}

/// Writes through the S3 API.
#[derive(Debug, Clone)]
pub struct S3Writer {
    pub client: aws_sdk_s3::Client,
}

#[async_trait]
impl ObjectWriter for S3Writer {
    async fn put(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<(), PutError> {
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type("application/x-ndjson")
            .body(body.into())
            .send()
            .await
            .map_err(|err| PutError {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                retryable: classify_sdk_error(&err) == Retryability::Retryable,
                source: err.into(),
            })?;
        Ok(())
    }
}

/// The stream path's handler, built once per process.
#[derive(Debug, Clone)]
pub struct StreamIngest {
    pub catalog: Arc<Catalog>,
    pub queue: Arc<dyn WorkQueue>,
    pub objects: Arc<dyn ObjectWriter>,
    pub quarantine: S3Location,
    pub claim_checks: S3Location,
    pub size_limit: MessageSizeLimit,
    /// Set by `processor replay`: marks the work items as a replay's (see
    /// [`RecordsItem::replay`]).
    pub replay: Option<String>,
}

/// A record that goes to quarantine, and which Kinesis record it came from.
#[derive(Debug, serde::Serialize)]
struct QuarantineEntry<'a> {
    stream: &'a str,
    shard_id: &'a str,
    sequence_number: &'a str,
    sub_sequence_number: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    arrival_ms: Option<i64>,
    reason: String,
    /// The record's bytes as text when they are UTF-8 …
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<String>,
    /// … otherwise base64.
    #[serde(skip_serializing_if = "Option::is_none")]
    data_base64: Option<String>,
}

/// A valid record bound for a dataset, and which Kinesis record it came from.
#[derive(Debug)]
struct Routed {
    source: usize,
    record: StreamRecord,
}

/// A batch's records sorted: invalid ones with their reasons, valid ones per (dataset,
/// stream, shard) in record order.
#[derive(Debug, Default)]
struct Sorted<'a> {
    quarantine: Vec<(usize, QuarantineEntry<'a>)>,
    routed: BTreeMap<(String, String, String), Vec<Routed>>,
}

impl<'a> Sorted<'a> {
    /// Quarantines user record `sub` of Kinesis record `index`, keeping its bytes as text
    /// when they are UTF-8 and as base64 otherwise.
    fn quarantine(
        &mut self,
        index: usize,
        record: &'a IncomingRecord,
        sub: u64,
        reason: String,
        bytes: &[u8],
    ) {
        let (data, data_base64) = match std::str::from_utf8(bytes) {
            Ok(text) => (Some(text.to_owned()), None),
            Err(_) => (None, Some(aws_smithy_types::base64::encode(bytes))),
        };
        let entry = QuarantineEntry {
            stream: &record.stream,
            shard_id: &record.shard_id,
            sequence_number: &record.sequence_number,
            sub_sequence_number: sub,
            arrival_ms: record.arrival_ms,
            reason,
            data,
            data_base64,
        };
        self.quarantine.push((index, entry));
    }
}

/// The first record of a batch not safely handled, and why: the batch is retried from it.
#[derive(Debug, Default)]
struct UnsafeFrom(Option<(usize, String)>);

impl UnsafeFrom {
    fn mark(&mut self, index: usize, why: String) {
        if self.0.as_ref().is_none_or(|(at, _)| index < *at) {
            self.0 = Some((index, why));
        }
    }
}

/// An item to send and the Kinesis records it holds.
#[derive(Debug)]
struct Packed {
    item: WorkItem,
    sources: Vec<usize>,
}

/// Room a work item needs besides its records: the envelope, names and positions.
const ENVELOPE_BYTES: usize = 512;

impl StreamIngest {
    /// The production wiring: the SQS work queue and S3 for quarantine and claim checks.
    pub fn new(
        catalog: Arc<Catalog>,
        clients: &shared::aws::AwsClients,
        queue: &shared::config::QueueSettings,
        stream: &shared::config::StreamSettings,
    ) -> Self {
        Self {
            catalog,
            queue: Arc::new(shared::queue::SqsQueue::new(
                clients.sqs.clone(),
                &queue.url,
                queue.max_message_bytes,
            )),
            objects: Arc::new(S3Writer {
                client: clients.s3.clone(),
            }),
            quarantine: stream.quarantine.clone(),
            claim_checks: stream.claim_checks.clone(),
            size_limit: queue.max_message_bytes,
            replay: None,
        }
    }

    /// Handles one batch (all records of one shard, in order, as Lambda delivers them).
    pub async fn ingest(&self, records: &[IncomingRecord]) -> BatchOutcome {
        let mut outcome = BatchOutcome {
            records: records.len(),
            ..BatchOutcome::default()
        };
        metrics::counter!(names::STREAM_RECORDS_RECEIVED_TOTAL).increment(records.len() as u64);
        let mut sorted = Sorted::default();
        for (index, record) in records.iter().enumerate() {
            outcome.user_records += self.sort_record(index, record, &mut sorted);
        }
        outcome.quarantined = sorted.quarantine.len();
        let mut unsafe_from = UnsafeFrom::default();
        self.write_quarantine(records, &sorted.quarantine, &mut unsafe_from)
            .await;
        let packed = self
            .pack_all(sorted.routed, &mut outcome, &mut unsafe_from)
            .await;
        self.send_packed(&packed, &mut outcome, &mut unsafe_from)
            .await;
        if let Some((index, why)) = unsafe_from.0 {
            outcome.retry_from = Some(records[index].sequence_number.clone());
            outcome.failure = Some(why);
        }
        outcome
    }

    /// Decodes one Kinesis record into its user records and sorts each into quarantine
    /// (with why) or to its dataset; returns how many user records it held.
    fn sort_record<'a>(
        &self,
        index: usize,
        record: &'a IncomingRecord,
        sorted: &mut Sorted<'a>,
    ) -> usize {
        let users = match user_records(&record.data) {
            Ok(users) => users,
            Err(err) => {
                sorted.quarantine(index, record, 0, report(&err), &record.data);
                return 1;
            }
        };
        let count = users.len();
        for user in users {
            let sub = user.sub_sequence_number;
            let value = match json_value(&user.data) {
                Ok(value) => value,
                Err(err) => {
                    sorted.quarantine(index, record, sub, report(&err), &user.data);
                    continue;
                }
            };
            let Some(dataset) = self.catalog.route_record(&record.stream, &value) else {
                let why = format!(
                    "no dataset of the catalog takes records of stream {:?} like this one",
                    record.stream
                );
                sorted.quarantine(index, record, sub, why, &user.data);
                continue;
            };
            if let Err(reason) = validate_record(dataset, &value) {
                let why = format!("dataset {}: {reason}", dataset.name);
                sorted.quarantine(index, record, sub, why, &user.data);
                continue;
            }
            let group = (
                dataset.name.clone(),
                record.stream.clone(),
                record.shard_id.clone(),
            );
            sorted.routed.entry(group).or_default().push(Routed {
                source: index,
                record: StreamRecord {
                    position: StreamPosition {
                        sequence_number: record.sequence_number.clone(),
                        sub_sequence_number: sub,
                    },
                    arrival_ms: record.arrival_ms,
                    data: value,
                },
            });
        }
        count
    }

    /// Writes the batch's invalid records, with their reasons, as one JSON-lines object.
    async fn write_quarantine(
        &self,
        records: &[IncomingRecord],
        quarantine: &[(usize, QuarantineEntry<'_>)],
        unsafe_from: &mut UnsafeFrom,
    ) {
        let (Some((first, _)), Some((last, _))) = (quarantine.first(), quarantine.last()) else {
            return;
        };
        let lines: Vec<String> = quarantine
            .iter()
            .filter_map(|(_, entry)| serde_json::to_string(entry).ok())
            .collect();
        let (first_record, last_record) = (&records[*first], &records[*last]);
        let key = format!(
            "{}{}/{}/{}-{}.jsonl",
            self.quarantine.prefix,
            first_record.stream,
            first_record.shard_id,
            first_record.sequence_number,
            last_record.sequence_number
        );
        let body = (lines.join("\n") + "\n").into_bytes();
        match self.objects.put(&self.quarantine.bucket, &key, body).await {
            Ok(()) => {
                metrics::counter!(names::RECORDS_QUARANTINED_TOTAL)
                    .increment(quarantine.len() as u64);
                tracing::warn!(records = quarantine.len(), location = %format!("s3://{}/{key}", self.quarantine.bucket), "invalid records quarantined");
            }
            Err(err) => unsafe_from.mark(*first, report(&err)),
        }
    }

    /// Packs every (dataset, stream, shard) group into work items.
    async fn pack_all(
        &self,
        routed: BTreeMap<(String, String, String), Vec<Routed>>,
        outcome: &mut BatchOutcome,
        unsafe_from: &mut UnsafeFrom,
    ) -> Vec<Packed> {
        let mut packed = Vec::new();
        for ((dataset, stream, shard), group) in routed {
            match self.pack(&dataset, &stream, &shard, group).await {
                Ok(items) => {
                    outcome.claim_checks += items
                        .iter()
                        .filter(|p| matches!(&p.item, WorkItem::Records(r) if matches!(r.payload, RecordsPayload::S3(_))))
                        .count();
                    packed.extend(items);
                }
                Err((index, why)) => unsafe_from.mark(index, why),
            }
        }
        // Send in record order, so a retry from the first failure resends the least.
        packed.sort_by_key(|p| p.sources.first().copied().unwrap_or(usize::MAX));
        packed
    }

    /// Sends the packed items; an item that cannot be sent marks its first record unsafe.
    async fn send_packed(
        &self,
        packed: &[Packed],
        outcome: &mut BatchOutcome,
        unsafe_from: &mut UnsafeFrom,
    ) {
        let mut messages = Vec::with_capacity(packed.len());
        let mut sendable = Vec::with_capacity(packed.len());
        for p in packed {
            match p.item.to_json(self.size_limit) {
                Ok(body) => {
                    messages.push(OutgoingMessage::from(body));
                    sendable.push(p);
                }
                Err(err) => unsafe_from.mark(p.sources[0], report(&err)),
            }
        }
        if messages.is_empty() {
            return;
        }
        let sent = self.queue.send(&messages).await;
        shared::telemetry::log_items_sent(&sent, |index| sendable.get(index).map(|p| &p.item));
        outcome.work_items_sent = sent.succeeded.len();
        metrics::counter!(names::WORK_ITEMS_SENT_TOTAL, "source" => "kinesis")
            .increment(sent.succeeded.len() as u64);
        for failure in &sent.failed {
            if let Some(p) = sendable.get(failure.index) {
                let why = format!(
                    "sending a work item failed: {}: {}",
                    failure.code, failure.message
                );
                unsafe_from.mark(p.sources[0], why);
            }
        }
    }

    /// Packs one dataset's records of one shard into items that fit a message. A
    /// record that does not fit on its own goes by claim check; failing to write one
    /// returns the record's index.
    async fn pack(
        &self,
        dataset: &str,
        stream: &str,
        shard: &str,
        group: Vec<Routed>,
    ) -> Result<Vec<Packed>, (usize, String)> {
        let budget = self
            .size_limit
            .bytes()
            .saturating_sub(ENVELOPE_BYTES + dataset.len() + stream.len() + shard.len());
        let mut items = Vec::new();
        let mut current: Vec<Routed> = Vec::new();
        let mut current_bytes = 0;
        for routed in group {
            let size = serde_json::to_string(&routed.record).map_or(usize::MAX, |t| t.len() + 1)
                + 2 * routed.record.position.sequence_number.len();
            if size > budget {
                if !current.is_empty() {
                    items.extend(self.inline_items(
                        dataset,
                        stream,
                        shard,
                        std::mem::take(&mut current),
                    ));
                    current_bytes = 0;
                }
                items.push(self.claim_check(dataset, stream, shard, routed).await?);
                continue;
            }
            if current_bytes + size > budget && !current.is_empty() {
                items.extend(self.inline_items(
                    dataset,
                    stream,
                    shard,
                    std::mem::take(&mut current),
                ));
                current_bytes = 0;
            }
            current_bytes += size;
            current.push(routed);
        }
        if !current.is_empty() {
            items.extend(self.inline_items(dataset, stream, shard, current));
        }
        Ok(items)
    }

    /// One item for the records, or more when the estimate was short: an item is split
    /// in halves until each fits.
    fn inline_items(
        &self,
        dataset: &str,
        stream: &str,
        shard: &str,
        group: Vec<Routed>,
    ) -> Vec<Packed> {
        let item = records_item(
            self.replay.as_deref(),
            dataset,
            stream,
            shard,
            &group,
            |records| RecordsPayload::Inline(records.iter().map(|r| r.record.clone()).collect()),
        );
        if group.len() > 1 && item.to_json(self.size_limit).is_err() {
            let mut first = group;
            let second = first.split_off(first.len() / 2);
            let mut items = self.inline_items(dataset, stream, shard, first);
            items.extend(self.inline_items(dataset, stream, shard, second));
            return items;
        }
        vec![Packed {
            sources: group.iter().map(|r| r.source).collect(),
            item,
        }]
    }

    async fn claim_check(
        &self,
        dataset: &str,
        stream: &str,
        shard: &str,
        routed: Routed,
    ) -> Result<Packed, (usize, String)> {
        let position = &routed.record.position;
        let key = format!(
            "{}{stream}/{shard}/{}-{}.jsonl",
            self.claim_checks.prefix, position.sequence_number, position.sub_sequence_number
        );
        let body = serde_json::to_string(&routed.record)
            .map_err(|err| (routed.source, report(&err)))?
            + "\n";
        let size = body.len() as u64;
        self.objects
            .put(&self.claim_checks.bucket, &key, body.into_bytes())
            .await
            .map_err(|err| (routed.source, report(&err)))?;
        let bucket = self.claim_checks.bucket.clone();
        let group = [routed];
        let item = records_item(
            self.replay.as_deref(),
            dataset,
            stream,
            shard,
            &group,
            |_| {
                RecordsPayload::S3(ClaimCheck {
                    bucket,
                    key,
                    record_count: 1,
                    size,
                })
            },
        );
        Ok(Packed {
            sources: vec![group[0].source],
            item,
        })
    }
}

fn records_item(
    replay: Option<&str>,
    dataset: &str,
    stream: &str,
    shard: &str,
    group: &[Routed],
    payload: impl FnOnce(&[Routed]) -> RecordsPayload,
) -> WorkItem {
    let position = |r: Option<&Routed>| {
        r.map(|r| r.record.position.clone())
            .unwrap_or(StreamPosition {
                sequence_number: String::new(),
                sub_sequence_number: 0,
            })
    };
    WorkItem::Records(RecordsItem {
        dataset: dataset.to_owned(),
        stream: stream.to_owned(),
        shard_id: shard.to_owned(),
        first: position(group.first()),
        last: position(group.last()),
        payload: payload(group),
        created_at_ms: group.iter().filter_map(|r| r.record.arrival_ms).min(),
        replay: replay.map(str::to_owned),
    })
}
