//! The processor's HTTP endpoint for ECS health checks and Prometheus scrapers:
//! `/healthz` (liveness), `/readyz` (readiness: queue and warehouse answer) and
//! `/metrics` (Prometheus text), and the status page (`/status`, [`super::status_page`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use shared::queue::WorkQueue;
use tokio::net::TcpListener;

use super::status_page::{PageAnswer, StatusPage};
use crate::warehouse::Warehouse;

/// How long one readiness check may take before it counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// Histogram buckets for durations, in seconds: a 10 ms commit to a 15-minute file.
const DURATION_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
];

#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("cannot listen on {address} for health checks and metrics: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// The process-wide Prometheus recorder, installed at the first call. `None` when another
/// recorder was installed first (then `/metrics` says so instead of lying with zeros).
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), DURATION_BUCKETS)
                .expect("the duration buckets are a non-empty constant");
            match builder.install_recorder() {
                Ok(handle) => Some(handle),
                Err(err) => {
                    tracing::warn!(error = %shared::error::Report(&err), "Prometheus recorder not installed");
                    None
                }
            }
        })
        .as_ref()
}

/// One dependency readiness depends on.
#[async_trait]
pub trait ReadinessCheck: Send + Sync + std::fmt::Debug {
    fn name(&self) -> &'static str;
    async fn check(&self) -> Result<(), String>;
}

/// The work queue answers `GetQueueAttributes`.
#[derive(Debug)]
pub struct QueueCheck(pub Arc<dyn WorkQueue>);

#[async_trait]
impl ReadinessCheck for QueueCheck {
    fn name(&self) -> &'static str {
        "queue"
    }
    async fn check(&self) -> Result<(), String> {
        self.0
            .depth()
            .await
            .map(drop)
            .map_err(|err| shared::error::report(&err))
    }
}

/// The warehouse answers a query (on a connection of its own, not a worker's).
#[derive(Debug)]
pub struct WarehouseCheck(pub Arc<dyn Warehouse>);

#[async_trait]
impl ReadinessCheck for WarehouseCheck {
    fn name(&self) -> &'static str {
        "warehouse"
    }
    async fn check(&self) -> Result<(), String> {
        self.0
            .ping()
            .await
            .map_err(|err| shared::error::report(&err))
    }
}

/// What answers the HTTP port's requests.
#[async_trait]
pub trait Endpoint: Send + Sync + 'static {
    async fn respond(&self, request: &Request<Incoming>) -> Response<Full<Bytes>>;
}

/// What the endpoint reports on.
#[derive(Debug)]
pub struct Health {
    checks: Vec<Box<dyn ReadinessCheck>>,
    /// `/status` and `/status.json`, where the processor serves them.
    status_page: Option<StatusPage>,
    workers_running: AtomicUsize,
    stopping: AtomicBool,
}

/// Held by a running worker; dropping it (on return or panic) counts the worker out.
#[derive(Debug)]
pub struct WorkerGuard(Arc<Health>);

impl Drop for WorkerGuard {
    fn drop(&mut self) {
        self.0.workers_running.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Health {
    pub fn new(checks: Vec<Box<dyn ReadinessCheck>>) -> Arc<Self> {
        Self::with_status_page(checks, None)
    }

    /// [`Health::new`], also serving the status page.
    pub fn with_status_page(
        checks: Vec<Box<dyn ReadinessCheck>>,
        status_page: Option<StatusPage>,
    ) -> Arc<Self> {
        Arc::new(Self {
            checks,
            status_page,
            workers_running: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
        })
    }

    /// Counts a worker in until the guard is dropped.
    pub fn worker_started(self: &Arc<Self>) -> WorkerGuard {
        self.workers_running.fetch_add(1, Ordering::SeqCst);
        WorkerGuard(Arc::clone(self))
    }

    /// From now on readiness fails, so nothing new is routed here while draining.
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Live while at least one worker runs, or while shutting down on purpose.
    pub fn is_live(&self) -> bool {
        self.workers_running.load(Ordering::SeqCst) > 0 || self.stopping.load(Ordering::SeqCst)
    }

    /// Runs every readiness check concurrently; each result is `Ok` or why not.
    pub async fn readiness(&self) -> Vec<(&'static str, Result<(), String>)> {
        let checks = self.checks.iter().map(|check| async move {
            let result = match tokio::time::timeout(CHECK_TIMEOUT, check.check()).await {
                Ok(result) => result,
                Err(_) => Err(format!("no answer within {} s", CHECK_TIMEOUT.as_secs())),
            };
            (check.name(), result)
        });
        futures::future::join_all(checks).await
    }

    async fn answer(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".to_owned());
        }
        if let Some(page) = &self.status_page
            && let Some(answer) = page
                .respond(request.uri().path(), request.uri().query())
                .await
        {
            return page_response(answer);
        }
        match request.uri().path() {
            "/healthz" => {
                let workers = self.workers_running.load(Ordering::SeqCst);
                if self.is_live() {
                    text(
                        StatusCode::OK,
                        format!("live: {workers} worker(s) running\n"),
                    )
                } else {
                    text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "not live: no worker is running\n".to_owned(),
                    )
                }
            }
            "/readyz" => {
                let mut ready = !self.stopping.load(Ordering::SeqCst);
                let mut body = serde_json::Map::new();
                for (name, result) in self.readiness().await {
                    let value = match result {
                        Ok(()) => "ok".to_owned(),
                        Err(reason) => {
                            ready = false;
                            reason
                        }
                    };
                    body.insert(name.to_owned(), serde_json::Value::String(value));
                }
                body.insert(
                    "status".to_owned(),
                    serde_json::Value::String(
                        if self.stopping.load(Ordering::SeqCst) {
                            "stopping"
                        } else if ready {
                            "ready"
                        } else {
                            "not ready"
                        }
                        .to_owned(),
                    ),
                );
                let status = if ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                let mut response = text(status, serde_json::Value::Object(body).to_string());
                set_content_type(&mut response, "application/json");
                response
            }
            "/metrics" => match prometheus() {
                Some(handle) => {
                    handle.run_upkeep();
                    let mut response = text(StatusCode::OK, handle.render());
                    set_content_type(&mut response, "text/plain; version=0.0.4");
                    response
                }
                None => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "metrics are not served here: another recorder is installed (with telemetry.metrics_export = \"emf\" they go to stdout as CloudWatch EMF)\n".to_owned(),
                ),
            },
            _ => text(
                StatusCode::NOT_FOUND,
                "not found; try /healthz, /readyz, /metrics or /status\n".to_owned(),
            ),
        }
    }
}

#[async_trait]
impl Endpoint for Health {
    async fn respond(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        self.answer(request).await
    }
}

/// The local mode serves the status page alone.
#[async_trait]
impl Endpoint for StatusPage {
    async fn respond(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".to_owned());
        }
        match StatusPage::respond(self, request.uri().path(), request.uri().query()).await {
            Some(answer) => page_response(answer),
            None => text(
                StatusCode::NOT_FOUND,
                "not found; try /status or /status.json\n".to_owned(),
            ),
        }
    }
}

fn page_response((status, content_type, body): PageAnswer) -> Response<Full<Bytes>> {
    let mut response = text(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        body,
    );
    set_content_type(&mut response, content_type);
    response
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    set_content_type(&mut response, "text/plain; charset=utf-8");
    response
}

fn set_content_type(response: &mut Response<Full<Bytes>>, value: &'static str) {
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(value),
    );
}

/// Binds the endpoint; fails at start-up, not later, if the address is taken.
pub async fn bind(address: SocketAddr) -> Result<TcpListener, HealthError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| HealthError::Bind { address, source })
}

/// Serves the endpoint on `listener` until the task is aborted (it keeps answering while
/// the workers drain, so the orchestrator sees "stopping" rather than a refused connection).
pub async fn serve(listener: TcpListener, endpoint: Arc<dyn Endpoint>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                tracing::warn!(error = %shared::error::Report(&err), "health endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let endpoint = Arc::clone(&endpoint);
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let endpoint = Arc::clone(&endpoint);
                async move { Ok::<_, Infallible>(endpoint.respond(&request).await) }
            });
            if let Err(err) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %shared::error::Report(&err), "health endpoint: connection ended with an error");
            }
        });
    }
}

/// `processor healthcheck`: asks the liveness endpoint at `address` (an unspecified address
/// such as `0.0.0.0` means this host) and returns its answer when it says live. The
/// container health check runs it, as the runtime image has no shell or HTTP client.
pub async fn probe(address: SocketAddr, timeout: std::time::Duration) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = if address.ip().is_unspecified() {
        SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), address.port())
    } else {
        address
    };
    let ask = async {
        let mut stream = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|err| {
                format!(
                    "cannot connect to {address}: {}",
                    shared::error::report(&err)
                )
            })?;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|err| format!("cannot ask {address}: {}", shared::error::report(&err)))?;
        let mut response = Vec::new();
        stream
            .read_to_end(&mut response)
            .await
            .map_err(|err| format!("no answer from {address}: {}", shared::error::report(&err)))?;
        let text = String::from_utf8_lossy(&response);
        let status = text.lines().next().unwrap_or_default().to_owned();
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.trim().to_owned())
            .unwrap_or_default();
        if status.split_whitespace().nth(1) == Some("200") {
            Ok(body)
        } else {
            Err(format!("{status}: {body}"))
        }
    };
    tokio::time::timeout(timeout, ask)
        .await
        .map_err(|_| format!("no answer from {address} within {timeout:?}"))?
}
