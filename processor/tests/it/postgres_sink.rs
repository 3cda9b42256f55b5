//! What only the PostgreSQL sink does, against a real PostgreSQL (started by
//! scripts/test.sh): direct COPY into the target and its fallback, text PostgreSQL cannot
//! store, reconnecting, binary COPY of every type, concurrent start-up. The load protocol
//! every sink shares is proven in `warehouse_contract.rs`.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Decimal128Array, Float64Array, Int64Array, StringArray,
    TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use processor::pipeline::lineage;
use processor::warehouse::postgres::PostgresWarehouse;
use processor::warehouse::{ItemRows, Reject, Warehouse};
use shared::catalog::{Catalog, Dataset};
use shared::error::Classify;
use test_support::{count, pg_client, postgres_url, unique_name};

use crate::support::orders::{batch, item, key, load_schema, owned};
use crate::support::platform::postgres_with_platform_tables;

/// A schema name no other test uses.
fn unique(prefix: &str) -> String {
    unique_name(prefix).replace('-', "_")
}

fn dataset(schema: &str, key: &str) -> Dataset {
    let text = format!(
        r#"
[datasets.orders]
format = "csv"
target = "{schema}.orders"
key = [{key}]
s3 = {{ prefix = "orders/" }}
columns = [
  {{ name = "order_id", type = "int64", nullable = false }},
  {{ name = "status", type = "string" }},
]
"#
    );
    Catalog::from_toml(&text, "test")
        .expect("valid")
        .get("orders")
        .expect("present")
        .clone()
}

async fn rows(client: &tokio_postgres::Client, schema: &str) -> Vec<(i64, String)> {
    client
        .query(
            &format!("SELECT order_id, status FROM {schema}.orders ORDER BY order_id"),
            &[],
        )
        .await
        .expect("select")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test]
async fn a_single_item_copies_straight_into_the_target_and_falls_back_to_merge_on_a_clash() {
    let schema = unique("direct");
    let platform = unique("platform");
    let dataset = dataset(&schema, "\"order_id\"");
    let warehouse = postgres_with_platform_tables(&platform).await;
    warehouse
        .ensure_target(&dataset, &load_schema())
        .await
        .expect("target");
    let client = pg_client().await;

    // New keys only: the direct COPY takes them all.
    let first = item(
        1,
        3,
        &[(1, "placed", 1), (2, "placed", 2), (3, "placed", 3)],
    );
    let report = warehouse
        .load_rows(&dataset, &load_schema(), &[first])
        .await
        .expect("direct load");
    assert_eq!((report.rows_staged, report.rows_written), (3, 3));

    // One key already loaded, one key twice in the item, one reject: the direct COPY
    // clashes, is rolled back, and the rows are read again and merged; the reject is
    // written once, not once per attempt.
    let mut second = item(4, 6, &[(3, "shipped", 4), (4, "placed", 5), (4, "paid", 6)]);
    second.rejects = vec![Reject {
        row_number: Some(9),
        raw: Some("4,??".into()),
        reason: "bad status".into(),
    }];
    let report = warehouse
        .load_rows(&dataset, &load_schema(), &[second])
        .await
        .expect("merged load");
    assert_eq!(
        (
            report.items_loaded,
            report.rows_staged,
            report.rows_rejected
        ),
        (1, 3, 1)
    );
    assert_eq!(
        rows(&client, &schema).await,
        owned(&[(1, "placed"), (2, "placed"), (3, "shipped"), (4, "paid")])
    );
    assert_eq!(
        count(&client, &format!("SELECT count(*) FROM {platform}.rejects")).await,
        1
    );
    assert_eq!(
        count(
            &client,
            &format!("SELECT count(*) FROM {platform}.load_ledger")
        )
        .await,
        2
    );
}

#[tokio::test]
async fn without_its_merge_key_index_a_target_is_never_copied_into_directly() {
    let schema = unique("noindex");
    let platform = unique("platform");
    let dataset = dataset(&schema, "\"order_id\"");
    let warehouse = postgres_with_platform_tables(&platform).await;
    warehouse
        .ensure_target(&dataset, &load_schema())
        .await
        .expect("target");
    let client = pg_client().await;
    // A target someone created without the index: a direct COPY could not see clashes.
    client
        .batch_execute(&format!("DROP INDEX {schema}.orders_merge_key"))
        .await
        .expect("drop index");
    for (first, rows) in [
        (1, &[(1, "placed", 1), (2, "placed", 2)][..]),
        (3, &[(2, "shipped", 3)][..]),
    ] {
        warehouse
            .load_rows(&dataset, &load_schema(), &[item(first, first + 1, rows)])
            .await
            .expect("load");
    }
    assert_eq!(
        rows(&client, &schema).await,
        owned(&[(1, "placed"), (2, "shipped")]),
        "merged, not duplicated"
    );
}

#[tokio::test]
async fn a_nul_byte_in_a_reject_is_stored_as_a_replacement_character() {
    let schema = unique("rejects");
    let platform = unique("platform");
    let dataset = dataset(&schema, "\"order_id\"");
    let warehouse = postgres_with_platform_tables(&platform).await;
    warehouse
        .ensure_target(&dataset, &load_schema())
        .await
        .expect("target");
    let client = pg_client().await;

    let mut with_rejects = item(1, 3, &[(1, "placed", 1)]);
    with_rejects.rejects = vec![
        Reject {
            row_number: Some(2),
            raw: Some("two,\0placed".into()),
            reason: "order_id: \"two\" is not an int64".into(),
        },
        Reject {
            row_number: Some(3),
            raw: None,
            reason: "order_id is required".into(),
        },
    ];
    let report = warehouse
        .load_rows(&dataset, &load_schema(), &[with_rejects])
        .await
        .expect("load");
    assert_eq!((report.rows_written, report.rows_rejected), (1, 2));
    let rejects = client
        .query(&format!("SELECT row_number, raw, reason, dataset FROM {platform}.rejects ORDER BY row_number"), &[])
        .await
        .expect("rejects");
    assert_eq!(rejects.len(), 2);
    assert_eq!(
        rejects[0].get::<_, Option<String>>(1).as_deref(),
        Some("two,\u{FFFD}placed")
    );
    assert_eq!(rejects[1].get::<_, String>(2), "order_id is required");
    assert_eq!(rejects[1].get::<_, String>(3), "orders");
    let ledger = client
        .query_one(
            &format!("SELECT rows_loaded, rows_rejected FROM {platform}.load_ledger"),
            &[],
        )
        .await
        .expect("ledger");
    assert_eq!((ledger.get::<_, i64>(0), ledger.get::<_, i64>(1)), (1, 2));
}

#[tokio::test]
async fn a_value_postgresql_cannot_store_fails_the_whole_load_permanently() {
    let schema = unique("atomic");
    let platform = unique("platform");
    let dataset = dataset(&schema, "\"order_id\"");
    let warehouse = postgres_with_platform_tables(&platform).await;
    warehouse
        .ensure_target(&dataset, &load_schema())
        .await
        .expect("target");
    let client = pg_client().await;

    // The second batch cannot be encoded (NUL in text): the first must not stay behind.
    let mut broken = item(1, 4, &[(1, "placed", 1), (2, "placed", 2)]);
    broken.batches.push(batch(&[(3, "bad\0status", 3)]));
    let err = warehouse
        .load_rows(&dataset, &load_schema(), &[broken])
        .await
        .expect_err("NUL cannot be stored");
    assert!(!err.is_retryable(), "{err}");
    assert!(shared::error::report(&err).contains("NUL"), "{err}");
    assert!(rows(&client, &schema).await.is_empty());
    assert_eq!(
        count(
            &client,
            &format!("SELECT count(*) FROM {platform}.load_ledger")
        )
        .await,
        0
    );

    let fixed = item(
        1,
        4,
        &[(1, "placed", 1), (2, "placed", 2), (3, "bad status", 3)],
    );
    let report = warehouse
        .load_rows(&dataset, &load_schema(), &[fixed])
        .await
        .expect("retry loads");
    assert_eq!(report.rows_written, 3);
}

#[tokio::test]
async fn a_closed_connection_costs_one_retry_not_the_worker() {
    let schema = unique("reconnect");
    let platform = unique("platform");
    let dataset = dataset(&schema, "\"order_id\"");
    let application = unique("reconnect_test");
    let url = format!("{}?application_name={application}", postgres_url());
    let warehouse = PostgresWarehouse::connect(&url, &platform)
        .await
        .expect("connect");
    warehouse.ensure_platform_tables().await.expect("tables");
    warehouse
        .ensure_target(&dataset, &load_schema())
        .await
        .expect("target");
    let client = pg_client().await;
    // What a server restart or failover does to an open session.
    let terminated = count(
        &client,
        &format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = '{application}'"
        ),
    )
    .await;
    assert_eq!(terminated, 1);

    let items = [item(1, 1, &[(1, "placed", 1)])];
    let schema_ref = load_schema();
    let load = || warehouse.load_rows(&dataset, &schema_ref, &items);
    let mut failures = 0;
    let report = loop {
        match load().await {
            Ok(report) => break report,
            Err(err) => {
                assert!(err.is_retryable(), "{err}");
                failures += 1;
                assert!(failures < 2, "still failing after reconnecting: {err}");
            }
        }
    };
    assert_eq!(report.rows_written, 1);
    warehouse.ping().await.expect("connected again");
    assert_eq!(rows(&client, &schema).await, owned(&[(1, "placed")]));
}

#[tokio::test]
async fn every_supported_type_round_trips_through_binary_copy() {
    let schema_name = unique("types");
    let platform = unique("platform");
    let text = format!(
        r#"
[datasets.typed]
format = "csv"
target = "{schema_name}.typed"
s3 = {{ prefix = "t/" }}
columns = [{{ name = "id", type = "int64" }}]
"#
    );
    let dataset = Catalog::from_toml(&text, "t")
        .expect("valid")
        .get("typed")
        .expect("present")
        .clone();
    let mut fields = vec![
        Field::new("flag", DataType::Boolean, true),
        Field::new("ratio", DataType::Float64, true),
        Field::new("amount", DataType::Decimal128(12, 2), true),
        Field::new("day", DataType::Date32, true),
        Field::new(
            "at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new("label", DataType::Utf8, true),
    ];
    fields.extend(lineage::fields());
    let schema: SchemaRef = Arc::new(Schema::new(fields));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(BooleanArray::from(vec![Some(true), None, Some(false)])),
        Arc::new(Float64Array::from(vec![Some(0.5), None, Some(-1e300)])),
        Arc::new(
            Decimal128Array::from(vec![Some(123_456_789_012), None, Some(-5)])
                .with_precision_and_scale(12, 2)
                .expect("decimal"),
        ),
        Arc::new(Date32Array::from(vec![Some(19_875), None, Some(-1)])),
        Arc::new(
            TimestampMicrosecondArray::from(vec![Some(1_717_200_000_123_456), None, Some(0)])
                .with_timezone("UTC"),
        ),
        Arc::new(StringArray::from(vec![
            Some("été 🚚 \"quoted\", comma"),
            None,
            Some(""),
        ])),
        Arc::new(StringArray::from(vec!["s3://b/k"; 3])),
        Arc::new(StringArray::from(vec!["etag"; 3])),
        Arc::new(StringArray::from(vec!["0", "10", "20"])),
        Arc::new(Int64Array::from(vec![0; 3])),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns).expect("batch");
    let warehouse = postgres_with_platform_tables(&platform).await;
    warehouse
        .ensure_target(&dataset, &schema)
        .await
        .expect("target");
    let the_item = ItemRows {
        key: key(1, 1),
        source: "s3://b/k".into(),
        batches: vec![batch],
        rejects: Vec::new(),
    };
    warehouse
        .load_rows(&dataset, &schema, &[the_item])
        .await
        .expect("load");
    let client = pg_client().await;
    client
        .batch_execute("SET TIME ZONE 'UTC'")
        .await
        .expect("session time zone");
    let got: Vec<Vec<Option<String>>> = client
        .query(
            &format!(
                "SELECT flag::text, ratio::text, amount::text, day::text, at::text, label FROM {schema_name}.typed ORDER BY _ingest_offset::int"
            ),
            &[],
        )
        .await
        .expect("select")
        .iter()
        .map(|r| (0..6).map(|i| r.get::<_, Option<String>>(i)).collect())
        .collect();
    let some = |s: &str| Some(s.to_owned());
    assert_eq!(
        got[0],
        vec![
            some("true"),
            some("0.5"),
            some("1234567890.12"),
            some("2024-06-01"),
            some("2024-06-01 00:00:00.123456+00"),
            some("été 🚚 \"quoted\", comma")
        ]
    );
    assert_eq!(got[1], vec![None; 6]);
    assert_eq!(
        got[2],
        vec![
            some("false"),
            some("-1e+300"),
            some("-0.05"),
            some("1969-12-31"),
            some("1970-01-01 00:00:00+00"),
            some("")
        ]
    );
}

#[tokio::test]
async fn tasks_starting_together_create_the_tables_without_racing() {
    let schema = unique("startup");
    let platform = unique("platform");
    let dataset = dataset(&schema, "\"order_id\"");
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let dataset = dataset.clone();
        let platform = platform.clone();
        tasks.push(tokio::spawn(async move {
            let warehouse = PostgresWarehouse::connect(&postgres_url(), &platform)
                .await
                .expect("connect");
            warehouse.ensure_platform_tables().await?;
            warehouse.ensure_target(&dataset, &load_schema()).await
        }));
    }
    for task in tasks {
        task.await
            .expect("task")
            .expect("concurrent CREATE IF NOT EXISTS succeeds");
    }
    let client = pg_client().await;
    assert_eq!(
        count(&client, &format!("SELECT count(*) FROM {schema}.orders")).await,
        0
    );
}
