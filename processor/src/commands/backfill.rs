//! `processor backfill`: enqueues the objects under a prefix, with progress.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use ingest_batch::FileIngest;
use processor::local::LOCAL_BUCKET;
use processor::operations::backfill::{BackfillOptions, BackfillProgress, backfill, parse_since};
use shared::aws::AwsClients;
use shared::catalog::Catalog;
use shared::config::PlatformConfig;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The bucket to list (under [local]: the landing folder, `demo`, the default).
    #[arg(long)]
    bucket: Option<String>,
    /// Only keys starting with this prefix.
    #[arg(long, default_value = "")]
    prefix: String,
    /// Only objects modified at or after this date (2026-11-01) or time (RFC 3339).
    #[arg(long)]
    since: Option<String>,
    /// List and plan, send nothing.
    #[arg(long)]
    dry_run: bool,
}

pub async fn run(config: &PlatformConfig, args: Args) -> anyhow::Result<ExitCode> {
    let since_ms = args
        .since
        .as_deref()
        .map(parse_since)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let local = super::local_layout(config);
    let bucket = match (args.bucket, &local) {
        (Some(bucket), _) => bucket,
        (None, Some(_)) => LOCAL_BUCKET.to_owned(),
        (None, None) => anyhow::bail!("--bucket is required: the bucket to list"),
    };
    let options = BackfillOptions {
        bucket,
        prefix: args.prefix,
        since_ms,
        dry_run: args.dry_run,
    };
    let started = Instant::now();
    let mut progress = |p: &BackfillProgress| print_progress(p, started, options.dry_run);
    let done = match &local {
        Some(layout) => {
            let catalog = super::configured_catalog(config)?;
            processor::local::operations::backfill(layout, catalog, &options, &mut progress).await?
        }
        None => {
            let view = config.file_ingest()?;
            let catalog = Arc::new(Catalog::from_file(view.catalog_path)?);
            let clients = AwsClients::new(&config.aws).await;
            let ingest = FileIngest::new(catalog, &clients, view.queue, config.files, "backfill");
            backfill(&clients.s3, &ingest, &options, &mut progress).await?
        }
    };
    eprintln!();
    println!(
        "{} {} work item(s) for {} object(s) under {} ({} split into parts, {} skipped: folder markers, empty, unrouted or gone)",
        if options.dry_run {
            "would enqueue"
        } else {
            "enqueued"
        },
        done.work_items,
        done.planned,
        match &local {
            Some(layout) => layout.landing().join(&options.prefix).display().to_string(),
            None => format!("s3://{}/{}", options.bucket, options.prefix),
        },
        done.files_split,
        done.skipped
    );
    Ok(ExitCode::SUCCESS)
}

fn print_progress(p: &BackfillProgress, started: Instant, dry_run: bool) {
    let secs = started.elapsed().as_secs_f64().max(0.001);
    eprint!(
        "\rlisted {} objects ({} older than --since), planned {} ({:.1} MiB), {} work item(s) {}, {} skipped — {:.0} objects/s",
        p.listed,
        p.older,
        p.planned,
        p.bytes as f64 / (1024.0 * 1024.0),
        p.work_items,
        if dry_run { "planned" } else { "sent" },
        p.skipped,
        p.listed as f64 / secs
    );
}
