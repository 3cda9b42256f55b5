//! The ingest-stream Lambda binary: configuration and clients, then the runtime loop.
//! Configure the event source mapping with `ReportBatchItemFailures`: the response names
//! the record to retry from.

use std::sync::Arc;

use anyhow::Context;
use aws_lambda_events::event::kinesis::KinesisEvent;
use ingest_stream::handler::StreamIngest;
use ingest_stream::{incoming_records, lambda_response};
use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use shared::aws::AwsClients;
use shared::catalog::Catalog;
use shared::config::{CONFIG_PATH_ENV, PlatformConfig};
use shared::telemetry::{flush_emf, init_emf, init_tracing};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let ingest = build().await.map_err(|err| {
        eprintln!("error: {err:#}");
        err
    })?;
    let metrics = init_emf("ingest-stream")?;
    let ingest = &ingest;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<KinesisEvent>| async move {
            let request_id = event.context.request_id.clone();
            let records = incoming_records(event.payload).map_err(|err| Diagnostic {
                error_type: "UnreadableEvent".to_owned(),
                error_message: shared::error::report(&err),
            })?;
            let outcome = ingest.ingest(&records).await;
            // The invocation's metrics, as one Embedded Metric Format document.
            flush_emf(metrics, Some(&request_id), std::io::stdout());
            tracing::info!(
                records = outcome.records,
                user_records = outcome.user_records,
                quarantined = outcome.quarantined,
                work_items_sent = outcome.work_items_sent,
                retry_from = outcome.retry_from.as_deref().unwrap_or(""),
                failure = outcome.failure.as_deref().unwrap_or(""),
                "batch handled"
            );
            Ok::<_, Diagnostic>(lambda_response(&outcome))
        },
    ))
    .await
}

async fn build() -> anyhow::Result<StreamIngest> {
    let config_path = std::env::var_os(CONFIG_PATH_ENV).map(std::path::PathBuf::from);
    let config = PlatformConfig::load(config_path.as_deref(), std::env::vars())?;
    let view = config.stream_ingest()?;
    init_tracing(&config.telemetry)?;
    let catalog = Catalog::from_file(view.catalog_path)
        .with_context(|| format!("loading the catalog {}", view.catalog_path.display()))?;
    let clients = AwsClients::new(&config.aws).await;
    Ok(StreamIngest::new(
        Arc::new(catalog),
        &clients,
        view.queue,
        view.stream,
    ))
}
