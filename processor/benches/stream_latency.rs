//! End-to-end latency of the stream path: from the `PutRecords` call that sends a record
//! to the moment its row is visible in PostgreSQL.
//!
//! Run with `scripts/bench.sh latency [--records N] [--rate R]`, which starts the peers
//! (moto server for Kinesis, SQS and S3; PostgreSQL) on loopback. A producer puts 1 KiB
//! JSON records into a two-shard stream at a steady rate. The local event-source poller
//! reads the shards like Lambda's event source mapping (one `GetRecords` per shard at most
//! every 200 ms, an idle shard polled once a second, batches of up to 100 records), the
//! stream handler decodes, validates and packs them into work items on the SQS queue, and
//! two processor workers micro-batch them (the default 1 s window) and load PostgreSQL.
//! An observer queries the target table every 20 ms; a row's latency is the time from the
//! start of its `PutRecords` call to the start of the first query that saw it.
//!
//! Three runs, same rate and count:
//! - **baseline**: the emulator's own floor, a reader polling `GetRecords` on each shard
//!   every 200 ms (Kinesis's limit of five calls per second), put → read;
//! - **pipeline**: the stream path as Lambda runs it by default (no batching window);
//! - **pipeline + 1 s batching window**: the event source mapping also gathers records for
//!   up to a second (`MaximumBatchingWindowInSeconds = 1`), the setting that trades
//!   latency for fewer, larger invocations.
//!
//! Every run ends by checking that each record is in the table exactly once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use ingest_stream::handler::{S3Writer, StreamIngest};
use ingest_stream::poller::{Checkpoints, ReadSettings, StopWhen, read_stream};
use processor::objects::S3Stores;
use processor::pipeline::Pipeline;
use processor::warehouse::Warehouse;
use processor::warehouse::postgres::PostgresWarehouse;
use processor::worker::{BatchSettings, Worker, WorkerSettings};
use shared::aws::{AwsClients, load_sdk_config};
use shared::catalog::Catalog;
use shared::config::S3Location;
use shared::envelope::MessageSizeLimit;
use shared::queue::{SqsQueue, WorkQueue};
use shared::stream::{KinesisStream, OutgoingRecord, RecordStream, StartPosition};
use test_support::{
    TestSchemas, clients, create_queue, emulator_settings, postgres_url, unique_name,
};
use tokio::sync::{Mutex, watch};

const CATALOG: &str = r#"
[datasets.latency_events]
target = "events.latency_events"
stream = { name = "STREAM" }
transform = "SELECT n, event_id, order_id, upper(status) AS status, note, occurred_at FROM input"
columns = [
  { name = "n", type = "int64", nullable = false },
  { name = "event_id", type = "string", nullable = false },
  { name = "order_id", type = "int64", nullable = false },
  { name = "status", type = "string", nullable = false },
  { name = "note", type = "string", nullable = true },
  { name = "occurred_at", type = "timestamptz", nullable = false },
]
"#;

const SHARDS: i32 = 2;
const PUTS_PER_SECOND: u64 = 20;
const OBSERVE_EVERY: Duration = Duration::from_millis(20);
const GIVE_UP_AFTER: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy)]
struct Options {
    records: usize,
    rate: u64,
}

fn options() -> anyhow::Result<Options> {
    let mut options = Options {
        records: 12_000,
        rate: 1_000,
    };
    let mut args = std::env::args().skip(1);
    let number = |value: Option<String>, name: &str| -> anyhow::Result<u64> {
        value
            .with_context(|| format!("{name} needs a number"))?
            .parse()
            .with_context(|| format!("{name} needs a number"))
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--records" => options.records = number(args.next(), "--records")? as usize,
            "--rate" => options.rate = number(args.next(), "--rate")?,
            // `cargo bench` passes --bench to every bench target.
            "--bench" => {}
            other => bail!("unknown option {other:?}; options: --records N, --rate R"),
        }
    }
    ensure!(options.records > 0, "--records must be above zero");
    ensure!(
        options.rate >= PUTS_PER_SECOND,
        "--rate must be at least {PUTS_PER_SECOND}"
    );
    Ok(options)
}

/// A 1 KiB order status event carrying its index `n`.
fn event(n: usize) -> OutgoingRecord {
    let order = n % 500;
    let head = format!(
        r#"{{"n":{n},"event_id":"e{n}","order_id":{order},"status":"shipped","occurred_at":"2026-11-24T10:00:00Z","note":""#
    );
    let padding = 1024usize.saturating_sub(head.len() + 2);
    OutgoingRecord {
        partition_key: format!("order-{order}"),
        data: Bytes::from(format!("{head}{}\"}}", "x".repeat(padding))),
    }
}

/// Puts the records at the given rate; returns when each record's `PutRecords` started.
async fn produce(
    stream: &KinesisStream,
    options: Options,
) -> anyhow::Result<(Vec<Instant>, Duration)> {
    let per_put = (options.rate / PUTS_PER_SECOND).max(1) as usize;
    let mut ticks = tokio::time::interval(Duration::from_millis(1000 / PUTS_PER_SECOND));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut put_at = Vec::with_capacity(options.records);
    let started = Instant::now();
    let mut next = 0;
    while next < options.records {
        ticks.tick().await;
        let end = (next + per_put).min(options.records);
        let batch: Vec<OutgoingRecord> = (next..end).map(event).collect();
        let at = Instant::now();
        let report = stream.put_records(&batch).await;
        ensure!(report.all_succeeded(), "PutRecords failed: {report:?}");
        put_at.extend(std::iter::repeat_n(at, end - next));
        next = end;
    }
    Ok((put_at, started.elapsed()))
}

async fn create_stream(clients: &AwsClients) -> anyhow::Result<KinesisStream> {
    let name = unique_name("latency");
    clients
        .kinesis
        .create_stream()
        .stream_name(&name)
        .shard_count(SHARDS)
        .send()
        .await
        .context("create stream")?;
    Ok(KinesisStream::new(clients.kinesis.clone(), &name))
}

/// Latencies of one run, in put order.
#[derive(Debug)]
struct Run {
    name: &'static str,
    latencies: Vec<Duration>,
    put_for: Duration,
}

impl Run {
    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1]
    }
}

fn record_index(data: &[u8]) -> anyhow::Result<usize> {
    let value: serde_json::Value = serde_json::from_slice(data).context("record JSON")?;
    value
        .get("n")
        .and_then(serde_json::Value::as_u64)
        .map(|n| n as usize)
        .context("record without n")
}

/// Baseline: how soon the emulator hands a put record to a reader polling at the limit.
async fn baseline(clients: &AwsClients, options: Options) -> anyhow::Result<Run> {
    let stream = Arc::new(create_stream(clients).await?);
    let seen: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; options.records]));
    let mut readers = Vec::new();
    for shard in stream.list_shards().await? {
        let (stream, seen) = (Arc::clone(&stream), Arc::clone(&seen));
        readers.push(tokio::spawn(async move {
            let mut iterator = stream
                .shard_iterator(&shard.shard_id, &StartPosition::TrimHorizon)
                .await?;
            let started = Instant::now();
            loop {
                let call = Instant::now();
                let page = stream.get_records(&iterator, 10_000).await?;
                let read_at = Instant::now();
                let mut seen = seen.lock().await;
                for record in &page.records {
                    let n = record_index(&record.data)?;
                    if let Some(slot) = seen.get_mut(n) {
                        slot.get_or_insert(read_at);
                    }
                }
                if seen.iter().all(Option::is_some) {
                    return anyhow::Ok(());
                }
                drop(seen);
                ensure!(started.elapsed() < GIVE_UP_AFTER, "baseline reader gave up");
                iterator = page.next_iterator.context("shard closed")?;
                tokio::time::sleep_until((call + Duration::from_millis(200)).into()).await;
            }
        }));
    }
    let (put_at, put_for) = produce(&stream, options).await?;
    for reader in readers {
        reader.await??;
    }
    let seen = seen.lock().await;
    let latencies = put_at
        .iter()
        .zip(seen.iter())
        .map(|(put, read)| read.map(|read| read.saturating_duration_since(*put)))
        .collect::<Option<Vec<_>>>()
        .context("a record was never read")?;
    Ok(Run {
        name: "baseline: put → GetRecords (200 ms polls)",
        latencies,
        put_for,
    })
}

/// The stream path end to end; `batching_window` is the event source mapping's.
async fn pipeline(
    clients: &AwsClients,
    options: Options,
    batching_window: Duration,
    name: &'static str,
) -> anyhow::Result<Run> {
    let stream = Arc::new(create_stream(clients).await?);
    let schemas = TestSchemas::new();
    let catalog_text = schemas.retarget(CATALOG).replace("STREAM", stream.name());
    let catalog = Arc::new(Catalog::from_toml(&catalog_text, "bench")?);
    let sdk_config = load_sdk_config(&emulator_settings()).await;
    let stores = Arc::new(S3Stores::new(&sdk_config, &emulator_settings()));
    let pipeline = Arc::new(Pipeline::new(Arc::clone(&catalog), stores).await?);
    let warehouse = Arc::new(PostgresWarehouse::connect(&postgres_url(), &schemas.platform).await?);
    warehouse.ensure_platform_tables().await?;
    for dataset in catalog.datasets() {
        let schema = pipeline
            .load_schema(&dataset.name)
            .context("a planned dataset")?;
        warehouse.ensure_target(dataset, schema).await?;
    }
    let table = format!("{}.latency_events", schemas.events);
    let (client, connection) =
        tokio_postgres::connect(&postgres_url(), tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    client
        .execute(&format!("CREATE INDEX ON {table} (n)"), &[])
        .await?;

    let bucket = unique_name("latency").to_lowercase();
    clients.s3.create_bucket().bucket(&bucket).send().await?;
    let queue_url = create_queue(&clients.sqs, &[]).await;
    let queue = Arc::new(SqsQueue::new(
        clients.sqs.clone(),
        &queue_url,
        MessageSizeLimit::default(),
    ));
    let ingest = Arc::new(StreamIngest {
        catalog: Arc::clone(&catalog),
        queue: Arc::clone(&queue) as Arc<dyn WorkQueue>,
        objects: Arc::new(S3Writer {
            client: clients.s3.clone(),
        }),
        quarantine: S3Location {
            bucket: bucket.clone(),
            prefix: "quarantine/".into(),
        },
        claim_checks: S3Location {
            bucket,
            prefix: "claims/".into(),
        },
        size_limit: MessageSizeLimit::default(),
        replay: None,
    });
    let worker = Arc::new(Worker {
        queue: Arc::clone(&queue) as Arc<dyn WorkQueue>,
        dead_letter: None,
        pipeline,
        warehouse: Arc::clone(&warehouse) as Arc<dyn Warehouse>,
        settings: WorkerSettings {
            wait_time: Duration::from_secs(20),
            visibility_timeout: Duration::from_secs(60),
            retry_backoff: Duration::from_secs(1),
            max_retry_backoff: Duration::from_secs(5),
        },
        batching: BatchSettings::default(),
        announcer: None,
    });

    let (stop, stopped) = watch::channel(false);
    let mut workers = Vec::new();
    for _ in 0..2 {
        let (worker, stopped) = (Arc::clone(&worker), stopped.clone());
        workers.push(tokio::spawn(async move { worker.run(stopped).await }));
    }
    let poller = {
        let (stream, ingest, stopped) = (Arc::clone(&stream), Arc::clone(&ingest), stopped);
        tokio::spawn(async move {
            let settings = ReadSettings {
                batching_window,
                stop: StopWhen::Stopped,
                ..ReadSettings::default()
            };
            read_stream(
                stream.as_ref(),
                &ingest,
                &settings,
                &mut Checkpoints::default(),
                stopped,
                &mut |_| {},
            )
            .await
        })
    };
    let observer = {
        let records = options.records;
        let table = table.clone();
        tokio::spawn(async move {
            let mut seen: Vec<Option<Instant>> = vec![None; records];
            let mut floor: i64 = -1; // every n up to here is seen
            let started = Instant::now();
            let query = format!("SELECT n FROM {table} WHERE n > $1");
            while floor + 1 < records as i64 {
                let asked = Instant::now();
                for row in client.query(&query, &[&floor]).await? {
                    let n: i64 = row.get(0);
                    if let Some(slot) = usize::try_from(n).ok().and_then(|n| seen.get_mut(n)) {
                        slot.get_or_insert(asked);
                    }
                }
                while seen
                    .get(usize::try_from(floor + 1).unwrap_or(usize::MAX))
                    .is_some_and(Option::is_some)
                {
                    floor += 1;
                }
                ensure!(
                    started.elapsed() < GIVE_UP_AFTER,
                    "{} of {records} rows visible after {GIVE_UP_AFTER:?}",
                    seen.iter().filter(|s| s.is_some()).count()
                );
                tokio::time::sleep_until((asked + OBSERVE_EVERY).into()).await;
            }
            let counts = client
                .query_one(
                    &format!("SELECT count(*), count(DISTINCT n) FROM {table}"),
                    &[],
                )
                .await?;
            let (rows, distinct): (i64, i64) = (counts.get(0), counts.get(1));
            ensure!(
                rows == records as i64 && distinct == records as i64,
                "{rows} rows, {distinct} distinct, for {records} records"
            );
            anyhow::Ok(seen)
        })
    };

    let (put_at, put_for) = produce(&stream, options).await?;
    let seen = observer.await??;
    stop.send(true).ok();
    poller.await??;
    for worker in workers {
        worker.await?;
    }
    let latencies = put_at
        .iter()
        .zip(seen.iter())
        .map(|(put, visible)| visible.map(|visible| visible.saturating_duration_since(*put)))
        .collect::<Option<Vec<_>>>()
        .context("a row was never seen")?;
    Ok(Run {
        name,
        latencies,
        put_for,
    })
}

fn seconds(duration: Duration) -> String {
    format!("{:.3} s", duration.as_secs_f64())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = options()?;
    let clients = clients().await;
    eprintln!(
        "{} records of 1 KiB at {} records/s into {SHARDS} shards, per run",
        options.records, options.rate
    );
    let mut runs = Vec::new();
    runs.push(baseline(&clients, options).await?);
    eprintln!("baseline done");
    runs.push(
        pipeline(
            &clients,
            options,
            Duration::ZERO,
            "pipeline: put → row visible",
        )
        .await?,
    );
    eprintln!("pipeline done");
    runs.push(
        pipeline(
            &clients,
            options,
            Duration::from_secs(1),
            "pipeline + 1 s batching window",
        )
        .await?,
    );

    let floor = runs[0].percentile(99.0).as_secs_f64();
    println!();
    println!("| run | records | achieved rate | p50 | p90 | p99 | max | p99 ÷ baseline p99 |");
    println!("|---|---|---|---|---|---|---|---|");
    for run in &runs {
        let p99 = run.percentile(99.0);
        println!(
            "| {} | {} | {:.0}/s | {} | {} | {} | {} | {:.1}× |",
            run.name,
            run.latencies.len(),
            run.latencies.len() as f64 / run.put_for.as_secs_f64(),
            seconds(run.percentile(50.0)),
            seconds(run.percentile(90.0)),
            seconds(p99),
            seconds(run.percentile(100.0)),
            p99.as_secs_f64() / floor,
        );
    }
    let p99 = runs[1].percentile(99.0);
    println!();
    println!(
        "target p99 < 3 s (pipeline, 1 s micro-batch window): {} ({})",
        if p99 < Duration::from_secs(3) {
            "met"
        } else {
            "missed"
        },
        seconds(p99)
    );
    Ok(())
}
