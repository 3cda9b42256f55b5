//! One Redshift load as the protocol's steps. Everything slow happens before the write
//! transaction and outside any lock: the rows become Parquet files in S3, then one
//! transaction of their own `COPY`s them into a temporary staging table and keeps the last
//! row of each key in a second one (temporary tables outlive the transaction, not the
//! session). The write transaction is short: `LOCK` the ledger first (Redshift takes a
//! transaction's snapshot at its first statement, so the re-check after the lock sees every
//! load committed before it), check the ledger again, merge, record, commit. Loads of
//! different datasets `COPY` in parallel and queue only for their merges.

use datafusion::arrow::datatypes::SchemaRef;
use shared::catalog::Dataset;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, GenericClient, Transaction};

use super::{RedshiftWarehouse, StagedFiles, fit_varchar, statements, varchar_limits};
use crate::warehouse::connection::statement_error;
use crate::warehouse::protocol::{LoadRecord, LoadSteps, Staged, WriteSteps};
use crate::warehouse::sql::{self, ColumnDef, REDSHIFT};
use crate::warehouse::{ItemSource, WarehouseError, files, merge_keys, streams};

/// Rows per multi-row `INSERT` of rejects or ledger rows, and keys per ledger lookup
/// (bind parameters are limited to 32767 per statement by the protocol).
const INSERT_CHUNK_ROWS: usize = 1000;
/// Parameter bytes per multi-row `INSERT`: half of Redshift's 16 MB limit on a statement
/// (`c_redshift-sql.html`), leaving room for the statement's text and encoding overhead.
const INSERT_CHUNK_BYTES: usize = 8 * 1024 * 1024;

/// A load before its write transaction: ledger read, rows staged as files.
pub(super) struct RedshiftStage<'a> {
    warehouse: &'a RedshiftWarehouse,
    client: &'a mut Client,
    dataset: &'a Dataset,
    schema: &'a SchemaRef,
    columns: Vec<ColumnDef>,
    /// Names the load's folder under the staging prefix.
    load_id: String,
    files: Option<StagedFiles>,
}

impl<'a> RedshiftStage<'a> {
    pub(super) fn new(
        warehouse: &'a RedshiftWarehouse,
        client: &'a mut Client,
        dataset: &'a Dataset,
        schema: &'a SchemaRef,
        columns: Vec<ColumnDef>,
    ) -> Self {
        Self {
            warehouse,
            client,
            dataset,
            schema,
            columns,
            load_id: format!("{:016x}", rand::random::<u64>()),
            files: None,
        }
    }
}

impl RedshiftStage<'_> {
    /// In a transaction of its own: the staged files `COPY`ed into the staging table
    /// (checked against the rows staged), and the last row of each key kept in
    /// [`SOURCE_TABLE`](super::SOURCE_TABLE). Returns the rows copied.
    async fn copy_staged(&mut self, files: &StagedFiles) -> Result<u64, WarehouseError> {
        let name = self.dataset.name.as_str();
        let tx = self
            .client
            .transaction()
            .await
            .map_err(statement_error(name, "starting the staging transaction"))?;
        // Left over by a load that failed after staging, in this session.
        tx.batch_execute(&statements::drop_temporary())
            .await
            .map_err(statement_error(name, "dropping old staging tables"))?;
        let layout = &self.dataset.redshift;
        tx.batch_execute(&statements::create_staging(&self.columns, layout))
            .await
            .map_err(statement_error(name, "creating the staging table"))?;
        let manifest = self.warehouse.stager.s3_url(&files.manifest);
        let copy = statements::copy_from_manifest(&manifest, &self.warehouse.iam_role);
        let copied = tx
            .execute(&copy, &[])
            .await
            .map_err(statement_error(name, "COPY from the staged Parquet files"))?;
        if copied != files.rows {
            return Err(WarehouseError::Staging {
                dataset: name.to_owned(),
                location: manifest,
                source: format!("COPY loaded {copied} rows of the {} staged", files.rows).into(),
                retryable: false,
            });
        }
        let keys = merge_keys(self.dataset);
        tx.batch_execute(&statements::create_source(&self.columns, &keys, layout))
            .await
            .map_err(statement_error(name, "deduplicating the staged rows"))?;
        tx.commit()
            .await
            .map_err(statement_error(name, "committing the staged rows"))?;
        Ok(copied)
    }
}

impl<'a> LoadSteps for RedshiftStage<'a> {
    type Write = RedshiftWrite<'a>;

    /// Read without a lock: the write transaction checks again under one.
    async fn loaded_keys(&mut self, keys: &[&str]) -> Result<Vec<String>, WarehouseError> {
        let ledger = self.warehouse.ledger();
        loaded_keys(&*self.client, &ledger, &self.dataset.name, keys).await
    }

    async fn stage(&mut self, items: &mut [ItemSource]) -> Result<Staged, WarehouseError> {
        let stager = &self.warehouse.stager;
        let (files, drained) = stager
            .stage(
                &self.dataset.name,
                self.schema,
                items,
                (&self.load_id, &varchar_limits(self.dataset, &self.columns)),
            )
            .await?;
        let rows = match &files {
            Some(files) => self.copy_staged(files).await,
            None => Ok(0),
        };
        let values_truncated = files.as_ref().map_or(0, |f| f.values_truncated);
        // Kept first, so a failed COPY still deletes them.
        self.files = files;
        Ok(Staged {
            rows: rows?,
            drained,
            values_truncated,
        })
    }

    async fn begin_write(self, record: &LoadRecord) -> Result<RedshiftWrite<'a>, WarehouseError> {
        let name = self.dataset.name.as_str();
        let began = self.client.transaction().await;
        let tx = match began.map_err(statement_error(name, "starting the load transaction")) {
            Ok(tx) => tx,
            Err(err) => {
                remove_files(self.warehouse, self.files.as_ref()).await;
                return Err(err);
            }
        };
        let write = RedshiftWrite {
            warehouse: self.warehouse,
            tx,
            dataset: self.dataset,
            columns: self.columns,
            files: self.files,
        };
        if let Err(err) = write.lock_and_check_again(record).await {
            write.rollback().await;
            return Err(err);
        }
        Ok(write)
    }

    async fn finish_empty(self) -> Result<(), WarehouseError> {
        Ok(())
    }

    async fn abandon(self) {
        let folder = self
            .warehouse
            .stager
            .load_folder(&self.dataset.name, &self.load_id);
        self.warehouse.stager.remove_folder(&folder).await;
    }
}

/// A load's write transaction: lock, check, `COPY`, merge, record, commit; the staged
/// files are deleted however it ends (a lifecycle rule on the staging prefix catches what
/// a crash leaves behind).
pub(super) struct RedshiftWrite<'a> {
    warehouse: &'a RedshiftWarehouse,
    tx: Transaction<'a>,
    dataset: &'a Dataset,
    columns: Vec<ColumnDef>,
    files: Option<StagedFiles>,
}

impl RedshiftWrite<'_> {
    fn name(&self) -> &str {
        &self.dataset.name
    }

    /// Locks the ledger (and the file progress table when the load has file parts) and
    /// fails with `ConcurrentLoad` if another task loaded an item while this one staged it.
    async fn lock_and_check_again(&self, record: &LoadRecord) -> Result<(), WarehouseError> {
        let ledger = self.warehouse.ledger();
        self.tx
            .batch_execute(&statements::lock_ledger(&ledger))
            .await
            .map_err(statement_error(self.name(), "locking the load ledger"))?;
        // Locked up front, before the transaction reads anything: a table first locked
        // late, after a concurrent claim changed it, is a serialization conflict.
        if !record.parts.is_empty() {
            self.tx
                .batch_execute(&statements::lock_ledger(&self.warehouse.file_loads()))
                .await
                .map_err(statement_error(
                    self.name(),
                    "locking the file progress table",
                ))?;
        }
        let keys: Vec<&str> = record.ledger.iter().map(|row| row.key.as_str()).collect();
        match loaded_keys(&self.tx, &ledger, self.name(), &keys)
            .await?
            .first()
        {
            Some(key) => Err(WarehouseError::ConcurrentLoad {
                dataset: self.name().to_owned(),
                key: key.clone(),
            }),
            None => Ok(()),
        }
    }
}

impl WriteSteps for RedshiftWrite<'_> {
    /// The staged rows merged into the target (or appended where the lineage is new); the
    /// staging tables dropped with the same commit.
    async fn write_target(&mut self) -> Result<u64, WarehouseError> {
        if self.files.is_none() {
            return Ok(0);
        }
        let (tx, dataset, name) = (&self.tx, self.dataset, self.name());
        let write = if dataset.key_columns.is_empty() {
            statements::append_new_lineage(&dataset.target, &self.columns)
        } else {
            statements::merge_on_key(&dataset.target, &self.columns, &dataset.key_columns)
        };
        let rows_written = tx
            .execute(&write, &[])
            .await
            .map_err(statement_error(name, "merging into the target"))?;
        tx.batch_execute(&statements::drop_temporary())
            .await
            .map_err(statement_error(name, "dropping the staging tables"))?;
        Ok(rows_written)
    }

    /// Rejects, ledger rows and file parts, text cut to fit `VARCHAR`.
    async fn record(&mut self, record: &LoadRecord) -> Result<(), WarehouseError> {
        let name = self.name();
        let text = |value: &str| fit_varchar(&sql::storable_text(value));
        let sizes: Vec<usize> = record
            .rejects
            .iter()
            .map(|r| {
                r.key.len()
                    + r.source.len()
                    + r.reason.len()
                    + r.raw.as_ref().map_or(0, String::len)
            })
            .collect();
        let rejects: Vec<ParameterRow<6>> = record
            .rejects
            .iter()
            .map(|reject| {
                [
                    Box::new(reject.key.clone()) as Box<dyn ToSql + Sync + Send>,
                    Box::new(name.to_owned()),
                    Box::new(fit_varchar(&reject.source)),
                    Box::new(reject.row_number),
                    Box::new(reject.raw.as_deref().map(text)),
                    Box::new(text(&reject.reason)),
                ]
            })
            .collect();
        let columns = [
            "idempotency_key",
            "dataset",
            "source",
            "row_number",
            "raw",
            "reason",
        ];
        let table = self.warehouse.rejects();
        let rows = (&rejects[..], &sizes[..]);
        insert_chunked(&self.tx, &table, &columns, rows, name, "writing rejects").await?;
        let ledger: Vec<ParameterRow<5>> = record
            .ledger
            .iter()
            .map(|row| {
                [
                    Box::new(row.key.clone()) as Box<dyn ToSql + Sync + Send>,
                    Box::new(name.to_owned()),
                    Box::new(fit_varchar(&row.source)),
                    Box::new(row.rows_loaded),
                    Box::new(row.rows_rejected),
                ]
            })
            .collect();
        let columns = [
            "idempotency_key",
            "dataset",
            "source",
            "rows_loaded",
            "rows_rejected",
        ];
        let sizes: Vec<usize> = (record.ledger.iter())
            .map(|row| row.key.len() + row.source.len())
            .collect();
        let (table, action) = (self.warehouse.ledger(), "writing the load ledger");
        let rows = (&ledger[..], &sizes[..]);
        insert_chunked(&self.tx, &table, &columns, rows, name, action).await?;
        let progress: Vec<ParameterRow<8>> = (record.streams.iter())
            .map(|loaded| {
                let part = &loaded.part;
                [
                    Box::new(loaded.key.clone()) as Box<dyn ToSql + Sync + Send>,
                    Box::new(name.to_owned()),
                    Box::new(fit_varchar(&part.stream)),
                    Box::new(fit_varchar(&part.shard_id)),
                    Box::new(fit_varchar(&part.first_sequence)),
                    Box::new(fit_varchar(&part.last_sequence)),
                    Box::new(part.records),
                    Box::new(
                        part.newest_arrival_ms
                            .map(shared::stream::from_epoch_millis),
                    ),
                ]
            })
            .collect();
        let sizes: Vec<usize> = (record.streams.iter())
            .map(|s| s.key.len() + s.part.first_sequence.len() + s.part.last_sequence.len())
            .collect();
        let table = self.warehouse.stream_loads();
        let rows = (&progress[..], &sizes[..]);
        let action = "writing the stream progress";
        insert_chunked(&self.tx, &table, &streams::COLUMNS, rows, name, action).await?;
        let file_loads = self.warehouse.file_loads();
        files::record_parts(&self.tx, &file_loads, REDSHIFT, &record.parts).await
    }

    async fn commit(self) -> Result<(), WarehouseError> {
        let name = self.dataset.name.as_str();
        let committed = self.tx.commit().await;
        remove_files(self.warehouse, self.files.as_ref()).await;
        committed.map_err(statement_error(name, "committing"))
    }

    async fn rollback(self) {
        if let Err(err) = self.tx.rollback().await {
            tracing::warn!(error = %shared::error::Report(&err), "rolling back a failed load failed");
        }
        remove_files(self.warehouse, self.files.as_ref()).await;
    }
}

/// Deletes a load's staged files, if it staged any.
async fn remove_files(warehouse: &RedshiftWarehouse, files: Option<&StagedFiles>) {
    if let Some(files) = files {
        warehouse.stager.remove_folder(&files.folder).await;
    }
}

/// The keys of `keys` the ledger holds.
async fn loaded_keys(
    client: &impl GenericClient,
    ledger: &str,
    dataset: &str,
    keys: &[&str],
) -> Result<Vec<String>, WarehouseError> {
    let mut loaded = Vec::new();
    for chunk in keys.chunks(INSERT_CHUNK_ROWS) {
        let params: Vec<&(dyn ToSql + Sync)> =
            chunk.iter().map(|k| k as &(dyn ToSql + Sync)).collect();
        let rows = client
            .query(&statements::ledger_lookup(ledger, chunk.len()), &params)
            .await
            .map_err(statement_error(dataset, "reading the load ledger"))?;
        loaded.extend(rows.iter().map(|row| row.get::<_, String>(0)));
    }
    Ok(loaded)
}

/// Multi-row `INSERT`s of `rows`, [`INSERT_CHUNK_ROWS`] at a time.
/// One row of bind parameters.
type ParameterRow<const WIDTH: usize> = [Box<dyn ToSql + Sync + Send>; WIDTH];

/// Multi-row `INSERT`s of `rows` (with each row's size in bytes), at most
/// [`INSERT_CHUNK_ROWS`] rows and about [`INSERT_CHUNK_BYTES`] bytes each.
async fn insert_chunked<const WIDTH: usize>(
    tx: &Transaction<'_>,
    table: &str,
    columns: &[&str; WIDTH],
    (rows, sizes): (&[ParameterRow<WIDTH>], &[usize]),
    dataset: &str,
    action: &'static str,
) -> Result<(), WarehouseError> {
    for range in bounded_chunks(sizes, INSERT_CHUNK_ROWS, INSERT_CHUNK_BYTES) {
        let chunk = &rows[range];
        let params: Vec<&(dyn ToSql + Sync)> = chunk
            .iter()
            .flat_map(|row| {
                row.iter()
                    .map(|value| value.as_ref() as &(dyn ToSql + Sync))
            })
            .collect();
        tx.execute(
            &statements::insert_rows(table, columns, chunk.len()),
            &params,
        )
        .await
        .map_err(statement_error(dataset, action))?;
    }
    Ok(())
}

/// Consecutive ranges of rows with at most `max_rows` rows and at most `max_bytes` bytes
/// each (a row larger than `max_bytes` alone).
fn bounded_chunks(
    sizes: &[usize],
    max_rows: usize,
    max_bytes: usize,
) -> Vec<std::ops::Range<usize>> {
    let mut chunks = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (row, &size) in sizes.iter().enumerate() {
        let full = row - start == max_rows || (row > start && bytes + size > max_bytes);
        if full {
            chunks.push(start..row);
            (start, bytes) = (row, 0);
        }
        bytes += size;
    }
    if start < sizes.len() {
        chunks.push(start..sizes.len());
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::bounded_chunks;

    #[test]
    fn chunks_are_bounded_by_rows_and_by_bytes() {
        assert_eq!(bounded_chunks(&[1; 5], 2, 100), [0..2, 2..4, 4..5]);
        assert_eq!(
            bounded_chunks(&[40, 40, 40, 150, 10], 10, 100),
            [0..2, 2..3, 3..4, 4..5]
        );
        assert!(bounded_chunks(&[], 10, 100).is_empty());
    }
}
