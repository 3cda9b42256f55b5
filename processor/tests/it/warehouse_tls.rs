//! TLS to the warehouse against the real PostgreSQL started by scripts/peers.sh, which
//! serves a certificate for 127.0.0.1 from a throwaway CA: the connection is encrypted
//! and verified, a certificate from another CA is refused, and a server that declines TLS
//! is never used in plain text.

use std::path::PathBuf;

use processor::warehouse::connection::{Connection, Connector, Login};
use processor::warehouse::postgres::PostgresWarehouse;
use processor::warehouse::{Warehouse, WarehouseError};
use shared::config::TlsMode;
use test_support::postgres_url;

fn env_path(name: &str) -> PathBuf {
    std::env::var(name)
        .map(PathBuf::from)
        .unwrap_or_else(|_| panic!("{name} is not set: run the tests with scripts/test.sh"))
}

fn verify_with(ca: &str) -> Connector {
    Connector::new(&TlsMode::VerifyFull {
        ca_file: Some(env_path(ca)),
    })
    .expect("connector")
}

#[tokio::test]
async fn the_connection_is_encrypted_and_the_certificate_verified() {
    let connection = Connection::open(&postgres_url(), verify_with("TEST_INGEST_POSTGRES_CA"))
        .await
        .expect("TLS connection with the test CA");
    let client = connection.client().await.expect("client");
    let row = client
        .query_one(
            "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_stat_ssl");
    let encrypted: bool = row.get(0);
    let version: Option<String> = row.get(1);
    assert!(encrypted, "the session is not encrypted");
    assert!(
        version.as_deref().is_some_and(|v| v.starts_with("TLSv1.")),
        "{version:?}"
    );
    drop(client);

    // The sink itself works over it.
    let warehouse = PostgresWarehouse::connect_with(
        &postgres_url(),
        verify_with("TEST_INGEST_POSTGRES_CA"),
        Login::Url,
        "ingest",
    )
    .await
    .expect("warehouse over TLS");
    warehouse.ping().await.expect("ping over TLS");
}

#[tokio::test]
async fn a_certificate_from_an_unknown_ca_is_refused() {
    let err = Connection::open(&postgres_url(), verify_with("TEST_INGEST_OTHER_CA"))
        .await
        .expect_err("the server's CA is not trusted");
    assert!(
        matches!(err, WarehouseError::Connect { .. }),
        "expected a connect error, got {err:?}"
    );
    let reason = shared::error::report(&err);
    assert!(
        reason.to_lowercase().contains("certificate"),
        "the reason names the certificate: {reason}"
    );
}

#[tokio::test]
async fn a_server_that_declines_tls_is_not_used_in_plain_text() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A listener that answers the client's SSLRequest with 'N' (no TLS), as a server
    // without TLS (or an attacker stripping it) would.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        let mut request = [0u8; 8];
        socket.read_exact(&mut request).await.expect("SSLRequest");
        socket.write_all(b"N").await.expect("decline");
        let mut rest = Vec::new();
        let _ = socket.read_to_end(&mut rest).await;
        (request, rest)
    });
    let url = format!("postgres://loader:secret@127.0.0.1:{}/db", address.port());
    let err = Connection::open(&url, verify_with("TEST_INGEST_POSTGRES_CA"))
        .await
        .expect_err("no plain-text fallback");
    assert!(matches!(err, WarehouseError::Connect { .. }), "{err:?}");
    assert!(
        !shared::error::report(&err).contains("secret"),
        "password redacted: {err}"
    );
    let (request, rest) = server.await.expect("server");
    // SSLRequest: length 8, code 80877103.
    assert_eq!(request, [0, 0, 0, 8, 4, 210, 22, 47]);
    assert!(
        rest.is_empty(),
        "nothing (no startup message, no password) was sent after the refusal: {rest:?}"
    );
}

#[test]
fn an_unreadable_ca_file_is_a_start_up_error() {
    let err = Connector::new(&TlsMode::VerifyFull {
        ca_file: Some(PathBuf::from("/nonexistent/ca.pem")),
    })
    .expect_err("missing file");
    assert!(
        shared::error::report(&err).contains("/nonexistent/ca.pem"),
        "{err}"
    );
}
