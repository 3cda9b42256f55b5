//! A password rotated under a running processor. With the password in the URL the next
//! login is refused (28P01) and the failure is retryable: the work waits for a login that
//! succeeds instead of going to the dead-letter queue. With the password in a Secrets
//! Manager secret (the emulator's), the next login reads the secret again, so the same
//! running warehouse loads once the secret holds the new password. `scripts/peers.sh` makes
//! the role `password_login` log in with a password; every other role is trusted.

use std::sync::Arc;

use processor::warehouse::Warehouse;
use processor::warehouse::connection::{Connector, Login, SecretLogin, ServerError};
use processor::warehouse::postgres::PostgresWarehouse;
use shared::aws::load_sdk_config;
use shared::config::PasswordSecret;
use shared::error::Classify;
use test_support::{TestSchemas, emulator_settings, pg_client, postgres_url, unique_name};

use crate::support::orders::{item, load_schema, orders_dataset};

const ROLE: &str = "password_login";

/// The test PostgreSQL's URL as `ROLE`, with `password` (or none).
fn url_with_password(password: Option<&str>) -> String {
    let user = match password {
        Some(password) => format!("{ROLE}:{password}"),
        None => ROLE.to_owned(),
    };
    postgres_url().replacen("postgres://postgres@", &format!("postgres://{user}@"), 1)
}

/// Sets `ROLE`'s password and cuts its open sessions, as a rotation does.
async fn rotate_to(admin: &tokio_postgres::Client, password: &str) {
    admin
        .batch_execute(&format!(
            "ALTER ROLE {ROLE} PASSWORD '{password}';
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{ROLE}';"
        ))
        .await
        .expect("rotate");
}

/// Both logins use the one role that checks passwords, so they run one after the other.
#[tokio::test]
async fn a_rotated_password_makes_work_wait_and_a_secret_login_follows_the_rotation() {
    let admin = pg_client().await;
    admin
        .batch_execute(&format!(
            "DO $$ BEGIN CREATE ROLE {ROLE} LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
             ALTER ROLE {ROLE} PASSWORD 'first';
             GRANT CREATE ON DATABASE postgres TO {ROLE};"
        ))
        .await
        .expect("role");
    a_password_in_the_url_is_a_retryable_failure_once_rotated(&admin).await;
    a_password_in_a_secret_is_read_again_at_the_next_login(&admin).await;
}

async fn a_password_in_the_url_is_a_retryable_failure_once_rotated(admin: &tokio_postgres::Client) {
    rotate_to(admin, "first").await;
    let schemas = TestSchemas::new();
    let dataset = &orders_dataset(&schemas.sales, true);
    let warehouse =
        PostgresWarehouse::connect(&url_with_password(Some("first")), &schemas.platform)
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
    rotate_to(admin, "second").await;
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

async fn a_password_in_a_secret_is_read_again_at_the_next_login(admin: &tokio_postgres::Client) {
    rotate_to(admin, "third").await;
    let secrets = aws_sdk_secretsmanager::Client::new(&load_sdk_config(&emulator_settings()).await);
    let secret_id = unique_name("warehouse");
    let put = |password: &str| {
        secrets
            .put_secret_value()
            .secret_id(&secret_id)
            .secret_string(format!(
                r#"{{"username":"{ROLE}","password":"{password}"}}"#
            ))
            .send()
    };
    secrets
        .create_secret()
        .name(&secret_id)
        .secret_string(format!(r#"{{"username":"{ROLE}","password":"third"}}"#))
        .send()
        .await
        .expect("create the secret");
    let login = Login::Secret(Arc::new(SecretLogin {
        client: secrets.clone(),
        secret: PasswordSecret {
            id: secret_id.clone(),
            key: "password".into(),
        },
    }));
    let schemas = TestSchemas::new();
    let dataset = &orders_dataset(&schemas.sales, true);
    let warehouse = PostgresWarehouse::connect_with(
        &url_with_password(None),
        Connector::Plain,
        login,
        &schemas.platform,
    )
    .await
    .expect("the secret's password logs in");
    warehouse.ensure_platform_tables().await.expect("platform");
    warehouse
        .ensure_target(dataset, &load_schema())
        .await
        .expect("target");
    let load = |n: u64| {
        let rows = [item(n, n, &[(n as i64, "placed", n)])];
        let warehouse = &warehouse;
        async move { warehouse.load_rows(dataset, &load_schema(), &rows).await }
    };
    load(0).await.expect("first load");

    // The database's password changes first, the secret a moment later: in between, a
    // login is refused and the work waits.
    rotate_to(admin, "fourth").await;
    let err = load(1)
        .await
        .expect_err("the secret still holds the old password");
    assert!(err.is_retryable(), "the work must wait: {err}");
    put("fourth").await.expect("update the secret");
    let report = load(1)
        .await
        .expect("the next login reads the new password");
    assert_eq!(report.items_loaded, 1);
}
