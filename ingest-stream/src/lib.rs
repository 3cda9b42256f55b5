//! The ingest-stream Lambda: Kinesis events → validated records → `records` work items on
//! the work queue.
//!
//! Not built yet (issue 5): the crate holds the place in the workspace so the build and
//! the dependency set are complete. The binary refuses to start rather than pretend.

/// What the binary says when started before the handler exists.
pub const NOT_BUILT: &str =
    "ingest-stream is not built yet: the Kinesis handler arrives with the stream-path issue";
