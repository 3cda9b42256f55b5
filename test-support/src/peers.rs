//! The peers `scripts/test.sh` starts on loopback (the AWS emulator, PostgreSQL) and the
//! clients tests use to reach them. Tests never skip when a peer is missing: they fail
//! and say how to run them.

use shared::aws::{AwsClients, AwsSettings};

/// The emulator endpoint exported by `scripts/test.sh`. Tests never skip when it is
/// missing: they fail and say how to run them.
pub fn aws_endpoint() -> String {
    std::env::var("TEST_INGEST_AWS_ENDPOINT").unwrap_or_else(|_| {
        panic!("TEST_INGEST_AWS_ENDPOINT is not set: run the tests with scripts/test.sh, which starts the AWS emulator")
    })
}

pub fn postgres_url() -> String {
    std::env::var("TEST_INGEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!("TEST_INGEST_POSTGRES_URL is not set: run the tests with scripts/test.sh, which starts PostgreSQL")
    })
}

pub fn emulator_settings() -> AwsSettings {
    AwsSettings::emulator(&aws_endpoint(), "us-east-1")
}

pub async fn clients() -> AwsClients {
    AwsClients::new(&emulator_settings()).await
}

/// A client of the test PostgreSQL (plain text on loopback), its connection driven by a task.
pub async fn pg_client() -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&postgres_url(), tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|err| panic!("connect to the test PostgreSQL: {err}"));
    tokio::spawn(connection);
    client
}

/// The single `bigint` a query returns, or `None` while it fails (a table not created yet).
pub async fn try_count(client: &tokio_postgres::Client, sql: &str) -> Option<i64> {
    client.query_one(sql, &[]).await.ok().map(|row| row.get(0))
}

/// The single `bigint` a query returns (a `count(*)` and the like).
pub async fn count(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|err| panic!("{sql}: {err}"))
        .get(0)
}
