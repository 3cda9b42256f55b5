//! `processor status`: per dataset, what loaded in a window, what is dead-lettered and why,
//! and the work waiting; `--fail-on` turns conditions into a non-zero exit for cron jobs.

use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Context;
use processor::operations::dlq::MAX_LOOK;
use processor::operations::status::{
    FailOn, StatusReport, StatusSources, failures, parse_window, status,
};
use processor::serve::connect_warehouse;
use shared::config::PlatformConfig;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The window: a length back from now (90m, 24h, 7d), a date (2026-11-01) or an RFC
    /// 3339 time.
    #[arg(long, default_value = "24h")]
    since: String,
    /// Exit 1 when a condition holds: dlq (dead letters waiting), rejects (rows rejected
    /// in the window), incomplete (a file with parts still to load), idle=DURATION (a
    /// dataset loaded nothing for that long), lag=DURATION (a stream's newest loaded
    /// record arrived longer ago), queue-age=DURATION (local queue only).
    /// Repeatable.
    #[arg(long = "fail-on", value_name = "CONDITION")]
    fail_on: Vec<FailOn>,
    /// Dead letters read for their dataset and reason (0: only count them).
    #[arg(long, default_value_t = 100)]
    dead_letters: usize,
    /// One JSON document, for scripts.
    #[arg(long)]
    json: bool,
}

pub async fn run(config: &PlatformConfig, args: Args) -> anyhow::Result<ExitCode> {
    let since = parse_window(&args.since, SystemTime::now())
        .map_err(anyhow::Error::msg)
        .context("--since")?;
    let window = SystemTime::now().duration_since(since).unwrap_or_default();
    for condition in &args.fail_on {
        if let FailOn::Idle(idle) = condition {
            // The last load is looked for in the window only.
            anyhow::ensure!(
                *idle <= window,
                "--fail-on idle={}s needs a window at least as long: --since {}s or more",
                idle.as_secs(),
                idle.as_secs()
            );
        }
    }
    anyhow::ensure!(
        args.dead_letters <= MAX_LOOK,
        "--dead-letters must be 0 to {MAX_LOOK}"
    );
    let catalog = super::configured_catalog(config)?;
    let report = match super::local_layout(config) {
        Some(layout) => {
            processor::local::operations::status(&layout, &catalog, since, args.dead_letters)
                .await?
        }
        None => {
            let warehouse = connect_warehouse(config, config.warehouse()?).await?;
            let clients = shared::aws::AwsClients::new(&config.aws).await;
            let (work_queue, dead_letter) = processor::serve::queues(&clients, config.queues()?);
            let sources = StatusSources {
                catalog: &catalog,
                warehouse: warehouse.as_ref(),
                work_queue: work_queue.as_ref(),
                dead_letter: dead_letter.as_deref(),
            };
            status(&sources, since, args.dead_letters).await?
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    let failed = failures(&report, &args.fail_on);
    for failure in &failed {
        eprintln!("fail-on: {failure}");
    }
    Ok(super::exit_code(failed.is_empty()))
}

/// The report as a plain table and a few lines about the queues.
pub fn render(report: &StatusReport) -> String {
    let header = [
        "dataset",
        "routes",
        "files",
        "file items",
        "stream items",
        "rows loaded",
        "rejected",
        "incomplete",
        "dead letters",
        "lag",
        "last load",
    ];
    let rows: Vec<Vec<String>> = report
        .datasets
        .iter()
        .map(|d| {
            let a = &d.activity;
            vec![
                a.dataset.clone(),
                d.routes.to_owned(),
                a.files_completed.to_string(),
                a.file_items.to_string(),
                a.stream_items.to_string(),
                a.rows_loaded.to_string(),
                a.rows_rejected.to_string(),
                a.files_incomplete.to_string(),
                d.dead_letters.to_string(),
                d.lag_seconds
                    .map(|s| format!("{s} s"))
                    .unwrap_or_else(|| "—".to_owned()),
                d.last_loaded_at.clone().unwrap_or_else(|| "—".to_owned()),
            ]
        })
        .collect();
    let window = match report.window_seconds {
        s if s >= 3600 => format!("{} h", s / 3600),
        s => format!("{} min", s / 60),
    };
    let mut out = format!(
        "since {} ({window}), at {}\n\n",
        report.since, report.generated_at
    );
    out.push_str(&table(&header, &rows));
    let queue = &report.work_queue;
    out.push_str(&format!(
        "\nwork queue: {} waiting, {} in flight, oldest {}\n",
        queue.waiting,
        queue.in_flight,
        queue
            .oldest_age_seconds
            .map(|s| format!("{s} s old"))
            .unwrap_or_else(|| {
                "unknown here (SQS tells CloudWatch: ApproximateAgeOfOldestMessage)".to_owned()
            })
    ));
    let dead = &report.dead_letters;
    if !dead.configured {
        out.push_str("dead-letter queue: none configured ([queue] dead_letter_url)\n");
    } else {
        out.push_str(&format!("dead-letter queue: {} message(s)", dead.depth));
    }
    if dead.depth > 0 {
        out.push_str(&format!(
            "; {} read for their dataset and reason (the dead letters column counts those) — `processor dlq` shows them, `processor redrive` moves them back once fixed\n",
            dead.looked_at
        ));
    } else if dead.configured {
        out.push('\n');
    }
    for d in report.datasets.iter().filter(|d| !d.top_reasons.is_empty()) {
        for reason in &d.top_reasons {
            out.push_str(&format!(
                "  {}: {}× {}\n",
                d.activity.dataset, reason.count, reason.reason
            ));
        }
    }
    if dead.without_dataset > 0 {
        out.push_str(&format!(
            "  {} letter(s) name no dataset of the catalog\n",
            dead.without_dataset
        ));
    }
    out
}

/// Columns padded to their widest cell, numbers right-aligned.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, cell)| {
                if i > 1 && cell.chars().all(|c| c.is_ascii_digit()) {
                    format!("{cell:>width$}", width = widths[i])
                } else {
                    format!("{cell:<width$}", width = widths[i])
                }
            })
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}
