//! A password rotated under a running processor: the next login is refused (28P01), and
//! the failure is retryable — the work waits for a login that succeeds instead of going to
//! the dead-letter queue (`scripts/peers.sh` makes the role `password_login` log in with a
//! password; every other role is trusted).

use processor::warehouse::Warehouse;
use processor::warehouse::connection::ServerError;
use processor::warehouse::postgres::PostgresWarehouse;
use shared::error::Classify;
use test_support::{TestSchemas, pg_client, postgres_url};

use crate::support::orders::{item, load_schema, orders_dataset};

const ROLE: &str = "password_login";

/// The test PostgreSQL's URL with `ROLE` and `password`.
fn url_with_password(password: &str) -> String {
    postgres_url().replacen(
        "postgres://postgres@",
        &format!("postgres://{ROLE}:{password}@"),
        1,
    )
}

#[tokio::test]
async fn a_password_rotated_under_the_processor_is_a_retryable_failure() {
    let admin = pg_client().await;
    admin
        .batch_execute(&format!(
            "DO $$ BEGIN CREATE ROLE {ROLE} LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
             ALTER ROLE {ROLE} PASSWORD 'first';
             GRANT CREATE ON DATABASE postgres TO {ROLE};"
        ))
        .await
        .expect("role");
    let schemas = TestSchemas::new();
    let dataset = &orders_dataset(&schemas.sales, true);
    let warehouse = PostgresWarehouse::connect(&url_with_password("first"), &schemas.platform)
        .await
        .expect("the first password logs in");
    warehouse.ensure_platform_tables().await.expect("platform");
    warehouse
        .ensure_target(dataset, &load_schema())
        .await
        .expect("target");
    let first = item(0, 0, &[(1, "placed", 0)]);
    warehouse
        .load_rows(dataset, &load_schema(), &[first])
        .await
        .expect("load");

    // Rotated: the open session is cut, and the next login uses the old password.
    admin
        .batch_execute(&format!(
            "ALTER ROLE {ROLE} PASSWORD 'second';
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{ROLE}';"
        ))
        .await
        .expect("rotate");
    let second = item(1, 1, &[(2, "placed", 1)]);
    let err = warehouse
        .load_rows(dataset, &load_schema(), &[second])
        .await
        .expect_err("the old password is refused");
    assert!(
        shared::error::report(&err).contains("password authentication failed"),
        "{err}"
    );
    // The server's error is kept whole as the cause, not flattened to text.
    let server = std::error::Error::source(&err)
        .and_then(|cause| cause.downcast_ref::<ServerError>())
        .unwrap_or_else(|| panic!("the cause is the server's error: {err:?}"));
    assert_eq!(
        server.0.code(),
        Some(&tokio_postgres::error::SqlState::INVALID_PASSWORD)
    );
    assert!(
        err.is_retryable(),
        "the work must wait, not be dead-lettered: {err}"
    );
    assert!(
        warehouse.ping().await.is_err(),
        "not ready while the login is refused"
    );
}
