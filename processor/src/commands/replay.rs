//! `processor replay`: reads a time window of a stream again, with progress and resumable
//! checkpoints.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use ingest_stream::handler::StreamIngest;
use ingest_stream::poller::ReadProgress;
use processor::operations::backfill::parse_since;
use processor::operations::replay::{ReplayOptions, replay};
use shared::aws::AwsClients;
use shared::catalog::Catalog;
use shared::config::PlatformConfig;
use shared::stream::{KinesisStream, epoch_millis};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The Kinesis stream.
    #[arg(long)]
    stream: String,
    /// Records that arrived at or after this date (2026-11-01) or time (RFC 3339).
    #[arg(long)]
    from: String,
    /// … and up to this time; default: when the replay starts.
    #[arg(long)]
    to: Option<String>,
    /// Keep checkpoints in this file; run again with it to resume after an interruption.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Records per GetRecords call.
    #[arg(long, default_value_t = 1000)]
    batch_size: u32,
}

pub async fn run(config: &PlatformConfig, args: Args) -> anyhow::Result<ExitCode> {
    let options = window(&args)?;
    let stopped = super::stop_on_signal(|| {
        eprintln!(
            "\nstopping: checkpoints are saved; run again with the same --checkpoint to resume"
        )
    });
    let started = Instant::now();
    let stream = &args.stream;
    let mut progress = |p: &ReadProgress| {
        eprint!(
            "\rreplay {stream}: {} records ({:.0}/s), {} work items, {} quarantined, {}/{} shards done, {:.1} s behind the tip   ",
            p.records,
            p.records as f64 / started.elapsed().as_secs_f64().max(0.001),
            p.work_items_sent,
            p.quarantined,
            p.shards_finished,
            p.shards,
            p.millis_behind_latest as f64 / 1000.0
        );
    };
    let done = match super::local_layout(config) {
        Some(layout) => {
            let catalog = super::configured_catalog(config)?;
            processor::local::operations::replay(
                &layout,
                catalog,
                stream,
                &options,
                stopped,
                &mut progress,
            )
            .await?
        }
        None => {
            let view = config.stream_ingest()?;
            let catalog = Arc::new(Catalog::from_file(view.catalog_path)?);
            let clients = AwsClients::new(&config.aws).await;
            let ingest = StreamIngest::new(catalog, &clients, view.queue, view.stream);
            let kinesis = KinesisStream::new(clients.kinesis.clone(), stream);
            replay(&kinesis, &ingest, &options, stopped, &mut progress).await?
        }
    };
    eprintln!();
    println!(
        "replayed {} records of {stream} into {} work items ({} quarantined)",
        done.records, done.work_items_sent, done.quarantined
    );
    Ok(ExitCode::SUCCESS)
}

/// The window and checkpoint of the arguments, checked.
fn window(args: &Args) -> anyhow::Result<ReplayOptions> {
    let from_ms = parse_since(&args.from).map_err(anyhow::Error::msg)?;
    let to_ms = match args.to.as_deref() {
        Some(text) => parse_since(text).map_err(anyhow::Error::msg)?,
        None => epoch_millis(std::time::SystemTime::now()),
    };
    anyhow::ensure!(from_ms < to_ms, "--from must be before --to");
    Ok(ReplayOptions {
        from_ms,
        to_ms,
        checkpoint_file: args.checkpoint.clone(),
        batch_size: args.batch_size,
    })
}
