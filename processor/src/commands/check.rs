//! `processor check`: validates the catalog and plans every transform.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use processor::operations::check::{check_catalog, render_report};
use shared::catalog::Catalog;
use shared::config::PlatformConfig;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Catalog file; defaults to [catalog] path of the config.
    #[arg(long)]
    catalog: Option<PathBuf>,
}

pub async fn run(config: &PlatformConfig, args: Args) -> anyhow::Result<ExitCode> {
    let path = args
        .catalog
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
    Ok(super::exit_code(failed == 0))
}
