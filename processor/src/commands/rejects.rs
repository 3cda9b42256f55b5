//! `processor rejects`: the rejected rows, by dataset, file, reason and time, a page at a
//! time.

use std::process::ExitCode;

use anyhow::Context;
use processor::operations::backfill::parse_since;
use processor::serve::connect_warehouse;
use processor::warehouse::Warehouse;
use processor::warehouse::rejects::{FoundReject, MAX_PAGE, RejectQuery};
use shared::catalog::Catalog;
use shared::config::PlatformConfig;
use shared::stream::from_epoch_millis;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this dataset's rejects.
    #[arg(long)]
    dataset: Option<String>,
    /// Only rejects of sources containing this (a file's key or name, a stream or shard).
    #[arg(long)]
    file: Option<String>,
    /// Only rejects whose reason contains this.
    #[arg(long)]
    reason: Option<String>,
    /// Only rejects from this date (2026-11-01) or time (RFC 3339) on.
    #[arg(long)]
    since: Option<String>,
    /// Rows per page (at most 1000).
    #[arg(long, default_value_t = 50)]
    max: u32,
    /// Rows to skip: the next page starts where the last ended.
    #[arg(long, default_value_t = 0)]
    offset: u32,
    /// One JSON object per row, for scripts.
    #[arg(long)]
    json: bool,
}

pub async fn run(config: &PlatformConfig, args: Args) -> anyhow::Result<ExitCode> {
    if let (Some(dataset), Some(path)) = (&args.dataset, &config.catalog_path) {
        let catalog = Catalog::from_file(path)?;
        anyhow::ensure!(
            catalog.get(dataset).is_some(),
            "unknown dataset {dataset:?}; the catalog has: {}",
            catalog
                .datasets()
                .map(|d| d.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    anyhow::ensure!(
        (1..=MAX_PAGE).contains(&args.max),
        "--max must be 1 to {MAX_PAGE}"
    );
    let since = args
        .since
        .as_deref()
        .map(parse_since)
        .transpose()
        .map_err(anyhow::Error::msg)
        .context("--since")?
        .map(from_epoch_millis);
    let query = RejectQuery {
        dataset: args.dataset,
        source: args.file,
        reason: args.reason,
        keys: Vec::new(),
        since,
        limit: args.max,
        offset: args.offset,
    };
    let found = match super::local_layout(config) {
        Some(layout) => {
            processor::local::operations::warehouse(&layout)?
                .find_rejects(&query)
                .await?
        }
        None => {
            let warehouse = connect_warehouse(config, config.warehouse()?).await?;
            warehouse.find_rejects(&query).await?
        }
    };
    print_page(&found, &query, args.json)?;
    Ok(ExitCode::SUCCESS)
}

fn print_page(found: &[FoundReject], query: &RejectQuery, json: bool) -> anyhow::Result<()> {
    if json {
        for reject in found {
            println!("{}", serde_json::to_string(reject)?);
        }
        return Ok(());
    }
    for reject in found {
        let row = reject
            .row_number
            .map(|n| format!(" row {n}"))
            .unwrap_or_default();
        println!(
            "{}  {}  {}{row}: {}\n  raw: {}",
            reject.rejected_at,
            reject.dataset,
            reject.source,
            reject.reason,
            reject.raw.as_deref().unwrap_or("(not kept)")
        );
    }
    let more = if found.len() as u32 >= query.limit {
        format!(
            "; --offset {} shows the next page",
            query.offset.saturating_add(query.limit)
        )
    } else {
        String::new()
    };
    println!("{} reject(s) shown, newest first{more}", found.len());
    Ok(())
}
