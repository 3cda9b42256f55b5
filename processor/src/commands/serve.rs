//! `processor serve`: the long-running service, until SIGTERM or Ctrl-C.

use std::process::ExitCode;
use std::sync::Arc;

use shared::catalog::Catalog;
use shared::config::PlatformConfig;
use shared::telemetry::init_tracing;

pub async fn run(config: &PlatformConfig) -> anyhow::Result<ExitCode> {
    let view = config.serve()?;
    init_tracing(&config.telemetry)?;
    let catalog = Arc::new(Catalog::from_file(view.catalog_path)?);
    processor::serve::serve(config, catalog, super::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}
