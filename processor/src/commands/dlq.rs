//! `processor dlq`: the dead letters, looked at without taking them.

use std::process::ExitCode;

use processor::operations::dlq::{DeadLetter, MAX_LOOK, peek_dead_letters};
use shared::config::PlatformConfig;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Show at most this many letters (1 to 1000), ordered by when they were sent.
    #[arg(long, default_value_t = 20)]
    max: usize,
    /// One JSON object per letter, for scripts.
    #[arg(long)]
    json: bool,
}

pub async fn run(config: &PlatformConfig, args: Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        (1..=MAX_LOOK).contains(&args.max),
        "--max must be 1 to {MAX_LOOK}"
    );
    let max = args.max;
    let letters = match super::local_layout(config) {
        Some(layout) => processor::local::operations::peek_dead_letters(&layout, max).await?,
        None => {
            let (_, dead_letter) = super::sqs_queue_pair(config).await?;
            peek_dead_letters(&dead_letter, max).await?
        }
    };
    if args.json {
        for letter in &letters {
            println!("{}", serde_json::to_string(letter)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    for letter in &letters {
        println!("{}", describe(letter));
    }
    println!(
        "{} dead letter(s) shown{}; `processor redrive` moves them back once their cause is fixed",
        letters.len(),
        if letters.len() >= max {
            " (the queue may hold more, in no set order: --max shows more)"
        } else {
            ""
        }
    );
    Ok(ExitCode::SUCCESS)
}

fn describe(letter: &DeadLetter) -> String {
    format!(
        "{}  {}  {}\n  received {}×, redriven {}×: {}",
        letter.sent_at.as_deref().unwrap_or("(time unknown)"),
        letter.dataset.as_deref().unwrap_or("(no dataset)"),
        letter.source,
        letter.receives,
        letter.redrives,
        letter.reason
    )
}
