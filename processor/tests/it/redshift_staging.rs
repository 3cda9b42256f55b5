//! The Redshift sink's staging against the emulator's S3: rows become Parquet files (as
//! many as configured, in the column order and types Redshift's COPY expects) plus a
//! manifest naming exactly those files, and nothing is left behind after cleanup or a
//! failed read. Redshift itself cannot run here; its SQL is unit-tested as text in
//! `warehouse::redshift`.

use std::sync::Arc;

use crate::support::redshift::staging_store;
use async_trait::async_trait;
use bytes::Bytes;
use datafusion::arrow::array::{
    Array, ArrayRef, Int8Array, Int64Array, StringArray, TimestampNanosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use processor::pipeline::lineage;
use processor::warehouse::redshift::ParquetStager;
use processor::warehouse::{ItemRows, ItemSource, Reject, RowSource, SourceError, WarehouseError};
use shared::envelope::{FileItem, WorkItem};

fn load_schema() -> SchemaRef {
    let mut fields = vec![
        Field::new("order_id", DataType::Int64, false),
        Field::new("status", DataType::Utf8, true),
        Field::new("priority", DataType::Int8, true),
        Field::new(
            "updated_at",
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            true,
        ),
    ];
    fields.extend(lineage::fields());
    Arc::new(Schema::new(fields))
}

/// `rows` rows numbered from `first`.
fn batch(first: i64, rows: i64) -> RecordBatch {
    let ids = first..first + rows;
    let n = rows as usize;
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(ids.clone())),
        Arc::new(StringArray::from_iter(
            ids.clone()
                .map(|id| (id % 7 != 0).then(|| format!("status {id}"))),
        )),
        Arc::new(Int8Array::from_iter_values(
            ids.clone().map(|id| (id % 100) as i8),
        )),
        Arc::new(
            TimestampNanosecondArray::from_iter_values(
                ids.clone().map(|id| 1_700_000_000_000_000_000 + id * 1_000),
            )
            .with_timezone("UTC"),
        ),
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
            "s3://landing/orders.csv",
            n,
        ))),
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
            "\"etag\"", n,
        ))),
        Arc::new(StringArray::from_iter_values(
            ids.clone().map(|id| (id * 40).to_string()),
        )),
        Arc::new(Int64Array::from_iter_values(std::iter::repeat_n(0, n))),
    ];
    RecordBatch::try_new(load_schema(), columns).expect("batch")
}

fn key(name: &str) -> shared::envelope::IdempotencyKey {
    WorkItem::File(FileItem {
        dataset: "orders".into(),
        bucket: "landing".into(),
        key: name.into(),
        version_id: None,
        etag: "\"etag\"".into(),
        size: 1,
        range: None,
        part: None,
        format: shared::catalog::FileFormat::Csv,
        compression: shared::catalog::Compression::None,
        created_at_ms: None,
    })
    .idempotency_key()
}

fn item(name: &str, batches: Vec<RecordBatch>, rejects: Vec<Reject>) -> ItemSource {
    ItemRows {
        key: key(name),
        source: format!("s3://landing/{name}"),
        batches,
        rejects,
    }
    .into_source()
}

async fn keys_under(store: &Arc<dyn ObjectStore>, folder: &Path) -> Vec<String> {
    let objects: Vec<_> = store.list(Some(folder)).try_collect().await.expect("list");
    let mut keys: Vec<String> = objects.iter().map(|o| o.location.to_string()).collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn rows_are_staged_as_parquet_files_in_parallel_with_an_exact_manifest() {
    let (store, bucket) = staging_store().await;
    // Every byte counts as a full file here, so each batch opens one more, up to three.
    let stager = ParquetStager::new(Arc::clone(&store), &bucket, "ingest-staging/", 3)
        .with_min_file_bytes(1);
    let reject = Reject {
        row_number: Some(7),
        raw: Some("x,y".into()),
        reason: "bad row".into(),
    };
    // Seven batches over two items: round robin gives files of 3, 2 and 2 batches.
    let mut items = vec![
        item(
            "a.csv",
            (0..5).map(|i| batch(i * 100, 100)).collect(),
            Vec::new(),
        ),
        item(
            "b.csv",
            vec![batch(500, 50), batch(550, 50)],
            vec![reject.clone(), reject],
        ),
    ];
    let (staged, drained) = stager
        .stage("orders", &load_schema(), &mut items, ("load-1", &[]))
        .await
        .expect("staged");
    let staged = staged.expect("there were rows");
    assert_eq!(drained.rows_per_item, vec![500, 100]);
    assert_eq!(
        drained
            .rejects_per_item
            .iter()
            .map(Vec::len)
            .collect::<Vec<_>>(),
        vec![0, 2]
    );
    assert_eq!(staged.rows, 600);
    assert_eq!(staged.files.len(), 3, "{:?}", staged.files);
    assert_eq!(staged.folder.as_ref(), "ingest-staging/orders/load-1");
    assert_eq!(
        keys_under(&store, &staged.folder).await,
        [
            "ingest-staging/orders/load-1/manifest.json",
            "ingest-staging/orders/load-1/part-00000.parquet",
            "ingest-staging/orders/load-1/part-00001.parquet",
            "ingest-staging/orders/load-1/part-00002.parquet",
        ]
    );

    // The manifest names exactly the files, each mandatory, with its real size.
    let manifest: serde_json::Value = serde_json::from_slice(
        &store
            .get(&staged.manifest)
            .await
            .expect("manifest")
            .bytes()
            .await
            .expect("read"),
    )
    .expect("manifest is JSON");
    let entries = manifest["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 3);
    for (entry, (key, size)) in entries.iter().zip(&staged.files) {
        assert_eq!(entry["url"], format!("s3://{bucket}/{key}"));
        assert_eq!(entry["mandatory"], true);
        let head = store.head(key).await.expect("staged file exists");
        assert_eq!(entry["meta"]["content_length"], head.size);
        assert_eq!(head.size, *size);
    }

    // The files hold every row once, in Redshift-friendly types, the sequence last.
    let mut sequences = Vec::new();
    let mut ids = Vec::new();
    let mut rows_per_file = Vec::new();
    for (key, _) in &staged.files {
        let bytes: Bytes = store
            .get(key)
            .await
            .expect("get")
            .bytes()
            .await
            .expect("read");
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .expect("valid Parquet")
            .build()
            .expect("reader");
        let mut file_rows = 0;
        for batch in reader {
            let batch = batch.expect("batch");
            let schema = batch.schema();
            let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            assert_eq!(
                names,
                [
                    "order_id",
                    "status",
                    "priority",
                    "updated_at",
                    "_ingest_source",
                    "_ingest_partition",
                    "_ingest_offset",
                    "_ingest_sub_offset",
                    "_ingest_seq"
                ]
            );
            assert_eq!(
                schema.field(2).data_type(),
                &DataType::Int16,
                "no 8-bit ints"
            );
            assert_eq!(
                schema.field(3).data_type(),
                &DataType::Timestamp(TimeUnit::Microsecond, None),
                "microsecond timestamps, UTC wall-clock time"
            );
            file_rows += batch.num_rows();
            let id_column = batch
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .expect("ids");
            ids.extend(id_column.values().iter().copied());
            let status = batch.column(1);
            assert!(status.null_count() > 0, "nulls survive");
            let sequence = batch
                .column(8)
                .as_any()
                .downcast_ref::<Int64Array>()
                .expect("seq");
            sequences.extend(sequence.values().iter().copied());
        }
        rows_per_file.push(file_rows);
    }
    assert_eq!(
        rows_per_file,
        [250, 200, 150],
        "batches go round robin over the files"
    );
    ids.sort_unstable();
    assert_eq!(ids, (0..600).collect::<Vec<i64>>(), "every row once");
    sequences.sort_unstable();
    assert_eq!(
        sequences,
        (0..600).collect::<Vec<i64>>(),
        "one sequence per row"
    );

    stager.remove_folder(&staged.folder).await;
    assert!(
        keys_under(&store, &staged.folder).await.is_empty(),
        "cleaned up"
    );
}

/// The file count follows the bytes: a small load is one file (many tiny files only slow
/// `COPY` down), a large one spreads over all the files the cluster's slices can read.
#[tokio::test]
async fn a_small_load_is_one_file_and_a_large_one_spreads_over_all() {
    let (store, bucket) = staging_store().await;
    let stage = |stager: ParquetStager, load_id: &'static str, batches: Vec<RecordBatch>| {
        let mut items = vec![item("a.csv", batches, Vec::new())];
        async move {
            let (staged, _) = stager
                .stage("orders", &load_schema(), &mut items, (load_id, &[]))
                .await
                .expect("staged");
            staged.expect("there were rows").files.len()
        }
    };
    let small: Vec<RecordBatch> = (0..7).map(|i| batch(i * 100, 100)).collect();
    let stager = ParquetStager::new(Arc::clone(&store), &bucket, "s/", 4);
    assert_eq!(stage(stager, "small", small).await, 1);

    let large: Vec<RecordBatch> = (0..40).map(|i| batch(i * 1000, 1000)).collect();
    let stager =
        ParquetStager::new(Arc::clone(&store), &bucket, "s/", 4).with_min_file_bytes(8 * 1024);
    assert_eq!(stage(stager, "large", large).await, 4);
}

#[tokio::test]
async fn a_load_without_rows_stages_nothing() {
    let (store, bucket) = staging_store().await;
    let stager = ParquetStager::new(Arc::clone(&store), &bucket, "", 4);
    let reject = Reject {
        row_number: Some(1),
        raw: None,
        reason: "every row was bad".into(),
    };
    let mut items = vec![item("empty.csv", Vec::new(), vec![reject])];
    let (staged, drained) = stager
        .stage("orders", &load_schema(), &mut items, ("load-2", &[]))
        .await
        .expect("staged");
    assert!(staged.is_none());
    assert_eq!(drained.rows_per_item, vec![0]);
    assert_eq!(drained.rejects_per_item[0].len(), 1);
    assert!(keys_under(&store, &Path::from("orders")).await.is_empty());
}

/// Yields one batch, then fails like a read that lost its connection.
#[derive(Debug)]
struct FailingRows {
    sent: bool,
}

#[async_trait]
impl RowSource for FailingRows {
    async fn next_batch(&mut self) -> Result<Option<RecordBatch>, SourceError> {
        if self.sent {
            return Err(SourceError::from(WarehouseError::Schema {
                dataset: "orders".into(),
                reason: "the source broke".into(),
            }));
        }
        self.sent = true;
        Ok(Some(batch(0, 10)))
    }

    fn take_rejects(&mut self) -> Vec<Reject> {
        Vec::new()
    }
}

#[tokio::test]
async fn a_failed_read_leaves_no_staged_files() {
    let (store, bucket) = staging_store().await;
    let stager = ParquetStager::new(Arc::clone(&store), &bucket, "staging/", 2);
    let mut items = vec![
        item("good.csv", vec![batch(100, 10), batch(110, 10)], Vec::new()),
        ItemSource {
            key: key("broken.csv"),
            source: "s3://landing/broken.csv".into(),
            rows: Box::new(FailingRows { sent: false }),
            file: None,
            stream: None,
        },
    ];
    let err = stager
        .stage("orders", &load_schema(), &mut items, ("load-3", &[]))
        .await
        .expect_err("the read failed");
    assert!(
        shared::error::report(&err).contains("the source broke"),
        "{err}"
    );
    assert!(
        keys_under(&store, &Path::from("staging/orders/load-3"))
            .await
            .is_empty(),
        "nothing left behind"
    );
}

/// The Parquet types of the staged files, pinned from the footer: the forms Redshift's
/// columnar COPY reads (a timestamp with a zone staged as UTC wall-clock time in
/// microseconds, the merge converting it back; decimals as INT32, INT64 or fixed-length
/// bytes by precision; no 8-bit integers). `infra/redshift-check/` checks them on a cluster.
#[tokio::test]
async fn staged_files_carry_the_parquet_types_redshift_reads() {
    use datafusion::arrow::array::{Decimal128Array, TimestampMicrosecondArray};
    use datafusion::parquet::basic::Type as PhysicalType;
    let (store, bucket) = staging_store().await;
    let stager = ParquetStager::new(Arc::clone(&store), &bucket, "ingest-staging/", 1);
    let decimal = |value: i128, precision: u8, scale: i8| -> ArrayRef {
        Arc::new(
            Decimal128Array::from(vec![value])
                .with_precision_and_scale(precision, scale)
                .expect("decimal"),
        )
    };
    let mut fields = vec![
        Field::new("price", DataType::Decimal128(9, 2), true),
        Field::new("amount", DataType::Decimal128(18, 4), true),
        Field::new("huge", DataType::Decimal128(38, 10), true),
        Field::new(
            "zoned",
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            true,
        ),
        Field::new(
            "local",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            true,
        ),
        Field::new("tiny", DataType::Int8, true),
    ];
    fields.extend(lineage::fields());
    let schema: SchemaRef = Arc::new(Schema::new(fields));
    let columns: Vec<ArrayRef> = vec![
        decimal(12_345, 9, 2),
        decimal(-12_345_678, 18, 4),
        decimal(10_i128.pow(37), 38, 10),
        Arc::new(
            TimestampNanosecondArray::from(vec![1_700_000_000_123_456_000]).with_timezone("UTC"),
        ),
        Arc::new(TimestampMicrosecondArray::from(vec![1_700_000_000_123_456])),
        Arc::new(Int8Array::from(vec![-7])),
        Arc::new(StringArray::from(vec!["s3://landing/types.csv"])),
        Arc::new(StringArray::from(vec!["\"etag\""])),
        Arc::new(StringArray::from(vec!["0"])),
        Arc::new(Int64Array::from(vec![0])),
    ];
    let batch = RecordBatch::try_new(Arc::clone(&schema), columns).expect("batch");
    let mut items = vec![item("types.csv", vec![batch], Vec::new())];
    let (staged, _) = stager
        .stage("types", &schema, &mut items, ("load-types", &[]))
        .await
        .expect("stage");
    let staged = staged.expect("one file");
    let bytes: Bytes = store
        .get(&staged.files[0].0)
        .await
        .expect("get")
        .bytes()
        .await
        .expect("read");
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).expect("valid Parquet");
    let footer = builder.metadata().file_metadata().schema_descr();
    let column = |i: usize| footer.column(i);
    let decimal_layout = |i: usize| {
        let c = column(i);
        (c.physical_type(), c.type_precision(), c.type_scale())
    };
    assert_eq!(decimal_layout(0), (PhysicalType::INT32, 9, 2));
    assert_eq!(decimal_layout(1), (PhysicalType::INT64, 18, 4));
    assert_eq!(
        decimal_layout(2),
        (PhysicalType::FIXED_LEN_BYTE_ARRAY, 38, 10)
    );
    assert_eq!(column(2).type_length(), 16);
    for i in [3, 4] {
        assert_eq!(column(i).physical_type(), PhysicalType::INT64);
        let logical = format!("{:?}", column(i).logical_type_ref());
        assert!(
            logical.contains("is_adjusted_to_u_t_c: false") && logical.contains("MICROS"),
            "column {i}: {logical}"
        );
    }
    assert_eq!(column(5).physical_type(), PhysicalType::INT32);
    assert!(format!("{:?}", column(5).logical_type_ref()).contains("bit_width: 16"));
    // The zoned instant is stored as its UTC wall-clock time.
    let batch = builder
        .build()
        .expect("reader")
        .next()
        .expect("a batch")
        .expect("readable");
    let zoned = batch
        .column(3)
        .as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .expect("microseconds");
    assert_eq!(zoned.value(0), 1_700_000_000_123_456);
    stager.remove_folder(&staged.folder).await;
}
