//! `processor redrive`: moves messages from the dead-letter queue back to the work queue
//! once their cause is fixed. Reloading is safe: the ledger skips what already loaded.
//!
//! Uses SQS's own `StartMessageMoveTask` when the service supports it (AWS does; the local
//! emulator does not), otherwise moves messages itself: receive from the DLQ, send to the
//! work queue, and delete from the DLQ only what was sent — with a rate limit.

use std::time::Duration;

use shared::queue::{
    DATASET_ATTRIBUTE, OutgoingMessage, QueueError, REASON_ATTRIBUTE, ReceivedMessage, SqsQueue,
    WorkQueue,
};
use shared::telemetry::names;

/// How many times a message was redriven, carried on the message itself.
pub const REDRIVE_COUNT_ATTRIBUTE: &str = "ingest_redrive_count";

/// What to redrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedriveOptions {
    /// Only report how many messages would move.
    pub dry_run: bool,
    /// Move at most this many messages.
    pub max_messages: Option<u64>,
    /// Move at most this many messages per second.
    pub max_per_second: u32,
    /// Leave in the dead-letter queue any message already redriven this many times, so a
    /// poison message cannot cycle between the queues forever.
    pub max_redrives: Option<u32>,
}

impl Default for RedriveOptions {
    fn default() -> Self {
        Self {
            dry_run: false,
            max_messages: None,
            max_per_second: 100,
            max_redrives: None,
        }
    }
}

/// How a redrive went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedriveOutcome {
    /// `--dry-run`: the DLQ holds about this many messages.
    WouldMove { messages: u64 },
    /// SQS moves the messages itself; follow the task in the console or with
    /// `ListMessageMoveTasks`.
    MoveTaskStarted { task_handle: String, messages: u64 },
    /// Moved by receive → send → delete; `held` were redriven `max_redrives` times already
    /// and stay in the dead-letter queue (hidden for a minute, then visible again).
    Moved { moved: u64, failed: u64, held: u64 },
}

/// Redrives `dead_letter` into `target`, reporting progress as (moved, expected).
pub async fn redrive(
    dead_letter: &SqsQueue,
    target: &SqsQueue,
    options: RedriveOptions,
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<RedriveOutcome, QueueError> {
    let expected = expected_moves(dead_letter, &options).await?;
    if options.dry_run {
        return Ok(RedriveOutcome::WouldMove { messages: expected });
    }
    // SQS's own move task cannot count redrives: with a limit, move them here.
    if options.max_messages.is_none() && options.max_redrives.is_none() {
        match start_move_task(dead_letter, target, options.max_per_second).await {
            Ok(task_handle) => {
                return Ok(RedriveOutcome::MoveTaskStarted {
                    task_handle,
                    messages: expected,
                });
            }
            Err(err) => {
                tracing::info!(error = %shared::error::Report(&err), "StartMessageMoveTask unavailable; moving messages one batch at a time");
            }
        }
    }
    move_messages(dead_letter, target, options, expected, progress).await
}

/// Redrives between queues without a move task of their own (the local platform's):
/// receive → send → delete.
pub async fn redrive_by_moving(
    dead_letter: &dyn WorkQueue,
    target: &dyn WorkQueue,
    options: RedriveOptions,
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<RedriveOutcome, QueueError> {
    let expected = expected_moves(dead_letter, &options).await?;
    if options.dry_run {
        return Ok(RedriveOutcome::WouldMove { messages: expected });
    }
    move_messages(dead_letter, target, options, expected, progress).await
}

/// The messages a redrive should move: those visible in the dead-letter queue, at most
/// `max_messages`.
async fn expected_moves(
    dead_letter: &dyn WorkQueue,
    options: &RedriveOptions,
) -> Result<u64, QueueError> {
    let depth = dead_letter.depth().await?;
    Ok(options
        .max_messages
        .map_or(depth.visible, |max| max.min(depth.visible)))
}

async fn start_move_task(
    dead_letter: &SqsQueue,
    target: &SqsQueue,
    max_per_second: u32,
) -> Result<String, QueueError> {
    let source_arn = dead_letter.arn().await?;
    let destination_arn = target.arn().await?;
    let output = dead_letter
        .client()
        .start_message_move_task()
        .source_arn(&source_arn)
        .destination_arn(destination_arn)
        .max_number_of_messages_per_second(i32::try_from(max_per_second).unwrap_or(i32::MAX))
        .send()
        .await
        .map_err(|err| QueueError {
            operation: "StartMessageMoveTask",
            queue_url: dead_letter.url().to_owned(),
            retryability: shared::error::classify_sdk_error(&err),
            source: err.into(),
        })?;
    Ok(output.task_handle().unwrap_or_default().to_owned())
}

/// The fallback: receive → send → delete, never deleting what was not sent.
pub(crate) async fn move_messages(
    dead_letter: &dyn WorkQueue,
    target: &dyn WorkQueue,
    options: RedriveOptions,
    expected: u64,
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<RedriveOutcome, QueueError> {
    let limit = options.max_messages.unwrap_or(u64::MAX);
    let per_second = u64::from(options.max_per_second.max(1));
    let mut moved = 0u64;
    let mut failed = 0u64;
    let mut held = 0u64;
    let mut empty_polls = 0;
    let started = tokio::time::Instant::now();
    while moved + failed < limit && empty_polls < 2 {
        let want = u8::try_from((limit - moved - failed).min(10)).unwrap_or(10);
        let messages = dead_letter
            .receive(want, Duration::from_secs(1), Duration::from_secs(60))
            .await?;
        if messages.is_empty() {
            empty_polls += 1;
            continue;
        }
        empty_polls = 0;
        // Held messages are neither sent nor deleted: they reappear in the DLQ.
        let (messages, held_now): (Vec<_>, Vec<_>) = messages.into_iter().partition(|m| {
            options
                .max_redrives
                .is_none_or(|max| redrive_count(m) < max)
        });
        held += held_now.len() as u64;
        for message in &held_now {
            tracing::warn!(message_id = %message.message_id, redrives = redrive_count(message), "left in the dead-letter queue: redriven too often");
        }
        if messages.is_empty() {
            continue;
        }
        let (moved_now, failed_now) = move_batch(dead_letter, target, &messages).await;
        moved += moved_now;
        failed += failed_now;
        progress(moved, expected);
        // Rate limit: no faster than `per_second` on average.
        let due = started + Duration::from_millis((moved + failed) * 1000 / per_second);
        tokio::time::sleep_until(due).await;
    }
    for (outcome, count) in [("moved", moved), ("failed", failed), ("held", held)] {
        metrics::counter!(names::REDRIVE_MESSAGES_TOTAL, "outcome" => outcome).increment(count);
    }
    Ok(RedriveOutcome::Moved {
        moved,
        failed,
        held,
    })
}

/// How often a message was redriven already (counted on the message).
fn redrive_count(message: &ReceivedMessage) -> u32 {
    message
        .attributes
        .get(REDRIVE_COUNT_ATTRIBUTE)
        .and_then(|count| count.parse().ok())
        .unwrap_or(0)
}

/// The message to send back: without the dead letter's failure reason and dataset (they
/// belong to the dead letter, not to the retried work item), its redrive count raised.
fn redriven(message: &ReceivedMessage) -> OutgoingMessage {
    let mut outgoing = OutgoingMessage::from(message.body.clone());
    outgoing.attributes = message
        .attributes
        .iter()
        .filter(|(name, _)| name.as_str() != REASON_ATTRIBUTE && name.as_str() != DATASET_ATTRIBUTE)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    outgoing.attributes.insert(
        REDRIVE_COUNT_ATTRIBUTE.to_owned(),
        (redrive_count(message) + 1).to_string(),
    );
    outgoing
}

/// Sends `messages` to `target` and deletes from the dead-letter queue what was sent;
/// returns (moved, failed).
async fn move_batch(
    dead_letter: &dyn WorkQueue,
    target: &dyn WorkQueue,
    messages: &[ReceivedMessage],
) -> (u64, u64) {
    let outgoing: Vec<OutgoingMessage> = messages.iter().map(redriven).collect();
    let sent = target.send(&outgoing).await;
    let handles: Vec<String> = sent
        .succeeded
        .iter()
        .map(|(index, _)| messages[*index].receipt_handle.clone())
        .collect();
    let deleted = dead_letter.delete(&handles).await;
    for failure in sent.failed.iter().filter(|f| !f.retryable) {
        tracing::warn!(code = %failure.code, message = %failure.message, "a message could not be moved");
    }
    // A sent message whose delete failed will be sent again by a later redrive; the
    // ledger makes that harmless.
    let failed = sent.failed.len() + deleted.failed.len();
    (deleted.succeeded.len() as u64, failed as u64)
}
