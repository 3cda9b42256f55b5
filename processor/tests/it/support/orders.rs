//! The orders rows the warehouse tests load: a load schema of (order_id, status) plus the
//! lineage columns, batches read from one shard, and their work items' idempotency keys.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use processor::pipeline::lineage;
use processor::warehouse::ItemRows;
use shared::catalog::{Catalog, Dataset};
use shared::envelope::{
    IdempotencyKey, RecordsItem, RecordsPayload, StreamPosition, StreamRecord, WorkItem,
};

pub fn load_schema() -> SchemaRef {
    let mut fields = vec![
        Field::new("order_id", DataType::Int64, false),
        Field::new("status", DataType::Utf8, true),
    ];
    fields.extend(lineage::fields());
    Arc::new(Schema::new(fields))
}

/// Rows (order_id, status, sequence number) read from one shard.
pub fn batch(rows: &[(i64, &str, u64)]) -> RecordBatch {
    let n = rows.len();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
            "kinesis://orders",
            n,
        ))),
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
            "shardId-000000000000",
            n,
        ))),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.2.to_string()),
        )),
        Arc::new(Int64Array::from_iter_values(std::iter::repeat_n(0, n))),
    ];
    RecordBatch::try_new(load_schema(), columns).expect("batch")
}

pub fn key(first: u64, last: u64) -> IdempotencyKey {
    let position = |n: u64| StreamPosition {
        sequence_number: n.to_string(),
        sub_sequence_number: 0,
    };
    WorkItem::Records(RecordsItem {
        dataset: "orders".into(),
        stream: "orders".into(),
        shard_id: "shardId-000000000000".into(),
        first: position(first),
        last: position(last),
        payload: RecordsPayload::Inline(vec![StreamRecord {
            position: position(first),
            arrival_ms: None,
            data: serde_json::json!({}),
        }]),
        created_at_ms: None,
        replay: None,
    })
    .idempotency_key()
}

pub fn item(first: u64, last: u64, rows: &[(i64, &str, u64)]) -> ItemRows {
    ItemRows {
        key: key(first, last),
        source: "kinesis://orders".into(),
        batches: vec![batch(rows)],
        rejects: Vec::new(),
    }
}

pub fn owned(rows: &[(i64, &str)]) -> Vec<(i64, String)> {
    rows.iter().map(|(id, s)| (*id, (*s).to_owned())).collect()
}

/// The `orders` dataset (`order_id`, `status`) targeting `<target_schema>.orders`, keyed on
/// `order_id` or appended.
pub fn orders_dataset(target_schema: &str, keyed: bool) -> Dataset {
    let text = format!(
        r#"
[datasets.orders]
format = "csv"
target = "{target_schema}.orders"
key = [{}]
s3 = {{ prefix = "orders/" }}
columns = [
  {{ name = "order_id", type = "int64", nullable = false }},
  {{ name = "status", type = "string" }},
]
"#,
        if keyed { "\"order_id\"" } else { "" }
    );
    Catalog::from_toml(&text, "test")
        .expect("valid")
        .get("orders")
        .expect("present")
        .clone()
}
