//! `processor demo`: the whole platform on this machine, with progress and a summary.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use processor::local::generate::DemoSize;
use processor::local::{DemoOptions, Progress, render_summary, run_demo};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where the demo keeps its files, queue, stream and warehouse.
    #[arg(long, default_value = "demo-data")]
    dir: PathBuf,
    #[arg(long, default_value_t = 2_000)]
    customers: usize,
    #[arg(long, default_value_t = 6_000)]
    orders: usize,
    /// Order status events put into the stream.
    #[arg(long, default_value_t = 3_000)]
    events: usize,
    /// Share of dirty rows and malformed events, 0 to 0.5.
    #[arg(long, default_value_t = 0.02)]
    dirty_share: f64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Events per second put into the stream.
    #[arg(long, default_value_t = 500)]
    rate: u32,
    /// Processor workers.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Seconds a received work item stays hidden (after a crash, unfinished items
    /// come back this long after their last heartbeat).
    #[arg(long, default_value_t = 10)]
    visibility_timeout_secs: u64,
    /// No progress lines.
    #[arg(long)]
    quiet: bool,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        (0.0..=0.5).contains(&args.dirty_share),
        "--dirty-share must be between 0 and 0.5"
    );
    let options = DemoOptions {
        dir: args.dir,
        size: DemoSize {
            customers: args.customers,
            orders: args.orders,
            events: args.events,
            dirty_share: args.dirty_share,
            seed: args.seed,
        },
        events_per_second: args.rate,
        workers: args.workers,
        visibility_timeout: Duration::from_secs(args.visibility_timeout_secs.max(1)),
    };
    eprintln!(
        "demo in {}: {} customers, {} orders (with items and payments) as files, {} events at {}/s into the stream",
        options.dir.display(),
        args.customers,
        args.orders,
        args.events,
        args.rate
    );
    let mut last_line = Instant::now();
    let mut progress = |p: &Progress| {
        if args.quiet || last_line.elapsed() < Duration::from_millis(900) {
            return;
        }
        last_line = Instant::now();
        print_progress(p);
    };
    let summary = run_demo(&options, &mut progress).await?;
    print!("{}", render_summary(&summary));
    println!(
        "its catalog and a config naming this folder: {} and {} (copy and edit them; `processor --config {} serve` runs the folder with them)",
        summary.layout.catalog().display(),
        summary.layout.config().display(),
        summary.layout.config().display()
    );
    Ok(super::exit_code(summary.matches_expectation()))
}

fn print_progress(p: &Progress) {
    eprintln!(
        "[{:5.1} s] files {} ({} items sent) · events {}/{} put, {} read, {} quarantined · queue {} waiting, {} in flight · {} rows loaded",
        p.elapsed.as_secs_f64(),
        p.files,
        p.file_items_sent,
        p.events_put,
        p.events_total,
        p.stream.records,
        p.stream.quarantined,
        p.queue_visible,
        p.queue_in_flight,
        p.rows_loaded
    );
}
