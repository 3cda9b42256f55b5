//! The consume → transform → load loop of `processor serve`.
//!
//! A worker long-polls the work queue, and for each message: decodes the work item, keeps
//! the message hidden with a heartbeat while it works, reads and transforms the rows,
//! loads them with the load protocol, and deletes the message only after the load
//! committed. A retryable failure releases the message with a backoff; a permanent one
//! sends it to the dead-letter queue at once with the reason as a message attribute.

pub mod announce;
mod batching;
mod dead_letter;
mod heartbeat;
mod run;

use std::sync::Arc;
use std::time::Duration;

use shared::envelope::{EnvelopeError, WorkItem};
use shared::error::{Classify, Retryability};
use shared::queue::{ReceivedMessage, WorkQueue};
use shared::telemetry::{UNKNOWN_DATASET, names, outcome};

use crate::pipeline::{Pipeline, PipelineError};
use crate::warehouse::{LoadReport, Warehouse, WarehouseError};
use announce::{AnnounceError, FileEvents};
pub use batching::BatchSettings;
use heartbeat::Heartbeat;

/// Why a work item could not be loaded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProcessError {
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    Warehouse(#[from] WarehouseError),
    #[error(transparent)]
    Announce(#[from] AnnounceError),
    #[error(
        "s3://{bucket}/{key} is fully loaded and another worker is announcing it; checking again later"
    )]
    AnnouncementPending { bucket: String, key: String },
}

impl Classify for ProcessError {
    fn retryability(&self) -> Retryability {
        match self {
            ProcessError::Pipeline(err) => err.retryability(),
            ProcessError::Warehouse(err) => err.retryability(),
            ProcessError::Announce(err) => err.retryability(),
            ProcessError::AnnouncementPending { .. } => Retryability::Retryable,
            ProcessError::Envelope(_) => Retryability::Permanent,
        }
    }
}

/// Worker timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerSettings {
    pub wait_time: Duration,
    pub visibility_timeout: Duration,
    pub retry_backoff: Duration,
    pub max_retry_backoff: Duration,
}

impl WorkerSettings {
    /// The heartbeat extends visibility three times per timeout, so one late call does
    /// not expose the message.
    pub fn heartbeat_interval(&self) -> Duration {
        (self.visibility_timeout / 3).max(Duration::from_millis(200))
    }

    /// How long a worker holds a message whose load failed because the warehouse went
    /// away, waiting for it to answer, before it releases the message: the longest retry
    /// backoff, at most 20 s so a SIGTERM in an outage still ends within the grace period.
    pub fn warehouse_hold(&self) -> Duration {
        self.max_retry_backoff.min(Duration::from_secs(20))
    }

    /// Delay before a retryable failure is tried again: doubles with each receive.
    pub fn backoff(&self, receive_count: u32) -> Duration {
        let exponent = receive_count.saturating_sub(1).min(16);
        self.retry_backoff
            .saturating_mul(1 << exponent)
            .min(self.max_retry_backoff)
    }
}

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Loaded (or found in the ledger) and deleted.
    Done(LoadReport),
    /// A retryable failure: the message comes back after `retry_in`.
    Released { reason: String, retry_in: Duration },
    /// A permanent failure: the message is in the dead-letter queue (or, without one,
    /// left to the queue's redrive policy).
    DeadLettered { reason: String },
}

impl Outcome {
    /// A retryable failure: the warehouse or the store may be the cause.
    pub fn is_released(&self) -> bool {
        matches!(self, Outcome::Released { .. })
    }
}

/// One worker: a queue consumer with its own warehouse connection.
#[derive(Debug, Clone)]
pub struct Worker {
    pub queue: Arc<dyn WorkQueue>,
    pub dead_letter: Option<Arc<dyn WorkQueue>>,
    pub pipeline: Arc<Pipeline>,
    pub warehouse: Arc<dyn Warehouse>,
    pub settings: WorkerSettings,
    pub batching: BatchSettings,
    /// Where `File Loaded` events go; without it completions are recorded and logged.
    pub announcer: Option<Arc<FileEvents>>,
}

impl Worker {
    async fn load_many(
        &self,
        items: impl Iterator<Item = &WorkItem>,
    ) -> Result<LoadReport, ProcessError> {
        let mut sources = Vec::new();
        let mut target = None;
        for item in items {
            let (source, dataset, schema) = self.pipeline.item_source(item)?;
            target = Some((dataset, schema));
            sources.push(source);
        }
        let Some((dataset, schema)) = target else {
            return Ok(LoadReport::default());
        };
        Ok(self.warehouse.load(dataset, schema, sources).await?)
    }

    /// Handles one received message end to end, and logs its outcome with the message id,
    /// the work item's idempotency key and its dataset (the fields the ingest Lambdas log
    /// when they send it), so one item can be followed end to end.
    pub async fn handle(&self, message: &ReceivedMessage) -> Outcome {
        self.handle_parsed(message, WorkItem::from_json(&message.body))
            .await
    }

    /// [`Worker::handle`] for a message whose body is already parsed.
    async fn handle_parsed(
        &self,
        message: &ReceivedMessage,
        parsed: Result<WorkItem, EnvelopeError>,
    ) -> Outcome {
        let item = match parsed {
            Ok(item) => item,
            Err(err) => {
                let outcome = self
                    .dead_letter(message, None, &shared::error::report(&err))
                    .await;
                tracing::warn!(message_id = %message.message_id, ?outcome, "unreadable work item handled");
                return outcome;
            }
        };
        let outcome = self.handle_item(message, &item).await;
        tracing::info!(
            message_id = %message.message_id,
            idempotency_key = %item.idempotency_key(),
            dataset = %self.dataset_label(item.dataset()),
            ?outcome,
            "work item handled"
        );
        outcome
    }

    /// Loads one item under a heartbeat, holding it through a short warehouse outage, and
    /// settles its message: deleted, released with a backoff, or dead-lettered.
    async fn handle_item(&self, message: &ReceivedMessage, item: &WorkItem) -> Outcome {
        let heartbeat = self.heartbeat(message);
        let started = std::time::Instant::now();
        let mut result = self.load(message, item).await;
        // The warehouse went away under the load: keep the message (its heartbeat keeps it
        // hidden) and load it again once the warehouse answers, so a short outage costs no
        // receive. A longer one releases it as any retryable failure.
        while matches!(&result, Err(err) if err.is_retryable())
            && self.warehouse.ping().await.is_err()
            && self
                .wait_for_warehouse(tokio::time::sleep(self.settings.warehouse_hold()))
                .await
        {
            result = self.load(message, item).await;
        }
        drop(heartbeat);
        match result {
            Ok(report) => {
                let sizes = [(item, message.body.len())];
                self.record_load(item.dataset(), &report, started.elapsed(), &sizes);
                self.delete_loaded(message).await;
                Outcome::Done(report)
            }
            Err(err) if err.is_retryable() => self.release(message, item, &err).await,
            Err(err) => {
                self.dead_letter(message, Some(item.dataset()), &shared::error::report(&err))
                    .await
            }
        }
    }

    async fn delete_loaded(&self, message: &ReceivedMessage) {
        let deleted = self
            .queue
            .delete(std::slice::from_ref(&message.receipt_handle))
            .await;
        if let Some(failure) = deleted.failed.first() {
            // The rows are committed; a redelivery will find the key in the ledger.
            tracing::warn!(message_id = %message.message_id, code = %failure.code, "delete after load failed");
        }
    }

    /// A retryable failure: the message comes back after a backoff that grows with its
    /// receives.
    async fn release(
        &self,
        message: &ReceivedMessage,
        item: &WorkItem,
        err: &ProcessError,
    ) -> Outcome {
        let retry_in = self.settings.backoff(message.receive_count);
        if let Err(release) = self
            .queue
            .extend_visibility(&message.receipt_handle, retry_in)
            .await
        {
            tracing::warn!(error = %shared::error::Report(&release), "could not set the retry backoff");
        }
        tracing::warn!(error = %shared::error::Report(err), retry_in_secs = retry_in.as_secs(), "retryable failure; message released");
        let dataset = self.dataset_label(item.dataset());
        metrics::counter!(names::WORK_ITEMS_PROCESSED_TOTAL, "dataset" => dataset, "outcome" => outcome::RETRIED).increment(1);
        Outcome::Released {
            reason: shared::error::report(err),
            retry_in,
        }
    }

    /// A heartbeat that keeps `message` hidden until it is dropped.
    fn heartbeat(&self, message: &ReceivedMessage) -> Heartbeat {
        Heartbeat::start(
            Arc::clone(&self.queue),
            message.receipt_handle.clone(),
            self.settings.heartbeat_interval(),
            self.settings.visibility_timeout,
        )
    }

    /// The `dataset` metric label: a catalog name, never a name taken from a message.
    fn dataset_label(&self, name: &str) -> String {
        match self.pipeline.catalog().get(name) {
            Some(dataset) => dataset.name.clone(),
            None => UNKNOWN_DATASET.to_owned(),
        }
    }

    /// Metrics of one committed load of `items` (each with its message's size).
    fn record_load(
        &self,
        dataset: &str,
        report: &LoadReport,
        elapsed: Duration,
        items: &[(&WorkItem, usize)],
    ) {
        let dataset = self.dataset_label(dataset);
        if report.items_loaded > 0 {
            let bytes = bytes_of_loaded_items(items, &report.loaded_keys);
            metrics::counter!(names::BYTES_READ_TOTAL, "dataset" => dataset.clone())
                .increment(bytes);
            let now_ms = shared::stream::epoch_millis(std::time::SystemTime::now());
            if let Some(oldest) = items
                .iter()
                .filter_map(|(item, _)| item.arrived_at_ms())
                .min()
            {
                let seconds = (now_ms.saturating_sub(oldest)).max(0) as f64 / 1000.0;
                metrics::histogram!(names::END_TO_END_LATENCY_SECONDS, "dataset" => dataset.clone())
                    .record(seconds);
            }
        }
        metrics::counter!(names::WORK_ITEMS_PROCESSED_TOTAL, "dataset" => dataset.clone(), "outcome" => outcome::LOADED)
            .increment(report.items_loaded as u64);
        metrics::counter!(names::WORK_ITEMS_PROCESSED_TOTAL, "dataset" => dataset.clone(), "outcome" => outcome::DUPLICATE)
            .increment(report.items_skipped as u64);
        metrics::counter!(names::ROWS_LOADED_TOTAL, "dataset" => dataset.clone())
            .increment(report.rows_staged);
        metrics::counter!(names::ROWS_REJECTED_TOTAL, "dataset" => dataset.clone())
            .increment(report.rows_rejected);
        if report.values_truncated > 0 {
            // Counted, never silent: the catalog asked for it, the operator sees how often.
            tracing::warn!(dataset = %dataset, values = report.values_truncated, "strings cut to their column's max_length");
            metrics::counter!(names::VALUES_TRUNCATED_TOTAL, "dataset" => dataset.clone())
                .increment(report.values_truncated);
        }
        metrics::histogram!(names::LOAD_DURATION_SECONDS, "dataset" => dataset)
            .record(elapsed.as_secs_f64());
    }

    /// Loads one item; for a file, then announces it if this load completed it (or an
    /// earlier attempt did and could not announce it). The message is deleted only after
    /// both, so an announcement that failed is retried with the message.
    async fn load(
        &self,
        message: &ReceivedMessage,
        item: &WorkItem,
    ) -> Result<LoadReport, ProcessError> {
        let report = self.load_many(std::iter::once(item)).await?;
        if let WorkItem::File(file) = item {
            self.announce(file, &message.message_id).await?;
        }
        Ok(report)
    }
}

/// The bytes read by a load: each loaded key's item once, with its message's size.
fn bytes_of_loaded_items(items: &[(&WorkItem, usize)], loaded_keys: &[String]) -> u64 {
    let mut counted = std::collections::HashSet::new();
    items
        .iter()
        .filter(|(item, _)| {
            let key = item.idempotency_key();
            loaded_keys.iter().any(|k| k == key.as_str()) && counted.insert(key)
        })
        .map(|(item, message_bytes)| item.source_bytes(*message_bytes))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_per_receive_and_is_capped() {
        let settings = WorkerSettings {
            wait_time: Duration::from_secs(20),
            visibility_timeout: Duration::from_secs(30),
            retry_backoff: Duration::from_secs(10),
            max_retry_backoff: Duration::from_secs(60),
        };
        let delays: Vec<u64> = (1..=5).map(|n| settings.backoff(n).as_secs()).collect();
        assert_eq!(delays, [10, 20, 40, 60, 60]);
        assert_eq!(settings.heartbeat_interval(), Duration::from_secs(10));
    }

    fn file(key: &str, size: u64) -> WorkItem {
        WorkItem::File(shared::envelope::FileItem {
            dataset: "orders".into(),
            bucket: "landing".into(),
            key: key.into(),
            version_id: None,
            etag: "e".into(),
            size,
            range: None,
            part: None,
            format: shared::catalog::FileFormat::Csv,
            compression: shared::catalog::Compression::None,
            created_at_ms: None,
        })
    }

    #[test]
    fn bytes_count_each_loaded_item_once_and_nothing_of_skipped_ones() {
        let (a, b) = (file("a.csv", 100), file("b.csv", 7));
        // `a` delivered twice in one batch, `b` already in the ledger.
        let items = [(&a, 500), (&a, 500), (&b, 500)];
        let loaded = [a.idempotency_key().as_str().to_owned()];
        assert_eq!(bytes_of_loaded_items(&items, &loaded), 100);
        assert_eq!(bytes_of_loaded_items(&items, &[]), 0);
    }
}
