//! `processor prune`: deletes the platform tables' rows older than `[retention]` keeps.

use std::process::ExitCode;
use std::time::SystemTime;

use processor::serve::connect_warehouse;
use processor::warehouse::Warehouse;
use processor::warehouse::retention::{PruneReport, PruneRequest};
use shared::config::{PlatformConfig, RetentionSettings};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only count the rows that would be deleted.
    #[arg(long)]
    dry_run: bool,
}

pub async fn run(config: &PlatformConfig, args: Args) -> anyhow::Result<ExitCode> {
    let request = PruneRequest::new(&config.retention, SystemTime::now(), args.dry_run);
    let report = match super::local_layout(config) {
        Some(layout) => {
            processor::local::operations::warehouse(&layout)?
                .prune(&request)
                .await?
        }
        None => {
            let settings = config.warehouse()?;
            let warehouse = connect_warehouse(config, settings).await?;
            warehouse.prune(&request).await?
        }
    };
    println!("{}", describe(&config.retention, &report, args.dry_run));
    Ok(ExitCode::SUCCESS)
}

fn describe(retention: &RetentionSettings, report: &PruneReport, dry_run: bool) -> String {
    let verb = if dry_run { "would delete" } else { "deleted" };
    let line = |table: &str, kept: Option<std::time::Duration>, rows: u64| match kept {
        Some(kept) => format!(
            "{table}: {verb} {rows} row(s) older than {} days",
            kept.as_secs() / 86_400
        ),
        None => format!("{table}: kept for ever (retention.{table}_days = 0 or unset)"),
    };
    [
        line("rejects", retention.rejects, report.rejects),
        line("file_loads", retention.file_loads, report.file_loads),
        line("ledger", retention.ledger, report.ledger),
        match retention.ledger {
            Some(_) => format!(
                "stream_loads: {verb} {} row(s), as the ledger",
                report.stream_loads
            ),
            None => "stream_loads: kept for ever, as the ledger".to_owned(),
        },
    ]
    .join("\n")
}
