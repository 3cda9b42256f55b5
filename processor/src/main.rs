//! The `processor` binary: parses the command line, reads the platform config once and
//! hands both to the subcommand's module.

mod cli;
mod commands;

use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, Command};
use shared::config::PlatformConfig;

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = PlatformConfig::load(cli.config.as_deref(), std::env::vars())?;
    match cli.command {
        Command::Check(args) => commands::check::run(&config, args).await,
        Command::Catalog { command } => commands::catalog::run(&config, command).await,
        Command::Serve => commands::serve::run(&config).await,
        Command::Backfill(args) => commands::backfill::run(&config, args).await,
        Command::Replay(args) => commands::replay::run(&config, args).await,
        Command::Redrive(args) => commands::redrive::run(&config, args).await,
        Command::Rejects(args) => commands::rejects::run(&config, args).await,
        Command::Status(args) => commands::status::run(&config, args).await,
        Command::Trace(args) => commands::trace::run(&config, args).await,
        Command::Dlq(args) => commands::dlq::run(&config, args).await,
        Command::Prune(args) => commands::prune::run(&config, args).await,
        Command::Demo(args) => commands::demo::run(args).await,
        Command::Query(args) => commands::query::run(&config, args),
        Command::Dev(args) => commands::dev::run(&config, args).await,
        Command::Put(args) => commands::put::run(&config, args).await,
        Command::Healthcheck(args) => commands::healthcheck::run(&config, args).await,
    }
}
