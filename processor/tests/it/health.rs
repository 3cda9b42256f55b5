//! The health endpoint against real peers: readiness names the dependency that does not
//! answer (here a queue that does not exist in the emulator), liveness follows the
//! workers, and draining turns readiness off.

use std::sync::Arc;

use processor::serve::health::{self, Health, QueueCheck, WarehouseCheck};
use processor::warehouse::postgres::PostgresWarehouse;
use shared::envelope::MessageSizeLimit;
use shared::queue::SqsQueue;
use test_support::{clients, create_queue, http_get, postgres_url};

async fn endpoint(health: Arc<Health>) -> std::net::SocketAddr {
    let listener = health::bind(([127, 0, 0, 1], 0).into())
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(health::serve(listener, health));
    address
}

#[tokio::test]
async fn readiness_names_what_does_not_answer_and_liveness_follows_the_workers() {
    let clients = clients().await;
    let warehouse = Arc::new(
        PostgresWarehouse::connect(&postgres_url(), "ingest")
            .await
            .expect("connect"),
    );
    let present = create_queue(&clients.sqs, &[]).await;
    let missing = format!("{present}-missing");
    let queue = |url: &str| {
        Arc::new(SqsQueue::new(
            clients.sqs.clone(),
            url,
            MessageSizeLimit::default(),
        ))
    };

    let broken = Health::new(vec![
        Box::new(QueueCheck(queue(&missing))),
        Box::new(WarehouseCheck(warehouse.clone())),
    ]);
    let address = endpoint(Arc::clone(&broken)).await;
    let (status, body) = http_get(address, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(report["status"], "not ready");
    assert_eq!(report["warehouse"], "ok");
    let queue_error = report["queue"].as_str().expect("a reason");
    assert!(queue_error.contains("-missing"), "{queue_error}");

    // No worker running: not live. One running: live. Its end (or panic): not live.
    assert_eq!(http_get(address, "/healthz").await.0, 503);
    let worker = broken.worker_started();
    let (status, body) = http_get(address, "/healthz").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "live: 1 worker(s) running\n")
    );
    let panicking = Arc::clone(&broken);
    let ended = tokio::spawn(async move {
        let _guard = panicking.worker_started();
        panic!("a worker bug");
    })
    .await;
    assert!(ended.is_err());
    assert_eq!(http_get(address, "/healthz").await.0, 200);
    drop(worker);
    assert_eq!(http_get(address, "/healthz").await.0, 503);

    let healthy = Health::new(vec![
        Box::new(QueueCheck(queue(&present))),
        Box::new(WarehouseCheck(warehouse)),
    ]);
    let address = endpoint(Arc::clone(&healthy)).await;
    let (status, body) = http_get(address, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    healthy.set_stopping();
    let (status, body) = http_get(address, "/readyz").await;
    assert_eq!(status, 503);
    assert!(body.contains("\"status\":\"stopping\""), "{body}");
    // Draining on purpose is still live.
    assert_eq!(http_get(address, "/healthz").await.0, 200);

    let (status, body) = http_get(address, "/nope").await;
    assert_eq!(status, 404);
    assert!(body.contains("/healthz"), "{body}");
    let (status, body) = http_get(address, "/metrics").await;
    assert_eq!(status, 200);
    // Nothing emitted in this process yet: a valid, empty exposition.
    assert!(!body.contains("ingest_rows_loaded_total{"), "{body}");
}

/// `processor healthcheck`'s probe: live only while a worker runs; a closed port is an
/// error that names the address.
#[tokio::test]
async fn the_health_probe_follows_liveness() {
    let health = Health::new(Vec::new());
    let address = endpoint(Arc::clone(&health)).await;
    let timeout = std::time::Duration::from_secs(3);
    let down = health::probe(address, timeout)
        .await
        .expect_err("no worker");
    assert!(down.contains("503"), "{down}");
    let _worker = health.worker_started();
    let live = health::probe(address, timeout).await.expect("live");
    assert_eq!(live, "live: 1 worker(s) running");
    // 0.0.0.0 (the config's default form) means this host.
    let unspecified = std::net::SocketAddr::from(([0, 0, 0, 0], address.port()));
    assert!(health::probe(unspecified, timeout).await.is_ok());
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let closed_address = closed.local_addr().expect("address");
    drop(closed);
    let err = health::probe(closed_address, timeout)
        .await
        .expect_err("closed");
    assert!(err.contains(&closed_address.to_string()), "{err}");
}
