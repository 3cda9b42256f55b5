//! `processor replay --stream S --from T1 [--to T2]`: reads a time window of a stream's
//! retained records again and pushes them through the stream path's own decode, validate
//! and pack code onto the work queue.
//!
//! Every shard that holds data in the window is read (closed parents of a resharded
//! stream first, then their children) from an `AT_TIMESTAMP` iterator, within the read
//! limits, until the first record that arrived after `--to` (default: when the replay
//! started) or the tip. The work items carry the replay's id, so the ledger does not skip
//! what was loaded before: rows come back where they were deleted, and the lineage
//! columns (or the dataset's key) keep every other row from being doubled. With
//! `--checkpoint FILE` an interrupted replay resumes where it stopped, under the same id.

use std::path::PathBuf;

use ingest_stream::handler::StreamIngest;
use ingest_stream::poller::{
    Checkpoints, ReadError, ReadProgress, ReadSettings, StopWhen, read_stream,
};
use shared::stream::{RecordStream, StartPosition, from_epoch_millis};
use tokio::sync::watch;

/// What to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayOptions {
    pub from_ms: i64,
    /// Up to this arrival time (milliseconds since the epoch).
    pub to_ms: i64,
    pub checkpoint_file: Option<PathBuf>,
    /// Records per `GetRecords` call and per batch.
    pub batch_size: u32,
}

/// Replays the window; `progress` is called after every round over the shards.
pub async fn replay(
    stream: &dyn RecordStream,
    ingest: &StreamIngest,
    options: &ReplayOptions,
    stop: watch::Receiver<bool>,
    progress: &mut (dyn FnMut(&ReadProgress) + Send),
) -> Result<ReadProgress, ReadError> {
    let mut checkpoints = match &options.checkpoint_file {
        Some(path) => Checkpoints::load(path)?,
        None => Checkpoints::default(),
    };
    let replay_id = checkpoints
        .replay_id
        .get_or_insert_with(|| {
            format!(
                "{}:{}-{}@{}",
                stream.name(),
                options.from_ms,
                options.to_ms,
                shared::stream::epoch_millis(std::time::SystemTime::now())
            )
        })
        .clone();
    let ingest = StreamIngest {
        replay: Some(replay_id),
        ..ingest.clone()
    };
    let settings = ReadSettings {
        start: StartPosition::AtTimestamp(from_epoch_millis(options.from_ms)),
        batch_size: options.batch_size,
        stop: StopWhen::ArrivedAfter(options.to_ms),
        checkpoint_file: options.checkpoint_file.clone(),
        ..ReadSettings::default()
    };
    read_stream(stream, &ingest, &settings, &mut checkpoints, stop, progress).await
}
