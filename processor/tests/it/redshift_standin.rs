//! The Redshift stand-in itself: it reads COPY as Redshift does and refuses what Redshift
//! refuses, so the sink's tests on it can fail for Redshift's reasons.

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use test_support::redshift::copy::{accepts, parse, varchar_limit};

#[test]
fn a_columnar_copy_parses_and_other_parameters_are_refused() {
    let sql = "COPY \"_ingest_staging\" FROM 's3://b/k/manifest.json' IAM_ROLE 'arn:x' FORMAT AS PARQUET MANIFEST STATUPDATE OFF";
    let copy = parse(sql).expect("a COPY").expect("accepted");
    assert_eq!(copy.table, "\"_ingest_staging\"");
    assert_eq!(copy.from, "s3://b/k/manifest.json");
    assert!(copy.manifest);
    let refused =
        parse("COPY t FROM 's3://b/k' IAM_ROLE 'r' FORMAT AS PARQUET MAXERROR 10").expect("a COPY");
    assert!(refused.expect_err("refused").contains("MAXERROR"));
    let refused = parse("COPY t FROM 's3://b/k' IAM_ROLE 'r' FORMAT AS PARQUET TRUNCATECOLUMNS")
        .expect("a COPY");
    assert!(refused.expect_err("refused").contains("TRUNCATECOLUMNS"));
    assert!(parse("COPY t FROM STDIN (FORMAT binary)").is_none());
}

#[test]
fn types_follow_the_columnar_rules() {
    assert!(accepts("character varying(10)", &DataType::Utf8));
    assert!(!accepts("bigint", &DataType::Utf8));
    assert!(accepts("numeric(12,2)", &DataType::Decimal128(12, 2)));
    assert!(!accepts("numeric(12,2)", &DataType::Decimal128(38, 2)));
    assert!(!accepts(
        "timestamp without time zone",
        &DataType::Timestamp(TimeUnit::Nanosecond, None)
    ));
    assert_eq!(varchar_limit("character varying(65535)"), Some(65535));
}

/// One Parquet file of one string column in the emulator's S3; returns its URL.
async fn put_strings(values: &[&str]) -> String {
    use datafusion::arrow::array::StringArray;
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::parquet::arrow::ArrowWriter;
    let schema = std::sync::Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8, true)]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![std::sync::Arc::new(StringArray::from(values.to_vec()))],
    )
    .expect("batch");
    let mut bytes = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut bytes, schema, None).expect("writer");
    writer.write(&batch).expect("write");
    writer.close().expect("close");
    let bucket = test_support::create_bucket(&test_support::clients().await.s3, "standin").await;
    test_support::clients()
        .await
        .s3
        .put_object()
        .bucket(&bucket)
        .key("strings.parquet")
        .body(bytes.into())
        .send()
        .await
        .expect("put");
    format!("s3://{bucket}/strings.parquet")
}

/// The gate the sink's tests stand behind: a value longer in bytes than its `VARCHAR(n)`
/// fails the whole COPY with Redshift's catch-all code, and a file whose column count
/// differs from the table's is refused; a file that fits loads.
#[tokio::test]
async fn the_stand_in_refuses_what_redshift_refuses() {
    let standin = test_support::RedshiftStandIn::start(test_support::clients().await.s3).await;
    let (client, connection) = tokio_postgres::connect(standin.url(), tokio_postgres::NoTls)
        .await
        .expect("connect to the stand-in");
    tokio::spawn(connection);
    client
        .batch_execute("CREATE TEMPORARY TABLE t (s VARCHAR(4))")
        .await
        .expect("table");
    let copy = |url: &str| format!("COPY t FROM '{url}' IAM_ROLE 'arn:x' FORMAT AS PARQUET");

    let fits = put_strings(&["abcd", "éé"]).await;
    assert_eq!(client.execute(&copy(&fits), &[]).await.expect("COPY"), 2);

    let too_long = put_strings(&["abc", "ééé"]).await;
    let err = client
        .execute(&copy(&too_long), &[])
        .await
        .expect_err("refused");
    let db = err.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "XX000");
    assert!(
        db.message().contains("String length exceeds DDL length"),
        "{db:?}"
    );

    client
        .batch_execute("CREATE TEMPORARY TABLE two (s VARCHAR(4), n BIGINT)")
        .await
        .expect("table");
    let sql = format!("COPY two FROM '{fits}' IAM_ROLE 'arn:x' FORMAT AS PARQUET");
    let err = client.execute(&sql, &[]).await.expect_err("refused");
    let message = err
        .as_db_error()
        .expect("a server error")
        .message()
        .to_owned();
    assert!(message.contains("must match"), "{message}");
    let count = client
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .expect("count")
        .get::<_, i64>(0);
    assert_eq!(count, 2, "a refused COPY loads nothing");
}

/// Redshift's table attributes are checked and removed before PostgreSQL sees the DDL.
#[test]
fn table_attributes_are_checked_then_removed() {
    use test_support::redshift::ddl::to_postgres;
    assert_eq!(
        to_postgres("CREATE TABLE t (\"id\" BIGINT, \"day\" DATE) DISTSTYLE KEY DISTKEY(\"id\") COMPOUND SORTKEY(\"day\", \"id\")")
            .expect("valid").trim_end(),
        "CREATE TABLE t (\"id\" BIGINT, \"day\" DATE)"
    );
    assert_eq!(
        to_postgres("CREATE TEMPORARY TABLE s DISTKEY(\"id\") AS SELECT \"id\" FROM t")
            .expect("valid"),
        "CREATE TEMPORARY TABLE s  AS SELECT \"id\" FROM t"
    );
    assert_eq!(
        to_postgres("CREATE TABLE t (\"distkey\" INT) DISTSTYLE AUTO SORTKEY AUTO")
            .expect("valid")
            .trim_end(),
        "CREATE TABLE t (\"distkey\" INT)"
    );
    let missing =
        to_postgres("CREATE TABLE t (\"id\" BIGINT) DISTKEY(\"other\")").expect_err("refused");
    assert!(missing.contains("\"other\""), "{missing}");
}
