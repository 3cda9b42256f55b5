//! `processor demo`: the whole platform on one machine with embedded defaults. It writes
//! the generated files into a local landing folder and the generated events into the
//! embedded stream, runs both ingest paths (the batch planner on the files; the
//! event-source poller and the stream handler on the stream) and the processor's workers
//! concurrently, then reports per dataset what loaded, what was rejected and why, how
//! many duplicate deliveries the ledger stopped, throughput and, for the stream, the
//! latency from arrival to commit.
//!
//! Everything lives in one folder: `demo.sqlite` (work queue, dead-letter queue, stream
//! log, warehouse), `objects/` (the buckets) and the poller's checkpoints. A run is
//! idempotent and resumable: files are only rewritten when their bytes change, events are
//! put exactly once (a run resumes after the last event the stream holds), the poller
//! resumes at its checkpoints, unfinished work items come back after their visibility
//! timeout, and every load skips what the ledger holds. A second run over the same data
//! adds no rows; a run killed at any point and started again ends with the same
//! warehouse as an uninterrupted one.

pub mod dev;
pub mod generate;
pub mod query;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ingest_batch::FileIngest;
use ingest_batch::plan::FilePlanner;
use ingest_stream::handler::StreamIngest;
use ingest_stream::poller::{Checkpoints, ReadProgress, ReadSettings, StopWhen, read_stream};
use rusqlite::params;
use shared::catalog::Catalog;
use shared::config::S3Location;
use shared::embedded::{EmbeddedDb, sql_error};
use shared::envelope::MessageSizeLimit;
use shared::queue::WorkQueue;
use shared::queue::{EmbeddedQueue, Redrive};
use shared::stream::EmbeddedStream;
use shared::stream::{KINESIS_MAX_BATCH_RECORDS, RecordStream, epoch_millis};
use tokio::sync::watch;

use crate::objects::folder::LocalBuckets;
use crate::pipeline::Pipeline;
use crate::timefmt::iso_utc_millis;
use crate::warehouse::Warehouse;
use crate::warehouse::sqlite::{SqliteWarehouse, table_name};
use crate::worker::{BatchSettings, Worker, WorkerSettings};
use generate::{DemoSize, Expected, generate};

/// The example catalog the demo loads (the same file the docs describe).
pub const EXAMPLE_CATALOG: &str = include_str!("../../../catalog/ecommerce.toml");
/// The bucket the landing files, quarantine and claim checks live in.
pub const BUCKET: &str = "demo";
/// The platform tables' prefix in the embedded warehouse.
pub const PLATFORM: &str = "ingest";
const WORK_QUEUE: &str = "work";
const DEAD_LETTER_QUEUE: &str = "work-dlq";
/// Receives before a message moves to the dead-letter queue (SQS's `maxReceiveCount`).
const MAX_RECEIVE_COUNT: u32 = 5;
const STREAM_SHARDS: u32 = 2;
const STREAM_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Where a demo keeps its state.
#[derive(Debug, Clone)]
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    pub fn database(&self) -> PathBuf {
        self.dir.join("demo.sqlite")
    }

    pub fn objects(&self) -> PathBuf {
        self.dir.join("objects")
    }

    /// The landing folder: files dropped here are what S3 uploads are in AWS.
    pub fn landing(&self) -> PathBuf {
        self.objects().join(BUCKET)
    }

    pub fn checkpoints(&self) -> PathBuf {
        self.dir.join("stream-checkpoints.json")
    }
}

/// What `demo` runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub dir: PathBuf,
    pub size: DemoSize,
    /// Events put into the stream per second.
    pub events_per_second: u32,
    pub workers: usize,
    /// How long a received work item stays hidden; after a crash, unfinished items
    /// come back this long after they were last extended.
    pub visibility_timeout: Duration,
}

/// Where a run stands, for the progress display.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    pub elapsed: Duration,
    pub files: usize,
    pub file_items_sent: usize,
    pub events_total: usize,
    pub events_put: usize,
    pub stream: ReadProgress,
    pub queue_visible: u64,
    pub queue_in_flight: u64,
    /// Rows the ledger records as loaded by this run.
    pub rows_loaded: i64,
}

/// One dataset after the run.
#[derive(Debug, Clone, Default)]
pub struct DatasetSummary {
    pub dataset: String,
    pub table: String,
    pub rows: i64,
    pub rows_added: i64,
    /// Rejected rows (files) or quarantined records (the stream), in total.
    pub rejected: i64,
    /// The most common reasons, with their counts (values in them replaced by `…`).
    pub top_reasons: Vec<(String, i64)>,
    /// Work items sent by this run, and how many of them the ledger had already loaded.
    pub items_sent: i64,
    pub duplicates_prevented: i64,
    /// Work items in the dead-letter queue, with the most common reasons.
    pub dead_lettered: i64,
    pub dead_letter_reasons: Vec<(String, i64)>,
    /// Rows per second of this run's loads.
    pub rows_per_second: f64,
    /// Arrival in the stream to commit, p50 and p99 in seconds (stream datasets).
    pub latency: Option<(f64, f64)>,
    pub expected: Expected,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct DemoSummary {
    pub datasets: Vec<DatasetSummary>,
    pub elapsed: Duration,
    pub dead_letters: u64,
    pub layout: Layout,
}

impl DemoSummary {
    /// Whether every dataset holds exactly the rows and rejects the generator made.
    pub fn matches_expectation(&self) -> bool {
        self.dead_letters == 0
            && self.datasets.iter().all(|d| {
                d.rows == d.expected.rows as i64 && d.rejected == d.expected.rejected as i64
            })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("demo folder {path}: {reason}")]
    Folder { path: PathBuf, reason: String },
    #[error(
        "{dir} holds a demo generated with {found}, not {wanted}; pass another --dir or delete that folder"
    )]
    OtherData {
        dir: PathBuf,
        found: String,
        wanted: String,
    },
    #[error("{0}")]
    Setup(String),
    #[error("{what} failed: {reason}")]
    Step { what: &'static str, reason: String },
}

fn step(what: &'static str) -> impl FnOnce(String) -> DemoError {
    move |reason| DemoError::Step { what, reason }
}

/// Writes a file unless it already holds exactly these bytes (so its entity tag, and
/// with it every work item's key, stays the same across runs).
fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<bool, DemoError> {
    let folder_error = |err: std::io::Error| DemoError::Folder {
        path: path.to_owned(),
        reason: err.to_string(),
    };
    if std::fs::read(path).is_ok_and(|existing| existing == bytes) {
        return Ok(false);
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(folder_error)?;
    }
    let partial = path.with_extension("partial");
    std::fs::write(&partial, bytes).map_err(folder_error)?;
    std::fs::rename(&partial, path).map_err(folder_error)?;
    Ok(true)
}

/// The generator's parameters, recorded in the database: a folder holds one data set.
async fn check_same_data(db: &EmbeddedDb, size: &DemoSize, dir: &Path) -> Result<(), DemoError> {
    let wanted = format!(
        "seed {}, {} customers, {} orders, {} events, dirty share {}",
        size.seed, size.customers, size.orders, size.events, size.dirty_share
    );
    let record = wanted.clone();
    let found: String = db
        .call("recording the demo's data set", move |conn| {
            conn.execute_batch(
                "CREATE TABLE IF NOT EXISTS demo_data (id INTEGER PRIMARY KEY CHECK (id = 1), generated TEXT NOT NULL)",
            )
            .map_err(sql_error("recording the demo's data set"))?;
            conn.execute(
                "INSERT INTO demo_data (id, generated) VALUES (1, ?1) ON CONFLICT (id) DO NOTHING",
                params![record],
            )
            .map_err(sql_error("recording the demo's data set"))?;
            conn.query_row("SELECT generated FROM demo_data WHERE id = 1", [], |row| {
                row.get(0)
            })
            .map_err(sql_error("recording the demo's data set"))
        })
        .await
        .map_err(|err| step("opening the demo database")(err.to_string()))?;
    if found != wanted {
        return Err(DemoError::OtherData {
            dir: dir.to_owned(),
            found,
            wanted,
        });
    }
    Ok(())
}

/// Per dataset: (rows in the target, rejects, ledger entries).
async fn counts(
    db: &EmbeddedDb,
    tables: Vec<(String, String)>,
) -> Result<BTreeMap<String, (i64, i64, i64)>, DemoError> {
    db.call("counting rows", move |conn| {
        let mut out = BTreeMap::new();
        for (dataset, table) in tables {
            let count =
                |sql: String, by_dataset: bool| -> Result<i64, shared::embedded::EmbeddedError> {
                    if by_dataset {
                        conn.query_row(&sql, params![dataset], |row| row.get(0))
                    } else {
                        conn.query_row(&sql, [], |row| row.get(0))
                    }
                    .map_err(sql_error("counting rows"))
                };
            let rows = count(format!("SELECT count(*) FROM \"{table}\""), false)?;
            let rejects = count(
                format!("SELECT count(*) FROM {PLATFORM}_rejects WHERE dataset = ?1"),
                true,
            )?;
            let ledger = count(
                format!("SELECT count(*) FROM {PLATFORM}_load_ledger WHERE dataset = ?1"),
                true,
            )?;
            out.insert(dataset, (rows, rejects, ledger));
        }
        Ok(out)
    })
    .await
    .map_err(|err| step("counting rows")(err.to_string()))
}

/// A reason with the values in it replaced, so reasons group by kind.
pub fn reason_kind(reason: &str) -> String {
    let mut kind = String::with_capacity(reason.len());
    let mut in_quotes = false;
    for c in reason.chars() {
        match (c, in_quotes) {
            ('"', false) => {
                in_quotes = true;
                kind.push_str("\"…");
            }
            ('"', true) => {
                in_quotes = false;
                kind.push('"');
            }
            (_, true) => {}
            (c, false) => kind.push(c),
        }
    }
    // JSON parse errors end with a position: the kind is the same wherever it is.
    match kind.find(" at line ") {
        Some(at) => kind[..at].to_owned(),
        None => kind,
    }
}

fn top(reasons: impl Iterator<Item = String>, limit: usize) -> Vec<(String, i64)> {
    let mut counted: BTreeMap<String, i64> = BTreeMap::new();
    for reason in reasons {
        *counted.entry(reason_kind(&reason)).or_default() += 1;
    }
    let mut sorted: Vec<(String, i64)> = counted.into_iter().collect();
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    sorted.truncate(limit);
    sorted
}

/// Quarantined records, each once (a batch read again after a crash is written again),
/// with their reasons.
fn quarantined(folder: &Path) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    let mut reasons = Vec::new();
    let mut stack = vec![folder.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            for line in text.lines() {
                let Ok(entry) = serde_json::from_str::<serde_json::Value>(line) else {
                    continue;
                };
                let id = format!(
                    "{}/{}/{}",
                    entry["shard_id"], entry["sequence_number"], entry["sub_sequence_number"]
                );
                if seen.insert(id) {
                    reasons.push(entry["reason"].as_str().unwrap_or_default().to_owned());
                }
            }
        }
    }
    reasons
}

/// The embedded platform in a folder: queues, stream, buckets, warehouse, both ingest
/// paths and a worker, wired like the AWS deployment. `demo` and `dev` both run on it.
#[derive(Debug)]
pub struct LocalPlatform {
    pub db: EmbeddedDb,
    pub catalog: Arc<Catalog>,
    pub queue: Arc<EmbeddedQueue>,
    pub dead_letter: Arc<EmbeddedQueue>,
    pub stream: Arc<EmbeddedStream>,
    pub stream_name: String,
    pub buckets: Arc<LocalBuckets>,
    pub warehouse: Arc<SqliteWarehouse>,
    /// (dataset, embedded table) of every dataset.
    pub tables: Vec<(String, String)>,
    pub file_ingest: FileIngest,
    pub stream_ingest: Arc<StreamIngest>,
    pub worker: Arc<Worker>,
}

impl LocalPlatform {
    /// Opens (or creates) everything in `layout`, with the targets of every dataset.
    pub async fn open(
        layout: &Layout,
        catalog: Arc<Catalog>,
        visibility_timeout: Duration,
    ) -> Result<Self, DemoError> {
        // The embedded database: queue, dead-letter queue and stream on one connection, the
        // warehouse on its own.
        let db = EmbeddedDb::open(&layout.database())
            .map_err(|err| step("opening the demo database")(err.to_string()))?;
        let size_limit = MessageSizeLimit::default();
        let queue = Arc::new(EmbeddedQueue::new(
            db.clone(),
            WORK_QUEUE,
            size_limit,
            Some(Redrive {
                dead_letter: DEAD_LETTER_QUEUE.into(),
                max_receive_count: MAX_RECEIVE_COUNT,
            }),
        ));
        let dead_letter = Arc::new(EmbeddedQueue::new(
            db.clone(),
            DEAD_LETTER_QUEUE,
            size_limit,
            None,
        ));
        let stream_name = catalog
            .datasets()
            .find_map(|d| d.stream.as_ref().map(|s| s.stream.clone()))
            .ok_or_else(|| DemoError::Setup("the catalog routes no stream".into()))?;
        let stream = Arc::new(
            EmbeddedStream::create(db.clone(), &stream_name, STREAM_SHARDS, STREAM_RETENTION)
                .await
                .map_err(|err| step("creating the stream")(err.to_string()))?,
        );
        let buckets = Arc::new(LocalBuckets::new(layout.objects()));
        let warehouse = Arc::new(
            SqliteWarehouse::open(&layout.database(), PLATFORM)
                .map_err(|err| step("opening the warehouse")(err.to_string()))?,
        );
        let pipeline = Arc::new(
            Pipeline::new(Arc::clone(&catalog), Arc::clone(&buckets) as _)
                .await
                .map_err(|err| step("planning the transforms")(err.to_string()))?,
        );
        warehouse
            .ensure_platform_tables()
            .await
            .map_err(|err| step("creating the platform tables")(err.to_string()))?;
        let mut tables = Vec::new();
        for dataset in catalog.datasets() {
            let schema = pipeline
                .load_schema(&dataset.name)
                .ok_or_else(|| DemoError::Setup(format!("dataset {} has no plan", dataset.name)))?;
            warehouse
                .ensure_target(dataset, schema)
                .await
                .map_err(|err| step("creating the target tables")(err.to_string()))?;
            tables.push((dataset.name.clone(), table_name(&dataset.target)));
        }
        // The batch path: the landing files, planned and sent like S3 notifications.
        let file_ingest = FileIngest {
            planner: FilePlanner {
                catalog: Arc::clone(&catalog),
                reader: Arc::clone(&buckets) as _,
                part_size: shared::config::FileSettings::default().part_size_bytes,
            },
            queue: Arc::clone(&queue) as Arc<dyn WorkQueue>,
            size_limit,
            source: "demo",
        };
        // The stream path: the poller reads the embedded stream into the stream handler.
        let stream_ingest = Arc::new(StreamIngest {
            catalog: Arc::clone(&catalog),
            queue: Arc::clone(&queue) as Arc<dyn WorkQueue>,
            objects: Arc::clone(&buckets) as _,
            quarantine: S3Location {
                bucket: BUCKET.into(),
                prefix: "quarantine/".into(),
            },
            claim_checks: S3Location {
                bucket: BUCKET.into(),
                prefix: "claim-checks/".into(),
            },
            size_limit,
            replay: None,
        });
        let worker = Arc::new(Worker {
            queue: Arc::clone(&queue) as Arc<dyn WorkQueue>,
            dead_letter: Some(Arc::clone(&dead_letter) as Arc<dyn WorkQueue>),
            pipeline,
            warehouse: Arc::clone(&warehouse) as Arc<dyn Warehouse>,
            settings: WorkerSettings {
                wait_time: Duration::from_secs(1),
                visibility_timeout,
                retry_backoff: Duration::from_secs(1),
                max_retry_backoff: Duration::from_secs(10),
            },
            batching: BatchSettings::default(),
            announcer: None,
        });
        Ok(Self {
            db,
            catalog,
            queue,
            dead_letter,
            stream,
            stream_name,
            buckets,
            warehouse,
            tables,
            file_ingest,
            stream_ingest,
            worker,
        })
    }
}

/// Runs the demo; `progress` is called about twice a second.
pub async fn run_demo(
    options: &DemoOptions,
    progress: &mut (dyn FnMut(&Progress) + Send),
) -> Result<DemoSummary, DemoError> {
    let started = Instant::now();
    let run_started = iso_utc_millis(epoch_millis(SystemTime::now()));
    let layout = Layout {
        dir: options.dir.clone(),
    };
    let generated = generate(&options.size);
    let catalog = Arc::new(
        Catalog::from_toml(EXAMPLE_CATALOG, "catalog/ecommerce.toml")
            .map_err(|err| DemoError::Setup(err.to_string()))?,
    );

    let platform = LocalPlatform::open(&layout, catalog, options.visibility_timeout).await?;
    check_same_data(&platform.db, &options.size, &layout.dir).await?;
    for file in &generated.files {
        write_if_changed(&layout.landing().join(&file.key), &file.bytes)?;
    }
    let LocalPlatform {
        queue,
        dead_letter,
        stream,
        stream_name,
        buckets,
        warehouse,
        tables,
        file_ingest,
        stream_ingest,
        worker,
        catalog,
        ..
    } = platform;
    let before = counts(warehouse.db(), tables.clone()).await?;
    let dead_before = dead_letters_by_dataset(&dead_letter).await?;

    let mut objects = Vec::with_capacity(generated.files.len());
    for file in &generated.files {
        objects.push(
            buckets
                .created_object(BUCKET, &file.key)
                .await
                .map_err(|err| step("reading a landing file")(err.to_string()))?,
        );
    }
    let (file_items, _) = file_ingest
        .plan_objects(&objects)
        .await
        .map_err(|err| step("planning the landing files")(err.to_string()))?;
    let mut items_sent: BTreeMap<String, i64> = BTreeMap::new();
    for item in &file_items {
        *items_sent.entry(item.dataset().to_owned()).or_default() += 1;
    }

    let (stop, stopped) = watch::channel(false);
    let mut workers = Vec::new();
    for _ in 0..options.workers.max(1) {
        let (worker, stopped) = (Arc::clone(&worker), stopped.clone());
        workers.push(tokio::spawn(async move { worker.run(stopped).await }));
    }
    let (read_tx, read_rx) = watch::channel(ReadProgress::default());
    let poller = {
        let (stream, ingest, stopped) = (Arc::clone(&stream), Arc::clone(&stream_ingest), stopped);
        let checkpoint_file = layout.checkpoints();
        tokio::spawn(async move {
            let settings = ReadSettings {
                // The stack's default batch size; at five reads a second per shard.
                batch_size: 500,
                poll_interval: Duration::from_millis(250),
                stop: StopWhen::Stopped,
                checkpoint_file: Some(checkpoint_file.clone()),
                ..ReadSettings::default()
            };
            let mut checkpoints = Checkpoints::load(&checkpoint_file)?;
            read_stream(
                stream.as_ref(),
                &ingest,
                &settings,
                &mut checkpoints,
                stopped,
                &mut |read| {
                    read_tx.send_replace(read.clone());
                },
            )
            .await
        })
    };
    let files_task = tokio::spawn(async move { file_ingest.send(&file_items).await });
    // Events are put exactly once: a resumed run continues after the last one stored.
    let already = stream
        .record_count()
        .await
        .map_err(|err| step("reading the stream")(err.to_string()))? as usize;
    let events_total = generated.events.len();
    let (put_tx, put_rx) = watch::channel(already.min(events_total));
    let producer = {
        let stream = Arc::clone(&stream);
        let events = generated.events;
        let per_second = options.events_per_second.max(1) as usize;
        tokio::spawn(async move {
            // Ten puts a second, each at most one PutRecords' worth.
            let per_put = (per_second / 10).clamp(1, KINESIS_MAX_BATCH_RECORDS);
            let mut ticks = tokio::time::interval(Duration::from_millis(100));
            let mut next = already.min(events.len());
            while next < events.len() {
                ticks.tick().await;
                let end = (next + per_put).min(events.len());
                let put = stream.put_records(&events[next..end]).await;
                if let Some(failed) = put.failed.first() {
                    return Err(format!("{}: {}", failed.code, failed.message));
                }
                next = end;
                put_tx.send_replace(next);
            }
            Ok(())
        })
    };

    let mut files_sent: Option<usize> = None;
    let mut producer_done = false;
    let mut idle_checks = 0;
    let mut files_task = Some(files_task);
    let mut producer = Some(producer);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Some(task) = files_task.as_mut().filter(|t| t.is_finished()) {
            let sent = task
                .await
                .map_err(|err| step("sending the file items")(err.to_string()))?
                .map_err(|err| step("sending the file items")(err.to_string()))?;
            files_sent = Some(sent);
            files_task = None;
        }
        if let Some(task) = producer.as_mut().filter(|t| t.is_finished()) {
            task.await
                .map_err(|err| step("putting events")(err.to_string()))?
                .map_err(step("putting events"))?;
            producer_done = true;
            producer = None;
        }
        if poller.is_finished() {
            return Err(DemoError::Step {
                what: "reading the stream",
                reason: "the poller stopped early".into(),
            });
        }
        let depth = queue
            .depth()
            .await
            .map_err(|err| step("reading the queue")(err.to_string()))?;
        let rows_loaded: i64 = rows_loaded_since(warehouse.db(), run_started.clone()).await?;
        progress(&Progress {
            elapsed: started.elapsed(),
            files: objects.len(),
            file_items_sent: files_sent.unwrap_or(0),
            events_total,
            events_put: *put_rx.borrow(),
            stream: read_rx.borrow().clone(),
            queue_visible: depth.visible,
            queue_in_flight: depth.in_flight,
            rows_loaded,
        });
        let stream_read = caught_up(&stream, &layout.checkpoints()).await?;
        let idle = files_sent.is_some()
            && producer_done
            && stream_read
            && depth.visible == 0
            && depth.in_flight == 0;
        idle_checks = if idle { idle_checks + 1 } else { 0 };
        if idle_checks >= 2 {
            break;
        }
    }
    stop.send_replace(true);
    let read = poller
        .await
        .map_err(|err| step("reading the stream")(err.to_string()))?
        .map_err(|err| step("reading the stream")(err.to_string()))?;
    for worker in workers {
        worker
            .await
            .map_err(|err| step("running a worker")(err.to_string()))?;
    }
    let elapsed = started.elapsed();
    for dataset in catalog.datasets().filter(|d| d.stream.is_some()) {
        *items_sent.entry(dataset.name.clone()).or_default() += read.work_items_sent as i64;
    }

    // The summary.
    let after = counts(warehouse.db(), tables.clone()).await?;
    let mut dead_by_dataset = dead_letters_by_dataset(&dead_letter).await?;
    let quarantine_reasons = quarantined(&layout.landing().join("quarantine"));
    let mut datasets = Vec::new();
    for (name, table) in &tables {
        let (rows, rejects, ledger) = after.get(name).copied().unwrap_or_default();
        let (rows_before, _, ledger_before) = before.get(name).copied().unwrap_or_default();
        let is_stream = catalog.get(name).is_some_and(|d| d.stream.is_some());
        let (rejected, top_reasons) = if is_stream {
            (
                quarantine_reasons.len() as i64,
                top(quarantine_reasons.iter().cloned(), 3),
            )
        } else {
            let reasons = reasons_of(warehouse.db(), name.clone()).await?;
            (rejects, top(reasons.into_iter(), 3))
        };
        let sent = items_sent.get(name).copied().unwrap_or(0);
        let loaded_items = ledger - ledger_before;
        let dead = dead_by_dataset.remove(name).unwrap_or_default();
        let dead_before = dead_before.get(name).map_or(0, Vec::len) as i64;
        let latency = if is_stream {
            latencies(
                warehouse.db(),
                table.clone(),
                stream_name.clone(),
                run_started.clone(),
            )
            .await?
        } else {
            None
        };
        datasets.push(DatasetSummary {
            dataset: name.clone(),
            table: table.clone(),
            rows,
            rows_added: rows - rows_before,
            rejected,
            top_reasons,
            items_sent: sent,
            duplicates_prevented: (sent - loaded_items - (dead.len() as i64 - dead_before)).max(0),
            dead_lettered: dead.len() as i64,
            dead_letter_reasons: top(dead.into_iter(), 3),
            rows_per_second: (rows - rows_before) as f64 / elapsed.as_secs_f64().max(0.001),
            latency,
            expected: generated
                .expected
                .get(name.as_str())
                .copied()
                .unwrap_or_default(),
        });
    }
    let dead_letters = dead_letter
        .depth()
        .await
        .map(|d| d.visible + d.in_flight)
        .map_err(|err| step("reading the dead-letter queue")(err.to_string()))?;
    Ok(DemoSummary {
        datasets,
        elapsed,
        dead_letters,
        layout,
    })
}

/// The reasons of the dead letters, by dataset (the items' own, or the receive limit for
/// items SQS-style redrive moved).
async fn dead_letters_by_dataset(
    dead_letter: &EmbeddedQueue,
) -> Result<BTreeMap<String, Vec<String>>, DemoError> {
    let mut by_dataset: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (body, attributes) in dead_letter
        .peek(u32::MAX)
        .await
        .map_err(|err| step("reading the dead-letter queue")(err.to_string()))?
    {
        let dataset = shared::envelope::WorkItem::from_json(&body)
            .map(|item| item.dataset().to_owned())
            .unwrap_or_else(|_| "(unreadable)".to_owned());
        let reason = attributes
            .get(shared::queue::REASON_ATTRIBUTE)
            .cloned()
            .unwrap_or_else(|| format!("received {MAX_RECEIVE_COUNT} times without success"));
        by_dataset.entry(dataset).or_default().push(reason);
    }
    Ok(by_dataset)
}

/// Whether the poller's checkpoints have reached every shard's newest record.
async fn caught_up(stream: &EmbeddedStream, checkpoint_file: &PathBuf) -> Result<bool, DemoError> {
    let newest = stream
        .newest_sequences()
        .await
        .map_err(|err| step("reading the stream")(err.to_string()))?;
    let Ok(checkpoints) = Checkpoints::load(checkpoint_file) else {
        return Ok(false); // being replaced this very moment
    };
    Ok(newest.iter().all(|(shard, sequence)| {
        checkpoints
            .shards
            .get(shard)
            .and_then(|c| c.sequence_number.as_ref())
            == Some(sequence)
    }))
}

async fn rows_loaded_since(db: &EmbeddedDb, since: String) -> Result<i64, DemoError> {
    db.call("counting loaded rows", move |conn| {
        conn.query_row(
            &format!(
                "SELECT coalesce(sum(rows_loaded), 0) FROM {PLATFORM}_load_ledger WHERE loaded_at >= ?1"
            ),
            params![since],
            |row| row.get(0),
        )
        .map_err(sql_error("counting loaded rows"))
    })
    .await
    .map_err(|err| step("counting loaded rows")(err.to_string()))
}

async fn reasons_of(db: &EmbeddedDb, dataset: String) -> Result<Vec<String>, DemoError> {
    db.call("reading rejects", move |conn| {
        let mut select = conn
            .prepare(&format!(
                "SELECT reason FROM {PLATFORM}_rejects WHERE dataset = ?1"
            ))
            .map_err(sql_error("reading rejects"))?;
        select
            .query_map(params![dataset], |row| row.get(0))
            .and_then(Iterator::collect)
            .map_err(sql_error("reading rejects"))
    })
    .await
    .map_err(|err| step("reading rejects")(err.to_string()))
}

/// p50 and p99 seconds from each record's arrival in the stream to the commit of its row,
/// over the rows this run loaded.
async fn latencies(
    db: &EmbeddedDb,
    table: String,
    stream: String,
    since: String,
) -> Result<Option<(f64, f64)>, DemoError> {
    let mut seconds: Vec<f64> = db
        .call("measuring latency", move |conn| {
            let mut select = conn
                .prepare(&format!(
                    "SELECT (julianday(t._ingest_loaded_at) - julianday(r.arrival_ms / 1000.0, 'unixepoch')) * 86400.0
                     FROM \"{table}\" AS t JOIN stream_records AS r
                       ON r.stream = ?1 AND r.seq = CAST(t._ingest_offset AS INTEGER)
                     WHERE t._ingest_loaded_at >= ?2"
                ))
                .map_err(sql_error("measuring latency"))?;
            select
                .query_map(params![stream, since], |row| row.get(0))
                .and_then(Iterator::collect)
                .map_err(sql_error("measuring latency"))
        })
        .await
        .map_err(|err| step("measuring latency")(err.to_string()))?;
    if seconds.is_empty() {
        return Ok(None);
    }
    seconds.sort_by(f64::total_cmp);
    let at = |p: f64| {
        let rank = ((p / 100.0) * seconds.len() as f64).ceil() as usize;
        seconds[rank.clamp(1, seconds.len()) - 1]
    };
    Ok(Some((at(50.0), at(99.0))))
}

/// The summary as the table `demo` prints.
pub fn render_summary(summary: &DemoSummary) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "\n{:<20} {:<22} {:>8} {:>8} {:>9} {:>7} {:>7} {:>9}  {}\n",
        "dataset",
        "table",
        "rows",
        "added",
        "rejected",
        "items",
        "dupes",
        "rows/s",
        "stream latency p50 / p99"
    ));
    for d in &summary.datasets {
        let latency = d
            .latency
            .map(|(p50, p99)| format!("{p50:.2} s / {p99:.2} s"))
            .unwrap_or_else(|| "-".into());
        out.push_str(&format!(
            "{:<20} {:<22} {:>8} {:>8} {:>9} {:>7} {:>7} {:>5} {:>9.0}  {}\n",
            d.dataset,
            d.table,
            d.rows,
            d.rows_added,
            d.rejected,
            d.items_sent,
            d.duplicates_prevented,
            d.dead_lettered,
            d.rows_per_second,
            latency
        ));
    }
    out.push_str("\nTop reasons for rejected rows (quarantined records for the stream):\n");
    for d in &summary.datasets {
        for (reason, count) in &d.top_reasons {
            out.push_str(&format!("  {:<20} {count:>5}  {reason}\n", d.dataset));
        }
    }
    if summary.datasets.iter().any(|d| d.dead_lettered > 0) {
        out.push_str(
            "\nDead-lettered work items (in the dead-letter queue, with their reasons):\n",
        );
        for d in &summary.datasets {
            for (reason, count) in &d.dead_letter_reasons {
                out.push_str(&format!("  {:<20} {count:>5}  {reason}\n", d.dataset));
            }
        }
    }
    let expected = if summary.matches_expectation() {
        "every dataset holds exactly the rows and rejects the generator made"
    } else {
        "MISMATCH: some dataset differs from what the generator made (see rows, rejected and dead letters)"
    };
    out.push_str(&format!(
        "\nDone in {:.1} s; dead letters: {}; {expected}.\n",
        summary.elapsed.as_secs_f64(),
        summary.dead_letters
    ));
    out.push_str(&format!(
        "`items` are work items sent by this run; `dupes` of them were already in the ledger and loaded nothing; `dead` are in the dead-letter queue.\n\nQuery the warehouse:\n  cargo run --release -p processor -- query --dir {} \"SELECT status, count(*) FROM events_order_status GROUP BY status\"\n",
        summary.layout.dir.display()
    ));
    out
}
