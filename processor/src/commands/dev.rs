//! `processor dev`: watches the local platform's landing folder and loads what lands.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use processor::local::dev::{DevEvent, DevOptions, run_dev};
use shared::config::{DEFAULT_KINESIS_PORT, DEFAULT_STATUS_PORT, PlatformConfig};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The local platform's folder (default: [local] dir of the config, else demo-data);
    /// files go under <dir>/objects/demo/<key>.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Catalog file (default: [catalog] path of the config, else the example catalog,
    /// catalog/ecommerce.toml).
    #[arg(long)]
    catalog: Option<PathBuf>,
    /// Move every dead letter back to the work queue at start, after fixing the catalog.
    #[arg(long)]
    redrive: bool,
    /// Processor workers.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// The loopback port of the Kinesis-compatible endpoint producers put to
    /// (AWS_ENDPOINT_URL_KINESIS=http://127.0.0.1:PORT); 0 picks a free one. Default:
    /// [local] kinesis_port of the config, else 4567.
    #[arg(long)]
    kinesis_port: Option<u16>,
    /// Serve no Kinesis-compatible endpoint.
    #[arg(long)]
    no_kinesis: bool,
    /// The loopback port of the status page (http://127.0.0.1:PORT/status); 0 picks a
    /// free one. Default: [local] status_port of the config, else 4568.
    #[arg(long)]
    status_port: Option<u16>,
    /// Serve no status page.
    #[arg(long)]
    no_status: bool,
    /// Seconds between two looks at the folder.
    #[arg(long, default_value_t = 1)]
    scan_interval_secs: u64,
}

pub async fn run(config: &PlatformConfig, args: Args) -> anyhow::Result<ExitCode> {
    let kinesis_port = args
        .kinesis_port
        .or_else(|| config.local.as_ref().map(|local| local.kinesis_port))
        .unwrap_or(DEFAULT_KINESIS_PORT);
    let status_port = args
        .status_port
        .or_else(|| config.local.as_ref().map(|local| local.status_port))
        .unwrap_or(DEFAULT_STATUS_PORT);
    let options = DevOptions {
        dir: super::local_dir(config, args.dir),
        catalog: args.catalog.or_else(|| config.catalog_path.clone()),
        redrive: args.redrive,
        workers: args.workers,
        visibility_timeout: Duration::from_secs(30),
        scan_interval: Duration::from_secs(args.scan_interval_secs.max(1)),
        kinesis_port: (!args.no_kinesis).then_some(kinesis_port),
        status_port: (!args.no_status).then_some(status_port),
    };
    run_local(&options).await
}

/// Runs the local platform until SIGTERM or Ctrl-C (`dev`, and `serve` under [local]).
pub async fn run_local(options: &DevOptions) -> anyhow::Result<ExitCode> {
    let stopped = super::stop_on_signal(|| {});
    run_dev(options, stopped, &mut report).await?;
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
        DevEvent::StatusPage { url } => eprintln!("status page on {url}"),
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
