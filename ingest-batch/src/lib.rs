//! The ingest-batch Lambda: S3 `ObjectCreated` events (direct notifications or through
//! EventBridge) → `file` work items on the work queue.
//!
//! - [`events`] reads the invocation payload into created objects with decoded keys;
//! - [`plan`] routes each object to a dataset and splits large files into parts;
//! - [`FileIngest`] sends the work items and reports what became of every object.
//!
//! `processor backfill` reuses [`FileIngest`] for objects found by listing a prefix, so
//! an object yields the same work items (and idempotency keys) both ways.

pub mod events;
pub mod keys;
pub mod plan;
pub mod split;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use shared::aws::AwsClients;
use shared::catalog::Catalog;
use shared::config::{FileSettings, QueueSettings};
use shared::envelope::{EnvelopeError, MessageSizeLimit, WorkItem};
use shared::error::{Classify, Retryability};
use shared::queue::{OutgoingMessage, SqsQueue, WorkQueue};
use shared::telemetry::names;

use crate::events::{CreatedObject, PayloadError, SkipReason, read_payload};
use crate::plan::{FilePlanner, ObjectReadError, Planned, S3Objects};

/// What one invocation (or one backfill page) did; returned as the Lambda's response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IngestReport {
    /// Objects reported as created.
    pub objects: usize,
    /// Of those, split into parts.
    pub files_split: usize,
    /// Work items the queue confirmed.
    pub work_items_sent: usize,
    /// Entries and objects that produced no work item, by reason.
    pub skipped: BTreeMap<&'static str, usize>,
}

/// Why an invocation failed. Lambda then retries the whole event (and, after its
/// retries, hands it to the on-failure destination); work items sent before the failure
/// are sent again, which the processor's ledger makes harmless.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Payload(#[from] PayloadError),
    #[error(transparent)]
    Read(#[from] ObjectReadError),
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error(
        "{failed} of {total} work item(s) could not be sent ({sent} sent); first failure: {first}"
    )]
    NotSent {
        total: usize,
        sent: usize,
        failed: usize,
        first: String,
        retryable: bool,
    },
}

impl IngestError {
    /// A short name for the error's kind (the Lambda error type).
    pub fn kind(&self) -> &'static str {
        match self {
            IngestError::Payload(_) => "UnrecognisedPayload",
            IngestError::Read(_) => "ObjectReadFailed",
            IngestError::Envelope(_) => "WorkItemInvalid",
            IngestError::NotSent { .. } => "WorkItemsNotSent",
        }
    }
}

impl Classify for IngestError {
    fn retryability(&self) -> Retryability {
        match self {
            IngestError::Read(err) => err.retryability(),
            IngestError::NotSent {
                retryable: true, ..
            } => Retryability::Retryable,
            _ => Retryability::Permanent,
        }
    }
}

/// Plans created objects and sends their work items. Built once per process.
#[derive(Debug, Clone)]
pub struct FileIngest {
    pub planner: FilePlanner,
    pub queue: Arc<dyn WorkQueue>,
    pub size_limit: MessageSizeLimit,
    /// The `source` label of the sent-items metrics (`s3_event`, `backfill`).
    pub source: &'static str,
}

impl FileIngest {
    /// The production wiring: objects read through S3, work items sent to the SQS work
    /// queue. The Lambda and `processor backfill` both build it here, so both plan and
    /// send alike (give them the same `files.part_size_bytes`: a part size is part of how
    /// a file is cut, and so of its parts' idempotency keys).
    pub fn new(
        catalog: Arc<Catalog>,
        clients: &AwsClients,
        queue: &QueueSettings,
        files: FileSettings,
        source: &'static str,
    ) -> Self {
        Self {
            planner: FilePlanner {
                catalog,
                reader: Arc::new(S3Objects {
                    client: clients.s3.clone(),
                }),
                part_size: files.part_size_bytes,
            },
            queue: Arc::new(SqsQueue::new(
                clients.sqs.clone(),
                &queue.url,
                queue.max_message_bytes,
            )),
            size_limit: queue.max_message_bytes,
            source,
        }
    }

    /// Handles one Lambda invocation payload.
    pub async fn handle(&self, payload: serde_json::Value) -> Result<IngestReport, IngestError> {
        let notifications = read_payload(payload)?;
        let mut report = IngestReport::default();
        for skipped in &notifications.skipped {
            self.count_skip(&mut report, skipped.reason, &skipped.detail);
        }
        let objects = self.ingest(&notifications.created).await?;
        report.objects = objects.objects;
        report.files_split = objects.files_split;
        report.work_items_sent = objects.work_items_sent;
        for (reason, count) in objects.skipped {
            *report.skipped.entry(reason).or_default() += count;
        }
        tracing::info!(
            objects = report.objects,
            files_split = report.files_split,
            work_items_sent = report.work_items_sent,
            skipped = ?report.skipped,
            "invocation handled"
        );
        Ok(report)
    }

    /// Plans every object, then sends all their work items. A planning failure sends
    /// nothing; a send failure reports exactly how many items the queue confirmed.
    pub async fn ingest(&self, objects: &[CreatedObject]) -> Result<IngestReport, IngestError> {
        let (items, mut report) = self.plan_objects(objects).await?;
        report.work_items_sent = self.send(&items).await?;
        Ok(report)
    }

    /// The work items of every object, and what was skipped; nothing is sent.
    pub async fn plan_objects(
        &self,
        objects: &[CreatedObject],
    ) -> Result<(Vec<WorkItem>, IngestReport), IngestError> {
        let mut report = IngestReport {
            objects: objects.len(),
            ..IngestReport::default()
        };
        metrics::counter!(names::OBJECTS_RECEIVED_TOTAL, "source" => self.source)
            .increment(objects.len() as u64);
        let mut items: Vec<WorkItem> = Vec::new();
        for object in objects {
            let object = &self.resolve_key(object).await?;
            match self.planner.plan(object).await? {
                Planned::Items(planned) => {
                    if planned.len() > 1 {
                        report.files_split += 1;
                        metrics::counter!(names::FILES_SPLIT_TOTAL).increment(1);
                        tracing::info!(bucket = %object.bucket, key = %object.key, size = object.size, parts = planned.len(), "large file split into parts");
                    }
                    items.extend(planned.into_iter().map(WorkItem::File));
                }
                Planned::Skipped(skipped) => {
                    self.count_skip(&mut report, skipped.reason, &skipped.detail);
                }
            }
        }
        Ok((items, report))
    }

    /// Sends work items; returns how many the queue confirmed, or fails naming the first
    /// that could not be sent.
    pub async fn send(&self, items: &[WorkItem]) -> Result<usize, IngestError> {
        if items.is_empty() {
            return Ok(0);
        }
        let messages = items
            .iter()
            .map(|item| item.to_json(self.size_limit).map(OutgoingMessage::from))
            .collect::<Result<Vec<_>, _>>()?;
        let sent = self.queue.send(&messages).await;
        shared::telemetry::log_items_sent(&sent, |index| items.get(index));
        metrics::counter!(names::WORK_ITEMS_SENT_TOTAL, "source" => self.source)
            .increment(sent.succeeded.len() as u64);
        if let Some(first) = sent.failed.first() {
            let retryable = sent.failed.iter().any(|f| f.retryable);
            metrics::counter!(names::WORK_ITEMS_SEND_FAILED_TOTAL, "source" => self.source, "retryable" => retryable.to_string())
                .increment(sent.failed.len() as u64);
            let which = items.get(first.index).map_or_else(
                || format!("entry {}", first.index),
                |item| format!("{} (dataset {})", describe(item), item.dataset()),
            );
            return Err(IngestError::NotSent {
                total: items.len(),
                sent: sent.succeeded.len(),
                failed: sent.failed.len(),
                first: format!("{which}: {}: {}", first.code, first.message),
                retryable,
            });
        }
        Ok(sent.succeeded.len())
    }

    /// For a key whose encoding is in doubt (see [`CreatedObject::undecoded_key`]): the
    /// form under which the bucket holds the event's content, decoded first.
    async fn resolve_key(&self, object: &CreatedObject) -> Result<CreatedObject, IngestError> {
        let Some(raw) = object.undecoded_key.as_deref() else {
            return Ok(object.clone());
        };
        if object.size == 0 {
            return Ok(object.clone()); // skipped as empty whatever its key
        }
        let decoded = CreatedObject {
            undecoded_key: None,
            ..object.clone()
        };
        match self.planner.reader.read_range(&decoded, 0, 1).await {
            Ok(_) => return Ok(decoded),
            Err(ObjectReadError::Gone { .. }) => {}
            Err(err) => return Err(err.into()),
        }
        let as_sent = CreatedObject {
            key: raw.to_owned(),
            ..decoded.clone()
        };
        match self.planner.reader.read_range(&as_sent, 0, 1).await {
            Ok(_) => {
                tracing::info!(key = raw, "EventBridge key used as sent (not URL-encoded)");
                Ok(as_sent)
            }
            // Neither exists: the decoded form goes on and is reported as gone.
            Err(ObjectReadError::Gone { .. }) => Ok(decoded),
            Err(err) => Err(err.into()),
        }
    }

    fn count_skip(&self, report: &mut IngestReport, reason: SkipReason, detail: &str) {
        *report.skipped.entry(reason.as_str()).or_default() += 1;
        metrics::counter!(names::OBJECTS_SKIPPED_TOTAL, "reason" => reason.as_str()).increment(1);
        match reason {
            SkipReason::Malformed | SkipReason::Unrouted => {
                tracing::warn!(
                    reason = reason.as_str(),
                    detail,
                    "no work item for this entry"
                )
            }
            _ => tracing::info!(
                reason = reason.as_str(),
                detail,
                "no work item for this entry"
            ),
        }
    }
}

fn describe(item: &WorkItem) -> String {
    match item {
        WorkItem::File(file) => match file.part {
            Some(part) => format!(
                "s3://{}/{} part {} of {}",
                file.bucket, file.key, part.index, part.count
            ),
            None => format!("s3://{}/{}", file.bucket, file.key),
        },
        WorkItem::Records(records) => format!("kinesis://{}/{}", records.stream, records.shard_id),
    }
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;
    use bytes::Bytes;
    use test_support::AcceptingQueue;

    use super::*;
    use crate::plan::ObjectReader;

    /// A bucket holding one key.
    #[derive(Debug)]
    struct OneKey(&'static str);

    #[async_trait]
    impl ObjectReader for OneKey {
        async fn read_range(
            &self,
            object: &CreatedObject,
            _: u64,
            _: u64,
        ) -> Result<Bytes, ObjectReadError> {
            if object.key == self.0 {
                Ok(Bytes::from_static(b"x"))
            } else {
                Err(ObjectReadError::Gone {
                    bucket: object.bucket.clone(),
                    key: object.key.clone(),
                    source: "NoSuchKey".into(),
                })
            }
        }
    }

    fn ingest(bucket_key: &'static str) -> FileIngest {
        let catalog = "[datasets.orders]\nformat = \"jsonl\"\ntarget = \"s.orders\"\ns3 = { prefix = \"orders/\" }\ncolumns = [{ name = \"id\", type = \"int64\" }]\n";
        FileIngest {
            planner: FilePlanner {
                catalog: Arc::new(Catalog::from_toml(catalog, "t").expect("catalog")),
                reader: Arc::new(OneKey(bucket_key)),
                part_size: 1 << 20,
            },
            queue: Arc::new(AcceptingQueue),
            size_limit: MessageSizeLimit::default(),
            source: "test",
        }
    }

    fn eventbridge(key: &str) -> serde_json::Value {
        serde_json::json!({
            "version": "0", "detail-type": "Object Created", "source": "aws.s3",
            "time": "2026-11-24T10:00:00Z",
            "detail": {"bucket": {"name": "b"}, "object": {"key": key, "size": 10, "etag": "e"}}
        })
    }

    async fn planned_key(ingest: &FileIngest, payload: serde_json::Value) -> String {
        let read = read_payload(payload).expect("event");
        let (items, _) = ingest.plan_objects(&read.created).await.expect("planned");
        match &items[..] {
            [WorkItem::File(file)] => file.key.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn an_eventbridge_key_is_taken_in_whichever_form_the_bucket_holds() {
        // Encoded by S3 (a space as +): the decoded key exists.
        let key = planned_key(&ingest("orders/a b.jsonl"), eventbridge("orders/a+b.jsonl")).await;
        assert_eq!(key, "orders/a b.jsonl");
        // Sent as it is: the literal + exists, the decoded form does not.
        let key = planned_key(&ingest("orders/a+b.jsonl"), eventbridge("orders/a+b.jsonl")).await;
        assert_eq!(key, "orders/a+b.jsonl");
        // A % that does not decode is taken as it is.
        let key = planned_key(
            &ingest("orders/100%.jsonl"),
            eventbridge("orders/100%.jsonl"),
        )
        .await;
        assert_eq!(key, "orders/100%.jsonl");
    }
}
