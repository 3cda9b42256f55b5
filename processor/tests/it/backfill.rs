//! `processor backfill` against the emulator and PostgreSQL: the objects under a prefix
//! become work items through the ingest-batch planner, the processor loads them, and a
//! second backfill of the same objects adds no rows (every item is a ledger duplicate).

use std::sync::Arc;
use std::time::Duration;

use processor::operations::backfill::{BackfillOptions, BackfillProgress, backfill};
use processor::warehouse::Warehouse;
use processor::worker::{Outcome, Worker};
use shared::catalog::Catalog;
use shared::queue::{SqsQueue, WorkQueue};
use test_support::EXAMPLE_CATALOG as CATALOG;
use test_support::{TestSchemas, clients, count, create_bucket, pg_client};

use crate::support::platform::{file_ingest, new_queue, ready_postgres, s3_pipeline, s3_planner};
use crate::support::workers;

fn customers_csv(first: usize, rows: usize) -> Vec<u8> {
    let mut body = b"customer_id,email,full_name,country,signup_date,updated_at\n".to_vec();
    for id in first..first + rows {
        body.extend(
            format!(
                "{id},c{id}@example.com,\"Name {id}\nof two lines, with \"\"quotes\"\"\",DE,2024-01-02,2024-01-02T03:04:05Z\n"
            )
            .bytes(),
        );
    }
    body
}

/// Receives and handles messages until the queue stays empty.
async fn drain(worker: &Worker, queue: &SqsQueue) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    let mut empty_polls = 0;
    while empty_polls < 2 {
        let messages = queue
            .receive(10, Duration::from_secs(1), Duration::from_secs(60))
            .await
            .expect("receive");
        if messages.is_empty() {
            empty_polls += 1;
        }
        for message in &messages {
            outcomes.push(worker.handle(message).await);
        }
    }
    outcomes
}

#[tokio::test]
async fn backfill_enqueues_every_object_once_and_a_second_run_loads_nothing_new() {
    let clients = clients().await;
    let schemas = TestSchemas::new();
    let catalog =
        Arc::new(Catalog::from_toml(&schemas.retarget(CATALOG), "test").expect("catalog"));
    let pipeline = s3_pipeline(Arc::clone(&catalog)).await;
    let warehouse = Arc::new(ready_postgres(&pipeline, &schemas.platform).await);

    let bucket = create_bucket(&clients.s3, "backfill").await;
    let uploads: Vec<(&str, Vec<u8>)> = vec![
        ("landing/customers/2026/part one.csv", customers_csv(1, 50)),
        ("landing/customers/2026/big+file é.csv", customers_csv(1000, 3000)),
        (
            "landing/orders/Zürich 東京.jsonl",
            b"{\"order_id\":7,\"customer_id\":1,\"ordered_at\":\"2026-11-24T10:00:00Z\",\"status\":\"NEW\",\"currency\":\"eur\",\"total_amount\":\"12.50\"}\n".to_vec(),
        ),
        ("landing/customers/2026/", Vec::new()),
        ("landing/unknown/thing.bin", b"??".to_vec()),
        ("elsewhere/customers.csv", customers_csv(90_000, 5)),
    ];
    for (key, body) in &uploads {
        clients
            .s3
            .put_object()
            .bucket(&bucket)
            .key(*key)
            .body(body.clone().into())
            .send()
            .await
            .expect("put");
    }

    let queue = new_queue(&clients).await;
    let ingest = file_ingest(
        s3_planner(&clients, Arc::clone(&catalog), 64 * 1024),
        Arc::clone(&queue) as Arc<dyn WorkQueue>,
        "backfill",
    );
    let worker = workers::worker(
        Arc::clone(&queue) as Arc<dyn WorkQueue>,
        pipeline,
        Arc::clone(&warehouse) as Arc<dyn Warehouse>,
        Duration::from_secs(60),
    );
    let options = BackfillOptions {
        bucket: bucket.clone(),
        prefix: "landing/".into(),
        since_ms: None,
        dry_run: false,
    };

    // A dry run plans without sending.
    let dry = backfill(
        &clients.s3,
        &ingest,
        &BackfillOptions {
            dry_run: true,
            ..options.clone()
        },
        &mut |_| {},
    )
    .await
    .expect("dry run");
    assert_eq!(queue.depth().await.expect("depth").visible, 0);

    let mut pages: Vec<BackfillProgress> = Vec::new();
    let first = backfill(&clients.s3, &ingest, &options, &mut |p| {
        pages.push(p.clone())
    })
    .await
    .expect("backfill");
    assert!(!pages.is_empty(), "progress is reported");
    assert_eq!(first.listed, 5, "{first:?}");
    assert_eq!(first.planned, 5);
    assert_eq!(first.skipped, 2, "folder marker and unrouted: {first:?}");
    assert_eq!(first.files_split, 1, "{first:?}");
    assert!(first.work_items >= 5, "{first:?}");
    assert_eq!(
        dry.work_items, first.work_items,
        "the dry run planned the same"
    );

    let outcomes = drain(&worker, &queue).await;
    assert_eq!(outcomes.len() as u64, first.work_items);
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Outcome::Done(report) if report.items_loaded == 1)),
        "{outcomes:?}"
    );
    let client = pg_client().await;
    let customers = format!("SELECT count(*) FROM {}.customers", schemas.sales);
    let orders = format!("SELECT count(*) FROM {}.orders", schemas.sales);
    let ledger = format!("SELECT count(*) FROM {}.load_ledger", schemas.platform);
    assert_eq!(count(&client, &customers).await, 3050);
    assert_eq!(count(&client, &orders).await, 1);
    let ledger_rows = count(&client, &ledger).await;
    assert_eq!(ledger_rows as u64, first.work_items);

    // The same objects again: the same idempotency keys, so nothing new loads.
    let second = backfill(&clients.s3, &ingest, &options, &mut |_| {})
        .await
        .expect("second backfill");
    assert_eq!(second.work_items, first.work_items);
    let outcomes = drain(&worker, &queue).await;
    assert_eq!(outcomes.len() as u64, second.work_items);
    assert!(
        outcomes.iter().all(
            |o| matches!(o, Outcome::Done(report) if report.items_skipped == 1 && report.items_loaded == 0)
        ),
        "{outcomes:?}"
    );
    assert_eq!(count(&client, &customers).await, 3050);
    assert_eq!(count(&client, &ledger).await, ledger_rows);

    // Nothing is newer than tomorrow.
    let tomorrow = now_ms() + 86_400_000;
    let none = backfill(
        &clients.s3,
        &ingest,
        &BackfillOptions {
            since_ms: Some(tomorrow),
            ..options
        },
        &mut |_| {},
    )
    .await
    .expect("since");
    assert_eq!((none.older, none.work_items), (5, 0), "{none:?}");
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
