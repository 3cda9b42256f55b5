//! Helpers for the tests and benchmarks of every crate (not published): the peers started
//! by `scripts/test.sh`, unique names, waiting with a timeout, emulator fixtures, readers of
//! what the platform publishes, the checked-in corpora, a Lambda Runtime API on loopback
//! and the fault-injection harness around `processor serve`.

pub mod aws;
pub mod corpus;
pub mod faults;
pub mod fixtures;
pub mod lambda_runtime;
pub mod names;
pub mod observe;
pub mod peers;
pub mod redshift;
pub mod wait;

pub use aws::{
    AcceptingQueue, create_bucket, create_queue, create_queue_with_dlq, get_object_bytes,
    queue_depth, upload_file,
};
pub use corpus::Corpus;
pub use fixtures::{EXAMPLE_CATALOG, binary_config, gzip};
pub use names::{TempDatabase, TestSchemas, unique_name};
pub use observe::{check_emf, http_get, metric_value};
pub use peers::{
    aws_endpoint, clients, count, emulator_settings, pg_client, postgres_url, try_count,
};
pub use redshift::RedshiftStandIn;
pub use wait::eventually;
