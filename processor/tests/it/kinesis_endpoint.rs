//! The local platform's Kinesis-compatible endpoint, with real producers as clients: the
//! AWS SDK for Rust and boto3 (from the test peers' Python), pointed at `dev`'s endpoint,
//! put records that `dev` loads; Kinesis's limits come back as Kinesis's errors.

use std::path::Path;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;

use crate::support::local::{Dev, query, temp_dir};

/// A catalog of one's own with one stream route.
const CATALOG: &str = r#"
[datasets.items]
target = "shop.items"
key = ["id"]
stream = { name = "items" }
columns = [
  { name = "id", type = "int64", nullable = false },
  { name = "name", type = "string" },
]
"#;

/// `dev` on a fresh folder with the catalog, and its endpoint's URL.
fn start_dev(name: &str) -> (std::path::PathBuf, Dev, String) {
    let dir = temp_dir(name);
    let catalog = dir.join("items.toml");
    std::fs::write(&catalog, CATALOG).expect("write catalog");
    let dev = Dev::start(&dir, &["--catalog", catalog.to_str().expect("utf-8 path")]);
    let url = dev.kinesis_endpoint();
    (dir, dev, url)
}

pub(crate) fn client(url: &str) -> aws_sdk_kinesis::Client {
    let config = aws_sdk_kinesis::Config::builder()
        .behavior_version_latest()
        .region(aws_sdk_kinesis::config::Region::new("us-east-1"))
        .endpoint_url(url)
        .credentials_provider(aws_sdk_kinesis::config::Credentials::new(
            "local", "local", None, None, "test",
        ))
        .build();
    aws_sdk_kinesis::Client::from_conf(config)
}

/// Waits until the items table holds `rows` rows.
fn wait_for_rows(dir: &Path, rows: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let count = || {
        query(
            dir,
            "SELECT count(*) FROM sqlite_master WHERE name = 'shop_items'",
            |r| r.get::<_, i64>(0),
        ) == [1]
            && query(dir, "SELECT count(*) FROM shop_items", |r| {
                r.get::<_, i64>(0)
            }) == [rows]
    };
    while !count() {
        assert!(
            Instant::now() < deadline,
            "shop_items never held {rows} rows"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The error code of a call that failed with a service error.
fn code<E: ProvideErrorMetadata, R>(err: SdkError<E, R>) -> String {
    err.as_service_error()
        .and_then(|e| e.code())
        .unwrap_or("not a service error")
        .to_owned()
}

fn entry(data: Vec<u8>, key: &str) -> PutRecordsRequestEntry {
    PutRecordsRequestEntry::builder()
        .data(Blob::new(data))
        .partition_key(key)
        .build()
        .expect("a complete entry")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_on_the_aws_sdk_for_rust_puts_through_the_endpoint_and_dev_loads_it() {
    let (dir, dev, url) = start_dev("kinesis-sdk");
    let kinesis = client(&url);

    let summary = kinesis
        .describe_stream_summary()
        .stream_name("items")
        .send()
        .await
        .expect("DescribeStreamSummary");
    let summary = summary.stream_description_summary().expect("a summary");
    assert_eq!(summary.open_shard_count(), 2);
    assert_eq!(summary.retention_period_hours(), 7 * 24);
    let shards = kinesis
        .list_shards()
        .stream_name("items")
        .send()
        .await
        .expect("ListShards");
    let ranges: Vec<(String, String)> = shards
        .shards()
        .iter()
        .filter_map(|s| s.hash_key_range())
        .map(|r| {
            (
                r.starting_hash_key().to_owned(),
                r.ending_hash_key().to_owned(),
            )
        })
        .collect();
    assert_eq!(ranges.len(), 2, "{ranges:?}");
    assert_eq!(ranges[0].0, "0");
    assert_eq!(
        ranges[1].1,
        u128::MAX.to_string(),
        "the ranges cover every hash key"
    );

    let single = kinesis
        .put_record()
        .stream_name("items")
        .partition_key("1")
        .data(Blob::new(br#"{"id": 1, "name": "one"}"#.to_vec()))
        .send()
        .await
        .expect("PutRecord");
    assert!(single.shard_id().starts_with("shardId-"));
    let batch = kinesis
        .put_records()
        .stream_name("items")
        .records(entry(br#"{"id": 2, "name": "two"}"#.to_vec(), "2"))
        .records(entry(br#"{"id": 3, "name": "three"}"#.to_vec(), "3"))
        .records(
            PutRecordsRequestEntry::builder()
                .data(Blob::new(br#"{"id": 4, "name": "four"}"#.to_vec()))
                .partition_key("4")
                .explicit_hash_key(u128::MAX.to_string())
                .build()
                .expect("a complete entry"),
        )
        .send()
        .await
        .expect("PutRecords");
    assert_eq!(batch.failed_record_count(), Some(0));
    assert_eq!(batch.records().len(), 3);
    assert_eq!(
        batch.records()[2].shard_id(),
        Some("shardId-000000000001"),
        "an explicit hash key picks the shard whose range holds it"
    );
    wait_for_rows(&dir, 4);

    // Kinesis's limits, as Kinesis reports them; nothing of a refused call is put.
    let mut too_many = kinesis.put_records().stream_name("items");
    for n in 0..501 {
        too_many = too_many.records(entry(format!(r#"{{"id": {}}}"#, 100 + n).into_bytes(), "k"));
    }
    let err = too_many.send().await.expect_err("501 records");
    assert_eq!(code(err), "ValidationException");
    let mut too_large = kinesis.put_records().stream_name("items");
    for n in 0..6 {
        too_large = too_large.records(entry(vec![b' '; 1_000_000], &n.to_string()));
    }
    let err = too_large.send().await.expect_err("6 MB in one call");
    assert_eq!(code(err), "InvalidArgumentException");
    let err = kinesis
        .put_record()
        .stream_name("items")
        .partition_key("k")
        .data(Blob::new(vec![b' '; 1024 * 1024]))
        .send()
        .await
        .expect_err("a record over 1 MiB");
    assert_eq!(code(err), "ValidationException");
    let err = kinesis
        .put_record()
        .stream_name("elsewhere")
        .partition_key("k")
        .data(Blob::new(b"{}".to_vec()))
        .send()
        .await
        .expect_err("an unknown stream");
    let err = err.into_service_error();
    assert!(err.is_resource_not_found_exception(), "{err:?}");
    assert!(
        err.to_string().contains("serves: items") || format!("{err:?}").contains("serves: items"),
        "{err:?}"
    );

    // The stream holds exactly the four records put: nothing of the refused calls.
    let held = query(
        &dir,
        "SELECT count(*) FROM stream_records WHERE stream = 'items'",
        |r| r.get::<_, i64>(0),
    );
    assert_eq!(held, [4]);
    let rows = query(&dir, "SELECT id, name FROM shop_items ORDER BY id", |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
    });
    let names: Vec<&str> = rows.iter().map(|(_, name)| name.as_str()).collect();
    assert_eq!(names, ["one", "two", "three", "four"]);
    dev.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_producer_on_boto3_puts_through_the_endpoint_and_dev_loads_it() {
    let python = std::env::var("TEST_INGEST_PYTHON")
        .expect("TEST_INGEST_PYTHON (a Python with boto3): run the tests with scripts/peers.sh");
    let (dir, dev, url) = start_dev("kinesis-boto3");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/kinesis_endpoint.py");
    let output = std::process::Command::new(&python)
        .args([script, &url, "items", "1200"])
        .output()
        .expect("run the boto3 producer");
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: serde_json::Value = serde_json::from_str(printed.trim()).expect("one JSON line");
    assert_eq!(seen["status"], "ACTIVE");
    assert_eq!(seen["open_shards"], 2);
    assert_eq!(
        seen["shards"],
        serde_json::json!(["shardId-000000000000", "shardId-000000000001"])
    );
    assert_eq!(seen["too_many"], "ValidationException");
    assert_eq!(seen["unknown_stream"], "ResourceNotFoundException");
    assert_eq!(seen["put"], 1201);
    assert_eq!(seen["calls"], 3, "1200 records in three calls, none failed");
    wait_for_rows(&dir, 1201);
    let last = query(&dir, "SELECT name FROM shop_items WHERE id = 1200", |r| {
        r.get::<_, String>(0)
    });
    assert_eq!(last, ["the last one"]);
    dev.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A record the stream cannot take (here: the database locked by another writer past its
/// busy timeout) comes back in `PutRecords`'s answer with an error code, as Kinesis
/// reports throttled records, and puts when the producer sends it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_the_stream_cannot_take_come_back_as_per_record_failures() {
    let (dir, dev, url) = start_dev("kinesis-failures");
    let kinesis = client(&url);
    let blocker =
        rusqlite::Connection::open(processor::local::Layout { dir: dir.clone() }.database())
            .expect("open");
    blocker
        .execute_batch("BEGIN IMMEDIATE")
        .expect("hold the write lock");
    let batch = kinesis
        .put_records()
        .stream_name("items")
        .records(entry(br#"{"id": 7, "name": "seven"}"#.to_vec(), "7"))
        .records(entry(br#"{"id": 8, "name": "eight"}"#.to_vec(), "8"))
        .send()
        .await
        .expect("PutRecords answers");
    assert_eq!(batch.failed_record_count(), Some(2));
    for record in batch.records() {
        assert_eq!(record.error_code(), Some("InternalFailure"), "{record:?}");
        assert!(record.sequence_number().is_none());
    }
    blocker.execute_batch("ROLLBACK").expect("release");
    let again = kinesis
        .put_records()
        .stream_name("items")
        .records(entry(br#"{"id": 7, "name": "seven"}"#.to_vec(), "7"))
        .records(entry(br#"{"id": 8, "name": "eight"}"#.to_vec(), "8"))
        .send()
        .await
        .expect("PutRecords");
    assert_eq!(again.failed_record_count(), Some(0));
    wait_for_rows(&dir, 2);
    dev.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
