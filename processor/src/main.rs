use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use processor::check::{check_catalog, render_report};
use processor::cli::{Cli, Command};
use shared::catalog::Catalog;
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
        Command::Check { catalog } => {
            let path = catalog
                .or_else(|| config.catalog_path.clone())
                .context("no catalog: pass --catalog FILE or set [catalog] path in the config")?;
            let catalog = Catalog::from_file(&path)?;
            let checks = check_catalog(&catalog).await;
            print!("{}", render_report(&catalog, &checks));
            let failed = checks.iter().filter(|c| !c.is_ok()).count();
            println!(
                "catalog {}: {} dataset(s), {} with problems",
                path.display(),
                checks.len(),
                failed
            );
            Ok(if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
