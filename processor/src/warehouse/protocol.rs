//! The load protocol, decided here once for every sink; a sink only says each step in its
//! dialect:
//!
//! 1. `fresh_items`: drop the items whose key the ledger holds, each key once (keys locked
//!    first, in `distinct_keys` order, where the sink locks per key);
//! 2. `drain_items`: stage the rows of the others, numbered across the load so the last
//!    row of a key wins;
//! 3. write the target: merge on the key, or append the rows whose lineage is new (the
//!    sink's SQL);
//! 4. `LoadRecord`: what the load records beside the rows, in the same transaction — one
//!    rejects row per rejected row, one ledger row per item, the file parts it loaded;
//! 5. commit; the `LoadReport` comes from the same record.

use std::future::Future;
use std::sync::Arc;

use datafusion::arrow::array::Int64Array;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;

use super::files::FilePart;
use super::{ItemSource, LoadReport, Reject, WarehouseError, sql};

/// The items of a load whose keys the ledger does not hold, each key once, and how many
/// were skipped.
pub(crate) fn fresh_items(items: Vec<ItemSource>, loaded: &[String]) -> (Vec<ItemSource>, usize) {
    let count = items.len();
    let mut seen = std::collections::HashSet::new();
    let fresh: Vec<ItemSource> = items
        .into_iter()
        .filter(|item| {
            !loaded.iter().any(|k| k == item.key.as_str()) && seen.insert(item.key.clone())
        })
        .collect();
    let skipped = count - fresh.len();
    (fresh, skipped)
}

/// The idempotency keys of a load's items, sorted, each once (the order locks are taken in).
pub(crate) fn distinct_keys(items: &[ItemSource]) -> Vec<&str> {
    let mut keys: Vec<&str> = items.iter().map(|i| i.key.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// The load schema plus the staging sequence column.
pub(crate) fn with_sequence(schema: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(sql::SEQUENCE_COLUMN, DataType::Int64, false));
    Arc::new(Schema::new(fields))
}

/// What draining the items of a load found, per item in load order.
#[derive(Debug, Default)]
pub struct Drained {
    pub rows_per_item: Vec<i64>,
    pub rejects_per_item: Vec<Vec<Reject>>,
}

/// Where a load writes its staged rows.
pub(crate) trait StagedRowsSink: Send {
    fn write(
        &mut self,
        batch: RecordBatch,
    ) -> impl Future<Output = Result<(), WarehouseError>> + Send;
}

/// Reads every item's rows in order and hands them to `sink` with the sequence column
/// appended (numbered across the whole load, so the last row of a key wins), then
/// collects each item's rejects. Both sinks stage through this.
pub(crate) async fn drain_items(
    dataset: &str,
    schema: &SchemaRef,
    items: &mut [ItemSource],
    sink: &mut impl StagedRowsSink,
) -> Result<Drained, WarehouseError> {
    let staged_schema = with_sequence(schema);
    let mut sequence: i64 = 0;
    let mut drained = Drained::default();
    for item in items {
        let mut item_rows: i64 = 0;
        while let Some(batch) = item
            .rows
            .next_batch()
            .await
            .map_err(WarehouseError::Source)?
        {
            let rows = batch.num_rows() as i64;
            if rows == 0 {
                continue;
            }
            item_rows += rows;
            let sequence_column = Int64Array::from_iter_values(sequence..sequence + rows);
            sequence += rows;
            let mut arrays = batch.columns().to_vec();
            arrays.push(Arc::new(sequence_column));
            let staged = RecordBatch::try_new(staged_schema.clone(), arrays).map_err(|err| {
                WarehouseError::Schema {
                    dataset: dataset.to_owned(),
                    reason: format!("rows do not match the load schema: {err}"),
                }
            })?;
            sink.write(staged).await?;
        }
        drained.rows_per_item.push(item_rows);
        drained.rejects_per_item.push(item.rows.take_rejects());
    }
    Ok(drained)
}

/// The identity of a loaded item, kept once its rows are drained.
#[derive(Debug, Clone)]
pub(crate) struct LoadedItem {
    pub key: String,
    pub source: String,
    pub file: Option<FilePart>,
}

impl LoadedItem {
    pub fn of(item: &ItemSource) -> Self {
        Self {
            key: item.key.as_str().to_owned(),
            source: item.source.clone(),
            file: item.file.clone(),
        }
    }
}

/// A row of the rejects table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RejectRow {
    pub key: String,
    pub source: String,
    pub row_number: Option<i64>,
    pub raw: Option<String>,
    pub reason: String,
}

/// A row of the load ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LedgerRow {
    pub key: String,
    pub source: String,
    pub rows_loaded: i64,
    pub rows_rejected: i64,
}

/// A part of a file the load completed, with its rows and rejects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LoadedPart {
    pub part: FilePart,
    pub rows: i64,
    pub rejected: i64,
}

/// What a load records beside the target rows, for every sink the same.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LoadRecord {
    pub rejects: Vec<RejectRow>,
    pub ledger: Vec<LedgerRow>,
    pub parts: Vec<LoadedPart>,
}

impl LoadRecord {
    /// The record of loading `items`, whose rows and rejects `drained` counted, in order.
    pub fn new(items: &[LoadedItem], drained: &Drained) -> Self {
        // `drain_items` counts every item it drained, in order.
        debug_assert_eq!(items.len(), drained.rows_per_item.len());
        debug_assert_eq!(items.len(), drained.rejects_per_item.len());
        let mut record = Self::default();
        let per_item = items
            .iter()
            .zip(&drained.rows_per_item)
            .zip(&drained.rejects_per_item);
        for ((item, &rows), rejects) in per_item {
            record
                .rejects
                .extend(rejects.iter().map(|reject| RejectRow {
                    key: item.key.clone(),
                    source: item.source.clone(),
                    row_number: reject.row_number.and_then(|n| i64::try_from(n).ok()),
                    raw: reject.raw.clone(),
                    reason: reject.reason.clone(),
                }));
            let rejected = rejects.len() as i64;
            record.ledger.push(LedgerRow {
                key: item.key.clone(),
                source: item.source.clone(),
                rows_loaded: rows,
                rows_rejected: rejected,
            });
            if let Some(part) = &item.file {
                record.parts.push(LoadedPart {
                    part: part.clone(),
                    rows,
                    rejected,
                });
            }
        }
        record
    }

    /// The report of a load that committed this record.
    pub fn report(&self, items_skipped: usize, rows_staged: u64, rows_written: u64) -> LoadReport {
        LoadReport {
            items_loaded: self.ledger.len(),
            items_skipped,
            rows_staged,
            rows_written,
            rows_rejected: self.rejects.len() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(key: &str, file: Option<FilePart>) -> LoadedItem {
        LoadedItem {
            key: key.to_owned(),
            source: format!("s3://b/{key}"),
            file,
        }
    }

    fn reject(row: u64) -> Reject {
        Reject {
            row_number: Some(row),
            raw: Some(format!("raw {row}")),
            reason: format!("bad {row}"),
        }
    }

    #[test]
    fn the_record_has_a_ledger_row_per_item_a_reject_row_per_reject_and_the_file_parts() {
        let part = FilePart {
            file_id: "f1".into(),
            dataset: "orders".into(),
            bucket: "b".into(),
            key: "a.csv".into(),
            version_id: None,
            etag: "e".into(),
            parts_total: 2,
        };
        let items = [item("k1", Some(part.clone())), item("k2", None)];
        let drained = Drained {
            rows_per_item: vec![10, 0],
            rejects_per_item: vec![vec![reject(3), reject(7)], Vec::new()],
        };
        let record = LoadRecord::new(&items, &drained);
        assert_eq!(
            record.ledger,
            vec![
                LedgerRow {
                    key: "k1".into(),
                    source: "s3://b/k1".into(),
                    rows_loaded: 10,
                    rows_rejected: 2
                },
                LedgerRow {
                    key: "k2".into(),
                    source: "s3://b/k2".into(),
                    rows_loaded: 0,
                    rows_rejected: 0
                },
            ]
        );
        let rows: Vec<(&str, Option<i64>)> = record
            .rejects
            .iter()
            .map(|r| (r.key.as_str(), r.row_number))
            .collect();
        assert_eq!(rows, [("k1", Some(3)), ("k1", Some(7))]);
        assert_eq!(
            record.parts,
            vec![LoadedPart {
                part,
                rows: 10,
                rejected: 2
            }]
        );
        assert_eq!(
            record.report(1, 12, 9),
            LoadReport {
                items_loaded: 2,
                items_skipped: 1,
                rows_staged: 12,
                rows_written: 9,
                rows_rejected: 2
            }
        );
    }
}
