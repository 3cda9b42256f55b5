use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use processor::check::{check_catalog, render_report};
use processor::cli::{Cli, Command};
use shared::catalog::Catalog;
use shared::config::{PlatformConfig, Section};
use shared::telemetry::init_tracing;

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
        Command::Serve => {
            config.require(&[Section::Queue, Section::Catalog, Section::Warehouse])?;
            init_tracing(&config.telemetry)?;
            let path = config
                .catalog_path
                .clone()
                .context("[catalog] path is required")?;
            let catalog = Arc::new(Catalog::from_file(&path)?);
            processor::service::serve(&config, catalog, shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Completes on SIGTERM (ECS stopping the task) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
