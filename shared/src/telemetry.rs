//! Logging set-up and the names of every metric the platform emits.

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, TelemetrySettings};

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid log filter {filter:?}")]
    InvalidFilter {
        filter: String,
        source: tracing_subscriber::filter::ParseError,
    },
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled,
    #[error("cannot install the metrics recorder")]
    Metrics { source: crate::error::BoxError },
}

/// Installs the global tracing subscriber: JSON lines without colours for Lambda and
/// Fargate (CloudWatch), or human-readable text for terminals. `RUST_LOG`-style filter.
pub fn init_tracing(settings: &TelemetrySettings) -> Result<(), TelemetryError> {
    let filter = EnvFilter::try_new(&settings.log_filter).map_err(|source| {
        TelemetryError::InvalidFilter {
            filter: settings.log_filter.clone(),
            source,
        }
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match settings.log_format {
        LogFormat::Json => builder
            .json()
            .with_ansi(false)
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
    result.map_err(|_| TelemetryError::AlreadyInstalled)
}

/// Installs the CloudWatch Embedded Metric Format recorder (namespace
/// [`CLOUDWATCH_NAMESPACE`], a `function` dimension) as the global `metrics` recorder.
/// A Lambda flushes it after every invocation ([`flush_emf`]); CloudWatch Logs turns the
/// document into metrics.
pub fn init_emf(function: &'static str) -> Result<EmfCollector, TelemetryError> {
    metrics_cloudwatch_embedded::Builder::new()
        .cloudwatch_namespace(CLOUDWATCH_NAMESPACE)
        .with_dimension("function", function)
        .init()
        .map(EmfCollector)
        .map_err(|source| TelemetryError::Metrics { source })
}

/// The installed EMF recorder, to flush.
#[derive(Clone, Copy)]
pub struct EmfCollector(&'static metrics_cloudwatch_embedded::Collector);

impl std::fmt::Debug for EmfCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EmfCollector")
    }
}

/// Writes the metrics recorded since the last flush as one EMF document to `out`.
pub fn flush_emf(collector: EmfCollector, request_id: Option<&str>, out: impl std::io::Write) {
    if let Some(request_id) = request_id {
        collector.0.set_property("RequestId", request_id.to_owned());
    }
    if let Err(err) = collector.0.flush(out) {
        tracing::warn!(error = %crate::error::Report(&err), "could not write the invocation's metrics");
    }
}

/// Logs each work item the queue accepted with its idempotency key, message id and
/// dataset — the fields the processor logs when it handles the item — so one item can be
/// followed from the ingest Lambda to its load. `item` maps a sent entry's index to its
/// work item.
pub fn log_items_sent<'a>(
    sent: &crate::queue::SendReport,
    item: impl Fn(usize) -> Option<&'a crate::envelope::WorkItem>,
) {
    for (index, message_id) in &sent.succeeded {
        if let Some(item) = item(*index) {
            tracing::info!(
                message_id = %message_id,
                idempotency_key = %item.idempotency_key(),
                dataset = %item.dataset(),
                "work item sent"
            );
        }
    }
}

/// What kind of instrument a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric: its name (snake_case, unit as suffix, `_total` only on counters), kind,
/// labels (each with a bounded set of values) and meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricSpec {
    pub name: &'static str,
    pub kind: MetricKind,
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

/// The CloudWatch namespace of the platform's metrics (Embedded Metric Format), which the
/// stack's dashboard and alarms read.
pub const CLOUDWATCH_NAMESPACE: &str = "RedshiftIngest";

/// Metric names, in one place so dashboards, alarms and code agree.
pub mod names {
    pub const WORK_ITEMS_SENT_TOTAL: &str = "ingest_work_items_sent_total";
    pub const WORK_ITEMS_SEND_FAILED_TOTAL: &str = "ingest_work_items_send_failed_total";
    pub const QUEUE_MESSAGES_DELETED_TOTAL: &str = "ingest_queue_messages_deleted_total";
    pub const STREAM_RECORDS_PUT_TOTAL: &str = "ingest_stream_records_put_total";
    pub const STREAM_RECORDS_PUT_FAILED_TOTAL: &str = "ingest_stream_records_put_failed_total";
    pub const BATCH_ENTRY_RETRIES_TOTAL: &str = "ingest_batch_entry_retries_total";
    pub const WORK_ITEMS_PROCESSED_TOTAL: &str = "ingest_work_items_processed_total";
    pub const ROWS_LOADED_TOTAL: &str = "ingest_rows_loaded_total";
    pub const ROWS_REJECTED_TOTAL: &str = "ingest_rows_rejected_total";
    pub const VALUES_TRUNCATED_TOTAL: &str = "ingest_values_truncated_total";
    pub const LOAD_DURATION_SECONDS: &str = "ingest_load_duration_seconds";
    pub const HEARTBEAT_EXTENSIONS_TOTAL: &str = "ingest_heartbeat_extensions_total";
    pub const OBJECTS_SKIPPED_TOTAL: &str = "ingest_objects_skipped_total";
    pub const FILES_SPLIT_TOTAL: &str = "ingest_files_split_total";
    pub const FILES_COMPLETED_TOTAL: &str = "ingest_files_completed_total";
    pub const FILE_EVENTS_PUBLISHED_TOTAL: &str = "ingest_file_events_published_total";
    pub const RECORDS_QUARANTINED_TOTAL: &str = "ingest_records_quarantined_total";
    pub const OBJECTS_RECEIVED_TOTAL: &str = "ingest_objects_received_total";
    pub const STREAM_RECORDS_RECEIVED_TOTAL: &str = "ingest_stream_records_received_total";
    pub const BYTES_READ_TOTAL: &str = "ingest_bytes_read_total";
    pub const END_TO_END_LATENCY_SECONDS: &str = "ingest_end_to_end_latency_seconds";
    pub const REDRIVE_MESSAGES_TOTAL: &str = "ingest_redrive_messages_total";
    pub const STREAM_RECORDS_READ_TOTAL: &str = "ingest_stream_records_read_total";
    pub const STREAM_BEHIND_LATEST_SECONDS: &str = "ingest_stream_behind_latest_seconds";
}

/// Values of the `outcome` label of [`names::WORK_ITEMS_PROCESSED_TOTAL`].
pub mod outcome {
    /// Rows committed, message deleted.
    pub const LOADED: &str = "loaded";
    /// The ledger already held the item's key: a duplicate delivery, nothing loaded.
    pub const DUPLICATE: &str = "duplicate";
    /// A retryable failure: released with a backoff.
    pub const RETRIED: &str = "retried";
    /// A permanent failure: sent to the dead-letter queue with its reason.
    pub const DEAD_LETTERED: &str = "dead_lettered";
}

/// The `dataset` label of an item whose dataset is not in the catalog: names from
/// messages are not trusted as label values (they would be unbounded).
pub const UNKNOWN_DATASET: &str = "(unknown)";

/// Every metric the platform may emit.
pub const METRICS: &[MetricSpec] = &[
    MetricSpec {
        name: names::WORK_ITEMS_SENT_TOTAL,
        kind: MetricKind::Counter,
        labels: &["source"],
        help: "Work items sent to the work queue.",
    },
    MetricSpec {
        name: names::WORK_ITEMS_SEND_FAILED_TOTAL,
        kind: MetricKind::Counter,
        labels: &["source", "retryable"],
        help: "Work items that could not be sent after retries.",
    },
    MetricSpec {
        name: names::QUEUE_MESSAGES_DELETED_TOTAL,
        kind: MetricKind::Counter,
        labels: &[],
        help: "Work-queue messages deleted after their load committed.",
    },
    MetricSpec {
        name: names::STREAM_RECORDS_PUT_TOTAL,
        kind: MetricKind::Counter,
        labels: &[],
        help: "Records put to a stream.",
    },
    MetricSpec {
        name: names::STREAM_RECORDS_PUT_FAILED_TOTAL,
        kind: MetricKind::Counter,
        labels: &["retryable"],
        help: "Records that could not be put after retries.",
    },
    MetricSpec {
        name: names::BATCH_ENTRY_RETRIES_TOTAL,
        kind: MetricKind::Counter,
        labels: &["operation"],
        help: "Entries of batch calls retried after a per-entry failure.",
    },
    MetricSpec {
        name: names::WORK_ITEMS_PROCESSED_TOTAL,
        kind: MetricKind::Counter,
        labels: &["dataset", "outcome"],
        help: "Work items the processor finished with: loaded, duplicate (skipped by the ledger), retried or dead_lettered.",
    },
    MetricSpec {
        name: names::ROWS_LOADED_TOTAL,
        kind: MetricKind::Counter,
        labels: &["dataset"],
        help: "Rows committed to the warehouse (staged rows of newly loaded items).",
    },
    MetricSpec {
        name: names::ROWS_REJECTED_TOTAL,
        kind: MetricKind::Counter,
        labels: &["dataset"],
        help: "Rows written to the rejects table.",
    },
    MetricSpec {
        name: names::VALUES_TRUNCATED_TOTAL,
        kind: MetricKind::Counter,
        labels: &["dataset"],
        help: "String values cut to their column's max_length on loading (Redshift, too_long = \"truncate\").",
    },
    MetricSpec {
        name: names::LOAD_DURATION_SECONDS,
        kind: MetricKind::Histogram,
        labels: &["dataset"],
        help: "Time from the start of a load (one item or a micro-batch) to its commit.",
    },
    MetricSpec {
        name: names::HEARTBEAT_EXTENSIONS_TOTAL,
        kind: MetricKind::Counter,
        labels: &[],
        help: "Visibility-timeout extensions of messages being worked on.",
    },
    MetricSpec {
        name: names::OBJECTS_SKIPPED_TOTAL,
        kind: MetricKind::Counter,
        labels: &["reason"],
        help: "S3 event entries and objects that produced no work item: test_event, not_object_created, malformed, folder_marker, empty_object, unrouted, gone.",
    },
    MetricSpec {
        name: names::FILES_SPLIT_TOTAL,
        kind: MetricKind::Counter,
        labels: &[],
        help: "Large files split into several work items (parts).",
    },
    MetricSpec {
        name: names::FILES_COMPLETED_TOTAL,
        kind: MetricKind::Counter,
        labels: &["dataset"],
        help: "Files whose every part has loaded.",
    },
    MetricSpec {
        name: names::FILE_EVENTS_PUBLISHED_TOTAL,
        kind: MetricKind::Counter,
        labels: &[],
        help: "`file loaded` events published to EventBridge.",
    },
    MetricSpec {
        name: names::RECORDS_QUARANTINED_TOTAL,
        kind: MetricKind::Counter,
        labels: &[],
        help: "Stream records written to quarantine (undecodable, unrouted or invalid), each with its reason.",
    },
    MetricSpec {
        name: names::OBJECTS_RECEIVED_TOTAL,
        kind: MetricKind::Counter,
        labels: &["source"],
        help: "Objects named by S3 events (or listed by backfill) that the batch path looked at.",
    },
    MetricSpec {
        name: names::STREAM_RECORDS_RECEIVED_TOTAL,
        kind: MetricKind::Counter,
        labels: &[],
        help: "Kinesis records handed to the stream handler (before de-aggregation).",
    },
    MetricSpec {
        name: names::BYTES_READ_TOTAL,
        kind: MetricKind::Counter,
        labels: &["dataset"],
        help: "Bytes of source data covered by loaded work items: a file's byte range, or the message carrying stream records.",
    },
    MetricSpec {
        name: names::END_TO_END_LATENCY_SECONDS,
        kind: MetricKind::Histogram,
        labels: &["dataset"],
        help: "From the data's arrival (S3 event time, Kinesis arrival) to the commit of its load; one observation per load, for its oldest item.",
    },
    MetricSpec {
        name: names::REDRIVE_MESSAGES_TOTAL,
        kind: MetricKind::Counter,
        labels: &["outcome"],
        help: "Dead letters a redrive handled: moved, failed (stay, retried next time) or held (redriven too often).",
    },
    MetricSpec {
        name: names::STREAM_RECORDS_READ_TOTAL,
        kind: MetricKind::Counter,
        labels: &["reader"],
        help: "Records read by the local shard reader: reader = poller or replay.",
    },
    MetricSpec {
        name: names::STREAM_BEHIND_LATEST_SECONDS,
        kind: MetricKind::Gauge,
        labels: &["reader"],
        help: "How far the slowest shard's last read was behind the tip (the iterator age), per reader.",
    },
];

/// Looks a metric up by name.
pub fn spec(name: &str) -> Option<&'static MetricSpec> {
    METRICS.iter().find(|m| m.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_follow_the_conventions() {
        let mut seen = std::collections::HashSet::new();
        for metric in METRICS {
            assert!(seen.insert(metric.name), "{} listed twice", metric.name);
            assert!(metric.name.starts_with("ingest_"), "{}", metric.name);
            assert!(
                metric
                    .name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{} is not snake_case",
                metric.name
            );
            assert_eq!(
                metric.name.ends_with("_total"),
                metric.kind == MetricKind::Counter,
                "{}: _total is for counters and only counters",
                metric.name
            );
            assert!(!metric.help.is_empty());
        }
        assert!(spec(names::WORK_ITEMS_SENT_TOTAL).is_some());
        assert!(spec("nope").is_none());
    }

    #[test]
    fn a_bad_log_filter_is_a_clear_error() {
        let settings = TelemetrySettings {
            log_format: LogFormat::Json,
            log_filter: "info,[".to_owned(),
            ..TelemetrySettings::default()
        };
        let err = init_tracing(&settings).expect_err("invalid filter");
        assert!(
            crate::error::report(&err).starts_with("invalid log filter \"info,[\""),
            "{err}"
        );
    }
}
