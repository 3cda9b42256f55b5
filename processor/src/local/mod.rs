//! The local platform: the whole platform on one machine with embedded defaults, in one
//! folder, wired like the AWS deployment (`LocalPlatform`). `demo` writes the generated
//! files into its landing folder and the generated events into its stream and runs both
//! ingest paths and the workers; `dev` watches the landing folder; `query` reads the
//! warehouse.
//!
//! Everything lives in one folder: `demo.sqlite` (work queue, dead-letter queue, stream
//! log, warehouse), `objects/` (the buckets) and the poller's checkpoints. A run is
//! idempotent and resumable: files are only rewritten when their bytes change, events are
//! put exactly once (a run resumes after the last event the stream holds), the poller
//! resumes at its checkpoints, unfinished work items come back after their visibility
//! timeout, and every load skips what the ledger holds. A second run over the same data
//! adds no rows; a run killed at any point and started again ends with the same
//! warehouse as an uninterrupted one.

mod demo;
pub mod dev;
mod file_outcomes;
pub mod generate;
pub mod kinesis;
pub mod operations;
pub mod put;
pub mod query;

pub use demo::{DatasetSummary, DemoOptions, DemoSummary, Progress, render_summary, run_demo};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ingest_batch::FileIngest;
use ingest_batch::plan::FilePlanner;
use ingest_stream::handler::StreamIngest;
use rusqlite::params;
use shared::catalog::Catalog;
use shared::config::S3Location;
use shared::embedded::{EmbeddedDb, sql_error};
use shared::envelope::MessageSizeLimit;
use shared::error::BoxError;
use shared::queue::WorkQueue;
use shared::queue::{EmbeddedQueue, Redrive};
use shared::stream::EmbeddedStream;

use ingest_stream::poller::{Checkpoints, ReadProgress, ReadSettings, StopWhen, read_stream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::objects::folder::LocalBuckets;
use crate::pipeline::Pipeline;
use crate::warehouse::Warehouse;
use crate::warehouse::sqlite::{SqliteWarehouse, table_name};
use crate::worker::{BatchSettings, Worker, WorkerSettings};

/// The example catalog the demo loads (the same file the docs describe).
pub const EXAMPLE_CATALOG: &str = include_str!("../../../catalog/ecommerce.toml");
/// The bucket the landing files, quarantine and claim checks live in.
pub const BUCKET: &str = "demo";
/// The local platform's one bucket, as commands name it (`backfill --bucket`).
pub const LOCAL_BUCKET: &str = BUCKET;
/// The platform tables' prefix in the embedded warehouse.
pub(crate) const PLATFORM: &str = "ingest";
const WORK_QUEUE: &str = "work";
const DEAD_LETTER_QUEUE: &str = "work-dlq";
/// Receives before a message moves to the dead-letter queue (SQS's `maxReceiveCount`).
const MAX_RECEIVE_COUNT: u32 = 5;
const STREAM_SHARDS: u32 = 2;
/// The stream of a catalog that routes none.
const LOCAL_STREAM: &str = "local-events";
const STREAM_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Prefixes of the landing bucket the platform writes itself.
const OWN_PREFIXES: &[&str] = &["quarantine/", "claim-checks/"];

/// The files landed in the landing bucket (not the platform's own), with their size and
/// modification time, by key.
pub(crate) fn landed_files(
    buckets: &LocalBuckets,
) -> BTreeMap<String, (u64, std::time::SystemTime)> {
    let mut files = buckets.files(BUCKET);
    files.retain(|key, _| !OWN_PREFIXES.iter().any(|p| key.starts_with(p)));
    files
}

/// The catalog file `demo` writes into its folder.
const CATALOG_FILE: &str = "catalog.toml";
/// The config file `demo` writes into its folder.
const LOCAL_CONFIG: &str = "local.toml";

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

    /// The catalog `demo` writes (the example's), to copy and edit.
    pub fn catalog(&self) -> PathBuf {
        self.dir.join(CATALOG_FILE)
    }

    /// The config `demo` writes: `[local]` naming this folder, `[catalog]` its catalog.
    pub fn config(&self) -> PathBuf {
        self.dir.join(LOCAL_CONFIG)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("demo folder {path}")]
    Folder {
        path: PathBuf,
        source: std::io::Error,
    },
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
    #[error("the example catalog does not read")]
    Catalog(#[from] shared::catalog::CatalogError),
    #[error("{what} failed")]
    Step {
        what: &'static str,
        source: BoxError,
    },
}

fn step<E: Into<BoxError>>(what: &'static str) -> impl FnOnce(E) -> DemoError {
    move |err| DemoError::Step {
        what,
        source: err.into(),
    }
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
    .map_err(|err| step("counting rows")(err))
}

/// A reason with the values in it replaced, so reasons group by kind.
pub(crate) fn reason_kind(reason: &str) -> String {
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
pub(crate) struct LocalPlatform {
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
            .map_err(|err| step("opening the demo database")(err))?;
        let (queue, dead_letter) = queues(&db);
        let stream_name = local_stream_name(&catalog)?;
        let stream = Arc::new(
            EmbeddedStream::create(db.clone(), &stream_name, STREAM_SHARDS, STREAM_RETENTION)
                .await
                .map_err(|err| step("creating the stream")(err))?,
        );
        let buckets = Arc::new(LocalBuckets::new(layout.objects()));
        let warehouse = Arc::new(
            SqliteWarehouse::open(&layout.database(), PLATFORM)
                .map_err(|err| step("opening the warehouse")(err))?,
        );
        let pipeline = Arc::new(
            Pipeline::new(Arc::clone(&catalog), Arc::clone(&buckets) as _)
                .await
                .map_err(|err| step("planning the transforms")(err))?,
        );
        let tables = create_tables(&warehouse, &catalog, &pipeline).await?;
        let queue_dyn = Arc::clone(&queue) as Arc<dyn WorkQueue>;
        let (file_ingest, stream_ingest) = ingests(&catalog, &buckets, &queue_dyn);
        let worker = Arc::new(Worker {
            queue: queue_dyn,
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
            stream_ingest: Arc::new(stream_ingest),
            worker,
        })
    }
}

/// The one stream the local platform reads: the catalog's, or [`LOCAL_STREAM`] for a
/// catalog without a stream route (so every local command finds the same platform). A
/// catalog routing several streams is refused rather than half read.
fn local_stream_name(catalog: &Catalog) -> Result<String, DemoError> {
    match catalog.streams().as_slice() {
        [] => Ok(LOCAL_STREAM.to_owned()),
        [one] => Ok((*one).to_owned()),
        several => Err(DemoError::Setup(format!(
            "the local platform reads one stream, and this catalog routes {}: route them from one stream (with a discriminator per dataset), or run a folder per stream",
            several.join(", ")
        ))),
    }
}

/// The event-source poller over the embedded stream, resuming at its checkpoints.
pub(crate) fn spawn_poller(
    platform: &LocalPlatform,
    checkpoint_file: PathBuf,
    stopped: watch::Receiver<bool>,
    read_tx: watch::Sender<ReadProgress>,
) -> JoinHandle<Result<ReadProgress, ingest_stream::poller::ReadError>> {
    let stream = Arc::clone(&platform.stream);
    let ingest: Arc<StreamIngest> = Arc::clone(&platform.stream_ingest);
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
        let mut report = |read: &ReadProgress| {
            read_tx.send_replace(read.clone());
        };
        read_stream(
            stream.as_ref(),
            &ingest,
            &settings,
            &mut checkpoints,
            stopped,
            &mut report,
        )
        .await
    })
}

/// The work queue, which moves a message to the dead-letter queue after
/// `MAX_RECEIVE_COUNT` receives, and the dead-letter queue.
fn queues(db: &EmbeddedDb) -> (Arc<EmbeddedQueue>, Arc<EmbeddedQueue>) {
    let size_limit = MessageSizeLimit::default();
    let redrive = Redrive {
        dead_letter: DEAD_LETTER_QUEUE.into(),
        max_receive_count: MAX_RECEIVE_COUNT,
    };
    let queue = EmbeddedQueue::new(db.clone(), WORK_QUEUE, size_limit, Some(redrive));
    let dead_letter = EmbeddedQueue::new(db.clone(), DEAD_LETTER_QUEUE, size_limit, None);
    (Arc::new(queue), Arc::new(dead_letter))
}

/// The platform tables and every dataset's target, created or evolved as `serve` does;
/// returns (dataset, table) of each.
async fn create_tables(
    warehouse: &SqliteWarehouse,
    catalog: &Catalog,
    pipeline: &Pipeline,
) -> Result<Vec<(String, String)>, DemoError> {
    crate::serve::create_tables(warehouse, catalog, pipeline)
        .await
        .map_err(|err| step("creating the warehouse tables")(err))?;
    Ok(catalog
        .datasets()
        .map(|dataset| (dataset.name.clone(), table_name(&dataset.target)))
        .collect())
}

/// Both ingest paths: the landing files planned and sent like S3 notifications, and the
/// stream handler the poller hands the embedded stream's records to.
fn ingests(
    catalog: &Arc<Catalog>,
    buckets: &Arc<LocalBuckets>,
    queue: &Arc<dyn WorkQueue>,
) -> (FileIngest, StreamIngest) {
    let size_limit = MessageSizeLimit::default();
    let file_ingest = FileIngest {
        planner: FilePlanner {
            catalog: Arc::clone(catalog),
            reader: Arc::clone(buckets) as _,
            part_size: shared::config::FileSettings::default().part_size_bytes,
        },
        queue: Arc::clone(queue),
        size_limit,
        source: "demo",
    };
    let location = |prefix: &str| S3Location {
        bucket: BUCKET.into(),
        prefix: prefix.into(),
    };
    let stream_ingest = StreamIngest {
        catalog: Arc::clone(catalog),
        queue: Arc::clone(queue),
        objects: Arc::clone(buckets) as _,
        quarantine: location("quarantine/"),
        claim_checks: location("claim-checks/"),
        size_limit,
        replay: None,
    };
    (file_ingest, stream_ingest)
}
