//! The grammar gate: every statement the Redshift sink sent while it created its tables and
//! loaded a dataset of every column type (keyed and not, with rejects, file parts and a
//! file claim), and the operator's reads (status counts, a file's trace, rejects), is
//! parsed by `sqlfluff` with the Redshift dialect, passes the deny-list of
//! PostgreSQL-only forms, and stays under Redshift's 16 MB statement limit. The stand-in
//! refuses denied forms as they are sent, so every other Redshift test stands behind the
//! same list.

use processor::warehouse::retention::PruneRequest;
use shared::config::RetentionSettings;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Decimal128Array, Float32Array, Float64Array, Int16Array,
    Int32Array, Int64Array, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use processor::pipeline::lineage;
use processor::warehouse::files::FilePart;
use processor::warehouse::{ItemSource, MemoryRows, Reject, Warehouse};
use shared::catalog::{Catalog, Dataset};
use test_support::redshift::gate::{MAX_STATEMENT_BYTES, violations};
use test_support::{TestSchemas, unique_name};

use crate::support::orders::key;
use crate::support::redshift::RedshiftPeer;

fn dataset(schema: &str, keyed: bool) -> Dataset {
    dataset_with_label(schema, keyed, "")
}

/// The dataset with `label_extra` in the `label` column (`, max_length = 1000`).
fn dataset_with_label(schema: &str, keyed: bool, label_extra: &str) -> Dataset {
    let text = format!(
        r#"
[datasets.kinds]
format = "csv"
target = "{schema}.kinds"
key = [{}]
s3 = {{ prefix = "kinds/" }}
columns = [
  {{ name = "id", type = "int64", nullable = false }},
  {{ name = "small", type = "int16" }},
  {{ name = "medium", type = "int32" }},
  {{ name = "single", type = "float32" }},
  {{ name = "double", type = "float64" }},
  {{ name = "flag", type = "bool" }},
  {{ name = "label", type = "string"{label_extra} }},
  {{ name = "day", type = "date" }},
  {{ name = "at", type = "timestamp" }},
  {{ name = "at_utc", type = "timestamptz" }},
  {{ name = "amount", type = "decimal(12,2)" }},
]
"#,
        if keyed { "\"id\"" } else { "" }
    );
    Catalog::from_toml(&text, "test")
        .expect("valid")
        .get("kinds")
        .expect("present")
        .clone()
}

fn load_schema() -> SchemaRef {
    let utc = Some("UTC".into());
    let mut fields = vec![
        Field::new("id", DataType::Int64, false),
        Field::new("small", DataType::Int16, true),
        Field::new("medium", DataType::Int32, true),
        Field::new("single", DataType::Float32, true),
        Field::new("double", DataType::Float64, true),
        Field::new("flag", DataType::Boolean, true),
        Field::new("label", DataType::Utf8, true),
        Field::new("day", DataType::Date32, true),
        Field::new("at", DataType::Timestamp(TimeUnit::Microsecond, None), true),
        Field::new(
            "at_utc",
            DataType::Timestamp(TimeUnit::Microsecond, utc),
            true,
        ),
        Field::new("amount", DataType::Decimal128(12, 2), true),
    ];
    fields.extend(lineage::fields());
    Arc::new(Schema::new(fields))
}

/// Two rows: one with a value in every column (extremes where a type has them), one of NULLs.
fn rows() -> RecordBatch {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(vec![i64::MAX, 2])),
        Arc::new(Int16Array::from(vec![Some(i16::MIN), None])),
        Arc::new(Int32Array::from(vec![Some(i32::MAX), None])),
        Arc::new(Float32Array::from(vec![Some(0.5), None])),
        Arc::new(Float64Array::from(vec![Some(-1.25e300), None])),
        Arc::new(BooleanArray::from(vec![Some(true), None])),
        Arc::new(StringArray::from(vec![
            Some("ünïcode 'quoted' \"x\""),
            None,
        ])),
        Arc::new(Date32Array::from(vec![Some(20_781), None])),
        Arc::new(TimestampMicrosecondArray::from(vec![
            Some(1_795_946_400_123_456),
            None,
        ])),
        Arc::new(
            TimestampMicrosecondArray::from(vec![Some(1_795_946_400_123_456), None])
                .with_timezone("UTC"),
        ),
        Arc::new(
            Decimal128Array::from(vec![Some(-999_999_999_999), None])
                .with_precision_and_scale(12, 2)
                .expect("decimal"),
        ),
        Arc::new(StringArray::from(vec!["s3://landing/kinds.csv"; 2])),
        Arc::new(StringArray::from(vec!["\"etag\""; 2])),
        Arc::new(StringArray::from(vec!["0", "100"])),
        Arc::new(Int64Array::from(vec![0, 0])),
    ];
    RecordBatch::try_new(load_schema(), columns).expect("batch")
}

/// The whole file as one item, with one rejected row.
fn file_item(n: u64) -> ItemSource {
    let reject = Reject {
        row_number: Some(3),
        raw: Some("3,not a number".to_owned()),
        reason: "column id: \"not a number\" is not a valid int64".to_owned(),
    };
    ItemSource {
        key: key(n, n),
        source: "s3://landing/kinds.csv".to_owned(),
        rows: Box::new(MemoryRows::new(vec![rows()], vec![reject])),
        file: Some(FilePart {
            file_id: unique_name("file"),
            dataset: "kinds".to_owned(),
            bucket: "landing".to_owned(),
            key: "kinds.csv".to_owned(),
            version_id: None,
            etag: "\"etag\"".to_owned(),
            parts_total: 1,
        }),
        stream: None,
    }
}

/// Creates the platform and target tables, loads a file (keyed and not), claims it,
/// prunes.
async fn run_every_statement(warehouse: &dyn Warehouse, schemas: &TestSchemas) {
    warehouse.ensure_platform_tables().await.expect("platform");
    for (n, keyed) in [(1, true), (2, false)] {
        let schema = if keyed {
            &schemas.sales
        } else {
            &schemas.events
        };
        let dataset = dataset(schema, keyed);
        warehouse
            .ensure_target(&dataset, &load_schema())
            .await
            .expect("target");
        let item = file_item(n);
        let file_id = item
            .file
            .as_ref()
            .map(|f| f.file_id.clone())
            .unwrap_or_default();
        let report = warehouse
            .load(&dataset, &load_schema(), vec![item])
            .await
            .expect("load");
        assert_eq!((report.rows_written, report.rows_rejected), (2, 1));
        let claim = warehouse
            .claim_file_completion(&file_id, "grammar")
            .await
            .expect("claim");
        if let processor::warehouse::files::Claim::Claimed(completion) = claim {
            warehouse
                .finish_file_claim(&completion, true)
                .await
                .expect("finish");
        } else {
            panic!("the completed file is claimed: {claim:?}");
        }
    }
    // The operator's reads: status counts, a file's trace, rejects with every filter.
    let now = std::time::SystemTime::now();
    let hour_ago = now - std::time::Duration::from_secs(3600);
    let activity = processor::warehouse::activity::ActivityQuery {
        since: hour_ago,
        bucket_ms: 60_000,
        incomplete_before: now,
    };
    let counted = warehouse.activity(&activity).await.expect("activity");
    assert!(counted.iter().any(|d| d.rows_loaded > 0), "{counted:?}");
    let keys = vec!["file-a".to_owned(), "file-b".to_owned()];
    warehouse
        .trace_file(&keys, "load-x")
        .await
        .expect("trace lookups");
    let query = processor::warehouse::rejects::RejectQuery {
        dataset: Some("kinds".into()),
        source: Some("kinds/".into()),
        reason: Some("required".into()),
        keys,
        since: Some(hour_ago),
        limit: 10,
        offset: 0,
    };
    warehouse.find_rejects(&query).await.expect("rejects");
    // Schema evolution: a column added in the transaction, `label` widened after it.
    let evolved = dataset_with_label(&schemas.sales, true, ", max_length = 1000");
    let mut fields: Vec<Field> = load_schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.insert(11, Field::new("added", DataType::Int64, true));
    let plan = warehouse
        .ensure_target(&evolved, &Arc::new(Schema::new(fields)))
        .await
        .expect("evolve");
    assert_eq!(plan.steps.len(), 2, "{plan}");
    // Retention: the dry run's counts and the deletes.
    for dry_run in [true, false] {
        let now = std::time::SystemTime::now();
        let request = PruneRequest::new(&RetentionSettings::default(), now, dry_run);
        warehouse.prune(&request).await.expect("prune");
    }
}

/// `sqlfluff parse --dialect redshift` of `sql`: `Ok` when every statement parses, else its
/// report.
fn sqlfluff_parse(sql: &str) -> Result<(), String> {
    let sqlfluff = std::env::var("TEST_INGEST_SQLFLUFF").unwrap_or_else(|_| {
        panic!("TEST_INGEST_SQLFLUFF is not set: run the tests with scripts/test.sh, which installs sqlfluff")
    });
    let file = std::env::temp_dir().join(format!("{}.sql", unique_name("redshift-grammar")));
    std::fs::write(&file, sql).expect("write the statements");
    let output = std::process::Command::new(&sqlfluff)
        .args(["parse", "--dialect", "redshift", "--templater", "raw"])
        .arg(&file)
        .output()
        .unwrap_or_else(|err| panic!("run {sqlfluff}: {err}"));
    let _ = std::fs::remove_file(&file);
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() && !report.to_ascii_lowercase().contains("unparsable") {
        Ok(())
    } else {
        Err(report)
    }
}

#[tokio::test]
async fn every_statement_of_the_redshift_sink_is_redshift_sql() {
    let peer = RedshiftPeer::start().await;
    let schemas = TestSchemas::new();
    let warehouse = peer.connect(&schemas.platform).await;
    run_every_statement(&warehouse, &schemas).await;

    // The type matrix came through Parquet and COPY intact.
    let sql = format!(
        "SELECT concat_ws('|', id, small, medium, single, double, flag, label, day, at, at_utc AT TIME ZONE 'UTC', amount) FROM {}.kinds ORDER BY id",
        schemas.sales
    );
    let stored: Vec<String> = test_support::pg_client()
        .await
        .query(&sql, &[])
        .await
        .expect("rows")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(
        stored,
        [
            "2",
            "9223372036854775807|-32768|2147483647|0.5|-1.25e+300|t|ünïcode 'quoted' \"x\"|2026-11-24|2026-11-29 10:00:00.123456|2026-11-29 10:00:00.123456|-9999999999.99"
        ]
    );

    // The widening reached the table.
    let widened: i32 = test_support::pg_client()
        .await
        .query_one(
            "SELECT character_maximum_length FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'kinds' AND column_name = 'label'",
            &[&schemas.sales],
        )
        .await
        .expect("label")
        .get(0);
    assert_eq!(widened, 1000);

    let mut statements = peer.standin.statements();
    assert!(
        statements.len() > 20,
        "the sink ran {} statements",
        statements.len()
    );
    let largest = statements.iter().map(|s| s.bytes).max().unwrap_or_default();
    assert!(
        largest <= MAX_STATEMENT_BYTES,
        "a statement of {largest} bytes"
    );
    statements.sort_by(|a, b| a.sql.cmp(&b.sql));
    statements.dedup_by(|a, b| a.sql == b.sql);
    let mut script = String::new();
    for statement in statements.iter().filter(|s| !s.sql.trim().is_empty()) {
        let denied = violations(&statement.sql);
        assert!(denied.is_empty(), "{denied:?} in {}", statement.sql);
        script.push_str(statement.sql.trim().trim_end_matches(';'));
        script.push_str(";\n");
    }
    if let Err(report) = sqlfluff_parse(&script) {
        panic!("sqlfluff (Redshift dialect) cannot parse the sink's SQL:\n{report}\n{script}");
    }
}

/// The gate fails what Redshift would refuse: sqlfluff reports PostgreSQL's upsert as
/// unparsable, and the deny-list names each PostgreSQL-only form sqlfluff lets through.
#[test]
fn the_gate_fails_statements_redshift_refuses() {
    let upsert = "INSERT INTO t (a) VALUES (1) ON CONFLICT (a) DO NOTHING;\n";
    assert!(
        sqlfluff_parse(upsert).is_err(),
        "sqlfluff accepted ON CONFLICT"
    );
    let denied = [
        "INSERT INTO t (a) VALUES (1) ON CONFLICT (a) DO NOTHING",
        "INSERT INTO t (a) VALUES (1) RETURNING a",
        "SELECT k FROM l WHERE k = ANY($1)",
        "SELECT k FROM unnest($1::text[]) AS k",
        "SELECT pg_advisory_xact_lock(1)",
        "TRUNCATE t",
        "CREATE UNIQUE INDEX i ON t (a)",
        "CREATE TABLE t (\"note\" text NOT NULL)",
        "MERGE INTO sales.orders AS t USING src ON t.id = src.id WHEN MATCHED THEN DELETE",
        "MERGE INTO \"sales\".\"orders\" USING (SELECT 1 AS id) AS s ON \"sales\".\"orders\".id = s.id WHEN MATCHED THEN DELETE",
        "SELECT * FROM t FOR UPDATE",
        "ALTER TABLE t ALTER COLUMN \"a\" TYPE BIGINT",
    ];
    for sql in denied {
        assert!(!violations(sql).is_empty(), "not denied: {sql}");
    }
    // Names and values that only look like those forms are not.
    assert!(violations("INSERT INTO \"on conflict\" (\"returning\") VALUES ('ANY(')").is_empty());
    assert!(violations("CREATE TABLE t (\"text\" VARCHAR(65535))").is_empty());
    assert!(violations("ALTER TABLE t ALTER COLUMN \"type\" TYPE VARCHAR(300)").is_empty());
}

/// Redshift alters a column's type only outside a transaction block; so does the stand-in.
#[tokio::test]
async fn the_stand_in_alters_a_column_type_only_outside_a_transaction() {
    let peer = RedshiftPeer::start().await;
    let (client, connection) = tokio_postgres::connect(peer.standin.url(), tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let table = format!("public.{}", unique_name("widen").replace('-', "_"));
    client
        .batch_execute(&format!("CREATE TABLE {table} (\"label\" VARCHAR(10))"))
        .await
        .expect("create");
    let alter = format!("ALTER TABLE {table} ALTER COLUMN \"label\" TYPE VARCHAR(20)");
    // In one query with its BEGIN, or after a BEGIN of its own.
    for (before, sql) in [
        ("", format!("BEGIN; {alter}; COMMIT")),
        ("BEGIN", alter.clone()),
    ] {
        if !before.is_empty() {
            client.batch_execute(before).await.expect("begin");
        }
        let inside = client
            .batch_execute(&sql)
            .await
            .expect_err("refused in a transaction block");
        assert!(
            format!("{inside:?}").contains("cannot run inside a transaction block"),
            "{inside:?}"
        );
        client.batch_execute("ROLLBACK").await.expect("rollback");
    }
    client.batch_execute(&alter).await.expect("outside a block");
    client
        .batch_execute(&format!("DROP TABLE {table}"))
        .await
        .expect("drop");
}

/// The SQL an operator runs on a real cluster (`infra/redshift-check/check.sql`) is
/// Redshift SQL too.
#[test]
fn the_real_cluster_check_is_redshift_sql() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../infra/redshift-check/check.sql"
    );
    let sql = std::fs::read_to_string(path).expect("check.sql");
    assert!(violations(&sql).is_empty(), "{:?}", violations(&sql));
    if let Err(report) = sqlfluff_parse(&sql) {
        panic!("sqlfluff (Redshift dialect) cannot parse check.sql:\n{report}");
    }
}
