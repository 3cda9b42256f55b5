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
    },
}
