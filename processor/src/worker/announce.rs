//! `File Loaded` events: published to EventBridge once every part of a file has loaded,
//! so downstream jobs (dbt runs, notifications, partition refreshes) can start.
//!
//! The event (`source` from `[events] source`, `detail-type` "File Loaded"):
//!
//! ```json
//! {"completion_id": "load-…", "dataset": "orders", "target": "sales.orders",
//!  "bucket": "landing", "key": "orders/2026-11-24.jsonl", "version_id": "…", "etag": "…",
//!  "parts": 8, "rows_loaded": 1000000, "rows_rejected": 3}
//! ```
//!
//! `completion_id` is stable for the file: a consumer that must never act twice dedupes
//! on it (an event is published again only if a worker died between publishing and
//! recording that it did).

use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use serde::Serialize;
use shared::config::EventSettings;
use shared::envelope::FileItem;
use shared::error::{
    BoxError, Classify, Retryability, classify_sdk_error, is_retryable_service_code,
};
use shared::telemetry::names;

use super::{ProcessError, Worker};
use crate::warehouse::files::{Claim, FileCompletion};

/// The `detail-type` of the event.
pub(crate) const FILE_LOADED: &str = "File Loaded";

/// The event's detail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct FileLoaded<'a> {
    pub completion_id: &'a str,
    pub dataset: &'a str,
    pub target: String,
    pub bucket: &'a str,
    pub key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version_id: Option<&'a str>,
    pub etag: &'a str,
    pub parts: i32,
    pub rows_loaded: i64,
    pub rows_rejected: i64,
}

#[derive(Debug, thiserror::Error)]
#[error("publishing the File Loaded event of s3://{bucket}/{key} to bus {bus} failed")]
pub struct AnnounceError {
    pub bucket: String,
    pub key: String,
    pub bus: String,
    pub source: BoxError,
    pub retryable: bool,
}

impl Classify for AnnounceError {
    fn retryability(&self) -> Retryability {
        if self.retryable {
            Retryability::Retryable
        } else {
            Retryability::Permanent
        }
    }
}

/// Publishes `File Loaded` events to one bus.
#[derive(Debug, Clone)]
pub struct FileEvents {
    client: aws_sdk_eventbridge::Client,
    settings: EventSettings,
}

impl FileEvents {
    pub fn new(client: aws_sdk_eventbridge::Client, settings: EventSettings) -> Self {
        Self { client, settings }
    }

    pub async fn publish(
        &self,
        completion: &FileCompletion,
        target: String,
    ) -> Result<(), AnnounceError> {
        let failed = |source: BoxError, retryable: bool| AnnounceError {
            bucket: completion.bucket.clone(),
            key: completion.key.clone(),
            bus: self.settings.bus_name.clone(),
            source,
            retryable,
        };
        let detail = FileLoaded {
            completion_id: &completion.file_id,
            dataset: &completion.dataset,
            target,
            bucket: &completion.bucket,
            key: &completion.key,
            version_id: completion.version_id.as_deref(),
            etag: &completion.etag,
            parts: completion.parts,
            rows_loaded: completion.rows_loaded,
            rows_rejected: completion.rows_rejected,
        };
        let detail = serde_json::to_string(&detail).map_err(|err| failed(err.into(), false))?;
        let entry = PutEventsRequestEntry::builder()
            .event_bus_name(&self.settings.bus_name)
            .source(&self.settings.source)
            .detail_type(FILE_LOADED)
            .resources(format!("arn:aws:s3:::{}", completion.bucket))
            .detail(detail)
            .build();
        let output = self
            .client
            .put_events()
            .entries(entry)
            .send()
            .await
            .map_err(|err| {
                let retryable = classify_sdk_error(&err) == Retryability::Retryable;
                failed(err.into(), retryable)
            })?;
        if output.failed_entry_count() > 0 {
            let entry = output.entries().first();
            let code = entry.and_then(|e| e.error_code()).unwrap_or("Unknown");
            let message = entry.and_then(|e| e.error_message()).unwrap_or_default();
            return Err(failed(
                format!("{code}: {message}").into(),
                is_retryable_service_code(code) || code == "InternalFailure",
            ));
        }
        Ok(())
    }
}

impl Worker {
    /// `message_id` is the claimant: a claim an earlier attempt of the same message left
    /// behind (its warehouse went away, or its process died, before the claim ended) is
    /// taken over at once, so the retries do not spend the message's receives waiting for
    /// the claim to time out.
    pub(super) async fn announce(
        &self,
        file: &FileItem,
        message_id: &str,
    ) -> Result<(), ProcessError> {
        let file_id = file.file_id();
        let completion = match self
            .warehouse
            .claim_file_completion(&file_id, message_id)
            .await?
        {
            Claim::NotComplete | Claim::Published => return Ok(()),
            Claim::ClaimedElsewhere => {
                return Err(ProcessError::AnnouncementPending {
                    bucket: file.bucket.clone(),
                    key: file.key.clone(),
                });
            }
            Claim::Claimed(completion) => completion,
        };
        let dataset = self.dataset_label(&completion.dataset);
        if let Some(events) = &self.announcer {
            let target = self
                .pipeline
                .catalog()
                .get(&completion.dataset)
                .map(|d| d.target.to_string())
                .unwrap_or_default();
            if let Err(err) = events.publish(&completion, target).await {
                // Give the claim back so the retry need not wait for it to time out.
                if let Err(release) = self.warehouse.finish_file_claim(&completion, false).await {
                    tracing::warn!(error = %shared::error::Report(&release), "could not release the claim of a file announcement");
                }
                return Err(err.into());
            }
            metrics::counter!(names::FILE_EVENTS_PUBLISHED_TOTAL).increment(1);
        }
        self.warehouse.finish_file_claim(&completion, true).await?;
        metrics::counter!(names::FILES_COMPLETED_TOTAL, "dataset" => dataset).increment(1);
        tracing::info!(
            bucket = %completion.bucket,
            key = %completion.key,
            dataset = %completion.dataset,
            parts = completion.parts,
            rows_loaded = completion.rows_loaded,
            rows_rejected = completion.rows_rejected,
            completion_id = %completion.file_id,
            published = self.announcer.is_some(),
            "file loaded"
        );
        Ok(())
    }
}
