//! The ingest-batch Lambda binary: configuration and clients, then the runtime loop.

use std::sync::Arc;

use anyhow::Context;
use ingest_batch::FileIngest;
use lambda_runtime::{LambdaEvent, service_fn};
use shared::aws::AwsClients;
use shared::catalog::Catalog;
use shared::config::{CONFIG_PATH_ENV, PlatformConfig};
use shared::telemetry::{flush_emf, init_emf, init_tracing};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let ingest = build().await.map_err(|err| {
        // Start-up errors go to the function's log before the runtime reports them.
        eprintln!("error: {err:#}");
        err
    })?;
    let metrics = init_emf("ingest-batch")?;
    let ingest = &ingest;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            let result = ingest.handle(event.payload).await;
            // The invocation's metrics, as one Embedded Metric Format document.
            flush_emf(metrics, Some(&event.context.request_id), std::io::stdout());
            result.map_err(|err| lambda_runtime::Diagnostic {
                error_type: err.kind().to_owned(),
                error_message: shared::error::report(&err),
            })
        },
    ))
    .await
}

async fn build() -> anyhow::Result<FileIngest> {
    let config_path = std::env::var_os(CONFIG_PATH_ENV).map(std::path::PathBuf::from);
    let config = PlatformConfig::load(config_path.as_deref(), std::env::vars())?;
    let view = config.file_ingest()?;
    init_tracing(&config.telemetry)?;
    let catalog = Catalog::from_file(view.catalog_path)
        .with_context(|| format!("loading the catalog {}", view.catalog_path.display()))?;
    let clients = AwsClients::new(&config.aws).await;
    Ok(FileIngest::new(
        Arc::new(catalog),
        &clients,
        view.queue,
        config.files,
        "s3_event",
    ))
}
