//! `[local]`: run the platform on one machine, in one folder, with embedded backends —
//! work queue, dead-letter queue and stream in SQLite, buckets as folders, an SQLite
//! warehouse — instead of SQS, Kinesis, S3 and a warehouse. `check`, `serve`, `backfill`,
//! `replay`, `redrive`, `dev`, `put` and `query` then work against that folder.

use std::path::PathBuf;

use crate::toml_walk::{Fields, Issues};

/// The Kinesis-compatible endpoint's default port (the port of kinesalite, a well-known
/// local Kinesis).
pub const DEFAULT_KINESIS_PORT: u16 = 4567;
/// The status page's default port (the next one).
pub const DEFAULT_STATUS_PORT: u16 = 4568;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalSettings {
    /// The folder the local platform lives in.
    pub dir: PathBuf,
    /// The loopback port of the Kinesis-compatible endpoint `serve` (and `dev`) serve; 0
    /// picks a free one.
    pub kinesis_port: u16,
    /// The loopback port of the status page (`/status`) `serve` (and `dev`) serve; 0 picks
    /// a free one.
    pub status_port: u16,
}

pub(super) fn read_local(mut section: Fields<'_>, issues: &mut Issues) -> Option<LocalSettings> {
    let dir = section.required_string("dir", issues).map(PathBuf::from);
    let mut port = |key: &'static str, default: u16| {
        section
            .integer_in(key, 0..=65_535, issues)
            .map_or(default, |port| u16::try_from(port).unwrap_or(default))
    };
    let kinesis_port = port("kinesis_port", DEFAULT_KINESIS_PORT);
    let status_port = port("status_port", DEFAULT_STATUS_PORT);
    section.finish(issues);
    Some(LocalSettings {
        dir: dir?,
        kinesis_port,
        status_port,
    })
}
