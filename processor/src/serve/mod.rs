//! `processor serve`: wires the clients, the pipeline and N workers together, and shuts
//! down gracefully.

pub mod health;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shared::aws::{AwsClients, load_sdk_config};
use shared::catalog::Catalog;
use shared::config::{ConfigError, PlatformConfig, Section};
use shared::queue::{SqsQueue, WorkQueue};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::objects::S3Stores;
use crate::pipeline::Pipeline;
use crate::pipeline::transform::TransformError;
use crate::warehouse::connection::{Connector, IamLogin, Login};
use crate::warehouse::{self, WarehouseError};
use crate::worker::announce::FileEvents;
use crate::worker::{BatchSettings, Worker, WorkerSettings};
use health::{Health, HealthError, QueueCheck, WarehouseCheck};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Transform(#[from] TransformError),
    #[error(transparent)]
    Warehouse(#[from] WarehouseError),
    #[error(transparent)]
    Health(#[from] HealthError),
    #[error(transparent)]
    Telemetry(#[from] shared::telemetry::TelemetryError),
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

/// A started processor: workers consuming, the health endpoint serving.
#[derive(Debug)]
pub struct RunningService {
    /// Where `/healthz`, `/readyz` and `/metrics` are served, if anywhere.
    pub health_address: Option<SocketAddr>,
    health: Arc<Health>,
    stop: watch::Sender<bool>,
    workers: JoinSet<()>,
    health_server: Option<tokio::task::JoinHandle<()>>,
    shutdown_grace: Duration,
    /// The EMF collector, flushed once more at shutdown (`telemetry.metrics_export = "emf"`).
    emf: Option<shared::telemetry::EmfCollector>,
}

/// Runs the processor until `shutdown` completes.
pub async fn serve(
    config: &PlatformConfig,
    catalog: Arc<Catalog>,
    shutdown: impl Future<Output = ()>,
) -> Result<ServeSummary, ServeError> {
    let service = start(config, catalog).await?;
    shutdown.await;
    Ok(service.shutdown().await)
}

/// Connects everything, creates missing tables, binds the health endpoint and starts the
/// workers. Any problem here stops start-up with an error, before a message is received.
pub async fn start(
    config: &PlatformConfig,
    catalog: Arc<Catalog>,
) -> Result<RunningService, ServeError> {
    config.require(&[Section::Queue, Section::Warehouse])?;
    let (Some(queue_settings), Some(warehouse_settings)) = (&config.queue, &config.warehouse)
    else {
        unreachable!("required sections are present");
    };
    // Bind first: a taken port is the quickest start-up error to report.
    let listener = match config.processor.health_address {
        Some(address) => Some(health::bind(address).await?),
        None => None,
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
    let pipeline = Arc::new(Pipeline::new(Arc::clone(&catalog), stores.clone()).await?);

    let connector = Connector::new(&warehouse_settings.tls)?;
    let login = match &warehouse_settings.iam {
        Some(iam) => Login::Iam(Arc::new(IamLogin {
            client: aws_sdk_redshift::Client::new(&sdk_config),
            settings: iam.clone(),
        })),
        None => Login::Url,
    };
    let schema = &config.processor.platform_schema;
    let connect = async || {
        warehouse::connect(
            warehouse_settings,
            &connector,
            &login,
            stores.as_ref(),
            schema,
        )
        .await
    };
    // This connection creates the tables, then answers readiness checks.
    let control = connect().await?;
    control.ensure_platform_tables().await?;
    for dataset in catalog.datasets() {
        if let Some(load_schema) = pipeline.load_schema(&dataset.name) {
            control.ensure_target(dataset, load_schema).await?;
        }
    }

    let health = Health::new(vec![
        Box::new(QueueCheck(Arc::clone(&queue))),
        Box::new(WarehouseCheck(control)),
    ]);
    // Install the recorder before the first metric is emitted.
    let emf = match config.telemetry.metrics_export {
        shared::config::MetricsExport::Prometheus => {
            let _ = health::prometheus();
            None
        }
        shared::config::MetricsExport::Emf => {
            let collector = shared::telemetry::init_emf("processor")?;
            // Every 10 s: EMF histograms keep at most 100 values between flushes.
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval(std::time::Duration::from_secs(10));
                loop {
                    ticks.tick().await;
                    shared::telemetry::flush_emf(collector, None, std::io::stdout());
                }
            });
            Some(collector)
        }
    };
    let settings = WorkerSettings {
        wait_time: queue_settings.wait_time,
        visibility_timeout: queue_settings.visibility_timeout,
        retry_backoff: config.processor.retry_backoff,
        max_retry_backoff: config.processor.max_retry_backoff,
    };
    let announcer = config.events.as_ref().map(|events| {
        Arc::new(FileEvents::new(
            aws_sdk_eventbridge::Client::new(&sdk_config),
            events.clone(),
        ))
    });
    let (stop, stopped) = watch::channel(false);
    let mut workers = JoinSet::new();
    for _ in 0..config.processor.workers {
        let worker = Worker {
            queue: Arc::clone(&queue),
            dead_letter: dead_letter.clone(),
            pipeline: Arc::clone(&pipeline),
            warehouse: connect().await?,
            settings,
            announcer: announcer.clone(),
            batching: BatchSettings {
                max_rows: config.processor.batch_max_rows,
                max_bytes: config.processor.batch_max_bytes,
                max_wait: config.processor.batch_max_wait,
            },
        };
        let stopped = stopped.clone();
        let guard = health.worker_started();
        workers.spawn(async move {
            let _guard = guard;
            worker.run(stopped).await;
        });
    }
    let health_address = match &listener {
        Some(listener) => Some(listener.local_addr().map_err(|source| {
            health::HealthError::Bind {
                address: config
                    .processor
                    .health_address
                    .expect("a listener exists only for an address"),
                source,
            }
        })?),
        None => None,
    };
    let health_server =
        listener.map(|listener| tokio::spawn(health::serve(listener, Arc::clone(&health))));
    tracing::info!(
        workers = config.processor.workers,
        queue = %queue_settings.url,
        warehouse = %warehouse_settings.redacted_url(),
        datasets = catalog.len(),
        health = ?health_address,
        "processor serving"
    );
    Ok(RunningService {
        health_address,
        health,
        stop,
        workers,
        health_server,
        shutdown_grace: config.processor.shutdown_grace,
        emf,
    })
}

impl RunningService {
    /// Stops receiving, lets in-flight work finish within the grace period, and stops
    /// the workers still busy after it (their messages come back after their visibility
    /// timeout; nothing of theirs was committed or deleted).
    pub async fn shutdown(mut self) -> ServeSummary {
        tracing::info!(
            grace_secs = self.shutdown_grace.as_secs(),
            "shutting down: finishing in-flight work"
        );
        self.health.set_stopping();
        // The receivers are gone only if every worker already ended; nothing to signal then.
        let _ = self.stop.send(true);
        let mut summary = ServeSummary {
            workers_finished: 0,
            workers_aborted: 0,
        };
        let deadline = tokio::time::Instant::now() + self.shutdown_grace;
        while !self.workers.is_empty() {
            match tokio::time::timeout_at(deadline, self.workers.join_next()).await {
                Ok(Some(_)) => summary.workers_finished += 1,
                Ok(None) => break,
                Err(_) => {
                    summary.workers_aborted = self.workers.len();
                    self.workers.abort_all();
                    break;
                }
            }
        }
        if let Some(server) = self.health_server.take() {
            server.abort();
        }
        if let Some(collector) = self.emf {
            shared::telemetry::flush_emf(collector, None, std::io::stdout());
        }
        tracing::info!(?summary, "processor stopped");
        summary
    }
}
