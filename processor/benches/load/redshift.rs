//! The load benchmark's Redshift run: the same file through the Redshift sink on the
//! Redshift stand-in, next to raw COPY and the PostgreSQL sink, then several datasets at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use processor::objects::ObjectStores;
use processor::warehouse::Warehouse;
use processor::warehouse::connection::{Connector, Login};
use processor::warehouse::redshift::RedshiftWarehouse;
use shared::config::RedshiftSettings;
use test_support::{RedshiftStandIn, TestSchemas, clients, create_bucket};

use super::{Baseline, Options, checksum, line, pg, processor_load};

/// Parquet files per load, as the default `warehouse.redshift.staging_files`.
const STAGING_FILES: usize = 4;

pub(super) async fn run(
    options: &Options,
    stores: Arc<dyn ObjectStores>,
    bucket: &str,
    key: &str,
    baseline: &Baseline<'_>,
) -> anyhow::Result<()> {
    let s3 = clients().await.s3;
    let standin = RedshiftStandIn::start(s3.clone()).await;
    let settings = RedshiftSettings {
        iam_role: "arn:aws:iam::123456789012:role/bench".to_owned(),
        staging_bucket: create_bucket(&s3, "staging").await,
        staging_prefix: "ingest/".to_owned(),
        staging_files: STAGING_FILES,
    };
    let sink = Sink {
        standin: &standin,
        settings: &settings,
        stores: &stores,
    };

    eprintln!("Redshift sink load (stand-in) …");
    let schemas = TestSchemas::new();
    let warehouse = sink.connect(&schemas.platform).await?;
    let (rows, time, peak) =
        processor_load(Arc::clone(&stores), bucket, key, &schemas, warehouse).await?;
    let client = pg().await?;
    let expected = checksum(&client, &baseline.schemas.sales).await?;
    let found = checksum(&client, &schemas.sales).await?;
    if found != expected || found.0 as u64 != rows {
        bail!("the Redshift sink's rows {found:?} differ from the PostgreSQL sink's {expected:?}");
    }

    eprintln!(
        "{} datasets through the Redshift sink at once …",
        options.datasets
    );
    let (many_rows, many_time) = load_at_once(&sink, options.datasets, bucket, key).await?;
    print(
        baseline,
        (rows, time, peak),
        (many_rows, many_time),
        options.datasets,
    );
    Ok(())
}

/// Connects Redshift sinks through the stand-in.
struct Sink<'a> {
    standin: &'a RedshiftStandIn,
    settings: &'a RedshiftSettings,
    stores: &'a Arc<dyn ObjectStores>,
}

impl Sink<'_> {
    async fn connect(&self, platform: &str) -> anyhow::Result<Arc<dyn Warehouse>> {
        let staging = self.stores.for_bucket(&self.settings.staging_bucket)?;
        Ok(Arc::new(
            RedshiftWarehouse::connect(
                self.standin.url(),
                Connector::Plain,
                Login::Url,
                self.settings,
                staging,
                platform,
            )
            .await?,
        ))
    }
}

/// `datasets` loads of the file into as many datasets, each on its own connection and task;
/// returns the rows and the wall time of all of them.
async fn load_at_once(
    sink: &Sink<'_>,
    datasets: usize,
    bucket: &str,
    key: &str,
) -> anyhow::Result<(u64, Duration)> {
    let mut loads = tokio::task::JoinSet::new();
    let started = Instant::now();
    for _ in 0..datasets {
        let schemas = TestSchemas::new();
        let warehouse = sink.connect(&schemas.platform).await?;
        let stores = Arc::clone(sink.stores);
        let (bucket, key) = (bucket.to_owned(), key.to_owned());
        loads.spawn(async move {
            processor_load(stores, &bucket, &key, &schemas, warehouse)
                .await
                .map(|(rows, _, _)| rows)
        });
    }
    let mut rows = 0;
    while let Some(result) = loads.join_next().await {
        rows += result??;
    }
    Ok((rows, started.elapsed()))
}

fn print(
    baseline: &Baseline<'_>,
    (rows, time, peak): (u64, Duration, Option<u64>),
    (many_rows, many_time): (u64, Duration),
    datasets: usize,
) {
    let (raw_rows, raw_time) = baseline.raw;
    let (pg_rows, pg_time, pg_peak) = baseline.postgres;
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    let bytes = baseline.bytes;
    println!();
    println!(
        "Redshift sink benchmark (stand-in): {:.2} GB CSV, {rows} rows, {} cores, {STAGING_FILES} staged files per load",
        bytes as f64 / 1e9,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("{}", line("raw COPY (baseline)", raw_rows, bytes, raw_time));
    println!("{}", line("PostgreSQL sink", pg_rows, bytes, pg_time));
    println!("{}", line("Redshift sink", rows, bytes, time));
    println!(
        "Redshift / raw COPY    {:.0} % of the baseline rate; {:.0} % of the PostgreSQL sink's",
        raw_time.as_secs_f64() / time.as_secs_f64() * 100.0,
        pg_time.as_secs_f64() / time.as_secs_f64() * 100.0
    );
    if let (Some(pg_peak), Some(peak)) = (pg_peak, peak) {
        println!(
            "peak RSS               PostgreSQL sink {:.0} MiB, Redshift sink {:.0} MiB (with the stand-in's COPY)",
            mib(pg_peak),
            mib(peak)
        );
    }
    println!(
        "{}",
        line(
            &format!("{datasets} datasets at once"),
            many_rows,
            bytes * datasets as u64,
            many_time
        )
    );
    println!(
        "{datasets} at once / one     {:.2}× the rows per second of one load",
        (many_rows as f64 / many_time.as_secs_f64()) / (rows as f64 / time.as_secs_f64())
    );
    println!("rows                   identical to the PostgreSQL sink's (count and checksum)");
}
