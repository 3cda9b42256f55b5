//! Reads every shard of a stream and hands the records to the handler, the way Lambda's
//! event source mapping does: one shard's records per batch, in order, gathered for up to
//! a batching window unless the batch fills first, a checkpoint per
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
use shared::error::{BoxError, report};
use shared::stream::{RecordStream, RecordsPage, ShardInfo, StartPosition, StreamError};
use shared::telemetry::names;
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
    /// The most records per handler batch (Lambda's `BatchSize`).
    pub batch_size: u32,
    /// How long records are gathered before a batch that is not full is handed over
    /// (Lambda's `MaximumBatchingWindowInSeconds`; zero hands over every read at once).
    pub batching_window: Duration,
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
            batching_window: Duration::ZERO,
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
    #[error("checkpoint file {path}")]
    Checkpoint { path: PathBuf, source: BoxError },
}

#[derive(Debug, Default)]
struct ShardState {
    iterator: Option<String>,
    next_call: Option<Instant>,
    failures: u32,
    caught_up: bool,
    /// Records read but not yet handed to the handler (the batching window).
    pending: Vec<IncomingRecord>,
    /// When the first pending record was read.
    window_opened: Option<Instant>,
    /// Nothing more to read from this shard once `pending` is handled: closed and read
    /// to its end, or at the stop time.
    read_to_end: bool,
}

impl Checkpoints {
    /// Reads the checkpoint file, or starts empty when there is none yet.
    pub fn load(path: &PathBuf) -> Result<Self, ReadError> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text).map_err(|err| ReadError::Checkpoint {
                path: path.clone(),
                source: err.into(),
            }),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(err) => Err(ReadError::Checkpoint {
                path: path.clone(),
                source: err.into(),
            }),
        }
    }

    fn save(&self, path: &PathBuf) -> Result<(), ReadError> {
        let error = |source: BoxError| ReadError::Checkpoint {
            path: path.clone(),
            source,
        };
        let text = serde_json::to_string_pretty(self).map_err(|err| error(err.into()))?;
        let partial = path.with_extension("partial");
        std::fs::write(&partial, text).map_err(|err| error(err.into()))?;
        std::fs::rename(&partial, path).map_err(|err| error(err.into()))
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
    progress: &mut (dyn FnMut(&ReadProgress) + Send),
) -> Result<ReadProgress, ReadError> {
    let reader = Reader {
        stream,
        ingest,
        settings,
        label: if ingest.replay.is_some() {
            "replay"
        } else {
            "poller"
        },
    };
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
        let eligible = eligible_shards(&shards, checkpoints);
        done.shards = shards.len();
        done.shards_finished = shards
            .iter()
            .filter(|s| is_finished(checkpoints, &s.shard_id))
            .count();
        if reader.may_stop(&eligible, &states) {
            break;
        }
        let known: Vec<&str> = shards.iter().map(|s| s.shard_id.as_str()).collect();
        let mut worked = false;
        let mut slowest: i64 = 0;
        for shard in &eligible {
            let visit = reader
                .visit(shard, &known, &mut states, checkpoints, &mut done)
                .await?;
            worked |= visit.worked;
            slowest = slowest.max(visit.behind);
        }
        done.millis_behind_latest = slowest;
        metrics::gauge!(names::STREAM_BEHIND_LATEST_SECONDS, "reader" => reader.label)
            .set(slowest as f64 / 1000.0);
        progress(&done);
        if !worked {
            sleep_until_due(&states, settings, &mut stop).await;
        }
    }
    Ok(done)
}

/// What a read of the stream works with, apart from its state.
struct Reader<'a> {
    stream: &'a dyn RecordStream,
    ingest: &'a StreamIngest,
    settings: &'a ReadSettings,
    /// The `reader` label of the progress metrics.
    label: &'static str,
}

/// What one turn at a shard did: whether it called the stream or the handler, and how
/// far behind the tip the shard is.
#[derive(Debug, Default)]
struct Visit {
    worked: bool,
    behind: i64,
}

/// What one look at a shard did.
enum PageRead {
    /// No page this time (the call failed and backs off); `worked` when a call was made.
    Skipped { worked: bool },
    /// A page was read; the shard is `behind` milliseconds behind the tip.
    Read { behind: i64 },
}

/// What handing a shard's pending records to the handler did.
enum HandOver {
    Nothing,
    Handed,
    /// The handler asked to retry from a record: the shard backs off.
    Retry,
}

impl ShardState {
    /// Whether a `GetRecords` call is due, the shard has more, and the batch has room.
    fn wants_records(&self, settings: &ReadSettings) -> bool {
        let call_due = self.next_call.is_none_or(|at| Instant::now() >= at);
        let room = (settings.batch_size as usize).saturating_sub(self.pending.len());
        call_due && !self.read_to_end && room > 0
    }
}

fn is_finished(checkpoints: &Checkpoints, shard_id: &str) -> bool {
    checkpoints.shards.get(shard_id).is_some_and(|c| c.finished)
}

/// The shards to read now: not finished, and every parent still in the stream finished
/// (a parent that has aged out of the stream no longer holds records).
fn eligible_shards(shards: &[ShardInfo], checkpoints: &Checkpoints) -> Vec<ShardInfo> {
    let known: Vec<&str> = shards.iter().map(|s| s.shard_id.as_str()).collect();
    shards
        .iter()
        .filter(|s| !is_finished(checkpoints, &s.shard_id))
        .filter(|s| parents(s).all(|p| !known.contains(&p) || is_finished(checkpoints, p)))
        .cloned()
        .collect()
}

impl Reader<'_> {
    /// Whether the stop condition holds: for a bounded read, every eligible shard caught
    /// up with nothing pending.
    fn may_stop(&self, eligible: &[ShardInfo], states: &HashMap<String, ShardState>) -> bool {
        let all_caught_up = eligible.iter().all(|s| {
            states
                .get(&s.shard_id)
                .is_some_and(|st| st.caught_up && st.pending.is_empty())
        });
        match self.settings.stop {
            StopWhen::Stopped => false,
            StopWhen::CaughtUp | StopWhen::ArrivedAfter(_) => all_caught_up,
        }
    }

    /// One turn at a shard: reads a page when one is due, hands over what is pending when
    /// it is time, and saves the checkpoint.
    async fn visit(
        &self,
        shard: &ShardInfo,
        known: &[&str],
        states: &mut HashMap<String, ShardState>,
        checkpoints: &mut Checkpoints,
        done: &mut ReadProgress,
    ) -> Result<Visit, ReadError> {
        let settings = self.settings;
        let mut visit = Visit::default();
        let state = states.entry(shard.shard_id.clone()).or_default();
        let checkpoint = checkpoints
            .shards
            .entry(shard.shard_id.clone())
            .or_default();
        if state.wants_records(settings) {
            match self.read_page(shard, known, state, checkpoint).await {
                PageRead::Skipped { worked } => {
                    visit.worked = worked;
                    return Ok(visit);
                }
                PageRead::Read { behind } => {
                    visit.worked = true;
                    visit.behind = behind;
                }
            }
        }
        match self.hand_over(state, checkpoint, done).await {
            HandOver::Nothing => {}
            HandOver::Handed => visit.worked = true,
            HandOver::Retry => {
                // The next read starts after the checkpoint.
                save(checkpoints, settings)?;
                visit.worked = true;
                return Ok(visit);
            }
        }
        if state.read_to_end && state.pending.is_empty() {
            checkpoint.finished = true;
        }
        if checkpoint.finished {
            state.caught_up = true;
        }
        save(checkpoints, settings)?;
        Ok(visit)
    }

    /// Reads one page of `shard` into its pending records.
    async fn read_page(
        &self,
        shard: &ShardInfo,
        known: &[&str],
        state: &mut ShardState,
        checkpoint: &ShardCheckpoint,
    ) -> PageRead {
        let settings = self.settings;
        let iterator = match state.iterator.take() {
            Some(iterator) => iterator,
            None => {
                let start = start_position(shard, known, checkpoint, settings);
                match self.stream.shard_iterator(&shard.shard_id, &start).await {
                    Ok(iterator) => iterator,
                    Err(err) => {
                        back_off(state, settings, &report(&err));
                        return PageRead::Skipped { worked: false };
                    }
                }
            }
        };
        let room = (settings.batch_size as usize).saturating_sub(state.pending.len());
        let page = match self.stream.get_records(&iterator, room as u32).await {
            Ok(page) => page,
            Err(err) => {
                // Expired or bad iterators start again from the checkpoint.
                back_off(state, settings, &report(&err));
                return PageRead::Skipped { worked: true };
            }
        };
        state.next_call = Some(Instant::now() + settings.min_call_interval);
        let behind = page.millis_behind_latest.unwrap_or(0);
        self.take_records(shard, state, &page);
        advance(shard, state, page, settings);
        PageRead::Read { behind }
    }

    /// Adds a page's records to the shard's pending ones, up to the stop time.
    fn take_records(&self, shard: &ShardInfo, state: &mut ShardState, page: &RecordsPage) {
        let mut records: Vec<IncomingRecord> = page
            .records
            .iter()
            .map(|r| IncomingRecord {
                stream: self.stream.name().to_owned(),
                shard_id: shard.shard_id.clone(),
                sequence_number: r.sequence_number.clone(),
                arrival_ms: r.arrival_ms,
                data: r.data.to_vec(),
            })
            .collect();
        if let StopWhen::ArrivedAfter(until) = self.settings.stop
            && let Some(cut) = records
                .iter()
                .position(|r| r.arrival_ms.is_some_and(|at| at > until))
        {
            records.truncate(cut);
            state.read_to_end = true;
        }
        metrics::counter!(names::STREAM_RECORDS_READ_TOTAL, "reader" => self.label)
            .increment(records.len() as u64);
        if !records.is_empty() && state.pending.is_empty() {
            state.window_opened = Some(Instant::now());
        }
        state.pending.extend(records);
        if state.pending.is_empty() {
            state.failures = 0;
        }
    }

    /// Like Lambda's batching window: hands a full batch over at once, otherwise waits up
    /// to the window from the first record read; moves the checkpoint past what the
    /// handler took.
    async fn hand_over(
        &self,
        state: &mut ShardState,
        checkpoint: &mut ShardCheckpoint,
        done: &mut ReadProgress,
    ) -> HandOver {
        let settings = self.settings;
        let window_passed = state
            .window_opened
            .is_some_and(|at| at.elapsed() >= settings.batching_window);
        let due = state.pending.len() >= settings.batch_size as usize
            || window_passed
            || state.read_to_end;
        if state.pending.is_empty() || !due {
            return HandOver::Nothing;
        }
        let records = std::mem::take(&mut state.pending);
        state.window_opened = None;
        let outcome = self.ingest.ingest(&records).await;
        done.batches += 1;
        done.quarantined += outcome.quarantined as u64;
        done.work_items_sent += outcome.work_items_sent as u64;
        let Some(retry_from) = outcome.retry_from else {
            done.records += records.len() as u64;
            checkpoint.sequence_number = records.last().map(|r| r.sequence_number.clone());
            state.failures = 0;
            return HandOver::Handed;
        };
        let finished_before = records
            .iter()
            .take_while(|r| r.sequence_number != retry_from)
            .count();
        done.records += finished_before as u64;
        if let Some(last) = finished_before.checked_sub(1).map(|i| &records[i]) {
            checkpoint.sequence_number = Some(last.sequence_number.clone());
        }
        done.retries += 1;
        let why = outcome
            .failure
            .as_deref()
            .unwrap_or("the handler asked for a retry");
        back_off(state, settings, why);
        HandOver::Retry
    }
}

/// Where a shard without an iterator starts: after its checkpoint; at its start when it is
/// the child of a shard read here (it continues where its parents ended); else where the
/// read starts.
fn start_position(
    shard: &ShardInfo,
    known: &[&str],
    checkpoint: &ShardCheckpoint,
    settings: &ReadSettings,
) -> StartPosition {
    match &checkpoint.sequence_number {
        Some(sequence) => StartPosition::AfterSequenceNumber(sequence.clone()),
        None if parents(shard).any(|p| known.contains(&p)) => StartPosition::TrimHorizon,
        None => settings.start.clone(),
    }
}

/// Moves the shard past a page: its next iterator, or read to its end when it is closed.
fn advance(shard: &ShardInfo, state: &mut ShardState, page: RecordsPage, settings: &ReadSettings) {
    let caught_up = page.records.is_empty() && page.millis_behind_latest.unwrap_or(0) == 0;
    match page.next_iterator {
        None => state.read_to_end = true, // a closed shard, read to its end
        // A closed shard gets no new records: caught up is read to its end.
        Some(_) if shard.is_closed() && caught_up => state.read_to_end = true,
        Some(next) => {
            state.caught_up = caught_up;
            if caught_up {
                state.next_call = Some(Instant::now() + settings.poll_interval);
            }
            state.iterator = Some(next);
        }
    }
}

/// Sleeps until the next call or the end of the next batching window is due (or `stop`).
async fn sleep_until_due(
    states: &HashMap<String, ShardState>,
    settings: &ReadSettings,
    stop: &mut watch::Receiver<bool>,
) {
    let now = Instant::now();
    let wake = states
        .values()
        .flat_map(|st| {
            let window_end = st.window_opened.map(|at| at + settings.batching_window);
            st.next_call.into_iter().chain(window_end)
        })
        .filter(|at| *at > now)
        .min()
        .unwrap_or(now + settings.min_call_interval)
        .min(now + settings.min_call_interval);
    tokio::select! {
        () = tokio::time::sleep_until(wake) => {}
        _ = stop.changed() => {}
    }
}

fn back_off(state: &mut ShardState, settings: &ReadSettings, why: &str) {
    state.failures = state.failures.saturating_add(1);
    let exponent = state.failures.saturating_sub(1).min(16);
    let delay = settings
        .backoff
        .saturating_mul(1 << exponent)
        .min(settings.max_backoff);
    // Reading starts again after the checkpoint: what was read past it goes.
    state.iterator = None;
    state.pending.clear();
    state.window_opened = None;
    state.read_to_end = false;
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

#[cfg(test)]
mod tests {
    //! The scheduling rules, with an in-memory stream of the poller's own interface
    //! (the emulator keeps writing to a split parent, so it cannot show them).

    use std::sync::{Arc, Mutex};

    use async_trait::async_trait;
    use bytes::Bytes;
    use shared::catalog::Catalog;
    use shared::config::S3Location;
    use shared::envelope::{MessageSizeLimit, WorkItem};
    use shared::queue::{
        DeleteReport, OutgoingMessage, QueueDepth, QueueError, ReceivedMessage, SendReport,
        WorkQueue,
    };
    use shared::stream::{OutgoingRecord, PutReport, RecordsPage, ShardRecord};

    use super::*;
    use crate::handler::{ObjectWriter, PutError};

    /// Shards with fixed records, at most `.1` per `GetRecords`; closed shards end their
    /// iterator after the last one.
    #[derive(Debug)]
    struct Shards(Vec<(ShardInfo, Vec<&'static str>)>, usize);

    #[async_trait]
    impl RecordStream for Shards {
        fn name(&self) -> &str {
            "order-events"
        }
        async fn put_records(&self, _: &[OutgoingRecord]) -> PutReport {
            PutReport::default()
        }
        async fn list_shards(&self) -> Result<Vec<ShardInfo>, StreamError> {
            Ok(self.0.iter().map(|(info, _)| info.clone()).collect())
        }
        async fn shard_iterator(
            &self,
            shard_id: &str,
            start: &StartPosition,
        ) -> Result<String, StreamError> {
            let at = match start {
                StartPosition::AfterSequenceNumber(seq) => seq.parse::<usize>().unwrap_or(0),
                _ => 0,
            };
            Ok(format!("{shard_id}|{at}"))
        }
        async fn get_records(
            &self,
            iterator: &str,
            limit: u32,
        ) -> Result<RecordsPage, StreamError> {
            let (shard_id, at) = iterator.split_once('|').unwrap_or_default();
            let at: usize = at.parse().unwrap_or(0);
            let (info, records) = self
                .0
                .iter()
                .find(|(info, _)| info.shard_id == shard_id)
                .expect("a known shard");
            let end = (at + (limit as usize).min(self.1)).min(records.len());
            let page: Vec<ShardRecord> = records[at..end]
                .iter()
                .enumerate()
                .map(|(i, data)| ShardRecord {
                    sequence_number: (at + i + 1).to_string(),
                    partition_key: "k".into(),
                    data: Bytes::from_static(data.as_bytes()),
                    arrival_ms: None,
                })
                .collect();
            let done = end == records.len();
            Ok(RecordsPage {
                records: page,
                next_iterator: (!(done && info.is_closed())).then(|| format!("{shard_id}|{end}")),
                millis_behind_latest: Some(0),
            })
        }
    }

    /// Records, in the order they were sent, as (shard, event id).
    #[derive(Debug, Default)]
    struct Recording(Mutex<Vec<(String, String)>>);

    #[async_trait]
    impl WorkQueue for Recording {
        async fn send(&self, messages: &[OutgoingMessage]) -> SendReport {
            for message in messages {
                if let Ok(WorkItem::Records(item)) = WorkItem::from_json(&message.body)
                    && let shared::envelope::RecordsPayload::Inline(records) = item.payload
                {
                    for record in records {
                        let id = record.data["event_id"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned();
                        self.0
                            .lock()
                            .expect("lock")
                            .push((item.shard_id.clone(), id));
                    }
                }
            }
            SendReport {
                succeeded: (0..messages.len()).map(|i| (i, i.to_string())).collect(),
                failed: Vec::new(),
            }
        }
        async fn receive(
            &self,
            _: u8,
            _: Duration,
            _: Duration,
        ) -> Result<Vec<ReceivedMessage>, QueueError> {
            Ok(Vec::new())
        }
        async fn delete(&self, _: &[String]) -> DeleteReport {
            DeleteReport::default()
        }
        async fn depth(&self) -> Result<QueueDepth, QueueError> {
            Ok(QueueDepth::default())
        }
        async fn extend_visibility(&self, _: &str, _: Duration) -> Result<(), QueueError> {
            Ok(())
        }
    }

    #[derive(Debug)]
    struct NoWrites;

    #[async_trait]
    impl ObjectWriter for NoWrites {
        async fn put(&self, bucket: &str, key: &str, _: Vec<u8>) -> Result<(), PutError> {
            Err(PutError {
                bucket: bucket.into(),
                key: key.into(),
                source: "not in this test".into(),
                retryable: false,
            })
        }
    }

    fn ingest(queue: &Arc<Recording>) -> StreamIngest {
        StreamIngest {
            catalog: Arc::new(
                Catalog::from_toml(include_str!("../../catalog/ecommerce.toml"), "c")
                    .expect("catalog"),
            ),
            queue: Arc::clone(queue) as Arc<dyn WorkQueue>,
            objects: Arc::new(NoWrites),
            quarantine: S3Location {
                bucket: "q".into(),
                prefix: String::new(),
            },
            claim_checks: S3Location {
                bucket: "q".into(),
                prefix: String::new(),
            },
            size_limit: MessageSizeLimit::default(),
            replay: None,
        }
    }

    fn event(id: &str) -> &'static str {
        Box::leak(
            format!(r#"{{"event_type":"order_status_changed","event_id":"{id}","order_id":1,"status":"s","occurred_at":"2026-11-24T10:00:00Z"}}"#)
                .into_boxed_str(),
        )
    }

    fn shard(id: &str, parent: Option<&str>, closed: bool) -> ShardInfo {
        ShardInfo {
            shard_id: id.into(),
            parent_shard_id: parent.map(str::to_owned),
            adjacent_parent_shard_id: None,
            starting_sequence_number: "0".into(),
            ending_sequence_number: closed.then(|| "99".into()),
        }
    }

    #[tokio::test]
    async fn children_are_read_only_after_their_parent_is_read_to_its_end() {
        // Listed children first: the order of the listing must not matter.
        let stream = Shards(
            vec![
                (
                    shard("child-a", Some("parent"), false),
                    vec![event("a1"), event("a2")],
                ),
                (shard("child-b", Some("parent"), false), vec![event("b1")]),
                (
                    shard("parent", None, true),
                    (1..=5).map(|n| event(&format!("p{n}"))).collect(),
                ),
            ],
            usize::MAX,
        );
        let queue = Arc::new(Recording::default());
        let ingest = ingest(&queue);
        let settings = ReadSettings {
            batch_size: 2,
            min_call_interval: Duration::ZERO,
            poll_interval: Duration::from_millis(1),
            stop: StopWhen::CaughtUp,
            ..ReadSettings::default()
        };
        let (_stop, stopped) = watch::channel(false);
        let mut checkpoints = Checkpoints::default();
        let read = read_stream(
            &stream,
            &ingest,
            &settings,
            &mut checkpoints,
            stopped,
            &mut |_| {},
        )
        .await
        .expect("read");
        assert_eq!(read.records, 8);
        let sent = queue.0.lock().expect("lock").clone();
        let ids: Vec<&str> = sent.iter().map(|(_, id)| id.as_str()).collect();
        assert_eq!(
            &ids[..5],
            ["p1", "p2", "p3", "p4", "p5"],
            "the parent first, in order"
        );
        let mut children: Vec<&str> = ids[5..].to_vec();
        children.sort_unstable();
        assert_eq!(children, ["a1", "a2", "b1"]);
        assert!(checkpoints.shards["parent"].finished);
    }

    /// Records read two at a time are handed over per batching window, not per read.
    #[tokio::test]
    async fn the_batching_window_gathers_reads_into_one_batch() {
        let records: Vec<&'static str> = (1..=6).map(|n| event(&format!("e{n}"))).collect();
        let batches = |batch_size: u32, batching_window: Duration| {
            let records = records.clone();
            async move {
                let stream = Shards(vec![(shard("s", None, false), records)], 2);
                let queue = Arc::new(Recording::default());
                let settings = ReadSettings {
                    batch_size,
                    batching_window,
                    min_call_interval: Duration::ZERO,
                    poll_interval: Duration::from_millis(1),
                    stop: StopWhen::CaughtUp,
                    ..ReadSettings::default()
                };
                let (_stop, stopped) = watch::channel(false);
                let read = read_stream(
                    &stream,
                    &ingest(&queue),
                    &settings,
                    &mut Checkpoints::default(),
                    stopped,
                    &mut |_| {},
                )
                .await
                .expect("read");
                assert_eq!(read.records, 6);
                let sent = queue.0.lock().expect("lock").clone();
                let ids: Vec<&str> = sent.iter().map(|(_, id)| id.as_str()).collect();
                assert_eq!(ids, ["e1", "e2", "e3", "e4", "e5", "e6"], "in order, once");
                read.batches
            }
        };
        assert_eq!(batches(100, Duration::ZERO).await, 3, "one batch per read");
        let window = Duration::from_millis(300);
        assert_eq!(batches(100, window).await, 1, "one batch per window");
        assert_eq!(batches(4, window).await, 2, "a full batch goes at once");
    }
}
