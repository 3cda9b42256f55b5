//! Micro-batching: stream items and small whole files of one dataset wait, hidden by their
//! heartbeats, until a row, byte or time limit is reached, and are loaded together.

use std::collections::HashMap;
use std::time::Duration;

use shared::envelope::{RecordsPayload, WorkItem};
use shared::queue::ReceivedMessage;
use tokio::time::Instant;

use super::heartbeat::Heartbeat;
use super::{ProcessError, Worker};
use crate::warehouse::LoadReport;

/// Limits of a micro-batch: whichever is reached first flushes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSettings {
    pub max_rows: usize,
    /// Bytes of records items' messages plus small files' objects.
    pub max_bytes: usize,
    pub max_wait: Duration,
    /// A whole file at most this large joins a batch; 0: every file loads alone.
    pub small_file_bytes: u64,
}

impl BatchSettings {
    /// Whether `item` may wait in a micro-batch: every records item, and a whole file no
    /// larger than `small_file_bytes` (a part of a split file is large by construction).
    pub(super) fn admits(&self, item: &WorkItem) -> bool {
        match item {
            WorkItem::Records(_) => true,
            WorkItem::File(file) => {
                self.small_file_bytes > 0
                    && file.part.is_none()
                    && file.size <= self.small_file_bytes
            }
        }
    }
}

impl Default for BatchSettings {
    fn default() -> Self {
        Self {
            max_rows: 10_000,
            max_bytes: 8 * 1024 * 1024,
            max_wait: Duration::from_secs(1),
            small_file_bytes: 1024 * 1024,
        }
    }
}

/// Items of one dataset waiting to be loaded together.
#[derive(Debug)]
pub(super) struct PendingBatch {
    started: Instant,
    rows: usize,
    bytes: usize,
    items: Vec<(ReceivedMessage, WorkItem)>,
    heartbeats: Vec<Heartbeat>,
}

impl PendingBatch {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            rows: 0,
            bytes: 0,
            items: Vec::new(),
            heartbeats: Vec::new(),
        }
    }
}

/// The pending micro-batches of one worker, by dataset.
#[derive(Debug, Default)]
pub(super) struct Batches(HashMap<String, PendingBatch>);

impl Batches {
    /// Adds an item the limits admit; returns its dataset's batch once it is full.
    pub(super) fn add(
        &mut self,
        message: ReceivedMessage,
        item: WorkItem,
        heartbeat: Heartbeat,
        limits: &BatchSettings,
    ) -> Option<PendingBatch> {
        let dataset = item.dataset().to_owned();
        let batch = self
            .0
            .entry(dataset.clone())
            .or_insert_with(PendingBatch::new);
        batch.rows += match &item {
            WorkItem::Records(records) => match &records.payload {
                RecordsPayload::Inline(list) => list.len(),
                RecordsPayload::S3(claim) => {
                    usize::try_from(claim.record_count).unwrap_or(usize::MAX)
                }
            },
            // Unknown until read; its bytes count instead.
            WorkItem::File(_) => 0,
        };
        let bytes = item.source_bytes(message.body.len());
        batch.bytes = batch
            .bytes
            .saturating_add(usize::try_from(bytes).unwrap_or(usize::MAX));
        batch.items.push((message, item));
        batch.heartbeats.push(heartbeat);
        let full = batch.rows >= limits.max_rows || batch.bytes >= limits.max_bytes;
        if full { self.0.remove(&dataset) } else { None }
    }

    /// How long until the oldest batch is due, if any is pending.
    pub(super) fn next_due(&self, max_wait: Duration) -> Option<Duration> {
        let now = Instant::now();
        self.0
            .values()
            .map(|batch| (batch.started + max_wait).saturating_duration_since(now))
            .min()
    }

    /// The batches that have waited `max_wait`.
    pub(super) fn take_due(&mut self, max_wait: Duration) -> Vec<PendingBatch> {
        let now = Instant::now();
        let due: Vec<String> = self
            .0
            .iter()
            .filter(|(_, batch)| now >= batch.started + max_wait)
            .map(|(dataset, _)| dataset.clone())
            .collect();
        due.iter()
            .filter_map(|dataset| self.0.remove(dataset))
            .collect()
    }

    /// Every pending batch (at shutdown).
    pub(super) fn take_all(&mut self) -> Vec<PendingBatch> {
        self.0.drain().map(|(_, batch)| batch).collect()
    }
}

impl Worker {
    /// Loads a micro-batch in one transaction and deletes its messages. If the batch fails,
    /// each item is retried alone, so one bad item cannot hold the others back. Returns
    /// whether an item was released for a retry.
    pub(super) async fn flush(&self, batch: PendingBatch) -> bool {
        let PendingBatch {
            items, heartbeats, ..
        } = batch;
        let Some((_, first)) = items.first() else {
            return false;
        };
        let started = std::time::Instant::now();
        let result = self.load_many(items.iter().map(|(_, item)| item)).await;
        // Each item is handled alone below, with a heartbeat of its own.
        drop(heartbeats);
        match result {
            Ok(mut report) => {
                let released = self.announce_files(&items).await;
                // A released item is handled again after its backoff and counted then: a
                // skip counted now would be counted twice.
                let skipped_again = released
                    .iter()
                    .map(|&index| items[index].1.idempotency_key())
                    .filter(|key| !report.loaded_keys.iter().any(|k| k == key.as_str()))
                    .count();
                report.items_skipped = report.items_skipped.saturating_sub(skipped_again);
                let sizes: Vec<(&WorkItem, usize)> = items
                    .iter()
                    .map(|(message, item)| (item, message.body.len()))
                    .collect();
                self.record_load(first.dataset(), &report, started.elapsed(), &sizes);
                let settled: Vec<(ReceivedMessage, WorkItem)> = items
                    .into_iter()
                    .enumerate()
                    .filter(|(index, _)| !released.contains(index))
                    .map(|(_, entry)| entry)
                    .collect();
                self.delete_batch(&settled, &report).await;
                !released.is_empty()
            }
            Err(err) => self.handle_one_by_one(&items, &err).await,
        }
    }

    /// Announces the files of a loaded batch that are now complete. An item whose
    /// announcement failed is released for a retry (its load is in the ledger, so the retry
    /// only announces); returns the indices of those released.
    async fn announce_files(&self, items: &[(ReceivedMessage, WorkItem)]) -> Vec<usize> {
        let mut released = Vec::new();
        for (index, (message, item)) in items.iter().enumerate() {
            if let WorkItem::File(file) = item
                && let Err(err) = self.announce(file, &message.message_id).await
            {
                released.push(index);
                self.release(message, item, &err).await;
            }
        }
        released
    }

    async fn delete_batch(&self, items: &[(ReceivedMessage, WorkItem)], report: &LoadReport) {
        let handles: Vec<String> = items
            .iter()
            .map(|(message, _)| message.receipt_handle.clone())
            .collect();
        let deleted = self.queue.delete(&handles).await;
        if !deleted.all_succeeded() {
            tracing::warn!(
                failed = deleted.failed.len(),
                "deleting a loaded micro-batch partly failed; the ledger will skip the redeliveries"
            );
        }
        tracing::info!(items = items.len(), ?report, "micro-batch loaded");
        for (message, item) in items {
            tracing::info!(
                message_id = %message.message_id,
                idempotency_key = %item.idempotency_key(),
                dataset = %self.dataset_label(item.dataset()),
                "work item handled in a micro-batch"
            );
        }
    }

    async fn handle_one_by_one(
        &self,
        items: &[(ReceivedMessage, WorkItem)],
        err: &ProcessError,
    ) -> bool {
        tracing::warn!(error = %shared::error::Report(err), items = items.len(), "micro-batch failed; loading its items one by one");
        let mut released = false;
        for (message, _) in items {
            released |= self.handle(message).await.is_released();
        }
        released
    }
}

#[cfg(test)]
mod tests {
    use shared::catalog::{Compression, FileFormat};
    use shared::envelope::{FileItem, Part, WorkItem};

    use super::BatchSettings;

    fn file(size: u64, part: Option<Part>) -> WorkItem {
        WorkItem::File(FileItem {
            dataset: "orders".into(),
            bucket: "landing".into(),
            key: "orders/a.csv".into(),
            version_id: None,
            etag: "e".into(),
            size,
            range: None,
            part,
            format: FileFormat::Csv,
            compression: Compression::None,
            created_at_ms: None,
        })
    }

    #[test]
    fn small_whole_files_join_a_batch_and_large_files_and_parts_load_alone() {
        let limits = BatchSettings::default();
        assert!(limits.admits(&file(limits.small_file_bytes, None)));
        assert!(!limits.admits(&file(limits.small_file_bytes + 1, None)));
        let part = Part { index: 0, count: 2 };
        assert!(!limits.admits(&file(10, Some(part))));
        let alone = BatchSettings {
            small_file_bytes: 0,
            ..limits
        };
        assert!(!alone.admits(&file(0, None)));
    }
}
