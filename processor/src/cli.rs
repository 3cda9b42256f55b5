//! The processor's command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Loads data from S3 files and Kinesis streams into Redshift (or PostgreSQL).
#[derive(Debug, Parser)]
#[command(name = "processor", version, about)]
pub struct Cli {
    /// Platform config file (TOML); every key can be overridden with INGEST_SECTION__KEY.
    #[arg(long, global = true, env = shared::config::CONFIG_PATH_ENV)]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the config and the dataset catalog, planning every transform.
    Check {
        /// Catalog file; defaults to [catalog] path of the config.
        #[arg(long)]
        catalog: Option<PathBuf>,
    },
    /// Consume the work queue and load the warehouse until SIGTERM or Ctrl-C.
    Serve,
    /// Enqueue work items for the objects under a prefix (loads history, re-runs a
    /// prefix, scheduled sweeps); idempotent: objects already loaded are skipped.
    Backfill {
        /// The bucket to list.
        #[arg(long)]
        bucket: String,
        /// Only keys starting with this prefix.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Only objects modified at or after this date (2026-11-01) or time (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// List and plan, send nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Read a time window of a stream again and enqueue its records (restores deleted
    /// rows; adds no duplicates).
    Replay {
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
    },
    /// Move messages from the dead-letter queue back to the work queue.
    Redrive {
        /// Only report how many messages would move.
        #[arg(long)]
        dry_run: bool,
        /// Move at most this many messages (moves them one batch at a time).
        #[arg(long)]
        max: Option<u64>,
        /// Messages per second.
        #[arg(long, default_value_t = 100)]
        rate: u32,
        /// Leave in the dead-letter queue any message already redriven this many times
        /// (counted on the message), so a poison message cannot cycle forever.
        #[arg(long)]
        max_redrives: Option<u32>,
    },
    /// Run the whole platform on this machine with embedded defaults (no AWS, no
    /// servers): generate an e-commerce data set and a stream of events, ingest both,
    /// load an embedded warehouse and report per dataset. Safe to run again.
    Demo {
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
    },
    /// Run SQL against the demo's embedded warehouse and print the result.
    Query {
        /// The demo folder.
        #[arg(long, default_value = "demo-data")]
        dir: PathBuf,
        /// One SQL statement (SQLite); targets are `<schema>_<table>`, e.g. sales_orders.
        sql: String,
    },
    /// Watch the demo's landing folder and load files dropped into it (like S3 uploads),
    /// until Ctrl-C.
    Dev {
        /// The demo folder; files go under <dir>/objects/demo/landing/<dataset>/.
        #[arg(long, default_value = "demo-data")]
        dir: PathBuf,
        /// Processor workers.
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Seconds between two looks at the folder.
        #[arg(long, default_value_t = 1)]
        scan_interval_secs: u64,
    },
    /// Exit 0 when the processor running here answers that it is live (the container's
    /// health check; the image has no shell or HTTP client).
    Healthcheck {
        /// The health endpoint; default: processor.health_address of the config.
        #[arg(long)]
        address: Option<std::net::SocketAddr>,
    },
}
