//! The integration tests of `ingest-batch`, in one binary (one link, one run).

mod lambda_binary;
mod notifications;
