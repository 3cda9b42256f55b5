//! `processor check`: validates the catalog and plans every transform.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use processor::operations::check::{check_catalog, plan_tables, render_report};
use processor::serve::connect_warehouse;
use shared::catalog::Catalog;
use shared::config::PlatformConfig;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Catalog file; defaults to [catalog] path of the config.
    #[arg(long)]
    catalog: Option<PathBuf>,
    /// Also read every target table from the configured warehouse and print what start-up
    /// would change (tables created, columns added or widened) or refuse; changes nothing.
    #[arg(long)]
    warehouse: bool,
}

pub async fn run(config: &PlatformConfig, args: Args) -> anyhow::Result<ExitCode> {
    let path = args
        .catalog
        .or_else(|| config.catalog_path.clone())
        .context("no catalog: pass --catalog FILE or set [catalog] path in the config")?;
    let catalog = Catalog::from_file(&path)?;
    let checks = check_catalog(&catalog).await;
    print!("{}", render_report(&catalog, &checks));
    let mut failed = checks.iter().filter(|c| !c.is_ok()).count();
    let streams = catalog.streams();
    if config.local.is_some() && streams.len() > 1 {
        println!(
            "local mode: the local platform reads one stream, and this catalog routes {}",
            streams.join(", ")
        );
        failed += 1;
    }
    println!(
        "catalog {}: {} dataset(s), {} with problems",
        path.display(),
        checks.len(),
        failed
    );
    let refused = if args.warehouse {
        print_table_plans(config, &catalog).await?
    } else {
        0
    };
    Ok(super::exit_code(failed == 0 && refused == 0))
}

/// Prints what start-up would do to each target table; returns how many are refused.
async fn print_table_plans(config: &PlatformConfig, catalog: &Catalog) -> anyhow::Result<usize> {
    let plans = match super::local_layout(config) {
        Some(layout) if !layout.database().exists() => {
            println!(
                "warehouse tables: {} holds no local platform yet; `processor serve` creates it and every target table",
                layout.dir.display()
            );
            return Ok(0);
        }
        Some(layout) => {
            let warehouse = processor::local::operations::warehouse(&layout)?;
            plan_tables(&warehouse, catalog).await?
        }
        None => {
            let settings = config.warehouse()?;
            let warehouse = connect_warehouse(config, settings).await?;
            plan_tables(warehouse.as_ref(), catalog).await?
        }
    };
    println!("warehouse tables (nothing changed):");
    for plan in &plans {
        println!("  {}", plan.to_string().replace('\n', "\n  "));
    }
    let refused = plans.iter().filter(|plan| plan.is_refused()).count();
    println!(
        "{} table(s): {} to create, {} to change, {} refused",
        plans.len(),
        plans.iter().filter(|plan| plan.create).count(),
        plans
            .iter()
            .filter(|plan| !plan.create && !plan.steps.is_empty())
            .count(),
        refused
    );
    Ok(refused)
}
