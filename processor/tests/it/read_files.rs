//! Reading file work items: CSV, JSON lines and Parquet, plain, gzip and zstd, with a
//! defined outcome for every kind of bad input.

use std::sync::Arc;

use datafusion::arrow::array::{Array, Decimal128Array, Float64Array, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload};
use processor::pipeline::read::{ReadError, read_all, row_count};
use processor::warehouse::Reject;
use shared::catalog::{Catalog, Compression, Dataset, FileFormat};
use shared::envelope::FileItem;
use shared::error::Classify;

use test_support::EXAMPLE_CATALOG as CATALOG;
use test_support::gzip;

fn dataset(name: &str) -> Dataset {
    Catalog::from_toml(CATALOG, "example")
        .expect("valid")
        .get(name)
        .expect("present")
        .clone()
}

async fn put(store: &InMemory, key: &str, bytes: Vec<u8>) -> FileItem {
    let size = bytes.len() as u64;
    let stored = store
        .put(
            &ObjectPath::parse(key).expect("valid path"),
            PutPayload::from(bytes),
        )
        .await
        .expect("put");
    FileItem {
        dataset: "test".into(),
        bucket: "landing".into(),
        key: key.into(),
        version_id: None,
        // Quoted, as ListObjectsV2 reports entity tags.
        etag: format!(
            "\"{}\"",
            stored.e_tag.expect("the store reports entity tags")
        ),
        size,
        range: None,
        part: None,
        format: FileFormat::Csv,
        compression: Compression::from_key(key),
        created_at_ms: None,
    }
}

fn int_column(batches: &[RecordBatch], index: usize) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            let array = b
                .column(index)
                .as_any()
                .downcast_ref::<Int64Array>()
                .expect("int64");
            array.values().to_vec()
        })
        .collect()
}

fn string_column(batches: &[RecordBatch], name: &str) -> Vec<Option<String>> {
    batches
        .iter()
        .flat_map(|b| {
            let index = b.schema().index_of(name).expect("column");
            let array = b
                .column(index)
                .as_any()
                .downcast_ref::<StringArray>()
                .expect("text")
                .clone();
            (0..array.len()).map(move |i| array.is_valid(i).then(|| array.value(i).to_owned()))
        })
        .collect()
}

fn reasons(rejects: &[Reject]) -> Vec<(Option<u64>, String)> {
    rejects
        .iter()
        .map(|r| (r.row_number, r.reason.clone()))
        .collect()
}

const CUSTOMERS_CSV: &str = "\u{feff}customer_id,full_name,email,country,signup_date,updated_at,extra\r\n\
1,\"Doe, Jane\",jane@example.com,FR,2024-01-02,2024-01-02T10:00:00Z,x\r\n\
2,\"Multi\nLine\",m@example.com,DE,2024-01-03,2024-01-03 11:00:00,y\r\n\
3,Ragged,r@example.com\r\n\
four,Bad Id,b@example.com,US,2024-01-04,2024-01-04T00:00:00Z,z\r\n\
5,Bad Date,d@example.com,US,2024-02-30,,z\r\n\
6,Good,g@example.com,,,,\r\n";

#[tokio::test]
async fn csv_rows_load_and_bad_rows_are_rejected_with_reasons_and_raw_text() {
    let store = InMemory::new();
    let item = put(
        &store,
        "landing/customers/a b+ü.csv",
        CUSTOMERS_CSV.as_bytes().to_vec(),
    )
    .await;
    let (batches, rejects) = read_all(Arc::new(store), item, dataset("customers"))
        .await
        .expect("reads");
    assert_eq!(int_column(&batches, 0), [1, 2, 6]);
    assert_eq!(
        string_column(&batches, "full_name"),
        [
            Some("Doe, Jane".to_owned()),
            Some("Multi\nLine".to_owned()),
            Some("Good".to_owned())
        ]
    );
    assert_eq!(
        reasons(&rejects),
        [
            (Some(4), "expected 7 fields, found 3".to_owned()),
            (
                Some(5),
                "column customer_id: \"four\" is not a valid int64".to_owned()
            ),
            (
                Some(6),
                "column signup_date: \"2024-02-30\" is not a valid date".to_owned()
            ),
        ]
    );
    assert_eq!(rejects[0].raw.as_deref(), Some("3,Ragged,r@example.com"));
    // Lineage: the object, its entity tag without quotes, and each row's byte offset.
    assert_eq!(
        string_column(&batches, "_ingest_source")[0].as_deref(),
        Some("s3://landing/landing/customers/a b+ü.csv")
    );
    assert_eq!(
        string_column(&batches, "_ingest_partition")[0].as_deref(),
        Some("0"),
        "the in-memory store's first entity tag, without the item's quotes"
    );
    // With CRLF line ends the CSV parser places a row at the "\n" of the previous line end:
    // one byte early, the same for every read of the same bytes, so still a stable identity.
    let offsets = string_column(&batches, "_ingest_offset");
    let first_row_offset = CUSTOMERS_CSV.find("1,\"Doe").expect("row 1") - 1;
    let sixth_row_offset = CUSTOMERS_CSV.find("6,Good").expect("row 6") - 1;
    assert_eq!(offsets[0], Some(first_row_offset.to_string()));
    assert_eq!(offsets[2], Some(sixth_row_offset.to_string()));
}

#[tokio::test]
async fn gzip_and_zstd_read_like_plain_and_corrupt_data_is_a_permanent_error() {
    let store = Arc::new(InMemory::new());
    let plain = put(
        &store,
        "landing/customers/p.csv",
        CUSTOMERS_CSV.as_bytes().to_vec(),
    )
    .await;
    let gz = put(
        &store,
        "landing/customers/p.csv.gz",
        gzip(CUSTOMERS_CSV.as_bytes()),
    )
    .await;
    let zst = put(
        &store,
        "landing/customers/p.csv.zst",
        zstd::encode_all(CUSTOMERS_CSV.as_bytes(), 3).expect("zstd"),
    )
    .await;
    let (expected, expected_rejects) = read_all(store.clone(), plain, dataset("customers"))
        .await
        .expect("plain");
    for item in [gz, zst] {
        let (batches, rejects) = read_all(store.clone(), item, dataset("customers"))
            .await
            .expect("compressed");
        assert_eq!(int_column(&batches, 0), int_column(&expected, 0));
        assert_eq!(
            string_column(&batches, "_ingest_offset"),
            string_column(&expected, "_ingest_offset")
        );
        assert_eq!(reasons(&rejects), reasons(&expected_rejects));
    }

    let whole = gzip(CUSTOMERS_CSV.as_bytes());
    let truncated = put(
        &store,
        "landing/customers/t.csv.gz",
        whole[..whole.len() / 2].to_vec(),
    )
    .await;
    let err = read_all(store.clone(), truncated, dataset("customers"))
        .await
        .expect_err("truncated gzip");
    assert!(
        matches!(
            err,
            ReadError::Corrupt {
                compression: "gzip",
                ..
            }
        ),
        "{err}"
    );
    assert!(!err.is_retryable());

    let garbage = put(
        &store,
        "landing/customers/g.csv.zst",
        b"definitely not zstd".to_vec(),
    )
    .await;
    let err = read_all(store.clone(), garbage, dataset("customers"))
        .await
        .expect_err("garbage zstd");
    assert!(
        matches!(
            err,
            ReadError::Corrupt {
                compression: "zstd",
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn empty_files_missing_columns_and_missing_objects_have_defined_outcomes() {
    let store = Arc::new(InMemory::new());
    let empty = put(&store, "landing/customers/empty.csv", Vec::new()).await;
    let (batches, rejects) = read_all(store.clone(), empty, dataset("customers"))
        .await
        .expect("empty file");
    assert_eq!((row_count(&batches), rejects.len()), (0, 0));

    let header_only = put(
        &store,
        "landing/customers/h.csv",
        b"customer_id,full_name,email,country,signup_date,updated_at\n".to_vec(),
    )
    .await;
    let (batches, _) = read_all(store.clone(), header_only, dataset("customers"))
        .await
        .expect("header only");
    assert_eq!(row_count(&batches), 0);

    let wrong = put(
        &store,
        "landing/customers/w.csv",
        b"id;name\n1;x\n".to_vec(),
    )
    .await;
    let err = read_all(store.clone(), wrong, dataset("customers"))
        .await
        .expect_err("wrong header");
    assert!(
        shared::error::report(&err).contains(
            "no header name is a column of the catalog; the header has id;name. If the file has no header row, set csv = { header = false }"
        ),
        "{err}"
    );
    assert!(!err.is_retryable());

    let mut missing = put(&store, "landing/customers/gone.csv", Vec::new()).await;
    missing.key = "landing/customers/never-uploaded.csv".into();
    let err = read_all(store.clone(), missing, dataset("customers"))
        .await
        .expect_err("missing object");
    assert!(
        matches!(
            err,
            ReadError::Object {
                retryable: false,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn json_lines_load_and_bad_lines_are_rejected() {
    let store = Arc::new(InMemory::new());
    let text = concat!(
        "{\"order_id\": 1, \"customer_id\": 7, \"ordered_at\": \"2024-06-01T00:00:00Z\", \"status\": \"PLACED\", \"currency\": \"eur\", \"total_amount\": 12.5}\n",
        "\n",
        "{\"order_id\": 2, \"customer_id\": 7, \"ordered_at\": \"2024-06-01T00:00:00Z\", \"total_amount\": \"1e400\"}\r\n",
        "{not json}\n",
        "[1, 2]\n",
        "{\"order_id\": {\"nested\": true}, \"customer_id\": 1, \"ordered_at\": \"2024-06-01T00:00:00Z\"}\n",
        "{\"order_id\": 3, \"customer_id\": 8, \"ordered_at\": \"2024-06-02T00:00:00+02:00\", \"unknown\": 1}"
    );
    let mut item = put(
        &store,
        "landing/orders/2024-06-01.jsonl",
        text.as_bytes().to_vec(),
    )
    .await;
    item.format = FileFormat::Jsonl;
    let (batches, rejects) = read_all(store.clone(), item, dataset("orders"))
        .await
        .expect("reads");
    assert_eq!(int_column(&batches, 0), [1, 3]);
    let amounts = batches[0]
        .column(5)
        .as_any()
        .downcast_ref::<Decimal128Array>()
        .expect("decimal");
    assert_eq!(amounts.value(0), 1250);
    let got = reasons(&rejects);
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!(
        got[0],
        (
            Some(3),
            "column total_amount: \"1e400\" is not a valid decimal(12,2)".to_owned()
        )
    );
    assert_eq!(got[1].0, Some(4));
    assert!(
        got[1].1.starts_with("not valid JSON: key must be a string"),
        "{got:?}"
    );
    assert_eq!(
        got[2],
        (Some(5), "expected a JSON object, found an array".to_owned())
    );
    assert_eq!(
        got[3],
        (
            Some(6),
            "column order_id: expected int64, found an object".to_owned()
        )
    );
    assert_eq!(
        string_column(&batches, "_ingest_offset")[1],
        Some(text.rfind("{\"order_id\": 3").expect("line").to_string())
    );
}

#[tokio::test]
async fn parquet_is_read_through_datafusion_and_conformed_to_the_catalog() {
    let schema = Arc::new(Schema::new(vec![
        Field::new("order_id", DataType::Int64, false),
        Field::new("payment_id", DataType::Utf8, false),
        Field::new("amount", DataType::Float64, true),
        Field::new("ignored", DataType::Utf8, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from(vec![10, 11, 12])),
            Arc::new(StringArray::from(vec!["p1", "p2", "p3"])),
            Arc::new(Float64Array::from(vec![Some(9.99), None, Some(1e300)])),
            Arc::new(StringArray::from(vec![Some("x"), None, None])),
        ],
    )
    .expect("batch");
    let mut bytes = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut bytes, schema, None).expect("writer");
    writer.write(&batch).expect("write");
    writer.close().expect("close");

    let store = Arc::new(InMemory::new());
    let mut item = put(&store, "landing/payments/p.parquet", bytes).await;
    item.format = FileFormat::Parquet;
    let (batches, rejects) = read_all(store.clone(), item.clone(), dataset("payments"))
        .await
        .expect("reads");
    assert_eq!(
        string_column(&batches, "payment_id"),
        [Some("p1".to_owned()), Some("p2".to_owned())]
    );
    assert_eq!(
        reasons(&rejects),
        [(
            Some(3),
            "column amount: \"1e300\" is not a valid decimal(12,2)".to_owned()
        )]
    );
    assert_eq!(
        string_column(&batches, "_ingest_offset"),
        [Some("0".to_owned()), Some("1".to_owned())]
    );

    // A Parquet file of another shape: a clear, permanent error naming what is missing.
    let other = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
    let mut bytes = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut bytes, other.clone(), None).expect("writer");
    writer
        .write(
            &RecordBatch::try_new(other, vec![Arc::new(Int64Array::from(vec![1]))]).expect("batch"),
        )
        .expect("write");
    writer.close().expect("close");
    let mut wrong = put(&store, "landing/payments/wrong.parquet", bytes).await;
    wrong.format = FileFormat::Parquet;
    let err = read_all(store.clone(), wrong, dataset("payments"))
        .await
        .expect_err("other schema");
    assert!(
        shared::error::report(&err)
            .contains("lacks required column(s) payment_id, order_id; it has id"),
        "{err}"
    );
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn an_object_overwritten_since_its_event_is_not_read_under_the_old_entity_tag() {
    let store = InMemory::new();
    let item = put(
        &store,
        "landing/customers/c.csv",
        CUSTOMERS_CSV.as_bytes().to_vec(),
    )
    .await;
    // New content under the same key: the item still names the old entity tag.
    put(
        &store,
        "landing/customers/c.csv",
        b"customer_id\n99\n".to_vec(),
    )
    .await;
    let err = read_all(Arc::new(store), item, dataset("customers"))
        .await
        .expect_err("the content changed");
    assert!(!err.is_retryable(), "{err}");
    assert!(
        shared::error::report(&err).contains("overwritten since its event"),
        "{err}"
    );
}

/// A file that drifts from the catalog: optional columns it lacks load as NULL, columns
/// the catalog does not name are ignored, or fail the file where the dataset says
/// `unknown_columns = "reject"`.
#[tokio::test]
async fn csv_headers_that_drift_from_the_catalog_have_a_defined_outcome() {
    let store = Arc::new(InMemory::new());
    let drifted = put(
        &store,
        "landing/customers/drift.csv",
        b"customer_id,full_name,loyalty_tier\n1,Ada,gold\n2,Grace,silver\n".to_vec(),
    )
    .await;
    let (batches, rejects) = read_all(store.clone(), drifted.clone(), dataset("customers"))
        .await
        .expect("optional columns may be missing");
    assert!(rejects.is_empty(), "{rejects:?}");
    assert_eq!(int_column(&batches, 0), [1, 2]);
    assert_eq!(string_column(&batches, "email"), [None, None]);
    assert_eq!(
        string_column(&batches, "full_name"),
        [Some("Ada".to_owned()), Some("Grace".to_owned())]
    );
    let strict = {
        let text = CATALOG.replace(
            "key = [\"customer_id\"]",
            "key = [\"customer_id\"]\nunknown_columns = \"reject\"",
        );
        Catalog::from_toml(&text, "strict")
            .expect("valid")
            .get("customers")
            .expect("present")
            .clone()
    };
    let err = read_all(store.clone(), drifted, strict)
        .await
        .expect_err("an unknown column under reject");
    assert!(
        shared::error::report(&err)
            .contains("the header has column(s) the catalog does not name: loyalty_tier"),
        "{err}"
    );
    // Header names are compared trimmed and in lower case.
    let shouted = put(
        &store,
        "landing/customers/case.csv",
        b" Customer_ID ,Email\n1,a@x\n".to_vec(),
    )
    .await;
    let (batches, _) = read_all(store.clone(), shouted, dataset("customers"))
        .await
        .expect("names in another case");
    assert_eq!(string_column(&batches, "email"), [Some("a@x".to_owned())]);
}
