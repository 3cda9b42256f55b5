//! `processor query`: SQL against the local platform's warehouse.

use std::path::PathBuf;
use std::process::ExitCode;

use processor::local::{Layout, query::run_query};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The demo folder.
    #[arg(long, default_value = "demo-data")]
    dir: PathBuf,
    /// One SQL statement (SQLite); targets are `<schema>_<table>`, e.g. sales_orders.
    sql: String,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let layout = Layout { dir: args.dir };
    print!("{}", run_query(&layout.database(), &args.sql)?);
    Ok(ExitCode::SUCCESS)
}
