//! `processor query`: SQL against the local platform's warehouse.

use std::path::PathBuf;
use std::process::ExitCode;

use processor::local::{Layout, query::run_query};
use shared::config::PlatformConfig;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The local platform's folder (default: [local] dir of the config, else demo-data).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// One SQL statement (SQLite); targets are `<schema>_<table>`, e.g. sales_orders.
    sql: String,
}

pub fn run(config: &PlatformConfig, args: Args) -> anyhow::Result<ExitCode> {
    let layout = Layout {
        dir: super::local_dir(config, args.dir),
    };
    print!("{}", run_query(&layout.database(), &args.sql)?);
    Ok(ExitCode::SUCCESS)
}
