//! `processor dlq`: the dead letters, looked at without taking them — each with its
//! dataset, the data it names (an S3 object or part, a stream shard's records), its reason,
//! how often it was received and redriven, and its age. Works on any queue (SQS, the local
//! platform's), with the one receive-and-release that SQS allows: a letter is received
//! with a short visibility so it is not read twice, and made visible again at the end
//! (never deleted). Receiving counts in SQS's receive count; a dead-letter queue has no
//! redrive policy of its own, so that moves nothing.

use std::time::Duration;

use shared::envelope::WorkItem;
use shared::queue::{DATASET_ATTRIBUTE, QueueError, REASON_ATTRIBUTE, ReceivedMessage, WorkQueue};

use super::redrive::REDRIVE_COUNT_ATTRIBUTE;

/// How long a letter stays hidden while the look goes on.
const LOOK_VISIBILITY: Duration = Duration::from_secs(30);
/// A look ends well before the first letter it hid shows again (and would be read twice).
const LOOK_TIME: Duration = Duration::from_secs(20);
/// The most letters one look shows.
pub const MAX_LOOK: usize = 1000;
/// Receives that find nothing before the look ends.
const EMPTY_POLLS: u32 = 2;

/// One dead letter.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeadLetter {
    pub message_id: String,
    /// The work item's idempotency key (what the ledger records once it loads).
    pub idempotency_key: Option<String>,
    pub dataset: Option<String>,
    /// The data the work item names, or what is wrong with its body.
    pub source: String,
    pub reason: String,
    pub receives: u32,
    pub redrives: u32,
    /// When it was sent to the dead-letter queue (for a letter the queue's redrive policy
    /// moved: when it was first sent to the work queue), milliseconds since the epoch, and
    /// as ISO 8601 text.
    pub sent_at_ms: Option<i64>,
    pub sent_at: Option<String>,
}

/// Up to `max` (at most [`MAX_LOOK`]) dead letters, ordered by when they were sent, left
/// in the queue. SQS hands out letters in no set order: when the queue holds more, they
/// are some of them, not the oldest.
pub async fn peek_dead_letters(
    queue: &dyn WorkQueue,
    max: usize,
) -> Result<Vec<DeadLetter>, QueueError> {
    let max = max.min(MAX_LOOK);
    let started = std::time::Instant::now();
    let mut letters: Vec<DeadLetter> = Vec::new();
    let mut receipts = Vec::new();
    let mut empty_polls = 0;
    let mut failed = None;
    while letters.len() < max && empty_polls < EMPTY_POLLS && started.elapsed() < LOOK_TIME {
        let want = u8::try_from((max - letters.len()).min(10)).unwrap_or(10);
        match queue
            .receive(want, Duration::from_secs(1), LOOK_VISIBILITY)
            .await
        {
            Ok(got) if got.is_empty() => empty_polls += 1,
            Ok(got) => {
                receipts.extend(got.iter().map(|m| m.receipt_handle.clone()));
                for message in &got {
                    if !letters.iter().any(|l| l.message_id == message.message_id) {
                        letters.push(dead_letter(message));
                    }
                }
            }
            Err(err) => {
                failed = Some(err);
                break;
            }
        }
    }
    // Every letter looked at is released, also when a receive failed.
    for receipt in &receipts {
        if let Err(err) = queue.extend_visibility(receipt, Duration::ZERO).await {
            tracing::warn!(error = %shared::error::Report(&err), "a dead letter looked at stays hidden until its visibility timeout ends");
        }
    }
    if let Some(err) = failed {
        return Err(err);
    }
    letters.sort_by_key(|l| l.sent_at_ms);
    Ok(letters)
}

fn dead_letter(message: &ReceivedMessage) -> DeadLetter {
    let item = WorkItem::from_json(&message.body);
    DeadLetter {
        message_id: message.message_id.clone(),
        idempotency_key: item.as_ref().ok().map(|i| i.idempotency_key().to_string()),
        dataset: message
            .attributes
            .get(DATASET_ATTRIBUTE)
            .cloned()
            .or_else(|| item.as_ref().ok().map(|i| i.dataset().to_owned())),
        source: match &item {
            Ok(item) => source_of(item),
            Err(err) => format!("not a work item: {}", shared::error::report(err)),
        },
        reason: message
            .attributes
            .get(REASON_ATTRIBUTE)
            .cloned()
            .unwrap_or_else(|| {
                "received too often (moved by the queue's redrive policy)".to_owned()
            }),
        receives: message.receive_count,
        redrives: message
            .attributes
            .get(REDRIVE_COUNT_ATTRIBUTE)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0),
        sent_at_ms: message.sent_at_ms,
        sent_at: message.sent_at_ms.map(crate::timefmt::iso_utc_millis),
    }
}

/// The data a work item names: `s3://bucket/key` (with its part), or a stream shard's
/// records by sequence number.
pub fn source_of(item: &WorkItem) -> String {
    match item {
        WorkItem::File(file) => {
            let part = file
                .part
                .as_ref()
                .map(|p| format!(" (part {} of {})", p.index, p.count))
                .unwrap_or_default();
            format!("s3://{}/{}{part}", file.bucket, file.key)
        }
        WorkItem::Records(records) => format!(
            "stream {} {} records {}…{}{}",
            records.stream,
            records.shard_id,
            records.first.sequence_number,
            records.last.sequence_number,
            if records.replay.is_some() {
                " (replayed)"
            } else {
                ""
            }
        ),
    }
}
