//! The integration tests of `processor`, in one binary (one link, one run).

/// The `processor` binary these tests run.
const PROCESSOR: &str = env!("CARGO_BIN_EXE_processor");

mod backfill;
mod bad_inputs;
mod check_warehouse;
mod demo;
mod draft;
mod file_events;
mod health;
mod kinesis_endpoint;
mod local_config;
mod postgres_sink;
mod read_files;
mod redrive;
mod redshift_check;
mod redshift_grammar;
mod redshift_staging;
mod redshift_standin;
mod serve_e2e;
mod sigterm;
mod special_keys;
mod split_files;
mod status_view;
mod stream_e2e;
mod support;
mod warehouse_contract;
mod warehouse_iam;
mod warehouse_login;
mod warehouse_tls;
mod worker_faults;
