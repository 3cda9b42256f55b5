//! `processor serve`: the long-running service, until SIGTERM or Ctrl-C.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use shared::catalog::Catalog;
use shared::config::{PlatformConfig, Section};
use shared::telemetry::init_tracing;

pub async fn run(config: &PlatformConfig) -> anyhow::Result<ExitCode> {
    config.require(&[Section::Queue, Section::Catalog, Section::Warehouse])?;
    init_tracing(&config.telemetry)?;
    let path = config
        .catalog_path
        .clone()
        .context("[catalog] path is required")?;
    let catalog = Arc::new(Catalog::from_file(&path)?);
    processor::serve::serve(config, catalog, super::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}
