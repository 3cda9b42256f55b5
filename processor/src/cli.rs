//! The processor's command line: global options and one subcommand per module of
//! `commands`, each with its own arguments.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::commands::{
    backfill, catalog, check, demo, dev, dlq, healthcheck, prune, put, query, redrive, rejects,
    replay, status, trace,
};

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
    Check(check::Args),
    /// Work on catalogs: `catalog draft FILES…` drafts a dataset's entry from its files.
    Catalog {
        #[command(subcommand)]
        command: catalog::Command,
    },
    /// Consume the work queue and load the warehouse until SIGTERM or Ctrl-C.
    Serve,
    /// Enqueue work items for the objects under a prefix (loads history, re-runs a
    /// prefix, scheduled sweeps); idempotent: objects already loaded are skipped.
    Backfill(backfill::Args),
    /// Read a time window of a stream again and enqueue its records (restores deleted
    /// rows; adds no duplicates).
    Replay(replay::Args),
    /// Move messages from the dead-letter queue back to the work queue.
    Redrive(redrive::Args),
    /// Per dataset over a window (default 24 h): files and stream items loaded, rows
    /// loaded and rejected, dead letters and their reasons, work waiting; `--fail-on`
    /// exits 1 when a condition holds (for cron and CI alerts).
    Status(status::Args),
    /// Where one file is and why: routed or not, its work items loaded (rows, rejects),
    /// dead-lettered (the reason) or still waiting, its File Loaded event — and the next step.
    Trace(trace::Args),
    /// Show rejected rows (row number, reason, the raw row) by dataset, file, reason and
    /// time, newest first, a page at a time.
    Rejects(rejects::Args),
    /// Show the dead letters without taking them: dataset, the data each names, reason,
    /// receive and redrive counts, age.
    Dlq(dlq::Args),
    /// Delete the platform tables' rows older than `[retention]` keeps them (rejects and
    /// completed files after 90 days by default; the ledger is kept unless configured).
    /// Safe to run again, and to schedule.
    Prune(prune::Args),
    /// Run the whole platform on this machine with embedded defaults (no AWS, no
    /// servers): generate an e-commerce data set and a stream of events, ingest both,
    /// load an embedded warehouse and report per dataset. Safe to run again.
    Demo(demo::Args),
    /// Run SQL against the demo's embedded warehouse and print the result.
    Query(query::Args),
    /// Watch the local landing folder and load files dropped into it (like S3 uploads) and
    /// records put to the local stream, with any catalog, until Ctrl-C.
    Dev(dev::Args),
    /// Put JSON lines (a file or standard input) into the local platform's stream, as a
    /// producer puts to Kinesis; `dev` loads them.
    Put(put::Args),
    /// Exit 0 when the processor running here answers that it is live (the container's
    /// health check; the image has no shell or HTTP client).
    Healthcheck(healthcheck::Args),
}
