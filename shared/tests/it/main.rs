//! The integration tests of `shared`, in one binary (one link, one run).

mod contracts;
mod infra_metrics;
mod kinesis;
mod metric_names;
mod postgres;
mod s3_and_endpoints;
mod sql_safety;
mod sqs;
mod work_item_fixtures;
