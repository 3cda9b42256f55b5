//! A large file split into parts by the ingest-batch planner and loaded part by part gives
//! exactly the rows (data and lineage) of loading it whole: no row lost or doubled at a
//! boundary. Runs against the emulator's S3 and a real PostgreSQL.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::file::properties::WriterProperties;
use ingest_batch::events::CreatedObject;
use ingest_batch::plan::Planned;
use processor::objects::S3Stores;
use processor::pipeline::Pipeline;
use processor::pipeline::lineage;
use processor::warehouse::Warehouse;
use processor::warehouse::postgres::PostgresWarehouse;
use shared::aws::load_sdk_config;
use shared::catalog::Catalog;
use shared::envelope::{FileItem, WorkItem};
use test_support::{TestSchemas, clients, create_bucket, emulator_settings};

use crate::support::platform::{ready_postgres, s3_planner};

const CATALOG: &str = r#"
[datasets.customers]
format = "csv"
target = "sales.customers"
key = ["customer_id"]
s3 = { prefix = "customers/" }
columns = [{ name = "customer_id", type = "int64", nullable = false }, { name = "name", type = "string" }, { name = "country", type = "string" }]

[datasets.events]
format = "jsonl"
target = "sales.events"
s3 = { prefix = "events/" }
columns = [{ name = "event_id", type = "int64", nullable = false }, { name = "body", type = "string" }]

[datasets.payments]
format = "parquet"
target = "sales.payments"
key = ["payment_id"]
s3 = { prefix = "payments/" }
columns = [{ name = "payment_id", type = "int64", nullable = false }, { name = "method", type = "string" }]
"#;

const PART_SIZE: u64 = 64 * 1024;

/// CSV whose quoted names hold newlines, delimiters and doubled quotes, with CRLF rows
/// mixed in, so that cut points fall inside fields unless the planner follows quoting.
fn csv_body(rows: usize) -> Vec<u8> {
    let mut body = b"customer_id,name,country\n".to_vec();
    for id in 1..=rows {
        let lines = "line\n".repeat(id % 40);
        let end = if id % 7 == 0 { "\r\n" } else { "\n" };
        body.extend(format!("{id},\"Name {id}, \"\"Jr\"\"\n{lines}\",C{}{end}", id % 13).bytes());
    }
    body
}

fn jsonl_body(rows: usize) -> Vec<u8> {
    let mut body = Vec::new();
    for id in 1..=rows {
        body.extend(
            format!(
                "{{\"event_id\":{id},\"body\":\"{}\"}}\n",
                "é".repeat(id % 50)
            )
            .bytes(),
        );
    }
    body
}

fn parquet_body(rows: usize) -> Vec<u8> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("payment_id", DataType::Int64, false),
        Field::new("method", DataType::Utf8, true),
    ]));
    let properties = WriterProperties::builder()
        .set_max_row_group_row_count(Some(1500))
        .build();
    let mut body = Vec::new();
    let mut writer =
        ArrowWriter::try_new(&mut body, Arc::clone(&schema), Some(properties)).expect("writer");
    for chunk in (1..=rows as i64).collect::<Vec<_>>().chunks(1000) {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(chunk.iter().copied())),
            Arc::new(StringArray::from_iter_values(chunk.iter().map(|id| {
                format!("card-{id}-{}", "x".repeat((*id % 30) as usize))
            }))),
        ];
        writer
            .write(&RecordBatch::try_new(Arc::clone(&schema), columns).expect("batch"))
            .expect("write");
    }
    writer.close().expect("close");
    body
}

/// Key, body, rows, target table, data columns.
type Case = (
    &'static str,
    Vec<u8>,
    usize,
    &'static str,
    &'static [&'static str],
);

struct Side {
    pipeline: Arc<Pipeline>,
    warehouse: PostgresWarehouse,
    sales: String,
}

async fn side(stores: Arc<S3Stores>) -> Side {
    let schemas = TestSchemas::new();
    let catalog =
        Arc::new(Catalog::from_toml(&schemas.retarget(CATALOG), "test").expect("catalog"));
    let pipeline = Arc::new(Pipeline::new(catalog, stores).await.expect("plans"));
    let warehouse = ready_postgres(&pipeline, &schemas.platform).await;
    Side {
        pipeline,
        warehouse,
        sales: schemas.sales,
    }
}

impl Side {
    async fn load(&self, item: &FileItem) -> u64 {
        let item = WorkItem::File(item.clone());
        let (source, dataset, schema) = self.pipeline.item_source(&item).expect("source");
        let report = self
            .warehouse
            .load(dataset, schema, vec![source])
            .await
            .unwrap_or_else(|err| panic!("loading {item:?}: {err}"));
        assert_eq!(report.rows_rejected, 0, "{report:?}");
        report.rows_staged
    }

    /// Row count and a checksum of every column but the load time.
    async fn checksum(
        &self,
        client: &tokio_postgres::Client,
        table: &str,
        columns: &[&str],
    ) -> (i64, String) {
        let mut all: Vec<String> = columns.iter().map(|c| (*c).to_owned()).collect();
        all.extend(lineage::column_names());
        let list = all.join(", ");
        let row = client
            .query_one(
                &format!(
                    "SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM (SELECT {list} FROM {}.{table}) t",
                    self.sales
                ),
                &[],
            )
            .await
            .expect("checksum");
        (row.get(0), row.get(1))
    }
}

#[tokio::test]
async fn split_parts_load_exactly_the_rows_of_the_whole_file() {
    let clients = clients().await;
    let bucket = create_bucket(&clients.s3, "split").await;
    let sdk_config = load_sdk_config(&emulator_settings()).await;
    let stores = Arc::new(S3Stores::new(&sdk_config, &emulator_settings()));
    let whole = side(Arc::clone(&stores)).await;
    let split = side(stores).await;
    let planner = s3_planner(
        &clients,
        Arc::new(Catalog::from_toml(CATALOG, "test").expect("catalog")),
        PART_SIZE,
    );
    let client = test_support::pg_client().await;

    let cases: [Case; 5] = [
        (
            "customers/all customers.csv",
            csv_body(4000),
            4000,
            "customers",
            &["customer_id", "name", "country"],
        ),
        (
            "events/2026/11/24.jsonl",
            jsonl_body(12_000),
            12_000,
            "events",
            &["event_id", "body"],
        ),
        (
            "payments/p.parquet",
            parquet_body(30_000),
            30_000,
            "payments",
            &["payment_id", "method"],
        ),
        // Keys an object path cannot hold, read by ranges through the AWS SDK.
        (
            "customers//odd/./key\twith tab.csv",
            csv_body(4000),
            4000,
            "customers",
            &["customer_id", "name", "country"],
        ),
        (
            "payments/x/../p.parquet",
            parquet_body(30_000),
            30_000,
            "payments",
            &["payment_id", "method"],
        ),
    ];
    for (key, body, rows, table, columns) in cases {
        let put = clients
            .s3
            .put_object()
            .bucket(&bucket)
            .key(key)
            .body(body.clone().into())
            .send()
            .await
            .expect("put");
        let object = CreatedObject {
            bucket: bucket.clone(),
            key: key.to_owned(),
            size: body.len() as u64,
            etag: shared::envelope::normalize_etag(put.e_tag().expect("etag")),
            version_id: None,
            event_time_ms: None,
            undecoded_key: None,
        };
        let Planned::Items(parts) = planner.plan(&object).await.expect("planned") else {
            panic!("{key} was skipped");
        };
        assert!(parts.len() >= 4, "{key}: only {} parts", parts.len());
        let mut whole_item = parts[0].clone();
        whole_item.range = None;
        whole_item.part = None;

        assert_eq!(whole.load(&whole_item).await, rows as u64, "{key} whole");
        // Parts load in reverse order, each on its own, as separate tasks would.
        let mut staged = 0;
        for part in parts.iter().rev() {
            staged += split.load(part).await;
        }
        assert_eq!(staged, rows as u64, "{key}: rows staged over all parts");
        let expected = whole.checksum(&client, table, columns).await;
        let found = split.checksum(&client, table, columns).await;
        assert_eq!(expected.0, rows as i64, "{key}");
        assert_eq!(found, expected, "{key}: split and whole loads differ");
    }
}
