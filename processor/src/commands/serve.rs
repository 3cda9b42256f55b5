//! `processor serve`: the long-running service, until SIGTERM or Ctrl-C.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use shared::catalog::Catalog;
use shared::config::PlatformConfig;
use shared::telemetry::init_tracing;

pub async fn run(config: &PlatformConfig) -> anyhow::Result<ExitCode> {
    init_tracing(&config.telemetry)?;
    if let Some(local) = &config.local {
        // No Lambdas locally: the platform watches its landing folder and reads its
        // stream itself, as `dev` does.
        let options = processor::local::dev::DevOptions {
            dir: local.dir.clone(),
            catalog: Some(super::configured_catalog_path(config)?.to_owned()),
            redrive: false,
            workers: config.processor.workers,
            visibility_timeout: Duration::from_secs(30),
            scan_interval: Duration::from_secs(1),
            kinesis_port: Some(local.kinesis_port),
            status_port: Some(local.status_port),
        };
        return super::dev::run_local(&options).await;
    }
    let view = config.serve()?;
    let catalog = Arc::new(Catalog::from_file(view.catalog_path)?);
    processor::serve::serve(config, catalog, super::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}
