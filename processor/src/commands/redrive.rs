//! `processor redrive`: moves dead letters back to the work queue.

use std::process::ExitCode;

use processor::operations::redrive::{RedriveOptions, RedriveOutcome, redrive};
use shared::config::PlatformConfig;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only report how many messages would move.
    #[arg(long)]
    dry_run: bool,
    /// Move at most this many messages (moves them one batch at a time).
    #[arg(long)]
    max: Option<u64>,
    /// Messages per second.
    #[arg(long, default_value_t = 100)]
    rate: u32,
    /// Leave in the dead-letter queue any message already redriven this many times
    /// (counted on the message), so a poison message cannot cycle forever.
    #[arg(long)]
    max_redrives: Option<u32>,
}

pub async fn run(config: &PlatformConfig, args: Args) -> anyhow::Result<ExitCode> {
    let options = RedriveOptions {
        dry_run: args.dry_run,
        max_messages: args.max,
        max_per_second: args.rate,
        max_redrives: args.max_redrives,
    };
    let mut progress = |moved: u64, expected: u64| eprint!("\rmoved {moved} of ~{expected}");
    let outcome = match super::local_layout(config) {
        Some(layout) => {
            processor::local::operations::redrive(&layout, options, &mut progress).await?
        }
        None => redrive_sqs(config, options, &mut progress).await?,
    };
    eprintln!();
    println!("{}", describe(&outcome));
    Ok(ExitCode::SUCCESS)
}

async fn redrive_sqs(
    config: &PlatformConfig,
    options: RedriveOptions,
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> anyhow::Result<RedriveOutcome> {
    let (target, dead_letter) = super::sqs_queue_pair(config).await?;
    Ok(redrive(&dead_letter, &target, options, progress).await?)
}

fn describe(outcome: &RedriveOutcome) -> String {
    match outcome {
        RedriveOutcome::WouldMove { messages } => format!(
            "dry run: the dead-letter queue holds about {messages} message(s); nothing moved"
        ),
        RedriveOutcome::MoveTaskStarted {
            task_handle,
            messages,
        } => format!(
            "SQS is moving about {messages} message(s) (task {task_handle}); follow it with `aws sqs list-message-move-tasks`"
        ),
        RedriveOutcome::Moved {
            moved,
            failed,
            held,
        } => format!(
            "moved {moved} message(s); {failed} could not be moved and {held} were redriven too often: they stay in the dead-letter queue"
        ),
    }
}
