//! Lineage columns: every loaded row names its exact origin, so a load that packs or
//! splits the same source rows differently still cannot create a duplicate (datasets
//! without key columns merge on these), and an operator can trace any row to its source.

use datafusion::arrow::datatypes::{DataType, Field};

/// `s3://bucket/key` for a file row, `kinesis://stream` for a stream record.
pub(crate) const SOURCE: &str = "_ingest_source";
/// The object's entity tag for a file row, the shard id for a stream record.
pub const PARTITION: &str = "_ingest_partition";
/// The byte offset of the row in the object, or the record's sequence number (text:
/// Kinesis sequence numbers have up to 128 digits).
pub(crate) const OFFSET: &str = "_ingest_offset";
/// The sub-sequence number of a user record in a KPL-aggregated record; 0 for file rows.
pub(crate) const SUB_OFFSET: &str = "_ingest_sub_offset";
/// When the row was last written by a load; set by the warehouse.
pub(crate) const LOADED_AT: &str = "_ingest_loaded_at";

/// The lineage columns the readers add to every batch, in order.
pub(crate) const COLUMNS: [&str; 4] = [SOURCE, PARTITION, OFFSET, SUB_OFFSET];

/// [`COLUMNS`] as owned names, the merge key of datasets without key columns.
pub fn column_names() -> Vec<String> {
    COLUMNS.iter().map(|c| (*c).to_owned()).collect()
}

/// The Arrow fields of [`COLUMNS`].
pub fn fields() -> Vec<Field> {
    vec![
        Field::new(SOURCE, DataType::Utf8, false),
        Field::new(PARTITION, DataType::Utf8, false),
        Field::new(OFFSET, DataType::Utf8, false),
        Field::new(SUB_OFFSET, DataType::Int64, false),
    ]
}

/// Where row `row` of a batch in the load schema came from, for a reason that names it:
/// `s3://bucket/key offset 1234` (a byte offset, or a record's sequence number).
pub(crate) fn describe_row(
    batch: &datafusion::arrow::record_batch::RecordBatch,
    row: usize,
) -> String {
    use datafusion::arrow::array::{Array, AsArray};
    let text = |column: &str| {
        batch
            .column_by_name(column)
            .and_then(|array| array.as_string_opt::<i32>())
            .filter(|array| row < array.len() && !array.is_null(row))
            .map(|array| array.value(row).to_owned())
    };
    match (text(SOURCE), text(OFFSET)) {
        (Some(source), Some(offset)) => format!("{source} offset {offset}"),
        _ => format!("row {} of its batch", row + 1),
    }
}
