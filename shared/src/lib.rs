//! The contract every crate of the platform speaks.
//!
//! - [`envelope`]: the versioned work item and its idempotency key;
//! - [`catalog`]: dataset definitions (routing, schema, transform, target, keys);
//! - [`config`]: platform settings, validated once at start-up;
//! - [`aws`]: one builder for the AWS SDK clients;
//! - [`queue`], [`stream`]: the work queue and the record stream, with SQS and Kinesis
//!   implementations;
//! - [`embedded`] (feature `embedded`): the SQLite queue and stream log of the local mode;
//! - [`retry`]: the one backoff policy used for per-entry retries;
//! - [`telemetry`]: tracing set-up and the metric names;
//! - [`error`]: the retryable/permanent hint every error carries;
//! - [`validate`]: checks a JSON record against a dataset's columns.

pub mod aws;
pub mod catalog;
pub mod config;
#[cfg(feature = "embedded")]
pub mod embedded;
pub mod envelope;
pub mod error;
pub mod queue;
pub mod retry;
pub mod stream;
pub mod telemetry;
mod toml_walk;
pub mod validate;
