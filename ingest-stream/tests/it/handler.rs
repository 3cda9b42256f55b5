//! The stream handler against the emulator's SQS and S3: valid records (plain, gzip,
//! KPL-aggregated) become work items with their positions, invalid ones land in
//! quarantine with reasons, an oversized one goes by claim check, and a send failure in
//! the middle of a batch names the record to retry from.

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use ingest_stream::handler::{IncomingRecord, S3Writer, StreamIngest};
use shared::catalog::Catalog;
use shared::config::S3Location;
use shared::envelope::{MessageSizeLimit, RecordsPayload, WorkItem};
use shared::queue::{
    DeleteReport, OutgoingMessage, QueueDepth, QueueError, ReceivedMessage, SendReport, SqsQueue,
    WorkQueue,
};
use shared::retry::EntryFailure;
use test_support::EXAMPLE_CATALOG as CATALOG;
use test_support::{clients, create_bucket, create_queue, get_object_bytes};

const KPL_FIXTURE: &str = include_str!("../fixtures/kpl/three-records.b64");

fn event(id: &str, order: i64, status: &str) -> Vec<u8> {
    format!(r#"{{"event_type":"order_status_changed","event_id":"{id}","order_id":{order},"status":"{status}","occurred_at":"2026-11-24T10:00:00Z"}}"#).into_bytes()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).expect("compress");
    encoder.finish().expect("finish")
}

fn record(sequence: u64, data: Vec<u8>) -> IncomingRecord {
    IncomingRecord {
        stream: "order-events".into(),
        shard_id: "shardId-000000000000".into(),
        sequence_number: format!("4959{sequence:040}"),
        arrival_ms: Some(1_795_514_400_000 + sequence as i64),
        data,
    }
}

struct Fixture {
    clients: shared::aws::AwsClients,
    bucket: String,
    queue: Arc<SqsQueue>,
}

impl Fixture {
    async fn new() -> Self {
        let clients = clients().await;
        let bucket = create_bucket(&clients.s3, "stream").await;
        let url = create_queue(&clients.sqs, &[]).await;
        let queue = Arc::new(SqsQueue::new(
            clients.sqs.clone(),
            &url,
            MessageSizeLimit::default(),
        ));
        Self {
            clients,
            bucket,
            queue,
        }
    }

    fn ingest(&self, queue: Arc<dyn WorkQueue>) -> StreamIngest {
        StreamIngest {
            catalog: Arc::new(Catalog::from_toml(CATALOG, "ecommerce").expect("catalog")),
            queue,
            objects: Arc::new(S3Writer {
                client: self.clients.s3.clone(),
            }),
            quarantine: S3Location {
                bucket: self.bucket.clone(),
                prefix: "quarantine/".into(),
            },
            claim_checks: S3Location {
                bucket: self.bucket.clone(),
                prefix: "claims/".into(),
            },
            size_limit: MessageSizeLimit::new(4096).expect("limit"),
            replay: None,
        }
    }

    async fn received_items(&self) -> Vec<shared::envelope::RecordsItem> {
        let mut items = Vec::new();
        loop {
            let messages = self
                .queue
                .receive(10, Duration::from_secs(1), Duration::from_secs(60))
                .await
                .expect("receive");
            if messages.is_empty() {
                return items;
            }
            for message in messages {
                match WorkItem::from_json(&message.body).expect("a work item") {
                    WorkItem::Records(records) => items.push(records),
                    other => panic!("{other:?}"),
                }
            }
        }
    }

    async fn objects(&self, prefix: &str) -> Vec<String> {
        let listed = self
            .clients
            .s3
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .send()
            .await
            .expect("list");
        let mut bodies = Vec::new();
        for object in listed.contents() {
            let body =
                get_object_bytes(&self.clients.s3, &self.bucket, object.key().expect("key")).await;
            bodies.push(String::from_utf8(body).expect("utf8"));
        }
        bodies
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    aws_smithy_types::base64::decode(text.trim()).expect("base64 fixture")
}

/// (sequence, sub-sequence) of every record in the items, inline or claimed.
fn positions(items: &[shared::envelope::RecordsItem]) -> BTreeSet<(String, u64)> {
    items
        .iter()
        .flat_map(|item| match &item.payload {
            RecordsPayload::Inline(records) => records
                .iter()
                .map(|r| {
                    (
                        r.position.sequence_number.clone(),
                        r.position.sub_sequence_number,
                    )
                })
                .collect::<Vec<_>>(),
            RecordsPayload::S3(_) => vec![(
                item.first.sequence_number.clone(),
                item.first.sub_sequence_number,
            )],
        })
        .collect()
}

#[tokio::test]
async fn valid_records_are_packed_and_invalid_ones_quarantined_with_reasons() {
    let fixture = Fixture::new().await;
    let ingest = fixture.ingest(Arc::clone(&fixture.queue) as Arc<dyn WorkQueue>);
    let big_status = "x".repeat(6000);
    let mut records: Vec<IncomingRecord> = (1..=20)
        .map(|n| record(n, event(&format!("e{n}"), n as i64, "paid")))
        .collect();
    records.push(record(21, gzip(&event("gz", 21, "shipped"))));
    records.push(record(22, base64_decode(KPL_FIXTURE)));
    records.push(record(
        23,
        b"{\"event_type\":\"order_status_changed\",".to_vec(),
    ));
    records.push(record(
        24,
        br#"{"event_type":"order_status_changed","event_id":"w","order_id":"seven","status":"x","occurred_at":"2026-11-24T10:00:00Z"}"#.to_vec(),
    ));
    records.push(record(
        25,
        br#"{"event_type":"order_status_changed","event_id":"m","status":"x","occurred_at":"2026-11-24T10:00:00Z"}"#.to_vec(),
    ));
    records.push(record(
        26,
        br#"{"event_type":"cart_updated","cart_id":1}"#.to_vec(),
    ));
    records.push(record(27, vec![0xff, 0xfe, 0x00]));
    records.push(record(28, event("big", 28, &big_status)));

    let outcome = ingest.ingest(&records).await;
    assert_eq!(outcome.retry_from, None, "{outcome:?}");
    assert_eq!(outcome.records, 28);
    assert_eq!(outcome.user_records, 30, "the KPL record holds three");
    assert_eq!(outcome.quarantined, 5, "{outcome:?}");
    assert_eq!(outcome.claim_checks, 1, "{outcome:?}");

    let items = fixture.received_items().await;
    assert_eq!(items.len(), outcome.work_items_sent);
    assert!(
        items.len() >= 3,
        "packed under the 4 KiB limit: {}",
        items.len()
    );
    let expected: BTreeSet<(String, u64)> = (1..=22)
        .map(|n| (format!("4959{n:040}"), 0))
        .chain([1, 2].map(|sub| (format!("4959{:040}", 22), sub)))
        .chain([(format!("4959{:040}", 28), 0)])
        .collect();
    assert_eq!(positions(&items), expected);
    assert!(items.iter().all(|i| i.dataset == "order_status_events"));

    let quarantined = fixture.objects("quarantine/").await;
    assert_eq!(quarantined.len(), 1, "one object per batch");
    let entries: Vec<serde_json::Value> = quarantined[0]
        .lines()
        .map(|line| serde_json::from_str(line).expect("json line"))
        .collect();
    let reasons: Vec<&str> = entries
        .iter()
        .map(|e| e["reason"].as_str().expect("reason"))
        .collect();
    assert_eq!(reasons.len(), 5);
    assert!(reasons[0].starts_with("not valid JSON"), "{reasons:?}");
    assert_eq!(
        reasons[1],
        "dataset order_status_events: column order_id: expected int64, found \"seven\""
    );
    assert_eq!(
        reasons[2],
        "dataset order_status_events: column order_id: required, but missing or null"
    );
    assert!(
        reasons[3].starts_with("no dataset of the catalog"),
        "{reasons:?}"
    );
    assert!(
        entries[4]["data_base64"].is_string(),
        "non-UTF-8 kept as base64"
    );

    let claims = fixture.objects("claims/").await;
    assert_eq!(claims.len(), 1);
    assert!(claims[0].contains(&big_status));
}

/// Fails, once, every message after the first `ok` of a send call.
#[derive(Debug)]
struct FailingOnce {
    inner: Arc<SqsQueue>,
    ok: usize,
    failed: AtomicBool,
}

#[async_trait]
impl WorkQueue for FailingOnce {
    async fn send(&self, messages: &[OutgoingMessage]) -> SendReport {
        if self.failed.swap(true, Ordering::SeqCst) {
            return self.inner.send(messages).await;
        }
        let mut report = self
            .inner
            .send(&messages[..self.ok.min(messages.len())])
            .await;
        for index in self.ok..messages.len() {
            report.failed.push(EntryFailure {
                index,
                code: "ServiceUnavailable".into(),
                message: "injected".into(),
                retryable: true,
            });
        }
        report
    }
    async fn receive(
        &self,
        n: u8,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        self.inner.receive(n, wait, visibility).await
    }
    async fn delete(&self, handles: &[String]) -> DeleteReport {
        self.inner.delete(handles).await
    }
    async fn depth(&self) -> Result<QueueDepth, QueueError> {
        self.inner.depth().await
    }
    async fn extend_visibility(&self, handle: &str, timeout: Duration) -> Result<(), QueueError> {
        self.inner.extend_visibility(handle, timeout).await
    }
}

#[tokio::test]
async fn a_send_failure_mid_batch_names_the_first_record_not_sent_and_the_retry_sends_the_rest() {
    let fixture = Fixture::new().await;
    let failing = Arc::new(FailingOnce {
        inner: Arc::clone(&fixture.queue),
        ok: 2,
        failed: AtomicBool::new(false),
    });
    let ingest = fixture.ingest(failing as Arc<dyn WorkQueue>);
    // 1 KiB records: a few per 4 KiB item, so the batch needs several items.
    let records: Vec<IncomingRecord> = (1..=30)
        .map(|n| record(n, event(&format!("e{n}"), n as i64, &"s".repeat(900))))
        .collect();
    let first = ingest.ingest(&records).await;
    let retry_from = first.retry_from.clone().expect("a failure to report");
    assert_eq!(first.work_items_sent, 2);
    let sent_first = fixture.received_items().await;
    let sent_positions = positions(&sent_first);
    // Every record before the retry point was sent; the retry point itself was not.
    let retry_index = records
        .iter()
        .position(|r| r.sequence_number == retry_from)
        .expect("a record of the batch");
    assert!(retry_index > 0);
    for record in &records[..retry_index] {
        assert!(
            sent_positions.contains(&(record.sequence_number.clone(), 0)),
            "{}",
            record.sequence_number
        );
    }
    assert!(!sent_positions.contains(&(retry_from.clone(), 0)));
    // Lambda retries from there: the rest is sent, nothing before it again.
    let second = ingest.ingest(&records[retry_index..]).await;
    assert_eq!(second.retry_from, None, "{second:?}");
    let sent_second = positions(&fixture.received_items().await);
    let all: BTreeSet<(String, u64)> = sent_positions.union(&sent_second).cloned().collect();
    assert_eq!(all.len(), 30, "every record sent");
    assert!(
        sent_second.iter().all(|p| !sent_positions.contains(p)),
        "nothing sent twice"
    );
}
