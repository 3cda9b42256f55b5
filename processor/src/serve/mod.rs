//! `processor serve`: wires the clients, the pipeline and N workers together, and shuts
//! down gracefully.

pub mod health;
pub mod status_page;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
use shared::aws::{AwsClients, load_sdk_config};
use shared::catalog::Catalog;
use shared::config::{
    ConfigError, MetricsExport, PlatformConfig, QueueSettings, WarehouseSettings, WorkersView,
};
use shared::queue::{SqsQueue, WorkQueue};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::objects::S3Stores;
use crate::pipeline::Pipeline;
use crate::pipeline::transform::TransformError;
use crate::warehouse::connection::{Connector, IamLogin, Login, SecretLogin};
use crate::warehouse::{self, Warehouse, WarehouseError};
use crate::worker::announce::FileEvents;
use crate::worker::{BatchSettings, Worker, WorkerSettings};
use health::{Health, HealthError, QueueCheck, WarehouseCheck};
use status_page::StatusPage;

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
    let WorkersView {
        queue: queue_settings,
        warehouse: warehouse_settings,
    } = config.workers()?;
    // Bind first: a taken port is the quickest start-up error to report.
    let listener = match config.processor.health_address {
        Some(address) => Some((address, health::bind(address).await?)),
        None => None,
    };
    let sdk_config = load_sdk_config(&config.aws).await;
    let clients = AwsClients::from_sdk_config(&sdk_config, &config.aws);
    let (queue, dead_letter) = queues(&clients, queue_settings);
    let stores = Arc::new(S3Stores::new(&sdk_config, &config.aws));
    let pipeline = Arc::new(Pipeline::new(Arc::clone(&catalog), stores.clone()).await?);
    let connector = Connector::new(&warehouse_settings.tls)?;
    let login = login(warehouse_settings, &sdk_config);
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
    create_tables(control.as_ref(), &catalog, &pipeline).await?;
    let status_page = StatusPage::new(
        Arc::clone(&catalog),
        Arc::clone(&control),
        Arc::clone(&queue),
        dead_letter.clone(),
    );
    let health = Health::with_status_page(
        vec![
            Box::new(QueueCheck(Arc::clone(&queue))),
            Box::new(WarehouseCheck(control)),
        ],
        Some(status_page),
    );
    // Install the recorder before the first metric is emitted.
    let emf = install_metrics(config)?;
    let template = Worker {
        queue,
        dead_letter,
        pipeline,
        warehouse: connect().await?,
        settings: worker_settings(config, queue_settings),
        batching: batch_settings(config),
        announcer: config.events.as_ref().map(|events| {
            let client = aws_sdk_eventbridge::Client::new(&sdk_config);
            Arc::new(FileEvents::new(client, events.clone()))
        }),
    };
    let (stop, stopped) = watch::channel(false);
    let mut workers = JoinSet::new();
    spawn_worker(&mut workers, &health, template.clone(), stopped.clone());
    for _ in 1..config.processor.workers {
        let worker = Worker {
            warehouse: connect().await?,
            ..template.clone()
        };
        spawn_worker(&mut workers, &health, worker, stopped.clone());
    }
    let health_address = listener.as_ref().map(bound_address).transpose()?;
    let health_server = listener
        .map(|(_, listener)| tokio::spawn(health::serve(listener, Arc::clone(&health) as _)));
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

/// The address a listener bound (the port the system chose for port 0).
fn bound_address(
    (requested, listener): &(SocketAddr, tokio::net::TcpListener),
) -> Result<SocketAddr, HealthError> {
    listener.local_addr().map_err(|source| HealthError::Bind {
        address: *requested,
        source,
    })
}

/// The work queue and, when configured, the dead-letter queue.
/// The SQS work queue and, if configured, its dead-letter queue.
pub fn queues(
    clients: &AwsClients,
    settings: &QueueSettings,
) -> (Arc<dyn WorkQueue>, Option<Arc<dyn WorkQueue>>) {
    let queue = |url: &str| -> Arc<dyn WorkQueue> {
        Arc::new(SqsQueue::new(
            clients.sqs.clone(),
            url,
            settings.max_message_bytes,
        ))
    };
    (
        queue(&settings.url),
        settings.dead_letter_url.as_deref().map(queue),
    )
}

/// One connection to the configured warehouse, for a command that is not `serve`.
pub async fn connect_warehouse(
    config: &PlatformConfig,
    settings: &WarehouseSettings,
) -> Result<Arc<dyn Warehouse>, ServeError> {
    let sdk_config = load_sdk_config(&config.aws).await;
    let stores = S3Stores::new(&sdk_config, &config.aws);
    let connector = Connector::new(&settings.tls)?;
    let login = login(settings, &sdk_config);
    let schema = &config.processor.platform_schema;
    Ok(warehouse::connect(settings, &connector, &login, &stores, schema).await?)
}

/// How the warehouse connections log in: IAM credentials, a secret's password, or the
/// URL's password.
fn login(settings: &WarehouseSettings, sdk_config: &SdkConfig) -> Login {
    match (&settings.iam, &settings.password_secret) {
        (Some(iam), _) => Login::Iam(Arc::new(IamLogin::new(sdk_config, iam))),
        (None, Some(secret)) => Login::Secret(Arc::new(SecretLogin {
            client: aws_sdk_secretsmanager::Client::new(sdk_config),
            secret: secret.clone(),
        })),
        (None, None) => Login::Url,
    }
}

/// The platform tables and every dataset's target, created where missing and evolved to
/// the catalog; refused changes fail start-up, all of them listed, before any work is taken.
pub async fn create_tables(
    control: &dyn Warehouse,
    catalog: &Catalog,
    pipeline: &Pipeline,
) -> Result<(), WarehouseError> {
    control.ensure_platform_tables().await?;
    let mut refused = Vec::new();
    for dataset in catalog.datasets() {
        let Some(load_schema) = pipeline.load_schema(&dataset.name) else {
            continue;
        };
        match control.ensure_target(dataset, load_schema).await {
            Ok(plan) if plan.is_unchanged() => {}
            Ok(plan) => tracing::info!(dataset = %dataset.name, "target table: {plan}"),
            Err(WarehouseError::SchemaRefused { plans }) => refused.extend(plans),
            Err(err) => return Err(err),
        }
    }
    if refused.is_empty() {
        Ok(())
    } else {
        Err(WarehouseError::SchemaRefused { plans: refused })
    }
}

/// Installs the metrics recorder the config names: Prometheus (served at `/metrics`) or
/// EMF, flushed every 10 s to standard output (EMF histograms keep at most 100 values
/// between flushes).
fn install_metrics(
    config: &PlatformConfig,
) -> Result<Option<shared::telemetry::EmfCollector>, ServeError> {
    match config.telemetry.metrics_export {
        MetricsExport::Prometheus => {
            let _ = health::prometheus();
            Ok(None)
        }
        MetricsExport::Emf => {
            let collector = shared::telemetry::init_emf("processor")?;
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval(Duration::from_secs(10));
                loop {
                    ticks.tick().await;
                    shared::telemetry::flush_emf(collector, None, std::io::stdout());
                }
            });
            Ok(Some(collector))
        }
    }
}

fn worker_settings(config: &PlatformConfig, queue: &QueueSettings) -> WorkerSettings {
    WorkerSettings {
        wait_time: queue.wait_time,
        visibility_timeout: queue.visibility_timeout,
        retry_backoff: config.processor.retry_backoff,
        max_retry_backoff: config.processor.max_retry_backoff,
    }
}

fn batch_settings(config: &PlatformConfig) -> BatchSettings {
    BatchSettings {
        max_rows: config.processor.batch_max_rows,
        max_bytes: config.processor.batch_max_bytes,
        max_wait: config.processor.batch_max_wait,
        small_file_bytes: config.processor.batch_small_file_bytes,
    }
}

/// Runs `worker` until `stopped`, counted by the health endpoint's liveness.
fn spawn_worker(
    workers: &mut JoinSet<()>,
    health: &Arc<Health>,
    worker: Worker,
    stopped: watch::Receiver<bool>,
) {
    let guard = health.worker_started();
    workers.spawn(async move {
        let _guard = guard;
        worker.run(stopped).await;
    });
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
