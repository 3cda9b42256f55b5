//! ingest-batch benchmarks (no servers needed):
//!
//! 1. **handler cost**: invocations of 100 S3 records each (reading the payload, decoding
//!    keys, routing, building and serialising the work items; the SQS call replaced by a
//!    queue that accepts everything), against a baseline of only parsing the payload's JSON,
//!    measured in the same run;
//! 2. **cold start**: from starting the release binary to its first request for an event
//!    on a Runtime API endpoint on loopback (configuration read, catalog loaded, AWS
//!    clients built), against starting and reaping a trivial process (`true`).
//!
//! `cargo bench -p ingest-batch --bench handler`

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use ingest_batch::FileIngest;
use ingest_batch::events::CreatedObject;
use ingest_batch::plan::{FilePlanner, ObjectReadError, ObjectReader};
use shared::catalog::Catalog;
use shared::envelope::MessageSizeLimit;
use test_support::AcceptingQueue;
use test_support::lambda_runtime as runtime_api;

const CATALOG: &str = include_str!("../../catalog/ecommerce.toml");
const RECORDS_PER_EVENT: usize = 100;

/// Small objects are never read; reaching this would be a bug in the benchmark.
#[derive(Debug)]
struct NoReads;

#[async_trait]
impl ObjectReader for NoReads {
    async fn read_range(
        &self,
        object: &CreatedObject,
        start: u64,
        end: u64,
    ) -> Result<Bytes, ObjectReadError> {
        Err(ObjectReadError::Failed {
            bucket: object.bucket.clone(),
            key: object.key.clone(),
            start,
            end,
            source: "the benchmark reads no objects".into(),
            retryable: false,
        })
    }
}

fn event_text() -> String {
    let prefixes = [
        "landing/orders/",
        "landing/customers/",
        "landing/order_items/",
        "landing/payments/",
    ];
    let records: Vec<serde_json::Value> = (0..RECORDS_PER_EVENT)
        .map(|i| {
            let prefix = prefixes[i % prefixes.len()];
            let suffix = if prefix.contains("payments") { ".parquet" } else { ".csv.gz" };
            serde_json::json!({
                "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "eu-west-1",
                "eventTime": "2026-11-24T10:00:00.000Z", "eventName": "ObjectCreated:Put",
                "userIdentity": {"principalId": "AWS:AIDAEXAMPLE"},
                "requestParameters": {"sourceIPAddress": "203.0.113.10"},
                "responseElements": {"x-amz-request-id": "C3D13FE58DE4C810", "x-amz-id-2": "FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S"},
                "s3": {"s3SchemaVersion": "1.0", "configurationId": "ingest",
                       "bucket": {"name": "acme-landing", "ownerIdentity": {"principalId": "A3EXAMPLE"}, "arn": "arn:aws:s3:::acme-landing"},
                       "object": {"key": format!("{prefix}2026-11-24/export+%C3%A9t%C3%A9+{i:05}{suffix}"), "size": 1_048_576 + i, "eTag": format!("{i:032x}"), "versionId": format!("v{i}"), "sequencer": "0055AED6DCD90281E5"}}
            })
        })
        .collect();
    serde_json::json!({ "Records": records }).to_string()
}

fn per_second(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}

fn handler_cost(runtime: &tokio::runtime::Runtime) {
    let ingest = FileIngest {
        planner: FilePlanner {
            catalog: Arc::new(Catalog::from_toml(CATALOG, "ecommerce").expect("catalog")),
            reader: Arc::new(NoReads),
            part_size: 128 * 1024 * 1024,
        },
        queue: Arc::new(AcceptingQueue),
        size_limit: MessageSizeLimit::default(),
        source: "bench",
    };
    let text = event_text();
    let iterations = 2000;
    // Warm up, and check the work is the real work.
    let report = runtime
        .block_on(ingest.handle(serde_json::from_str(&text).expect("json")))
        .expect("handled");
    assert_eq!(report.work_items_sent, RECORDS_PER_EVENT, "{report:?}");

    let started = Instant::now();
    for _ in 0..iterations {
        let value: serde_json::Value = serde_json::from_str(&text).expect("json");
        std::hint::black_box(value);
    }
    let baseline = started.elapsed();

    let started = Instant::now();
    for _ in 0..iterations {
        let report = runtime
            .block_on(ingest.handle(serde_json::from_str(&text).expect("json")))
            .expect("handled");
        std::hint::black_box(report);
    }
    let handler = started.elapsed();

    let records = iterations * RECORDS_PER_EVENT;
    println!(
        "handler cost, {iterations} invocations of {RECORDS_PER_EVENT} S3 records ({} bytes each):",
        text.len()
    );
    println!(
        "  baseline (parse the payload JSON only): {:>10.0} records/s  {:>8.0} invocations/s",
        per_second(records, baseline),
        per_second(iterations, baseline)
    );
    println!(
        "  handler (parse, decode, route, build and serialise work items): {:>10.0} records/s  {:>8.0} invocations/s  ({:.2} ms per invocation, {:.1}x the baseline's time)",
        per_second(records, handler),
        per_second(iterations, handler),
        handler.as_secs_f64() * 1000.0 / iterations as f64,
        handler.as_secs_f64() / baseline.as_secs_f64().max(1e-9)
    );
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn cold_start(runtime: &tokio::runtime::Runtime) {
    let dir = std::env::temp_dir().join(format!("ingest-batch-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let catalog = dir.join("catalog.toml");
    std::fs::write(&catalog, CATALOG).expect("catalog");
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[aws]\nregion = \"eu-west-1\"\n\n[queue]\nurl = \"https://sqs.eu-west-1.amazonaws.com/123456789012/ingest-work\"\n\n[catalog]\npath = \"{}\"\n",
            catalog.display()
        ),
    )
    .expect("config");
    let runs = 20;
    let mut starts = Vec::with_capacity(runs);
    let mut baselines = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        let status = std::process::Command::new("true").status().expect("true");
        assert!(status.success());
        baselines.push(started.elapsed());

        let api = runtime.block_on(runtime_api::start(Vec::new()));
        let mut calls = api.calls;
        let started = Instant::now();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ingest-batch"))
            .envs(runtime_api::lambda_env(api.address))
            .env("INGEST_CONFIG", &config)
            .env("AWS_ACCESS_KEY_ID", "bench")
            .env("AWS_SECRET_ACCESS_KEY", "bench")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start the function");
        let first = runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(30), calls.recv())
                .await
                .expect("the function asked for an event within 30 s")
                .expect("runtime API running")
        });
        let runtime_api::Call::Next { at } = first else {
            panic!("the function failed to start: {first:?}");
        };
        starts.push(at - started);
        let _ = child.kill();
        let _ = child.wait();
    }
    starts.sort();
    baselines.sort();
    let median = percentile(&starts, 0.5);
    let baseline = percentile(&baselines, 0.5);
    println!("cold start, {runs} runs (process start to the first request for an event):");
    println!(
        "  baseline (start and reap `true`): median {:.2} ms",
        baseline.as_secs_f64() * 1000.0
    );
    println!(
        "  ingest-batch: median {:.2} ms, p90 {:.2} ms, max {:.2} ms ({:.1}x the baseline)",
        median.as_secs_f64() * 1000.0,
        percentile(&starts, 0.9).as_secs_f64() * 1000.0,
        starts[starts.len() - 1].as_secs_f64() * 1000.0,
        median.as_secs_f64() / baseline.as_secs_f64().max(1e-9)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    handler_cost(&runtime);
    cold_start(&runtime);
}
