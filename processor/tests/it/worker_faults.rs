//! Worker behaviour under slow loads, aborted loads and bad files, against the emulator's
//! SQS and S3 and a real PostgreSQL.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use processor::operations::redrive::{RedriveOptions, RedriveOutcome, redrive};
use processor::pipeline::Pipeline;
use processor::warehouse::evolution::SchemaPlan;
use processor::warehouse::postgres::PostgresWarehouse;
use processor::warehouse::{ItemSource, LoadReport, Warehouse, WarehouseError};
use processor::worker::{BatchSettings, Outcome, Worker};
use shared::catalog::{Catalog, Dataset, FileFormat};
use shared::envelope::{MessageSizeLimit, WorkItem};
use shared::queue::REASON_ATTRIBUTE;
use shared::queue::{SqsQueue, WorkQueue};
use test_support::EXAMPLE_CATALOG as CATALOG;
use test_support::{
    TestSchemas, clients, count, create_bucket, create_queue, pg_client, postgres_url, queue_depth,
    upload_file,
};

use crate::support::platform::{ready_postgres, s3_pipeline};
use crate::support::workers;

/// A real warehouse whose loads start late, to make them outlast the visibility timeout,
/// and whose next `finish_failures` claim endings fail as a lost connection would.
#[derive(Debug)]
struct Slow {
    inner: PostgresWarehouse,
    delay: Duration,
    finish_failures: AtomicU32,
    /// Loads panic after the delay instead (a bug under the load).
    panics: bool,
}

#[async_trait]
impl Warehouse for Slow {
    async fn ping(&self) -> Result<(), WarehouseError> {
        self.inner.ping().await
    }
    async fn ensure_platform_tables(&self) -> Result<(), WarehouseError> {
        self.inner.ensure_platform_tables().await
    }
    async fn ensure_target(
        &self,
        dataset: &Dataset,
        schema: &SchemaRef,
    ) -> Result<SchemaPlan, WarehouseError> {
        self.inner.ensure_target(dataset, schema).await
    }
    async fn plan_target(
        &self,
        dataset: &Dataset,
        schema: &SchemaRef,
    ) -> Result<SchemaPlan, WarehouseError> {
        self.inner.plan_target(dataset, schema).await
    }
    async fn load(
        &self,
        dataset: &Dataset,
        schema: &SchemaRef,
        items: Vec<ItemSource>,
    ) -> Result<LoadReport, WarehouseError> {
        tokio::time::sleep(self.delay).await;
        assert!(!self.panics, "the warehouse panics under the load");
        self.inner.load(dataset, schema, items).await
    }
    async fn activity(
        &self,
        query: &processor::warehouse::activity::ActivityQuery,
    ) -> Result<Vec<processor::warehouse::activity::DatasetActivity>, WarehouseError> {
        self.inner.activity(query).await
    }
    async fn trace_file(
        &self,
        keys: &[String],
        file_id: &str,
    ) -> Result<
        (
            Vec<processor::warehouse::load_trace::LedgerEntry>,
            Option<processor::warehouse::load_trace::FileLoadRow>,
        ),
        WarehouseError,
    > {
        self.inner.trace_file(keys, file_id).await
    }
    async fn find_rejects(
        &self,
        query: &processor::warehouse::rejects::RejectQuery,
    ) -> Result<Vec<processor::warehouse::rejects::FoundReject>, WarehouseError> {
        self.inner.find_rejects(query).await
    }
    async fn prune(
        &self,
        request: &processor::warehouse::retention::PruneRequest,
    ) -> Result<processor::warehouse::retention::PruneReport, WarehouseError> {
        self.inner.prune(request).await
    }
    async fn claim_file_completion(
        &self,
        file_id: &str,
        claimant: &str,
    ) -> Result<processor::warehouse::files::Claim, WarehouseError> {
        self.inner.claim_file_completion(file_id, claimant).await
    }
    async fn finish_file_claim(
        &self,
        completion: &processor::warehouse::files::FileCompletion,
        published: bool,
    ) -> Result<(), WarehouseError> {
        let fail = self
            .finish_failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if fail {
            return Err(WarehouseError::Connect {
                url: "postgres://warehouse".into(),
                source: "connection reset by peer".into(),
                retryable: true,
            });
        }
        self.inner.finish_file_claim(completion, published).await
    }
}

/// The pipeline of the example catalog, with `order_items` given a reject limit.
/// `reject_limit` is the setting's TOML value (`3`, `"20%"`).
async fn pipeline(catalog_text: &str, reject_limit: Option<&str>) -> Arc<Pipeline> {
    let mut text = catalog_text.to_owned();
    if let Some(limit) = reject_limit {
        text = text.replace(
            "key = [\"order_id\", \"line_number\"]",
            &format!("key = [\"order_id\", \"line_number\"]\nreject_limit = {limit}"),
        );
    }
    s3_pipeline(Arc::new(Catalog::from_toml(&text, "test").expect("valid"))).await
}

struct Fixture {
    clients: shared::aws::AwsClients,
    queue: Arc<SqsQueue>,
    queue_url: String,
    dead_letter: Arc<SqsQueue>,
    pipeline: Arc<Pipeline>,
    /// The catalog as the fixture's pipeline was built from it, retargeted to its schemas.
    catalog_text: String,
    bucket: String,
    sales: String,
    events: String,
    platform: String,
}

impl Fixture {
    async fn new(reject_limit: Option<&str>) -> Self {
        let clients = clients().await;
        let schemas = TestSchemas::new();
        let catalog_text = schemas.retarget(CATALOG);
        let pipeline = pipeline(&catalog_text, reject_limit).await;
        let _catalog = pipeline.catalog();
        ready_postgres(&pipeline, &schemas.platform).await;
        let queue_url = create_queue(&clients.sqs, &[]).await;
        let dlq_url = create_queue(&clients.sqs, &[]).await;
        let bucket = create_bucket(&clients.s3, "landing").await;
        Self {
            queue: Arc::new(SqsQueue::new(
                clients.sqs.clone(),
                &queue_url,
                MessageSizeLimit::default(),
            )),
            dead_letter: Arc::new(SqsQueue::new(
                clients.sqs.clone(),
                &dlq_url,
                MessageSizeLimit::default(),
            )),
            clients,
            queue_url,
            pipeline,
            catalog_text,
            bucket,
            sales: schemas.sales,
            events: schemas.events,
            platform: schemas.platform,
        }
    }

    async fn upload_items_csv(&self, key: &str, rows: usize, bad_every: Option<usize>) -> WorkItem {
        let mut csv = String::from("order_id,line_number,product_sku,quantity,unit_price\n");
        for i in 0..rows {
            let quantity = if bad_every.is_some_and(|n| i % n == 0) {
                "x".to_owned()
            } else {
                (i % 5 + 1).to_string()
            };
            csv.push_str(&format!(
                "{},{},SKU-{},{},{}.25\n",
                i / 4,
                i % 4,
                i % 97,
                quantity,
                i % 50
            ));
        }
        upload_file(
            &self.clients.s3,
            &self.bucket,
            key,
            csv.into_bytes(),
            "order_items",
            FileFormat::Csv,
        )
        .await
    }

    fn worker(&self, warehouse: Arc<dyn Warehouse>, visibility: Duration) -> Worker {
        self.worker_with(Arc::clone(&self.pipeline), warehouse, visibility)
    }

    fn worker_with(
        &self,
        pipeline: Arc<Pipeline>,
        warehouse: Arc<dyn Warehouse>,
        visibility: Duration,
    ) -> Worker {
        Worker {
            dead_letter: Some(self.dead_letter.clone()),
            ..workers::worker(self.queue.clone(), pipeline, warehouse, visibility)
        }
    }

    /// Sends `item` to the work queue.
    async fn send(&self, item: &WorkItem) {
        let body = item.to_json(MessageSizeLimit::default()).expect("json");
        assert!(self.queue.send(&[body.into()]).await.all_succeeded());
    }

    /// Receives the one message the test sent, hidden for `visibility`.
    async fn receive_one(&self, visibility: Duration) -> shared::queue::ReceivedMessage {
        self.queue
            .receive(1, Duration::from_secs(5), visibility)
            .await
            .expect("receive")
            .pop()
            .expect("one message")
    }

    async fn count(&self, sql: &str) -> i64 {
        count(&pg_client().await, sql).await
    }
}

#[tokio::test]
async fn the_heartbeat_keeps_a_slow_load_from_being_delivered_twice() {
    let fixture = Fixture::new(None).await;
    let item = fixture
        .upload_items_csv("landing/order_items/slow.csv", 40, None)
        .await;
    fixture.send(&item).await;

    let visibility = Duration::from_secs(2);
    let slow = Slow {
        inner: PostgresWarehouse::connect(&postgres_url(), &fixture.platform)
            .await
            .expect("connect"),
        delay: Duration::from_secs(5),
        finish_failures: AtomicU32::new(0),
        panics: false,
    };
    let worker = fixture.worker(Arc::new(slow), visibility);
    let message = fixture.receive_one(visibility).await;
    let handling = tokio::spawn(async move { worker.handle(&message).await });

    // A second consumer polls for the whole load, well past the 2 s visibility timeout.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < deadline {
        let stolen = fixture
            .queue
            .receive(1, Duration::from_secs(1), Duration::from_secs(30))
            .await
            .expect("receive");
        assert!(
            stolen.is_empty(),
            "the message was delivered again while it was being loaded"
        );
    }
    let outcome = handling.await.expect("handled");
    assert!(
        matches!(
            outcome,
            Outcome::Done(LoadReport {
                items_loaded: 1,
                ..
            })
        ),
        "{outcome:?}"
    );
    assert_eq!(
        fixture
            .count(&format!(
                "SELECT count(*) FROM {}.order_items",
                fixture.sales
            ))
            .await,
        40
    );
    assert_eq!(
        queue_depth(&fixture.clients.sqs, &fixture.queue_url).await,
        (0, 0)
    );
}

/// How a worker's task ends in `a_worker_that_dies_mid_load_stops_its_heartbeat`.
#[derive(Debug, Clone, Copy)]
enum Death {
    Cancelled,
    Panicked,
}

/// A worker that dies mid-load — its task cancelled, or a panic under the load — stops
/// its message's heartbeat with it: the message comes back after one visibility timeout
/// instead of staying hidden until the process exits.
#[tokio::test]
async fn a_worker_that_dies_mid_load_stops_its_heartbeat() {
    let fixture = Fixture::new(None).await;
    let visibility = Duration::from_secs(2);
    for death in [Death::Cancelled, Death::Panicked] {
        let item = fixture
            .upload_items_csv(&format!("landing/order_items/{death:?}.csv"), 10, None)
            .await;
        fixture.send(&item).await;
        let warehouse = Arc::new(Slow {
            inner: PostgresWarehouse::connect(&postgres_url(), &fixture.platform)
                .await
                .expect("connect"),
            delay: Duration::from_secs(4),
            finish_failures: AtomicU32::new(0),
            panics: matches!(death, Death::Panicked),
        });
        let worker = fixture.worker(warehouse, visibility);
        let message = fixture.receive_one(visibility).await;
        let handling = tokio::spawn(async move { worker.handle(&message).await });
        // Past the receive's own visibility: only the heartbeat keeps the message hidden.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let hidden = fixture
            .queue
            .receive(1, Duration::ZERO, visibility)
            .await
            .expect("receive");
        assert!(hidden.is_empty(), "{death:?}: the heartbeat kept it hidden");
        if matches!(death, Death::Cancelled) {
            handling.abort();
        }
        let ended = handling.await.expect_err("the worker died");
        assert!(
            ended.is_cancelled() || ended.is_panic(),
            "{death:?}: {ended}"
        );
        let again = test_support::eventually(
            "the message back after the worker died",
            Duration::from_secs(15),
            || async {
                fixture
                    .queue
                    .receive(1, Duration::from_secs(1), Duration::from_secs(30))
                    .await
                    .ok()?
                    .pop()
            },
        )
        .await;
        assert_eq!(again.receive_count, 2, "{death:?}");
        let deleted = fixture.queue.delete(&[again.receipt_handle]).await;
        assert!(deleted.all_succeeded());
    }
}

#[tokio::test]
async fn a_load_aborted_before_commit_leaves_nothing_and_the_redelivery_loads_once() {
    let fixture = Fixture::new(None).await;
    let rows = 200_000;
    let item = fixture
        .upload_items_csv("landing/order_items/big.csv", rows, None)
        .await;
    fixture.send(&item).await;
    let warehouse: Arc<dyn Warehouse> = Arc::new(
        PostgresWarehouse::connect(&postgres_url(), &fixture.platform)
            .await
            .expect("connect"),
    );
    let worker = Arc::new(fixture.worker(Arc::clone(&warehouse), Duration::from_secs(30)));
    let message = fixture.receive_one(Duration::from_secs(3)).await;

    // Abort the worker while its COPY is running.
    let running = Arc::clone(&worker);
    let first = message.clone();
    let handling = tokio::spawn(async move { running.handle(&first).await });
    let client = pg_client().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let copying: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE 'COPY %'",
                &[],
            )
            .await
            .expect("activity")
            .get(0);
        if copying > 0 {
            break;
        }
        assert!(
            !handling.is_finished(),
            "the load finished before it could be aborted"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "the COPY never started"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    handling.abort();
    assert!(
        handling.await.is_err_and(|e| e.is_cancelled()),
        "aborted mid-load"
    );
    let ledger = format!("SELECT count(*) FROM {}.load_ledger", fixture.platform);
    let target = format!("SELECT count(*) FROM {}.order_items", fixture.sales);
    // Give the server a moment to notice the dropped transaction, then look.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        (fixture.count(&ledger).await, fixture.count(&target).await),
        (0, 0)
    );

    // The message comes back after its visibility timeout; a new worker loads it once.
    let again = test_support::eventually("the redelivery", Duration::from_secs(30), || async {
        fixture
            .queue
            .receive(1, Duration::from_secs(1), Duration::from_secs(60))
            .await
            .ok()?
            .pop()
    })
    .await;
    assert_eq!(again.receive_count, 2);
    let fresh: Arc<dyn Warehouse> = Arc::new(
        PostgresWarehouse::connect(&postgres_url(), &fixture.platform)
            .await
            .expect("connect"),
    );
    let outcome = fixture
        .worker(fresh, Duration::from_secs(30))
        .handle(&again)
        .await;
    assert!(
        matches!(
            outcome,
            Outcome::Done(LoadReport {
                items_loaded: 1,
                ..
            })
        ),
        "{outcome:?}"
    );
    assert_eq!(fixture.count(&target).await, rows as i64);
    assert_eq!(fixture.count(&ledger).await, 1);
}

#[tokio::test]
async fn a_file_over_its_reject_limit_goes_to_the_dlq_with_the_reasons() {
    let fixture = Fixture::new(Some("3")).await;
    let item = fixture
        .upload_items_csv("landing/order_items/dirty.csv", 40, Some(5))
        .await;
    fixture.send(&item).await;
    let warehouse: Arc<dyn Warehouse> = Arc::new(
        PostgresWarehouse::connect(&postgres_url(), &fixture.platform)
            .await
            .expect("connect"),
    );
    let message = fixture.receive_one(Duration::from_secs(30)).await;
    let outcome = fixture
        .worker(warehouse, Duration::from_secs(30))
        .handle(&message)
        .await;
    let Outcome::DeadLettered { reason } = outcome else {
        panic!("expected dead-lettering, got {outcome:?}");
    };
    assert!(
        reason.ends_with(
            "8 rows rejected, over the dataset's limit of 3 rows; most common: column quantity (8)"
        ),
        "{reason}"
    );
    assert_eq!(
        fixture
            .count(&format!(
                "SELECT count(*) FROM {}.order_items",
                fixture.sales
            ))
            .await,
        0
    );
    assert_eq!(
        queue_depth(&fixture.clients.sqs, &fixture.queue_url).await,
        (0, 0)
    );
    let dead = fixture
        .dead_letter
        .receive(1, Duration::from_secs(2), Duration::from_secs(30))
        .await
        .expect("dlq");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attributes.get(REASON_ATTRIBUTE), Some(&reason));
    assert_eq!(
        dead[0].attributes.get("ingest_dataset").map(String::as_str),
        Some("order_items")
    );
}

#[tokio::test]
async fn a_share_limit_loads_a_file_within_it_and_dead_letters_one_over_it() {
    let fixture = Fixture::new(Some("\"20%\"")).await;
    let warehouse: Arc<dyn Warehouse> = Arc::new(
        PostgresWarehouse::connect(&postgres_url(), &fixture.platform)
            .await
            .expect("connect"),
    );
    let worker = fixture.worker(warehouse, Duration::from_secs(30));
    // 8 bad rows of 40 is 20 %: within the limit, though over any count under 8.
    let within = fixture
        .upload_items_csv("landing/order_items/within.csv", 40, Some(5))
        .await;
    fixture.send(&within).await;
    let outcome = worker
        .handle(&fixture.receive_one(Duration::from_secs(30)).await)
        .await;
    assert!(
        matches!(&outcome, Outcome::Done(report) if report.rows_staged == 32 && report.rows_rejected == 8),
        "{outcome:?}"
    );
    // 10 bad rows of 40 is 25 %.
    let over = fixture
        .upload_items_csv("landing/order_items/over.csv", 40, Some(4))
        .await;
    fixture.send(&over).await;
    let outcome = worker
        .handle(&fixture.receive_one(Duration::from_secs(30)).await)
        .await;
    let Outcome::DeadLettered { reason } = outcome else {
        panic!("expected dead-lettering, got {outcome:?}");
    };
    assert!(
        reason.ends_with(
            "10 rows rejected of 40 read, over the dataset's limit of 20%; most common: column quantity (10)"
        ),
        "{reason}"
    );
    let items = format!("SELECT count(*) FROM {}.order_items", fixture.sales);
    assert_eq!(fixture.count(&items).await, 32);
    let rejects = format!("SELECT count(*) FROM {}.rejects", fixture.platform);
    assert_eq!(fixture.count(&rejects).await, 8);
}

#[tokio::test]
async fn a_redriven_item_loads_exactly_once_after_its_cause_is_fixed() {
    let fixture = Fixture::new(Some("3")).await;
    let item = fixture
        .upload_items_csv("landing/order_items/dirty again.csv", 40, Some(5))
        .await;
    let body = item.to_json(MessageSizeLimit::default()).expect("json");
    assert!(
        fixture
            .queue
            .send(&[body.clone().into()])
            .await
            .all_succeeded()
    );
    let warehouse: Arc<dyn Warehouse> = Arc::new(
        PostgresWarehouse::connect(&postgres_url(), &fixture.platform)
            .await
            .expect("connect"),
    );

    let strict = fixture.worker(Arc::clone(&warehouse), Duration::from_secs(30));
    let outcome = strict
        .handle(&fixture.receive_one(Duration::from_secs(30)).await)
        .await;
    assert!(
        matches!(outcome, Outcome::DeadLettered { .. }),
        "{outcome:?}"
    );

    // The operator raises the limit (a catalog change and a restart), then redrives.
    let fixed = fixture.worker_with(
        pipeline(&fixture.catalog_text, Some("10")).await,
        warehouse,
        Duration::from_secs(30),
    );
    let outcome = redrive(
        &fixture.dead_letter,
        &fixture.queue,
        RedriveOptions::default(),
        &mut |_, _| {},
    )
    .await
    .expect("redrive");
    assert_eq!(
        outcome,
        RedriveOutcome::Moved {
            moved: 1,
            failed: 0,
            held: 0
        }
    );
    let outcome = fixed
        .handle(&fixture.receive_one(Duration::from_secs(30)).await)
        .await;
    let Outcome::Done(report) = outcome else {
        panic!("expected a load, got {outcome:?}");
    };
    assert_eq!(
        (
            report.items_loaded,
            report.rows_staged,
            report.rows_rejected
        ),
        (1, 32, 8)
    );

    // A second redrive of the same item (say the first delete was lost) loads nothing more.
    assert!(
        fixture
            .dead_letter
            .send(&[body.into()])
            .await
            .all_succeeded()
    );
    redrive(
        &fixture.dead_letter,
        &fixture.queue,
        RedriveOptions::default(),
        &mut |_, _| {},
    )
    .await
    .expect("redrive again");
    let outcome = fixed
        .handle(&fixture.receive_one(Duration::from_secs(30)).await)
        .await;
    let Outcome::Done(report) = outcome else {
        panic!("expected a skip, got {outcome:?}");
    };
    assert_eq!((report.items_loaded, report.items_skipped), (0, 1));

    let sales = format!("SELECT count(*) FROM {}.order_items", fixture.sales);
    assert_eq!(fixture.count(&sales).await, 32);
    let rejects = format!("SELECT count(*) FROM {}.rejects", fixture.platform);
    assert_eq!(fixture.count(&rejects).await, 8);
    let ledger = format!("SELECT count(*) FROM {}.load_ledger", fixture.platform);
    assert_eq!(fixture.count(&ledger).await, 1);
    assert_eq!(
        queue_depth(&fixture.clients.sqs, &fixture.queue_url).await,
        (0, 0)
    );
}

#[tokio::test]
async fn an_item_already_in_the_ledger_is_skipped_without_reading_its_file() {
    let fixture = Fixture::new(None).await;
    let key = "landing/order_items/once.csv";
    let item = fixture.upload_items_csv(key, 12, None).await;
    let body = item.to_json(MessageSizeLimit::default()).expect("json");
    let warehouse: Arc<dyn Warehouse> = Arc::new(
        PostgresWarehouse::connect(&postgres_url(), &fixture.platform)
            .await
            .expect("connect"),
    );
    let worker = fixture.worker(warehouse, Duration::from_secs(30));

    assert!(
        fixture
            .queue
            .send(&[body.clone().into()])
            .await
            .all_succeeded()
    );
    let first = fixture.receive_one(Duration::from_secs(30)).await;
    assert!(matches!(
        worker.handle(&first).await,
        Outcome::Done(LoadReport {
            items_loaded: 1,
            ..
        })
    ));

    // The object is gone; a duplicate delivery must still succeed, from the ledger alone.
    fixture
        .clients
        .s3
        .delete_object()
        .bucket(&fixture.bucket)
        .key(key)
        .send()
        .await
        .expect("delete object");
    assert!(fixture.queue.send(&[body.into()]).await.all_succeeded());
    let second = fixture.receive_one(Duration::from_secs(30)).await;
    let outcome = worker.handle(&second).await;
    assert!(
        matches!(
            outcome,
            Outcome::Done(LoadReport {
                items_loaded: 0,
                items_skipped: 1,
                rows_staged: 0,
                ..
            })
        ),
        "{outcome:?}"
    );
    assert_eq!(
        fixture
            .count(&format!(
                "SELECT count(*) FROM {}.order_items",
                fixture.sales
            ))
            .await,
        12
    );
    assert_eq!(
        queue_depth(&fixture.clients.sqs, &fixture.queue_url).await,
        (0, 0)
    );
}

#[tokio::test]
async fn a_retry_takes_over_the_claim_its_own_earlier_attempt_left() {
    // The load commits and the file is claimed for its announcement, then the warehouse
    // connection is lost before the claim is ended. The message's retry must finish the
    // announcement at once: waiting for the claim to time out (minutes) would spend the
    // message's receives and SQS would move a loaded file to the DLQ.
    let fixture = Fixture::new(None).await;
    let item = fixture
        .upload_items_csv("landing/order_items/claimed.csv", 5, None)
        .await;
    let body = item.to_json(MessageSizeLimit::default()).expect("json");
    let warehouse = Arc::new(Slow {
        inner: PostgresWarehouse::connect(&postgres_url(), &fixture.platform)
            .await
            .expect("connect"),
        delay: Duration::ZERO,
        finish_failures: AtomicU32::new(1),
        panics: false,
    });
    let worker = fixture.worker(warehouse.clone(), Duration::from_secs(30));
    assert!(fixture.queue.send(&[body.into()]).await.all_succeeded());
    let first = fixture.receive_one(Duration::from_secs(30)).await;
    let outcome = worker.handle(&first).await;
    assert!(outcome.is_released(), "{outcome:?}");
    assert_eq!(warehouse.finish_failures.load(Ordering::SeqCst), 0);

    // Another message for the same file (a duplicate delivery) must still wait.
    let claim = warehouse
        .claim_file_completion(&item_file_id(&item), "a duplicate message")
        .await
        .expect("claim");
    assert_eq!(claim, processor::warehouse::files::Claim::ClaimedElsewhere);

    let retry = fixture.receive_one(Duration::from_secs(30)).await;
    assert_eq!(retry.message_id, first.message_id);
    let outcome = worker.handle(&retry).await;
    assert!(
        matches!(
            outcome,
            Outcome::Done(LoadReport {
                items_loaded: 0,
                items_skipped: 1,
                ..
            })
        ),
        "{outcome:?}"
    );
    assert_eq!(
        warehouse
            .claim_file_completion(&item_file_id(&item), "a duplicate message")
            .await
            .expect("claim"),
        processor::warehouse::files::Claim::Published
    );
    assert_eq!(
        queue_depth(&fixture.clients.sqs, &fixture.queue_url).await,
        (0, 0)
    );
}

fn item_file_id(item: &WorkItem) -> String {
    let WorkItem::File(file) = item else {
        unreachable!("a file item")
    };
    file.file_id()
}

/// A stream work item `i` of two order status events (sequence numbers 2i+1 and 2i+2).
fn events_item(i: u64) -> shared::queue::OutgoingMessage {
    use shared::envelope::{RecordsItem, RecordsPayload, StreamPosition, StreamRecord};
    let position = |n: u64| StreamPosition {
        sequence_number: n.to_string(),
        sub_sequence_number: 0,
    };
    let records = (0..2u64)
        .map(|j| StreamRecord {
            position: position(i * 2 + j + 1),
            arrival_ms: None,
            data: serde_json::json!({
                "event_type": "order_status_changed", "event_id": format!("e{i}-{j}"),
                "order_id": i, "status": "shipped", "occurred_at": "2024-06-01T00:00:00Z"
            }),
        })
        .collect();
    WorkItem::Records(RecordsItem {
        dataset: "order_status_events".into(),
        stream: "order-events".into(),
        shard_id: "shardId-000000000000".into(),
        first: position(i * 2 + 1),
        last: position(i * 2 + 2),
        payload: RecordsPayload::Inline(records),
        created_at_ms: None,
        replay: None,
    })
    .to_json(MessageSizeLimit::default())
    .expect("json")
    .into()
}

/// Runs a worker until `rows` events are loaded, then stops it.
async fn run_until_events(fixture: &Fixture, rows: i64) {
    let target = format!("SELECT count(*) FROM {}.order_status", fixture.events);
    run_until(fixture, &target, rows).await;
}

/// Runs a worker until the count `sql` reads is `expected`, then stops it.
async fn run_until(fixture: &Fixture, sql: &str, expected: i64) {
    let warehouse: Arc<dyn Warehouse> = Arc::new(
        PostgresWarehouse::connect(&postgres_url(), &fixture.platform)
            .await
            .expect("connect"),
    );
    let worker = fixture.worker(warehouse, Duration::from_secs(30));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(async move { worker.run(stopped).await });
    test_support::eventually("the rows loaded", Duration::from_secs(60), || async {
        (fixture.count(sql).await == expected).then_some(())
    })
    .await;
    stop.send(true).expect("worker running");
    tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("stops")
        .expect("task");
}

#[tokio::test]
async fn a_poison_item_in_a_micro_batch_does_not_hold_the_others_back() {
    use shared::envelope::{ClaimCheck, RecordsItem, RecordsPayload, StreamPosition};
    let fixture = Fixture::new(None).await;
    let mut items: Vec<shared::queue::OutgoingMessage> = (0..5u64).map(events_item).collect();
    // A claim check pointing to an object that does not exist: a permanent failure for
    // this item only.
    let poison = WorkItem::Records(RecordsItem {
        dataset: "order_status_events".into(),
        stream: "order-events".into(),
        shard_id: "shardId-000000000001".into(),
        first: StreamPosition {
            sequence_number: "1".into(),
            sub_sequence_number: 0,
        },
        last: StreamPosition {
            sequence_number: "9".into(),
            sub_sequence_number: 0,
        },
        payload: RecordsPayload::S3(ClaimCheck {
            bucket: "b".into(),
            key: "k".into(),
            record_count: 9,
            size: 1,
        }),
        created_at_ms: None,
        replay: None,
    });
    items.insert(
        2,
        poison
            .to_json(MessageSizeLimit::default())
            .expect("json")
            .into(),
    );
    assert!(fixture.queue.send(&items).await.all_succeeded());

    run_until_events(&fixture, 10).await;
    assert_eq!(
        fixture
            .count(&format!(
                "SELECT count(*) FROM {}.load_ledger",
                fixture.platform
            ))
            .await,
        5
    );
    let dead = test_support::eventually(
        "the poison item in the DLQ",
        Duration::from_secs(10),
        || async {
            fixture
                .dead_letter
                .receive(1, Duration::from_secs(1), Duration::from_secs(30))
                .await
                .ok()?
                .pop()
        },
    )
    .await;
    assert!(
        dead.attributes
            .get(REASON_ATTRIBUTE)
            .is_some_and(|r| r.contains("cannot read s3://b/k")),
        "{dead:?}"
    );
    assert_eq!(
        queue_depth(&fixture.clients.sqs, &fixture.queue_url).await,
        (0, 0)
    );
}

#[tokio::test]
async fn a_burst_of_stream_items_is_loaded_in_a_few_transactions() {
    let fixture = Fixture::new(None).await;
    let items: Vec<shared::queue::OutgoingMessage> = (0..30u64).map(events_item).collect();
    assert!(fixture.queue.send(&items).await.all_succeeded());
    run_until_events(&fixture, 60).await;

    let ledger = format!("SELECT count(*) FROM {}.load_ledger", fixture.platform);
    // now() is the transaction's start time: one distinct value per load transaction.
    let transactions = format!(
        "SELECT count(DISTINCT loaded_at) FROM {}.load_ledger",
        fixture.platform
    );
    assert_eq!(fixture.count(&ledger).await, 30);
    let loads = fixture.count(&transactions).await;
    assert!(
        (1..=6).contains(&loads),
        "30 small items took {loads} load transactions"
    );
    assert_eq!(
        queue_depth(&fixture.clients.sqs, &fixture.queue_url).await,
        (0, 0)
    );
}

#[tokio::test]
async fn a_burst_of_small_files_is_loaded_in_a_few_transactions_and_each_completes() {
    let fixture = Fixture::new(None).await;
    let mut messages = Vec::new();
    for n in 0..20 {
        let key = format!("landing/order_items/small-{n}.csv");
        let item = fixture.upload_items_csv(&key, 8, None).await;
        assert!(BatchSettings::default().small_file_bytes >= item_size(&item));
        messages.push(
            item.to_json(MessageSizeLimit::default())
                .expect("json")
                .into(),
        );
    }
    assert!(fixture.queue.send(&messages).await.all_succeeded());
    let platform = &fixture.platform;
    let ledger = format!("SELECT count(*) FROM {platform}.load_ledger");
    run_until(&fixture, &ledger, 20).await;

    // Every file holds the same eight order lines: merged on their key, eight rows.
    let items = format!("SELECT count(*) FROM {}.order_items", fixture.sales);
    assert_eq!(fixture.count(&items).await, 8);
    // now() is the transaction's start time: one distinct value per load transaction.
    let transactions = format!("SELECT count(DISTINCT loaded_at) FROM {platform}.load_ledger");
    let loads = fixture.count(&transactions).await;
    assert!(
        (1..=6).contains(&loads),
        "20 small files took {loads} load transactions"
    );
    // Each file of a batch is complete and announced (recorded as published: the test
    // worker has no event bus).
    let published = format!(
        "SELECT count(*) FROM {platform}.file_loads WHERE completed_at IS NOT NULL AND published_at IS NOT NULL"
    );
    assert_eq!(fixture.count(&published).await, 20);
    assert_eq!(
        queue_depth(&fixture.clients.sqs, &fixture.queue_url).await,
        (0, 0)
    );
}

fn item_size(item: &WorkItem) -> u64 {
    match item {
        WorkItem::File(file) => file.size,
        WorkItem::Records(_) => panic!("a file item"),
    }
}
