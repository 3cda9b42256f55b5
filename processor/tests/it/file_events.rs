//! `File Loaded` events against the emulator's EventBridge (a rule forwards the bus's
//! events to an SQS queue the test reads) and a real PostgreSQL: exactly one event per
//! file, even when two workers load its last two parts at the same moment; none again for
//! a duplicate delivery; and an event that could not be published is published later.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ingest_batch::events::CreatedObject;
use ingest_batch::plan::{FilePlanner, Planned};
use processor::pipeline::Pipeline;
use processor::warehouse::Warehouse;
use processor::warehouse::postgres::PostgresWarehouse;
use processor::worker::announce::FileEvents;
use processor::worker::{Outcome, Worker};
use shared::aws::load_sdk_config;
use shared::catalog::Catalog;
use shared::config::EventSettings;
use shared::envelope::{FileItem, MessageSizeLimit, WorkItem};
use shared::queue::{OutgoingMessage, ReceivedMessage, SqsQueue, WorkQueue};
use test_support::{
    TestSchemas, clients, create_bucket, create_queue, emulator_settings, postgres_url, unique_name,
};

use crate::support::platform::{new_queue, ready_postgres, s3_pipeline, s3_planner};
use crate::support::workers;

/// Rows per split file: enough for four or more 64 KiB parts.
const ROWS: usize = 5000;

const CATALOG: &str = r#"
[datasets.customers]
format = "csv"
target = "sales.customers"
key = ["customer_id"]
s3 = { prefix = "customers/" }
columns = [{ name = "customer_id", type = "int64", nullable = false }, { name = "name", type = "string" }]
"#;

fn csv_body(first: usize, rows: usize) -> Vec<u8> {
    let mut body = b"customer_id,name\n".to_vec();
    for id in first..first + rows {
        body.extend(
            format!(
                "{id},\"Customer {id}\nsecond line {}\"\n",
                "x".repeat(id % 50)
            )
            .bytes(),
        );
    }
    body.extend(b"not-a-number,bad row\n");
    body
}

struct Fixture {
    clients: shared::aws::AwsClients,
    bucket: String,
    queue: Arc<SqsQueue>,
    events_url: String,
    bus: String,
    pipeline: Arc<Pipeline>,
    platform: String,
    planner: FilePlanner,
}

impl Fixture {
    async fn new() -> Self {
        let clients = clients().await;
        let schemas = TestSchemas::new();
        let catalog =
            Arc::new(Catalog::from_toml(&schemas.retarget(CATALOG), "test").expect("catalog"));
        let sdk_config = load_sdk_config(&emulator_settings()).await;
        let pipeline = s3_pipeline(Arc::clone(&catalog)).await;
        ready_postgres(&pipeline, &schemas.platform).await;
        let bucket = create_bucket(&clients.s3, "events").await;

        // A bus whose rule forwards the platform's events to a queue the test reads.
        let eventbridge = aws_sdk_eventbridge::Client::new(&sdk_config);
        let bus = unique_name("ingest-bus");
        eventbridge
            .create_event_bus()
            .name(&bus)
            .send()
            .await
            .expect("bus");
        let events_url = create_queue(&clients.sqs, &[]).await;
        let events_arn = SqsQueue::new(
            clients.sqs.clone(),
            &events_url,
            MessageSizeLimit::default(),
        )
        .arn()
        .await
        .expect("arn");
        eventbridge
            .put_rule()
            .name("file-loaded")
            .event_bus_name(&bus)
            .event_pattern(r#"{"source": ["redshift-ingest"], "detail-type": ["File Loaded"]}"#)
            .send()
            .await
            .expect("rule");
        eventbridge
            .put_targets()
            .rule("file-loaded")
            .event_bus_name(&bus)
            .targets(
                aws_sdk_eventbridge::types::Target::builder()
                    .id("queue")
                    .arn(events_arn)
                    .build()
                    .expect("target"),
            )
            .send()
            .await
            .expect("targets");

        let queue = new_queue(&clients).await;
        let planner = s3_planner(&clients, catalog, 64 * 1024);
        Self {
            clients,
            bucket,
            queue,
            events_url,
            bus,
            pipeline,
            platform: schemas.platform,
            planner,
        }
    }

    async fn worker(&self, bus: &str) -> Worker {
        let sdk_config = load_sdk_config(&emulator_settings()).await;
        let warehouse = PostgresWarehouse::connect(&postgres_url(), &self.platform)
            .await
            .expect("connect");
        let mut worker = workers::worker(
            Arc::clone(&self.queue) as Arc<dyn WorkQueue>,
            Arc::clone(&self.pipeline),
            Arc::new(warehouse),
            Duration::from_secs(60),
        );
        worker.settings.max_retry_backoff = Duration::from_secs(1);
        worker.announcer = Some(Arc::new(FileEvents::new(
            aws_sdk_eventbridge::Client::new(&sdk_config),
            EventSettings {
                bus_name: bus.to_owned(),
                source: "redshift-ingest".to_owned(),
            },
        )));
        worker
    }

    /// Uploads a file and returns its planned work items.
    async fn upload(&self, key: &str, body: Vec<u8>) -> Vec<FileItem> {
        let put = self
            .clients
            .s3
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(body.clone().into())
            .send()
            .await
            .expect("put");
        let object = CreatedObject {
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            size: body.len() as u64,
            etag: shared::envelope::normalize_etag(put.e_tag().expect("etag")),
            version_id: None,
            event_time_ms: None,
            undecoded_key: None,
        };
        match self.planner.plan(&object).await.expect("planned") {
            Planned::Items(items) => items,
            Planned::Skipped(skipped) => panic!("{key}: {skipped:?}"),
        }
    }

    /// Puts items on the work queue and receives them back, one message each. A message
    /// released by an earlier round may come back meanwhile: it is made visible again at
    /// once, for `drain`.
    async fn deliver(&self, items: &[FileItem]) -> Vec<ReceivedMessage> {
        let messages: Vec<OutgoingMessage> = items
            .iter()
            .map(|item| {
                OutgoingMessage::from(
                    WorkItem::File(item.clone())
                        .to_json(MessageSizeLimit::default())
                        .expect("fits"),
                )
            })
            .collect();
        assert!(self.queue.send(&messages).await.all_succeeded());
        let sent: Vec<&str> = messages.iter().map(|m| m.body.as_str()).collect();
        let mut received = Vec::new();
        while received.len() < items.len() {
            let batch = self
                .queue
                .receive(10, Duration::from_secs(1), Duration::from_secs(60))
                .await
                .expect("receive");
            for message in batch {
                if sent.contains(&message.body.as_str()) {
                    received.push(message);
                } else {
                    self.queue
                        .extend_visibility(&message.receipt_handle, Duration::ZERO)
                        .await
                        .expect("release an earlier round's message");
                }
            }
        }
        assert_eq!(received.len(), items.len());
        received
    }

    /// Handles what is left on the work queue (released messages come back after their
    /// backoff) until it stays empty.
    async fn drain(&self, worker: &Worker) {
        let mut empty_polls = 0;
        while empty_polls < 3 {
            let messages = self
                .queue
                .receive(10, Duration::from_secs(1), Duration::from_secs(60))
                .await
                .expect("receive");
            if messages.is_empty() {
                empty_polls += 1;
            }
            for message in &messages {
                worker.handle(message).await;
            }
        }
    }

    /// Every event on the events queue, by key, waiting until none has arrived for 2 s.
    async fn events(&self) -> BTreeMap<String, Vec<serde_json::Value>> {
        let mut events: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
        let mut empty_polls = 0;
        while empty_polls < 2 {
            let output = self
                .clients
                .sqs
                .receive_message()
                .queue_url(&self.events_url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await
                .expect("receive events");
            if output.messages().is_empty() {
                empty_polls += 1;
            }
            for message in output.messages() {
                let event: serde_json::Value =
                    serde_json::from_str(message.body().expect("body")).expect("event json");
                let detail = event["detail"].clone();
                assert_eq!(event["detail-type"], "File Loaded");
                let key = detail["key"].as_str().expect("key").to_owned();
                events.entry(key).or_default().push(detail);
                self.clients
                    .sqs
                    .delete_message()
                    .queue_url(&self.events_url)
                    .receipt_handle(message.receipt_handle().expect("handle"))
                    .send()
                    .await
                    .expect("delete event");
            }
        }
        events
    }
}

#[tokio::test]
async fn one_event_per_file_even_when_the_last_parts_finish_together() {
    let fixture = Fixture::new().await;
    let first = fixture.worker(&fixture.bus).await;
    let second = fixture.worker(&fixture.bus).await;

    let mut expected = BTreeMap::new();
    for round in 0..4 {
        let key = format!("customers/batch {round}.csv");
        let items = fixture.upload(&key, csv_body(round * 10_000, ROWS)).await;
        assert!(items.len() >= 3, "{key}: {} parts", items.len());
        expected.insert(key, items.len());
        let messages = fixture.deliver(&items).await;
        let (last_two, earlier) = messages.split_at(2);
        for message in earlier {
            assert!(matches!(first.handle(message).await, Outcome::Done(_)));
        }
        // The last two parts on two workers at once: both may see the file complete.
        let (a, b) = tokio::join!(first.handle(&last_two[0]), second.handle(&last_two[1]));
        for outcome in [a, b] {
            assert!(
                matches!(outcome, Outcome::Done(_) | Outcome::Released { .. }),
                "{outcome:?}"
            );
        }
    }
    // A whole (unsplit) file announces itself as one part.
    let small = fixture.upload("customers/small.csv", csv_body(1, 3)).await;
    assert_eq!(small.len(), 1);
    expected.insert("customers/small.csv".to_owned(), 1);
    let messages = fixture.deliver(&small).await;
    assert!(matches!(first.handle(&messages[0]).await, Outcome::Done(_)));
    // Parts released because another worker was announcing their file come back.
    fixture.drain(&first).await;

    let events = fixture.events().await;
    assert_eq!(
        events.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    for (key, parts) in &expected {
        let list = &events[key];
        assert_eq!(list.len(), 1, "{key}: {list:?}");
        let detail = &list[0];
        assert_eq!(detail["parts"], *parts as i64, "{key}");
        let rows = if key.ends_with("small.csv") { 3 } else { ROWS };
        assert_eq!(detail["rows_loaded"], rows, "{key}");
        assert_eq!(
            detail["rows_rejected"], 1,
            "{key}: the bad row of the last part"
        );
        assert_eq!(detail["bucket"], fixture.bucket.as_str());
        assert!(
            detail["completion_id"]
                .as_str()
                .expect("id")
                .starts_with("load-")
        );
    }

    // A duplicate delivery of a part loads nothing and announces nothing again.
    let again = fixture
        .upload("customers/batch 0.csv", csv_body(0, ROWS))
        .await;
    let messages = fixture.deliver(&again[..1]).await;
    match first.handle(&messages[0]).await {
        Outcome::Done(report) => assert_eq!(report.items_skipped, 1),
        other => panic!("{other:?}"),
    }
    assert!(fixture.events().await.is_empty(), "no second event");
}

#[tokio::test]
async fn an_event_that_could_not_be_published_is_published_on_the_retry() {
    let fixture = Fixture::new().await;
    let broken = fixture.worker("no-such-bus").await;
    let working = fixture.worker(&fixture.bus).await;
    let items = fixture.upload("customers/retry.csv", csv_body(1, 10)).await;
    let messages = fixture.deliver(&items).await;
    let outcome = broken.handle(&messages[0]).await;
    assert!(
        !matches!(outcome, Outcome::Done(_)),
        "the message is kept while its event is unpublished: {outcome:?}"
    );
    assert!(fixture.events().await.is_empty());
    // The redelivery skips the load (the ledger has it) and publishes the event.
    fixture.drain(&working).await;
    let events = fixture.events().await;
    assert_eq!(events["customers/retry.csv"].len(), 1, "{events:?}");
    assert_eq!(events["customers/retry.csv"][0]["rows_loaded"], 10);
}

#[tokio::test]
async fn of_many_concurrent_claims_on_a_completed_file_exactly_one_wins() {
    use processor::warehouse::files::Claim;
    let fixture = Fixture::new().await;
    let items = fixture
        .upload("customers/claimed.csv", csv_body(1, 5))
        .await;
    let item = WorkItem::File(items[0].clone());
    let (source, dataset, schema) = fixture.pipeline.item_source(&item).expect("source");
    let mut claimers = Vec::new();
    for _ in 0..8 {
        claimers.push(
            PostgresWarehouse::connect(&postgres_url(), &fixture.platform)
                .await
                .expect("connect"),
        );
    }
    claimers[0]
        .load(dataset, schema, vec![source])
        .await
        .expect("loaded");
    let file_id = items[0].file_id();
    for round in 0..10 {
        let file_id = &file_id;
        let claims =
            futures::future::join_all(claimers.iter().enumerate().map(|(i, w)| async move {
                w.claim_file_completion(file_id, &format!("message-{i}"))
                    .await
            }))
            .await;
        let won = claims
            .iter()
            .filter(|c| matches!(c, Ok(Claim::Claimed(_))))
            .count();
        let lost = claims
            .iter()
            .filter(|c| matches!(c, Ok(Claim::ClaimedElsewhere)))
            .count();
        assert_eq!((won, lost), (1, 7), "round {round}: {claims:?}");
        let winner = claims
            .into_iter()
            .find_map(|c| match c {
                Ok(Claim::Claimed(completion)) => Some(completion),
                _ => None,
            })
            .expect("a winner");
        // A stale holder (its claim timed out and was taken) cannot end the claim.
        let stale = processor::warehouse::files::FileCompletion {
            claim_token: "stale".into(),
            ..winner.clone()
        };
        claimers[1]
            .finish_file_claim(&stale, true)
            .await
            .expect("no-op");
        claimers[1]
            .finish_file_claim(&stale, false)
            .await
            .expect("no-op");
        assert_eq!(
            claimers[2]
                .claim_file_completion(file_id, "another message")
                .await
                .expect("claim"),
            Claim::ClaimedElsewhere
        );
        // Give it back (as a failed publication would) for the next round.
        claimers[0]
            .finish_file_claim(&winner, false)
            .await
            .expect("released");
    }
    let Claim::Claimed(last) = claimers[0]
        .claim_file_completion(&file_id, "message-0")
        .await
        .expect("claim")
    else {
        panic!("released claims can be claimed again");
    };
    claimers[0]
        .finish_file_claim(&last, true)
        .await
        .expect("published");
    assert_eq!(
        claimers[1]
            .claim_file_completion(&file_id, "another message")
            .await
            .expect("claim"),
        Claim::Published
    );
}
