//! Reads every shard of a stream and hands the records to the handler, the way Lambda's
//! event source mapping does: one shard's records per batch, in order, a checkpoint per
//! shard that only moves past what the handler finished (it honours the record to retry
//! from), and shard lineage respected: after a split or merge, a child shard is read only
//! once its parents are read to their end, so per-key order holds across a reshard.
//!
//! The same loop serves the tests and the local demo (poll until stopped, or until every
//! shard is caught up) and `processor replay` (start at a time, stop at a time or at the
//! tip, checkpoints in a file so an interrupted replay resumes). Reads stay within
//! Kinesis's limit of five `GetRecords` calls per second per shard, and back off on
//! errors (throttling included).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shared::stream::{RecordStream, ShardInfo, StartPosition, StreamError};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::handler::{IncomingRecord, StreamIngest};

/// When reading stops (besides being told to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopWhen {
    /// Only when told to.
    Stopped,
    /// Once every shard has been read up to the tip (or to its end, when closed).
    CaughtUp,
    /// Once every shard is read up to its first record that arrived after this time
    /// (milliseconds since the epoch), or to the tip.
    ArrivedAfter(i64),
}

/// How shards are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadSettings {
    /// Where a shard without a checkpoint starts (children of shards this reader read
    /// start at their beginning).
    pub start: StartPosition,
    /// Records per `GetRecords` call and per handler batch (Lambda's `BatchSize`).
    pub batch_size: u32,
    /// How long an idle shard waits before it is polled again (Lambda polls once a
    /// second).
    pub poll_interval: Duration,
    /// The shortest time between two `GetRecords` calls on one shard: 200 ms keeps to
    /// Kinesis's five calls per second per shard.
    pub min_call_interval: Duration,
    /// The first delay after a failure (a retry from the handler, a failed call);
    /// doubles up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    pub stop: StopWhen,
    /// A file that keeps the checkpoints, so a stopped reader resumes where it left off.
    pub checkpoint_file: Option<PathBuf>,
}

impl Default for ReadSettings {
    fn default() -> Self {
        Self {
            start: StartPosition::TrimHorizon,
            batch_size: 100,
            poll_interval: Duration::from_secs(1),
            min_call_interval: Duration::from_millis(200),
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            stop: StopWhen::Stopped,
            checkpoint_file: None,
        }
    }
}

/// Where each shard's reading stands: persisted between runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoints {
    pub shards: BTreeMap<String, ShardCheckpoint>,
    /// The replay these checkpoints belong to, so a resumed replay keeps its id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_id: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardCheckpoint {
    /// The last record the handler finished.
    pub sequence_number: Option<String>,
    /// Read to its end (closed), or to the stop time.
    pub finished: bool,
}

/// What the reader has done so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadProgress {
    pub records: u64,
    pub batches: u64,
    pub work_items_sent: u64,
    pub quarantined: u64,
    /// Batches the handler could not finish (retried from the record it named).
    pub retries: u64,
    pub shards: usize,
    pub shards_finished: usize,
    /// How far the slowest shard is behind the tip, from the last `GetRecords`.
    pub millis_behind_latest: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error("checkpoint file {path}: {reason}")]
    Checkpoint { path: PathBuf, reason: String },
}

#[derive(Debug, Default)]
struct ShardState {
    iterator: Option<String>,
    next_call: Option<Instant>,
    failures: u32,
    caught_up: bool,
}

impl Checkpoints {
    /// Reads the checkpoint file, or starts empty when there is none yet.
    pub fn load(path: &PathBuf) -> Result<Self, ReadError> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text).map_err(|err| ReadError::Checkpoint {
                path: path.clone(),
                reason: err.to_string(),
            }),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(err) => Err(ReadError::Checkpoint {
                path: path.clone(),
                reason: err.to_string(),
            }),
        }
    }

    fn save(&self, path: &PathBuf) -> Result<(), ReadError> {
        let error = |reason: String| ReadError::Checkpoint {
            path: path.clone(),
            reason,
        };
        let text = serde_json::to_string_pretty(self).map_err(|err| error(err.to_string()))?;
        let partial = path.with_extension("partial");
        std::fs::write(&partial, text).map_err(|err| error(err.to_string()))?;
        std::fs::rename(&partial, path).map_err(|err| error(err.to_string()))
    }
}

fn parents(shard: &ShardInfo) -> impl Iterator<Item = &str> {
    shard
        .parent_shard_id
        .as_deref()
        .into_iter()
        .chain(shard.adjacent_parent_shard_id.as_deref())
}

/// Reads the stream until the stop condition (or `stop` turning true), handing each
/// shard's records to `ingest` in order.
pub async fn read_stream(
    stream: &dyn RecordStream,
    ingest: &StreamIngest,
    settings: &ReadSettings,
    checkpoints: &mut Checkpoints,
    mut stop: watch::Receiver<bool>,
    progress: &mut dyn FnMut(&ReadProgress),
) -> Result<ReadProgress, ReadError> {
    let mut done = ReadProgress::default();
    let mut states: HashMap<String, ShardState> = HashMap::new();
    let mut shards: Vec<ShardInfo> = Vec::new();
    let mut listed_at: Option<Instant> = None;
    loop {
        if *stop.borrow() {
            break;
        }
        // New shards appear after a reshard: list again now and then.
        if listed_at.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
            shards = stream.list_shards().await?;
            listed_at = Some(Instant::now());
        }
        let known: Vec<&str> = shards.iter().map(|s| s.shard_id.as_str()).collect();
        let finished = |id: &str| checkpoints.shards.get(id).is_some_and(|c| c.finished);
        let eligible: Vec<ShardInfo> = shards
            .iter()
            .filter(|s| !finished(&s.shard_id))
            // A parent that has aged out of the stream no longer holds records.
            .filter(|s| parents(s).all(|p| !known.contains(&p) || finished(p)))
            .cloned()
            .collect();
        done.shards = shards.len();
        done.shards_finished = shards.iter().filter(|s| finished(&s.shard_id)).count();
        let all_caught_up = eligible
            .iter()
            .all(|s| states.get(&s.shard_id).is_some_and(|st| st.caught_up));
        let stop_now = match settings.stop {
            StopWhen::Stopped => false,
            StopWhen::CaughtUp | StopWhen::ArrivedAfter(_) => all_caught_up,
        };
        if stop_now {
            break;
        }
        let mut worked = false;
        let mut slowest: i64 = 0;
        for shard in &eligible {
            let state = states.entry(shard.shard_id.clone()).or_default();
            if state.next_call.is_some_and(|at| Instant::now() < at) {
                continue;
            }
            let checkpoint = checkpoints
                .shards
                .entry(shard.shard_id.clone())
                .or_default();
            let iterator = match state.iterator.take() {
                Some(iterator) => iterator,
                None => {
                    let start = match &checkpoint.sequence_number {
                        Some(sequence) => StartPosition::AfterSequenceNumber(sequence.clone()),
                        // Children of shards read here continue where their parents ended.
                        None if parents(shard).any(|p| known.contains(&p)) => {
                            StartPosition::TrimHorizon
                        }
                        None => settings.start.clone(),
                    };
                    match stream.shard_iterator(&shard.shard_id, &start).await {
                        Ok(iterator) => iterator,
                        Err(err) => {
                            back_off(state, settings, &err.to_string());
                            continue;
                        }
                    }
                }
            };
            worked = true;
            let page = match stream.get_records(&iterator, settings.batch_size).await {
                Ok(page) => page,
                Err(err) => {
                    // Expired or bad iterators start again from the checkpoint.
                    back_off(state, settings, &err.to_string());
                    continue;
                }
            };
            state.next_call = Some(Instant::now() + settings.min_call_interval);
            slowest = slowest.max(page.millis_behind_latest.unwrap_or(0));
            let mut records: Vec<IncomingRecord> = page
                .records
                .iter()
                .map(|r| IncomingRecord {
                    stream: stream.name().to_owned(),
                    shard_id: shard.shard_id.clone(),
                    sequence_number: r.sequence_number.clone(),
                    arrival_ms: r.arrival_ms,
                    data: r.data.to_vec(),
                })
                .collect();
            let mut reached_stop_time = false;
            if let StopWhen::ArrivedAfter(until) = settings.stop
                && let Some(cut) = records
                    .iter()
                    .position(|r| r.arrival_ms.is_some_and(|at| at > until))
            {
                records.truncate(cut);
                reached_stop_time = true;
            }
            if !records.is_empty() {
                let outcome = ingest.ingest(&records).await;
                done.batches += 1;
                done.quarantined += outcome.quarantined as u64;
                done.work_items_sent += outcome.work_items_sent as u64;
                if let Some(retry_from) = outcome.retry_from {
                    let finished_before = records
                        .iter()
                        .take_while(|r| r.sequence_number != retry_from)
                        .count();
                    done.records += finished_before as u64;
                    if let Some(last) = finished_before.checked_sub(1).map(|i| &records[i]) {
                        checkpoint.sequence_number = Some(last.sequence_number.clone());
                    }
                    done.retries += 1;
                    // The iterator is dropped: the next read starts after the checkpoint.
                    back_off(
                        state,
                        settings,
                        outcome
                            .failure
                            .as_deref()
                            .unwrap_or("the handler asked for a retry"),
                    );
                    save(checkpoints, settings)?;
                    continue;
                }
                done.records += records.len() as u64;
                checkpoint.sequence_number = records.last().map(|r| r.sequence_number.clone());
            }
            state.failures = 0;
            match page.next_iterator {
                None => checkpoint.finished = true, // a closed shard, read to its end
                Some(_) if reached_stop_time => checkpoint.finished = true,
                Some(next) => {
                    state.caught_up =
                        page.records.is_empty() && page.millis_behind_latest.unwrap_or(0) == 0;
                    if state.caught_up {
                        state.next_call = Some(Instant::now() + settings.poll_interval);
                    }
                    state.iterator = Some(next);
                }
            }
            if checkpoint.finished {
                state.caught_up = true;
            }
            save(checkpoints, settings)?;
        }
        done.millis_behind_latest = slowest;
        progress(&done);
        if !worked {
            let pause = tokio::time::sleep(settings.min_call_interval);
            tokio::select! {
                () = pause => {}
                _ = stop.changed() => {}
            }
        }
    }
    Ok(done)
}

fn back_off(state: &mut ShardState, settings: &ReadSettings, why: &str) {
    state.failures = state.failures.saturating_add(1);
    let exponent = state.failures.saturating_sub(1).min(16);
    let delay = settings
        .backoff
        .saturating_mul(1 << exponent)
        .min(settings.max_backoff);
    state.iterator = None;
    state.next_call = Some(Instant::now() + delay);
    tracing::warn!(
        reason = why,
        retry_in_ms = delay.as_millis() as u64,
        "shard read backs off"
    );
}

fn save(checkpoints: &Checkpoints, settings: &ReadSettings) -> Result<(), ReadError> {
    match &settings.checkpoint_file {
        Some(path) => checkpoints.save(path),
        None => Ok(()),
    }
}
