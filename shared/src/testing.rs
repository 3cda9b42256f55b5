//! Helpers for integration tests (feature `testing`): the peers started by
//! `scripts/test.sh`, unique names, and waiting for a condition with a timeout.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::aws::{AwsClients, AwsSettings};

/// The emulator endpoint exported by `scripts/test.sh`. Tests never skip when it is
/// missing: they fail and say how to run them.
pub fn aws_endpoint() -> String {
    std::env::var("TEST_INGEST_AWS_ENDPOINT").unwrap_or_else(|_| {
        panic!("TEST_INGEST_AWS_ENDPOINT is not set: run the tests with scripts/test.sh, which starts the AWS emulator")
    })
}

pub fn postgres_url() -> String {
    std::env::var("TEST_INGEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!("TEST_INGEST_POSTGRES_URL is not set: run the tests with scripts/test.sh, which starts PostgreSQL")
    })
}

pub fn emulator_settings() -> AwsSettings {
    AwsSettings::emulator(&aws_endpoint(), "us-east-1")
}

pub async fn clients() -> AwsClients {
    AwsClients::new(&emulator_settings()).await
}

/// A name no other test (or earlier run) uses: prefix, process id, time and a counter.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Polls `check` until it yields `Some`, failing the test after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Creates a bucket with a unique name starting with `prefix`; returns its name.
pub async fn create_bucket(s3: &aws_sdk_s3::Client, prefix: &str) -> String {
    let bucket = unique_name(prefix).to_lowercase();
    s3.create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .unwrap_or_else(|err| panic!("create bucket {bucket}: {err:?}"));
    bucket
}

/// An object's bytes from the emulator's S3.
pub async fn get_object_bytes(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Vec<u8> {
    s3.get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|err| panic!("get s3://{bucket}/{key}: {err:?}"))
        .body
        .collect()
        .await
        .expect("object body")
        .into_bytes()
        .to_vec()
}

/// Creates a standard queue with a unique name and the given attributes; returns its URL.
pub async fn create_queue(
    client: &aws_sdk_sqs::Client,
    attributes: &[(aws_sdk_sqs::types::QueueAttributeName, String)],
) -> String {
    let mut request = client.create_queue().queue_name(unique_name("work"));
    for (name, value) in attributes {
        request = request.attributes(name.clone(), value.clone());
    }
    let output = request.send().await.expect("create queue");
    output.queue_url().expect("queue url").to_owned()
}

/// Creates a dead-letter queue and a work queue that moves a message there after
/// `max_receive_count` receives; returns (work queue URL, dead-letter queue URL).
pub async fn create_queue_with_dlq(
    client: &aws_sdk_sqs::Client,
    max_receive_count: u32,
) -> (String, String) {
    use aws_sdk_sqs::types::QueueAttributeName;
    let dlq_url = create_queue(client, &[]).await;
    let dlq_arn = client
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("dlq attributes")
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .expect("dlq arn");
    let redrive = serde_json::json!({
        "deadLetterTargetArn": dlq_arn,
        "maxReceiveCount": max_receive_count.to_string(),
    })
    .to_string();
    let url = create_queue(client, &[(QueueAttributeName::RedrivePolicy, redrive)]).await;
    (url, dlq_url)
}

/// (visible, in flight) message counts of a queue.
pub async fn queue_depth(client: &aws_sdk_sqs::Client, url: &str) -> (u64, u64) {
    use crate::queue::{SqsQueue, WorkQueue};
    let queue = SqsQueue::new(
        client.clone(),
        url,
        crate::envelope::MessageSizeLimit::default(),
    );
    let depth = queue.depth().await.expect("queue attributes");
    (depth.visible, depth.in_flight)
}

/// Warehouse schema names used by one test only, so tests can share one PostgreSQL.
#[derive(Debug, Clone)]
pub struct TestSchemas {
    /// Replaces `sales` in the example catalog's targets.
    pub sales: String,
    /// Replaces `events` in the example catalog's targets.
    pub events: String,
    /// For the ledger and rejects tables.
    pub platform: String,
}

impl TestSchemas {
    pub fn new() -> Self {
        let schema = |prefix: &str| unique_name(prefix).replace('-', "_");
        Self {
            sales: schema("sales"),
            events: schema("events"),
            platform: schema("ingest"),
        }
    }

    /// A catalog's text with its `sales.` and `events.` targets moved to this test's schemas.
    pub fn retarget(&self, catalog_text: &str) -> String {
        catalog_text
            .replace("target = \"sales.", &format!("target = \"{}.", self.sales))
            .replace(
                "target = \"events.",
                &format!("target = \"{}.", self.events),
            )
    }
}

impl Default for TestSchemas {
    fn default() -> Self {
        Self::new()
    }
}

/// Uploads `body` to the emulator's S3 and returns the `file` work item for it, with the
/// compression inferred from the key.
pub async fn upload_file(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    body: Vec<u8>,
    dataset: &str,
    format: crate::catalog::FileFormat,
) -> crate::envelope::WorkItem {
    let size = body.len() as u64;
    let put = s3
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(aws_sdk_s3::primitives::ByteStream::from(body))
        .send()
        .await
        .expect("put object");
    crate::envelope::WorkItem::File(crate::envelope::FileItem {
        dataset: dataset.to_owned(),
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        version_id: put.version_id().map(str::to_owned),
        etag: put.e_tag().expect("etag").to_owned(),
        size,
        range: None,
        part: None,
        format,
        compression: crate::catalog::Compression::from_key(key),
        created_at_ms: None,
    })
}

/// A plain HTTP/1.1 GET on loopback, for checking the processor's health and metrics
/// endpoint: returns the status code and the body.
pub async fn http_get(address: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .unwrap_or_else(|err| panic!("connect to {address}: {err}"));
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("read response");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {response:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, body.to_owned())
}

/// The value of one Prometheus sample in `/metrics` text, e.g.
/// `metric_value(text, "ingest_rows_loaded_total", &[("dataset", "orders")])`; 0 if absent.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .find(|(series, _)| {
            let (series_name, series_labels) = series.split_once('{').unwrap_or((series, ""));
            series_name == name
                && labels
                    .iter()
                    .all(|(key, value)| series_labels.contains(&format!("{key}=\"{value}\"")))
        })
        .map_or(0.0, |(_, value)| value.parse().unwrap_or(f64::NAN))
}

/// A work queue that confirms every message it is given and keeps nothing: for
/// benchmarks that exclude SQS calls.
#[derive(Debug, Default)]
pub struct AcceptingQueue;

#[async_trait::async_trait]
impl crate::queue::WorkQueue for AcceptingQueue {
    async fn send(&self, messages: &[crate::queue::OutgoingMessage]) -> crate::queue::SendReport {
        crate::queue::SendReport {
            succeeded: (0..messages.len()).map(|i| (i, i.to_string())).collect(),
            failed: Vec::new(),
        }
    }
    async fn receive(
        &self,
        _: u8,
        _: Duration,
        _: Duration,
    ) -> Result<Vec<crate::queue::ReceivedMessage>, crate::queue::QueueError> {
        Ok(Vec::new())
    }
    async fn delete(&self, _: &[String]) -> crate::queue::DeleteReport {
        crate::queue::DeleteReport::default()
    }
    async fn depth(&self) -> Result<crate::queue::QueueDepth, crate::queue::QueueError> {
        Ok(crate::queue::QueueDepth::default())
    }
    async fn extend_visibility(
        &self,
        _: &str,
        _: Duration,
    ) -> Result<(), crate::queue::QueueError> {
        Ok(())
    }
}

/// Checks one Embedded Metric Format document as CloudWatch reads it — the `_aws` directive
/// with the platform's namespace and a timestamp, every metric of the directive specified
/// in `telemetry::METRICS` and present as a number (or, for a histogram, an array of them,
/// returned summed), every dimension present as a string, the `function` dimension — and
/// returns the metric values and the dimension values.
pub fn check_emf(
    line: &str,
    function: &str,
) -> (
    std::collections::BTreeMap<String, f64>,
    std::collections::BTreeMap<String, String>,
) {
    let document: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}"));
    let aws = &document["_aws"];
    assert!(aws["Timestamp"].as_u64().is_some(), "{document}");
    let directives = aws["CloudWatchMetrics"].as_array().expect("directives");
    assert!(!directives.is_empty(), "{document}");
    let mut values = std::collections::BTreeMap::new();
    let mut dimensions = std::collections::BTreeMap::new();
    for directive in directives {
        assert_eq!(
            directive["Namespace"],
            crate::telemetry::CLOUDWATCH_NAMESPACE,
            "{document}"
        );
        for set in directive["Dimensions"].as_array().expect("dimension sets") {
            let set = set.as_array().expect("a dimension set");
            assert!(
                set.iter().any(|d| d == "function"),
                "every set has the function: {document}"
            );
            for name in set {
                let name = name.as_str().expect("dimension name");
                let value = document[name]
                    .as_str()
                    .unwrap_or_else(|| panic!("dimension {name} has a value: {document}"));
                dimensions.insert(name.to_owned(), value.to_owned());
            }
        }
        for metric in directive["Metrics"].as_array().expect("metrics") {
            let name = metric["Name"].as_str().expect("metric name");
            assert!(
                crate::telemetry::spec(name).is_some(),
                "{name} is specified in telemetry::METRICS"
            );
            // A number, or an array of numbers (a histogram's observations): summed.
            let value = match &document[name] {
                serde_json::Value::Array(values) => values
                    .iter()
                    .map(|v| v.as_f64().unwrap_or_else(|| panic!("{name}: {document}")))
                    .sum(),
                other => other
                    .as_f64()
                    .unwrap_or_else(|| panic!("{name} has a number: {document}")),
            };
            values.insert(name.to_owned(), value);
        }
    }
    assert_eq!(
        dimensions.get("function").map(String::as_str),
        Some(function)
    );
    (values, dimensions)
}

/// A SQLite database file in the temp folder, removed with its WAL and shared-memory
/// files when dropped (also when a test panics).
#[derive(Debug)]
pub struct TempDatabase(pub std::path::PathBuf);

impl TempDatabase {
    pub fn new(prefix: &str) -> Self {
        Self(std::env::temp_dir().join(format!("{}.sqlite", unique_name(prefix))))
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDatabase {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.0.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A checked-in corpus under `testdata/`: its folder and its `manifest.toml` of cases.
#[derive(Debug)]
pub struct Corpus<Case> {
    pub dir: std::path::PathBuf,
    pub cases: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Manifest<Case> {
    case: Vec<Case>,
}

impl<Case: serde::de::DeserializeOwned> Corpus<Case> {
    /// Reads `testdata/<folder>/manifest.toml` and checks that it names every file of the
    /// folder (sub-folders included) and only those, so no corpus file goes untested.
    pub fn load(folder: &str, file_of: impl Fn(&Case) -> &str) -> Self {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../testdata")
            .join(folder);
        let text = std::fs::read_to_string(dir.join("manifest.toml"))
            .unwrap_or_else(|err| panic!("{}/manifest.toml: {err}", dir.display()));
        let manifest: Manifest<Case> = toml::from_str(&text)
            .unwrap_or_else(|err| panic!("{}/manifest.toml: {err}", dir.display()));
        let mut listed: Vec<String> = manifest
            .case
            .iter()
            .map(|case| file_of(case).to_owned())
            .collect();
        listed.sort();
        let mut on_disk: Vec<String> = files_under(&dir)
            .into_iter()
            .filter_map(|path| {
                let relative = path.strip_prefix(&dir).expect("inside the corpus");
                let relative = relative.to_string_lossy().into_owned();
                (relative != "manifest.toml").then_some(relative)
            })
            .collect();
        on_disk.sort();
        assert_eq!(
            listed,
            on_disk,
            "{}: every corpus file has an expected outcome, and only they",
            dir.display()
        );
        Self {
            dir,
            cases: manifest.case,
        }
    }
}

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let entries = std::fs::read_dir(dir)
        .unwrap_or_else(|err| panic!("{}: {err}", dir.display()))
        .flatten();
    for entry in entries {
        let path = entry.path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}
