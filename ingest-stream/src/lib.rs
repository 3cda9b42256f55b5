//! The ingest-stream Lambda: Kinesis events → validated records → `records` work items on
//! the work queue.
//!
//! Being built (issue 5). Done so far: KPL de-aggregation ([`kpl`]) and record decoding
//! ([`decode`]); the handler is not there yet, and the binary refuses to start rather
//! than pretend.

pub mod decode;
pub mod kpl;

/// What the binary says when started before the handler exists.
pub const NOT_BUILT: &str =
    "ingest-stream is not built yet: the Kinesis handler arrives with the stream-path issue";
