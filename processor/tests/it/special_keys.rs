//! Object keys with every kind of special character (`testdata/s3-keys.toml`): each object
//! is uploaded to the emulator's S3, its notification goes through the batch Lambda's
//! handler with the key encoded as S3 encodes it, and the `processor serve` binary loads
//! the work items. Each key ends as its corpus entry says: its row loaded once, or its
//! item in the dead-letter queue with the reason.

use std::sync::Arc;
use std::time::Duration;

use faults::{Expected, Scenario};
use ingest_batch::keys::encode_event_key;
use shared::catalog::Catalog;
use shared::envelope::WorkItem;
use shared::queue::WorkQueue;
use test_support::faults;

use crate::support::platform::{file_ingest, s3_planner};

const PREFIX: &str = "landing/order_items/";

#[derive(Debug, serde::Deserialize)]
struct Corpus {
    key: Vec<KeyCase>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyCase {
    name: String,
    outcome: String,
    reason: Option<String>,
    pad_to_bytes: Option<usize>,
}

impl KeyCase {
    fn key(&self) -> String {
        let key = format!("{PREFIX}{}", self.name);
        match self.pad_to_bytes {
            Some(bytes) => {
                let (stem, extension) = key.rsplit_once('.').expect("an extension");
                let padding = bytes.saturating_sub(key.len());
                format!("{stem}{}.{extension}", "x".repeat(padding))
            }
            None => key,
        }
    }
}

fn s3_event(bucket: &str, key: &str, size: u64, etag: &str) -> serde_json::Value {
    serde_json::json!({
        "Records": [{
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "awsRegion": "us-east-1",
            "eventTime": "2026-11-24T09:30:12.345Z",
            "eventName": "ObjectCreated:Put",
            "s3": {
                "s3SchemaVersion": "1.0",
                "bucket": { "name": bucket, "arn": format!("arn:aws:s3:::{bucket}") },
                "object": {
                    "key": encode_event_key(key),
                    "size": size,
                    "eTag": etag.trim_matches('"'),
                    "sequencer": "0055AED6DCD90281E5"
                }
            }
        }]
    })
}

#[tokio::test]
async fn keys_with_every_kind_of_special_character_have_their_defined_outcome() {
    let corpus: Corpus = toml::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../testdata/s3-keys.toml"
        ))
        .expect("corpus"),
    )
    .expect("a valid corpus");
    let Scenario {
        fixture, config, ..
    } = Scenario::start(
        crate::PROCESSOR,
        "keys",
        test_support::faults::Sink::Postgres,
    )
    .await;

    let catalog_text = std::fs::read_to_string(fixture.dir.join("catalog.toml")).expect("catalog");
    let ingest = file_ingest(
        s3_planner(
            &fixture.clients,
            Arc::new(Catalog::from_toml(&catalog_text, "test").expect("catalog")),
            64 * 1024 * 1024,
        ),
        Arc::new(fixture.queue.clone()) as Arc<dyn WorkQueue>,
        "s3_event",
    );
    let mut expected = Expected::new();
    let mut dead_lettered = Vec::new();
    for (index, case) in corpus.key.iter().enumerate() {
        let key = case.key();
        assert!(key.len() <= 1024, "{key:?} is longer than S3 allows");
        let order_id = index as i64 + 1;
        let body = format!(
            "order_id,line_number,product_sku,quantity,unit_price\n{order_id},1,SKU-{index},1,1.00\n"
        );
        let size = body.len() as u64;
        let WorkItem::File(uploaded) = fixture.upload(&key, body.into_bytes()).await else {
            unreachable!("a file item")
        };
        let report = ingest
            .handle(s3_event(&fixture.bucket, &key, size, &uploaded.etag))
            .await
            .unwrap_or_else(|err| panic!("{key:?}: the handler failed: {err}"));
        assert_eq!(report.work_items_sent, 1, "{key:?}: {report:?}");
        match case.outcome.as_str() {
            "loaded" => {
                expected.insert(
                    (order_id, 1),
                    (format!("SKU-{index}"), 1, "1.00".to_owned()),
                );
            }
            "dead-lettered" => dead_lettered.push((key, case.reason.clone().unwrap_or_default())),
            other => panic!("unknown outcome {other:?}"),
        }
    }

    let _processor = fixture.start_processor(&config);
    fixture
        .wait_until_loaded(
            expected.len(),
            dead_lettered.len() as u64,
            Duration::from_secs(120),
        )
        .await;
    fixture.assert_rows_exact(&expected).await;
    let dead = fixture.dead_letters().await;
    let mut found: Vec<(String, String)> = dead
        .iter()
        .map(|(body, reason)| {
            let WorkItem::File(file) = WorkItem::from_json(body).expect("a work item") else {
                unreachable!("file items")
            };
            (file.key, reason.clone().unwrap_or_default())
        })
        .collect();
    found.sort();
    dead_lettered.sort();
    assert_eq!(found.len(), dead_lettered.len(), "{found:#?}");
    for ((key, reason), (want_key, want_reason)) in found.iter().zip(&dead_lettered) {
        assert_eq!(key, want_key);
        assert!(reason.contains(want_reason.as_str()), "{key:?}: {reason}");
    }
}
