//! Load benchmark: a generated CSV of customers (default 1 GiB) loaded into PostgreSQL by
//! the processor's load path, next to the raw `COPY FROM STDIN` rate of the same file into
//! the same server, measured in the same run. Also prints the processor's peak resident
//! memory during its load.
//!
//! Run with `scripts/bench.sh [--size-mb N] [--store s3|local]`, which starts the peers.
//! The baseline is `COPY … (FORMAT csv)` of the file into a table with the same columns and
//! the same primary key; the processor does everything it does in production: read from
//! the object store, parse and type every row, apply the dataset's transform, add the
//! lineage columns, COPY (straight into the target when no row clashes, else into a
//! staging table and MERGE on the key), write the ledger, commit. A second pass loads the
//! same rows again as a new item, so every row is an update and takes the MERGE path.
//! A third pass (S3 store) splits the file into 128 MiB parts with the ingest-batch planner
//! (which scans it for row ends: every tenth name holds a quoted newline), loads the parts
//! on two concurrent workers into another schema, and checks that the rows equal the whole
//! load's (count and an order-independent checksum of every column and the lineage offset).
//!
//! With `--sink redshift` (`scripts/bench.sh redshift`) the same file goes through the
//! Redshift sink on the Redshift stand-in (Parquet staged in the emulator's S3, `COPY`,
//! merge), next to raw COPY and the PostgreSQL sink in the same run, with peak memory and a
//! checksum against the PostgreSQL sink's rows; then `--datasets N` (default 2) datasets
//! load the file at the same time, their total rate next to one's. The stand-in runs in this
//! process, so the peak memory of a Redshift load includes its `COPY` of one staged file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use futures::SinkExt;
use object_store::local::LocalFileSystem;
use object_store::{ObjectStore, ObjectStoreExt};
use processor::objects::{FixedStore, ObjectStores, S3Stores};
use processor::pipeline::Pipeline;
use processor::warehouse::Warehouse;
use processor::warehouse::postgres::PostgresWarehouse;
use shared::aws::load_sdk_config;
use shared::catalog::{Catalog, Compression, FileFormat};
use shared::envelope::{FileItem, WorkItem};
use test_support::{TestSchemas, clients, emulator_settings, postgres_url, unique_name};
use tokio::io::AsyncReadExt;

mod redshift;

const CATALOG: &str = include_str!("../../../catalog/ecommerce.toml");
const HEADER: &str = "customer_id,email,full_name,country,signup_date,updated_at\n";
const COUNTRIES: &[&str] = &["DE", "FR", "NL", "US", "GB", "ES", "IT", "PL", "SE", "JP"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Store {
    S3,
    Local,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sink {
    Postgres,
    Redshift,
}

#[derive(Debug)]
struct Options {
    size_mb: u64,
    store: Store,
    dir: PathBuf,
    sink: Sink,
    /// Datasets loaded at once in the Redshift run.
    datasets: usize,
}

fn options() -> anyhow::Result<Options> {
    let mut options = Options {
        size_mb: 1024,
        store: Store::S3,
        dir: std::env::temp_dir(),
        sink: Sink::Postgres,
        datasets: 2,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--size-mb" => {
                options.size_mb = args
                    .next()
                    .context("--size-mb needs a number")?
                    .parse()
                    .context("--size-mb needs a number")?;
            }
            "--store" => {
                options.store = match args.next().as_deref() {
                    Some("s3") => Store::S3,
                    Some("local") => Store::Local,
                    other => bail!("--store is s3 or local, not {other:?}"),
                }
            }
            "--dir" => options.dir = PathBuf::from(args.next().context("--dir needs a path")?),
            "--sink" => {
                options.sink = match args.next().as_deref() {
                    Some("postgres") => Sink::Postgres,
                    Some("redshift") => Sink::Redshift,
                    other => bail!("--sink is postgres or redshift, not {other:?}"),
                }
            }
            "--datasets" => {
                options.datasets = args
                    .next()
                    .context("--datasets needs a number")?
                    .parse()
                    .context("--datasets needs a number")?;
            }
            // `cargo bench` passes --bench to every bench target.
            "--bench" => {}
            other => bail!(
                "unknown option {other:?}; options: --size-mb N, --store s3|local, --dir PATH, --sink postgres|redshift, --datasets N"
            ),
        }
    }
    Ok(options)
}

/// Writes the CSV once per size and reuses it in later runs (generation is not measured).
fn generate(dir: &Path, size_mb: u64) -> anyhow::Result<(PathBuf, u64)> {
    let path = dir.join(format!("ingest-bench-customers-v2-{size_mb}mb.csv"));
    let target = size_mb * 1024 * 1024;
    if let Ok(meta) = std::fs::metadata(&path)
        && meta.len() >= target
    {
        return Ok((path, meta.len()));
    }
    eprintln!("generating {} ({size_mb} MiB)…", path.display());
    let partial = path.with_extension("partial");
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&partial)?);
    out.write_all(HEADER.as_bytes())?;
    let mut written = HEADER.len() as u64;
    let mut id: u64 = 0;
    let mut line = String::with_capacity(160);
    while written < target {
        id += 1;
        line.clear();
        // Deterministic but varied: ids, emails, names, ten countries, dates over four years.
        let day = 1 + id % 28;
        let month = 1 + (id / 28) % 12;
        let year = 2021 + (id / 336) % 4;
        let country = COUNTRIES[(id % COUNTRIES.len() as u64) as usize];
        // Every tenth name spans two lines: a split must not cut inside it.
        let separator = if id.is_multiple_of(10) { "\n" } else { " " };
        use std::fmt::Write as _;
        writeln!(
            line,
            "{id},customer.{id}@example.com,\"Customer {id},{separator}{country}\",{country},{year}-{month:02}-{day:02},{year}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
            id % 24,
            id % 60,
            (id * 7) % 60
        )?;
        out.write_all(line.as_bytes())?;
        written += line.len() as u64;
    }
    out.flush()?;
    drop(out);
    std::fs::rename(&partial, &path)?;
    Ok((path, written))
}

/// Peak resident set size since the last reset, from /proc (Linux).
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Resets the peak-RSS counter so the processor's load is measured on its own.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

async fn pg() -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(&postgres_url(), tokio_postgres::NoTls)
        .await
        .context("connect to PostgreSQL")?;
    tokio::spawn(connection);
    Ok(client)
}

async fn raw_copy(file: &Path, schema: &str) -> anyhow::Result<(u64, Duration)> {
    let client = pg().await?;
    client
        .batch_execute(&format!(
            "CREATE SCHEMA {schema};
             CREATE TABLE {schema}.customers_raw (
                 customer_id bigint PRIMARY KEY, email text, full_name text, country text,
                 signup_date date, updated_at timestamptz)"
        ))
        .await?;
    let started = Instant::now();
    let sink = client
        .copy_in(&format!(
            "COPY {schema}.customers_raw FROM STDIN (FORMAT csv, HEADER true)"
        ))
        .await?;
    futures::pin_mut!(sink);
    let mut reader = tokio::fs::File::open(file).await?;
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buffer).await?;
        if n == 0 {
            break;
        }
        sink.send(Bytes::copy_from_slice(&buffer[..n])).await?;
    }
    let rows = sink.finish().await?;
    Ok((rows, started.elapsed()))
}

async fn stage_object(
    store: Store,
    file: &Path,
    dir: &Path,
) -> anyhow::Result<(Arc<dyn ObjectStores>, String, String)> {
    let key = format!("landing/customers/{}", unique_name("bench.csv"));
    match store {
        Store::Local => {
            let root = dir.join("ingest-bench-store");
            let target = root.join(&key);
            std::fs::create_dir_all(target.parent().context("key has a folder")?)?;
            // A hard link when possible: the file is not copied.
            if std::fs::hard_link(file, &target).is_err() {
                std::fs::copy(file, &target)?;
            }
            let local: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(&root)?);
            Ok((Arc::new(FixedStore(local)), "local".to_owned(), key))
        }
        Store::S3 => {
            let clients = clients().await;
            let bucket = unique_name("bench");
            clients.s3.create_bucket().bucket(&bucket).send().await?;
            let sdk_config = load_sdk_config(&emulator_settings()).await;
            let stores = Arc::new(S3Stores::new(&sdk_config, &emulator_settings()));
            let s3 = stores.for_bucket(&bucket)?;
            eprintln!("uploading to the emulator's S3 (multipart)…");
            let mut upload = object_store::WriteMultipart::new(
                s3.put_multipart(&object_store::path::Path::parse(&key)?)
                    .await?,
            );
            let mut reader = tokio::fs::File::open(file).await?;
            let mut buffer = vec![0u8; 8 << 20];
            loop {
                let n = reader.read(&mut buffer).await?;
                if n == 0 {
                    break;
                }
                upload.write(&buffer[..n]);
            }
            upload.finish().await?;
            Ok((stores, bucket, key))
        }
    }
}

/// A PostgreSQL sink with its platform tables in `platform`.
async fn postgres(platform: &str) -> anyhow::Result<Arc<dyn Warehouse>> {
    Ok(Arc::new(
        PostgresWarehouse::connect(&postgres_url(), platform).await?,
    ))
}

/// One processor load of the object through `warehouse`.
async fn processor_load(
    stores: Arc<dyn ObjectStores>,
    bucket: &str,
    key: &str,
    schemas: &TestSchemas,
    warehouse: Arc<dyn Warehouse>,
) -> anyhow::Result<(u64, Duration, Option<u64>)> {
    let catalog = Arc::new(Catalog::from_toml(&schemas.retarget(CATALOG), "catalog")?);
    let store = stores.for_bucket(bucket)?;
    let meta = store.head(&object_store::path::Path::parse(key)?).await?;
    let pipeline = Pipeline::new(Arc::clone(&catalog), stores).await?;
    warehouse.ensure_platform_tables().await?;
    let dataset = catalog.get("customers").context("customers dataset")?;
    let load_schema = pipeline
        .load_schema("customers")
        .context("customers planned")?;
    warehouse.ensure_target(dataset, load_schema).await?;
    let item = WorkItem::File(FileItem {
        dataset: "customers".to_owned(),
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        version_id: None,
        etag: meta.e_tag.clone().unwrap_or_default(),
        size: meta.size,
        range: None,
        part: None,
        format: FileFormat::Csv,
        compression: Compression::None,
        created_at_ms: None,
    });
    let measured = reset_peak_rss();
    let started = Instant::now();
    let (source, dataset, schema) = pipeline.item_source(&item)?;
    let report = warehouse.load(dataset, schema, vec![source]).await?;
    let elapsed = started.elapsed();
    let peak = if measured { peak_rss_bytes() } else { None };
    if report.rows_rejected > 0 {
        bail!(
            "{} rows rejected: the generator is wrong",
            report.rows_rejected
        );
    }
    Ok((report.rows_staged, elapsed, peak))
}

/// What the run measured before the Redshift sink: the baseline and the PostgreSQL sink.
struct Baseline<'a> {
    bytes: u64,
    raw: (u64, Duration),
    /// Rows, time and peak memory of the PostgreSQL sink's load.
    postgres: (u64, Duration, Option<u64>),
    schemas: &'a TestSchemas,
}

fn line(name: &str, rows: u64, bytes: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    format!(
        "{name:<22} {rows:>12} rows  {secs:>8.1} s  {:>10.0} rows/s  {:>7.1} MB/s",
        rows as f64 / secs,
        bytes as f64 / 1e6 / secs
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = options()?;
    let (file, bytes) = generate(&options.dir, options.size_mb)?;
    let schemas = TestSchemas::new();

    eprintln!("raw COPY FROM STDIN of {} …", file.display());
    let (raw_rows, raw_time) = raw_copy(&file, &schemas.sales).await?;

    let (stores, bucket, key) = stage_object(options.store, &file, &options.dir).await?;
    eprintln!("processor load from {:?} …", options.store);
    let warehouse = postgres(&schemas.platform).await?;
    let (rows, time, peak) =
        processor_load(Arc::clone(&stores), &bucket, &key, &schemas, warehouse).await?;
    if rows != raw_rows {
        bail!("the processor loaded {rows} rows, raw COPY {raw_rows}");
    }
    let client = pg().await?;
    let in_target: i64 = client
        .query_one(
            &format!("SELECT count(*) FROM {}.customers", schemas.sales),
            &[],
        )
        .await?
        .get(0);
    if in_target as u64 != rows {
        bail!("{in_target} rows in the target, {rows} staged");
    }
    if options.sink == Sink::Redshift {
        let baseline = Baseline {
            bytes,
            raw: (raw_rows, raw_time),
            postgres: (rows, time, peak),
            schemas: &schemas,
        };
        return redshift::run(&options, stores, &bucket, &key, &baseline).await;
    }
    let split = if options.store == Store::S3 {
        eprintln!("split load: planning 128 MiB parts, loading them on two workers …");
        Some(split_load(stores_for_split(&bucket).await, &bucket, &key, &schemas).await?)
    } else {
        None
    };
    // The same rows again as a new item (a copy under another key): every key is in the
    // target, so the direct COPY clashes and the load takes the staging + MERGE path (an
    // update of every row).
    let copy = format!("{key}.again");
    stores
        .for_bucket(&bucket)?
        .copy(
            &object_store::path::Path::parse(&key)?,
            &object_store::path::Path::parse(&copy)?,
        )
        .await?;
    eprintln!("processor re-load of every row (MERGE path) …");
    let warehouse = postgres(&schemas.platform).await?;
    let (updated, update_time, update_peak) =
        processor_load(stores, &bucket, &copy, &schemas, warehouse).await?;
    if updated != rows {
        bail!("the re-load staged {updated} rows, not {rows}");
    }
    if options.store == Store::Local {
        let _ = std::fs::remove_dir_all(options.dir.join("ingest-bench-store"));
    }

    let ratio = raw_time.as_secs_f64() / time.as_secs_f64();
    println!();
    println!(
        "load benchmark: {:.2} GB CSV, {rows} rows, store {:?}, {} cores",
        bytes as f64 / 1e9,
        options.store,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("{}", line("raw COPY (baseline)", raw_rows, bytes, raw_time));
    println!("{}", line("processor load", rows, bytes, time));
    println!(
        "processor / raw COPY   {:.0} % of the baseline rate",
        ratio * 100.0
    );
    println!(
        "{}",
        line("re-load, MERGE path", updated, bytes, update_time)
    );
    println!(
        "re-load / raw COPY     {:.0} % of the baseline rate (every row an update)",
        raw_time.as_secs_f64() / update_time.as_secs_f64() * 100.0
    );
    match peak {
        Some(peak) => println!(
            "processor peak RSS     {:.0} MiB during its load",
            peak as f64 / (1024.0 * 1024.0)
        ),
        None => println!("processor peak RSS     not measured (no /proc/self/clear_refs)"),
    }
    if let Some(peak) = update_peak {
        println!(
            "re-load peak RSS       {:.0} MiB",
            peak as f64 / (1024.0 * 1024.0)
        );
    }
    if let Some(split) = split {
        println!(
            "split into {} parts    planned in {:.1} s (one scan of the file for quoted newlines)",
            split.parts,
            split.plan_time.as_secs_f64()
        );
        println!(
            "{}",
            line("split load, 2 workers", split.rows, bytes, split.load_time)
        );
        println!(
            "split / raw COPY       {:.0} % of the baseline rate",
            raw_time.as_secs_f64() / split.load_time.as_secs_f64() * 100.0
        );
        println!(
            "split vs whole         {} rows, checksum {} — identical",
            split.rows, split.checksum
        );
    }
    Ok(())
}

async fn stores_for_split(_bucket: &str) -> Arc<dyn ObjectStores> {
    let sdk_config = load_sdk_config(&emulator_settings()).await;
    Arc::new(S3Stores::new(&sdk_config, &emulator_settings()))
}

struct SplitResult {
    parts: usize,
    rows: u64,
    plan_time: Duration,
    load_time: Duration,
    checksum: String,
}

/// Row count and an order-independent checksum of every column but the load time.
async fn checksum(client: &tokio_postgres::Client, schema: &str) -> anyhow::Result<(i64, String)> {
    let row = client
        .query_one(
            &format!(
                "SELECT count(*), coalesce(sum(('x' || substr(md5(ROW(customer_id, email, full_name, country, signup_date, updated_at, _ingest_source, _ingest_partition, _ingest_offset, _ingest_sub_offset)::text), 1, 15))::bit(60)::bigint::numeric), 0)::text FROM {schema}.customers"
            ),
            &[],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

async fn split_load(
    stores: Arc<dyn ObjectStores>,
    bucket: &str,
    key: &str,
    whole: &TestSchemas,
) -> anyhow::Result<SplitResult> {
    use ingest_batch::events::CreatedObject;
    use ingest_batch::plan::{FilePlanner, Planned, S3Objects};
    let schemas = TestSchemas::new();
    let catalog = Arc::new(Catalog::from_toml(&schemas.retarget(CATALOG), "catalog")?);
    let store = stores.for_bucket(bucket)?;
    let meta = store.head(&object_store::path::Path::parse(key)?).await?;
    let planner = FilePlanner {
        catalog: Arc::clone(&catalog),
        reader: Arc::new(S3Objects {
            client: clients().await.s3,
        }),
        part_size: 128 * 1024 * 1024,
    };
    let started = Instant::now();
    let planned = planner
        .plan(&CreatedObject {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            size: meta.size,
            etag: shared::envelope::normalize_etag(meta.e_tag.as_deref().unwrap_or_default()),
            version_id: None,
            event_time_ms: None,
            undecoded_key: None,
        })
        .await?;
    let plan_time = started.elapsed();
    let Planned::Items(parts) = planned else {
        bail!("the file was not planned: {planned:?}");
    };
    let pipeline = Arc::new(Pipeline::new(Arc::clone(&catalog), stores).await?);
    let setup = PostgresWarehouse::connect(&postgres_url(), &schemas.platform).await?;
    setup.ensure_platform_tables().await?;
    let dataset = catalog.get("customers").context("customers dataset")?;
    setup
        .ensure_target(
            dataset,
            pipeline.load_schema("customers").context("planned")?,
        )
        .await?;
    let count = parts.len();
    let queue = Arc::new(std::sync::Mutex::new(std::collections::VecDeque::from(
        parts,
    )));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..2 {
        let queue = Arc::clone(&queue);
        let pipeline = Arc::clone(&pipeline);
        let platform = schemas.platform.clone();
        workers.spawn(async move {
            let warehouse = PostgresWarehouse::connect(&postgres_url(), &platform).await?;
            let mut rows = 0;
            loop {
                let next = queue
                    .lock()
                    .map_err(|_| anyhow::anyhow!("poisoned"))?
                    .pop_front();
                let Some(part) = next else { break };
                let item = WorkItem::File(part);
                let (source, dataset, schema) = pipeline.item_source(&item)?;
                let report = warehouse.load(dataset, schema, vec![source]).await?;
                if report.rows_rejected > 0 {
                    bail!("{} rows rejected in {item:?}", report.rows_rejected);
                }
                rows += report.rows_staged;
            }
            anyhow::Ok(rows)
        });
    }
    let mut rows = 0;
    while let Some(result) = workers.join_next().await {
        rows += result??;
    }
    let load_time = started.elapsed();
    let client = pg().await?;
    let expected = checksum(&client, &whole.sales).await?;
    let found = checksum(&client, &schemas.sales).await?;
    if found != expected || found.0 as u64 != rows {
        bail!("split load {found:?} (staged {rows}) differs from the whole load {expected:?}");
    }
    Ok(SplitResult {
        parts: count,
        rows,
        plan_time,
        load_time,
        checksum: found.1,
    })
}
