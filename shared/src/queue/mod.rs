//! The work queue: a small interface, with SQS (`sqs`) and an embedded SQLite queue for
//! the local platform (`embedded`) behind it.
//!
//! Batch operations never fail as a whole: they report, per entry, what succeeded and
//! what failed (and whether retrying may help), after retrying only the failed entries.
//! Nothing is reported as sent or deleted that the service did not confirm.

#[cfg(feature = "embedded")]
mod embedded;
mod sqs;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::{BoxError, Classify, Retryability};
use crate::retry::EntryReport;

#[cfg(feature = "embedded")]
pub use embedded::{EmbeddedQueue, Redrive};
pub use sqs::SqsQueue;

/// Message attributes the processor sets on a dead-lettered message (and redrive removes).
pub const REASON_ATTRIBUTE: &str = "ingest_failure_reason";
pub const DATASET_ATTRIBUTE: &str = "ingest_dataset";

/// The most entries SQS accepts in one batch call.
pub(crate) const SQS_MAX_BATCH_ENTRIES: usize = 10;

/// A message to send: a body and string attributes (e.g. why it was dead-lettered).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutgoingMessage {
    pub body: String,
    pub attributes: BTreeMap<String, String>,
}

impl OutgoingMessage {
    pub fn with_attribute(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes.insert(name.into(), value.into());
        self
    }

    /// Bytes counted against the SQS size limit: the body plus each attribute's name,
    /// type and value.
    pub fn size(&self) -> usize {
        self.body.len()
            + self
                .attributes
                .iter()
                .map(|(name, value)| name.len() + "String".len() + value.len())
                .sum::<usize>()
    }
}

impl From<String> for OutgoingMessage {
    fn from(body: String) -> Self {
        Self {
            body,
            attributes: BTreeMap::new(),
        }
    }
}

/// One message received from the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    pub message_id: String,
    /// Needed to delete the message or change its visibility; valid for this receive only.
    pub receipt_handle: String,
    pub body: String,
    /// How many times the message has been received, this time included.
    pub receive_count: u32,
    /// When the message was first sent, milliseconds since the Unix epoch.
    pub sent_at_ms: Option<i64>,
    /// String message attributes.
    pub attributes: BTreeMap<String, String>,
}

/// Approximate counts of a queue's messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDepth {
    /// Messages ready to be received.
    pub visible: u64,
    /// Messages received and not yet deleted or released.
    pub in_flight: u64,
    /// When the oldest message (waiting or in flight) was sent, milliseconds since the
    /// epoch, where the queue tells: the local queue does; SQS reports it only to
    /// CloudWatch (`ApproximateAgeOfOldestMessage`).
    pub oldest_sent_ms: Option<i64>,
}

/// Per-entry outcome of a send: the message id of each sent body.
pub type SendReport = EntryReport<String>;
/// Per-entry outcome of a delete.
pub type DeleteReport = EntryReport<()>;

/// A whole queue call failed (after the SDK's own retries).
#[derive(Debug, thiserror::Error)]
#[error("{operation} on queue {queue_url} failed")]
pub struct QueueError {
    pub operation: &'static str,
    pub queue_url: String,
    pub source: BoxError,
    pub retryability: Retryability,
}

impl Classify for QueueError {
    fn retryability(&self) -> Retryability {
        self.retryability
    }
}

/// What the platform needs from a work queue.
#[async_trait]
pub trait WorkQueue: Send + Sync + fmt::Debug {
    /// Sends messages in as few batch calls as the limits allow.
    async fn send(&self, messages: &[OutgoingMessage]) -> SendReport;

    /// Receives up to `max_messages` (1 to 10), waiting up to `wait` for the first, and
    /// hides them for `visibility`.
    async fn receive(
        &self,
        max_messages: u8,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError>;

    /// Deletes messages by receipt handle.
    async fn delete(&self, receipt_handles: &[String]) -> DeleteReport;

    /// Approximate message counts.
    async fn depth(&self) -> Result<QueueDepth, QueueError>;

    /// Hides a received message for `timeout` from now (the heartbeat of long work).
    async fn extend_visibility(
        &self,
        receipt_handle: &str,
        timeout: Duration,
    ) -> Result<(), QueueError>;
}

/// Splits entries into batches of at most `max_entries` whose sizes add up to at most
/// `max_bytes`; an entry larger than `max_bytes` on its own is returned separately.
pub(crate) fn plan_batches(
    sizes: &[usize],
    max_entries: usize,
    max_bytes: usize,
) -> (Vec<Vec<usize>>, Vec<usize>) {
    let mut batches = Vec::new();
    let mut oversized = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut current_bytes = 0usize;
    for (index, &size) in sizes.iter().enumerate() {
        if size > max_bytes {
            oversized.push(index);
            continue;
        }
        if current.len() == max_entries || current_bytes + size > max_bytes {
            batches.push(std::mem::take(&mut current));
            current_bytes = 0;
        }
        current.push(index);
        current_bytes += size;
    }
    if !current.is_empty() {
        batches.push(current);
    }
    (batches, oversized)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_respect_entry_and_byte_limits() {
        let (batches, oversized) = plan_batches(&[10; 25], 10, 1000);
        assert_eq!(
            batches.iter().map(Vec::len).collect::<Vec<_>>(),
            [10, 10, 5]
        );
        assert!(oversized.is_empty());

        let (batches, oversized) = plan_batches(&[400, 400, 400, 1001, 100], 10, 1000);
        assert_eq!(batches, vec![vec![0, 1], vec![2, 4]]);
        assert_eq!(oversized, vec![3]);

        let (batches, _) = plan_batches(&[], 10, 1000);
        assert!(batches.is_empty());
    }
}
