//! `processor serve`: wires the clients, the pipeline and N workers together, and shuts
//! down gracefully.

use std::future::Future;
use std::sync::Arc;

use shared::aws::{AwsClients, load_sdk_config};
use shared::catalog::Catalog;
use shared::config::{ConfigError, PlatformConfig, Section};
use shared::queue::{SqsQueue, WorkQueue};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::objects::S3Stores;
use crate::transform::TransformError;
use crate::warehouse::postgres::PostgresWarehouse;
use crate::warehouse::{Warehouse, WarehouseError};
use crate::worker::{BatchSettings, Pipeline, Worker, WorkerSettings};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Transform(#[from] TransformError),
    #[error(transparent)]
    Warehouse(#[from] WarehouseError),
}

/// How the service stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeSummary {
    /// Workers that finished their message in hand within the grace period.
    pub workers_finished: usize,
    /// Workers stopped at the end of the grace period; their messages were not deleted
    /// and come back after their visibility timeout.
    pub workers_aborted: usize,
}

/// Runs the processor until `shutdown` completes.
pub async fn serve(
    config: &PlatformConfig,
    catalog: Arc<Catalog>,
    shutdown: impl Future<Output = ()>,
) -> Result<ServeSummary, ServeError> {
    config.require(&[Section::Queue, Section::Warehouse])?;
    let (Some(queue_settings), Some(warehouse_settings)) = (&config.queue, &config.warehouse)
    else {
        unreachable!("required sections are present");
    };
    let sdk_config = load_sdk_config(&config.aws).await;
    let clients = AwsClients::from_sdk_config(&sdk_config, &config.aws);
    let queue: Arc<dyn WorkQueue> = Arc::new(SqsQueue::new(
        clients.sqs.clone(),
        &queue_settings.url,
        queue_settings.max_message_bytes,
    ));
    let dead_letter = queue_settings.dead_letter_url.as_ref().map(|url| {
        Arc::new(SqsQueue::new(
            clients.sqs.clone(),
            url,
            queue_settings.max_message_bytes,
        )) as Arc<dyn WorkQueue>
    });
    let stores = Arc::new(S3Stores::new(&sdk_config, &config.aws));
    let pipeline = Arc::new(Pipeline::new(Arc::clone(&catalog), stores).await?);

    let url = warehouse_settings.url.expose();
    let schema = &config.processor.platform_schema;
    let setup = PostgresWarehouse::connect(url, schema).await?;
    setup.ensure_platform_tables().await?;
    for dataset in catalog.datasets() {
        if let Some(load_schema) = pipeline.load_schema(&dataset.name) {
            setup.ensure_target(dataset, load_schema).await?;
        }
    }
    drop(setup);

    let settings = WorkerSettings {
        wait_time: queue_settings.wait_time,
        visibility_timeout: queue_settings.visibility_timeout,
        retry_backoff: config.processor.retry_backoff,
        max_retry_backoff: config.processor.max_retry_backoff,
    };
    let (stop, stopped) = watch::channel(false);
    let mut workers = JoinSet::new();
    for _ in 0..config.processor.workers {
        let worker = Worker {
            queue: Arc::clone(&queue),
            dead_letter: dead_letter.clone(),
            pipeline: Arc::clone(&pipeline),
            warehouse: Arc::new(PostgresWarehouse::connect(url, schema).await?),
            settings,
            batching: BatchSettings {
                max_rows: config.processor.batch_max_rows,
                max_bytes: config.processor.batch_max_bytes,
                max_wait: config.processor.batch_max_wait,
            },
        };
        let stopped = stopped.clone();
        workers.spawn(async move { worker.run(stopped).await });
    }
    tracing::info!(
        workers = config.processor.workers,
        queue = %queue_settings.url,
        warehouse = %warehouse_settings.redacted_url(),
        datasets = catalog.len(),
        "processor serving"
    );

    shutdown.await;
    tracing::info!(
        grace_secs = config.processor.shutdown_grace.as_secs(),
        "shutting down: finishing in-flight work"
    );
    // Receivers may all be gone already if every worker ended; nothing to signal then.
    let _ = stop.send(true);
    let mut summary = ServeSummary {
        workers_finished: 0,
        workers_aborted: 0,
    };
    let deadline = tokio::time::Instant::now() + config.processor.shutdown_grace;
    while !workers.is_empty() {
        match tokio::time::timeout_at(deadline, workers.join_next()).await {
            Ok(Some(_)) => summary.workers_finished += 1,
            Ok(None) => break,
            Err(_) => {
                summary.workers_aborted = workers.len();
                workers.abort_all();
                break;
            }
        }
    }
    tracing::info!(?summary, "processor stopped");
    Ok(summary)
}
