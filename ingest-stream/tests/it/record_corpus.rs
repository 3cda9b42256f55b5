//! The bad-record corpus (`testdata/bad-records/`, outcomes in its `manifest.toml`): each
//! file is one Kinesis record's data, handed alone to the stream handler with the
//! emulator's SQS and S3 behind it. Each has its defined outcome — packed into a work
//! item, sent by claim check, or quarantined with a reason — and none panics or hangs.

use std::sync::Arc;
use std::time::Duration;

use ingest_stream::handler::{IncomingRecord, S3Writer, StreamIngest};
use shared::catalog::Catalog;
use shared::config::S3Location;
use shared::envelope::MessageSizeLimit;
use shared::queue::{SqsQueue, WorkQueue};
use test_support::EXAMPLE_CATALOG as CATALOG;
use test_support::{Corpus, clients, create_bucket, create_queue, get_object_bytes};

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    file: String,
    why: String,
    outcome: String,
    reason: Option<String>,
}

#[tokio::test]
async fn every_bad_record_has_its_defined_outcome() {
    let corpus = Corpus::<Case>::load("bad-records", |case| &case.file);
    let clients = clients().await;
    let bucket = create_bucket(&clients.s3, "records").await;
    let queue = Arc::new(SqsQueue::new(
        clients.sqs.clone(),
        &create_queue(&clients.sqs, &[]).await,
        MessageSizeLimit::default(),
    ));
    let mut failures = Vec::new();
    for (index, case) in corpus.cases.iter().enumerate() {
        let data = std::fs::read(corpus.dir.join(&case.file)).expect("corpus file");
        // Each case writes under its own prefixes, so its quarantine entry is its own.
        let ingest = StreamIngest {
            catalog: Arc::new(Catalog::from_toml(CATALOG, "ecommerce").expect("catalog")),
            queue: Arc::clone(&queue) as Arc<dyn WorkQueue>,
            objects: Arc::new(S3Writer {
                client: clients.s3.clone(),
            }),
            quarantine: S3Location {
                bucket: bucket.clone(),
                prefix: format!("quarantine/{index}/"),
            },
            claim_checks: S3Location {
                bucket: bucket.clone(),
                prefix: format!("claims/{index}/"),
            },
            size_limit: MessageSizeLimit::default(),
            replay: None,
        };
        let record = IncomingRecord {
            stream: "order-events".into(),
            shard_id: "shardId-000000000000".into(),
            sequence_number: format!("4959{index:040}"),
            arrival_ms: Some(1_795_514_400_000),
            data,
        };
        let outcome = tokio::time::timeout(Duration::from_secs(30), ingest.ingest(&[record]))
            .await
            .unwrap_or_else(|_| panic!("{}: the handler hangs", case.file));
        let found = match (
            &outcome.retry_from,
            outcome.quarantined,
            outcome.claim_checks,
            outcome.work_items_sent,
        ) {
            (Some(_), ..) => format!("a retry was asked for: {outcome:?}"),
            (None, 0, 0, 1) => "packed".to_owned(),
            (None, 0, 1, 1) => "claim-check".to_owned(),
            (None, 1, 0, 0) => {
                let reason = quarantine_reason(&clients.s3, &bucket, index).await;
                format!("quarantined: {reason}")
            }
            _ => format!("unexpected: {outcome:?}"),
        };
        let matches = match case.outcome.as_str() {
            "quarantined" => {
                found.starts_with("quarantined: ")
                    && found.contains(case.reason.as_deref().unwrap_or_default())
            }
            other => found == other,
        };
        if !matches {
            failures.push(format!("{} ({}): {found}", case.file, case.why));
        }
    }
    assert!(
        failures.is_empty(),
        "unexpected outcomes:\n{}",
        failures.join("\n")
    );
}

async fn quarantine_reason(s3: &aws_sdk_s3::Client, bucket: &str, index: usize) -> String {
    let listed = s3
        .list_objects_v2()
        .bucket(bucket)
        .prefix(format!("quarantine/{index}/"))
        .send()
        .await
        .expect("list");
    let [object] = listed.contents() else {
        return format!("{} quarantine objects", listed.contents().len());
    };
    let body = get_object_bytes(s3, bucket, object.key().expect("key")).await;
    let entry: serde_json::Value =
        serde_json::from_slice(body.split(|b| *b == b'\n').next().unwrap_or_default())
            .expect("a JSON entry");
    entry["reason"].as_str().unwrap_or_default().to_owned()
}
