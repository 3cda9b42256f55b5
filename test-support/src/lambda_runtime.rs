//! A Lambda Runtime API endpoint on loopback, owned by the test or benchmark that starts
//! it: it hands the function binary the events it was given (one per `next` call, then
//! holds the call open as Lambda does while no event is pending) and reports every call
//! the binary makes. Serves the Lambda binaries' tests and the cold-start benchmark.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;

/// A call the function made to the Runtime API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `GET /runtime/invocation/next`, and when it arrived.
    Next { at: Instant },
    /// `POST /runtime/invocation/{id}/response`.
    Response { request_id: String, body: String },
    /// `POST /runtime/invocation/{id}/error`.
    Error { request_id: String, body: String },
    /// `POST /runtime/init/error`: the function failed to start.
    InitError { body: String },
}

/// A running Runtime API: its address and the calls the function made.
#[derive(Debug)]
pub struct RuntimeApi {
    pub address: SocketAddr,
    pub calls: mpsc::UnboundedReceiver<Call>,
}

const PREFIX: &str = "/2018-06-01/runtime";

/// Serves `events` (request id, JSON payload) in order.
pub async fn start(events: Vec<(String, String)>) -> RuntimeApi {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind runtime API");
    let address = listener.local_addr().expect("address");
    let (report, calls) = mpsc::unbounded_channel();
    let pending = Arc::new(Mutex::new(VecDeque::from(events)));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let pending = Arc::clone(&pending);
            let report = report.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let pending = Arc::clone(&pending);
                    let report = report.clone();
                    async move { handle(request, &pending, &report).await }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    RuntimeApi { address, calls }
}

async fn handle(
    request: Request<Incoming>,
    pending: &Mutex<VecDeque<(String, String)>>,
    report: &mpsc::UnboundedSender<Call>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    let body = request.into_body().collect().await?.to_bytes();
    let body = String::from_utf8_lossy(&body).into_owned();
    let accepted = || {
        Response::builder()
            .status(StatusCode::ACCEPTED)
            .body(Full::new(Bytes::from_static(b"{\"status\":\"OK\"}")))
            .expect("response")
    };
    let Some(rest) = path.strip_prefix(PREFIX) else {
        return Ok(not_found());
    };
    match (method, rest) {
        (Method::GET, "/invocation/next") => {
            let _ = report.send(Call::Next { at: Instant::now() });
            let next = pending.lock().expect("events").pop_front();
            let Some((request_id, event)) = next else {
                // No event: Lambda keeps the call open until there is one.
                std::future::pending::<()>().await;
                unreachable!("pending never completes");
            };
            let deadline_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_millis()
                + 60_000;
            Ok(Response::builder()
                .status(StatusCode::OK)
                .header("Lambda-Runtime-Aws-Request-Id", request_id)
                .header("Lambda-Runtime-Deadline-Ms", deadline_ms.to_string())
                .header(
                    "Lambda-Runtime-Invoked-Function-Arn",
                    "arn:aws:lambda:us-east-1:123456789012:function:ingest-batch",
                )
                .header(
                    "Lambda-Runtime-Trace-Id",
                    "Root=1-67890abc-0123456789abcdef01234567;Sampled=0",
                )
                .body(Full::new(Bytes::from(event)))
                .expect("response"))
        }
        (Method::POST, "/init/error") => {
            let _ = report.send(Call::InitError { body });
            Ok(accepted())
        }
        (Method::POST, rest) => {
            let parts: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
            match parts.as_slice() {
                ["invocation", id, "response"] => {
                    let _ = report.send(Call::Response {
                        request_id: (*id).to_owned(),
                        body,
                    });
                    Ok(accepted())
                }
                ["invocation", id, "error"] => {
                    let _ = report.send(Call::Error {
                        request_id: (*id).to_owned(),
                        body,
                    });
                    Ok(accepted())
                }
                _ => Ok(not_found()),
            }
        }
        _ => Ok(not_found()),
    }
}

fn not_found() -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::NOT_FOUND)
        .body(Full::new(Bytes::new()))
        .expect("response")
}

/// The function's next call, failing the test after 60 s.
pub async fn next_call(calls: &mut mpsc::UnboundedReceiver<Call>) -> Call {
    tokio::time::timeout(std::time::Duration::from_secs(60), calls.recv())
        .await
        .expect("the function answered within 60 s")
        .expect("runtime API running")
}

/// The environment Lambda gives a function, pointed at `address`.
pub fn lambda_env(address: SocketAddr) -> Vec<(String, String)> {
    [
        ("AWS_LAMBDA_RUNTIME_API", address.to_string()),
        ("AWS_LAMBDA_FUNCTION_NAME", "ingest-batch".to_owned()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256".to_owned()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
        (
            "AWS_LAMBDA_LOG_GROUP_NAME",
            "/aws/lambda/ingest-batch".to_owned(),
        ),
        ("AWS_LAMBDA_LOG_STREAM_NAME", "test".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}
