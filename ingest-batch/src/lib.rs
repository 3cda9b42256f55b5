//! The ingest-batch Lambda: S3 `ObjectCreated` events → `file` work items on the work queue.
//!
//! Not built yet (issue 4): the crate holds the place in the workspace so the build and
//! the dependency set are complete. The binary refuses to start rather than pretend. Built
//! so far: decoding of event keys (`keys`).

pub mod keys;

/// What the binary says when started before the handler exists.
pub const NOT_BUILT: &str =
    "ingest-batch is not built yet: the S3 event handler arrives with the batch-path issue";
