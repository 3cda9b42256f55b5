//! `processor demo`: generates the example data set, runs both ingest paths and the
//! workers on the local platform at once, and reports per dataset what loaded, what was
//! rejected and why, how many duplicate deliveries the ledger stopped, throughput and,
//! for the stream, the latency from arrival to commit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ingest_batch::FileIngest;
use ingest_stream::poller::{Checkpoints, ReadProgress};
use rusqlite::params;
use shared::catalog::Catalog;
use shared::embedded::{EmbeddedDb, sql_error};
use shared::envelope::WorkItem;
use shared::queue::{EmbeddedQueue, WorkQueue};
use shared::stream::{
    EmbeddedStream, KINESIS_MAX_BATCH_RECORDS, OutgoingRecord, RecordStream, epoch_millis,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::generate::{DemoSize, Expected, Generated, generate};
use super::{
    BUCKET, DemoError, EXAMPLE_CATALOG, Layout, LocalPlatform, MAX_RECEIVE_COUNT, PLATFORM, counts,
    quarantined, spawn_poller, step, top,
};
use crate::timefmt::iso_utc_millis;

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

/// The demo's catalog and a config naming its folder, written into the folder so a user
/// can copy and edit them: `processor --config DIR/local.toml serve` (or `check`,
/// `backfill`, `replay`, `redrive`, `query`) runs against the folder with them.
fn write_own_config(layout: &Layout) -> Result<(), DemoError> {
    let dir = std::fs::canonicalize(&layout.dir).map_err(|err| DemoError::Folder {
        path: layout.dir.clone(),
        source: err,
    })?;
    let quoted = |path: &Path| crate::text::toml_string(&path.display().to_string());
    let absolute = Layout { dir: dir.clone() };
    write_if_changed(&layout.catalog(), EXAMPLE_CATALOG.as_bytes())?;
    let config = format!(
        "# The local platform in this folder, with the demo's catalog (copy and edit both):\n\
         # processor --config {config} serve | check | backfill | replay | redrive | query | prune\n\
         [local]\ndir = {dir}\n\n[catalog]\npath = {catalog}\n",
        config = absolute.config().display(),
        dir = quoted(&dir),
        catalog = quoted(&absolute.catalog()),
    );
    write_if_changed(&layout.config(), config.as_bytes())?;
    Ok(())
}

/// Writes a file unless it already holds exactly these bytes (so its entity tag, and
/// with it every work item's key, stays the same across runs).
fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<bool, DemoError> {
    let folder_error = |err: std::io::Error| DemoError::Folder {
        path: path.to_owned(),
        source: err,
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
        .map_err(|err| step("opening the demo database")(err))?;
    if found != wanted {
        return Err(DemoError::OtherData {
            dir: dir.to_owned(),
            found,
            wanted,
        });
    }
    Ok(())
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
    let mut generated = generate(&options.size);
    let catalog = Arc::new(Catalog::from_toml(
        EXAMPLE_CATALOG,
        "catalog/ecommerce.toml",
    )?);
    let platform = LocalPlatform::open(&layout, catalog, options.visibility_timeout).await?;
    check_same_data(&platform.db, &options.size, &layout.dir).await?;
    write_own_config(&layout)?;
    for file in &generated.files {
        write_if_changed(&layout.landing().join(&file.key), &file.bytes)?;
    }
    let before = Before {
        counts: counts(platform.warehouse.db(), platform.tables.clone()).await?,
        dead_letters: dead_letters_by_dataset(&platform.dead_letter).await?,
    };
    let (files, file_items) = plan_files(&platform, &generated).await?;
    let mut items_sent: BTreeMap<String, i64> = BTreeMap::new();
    for item in &file_items {
        *items_sent.entry(item.dataset().to_owned()).or_default() += 1;
    }
    let run = Run::start(
        &platform,
        &layout,
        options,
        file_items,
        std::mem::take(&mut generated.events),
    )
    .await?;
    let watch = Watch {
        platform: &platform,
        layout: &layout,
        files,
        started,
        run_started: &run_started,
    };
    let read = run.finish(&watch, progress).await?;
    for dataset in platform.catalog.datasets().filter(|d| d.stream.is_some()) {
        *items_sent.entry(dataset.name.clone()).or_default() += read.work_items_sent as i64;
    }
    let elapsed = started.elapsed();
    let datasets = summarize(&watch, &before, &items_sent, &generated, elapsed).await?;
    let dead_letters = platform
        .dead_letter
        .depth()
        .await
        .map(|d| d.visible + d.in_flight)
        .map_err(|err| step("reading the dead-letter queue")(err))?;
    Ok(DemoSummary {
        datasets,
        elapsed,
        dead_letters,
        layout,
    })
}

/// What the warehouse and the dead-letter queue held before the run.
#[derive(Debug)]
struct Before {
    counts: BTreeMap<String, (i64, i64, i64)>,
    dead_letters: BTreeMap<String, Vec<String>>,
}

/// What a run's progress and summary look at.
#[derive(Debug)]
struct Watch<'a> {
    platform: &'a LocalPlatform,
    layout: &'a Layout,
    /// Landing files.
    files: usize,
    started: Instant,
    run_started: &'a str,
}

/// The landing files as created objects, planned into work items.
async fn plan_files(
    platform: &LocalPlatform,
    generated: &Generated,
) -> Result<(usize, Vec<WorkItem>), DemoError> {
    let mut objects = Vec::with_capacity(generated.files.len());
    for file in &generated.files {
        let object = platform
            .buckets
            .created_object(BUCKET, &file.key)
            .await
            .map_err(|err| step("reading a landing file")(err))?;
        objects.push(object);
    }
    let (items, _) = platform
        .file_ingest
        .plan_objects(&objects)
        .await
        .map_err(|err| step("planning the landing files")(err))?;
    Ok((objects.len(), items))
}

/// The tasks of a run: workers, the stream poller, the file sender and the event producer.
#[derive(Debug)]
struct Run {
    stop: watch::Sender<bool>,
    workers: Vec<JoinHandle<()>>,
    poller: JoinHandle<Result<ReadProgress, ingest_stream::poller::ReadError>>,
    read: watch::Receiver<ReadProgress>,
    files_task: Option<JoinHandle<Result<usize, ingest_batch::IngestError>>>,
    producer: Option<JoinHandle<Result<(), String>>>,
    events_put: watch::Receiver<usize>,
    events_total: usize,
}

impl Run {
    async fn start(
        platform: &LocalPlatform,
        layout: &Layout,
        options: &DemoOptions,
        file_items: Vec<WorkItem>,
        events: Vec<OutgoingRecord>,
    ) -> Result<Self, DemoError> {
        let (stop, stopped) = watch::channel(false);
        let workers = (0..options.workers.max(1))
            .map(|_| {
                let (worker, stopped) = (Arc::clone(&platform.worker), stopped.clone());
                tokio::spawn(async move { worker.run(stopped).await })
            })
            .collect();
        let (read_tx, read) = watch::channel(ReadProgress::default());
        let poller = spawn_poller(platform, layout.checkpoints(), stopped, read_tx);
        let file_ingest: FileIngest = platform.file_ingest.clone();
        let files_task = tokio::spawn(async move { file_ingest.send(&file_items).await });
        // Events are put exactly once: a resumed run continues after the last one stored.
        let already = platform
            .stream
            .record_count()
            .await
            .map_err(|err| step("reading the stream")(err))? as usize;
        let events_total = events.len();
        let (put_tx, events_put) = watch::channel(already.min(events_total));
        let producer = spawn_producer(
            Arc::clone(&platform.stream),
            events,
            already,
            options.events_per_second,
            put_tx,
        );
        Ok(Self {
            stop,
            workers,
            poller,
            read,
            files_task: Some(files_task),
            producer: Some(producer),
            events_put,
            events_total,
        })
    }

    /// Waits, reporting progress, until every file item is sent, every event put and
    /// read, and the queue stays empty; then stops the tasks and returns what the poller
    /// read.
    async fn finish(
        mut self,
        watch: &Watch<'_>,
        progress: &mut (dyn FnMut(&Progress) + Send),
    ) -> Result<ReadProgress, DemoError> {
        let mut files_sent: Option<usize> = None;
        let mut idle_checks = 0;
        while idle_checks < 2 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if let Some(sent) = self.files_sent().await? {
                files_sent = Some(sent);
            }
            self.check_producer().await?;
            if self.poller.is_finished() {
                return Err(DemoError::Step {
                    what: "reading the stream",
                    source: "the poller stopped early".into(),
                });
            }
            let queue_empty = self.report(watch, files_sent, progress).await?;
            let stream_read =
                caught_up(&watch.platform.stream, &watch.layout.checkpoints()).await?;
            let idle =
                files_sent.is_some() && self.producer.is_none() && stream_read && queue_empty;
            idle_checks = if idle { idle_checks + 1 } else { 0 };
        }
        self.stop.send_replace(true);
        let read = self
            .poller
            .await
            .map_err(|err| step("reading the stream")(err))?
            .map_err(|err| step("reading the stream")(err))?;
        for worker in self.workers {
            worker.await.map_err(|err| step("running a worker")(err))?;
        }
        Ok(read)
    }

    /// The file items sent, once the sender finished.
    async fn files_sent(&mut self) -> Result<Option<usize>, DemoError> {
        let Some(task) = self.files_task.take_if(|task| task.is_finished()) else {
            return Ok(None);
        };
        let sent = task
            .await
            .map_err(|err| step("sending the file items")(err))?
            .map_err(|err| step("sending the file items")(err))?;
        Ok(Some(sent))
    }

    /// Fails if the producer failed; forgets it once it finished.
    async fn check_producer(&mut self) -> Result<(), DemoError> {
        if let Some(task) = self.producer.take_if(|task| task.is_finished()) {
            task.await
                .map_err(|err| step("putting events")(err))?
                .map_err(step("putting events"))?;
        }
        Ok(())
    }

    /// Reports progress; returns whether the work queue is empty.
    async fn report(
        &self,
        watch: &Watch<'_>,
        files_sent: Option<usize>,
        progress: &mut (dyn FnMut(&Progress) + Send),
    ) -> Result<bool, DemoError> {
        let depth = watch
            .platform
            .queue
            .depth()
            .await
            .map_err(|err| step("reading the queue")(err))?;
        let db = watch.platform.warehouse.db();
        let rows_loaded = rows_loaded_since(db, watch.run_started.to_owned()).await?;
        progress(&Progress {
            elapsed: watch.started.elapsed(),
            files: watch.files,
            file_items_sent: files_sent.unwrap_or(0),
            events_total: self.events_total,
            events_put: *self.events_put.borrow(),
            stream: self.read.borrow().clone(),
            queue_visible: depth.visible,
            queue_in_flight: depth.in_flight,
            rows_loaded,
        });
        Ok(depth.visible == 0 && depth.in_flight == 0)
    }
}

/// Puts the events not in the stream yet at `per_second`, ten puts a second.
fn spawn_producer(
    stream: Arc<EmbeddedStream>,
    events: Vec<OutgoingRecord>,
    already: usize,
    per_second: u32,
    put_tx: watch::Sender<usize>,
) -> JoinHandle<Result<(), String>> {
    tokio::spawn(async move {
        // Each put at most one PutRecords' worth.
        let per_put = (per_second.max(1) as usize / 10).clamp(1, KINESIS_MAX_BATCH_RECORDS);
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
}

/// Per dataset: what the run added, rejected, dead-lettered and how fast, next to what
/// the generator expects.
async fn summarize(
    watch: &Watch<'_>,
    before: &Before,
    items_sent: &BTreeMap<String, i64>,
    generated: &Generated,
    elapsed: Duration,
) -> Result<Vec<DatasetSummary>, DemoError> {
    let platform = watch.platform;
    let db = platform.warehouse.db();
    let after = counts(db, platform.tables.clone()).await?;
    let mut dead_by_dataset = dead_letters_by_dataset(&platform.dead_letter).await?;
    let quarantine_reasons = quarantined(&watch.layout.landing().join("quarantine"));
    let mut datasets = Vec::new();
    for (name, table) in &platform.tables {
        let (rows, rejects, ledger) = after.get(name).copied().unwrap_or_default();
        let (rows_before, _, ledger_before) = before.counts.get(name).copied().unwrap_or_default();
        let is_stream = platform
            .catalog
            .get(name)
            .is_some_and(|d| d.stream.is_some());
        let (rejected, top_reasons) = if is_stream {
            let reasons = quarantine_reasons.iter().cloned();
            (quarantine_reasons.len() as i64, top(reasons, 3))
        } else {
            let reasons = reasons_of(db, name.clone()).await?;
            (rejects, top(reasons.into_iter(), 3))
        };
        let sent = items_sent.get(name).copied().unwrap_or(0);
        let dead = dead_by_dataset.remove(name).unwrap_or_default();
        let dead_before = before.dead_letters.get(name).map_or(0, Vec::len) as i64;
        let dead_added = dead.len() as i64 - dead_before;
        let latency = match is_stream {
            true => {
                let stream = platform.stream_name.clone();
                latencies(db, table.clone(), stream, watch.run_started.to_owned()).await?
            }
            false => None,
        };
        datasets.push(DatasetSummary {
            dataset: name.clone(),
            table: table.clone(),
            rows,
            rows_added: rows - rows_before,
            rejected,
            top_reasons,
            items_sent: sent,
            duplicates_prevented: (sent - (ledger - ledger_before) - dead_added).max(0),
            dead_lettered: dead.len() as i64,
            dead_letter_reasons: top(dead.into_iter(), 3),
            rows_per_second: (rows - rows_before) as f64 / elapsed.as_secs_f64().max(0.001),
            latency,
            expected: expected(generated, name),
        });
    }
    Ok(datasets)
}

fn expected(generated: &Generated, dataset: &str) -> Expected {
    generated.expected.get(dataset).copied().unwrap_or_default()
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
        .map_err(|err| step("reading the dead-letter queue")(err))?
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
        .map_err(|err| step("reading the stream")(err))?;
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
    .map_err(|err| step("counting loaded rows")(err))
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
    .map_err(|err| step("reading rejects")(err))
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
        .map_err(|err| step("measuring latency")(err))?;
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
        "`items` are work items sent by this run; `dupes` of them were already in the ledger and loaded nothing; `dead` are in the dead-letter queue.\n\nQuery the warehouse:\n  cargo run -p processor -- query --dir {} \"SELECT status, count(*) FROM events_order_status GROUP BY status\"\n",
        summary.layout.dir.display()
    ));
    out
}
