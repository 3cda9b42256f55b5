//! `processor dev`: watches the local platform's landing folder and loads what lands.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use processor::local::dev::{DevEvent, DevOptions, run_dev};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The demo folder; files go under <dir>/objects/demo/landing/<dataset>/.
    #[arg(long, default_value = "demo-data")]
    dir: PathBuf,
    /// Catalog file; defaults to the example catalog (catalog/ecommerce.toml).
    #[arg(long)]
    catalog: Option<PathBuf>,
    /// Move every dead letter back to the work queue at start, after fixing the catalog.
    #[arg(long)]
    redrive: bool,
    /// Processor workers.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// The loopback port of the Kinesis-compatible endpoint producers put to
    /// (AWS_ENDPOINT_URL_KINESIS=http://127.0.0.1:PORT); 0 picks a free one.
    #[arg(long, default_value_t = 4567)]
    kinesis_port: u16,
    /// Serve no Kinesis-compatible endpoint.
    #[arg(long)]
    no_kinesis: bool,
    /// Seconds between two looks at the folder.
    #[arg(long, default_value_t = 1)]
    scan_interval_secs: u64,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let options = DevOptions {
        dir: args.dir,
        catalog: args.catalog,
        redrive: args.redrive,
        workers: args.workers,
        visibility_timeout: Duration::from_secs(30),
        scan_interval: Duration::from_secs(args.scan_interval_secs.max(1)),
        kinesis_port: (!args.no_kinesis).then_some(args.kinesis_port),
    };
    let stopped = super::stop_on_signal(|| {});
    run_dev(&options, stopped, &mut report).await?;
    Ok(ExitCode::SUCCESS)
}

fn report(event: DevEvent) {
    match event {
        DevEvent::Watching { folder, routes } => eprintln!(
            "watching {} — drop files under {} ; Ctrl-C stops",
            folder.display(),
            routes.join(", ")
        ),
        DevEvent::KinesisEndpoint { url, streams } => eprintln!(
            "Kinesis endpoint on {url} for stream(s) {}: point producers at it with AWS_ENDPOINT_URL_KINESIS={url}",
            streams.join(", ")
        ),
        DevEvent::Redriven { messages } => {
            eprintln!("moved {messages} dead letter(s) back to the work queue")
        }
        DevEvent::Requeued { key } => eprintln!("queued {key} again from the dead-letter queue"),
        DevEvent::Queued { key, work_items } => {
            eprintln!("queued {key}: {work_items} work item(s)")
        }
        DevEvent::AlreadyLoaded { key } => {
            eprintln!("already loaded {key}: the ledger holds it; nothing queued")
        }
        DevEvent::Skipped { key, reasons } => eprintln!("skipped {key}: {reasons}"),
        DevEvent::Failed { key, reason } => eprintln!("failed {key}: {reason}"),
        DevEvent::Loaded {
            key,
            table,
            rows,
            rejected,
        } => {
            let rejects = if rejected > 0 {
                " (their reasons: processor query \"SELECT row_number, reason FROM ingest_rejects\")"
            } else {
                ""
            };
            eprintln!("loaded {key} into {table}: {rows} row(s), {rejected} rejected{rejects}")
        }
        DevEvent::StreamLoaded {
            table,
            rows,
            rejected,
        } => {
            eprintln!("stream records loaded into {table}: {rows:+} row(s), {rejected:+} rejected")
        }
        DevEvent::DeadLettered { key, reason, again } => eprintln!(
            "dead-lettered {key}{}: {reason}\n  fix: correct the file and drop it again (a changed file is a new load), or fix the catalog and restart with `processor dev --redrive`",
            if again {
                " (earlier; not queued again)"
            } else {
                ""
            }
        ),
    }
}
