//! The fault-injection harness: order-item files with known rows in the emulator's S3, a
//! work queue with its dead-letter queue, the `processor serve` binary run as a separate
//! process (so it can be killed), and an exact check of the warehouse against the rows.
//!
//! The target's unique index on the key is replaced by a plain one before any load:
//! Redshift enforces no uniqueness, so the load protocol alone must prevent duplicates,
//! and a row loaded twice shows up as two rows.
//!
//! The processor's tests start it with the path of the binary they were built with. It loads
//! PostgreSQL, or Redshift's sink through the Redshift stand-in in front of the same
//! PostgreSQL (`Sink`), so every scenario's check reads the same tables.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::fixtures::EXAMPLE_CATALOG;
use crate::{
    RedshiftStandIn, TestSchemas, aws_endpoint, clients, create_bucket, create_queue_with_dlq,
    eventually, postgres_url, queue_depth, unique_name, upload_file,
};
use rand::SeedableRng;
use rand::rngs::StdRng;
use shared::aws::AwsClients;
use shared::catalog::FileFormat;
use shared::envelope::{MessageSizeLimit, WorkItem};
use shared::queue::{OutgoingMessage, SqsQueue, WorkQueue};

/// The warehouse a scenario's processor loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    Postgres,
    /// The Redshift sink, through the Redshift stand-in.
    Redshift,
}

/// The template's default `MaxReceiveCount`: the faults must not push good items over it.
pub const MAX_RECEIVE_COUNT: u32 = 5;

/// How much work and how many faults: small in the test command, larger with
/// `TEST_INGEST_FAULT_SCALE=large`.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    pub files: usize,
    pub rows_per_file: usize,
    pub faults: usize,
    /// How long a scenario may take to load everything once its faults are over.
    pub timeout: Duration,
}

impl Scale {
    pub fn from_env() -> Self {
        match std::env::var("TEST_INGEST_FAULT_SCALE").as_deref() {
            Ok("large") => Self {
                files: 200,
                rows_per_file: 2_000,
                faults: 30,
                timeout: Duration::from_secs(1_200),
            },
            _ => Self {
                files: 40,
                rows_per_file: 1_000,
                faults: 8,
                timeout: Duration::from_secs(300),
            },
        }
    }
}

/// The seed of a run's random choices: `TEST_INGEST_FAULT_SEED` to repeat a run, else the
/// clock. Printed by every scenario.
pub fn seed() -> u64 {
    let seed = std::env::var("TEST_INGEST_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
        });
    // Shown with the output of a failed test.
    println!("seed {seed} (TEST_INGEST_FAULT_SEED={seed} repeats this run's choices)");
    seed
}

/// What every fault scenario starts from: its scale, its seeded random choices, and a
/// fixture whose target already has no unique index, with a configuration that points the
/// processor straight at the peers.
#[derive(Debug)]
pub struct Scenario {
    pub scale: Scale,
    pub seed: u64,
    pub rng: StdRng,
    pub fixture: FaultFixture,
    pub config: PathBuf,
}

impl Scenario {
    /// A scenario for `processor serve` run from `binary`, loading `sink`.
    pub async fn start(binary: &str, name: &str, sink: Sink) -> Self {
        Self::with_max_receive_count(binary, name, sink, |_| MAX_RECEIVE_COUNT).await
    }

    /// A scenario whose dead-letter queue takes a message after another number of receives.
    pub async fn with_max_receive_count(
        binary: &str,
        name: &str,
        sink: Sink,
        receives: impl Fn(&Scale) -> u32,
    ) -> Self {
        let scale = Scale::from_env();
        let seed = seed();
        let fixture = FaultFixture::new(binary, name, receives(&scale), sink).await;
        let config = fixture.config(&aws_endpoint());
        fixture.make_duplicates_visible(&config).await;
        Self {
            scale,
            seed,
            rng: StdRng::seed_from_u64(seed),
            fixture,
            config,
        }
    }
}

/// One expected row of `order_items`: product, quantity and unit price (as text).
pub type Line = (String, i32, String);
/// Expected rows by key (order id, line number).
pub type Expected = BTreeMap<(i64, i32), Line>;

/// How the target differs from the expected rows (keys of the rows concerned).
#[derive(Debug)]
pub struct RowReport {
    pub expected: usize,
    pub found: usize,
    pub doubled: Vec<(i64, i32)>,
    pub missing: Vec<(i64, i32)>,
    pub unexpected: Vec<(i64, i32)>,
    pub wrong: Vec<(i64, i32)>,
}

#[derive(Debug)]
pub struct FaultFixture {
    pub clients: AwsClients,
    pub schemas: TestSchemas,
    pub bucket: String,
    pub queue_url: String,
    pub dlq_url: String,
    pub queue: SqsQueue,
    pub dir: PathBuf,
    catalog_path: PathBuf,
    binary: PathBuf,
    lives: std::sync::atomic::AtomicU32,
    /// Runs while the fixture lives, when the sink is Redshift.
    redshift: Option<RedshiftStandIn>,
}

impl FaultFixture {
    pub async fn new(binary: &str, name: &str, max_receive_count: u32, sink: Sink) -> Self {
        let clients = clients().await;
        let schemas = TestSchemas::new();
        let dir = std::env::temp_dir().join(unique_name(name));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let catalog_path = dir.join("catalog.toml");
        std::fs::write(&catalog_path, schemas.retarget(EXAMPLE_CATALOG)).expect("write catalog");
        let bucket = create_bucket(&clients.s3, "faults").await;
        let (queue_url, dlq_url) = create_queue_with_dlq(&clients.sqs, max_receive_count).await;
        let queue = SqsQueue::new(clients.sqs.clone(), &queue_url, MessageSizeLimit::default());
        let redshift = match sink {
            Sink::Postgres => None,
            Sink::Redshift => Some(RedshiftStandIn::start(clients.s3.clone()).await),
        };
        Self {
            redshift,
            clients,
            schemas,
            bucket,
            queue_url,
            dlq_url,
            queue,
            dir,
            catalog_path,
            binary: PathBuf::from(binary),
            lives: std::sync::atomic::AtomicU32::new(0),
        }
    }

    /// Uploads `files` order-item files (every third gzip-compressed, keys with a space and
    /// a non-ASCII character) and returns their work items and every row they hold.
    pub async fn upload_order_items(
        &self,
        files: usize,
        rows_per_file: usize,
    ) -> (Vec<WorkItem>, Expected) {
        let mut items = Vec::new();
        let mut expected = Expected::new();
        for file in 0..files {
            let mut csv = String::from("order_id,line_number,product_sku,quantity,unit_price\n");
            for row in 0..rows_per_file {
                let key = ((file * 1_000_000 + row / 4) as i64, (row % 4) as i32);
                let line: Line = (
                    format!("SKU-{file}-{row}"),
                    (row % 9 + 1) as i32,
                    format!("{}.{:02}", row % 300, row % 100),
                );
                csv.push_str(&format!(
                    "{},{},{},{},{}\n",
                    key.0, key.1, line.0, line.1, line.2
                ));
                expected.insert(key, line);
            }
            let (key, body) = if file % 3 == 0 {
                let mut encoder =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                encoder.write_all(csv.as_bytes()).expect("gzip");
                (
                    format!("landing/order_items/part {file:04} ✓.csv.gz"),
                    encoder.finish().expect("gzip"),
                )
            } else {
                (
                    format!("landing/order_items/part {file:04} ✓.csv"),
                    csv.into_bytes(),
                )
            };
            items.push(self.upload(&key, body).await);
        }
        (items, expected)
    }

    /// The catalog the processor reads: the example's, retargeted to the fixture's
    /// schemas, with `change` applied to its text (what an operator edits).
    pub fn write_catalog(&self, change: impl FnOnce(String) -> String) {
        let text = change(self.schemas.retarget(EXAMPLE_CATALOG));
        std::fs::write(&self.catalog_path, text).expect("write catalog");
    }

    pub async fn upload(&self, key: &str, body: Vec<u8>) -> WorkItem {
        upload_file(
            &self.clients.s3,
            &self.bucket,
            key,
            body,
            "order_items",
            FileFormat::Csv,
        )
        .await
    }

    pub async fn send_items(&self, items: &[WorkItem]) {
        let messages: Vec<OutgoingMessage> = items
            .iter()
            .map(|item| {
                item.to_json(MessageSizeLimit::default())
                    .expect("work item json")
                    .into()
            })
            .collect();
        self.send(messages).await;
    }

    pub async fn send(&self, messages: Vec<OutgoingMessage>) {
        let report = self.queue.send(&messages).await;
        assert!(report.all_succeeded(), "send failed: {:?}", report.failed);
    }

    /// The `[warehouse]` section for the fixture's sink.
    fn warehouse_section(&self) -> String {
        match &self.redshift {
            None => format!("[warehouse]\nurl = \"{}\"\n", postgres_url()),
            Some(standin) => format!(
                "[warehouse]\nurl = \"{}\"\nkind = \"redshift\"\n# The stand-in speaks plain TCP on loopback.\ntls = \"disable\"\n\n[warehouse.redshift]\niam_role = \"arn:aws:iam::123456789012:role/redshift-copy\"\nstaging = \"s3://{}/_staging/\"\nstaging_files = 2\n",
                standin.url(),
                self.bucket
            ),
        }
    }

    /// The processor's config file, with the AWS endpoint given (the emulator or a proxy
    /// in front of it).
    pub fn config(&self, aws_endpoint: &str) -> PathBuf {
        let path = self.dir.join(unique_name("config") + ".toml");
        std::fs::write(
            &path,
            format!(
                r#"
[aws]
region = "us-east-1"
endpoint_url = "{aws_endpoint}"
s3_force_path_style = true
max_attempts = 3
connect_timeout_ms = 1000
attempt_timeout_secs = 4
operation_timeout_secs = 15

[queue]
url = "{queue_url}"
dead_letter_url = "{dlq_url}"
wait_time_secs = 1
visibility_timeout_secs = 10

[catalog]
path = "{catalog}"

{warehouse}
[processor]
workers = 2
platform_schema = "{platform}"
shutdown_grace_secs = 5
retry_backoff_secs = 1
max_retry_backoff_secs = 4
health_address = "off"

[telemetry]
log_format = "text"
"#,
                queue_url = self.queue_url,
                dlq_url = self.dlq_url,
                catalog = self.catalog_path.display(),
                platform = self.schemas.platform,
                warehouse = self.warehouse_section(),
            ),
        )
        .expect("write config");
        path
    }

    /// Starts `processor serve`; its log goes to a file in the fixture's folder.
    pub fn start_processor(&self, config: &Path) -> RunningProcessor {
        let life = self
            .lives
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log_path = self.dir.join(format!("processor-{life}.log"));
        let log = std::fs::File::create(&log_path).expect("log file");
        let child = Command::new(&self.binary)
            .arg("--config")
            .arg(config)
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start processor");
        RunningProcessor {
            child: Some(child),
            log_path,
        }
    }

    pub fn order_items_table(&self) -> String {
        format!("{}.order_items", self.schemas.sales)
    }

    /// Lets the processor create the target, then swaps its unique index for a plain one
    /// of the same name (which the processor's `CREATE UNIQUE INDEX IF NOT EXISTS` keeps);
    /// on Redshift there is none.
    pub async fn make_duplicates_visible(&self, config: &Path) {
        let processor = std::sync::Mutex::new(self.start_processor(config));
        let table = self.order_items_table();
        eventually(
            "the processor to create its tables",
            Duration::from_secs(120),
            || async {
                processor.lock().expect("lock").assert_running();
                let client = warehouse().await?;
                client
                    .query_one(&format!("SELECT count(*) FROM {table}"), &[])
                    .await
                    .ok()
                    .map(|_| ())
            },
        )
        .await;
        let processor = processor.into_inner().expect("lock");
        processor.kill();
        // The Redshift sink creates no index: a row loaded twice is stored twice already.
        if self.redshift.is_none() {
            let client = warehouse().await.expect("connect");
            without_unique_index(&client, &self.schemas.sales, "order_items").await;
        }
    }

    /// Ledger entries of `order_items` items, or `None` while the warehouse is down.
    pub async fn ledger_entries(&self) -> Option<i64> {
        let client = warehouse().await?;
        client
            .query_one(
                &format!(
                    "SELECT count(*) FROM {}.load_ledger WHERE dataset = 'order_items'",
                    self.schemas.platform
                ),
                &[],
            )
            .await
            .ok()
            .map(|row| row.get(0))
    }

    /// Waits until every item is in the ledger and no message is left in the queue;
    /// fails at once if more than `dead_letters` messages reach the dead-letter queue.
    pub async fn wait_until_loaded(&self, items: usize, dead_letters: u64, timeout: Duration) {
        eventually("every item in the ledger", timeout, || async {
            let (dead, in_flight) = queue_depth(&self.clients.sqs, &self.dlq_url).await;
            if dead + in_flight > dead_letters {
                panic!(
                    "{} messages in the dead-letter queue, {dead_letters} expected: {:#?}",
                    dead + in_flight,
                    self.dead_letters().await
                );
            }
            (self.ledger_entries().await? >= items as i64).then_some(())
        })
        .await;
        eventually("the work queue to empty", timeout, || async {
            (queue_depth(&self.clients.sqs, &self.queue_url).await == (0, 0)).then_some(())
        })
        .await;
        assert_eq!(
            self.ledger_entries().await,
            Some(items as i64),
            "one ledger entry per item"
        );
    }

    /// Compares the target with the expected rows.
    pub async fn compare_rows(&self, expected: &Expected) -> RowReport {
        let client = warehouse().await.expect("connect");
        let rows = client
            .query(
                &format!(
                    "SELECT order_id, line_number, product_sku, quantity, unit_price::text FROM {}",
                    self.order_items_table()
                ),
                &[],
            )
            .await
            .expect("rows");
        let mut found: Expected = BTreeMap::new();
        let mut doubled = Vec::new();
        for row in &rows {
            let key: (i64, i32) = (row.get(0), row.get(1));
            let line: Line = (row.get(2), row.get(3), row.get(4));
            if found.insert(key, line).is_some() {
                doubled.push(key);
            }
        }
        RowReport {
            expected: expected.len(),
            found: rows.len(),
            doubled,
            missing: expected
                .keys()
                .filter(|k| !found.contains_key(k))
                .copied()
                .collect(),
            unexpected: found
                .keys()
                .filter(|k| !expected.contains_key(k))
                .copied()
                .collect(),
            wrong: expected
                .iter()
                .filter(|(k, line)| found.get(k).is_some_and(|f| f != *line))
                .map(|(k, _)| *k)
                .collect(),
        }
    }

    /// Fails unless the target holds exactly the expected rows, each once; returns the
    /// number of rows found.
    pub async fn assert_rows_exact(&self, expected: &Expected) -> usize {
        let report = self.compare_rows(expected).await;
        assert!(
            report.doubled.is_empty()
                && report.missing.is_empty()
                && report.unexpected.is_empty()
                && report.wrong.is_empty(),
            "{} rows expected, {} found: {} doubled (first {:?}), {} missing (first {:?}), {} unexpected, {} with wrong values",
            report.expected,
            report.found,
            report.doubled.len(),
            report.doubled.first(),
            report.missing.len(),
            report.missing.first(),
            report.unexpected.len(),
            report.wrong.len()
        );
        if let Some(standin) = &self.redshift {
            assert!(
                !standin.copy_spans().is_empty(),
                "the rows came through Redshift's COPY"
            );
        }
        report.found
    }

    /// Every message in the dead-letter queue: its body and the reason attribute.
    pub async fn dead_letters(&self) -> Vec<(String, Option<String>)> {
        let dlq = SqsQueue::new(
            self.clients.sqs.clone(),
            &self.dlq_url,
            MessageSizeLimit::default(),
        );
        let mut all = Vec::new();
        loop {
            let received = dlq
                .receive(10, Duration::from_secs(1), Duration::from_secs(60))
                .await
                .expect("receive from the DLQ");
            if received.is_empty() {
                return all;
            }
            for message in received {
                all.push((
                    message.body.clone(),
                    message
                        .attributes
                        .get(shared::queue::REASON_ATTRIBUTE)
                        .cloned(),
                ));
            }
        }
    }
}

impl Drop for FaultFixture {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            std::fs::remove_dir_all(&self.dir).ok();
        }
    }
}

/// Replaces the unique index on a target's merge key with a plain one of the same name
/// (which the processor's `CREATE UNIQUE INDEX IF NOT EXISTS` then keeps), so the target
/// behaves like a Redshift table: a row loaded twice is stored twice.
pub async fn without_unique_index(client: &tokio_postgres::Client, schema: &str, table: &str) {
    // From the catalog tables, not the `pg_indexes` view: the view describes every index
    // before filtering, and fails on one another test drops at the same moment.
    let rows = client
        .query(
            "SELECT index.relname::text, pg_get_indexdef(index.oid) \
             FROM pg_index i \
             JOIN pg_class index ON index.oid = i.indexrelid \
             JOIN pg_class target ON target.oid = i.indrelid \
             JOIN pg_namespace n ON n.oid = target.relnamespace \
             WHERE n.nspname = $1 AND target.relname = $2 AND i.indisunique",
            &[&schema, &table],
        )
        .await
        .expect("indexes");
    assert_eq!(rows.len(), 1, "one unique index on {schema}.{table}");
    let (index, definition): (String, String) = (rows[0].get(0), rows[0].get(1));
    let plain = definition.replacen("CREATE UNIQUE INDEX", "CREATE INDEX", 1);
    client
        .batch_execute(&format!("DROP INDEX \"{schema}\".\"{index}\"; {plain}"))
        .await
        .expect("swap the index");
}

/// A new warehouse session, or `None` if it cannot be opened (the server is down).
pub async fn warehouse() -> Option<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(&postgres_url(), tokio_postgres::NoTls)
        .await
        .ok()?;
    tokio::spawn(connection);
    Some(client)
}

/// A `processor serve` process; killed with SIGKILL when dropped, so none outlives a test.
#[derive(Debug)]
pub struct RunningProcessor {
    child: Option<Child>,
    pub log_path: PathBuf,
}

impl RunningProcessor {
    /// SIGKILL: no shutdown, no flush, no deletes of what is in hand.
    pub fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits up to `timeout` for the process to exit; its status and whole log, or `None`
    /// if it still runs.
    pub fn wait_for_exit(
        &mut self,
        timeout: Duration,
    ) -> Option<(std::process::ExitStatus, String)> {
        let child = self.child.as_mut()?;
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
                return Some((status, log));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// Fails the test, with the end of the log, if the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            panic!(
                "the processor exited with {status}; last lines of its log:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
}

impl Drop for RunningProcessor {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
