//! The load protocol, decided here once for every sink: [`run_load`] sequences the steps
//! and a sink only says each one in its dialect ([`LoadSteps`]):
//!
//! 1. `loaded_keys`: which of the load's keys the ledger holds (sinks that lock per key
//!    lock them first, in `distinct_keys` order); `fresh_items` drops those items and
//!    repeated keys;
//! 2. `stage`: the rows of the others (`drain_items`), numbered across the load so the
//!    last row of a key wins;
//! 3. `begin_write`: a sink that staged outside its write transaction opens it, locks
//!    and checks the ledger again;
//! 4. `write_target`: merge on the key, or append the rows whose lineage is new;
//! 5. `record`: what the load records beside the rows, in the same transaction
//!    ([`LoadRecord`]: one rejects row per rejected row, one ledger row per item, the file
//!    parts it loaded);
//! 6. `commit` (or undo on any failure); the `LoadReport` comes from the same record.

use std::future::Future;
use std::sync::Arc;

use datafusion::arrow::array::{BooleanArray, Int64Array};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;

use super::files::FilePart;
use super::streams::{LoadedStream, StreamPart};
use super::{ItemSource, LoadReport, Reject, WarehouseError, sql};
use crate::pipeline::lineage;

/// The items of a load whose keys the ledger does not hold, each key once, and how many
/// were skipped.
fn fresh_items(items: Vec<ItemSource>, loaded: &[String]) -> (Vec<ItemSource>, usize) {
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
fn distinct_keys(items: &[ItemSource]) -> Vec<&str> {
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
    /// The rows of `batch` (in the load schema) the warehouse cannot store, each with the
    /// reason: they are rejected instead of failing the load.
    fn refuse(&self, _batch: &RecordBatch) -> Vec<(usize, String)> {
        Vec::new()
    }

    fn write(
        &mut self,
        batch: RecordBatch,
    ) -> impl Future<Output = Result<(), WarehouseError>> + Send;
}

/// Reads every item's rows in order and hands them to `sink` with the sequence column
/// appended (numbered across the whole load, so the last row of a key wins), then
/// collects each item's rejects: the source's and the rows the sink refused. Every sink
/// stages through this.
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
        let mut refused = Vec::new();
        while let Some(batch) = item
            .rows
            .next_batch()
            .await
            .map_err(WarehouseError::Source)?
        {
            let refuse = sink.refuse(&batch);
            let batch = without_refused(dataset, batch, refuse, &mut refused)?;
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
                WarehouseError::Rows {
                    dataset: dataset.to_owned(),
                    action: "rows do not match the load schema".into(),
                    source: err,
                }
            })?;
            sink.write(staged).await?;
        }
        drained.rows_per_item.push(item_rows);
        let mut rejects = item.rows.take_rejects();
        rejects.append(&mut refused);
        drained.rejects_per_item.push(rejects);
    }
    Ok(drained)
}

/// `batch` without the rows the sink refused; each becomes a reject, named by its lineage.
fn without_refused(
    dataset: &str,
    batch: RecordBatch,
    refused: Vec<(usize, String)>,
    rejects: &mut Vec<Reject>,
) -> Result<RecordBatch, WarehouseError> {
    if refused.is_empty() {
        return Ok(batch);
    }
    let mut keep = vec![true; batch.num_rows()];
    for (row, reason) in refused {
        keep[row] = false;
        rejects.push(Reject {
            row_number: None,
            raw: None,
            reason: format!("{reason} ({})", lineage::describe_row(&batch, row)),
        });
    }
    filter_record_batch(&batch, &BooleanArray::from(keep)).map_err(|source| WarehouseError::Rows {
        dataset: dataset.to_owned(),
        action: "cannot drop refused rows".into(),
        source,
    })
}

/// What staging a load's rows did.
#[derive(Debug, Default)]
pub(crate) struct Staged {
    /// Rows the sink staged (or wrote straight into the target).
    pub rows: u64,
    pub drained: Drained,
    /// String values the sink cut to fit their column (where the catalog asks for that).
    pub values_truncated: u64,
}

impl Staged {
    /// `rows` staged as they came, nothing cut.
    pub fn whole(rows: u64, drained: Drained) -> Self {
        Self {
            rows,
            drained,
            values_truncated: 0,
        }
    }
}

/// The first steps of one load in one sink's dialect, over the sink's connection or open
/// transaction; [`run_load`] calls them in protocol order.
pub(crate) trait LoadSteps: Send + Sized {
    /// The steps that write, once the rows are staged.
    type Write: WriteSteps;

    /// The keys of `keys` the ledger holds; a sink that serialises loads per key locks
    /// them here first.
    fn loaded_keys(
        &mut self,
        keys: &[&str],
    ) -> impl Future<Output = Result<Vec<String>, WarehouseError>> + Send;

    /// Stages the rows of `items` (at least one, none in the ledger).
    fn stage(
        &mut self,
        items: &mut [ItemSource],
    ) -> impl Future<Output = Result<Staged, WarehouseError>> + Send;

    /// Opens the write. A sink that staged outside its write transaction opens it here,
    /// locks, and fails with [`WarehouseError::ConcurrentLoad`] if another load committed
    /// one of `record`'s items meanwhile (the retry skips it).
    fn begin_write(
        self,
        record: &LoadRecord,
    ) -> impl Future<Output = Result<Self::Write, WarehouseError>> + Send;

    /// Ends a load with nothing to write (every item was in the ledger).
    fn finish_empty(self) -> impl Future<Output = Result<(), WarehouseError>> + Send;

    /// Undoes what the load did so far, after a failed step.
    fn abandon(self) -> impl Future<Output = ()> + Send;
}

/// The steps of a load that write the target and the record, in one transaction.
pub(crate) trait WriteSteps: Send {
    /// Writes the staged rows into the target; returns the rows inserted or updated.
    fn write_target(&mut self) -> impl Future<Output = Result<u64, WarehouseError>> + Send;

    /// Writes the rejects, ledger rows and file parts of `record`.
    fn record(
        &mut self,
        record: &LoadRecord,
    ) -> impl Future<Output = Result<(), WarehouseError>> + Send;

    fn commit(self) -> impl Future<Output = Result<(), WarehouseError>> + Send;

    /// Undoes the write, after a failed step.
    fn rollback(self) -> impl Future<Output = ()> + Send;
}

/// What the first steps of a load found.
enum FirstSteps {
    /// Every item was in the ledger.
    NothingFresh { items_skipped: usize },
    /// The fresh items, staged.
    Staged {
        items: Vec<LoadedItem>,
        items_skipped: usize,
        staged: Staged,
    },
}

/// Loads `items` through `steps`, in protocol order, undoing everything on any failure.
pub(crate) async fn run_load<S: LoadSteps>(
    mut steps: S,
    items: Vec<ItemSource>,
) -> Result<LoadReport, WarehouseError> {
    let (items, items_skipped, staged) = match stage_fresh(&mut steps, items).await {
        Ok(FirstSteps::Staged {
            items,
            items_skipped,
            staged,
        }) => (items, items_skipped, staged),
        Ok(FirstSteps::NothingFresh { items_skipped }) => {
            steps.finish_empty().await?;
            return Ok(LoadRecord::default().report(items_skipped, &Staged::default(), 0));
        }
        Err(err) => {
            steps.abandon().await;
            return Err(err);
        }
    };
    let record = LoadRecord::new(&items, &staged.drained);
    let mut write = steps.begin_write(&record).await?;
    let written = async {
        let rows_written = write.write_target().await?;
        write.record(&record).await?;
        Ok(rows_written)
    }
    .await;
    match written {
        Ok(rows_written) => {
            write.commit().await?;
            Ok(record.report(items_skipped, &staged, rows_written))
        }
        Err(err) => {
            write.rollback().await;
            Err(err)
        }
    }
}

/// Drops the items the ledger holds and stages the others.
async fn stage_fresh(
    steps: &mut impl LoadSteps,
    items: Vec<ItemSource>,
) -> Result<FirstSteps, WarehouseError> {
    let loaded = steps.loaded_keys(&distinct_keys(&items)).await?;
    let (mut fresh, items_skipped) = fresh_items(items, &loaded);
    if fresh.is_empty() {
        return Ok(FirstSteps::NothingFresh { items_skipped });
    }
    let staged = steps.stage(&mut fresh).await?;
    Ok(FirstSteps::Staged {
        items: fresh.iter().map(LoadedItem::of).collect(),
        items_skipped,
        staged,
    })
}

/// The identity of a loaded item, kept once its rows are drained.
#[derive(Debug, Clone)]
struct LoadedItem {
    pub key: String,
    pub source: String,
    pub file: Option<FilePart>,
    pub stream: Option<StreamPart>,
}

impl LoadedItem {
    pub fn of(item: &ItemSource) -> Self {
        Self {
            key: item.key.as_str().to_owned(),
            source: item.source.clone(),
            file: item.file.clone(),
            stream: item.stream.clone(),
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
    /// The stream records of the loaded items (`stream_loads`).
    pub streams: Vec<LoadedStream>,
}

impl LoadRecord {
    /// The record of loading `items`, whose rows and rejects `drained` counted, in order.
    fn new(items: &[LoadedItem], drained: &Drained) -> Self {
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
            if let Some(part) = &item.stream {
                record.streams.push(LoadedStream {
                    key: item.key.clone(),
                    part: part.clone(),
                });
            }
        }
        record
    }

    /// The report of a load that committed this record.
    pub fn report(&self, items_skipped: usize, staged: &Staged, rows_written: u64) -> LoadReport {
        LoadReport {
            items_loaded: self.ledger.len(),
            loaded_keys: self.ledger.iter().map(|row| row.key.clone()).collect(),
            items_skipped,
            rows_staged: staged.rows,
            rows_written,
            rows_rejected: self.rejects.len() as u64,
            values_truncated: staged.values_truncated,
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
            stream: None,
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
            record.report(
                1,
                &Staged {
                    rows: 12,
                    drained: Drained::default(),
                    values_truncated: 3
                },
                9
            ),
            LoadReport {
                items_loaded: 2,
                loaded_keys: vec!["k1".into(), "k2".into()],
                items_skipped: 1,
                rows_staged: 12,
                rows_written: 9,
                rows_rejected: 2,
                values_truncated: 3
            }
        );
    }
}
