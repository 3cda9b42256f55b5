//! IAM authentication: the processor logs in with temporary credentials from Redshift's
//! `GetClusterCredentials`, asked of the emulator's Redshift API, and the login reaches the
//! real PostgreSQL started by scripts/peers.sh (trust authentication checks the user name
//! the credentials carry, `IAM:<db_user>`, as Redshift does).

use std::sync::Arc;
use std::time::Duration;

use processor::warehouse::WarehouseError;
use processor::warehouse::connection::{Connection, Connector, IamLogin, Login};
use shared::aws::load_sdk_config;
use shared::config::ClusterIam;
use shared::error::Classify;
use test_support::{emulator_settings, postgres_url, unique_name};

async fn redshift_client() -> aws_sdk_redshift::Client {
    aws_sdk_redshift::Client::new(&load_sdk_config(&emulator_settings()).await)
}

fn login(client: aws_sdk_redshift::Client, cluster_id: &str, db_user: &str) -> Login {
    Login::Iam(Arc::new(IamLogin::Cluster {
        client,
        settings: ClusterIam {
            cluster_id: cluster_id.to_owned(),
            db_user: db_user.to_owned(),
            auto_create: false,
            db_groups: Vec::new(),
        },
        duration: Duration::from_secs(900),
    }))
}

#[tokio::test]
async fn each_login_uses_temporary_credentials_from_get_cluster_credentials() {
    let client = redshift_client().await;
    let cluster_id = unique_name("analytics");
    client
        .create_cluster()
        .cluster_identifier(&cluster_id)
        .node_type("ra3.large")
        .master_username("admin")
        .master_user_password("Adm1nPassw0rd")
        .send()
        .await
        .expect("create cluster");
    let db_user = unique_name("loader").replace('-', "_");
    let expected_user = format!("IAM:{db_user}");
    let admin = test_support::pg_client().await;
    admin
        .batch_execute(&format!("CREATE ROLE \"{expected_user}\" LOGIN"))
        .await
        .expect("create role");

    // The URL names another user and no password: the credentials replace both.
    let url = postgres_url();
    let connection =
        Connection::open_with(&url, Connector::Plain, login(client, &cluster_id, &db_user))
            .await
            .expect("IAM login");
    let user: String = connection
        .client()
        .await
        .expect("client")
        .query_one("SELECT current_user::text", &[])
        .await
        .expect("query")
        .get(0);
    assert_eq!(user, expected_user);

    // A reconnect logs in again with fresh credentials.
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
            &[&expected_user],
        )
        .await
        .expect("terminate");
    let user: String = connection
        .client()
        .await
        .expect("reconnected")
        .query_one("SELECT current_user::text", &[])
        .await
        .expect("query")
        .get(0);
    assert_eq!(user, expected_user);
}

#[tokio::test]
async fn an_unknown_cluster_is_a_clear_permanent_error() {
    let err = Connection::open_with(
        &postgres_url(),
        Connector::Plain,
        login(redshift_client().await, "no-such-cluster", "loader"),
    )
    .await
    .expect_err("no cluster");
    let WarehouseError::Connect { url, .. } = &err else {
        panic!("expected a connect error, got {err:?}");
    };
    let reason = shared::error::report(&err);
    assert_eq!(url, "redshift cluster no-such-cluster");
    assert!(reason.contains("GetClusterCredentials failed"), "{reason}");
    assert!(reason.contains("ClusterNotFound"), "{reason}");
    assert!(!err.is_retryable(), "{err}");
}
