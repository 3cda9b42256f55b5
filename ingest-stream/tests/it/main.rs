//! The integration tests of `ingest-stream`, in one binary (one link, one run).

mod handler;
mod kpl_fixtures;
mod lambda_binary;
mod record_corpus;
