//! ingest-stream handler throughput on one core: batches of 1 KiB JSON records decoded,
//! routed, validated, packed and serialised into work items (the SQS call replaced by a
//! queue that accepts everything, no S3 writes: every record is valid and fits), against a
//! baseline of only parsing the same records' JSON, measured in the same run.
//!
//! `cargo bench -p ingest-stream --bench handler`

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ingest_stream::handler::{IncomingRecord, ObjectWriter, PutError, StreamIngest};
use shared::catalog::Catalog;
use shared::config::S3Location;
use shared::envelope::MessageSizeLimit;
use test_support::AcceptingQueue;

const CATALOG: &str = include_str!("../../catalog/ecommerce.toml");
const RECORDS_PER_BATCH: usize = 500;
const BATCHES: usize = 200;

/// Every record is valid and small: nothing is written; reaching this is a bug.
#[derive(Debug)]
struct NoWrites;

#[async_trait]
impl ObjectWriter for NoWrites {
    async fn put(&self, bucket: &str, key: &str, _: Vec<u8>) -> Result<(), PutError> {
        Err(PutError {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            source: "the benchmark writes no objects".into(),
            retryable: false,
        })
    }
}

/// A 1 KiB order status event.
fn record(n: usize) -> IncomingRecord {
    let note = "n".repeat(1024 - 200);
    let data = format!(
        r#"{{"event_type":"order_status_changed","event_id":"evt-{n:012}","order_id":{n},"status":"shipped","occurred_at":"2026-11-24T10:{:02}:{:02}Z","note":"{note}"}}"#,
        (n / 60) % 60,
        n % 60
    );
    IncomingRecord {
        stream: "order-events".into(),
        shard_id: "shardId-000000000000".into(),
        sequence_number: format!("4959{n:052}"),
        arrival_ms: Some(1_795_514_400_000),
        data: data.into_bytes(),
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let ingest = StreamIngest {
        catalog: Arc::new(Catalog::from_toml(CATALOG, "ecommerce").expect("catalog")),
        queue: Arc::new(AcceptingQueue),
        objects: Arc::new(NoWrites),
        quarantine: S3Location {
            bucket: "q".into(),
            prefix: "q/".into(),
        },
        claim_checks: S3Location {
            bucket: "q".into(),
            prefix: "c/".into(),
        },
        size_limit: MessageSizeLimit::default(),
        replay: None,
    };
    let batches: Vec<Vec<IncomingRecord>> = (0..BATCHES)
        .map(|b| {
            (0..RECORDS_PER_BATCH)
                .map(|i| record(b * RECORDS_PER_BATCH + i))
                .collect()
        })
        .collect();
    let bytes: usize = batches.iter().flatten().map(|r| r.data.len()).sum();
    let check = runtime.block_on(ingest.ingest(&batches[0]));
    assert_eq!(
        (check.quarantined, check.retry_from.as_deref()),
        (0, None),
        "{check:?}"
    );
    assert!(check.work_items_sent > 1);

    let started = Instant::now();
    for batch in &batches {
        for record in batch {
            let value: serde_json::Value = serde_json::from_slice(&record.data).expect("json");
            std::hint::black_box(value);
        }
    }
    let baseline = started.elapsed();
    let started = Instant::now();
    let mut items = 0;
    for batch in &batches {
        items += runtime.block_on(ingest.ingest(batch)).work_items_sent;
    }
    let handler = started.elapsed();
    let records = BATCHES * RECORDS_PER_BATCH;
    let rate = |d: Duration| records as f64 / d.as_secs_f64().max(1e-9);
    println!(
        "stream handler, {records} records of ~1 KiB in batches of {RECORDS_PER_BATCH} ({:.0} MB), one core:",
        bytes as f64 / 1e6
    );
    println!(
        "  baseline (parse each record's JSON only): {:>10.0} records/s",
        rate(baseline)
    );
    println!(
        "  handler (decode, route, validate, pack, serialise {items} work items): {:>10.0} records/s, {:.1} MB/s ({:.1}x the baseline's time)",
        rate(handler),
        bytes as f64 / 1e6 / handler.as_secs_f64(),
        handler.as_secs_f64() / baseline.as_secs_f64().max(1e-9)
    );
}
