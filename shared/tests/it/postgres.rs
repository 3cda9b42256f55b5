//! The warehouse stand-in: PostgreSQL started by scripts/test.sh is reachable and runs the
//! statements the load protocol relies on (MERGE, temporary staging tables, transactions).

use test_support::{postgres_url, unique_name};
use tokio_postgres::NoTls;

async fn connect() -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&postgres_url(), NoTls)
        .await
        .expect("connect to the test PostgreSQL");
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            eprintln!("postgres connection ended: {err}");
        }
    });
    client
}

#[tokio::test]
async fn merge_upserts_from_a_staging_table_in_one_transaction() {
    let mut client = connect().await;
    let schema = unique_name("t").replace('-', "_");
    client
        .batch_execute(&format!(
            "CREATE SCHEMA {schema};
             CREATE TABLE {schema}.orders (order_id bigint PRIMARY KEY, status text NOT NULL);
             INSERT INTO {schema}.orders VALUES (1, 'placed'), (2, 'placed');"
        ))
        .await
        .expect("set up");

    let tx = client.transaction().await.expect("begin");
    tx.batch_execute(&format!(
        "CREATE TEMPORARY TABLE staging (LIKE {schema}.orders) ON COMMIT DROP;
         INSERT INTO staging VALUES (2, 'shipped'), (3, 'placed');
         MERGE INTO {schema}.orders AS target
         USING staging AS source ON target.order_id = source.order_id
         WHEN MATCHED THEN UPDATE SET status = source.status
         WHEN NOT MATCHED THEN INSERT (order_id, status) VALUES (source.order_id, source.status);"
    ))
    .await
    .expect("merge");
    tx.commit().await.expect("commit");

    let rows = client
        .query(
            &format!("SELECT order_id, status FROM {schema}.orders ORDER BY order_id"),
            &[],
        )
        .await
        .expect("select");
    let got: Vec<(i64, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        got,
        [
            (1, "placed".to_owned()),
            (2, "shipped".to_owned()),
            (3, "placed".to_owned())
        ]
    );

    // A rolled-back transaction leaves nothing behind.
    let tx = client.transaction().await.expect("begin");
    tx.execute(
        &format!("INSERT INTO {schema}.orders VALUES (4, 'placed')"),
        &[],
    )
    .await
    .expect("insert");
    tx.rollback().await.expect("rollback");
    let count: i64 = client
        .query_one(&format!("SELECT count(*) FROM {schema}.orders"), &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(count, 3);

    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .expect("clean up");
}
