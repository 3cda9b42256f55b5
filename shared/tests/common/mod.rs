//! Shared helpers of the integration tests: the peers started by `scripts/test.sh`.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shared::aws::{AwsClients, AwsSettings};

/// The emulator endpoint exported by `scripts/test.sh`. Tests never skip when it is
/// missing: they fail and say how to run them.
pub fn aws_endpoint() -> String {
    std::env::var("INGEST_TEST_AWS_ENDPOINT").unwrap_or_else(|_| {
        panic!("INGEST_TEST_AWS_ENDPOINT is not set: run the tests with scripts/test.sh, which starts the AWS emulator")
    })
}

pub fn postgres_url() -> String {
    std::env::var("INGEST_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!("INGEST_TEST_POSTGRES_URL is not set: run the tests with scripts/test.sh, which starts PostgreSQL")
    })
}

pub fn emulator_settings() -> AwsSettings {
    AwsSettings::emulator(&aws_endpoint(), "us-east-1")
}

pub async fn clients() -> AwsClients {
    AwsClients::new(&emulator_settings()).await
}

/// A name no other test (or earlier run) uses: prefix, process id, time and a counter.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Polls `check` until it yields `Some`, failing the test after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
