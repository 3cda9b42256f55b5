//! A Kinesis-compatible endpoint for the local platform: an unchanged producer pointed at
//! `AWS_ENDPOINT_URL_KINESIS=http://127.0.0.1:PORT` puts into the embedded stream, which
//! `dev` reads and loads as the Kinesis trigger does in AWS. It speaks the JSON 1.1
//! protocol the AWS SDKs use for Kinesis (not CBOR) and does not check signatures: it
//! listens on the loopback interface only.

mod api;

pub use api::{ApiError, KinesisApi};

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// The `X-Amz-Target` prefix of Kinesis Data Streams' operations.
const TARGET_PREFIX: &str = "Kinesis_20131202.";
const JSON_CONTENT_TYPE: &str = "application/x-amz-json-1.1";
/// The largest body read: a full `PutRecords` call (5 MiB) in base64, with room for JSON.
const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// The endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot listen on {address} for the Kinesis endpoint; pass --kinesis-port (or set local.kinesis_port) with another port, 0 picks a free one"
)]
pub struct BindError {
    address: SocketAddr,
    source: std::io::Error,
}

/// Binds the endpoint on the loopback interface (`port` 0 picks a free one).
pub async fn bind(port: u16) -> Result<TcpListener, BindError> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpListener::bind(address)
        .await
        .map_err(|source| BindError { address, source })
}

/// Serves `api` on `listener` until the task is aborted.
pub async fn serve(listener: TcpListener, api: Arc<KinesisApi>) {
    let requests = Arc::new(AtomicU64::new(0));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                tracing::warn!(error = %shared::error::Report(&err), "Kinesis endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (api, requests) = (Arc::clone(&api), Arc::clone(&requests));
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let (api, id) = (Arc::clone(&api), requests.fetch_add(1, Ordering::Relaxed));
                async move { Ok::<_, Infallible>(respond(&api, request, id).await) }
            });
            if let Err(err) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %shared::error::Report(&err), "Kinesis endpoint: connection ended with an error");
            }
        });
    }
}

async fn respond(api: &KinesisApi, request: Request<Incoming>, id: u64) -> Response<Full<Bytes>> {
    let answer = answer(api, request).await;
    let (status, body, error_type) = match answer {
        Ok(body) => (StatusCode::OK, body, None),
        Err(err) => {
            let status = if err.server_fault {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::BAD_REQUEST
            };
            let body = serde_json::json!({ "__type": err.code, "message": err.message });
            (status, body, Some(err.code))
        }
    };
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(JSON_CONTENT_TYPE));
    if let Ok(value) = HeaderValue::from_str(&format!("local-{id}")) {
        headers.insert("x-amzn-requestid", value);
    }
    if let Some(code) = error_type {
        headers.insert("x-amzn-errortype", HeaderValue::from_static(code));
    }
    response
}

/// The answer to one request, read whole (bounded) and passed to the API.
async fn answer(
    api: &KinesisApi,
    request: Request<Incoming>,
) -> Result<serde_json::Value, ApiError> {
    let client = ApiError::client;
    if request.method() != Method::POST {
        return Err(client(
            "UnknownOperationException",
            "the Kinesis API takes POST requests".to_owned(),
        ));
    }
    let content_type = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    if content_type.contains("cbor") {
        return Err(client(
            "SerializationException",
            "this local endpoint speaks JSON, not CBOR: turn CBOR off in the client (for the AWS SDK for Java, AWS_CBOR_DISABLE=true)".to_owned(),
        ));
    }
    let operation = request
        .headers()
        .get("x-amz-target")
        .and_then(|value| value.to_str().ok())
        .and_then(|target| target.strip_prefix(TARGET_PREFIX))
        .map(str::to_owned)
        .ok_or_else(|| {
            client(
                "UnknownOperationException",
                format!("no X-Amz-Target header naming a {TARGET_PREFIX}* operation"),
            )
        })?;
    let body = Limited::new(request.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|err| {
            client(
                "InvalidArgumentException",
                format!("the request body does not read (over {MAX_BODY_BYTES} bytes?): {err}"),
            )
        })?
        .to_bytes();
    api.call(&operation, &body).await
}
