//! `processor serve` end to end: objects in the emulator's S3, work items on its SQS,
//! rows in PostgreSQL. Duplicate deliveries load once; bad rows land in the rejects table;
//! an undecodable message goes to the dead-letter queue at once with its reason; the
//! health endpoint reports live and ready, and `/metrics` counts exactly what happened.

use std::sync::Arc;
use std::time::Duration;

use shared::catalog::{Catalog, FileFormat};
use shared::config::PlatformConfig;
use shared::envelope::{
    MessageSizeLimit, RecordsItem, RecordsPayload, StreamPosition, StreamRecord, WorkItem,
};
use shared::queue::REASON_ATTRIBUTE;
use shared::queue::{OutgoingMessage, SqsQueue, WorkQueue};
use test_support::EXAMPLE_CATALOG as CATALOG;
use test_support::{
    TestSchemas, aws_endpoint, clients, count, create_bucket, create_queue_with_dlq, eventually,
    gzip, http_get, metric_value, pg_client, postgres_url, queue_depth, try_count, unique_name,
    upload_file,
};

fn position(sequence: &str) -> StreamPosition {
    StreamPosition {
        sequence_number: sequence.to_owned(),
        sub_sequence_number: 0,
    }
}

#[tokio::test]
async fn files_and_records_load_once_and_poison_goes_to_the_dlq() {
    // Worker logs show up in the output of a failing test.
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("info")
        .try_init();
    let clients = clients().await;
    let schemas = TestSchemas::new();
    let (sales, events, platform) = (&schemas.sales, &schemas.events, &schemas.platform);
    // The metrics registry is the process's: datasets named for this test only, so that
    // other tests' loads (of the example catalog's datasets) do not add to its counts.
    let suffix = unique_name("").replace('-', "_");
    let items_dataset = format!("order_items{suffix}");
    let events_dataset = format!("order_status_events{suffix}");
    let catalog_text = schemas
        .retarget(CATALOG)
        .replace("datasets.order_items", &format!("datasets.{items_dataset}"))
        .replace(
            "datasets.order_status_events",
            &format!("datasets.{events_dataset}"),
        );
    let catalog = Arc::new(Catalog::from_toml(&catalog_text, "test catalog").expect("valid"));

    // A gzip CSV with one bad row, under a key with spaces, '+' and unicode.
    let bucket = create_bucket(&clients.s3, "landing").await;
    let key = "landing/order_items/2024 01/items été+1.csv.gz";
    let csv = "order_id,line_number,product_sku,quantity,unit_price\n\
               1,1,SKU-1,2,9.99\n1,2,SKU-2,1,5.00\n2,1,SKU-3,3,1.10\n2,2,SKU-4,many,1.00\n";
    let file_item = upload_file(
        &clients.s3,
        &bucket,
        key,
        gzip(csv.as_bytes()),
        &items_dataset,
        FileFormat::Csv,
    )
    .await;
    let event = |id: &str, order: serde_json::Value, status: &str| serde_json::json!({"event_type": "order_status_changed", "event_id": id, "order_id": order, "status": status, "occurred_at": "2024-06-01T10:00:00Z"});
    let records_item = WorkItem::Records(RecordsItem {
        dataset: events_dataset.clone(),
        stream: "order-events".into(),
        shard_id: "shardId-000000000000".into(),
        first: position("1"),
        last: position("3"),
        payload: RecordsPayload::Inline(vec![
            StreamRecord {
                position: position("1"),
                // Arrived in Kinesis five seconds ago: the end-to-end latency starts here.
                arrival_ms: Some(
                    shared::stream::epoch_millis(std::time::SystemTime::now()) - 5_000,
                ),
                data: event("e1", 1.into(), "shipped"),
            },
            StreamRecord {
                position: position("2"),
                arrival_ms: None,
                data: event("e2", "not a number".into(), "lost"),
            },
            StreamRecord {
                position: position("3"),
                arrival_ms: None,
                data: event("e3", 2.into(), "delivered"),
            },
        ]),
        created_at_ms: None,
        replay: None,
    });

    let (queue_url, dlq_url) = create_queue_with_dlq(&clients.sqs, 5).await;
    let queue = SqsQueue::new(clients.sqs.clone(), &queue_url, MessageSizeLimit::default());
    let limit = MessageSizeLimit::default();
    let messages: Vec<OutgoingMessage> = vec![
        file_item.to_json(limit).expect("json").into(),
        file_item.to_json(limit).expect("json").into(), // a duplicate delivery
        records_item.to_json(limit).expect("json").into(),
        "{this is not a work item".to_owned().into(),
    ];
    assert!(queue.send(&messages).await.all_succeeded());

    let config_text = format!(
        r#"
[aws]
region = "us-east-1"
endpoint_url = "{endpoint}"
s3_force_path_style = true
max_attempts = 2

[queue]
url = "{queue_url}"
dead_letter_url = "{dlq_url}"
wait_time_secs = 1
visibility_timeout_secs = 30

[warehouse]
url = "{warehouse}"

[processor]
workers = 2
platform_schema = "{platform}"
shutdown_grace_secs = 10
health_address = "127.0.0.1:0"
"#,
        endpoint = aws_endpoint(),
        warehouse = postgres_url(),
    );
    let config =
        PlatformConfig::from_toml(&config_text, "test config", Vec::new()).expect("valid config");
    let service = processor::serve::start(&config, catalog)
        .await
        .expect("start");
    let health = service.health_address.expect("health endpoint bound");
    let (status, body) = http_get(health, "/healthz").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "live: 2 worker(s) running\n")
    );
    let (status, body) = http_get(health, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        ready,
        serde_json::json!({"status": "ready", "queue": "ok", "warehouse": "ok"})
    );

    let client = pg_client().await;
    let items_table = format!("{sales}.order_items");
    let events_table = format!("{events}.order_status");
    eventually(
        "both items loaded and the queue drained",
        Duration::from_secs(60),
        || async {
            let items = try_count(&client, &format!("SELECT count(*) FROM {items_table}")).await;
            let events = try_count(&client, &format!("SELECT count(*) FROM {events_table}")).await;
            let depth = queue_depth(&clients.sqs, &queue_url).await;
            (items == Some(3) && events == Some(2) && depth == (0, 0)).then_some(())
        },
    )
    .await;
    // The dead-lettered message is counted before the queue drains; the loads are
    // counted right after their commit, so wait for the numbers to settle. A duplicate
    // that arrives while the first delivery announces the file is released and checked
    // again after the retry backoff (10 s): wait past it.
    let dead_lettered = [("dataset", "(unknown)"), ("outcome", "dead_lettered")];
    let metrics = eventually(
        "the metrics to count every item",
        Duration::from_secs(40),
        || async {
            let (status, text) = http_get(health, "/metrics").await;
            assert_eq!(status, 200);
            let items = |dataset: &str, outcome: &str| {
                metric_value(
                    &text,
                    "ingest_work_items_processed_total",
                    &[("dataset", dataset), ("outcome", outcome)],
                )
            };
            let done = items(&items_dataset, "loaded")
                + items(&items_dataset, "duplicate")
                + items(&events_dataset, "loaded")
                + metric_value(&text, "ingest_work_items_processed_total", &dead_lettered).min(1.0);
            (done == 4.0).then_some(text)
        },
    )
    .await;
    let items = |dataset: &str, outcome: &str| {
        metric_value(
            &metrics,
            "ingest_work_items_processed_total",
            &[("dataset", dataset), ("outcome", outcome)],
        )
    };
    assert_eq!(items(&items_dataset, "loaded"), 1.0, "{metrics}");
    assert_eq!(items(&items_dataset, "duplicate"), 1.0, "{metrics}");
    assert_eq!(items(&events_dataset, "loaded"), 1.0, "{metrics}");
    let rows = |name: &str, dataset: &str| metric_value(&metrics, name, &[("dataset", dataset)]);
    assert_eq!(
        rows("ingest_rows_loaded_total", &items_dataset),
        3.0,
        "{metrics}"
    );
    assert_eq!(
        rows("ingest_rows_rejected_total", &items_dataset),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        rows("ingest_rows_loaded_total", &events_dataset),
        2.0,
        "{metrics}"
    );
    assert_eq!(
        rows("ingest_rows_rejected_total", &events_dataset),
        1.0,
        "{metrics}"
    );
    assert!(
        metrics.contains("# TYPE ingest_load_duration_seconds histogram"),
        "{metrics}"
    );
    // Bytes: the file's size (the duplicate loaded nothing and counts nothing).
    assert_eq!(
        rows("ingest_bytes_read_total", &items_dataset),
        file_item.source_bytes(0) as f64,
        "{metrics}"
    );
    // One latency observation for the records' load, from their arrival five seconds ago;
    // the file item carries no event time here, so its load observes none.
    let latency = |suffix: &str, dataset: &str| {
        metric_value(
            &metrics,
            &format!("ingest_end_to_end_latency_seconds_{suffix}"),
            &[("dataset", dataset)],
        )
    };
    assert_eq!(latency("count", &events_dataset), 1.0, "{metrics}");
    let seconds = latency("sum", &events_dataset);
    assert!((5.0..60.0).contains(&seconds), "{seconds} s: {metrics}");
    assert_eq!(latency("count", &items_dataset), 0.0, "{metrics}");

    let summary = tokio::time::timeout(Duration::from_secs(30), service.shutdown())
        .await
        .expect("stops within the grace period");
    assert_eq!((summary.workers_finished, summary.workers_aborted), (2, 0));

    let rows: Vec<(i64, i32, String, String)> = client
        .query(
            &format!("SELECT order_id, line_number, line_total::text, _ingest_source FROM {items_table} ORDER BY 1, 2"),
            &[],
        )
        .await
        .expect("select")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let source = format!("s3://{bucket}/{key}");
    assert_eq!(
        rows,
        [
            (1, 1, "19.98".to_owned(), source.clone()),
            (1, 2, "5.00".to_owned(), source.clone()),
            (2, 1, "3.30".to_owned(), source.clone()),
        ]
    );
    let statuses: Vec<(String, String)> = client
        .query(
            &format!("SELECT status, _ingest_offset FROM {events_table} ORDER BY 2"),
            &[],
        )
        .await
        .expect("select")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        statuses,
        [
            ("shipped".to_owned(), "1".to_owned()),
            ("delivered".to_owned(), "3".to_owned())
        ]
    );

    let rejects: Vec<(String, String)> = client
        .query(
            &format!("SELECT dataset, reason FROM {platform}.rejects ORDER BY dataset"),
            &[],
        )
        .await
        .expect("rejects")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        rejects,
        [
            (
                items_dataset.clone(),
                "column quantity: \"many\" is not a valid int32".to_owned()
            ),
            (
                events_dataset.clone(),
                "column order_id: \"not a number\" is not a valid int64".to_owned()
            ),
        ]
    );
    assert_eq!(
        count(
            &client,
            &format!("SELECT count(*) FROM {platform}.load_ledger")
        )
        .await,
        2
    );

    let dlq = SqsQueue::new(clients.sqs.clone(), &dlq_url, MessageSizeLimit::default());
    let dead = dlq
        .receive(10, Duration::from_secs(2), Duration::from_secs(30))
        .await
        .expect("receive dlq");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].body, "{this is not a work item");
    let reason = dead[0]
        .attributes
        .get(REASON_ATTRIBUTE)
        .cloned()
        .unwrap_or_default();
    assert!(
        reason.starts_with("work item is not valid JSON"),
        "{reason}"
    );
    assert_eq!(
        dead[0].receive_count, 1,
        "dead-lettered on first receipt, not after maxReceiveCount"
    );
}
