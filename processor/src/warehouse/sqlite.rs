//! The embedded warehouse: SQLite, for running the platform on one machine. It follows
//! the same load protocol as PostgreSQL and Redshift — in one transaction: skip items the
//! ledger holds, stage the rows in a temporary table, upsert them into the target on the
//! dataset's key (or append the ones whose lineage is new), write rejects, the ledger
//! and file progress, commit — so the same guarantees hold locally.
//!
//! SQLite has no schemas: a target `sales.orders` is the table `sales_orders`, and the
//! platform tables are `<platform schema>_load_ledger`, `…_rejects` and `…_file_loads`.
//! Values are stored as SQLite's own types: integers (booleans as 0/1), reals, and text
//! for strings, dates, timestamps (ISO 8601, UTC) and decimals (exact). A load's write
//! transaction (`BEGIN IMMEDIATE`) serialises loads across connections and processes, so
//! the second of two loads of one item waits, then finds it in the ledger.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use rusqlite::types::Value;
use rusqlite::{OptionalExtension, params};
use shared::catalog::{Dataset, TableName};
use shared::embedded::{EmbeddedDb, EmbeddedError, sql_error};
use shared::error::Classify;

use super::activity;
use super::evolution::{self, Capabilities, ExistingTable, SchemaPlan, TableColumn};
use super::files::{self, Claim, FileCompletion};
use super::load_trace;
use super::platform_query;
use super::protocol::{LoadSteps, LoadedPart, Staged, WriteSteps, run_load};
use super::rejects::{self, FoundReject, RejectQuery};
use super::retention::{PlatformTable, PruneReport, PruneRequest, prune_statement};
use super::sql::{self, ColumnDef, SEQUENCE_COLUMN, STAGING_TABLE, quote_ident};
use super::{
    ItemSource, LoadRecord, LoadReport, StagedRowsSink, Warehouse, WarehouseError, drain_items,
    merge_keys,
};
use crate::pipeline::lineage;
use crate::timefmt::{iso_utc_micros, iso_utc_millis};
use shared::stream::epoch_millis;

/// The current time as the text the timestamp columns hold.
const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

/// The SQLite table that holds a target.
pub fn table_name(target: &TableName) -> String {
    format!("{}_{}", target.schema, target.table)
}

fn sqlite_type(data_type: &DataType) -> Option<&'static str> {
    Some(match data_type {
        DataType::Boolean
        | DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64 => "INTEGER",
        DataType::Float32 | DataType::Float64 => "REAL",
        DataType::Utf8
        | DataType::LargeUtf8
        | DataType::Utf8View
        | DataType::Date32
        | DataType::Timestamp(_, _)
        | DataType::Decimal128(_, _) => "TEXT",
        _ => return None,
    })
}

/// The warehouse columns of a load schema.
fn column_defs(dataset: &str, schema: &SchemaRef) -> Result<Vec<ColumnDef>, WarehouseError> {
    sql::typed_columns(dataset, schema, "embedded warehouse", |field| {
        sqlite_type(field.data_type()).map(str::to_owned)
    })
}

fn statement_error(
    dataset: &str,
    action: &'static str,
) -> impl FnOnce(EmbeddedError) -> WarehouseError {
    let dataset = dataset.to_owned();
    move |err| WarehouseError::Statement {
        dataset,
        action,
        retryable: err.is_retryable(),
        source: Box::new(err),
    }
}

/// SQLite adds columns; its column types are storage classes (`INTEGER` holds every
/// integer width, `TEXT` every string length and decimal), so a widening changes nothing,
/// and it cannot change a column's type or `NOT NULL` in place.
const CAPABILITIES: Capabilities = Capabilities {
    widen_numbers: false,
    widen_strings: false,
    drop_not_null: false,
};

/// The statements that create a target and its unique index on the merge key.
fn create_target(dataset: &Dataset, table: &str, columns: &[ColumnDef]) -> Vec<String> {
    let keys = merge_keys(dataset);
    vec![
        format!(
            "CREATE TABLE IF NOT EXISTS {} (\n  {},\n  {} TEXT NOT NULL DEFAULT ({NOW})\n)",
            quote_ident(table),
            sql::column_defs(columns),
            quote_ident(lineage::LOADED_AT),
        ),
        format!(
            "CREATE UNIQUE INDEX IF NOT EXISTS {} ON {} ({})",
            quote_ident(&merge_key_index(table)),
            quote_ident(table),
            keys.iter()
                .map(|k| quote_ident(k))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ]
}

fn merge_key_index(table: &str) -> String {
    format!("{table}_merge_key")
}

/// The target's columns and merge key, or `None` when it does not exist.
fn describe_target(
    conn: &rusqlite::Connection,
    table: &str,
) -> rusqlite::Result<Option<ExistingTable>> {
    let mut columns = conn.prepare(&format!("PRAGMA table_info({})", quote_ident(table)))?;
    let columns: Vec<TableColumn> = columns
        .query_map([], |row| {
            Ok(TableColumn {
                name: row.get(1)?,
                sql_type: row.get(2)?,
                nullable: row.get::<_, i64>(3)? == 0,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    if columns.is_empty() {
        return Ok(None);
    }
    let index = merge_key_index(table);
    let mut key = conn.prepare(&format!("PRAGMA index_info({})", quote_ident(&index)))?;
    let key: Vec<String> = key
        .query_map([], |row| row.get(2))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(Some(ExistingTable {
        columns,
        key: (!key.is_empty()).then_some(key),
    }))
}

/// The embedded warehouse over one connection to the database file.
#[derive(Debug)]
pub struct SqliteWarehouse {
    db: EmbeddedDb,
    platform: String,
    /// One load or DDL at a time on this connection: a transaction spans several calls.
    gate: tokio::sync::Mutex<()>,
}

impl SqliteWarehouse {
    /// Opens the database file (its own connection); `platform` prefixes the platform
    /// tables.
    pub fn open(path: &std::path::Path, platform: &str) -> Result<Self, WarehouseError> {
        let db = EmbeddedDb::open(path).map_err(|err| WarehouseError::Connect {
            url: format!("sqlite://{}", path.display()),
            source: Box::new(err),
            retryable: false,
        })?;
        Ok(Self {
            db,
            platform: platform.to_owned(),
            gate: tokio::sync::Mutex::new(()),
        })
    }

    pub fn db(&self) -> &EmbeddedDb {
        &self.db
    }

    pub fn ledger(&self) -> String {
        quote_ident(&format!("{}_load_ledger", self.platform))
    }

    pub fn rejects(&self) -> String {
        quote_ident(&format!("{}_rejects", self.platform))
    }

    pub fn file_loads(&self) -> String {
        quote_ident(&format!("{}_file_loads", self.platform))
    }

    pub fn stream_loads(&self) -> String {
        quote_ident(&format!("{}_stream_loads", self.platform))
    }

    fn targets(&self) -> String {
        quote_ident(&format!("{}_targets", self.platform))
    }

    /// Runs statements in one write transaction.
    async fn run_batch(
        &self,
        dataset: &str,
        action: &'static str,
        statements: Vec<String>,
    ) -> Result<(), WarehouseError> {
        let _gate = self.gate.lock().await;
        self.db
            .call(action, move |conn| {
                let tx = conn
                    .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                    .map_err(sql_error(action))?;
                for statement in &statements {
                    tx.execute_batch(statement).map_err(sql_error(action))?;
                }
                tx.commit().map_err(sql_error(action))
            })
            .await
            .map_err(statement_error(dataset, action))
    }

    /// Runs one step of an open load transaction.
    async fn step<T, F>(
        &self,
        dataset: &str,
        action: &'static str,
        work: F,
    ) -> Result<T, WarehouseError>
    where
        T: Send + 'static,
        F: FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        self.db
            .call(action, move |conn| work(conn).map_err(sql_error(action)))
            .await
            .map_err(statement_error(dataset, action))
    }
}

/// One load, in one write transaction (`BEGIN IMMEDIATE`) from the ledger read to the
/// commit, holding the connection's gate throughout.
struct SqliteLoad<'a> {
    warehouse: &'a SqliteWarehouse,
    _gate: tokio::sync::MutexGuard<'a, ()>,
    dataset: &'a Dataset,
    schema: &'a SchemaRef,
    columns: Vec<ColumnDef>,
}

impl SqliteLoad<'_> {
    fn name(&self) -> &str {
        &self.dataset.name
    }
}

impl LoadSteps for SqliteLoad<'_> {
    type Write = Self;

    async fn loaded_keys(&mut self, keys: &[&str]) -> Result<Vec<String>, WarehouseError> {
        let keys: Vec<String> = keys.iter().map(|&key| key.to_owned()).collect();
        let ledger = self.warehouse.ledger();
        self.warehouse
            .step(self.name(), "reading the load ledger", move |conn| {
                let mut select = conn.prepare_cached(&format!(
                    "SELECT idempotency_key FROM {ledger} WHERE idempotency_key = ?1"
                ))?;
                let mut loaded = Vec::new();
                for key in keys {
                    if select.exists(params![key])? {
                        loaded.push(key);
                    }
                }
                Ok(loaded)
            })
            .await
    }

    async fn stage(&mut self, items: &mut [ItemSource]) -> Result<Staged, WarehouseError> {
        let (name, columns) = (self.dataset.name.as_str(), &self.columns);
        let staging = quote_ident(STAGING_TABLE);
        let create_staging = format!(
            "DROP TABLE IF EXISTS temp.{staging};\nCREATE TEMPORARY TABLE {staging} (\n  {},\n  {} INTEGER NOT NULL\n)",
            sql::column_defs(columns),
            quote_ident(SEQUENCE_COLUMN),
        );
        self.warehouse
            .step(name, "creating the staging table", move |conn| {
                conn.execute_batch(&create_staging)
            })
            .await?;
        let mut sink = StagingSink {
            warehouse: self.warehouse,
            dataset: name,
            insert: format!(
                "INSERT INTO {staging} ({}, {}) VALUES ({})",
                sql::column_list(columns, ""),
                quote_ident(SEQUENCE_COLUMN),
                (1..=columns.len() + 1)
                    .map(|i| format!("?{i}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            staged: 0,
        };
        let drained = drain_items(name, self.schema, items, &mut sink).await?;
        Ok(Staged::whole(sink.staged, drained))
    }

    async fn begin_write(self, _record: &LoadRecord) -> Result<Self, WarehouseError> {
        Ok(self)
    }

    async fn finish_empty(self) -> Result<(), WarehouseError> {
        WriteSteps::commit(self).await
    }

    async fn abandon(self) {
        WriteSteps::rollback(self).await
    }
}

impl WriteSteps for SqliteLoad<'_> {
    async fn write_target(&mut self) -> Result<u64, WarehouseError> {
        let write = upsert(self.dataset, &self.columns);
        let staging = quote_ident(STAGING_TABLE);
        self.warehouse
            .step(self.name(), "merging into the target", move |conn| {
                let written = conn.execute(&write, [])?;
                conn.execute_batch(&format!("DROP TABLE temp.{staging}"))?;
                Ok(written as u64)
            })
            .await
    }

    async fn record(&mut self, record: &LoadRecord) -> Result<(), WarehouseError> {
        self.warehouse.record(self.name(), record.clone()).await
    }

    async fn commit(self) -> Result<(), WarehouseError> {
        self.warehouse
            .step(self.name(), "committing", |conn| {
                conn.execute_batch("COMMIT")
            })
            .await
    }

    async fn rollback(self) {
        let rolled_back = self
            .warehouse
            .step(self.name(), "rolling back", |conn| {
                conn.execute_batch("ROLLBACK; DROP TABLE IF EXISTS temp._ingest_staging")
            })
            .await;
        if let Err(err) = rolled_back {
            tracing::warn!(error = %shared::error::Report(&err), "rolling back a failed load failed");
        }
    }
}

impl SqliteWarehouse {
    /// Writes the load's rejects, ledger rows and file parts.
    async fn record(&self, name: &str, record: LoadRecord) -> Result<(), WarehouseError> {
        let (rejects_table, ledger, file_loads, stream_loads) = (
            self.rejects(),
            self.ledger(),
            self.file_loads(),
            self.stream_loads(),
        );
        let dataset_name = name.to_owned();
        self.step(name, "writing rejects, ledger and file progress", move |conn| {
            let mut insert_reject = conn.prepare_cached(&format!(
                "INSERT INTO {rejects_table} (idempotency_key, dataset, source, row_number, raw, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
            ))?;
            for reject in &record.rejects {
                insert_reject.execute(params![
                    reject.key,
                    dataset_name,
                    reject.source,
                    reject.row_number,
                    reject.raw,
                    reject.reason
                ])?;
            }
            let mut insert_ledger = conn.prepare_cached(&format!(
                "INSERT INTO {ledger} (idempotency_key, dataset, source, rows_loaded, rows_rejected) VALUES (?1, ?2, ?3, ?4, ?5)"
            ))?;
            for row in &record.ledger {
                insert_ledger.execute(params![
                    row.key,
                    dataset_name,
                    row.source,
                    row.rows_loaded,
                    row.rows_rejected
                ])?;
            }
            let mut insert_stream = conn.prepare_cached(&format!(
                "INSERT INTO {stream_loads} (idempotency_key, dataset, stream, shard_id, first_sequence, last_sequence, records, newest_arrival_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
            ))?;
            for loaded in &record.streams {
                let part = &loaded.part;
                insert_stream.execute(params![
                    loaded.key,
                    dataset_name,
                    part.stream,
                    part.shard_id,
                    part.first_sequence,
                    part.last_sequence,
                    part.records,
                    part.newest_arrival_ms.map(iso_utc_millis)
                ])?;
            }
            record_parts(conn, &file_loads, &record.parts)
        })
        .await
    }
}

/// Upserts the staged rows into the target: on the dataset's key columns (the last
/// staged row of a key wins), or, without key columns, inserts the rows whose lineage is
/// new.
fn upsert(dataset: &Dataset, columns: &[ColumnDef]) -> String {
    let keyed = !dataset.key_columns.is_empty();
    let keys = merge_keys(dataset);
    let on_conflict = if keyed {
        let updates = columns
            .iter()
            .filter(|c| !keys.contains(&c.name))
            .map(|c| format!("{n} = excluded.{n}", n = quote_ident(&c.name)))
            .chain(std::iter::once(format!(
                "{} = {NOW}",
                quote_ident(lineage::LOADED_AT)
            )))
            .collect::<Vec<_>>()
            .join(", ");
        format!("DO UPDATE SET {updates}")
    } else {
        "DO NOTHING".to_owned()
    };
    // `WHERE true` keeps SQLite from reading `ON CONFLICT` as a join constraint.
    format!(
        "INSERT INTO {target} ({cols})\nSELECT {cols} FROM {source} WHERE true\nON CONFLICT ({key_list}) {on_conflict}",
        target = quote_ident(&table_name(&dataset.target)),
        cols = sql::column_list(columns, ""),
        source = sql::deduplicated_staging(columns, &keys),
        key_list = keys
            .iter()
            .map(|k| quote_ident(k))
            .collect::<Vec<_>>()
            .join(", "),
    )
}

/// Adds loaded parts to their files' rows; the part that completes a file stamps
/// `completed_at`. The write transaction already serialises writers.
fn record_parts(
    conn: &rusqlite::Connection,
    table: &str,
    parts: &[LoadedPart],
) -> rusqlite::Result<()> {
    for LoadedPart {
        part,
        rows,
        rejected,
    } in parts
    {
        let updated = conn.execute(
            &format!(
                "UPDATE {table} SET parts_loaded = parts_loaded + 1, rows_loaded = rows_loaded + ?2, rows_rejected = rows_rejected + ?3,
                 completed_at = CASE WHEN parts_loaded + 1 >= parts_total THEN {NOW} ELSE NULL END WHERE file_id = ?1"
            ),
            params![part.file_id, rows, rejected],
        )?;
        if updated == 0 {
            conn.execute(
                &format!(
                    "INSERT INTO {table} (file_id, dataset, bucket, object_key, version_id, etag, parts_total, parts_loaded, rows_loaded, rows_rejected, completed_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8, ?9, CASE WHEN ?7 <= 1 THEN {NOW} ELSE NULL END)"
                ),
                params![
                    part.file_id,
                    part.dataset,
                    part.bucket,
                    part.key,
                    part.version_id,
                    part.etag,
                    part.parts_total,
                    rows,
                    rejected
                ],
            )?;
        }
    }
    Ok(())
}

/// Writes staged batches into the temporary staging table.
struct StagingSink<'a> {
    warehouse: &'a SqliteWarehouse,
    dataset: &'a str,
    insert: String,
    staged: u64,
}

impl StagedRowsSink for StagingSink<'_> {
    async fn write(&mut self, batch: RecordBatch) -> Result<(), WarehouseError> {
        let rows = sqlite_rows(self.dataset, &batch)?;
        self.staged += rows.len() as u64;
        let insert = self.insert.clone();
        self.warehouse
            .step(self.dataset, "staging rows", move |conn| {
                let mut statement = conn.prepare_cached(&insert)?;
                for row in rows {
                    statement.execute(rusqlite::params_from_iter(row))?;
                }
                Ok(())
            })
            .await
    }
}

/// The batch's rows as SQLite values, column types converted as the module describes.
fn sqlite_rows(dataset: &str, batch: &RecordBatch) -> Result<Vec<Vec<Value>>, WarehouseError> {
    let convert_error = |column: &str, source: ArrowError| WarehouseError::Rows {
        dataset: dataset.to_owned(),
        action: format!("column {column:?} cannot be stored"),
        source,
    };
    let schema = batch.schema();
    let mut columns: Vec<Box<dyn Fn(usize) -> Value>> = Vec::with_capacity(batch.num_columns());
    for (field, array) in schema.fields().iter().zip(batch.columns()) {
        let to = match sqlite_type(field.data_type()) {
            Some("INTEGER") => DataType::Int64,
            Some("REAL") => DataType::Float64,
            Some(_) => DataType::Utf8,
            None => {
                return Err(WarehouseError::Schema {
                    dataset: dataset.to_owned(),
                    reason: format!(
                        "column {:?} cannot be stored: type {} has no mapping",
                        field.name(),
                        field.data_type()
                    ),
                });
            }
        };
        let converted: ArrayRef = match (field.data_type(), &to) {
            // ISO 8601 with microseconds and `Z`, so text order is time order.
            (DataType::Timestamp(_, _), _) => {
                let micros = cast(
                    array,
                    &DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Microsecond, None),
                )
                .map_err(|err| convert_error(field.name(), err))?;
                let micros = cast(&micros, &DataType::Int64)
                    .map_err(|err| convert_error(field.name(), err))?;
                let micros = micros.as_primitive::<Int64Type>().clone();
                let text: datafusion::arrow::array::StringArray = micros
                    .iter()
                    .map(|value| value.map(iso_utc_micros))
                    .collect();
                Arc::new(text)
            }
            _ => cast(array, &to).map_err(|err| convert_error(field.name(), err))?,
        };
        columns.push(match to {
            DataType::Int64 => {
                let values = converted.as_primitive::<Int64Type>().clone();
                Box::new(move |row| {
                    if values.is_null(row) {
                        Value::Null
                    } else {
                        Value::Integer(values.value(row))
                    }
                })
            }
            DataType::Float64 => {
                let values = converted.as_primitive::<Float64Type>().clone();
                Box::new(move |row| {
                    if values.is_null(row) {
                        Value::Null
                    } else {
                        Value::Real(values.value(row))
                    }
                })
            }
            _ => {
                let values = converted.as_string::<i32>().clone();
                Box::new(move |row| {
                    if values.is_null(row) {
                        Value::Null
                    } else {
                        Value::Text(values.value(row).to_owned())
                    }
                })
            }
        });
    }
    Ok((0..batch.num_rows())
        .map(|row| columns.iter().map(|column| column(row)).collect())
        .collect())
}

#[async_trait]
impl Warehouse for SqliteWarehouse {
    async fn ping(&self) -> Result<(), WarehouseError> {
        self.step("(platform)", "checking the database", |conn| {
            conn.query_row("SELECT 1", [], |_| Ok(()))
        })
        .await
    }

    async fn ensure_platform_tables(&self) -> Result<(), WarehouseError> {
        let (ledger, rejects, file_loads, stream_loads, targets) = (
            self.ledger(),
            self.rejects(),
            self.file_loads(),
            self.stream_loads(),
            self.targets(),
        );
        let statements = vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {ledger} (
  idempotency_key TEXT NOT NULL PRIMARY KEY,
  dataset TEXT NOT NULL,
  source TEXT NOT NULL,
  rows_loaded INTEGER NOT NULL,
  rows_rejected INTEGER NOT NULL,
  loaded_at TEXT NOT NULL DEFAULT ({NOW})
)"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {rejects} (
  idempotency_key TEXT NOT NULL,
  dataset TEXT NOT NULL,
  source TEXT NOT NULL,
  row_number INTEGER,
  raw TEXT,
  reason TEXT NOT NULL,
  rejected_at TEXT NOT NULL DEFAULT ({NOW})
)"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {file_loads} (
  file_id TEXT NOT NULL PRIMARY KEY,
  dataset TEXT NOT NULL,
  bucket TEXT NOT NULL,
  object_key TEXT NOT NULL,
  version_id TEXT,
  etag TEXT NOT NULL,
  parts_total INTEGER NOT NULL,
  parts_loaded INTEGER NOT NULL,
  rows_loaded INTEGER NOT NULL,
  rows_rejected INTEGER NOT NULL,
  first_loaded_at TEXT NOT NULL DEFAULT ({NOW}),
  completed_at TEXT,
  claimed_at TEXT,
  claim_token TEXT,
  published_at TEXT
)"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {stream_loads} (
  idempotency_key TEXT NOT NULL PRIMARY KEY,
  dataset TEXT NOT NULL,
  stream TEXT NOT NULL,
  shard_id TEXT NOT NULL,
  first_sequence TEXT NOT NULL,
  last_sequence TEXT NOT NULL,
  records INTEGER NOT NULL,
  newest_arrival_at TEXT,
  loaded_at TEXT NOT NULL DEFAULT ({NOW})
)"
            ),
            // Which dataset owns each target table: `a_b.c` and `a.b_c` would share one.
            format!(
                "CREATE TABLE IF NOT EXISTS {targets} (table_name TEXT NOT NULL PRIMARY KEY, target TEXT NOT NULL)"
            ),
        ];
        self.run_batch(
            "(platform)",
            "creating the ledger and rejects tables",
            statements,
        )
        .await
    }

    async fn ensure_target(
        &self,
        dataset: &Dataset,
        schema: &SchemaRef,
    ) -> Result<SchemaPlan, WarehouseError> {
        let columns = column_defs(&dataset.name, schema)?;
        let table = table_name(&dataset.target);
        let target = format!("{}.{}", dataset.target.schema, dataset.target.table);
        let create = create_target(dataset, &table, &columns);
        let targets = self.targets();
        let _gate = self.gate.lock().await;
        let (owned, owned_dataset) = ((table.clone(), target.clone()), dataset.clone());
        let (owner, plan) = self
            .step(&dataset.name, "creating or evolving the target table", move |conn| {
                let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                tx.execute(
                    &format!("INSERT INTO {targets} (table_name, target) VALUES (?1, ?2) ON CONFLICT (table_name) DO NOTHING"),
                    params![owned.0, owned.1],
                )?;
                let owner: String = tx.query_row(
                    &format!("SELECT target FROM {targets} WHERE table_name = ?1"),
                    params![owned.0],
                    |row| row.get(0),
                )?;
                let existing = describe_target(&tx, &owned.0)?;
                let plan = evolution::plan(&owned_dataset, &columns, existing.as_ref(), CAPABILITIES);
                if owner != owned.1 || plan.is_refused() {
                    return Ok((owner, plan)); // rolled back: nothing changes
                }
                // The index (after the table) is made again if it went missing.
                let quoted = quote_ident(&owned.0);
                let statements =
                    evolution::apply_statements(&plan, &quoted, &create, &create[1..], |_| true);
                for statement in &statements {
                    tx.execute_batch(statement)?;
                }
                tx.commit()?;
                Ok((owner, plan))
            })
            .await?;
        if owner != target {
            return Err(WarehouseError::Schema {
                dataset: dataset.name.clone(),
                reason: format!(
                    "target {target} and target {owner} both map to the embedded table {table}; rename one"
                ),
            });
        }
        if plan.is_refused() {
            return Err(WarehouseError::SchemaRefused { plans: vec![plan] });
        }
        Ok(plan)
    }

    async fn plan_target(
        &self,
        dataset: &Dataset,
        schema: &SchemaRef,
    ) -> Result<SchemaPlan, WarehouseError> {
        let columns = column_defs(&dataset.name, schema)?;
        let table = table_name(&dataset.target);
        let owned_dataset = dataset.clone();
        let _gate = self.gate.lock().await;
        self.step(&dataset.name, "reading the target table", move |conn| {
            let existing = describe_target(conn, &table)?;
            Ok(evolution::plan(
                &owned_dataset,
                &columns,
                existing.as_ref(),
                CAPABILITIES,
            ))
        })
        .await
    }

    async fn load(
        &self,
        dataset: &Dataset,
        schema: &SchemaRef,
        items: Vec<ItemSource>,
    ) -> Result<LoadReport, WarehouseError> {
        let name = dataset.name.as_str();
        let columns = column_defs(name, schema)?;
        let gate = self.gate.lock().await;
        self.step(name, "starting the load transaction", |conn| {
            conn.execute_batch("BEGIN IMMEDIATE")
        })
        .await?;
        let steps = SqliteLoad {
            warehouse: self,
            _gate: gate,
            dataset,
            schema,
            columns,
        };
        run_load(steps, items).await
    }

    /// Timestamps are ISO 8601 text in UTC, so a cut-off in the same form compares as text.
    async fn prune(&self, request: &PruneRequest) -> Result<PruneReport, WarehouseError> {
        let tables: Vec<(PlatformTable, String, String)> = request
            .tables()
            .into_iter()
            .filter_map(|(table, before)| {
                let name = match table {
                    PlatformTable::Rejects => self.rejects(),
                    PlatformTable::FileLoads => self.file_loads(),
                    PlatformTable::Ledger => self.ledger(),
                    PlatformTable::StreamLoads => self.stream_loads(),
                };
                Some((table, name, iso_utc_millis(epoch_millis(before?))))
            })
            .collect();
        let dry_run = request.dry_run;
        let _gate = self.gate.lock().await;
        self.step("(platform)", "pruning the platform tables", move |conn| {
            let mut report = PruneReport::default();
            for (table, name, before) in tables {
                let sql = prune_statement(&name, table, "?1", dry_run);
                let rows = if dry_run {
                    conn.query_row(&sql, params![before], |row| row.get::<_, i64>(0))?
                        .unsigned_abs()
                } else {
                    conn.execute(&sql, params![before])? as u64
                };
                report.add(table, rows);
            }
            Ok(report)
        })
        .await
    }

    async fn activity(
        &self,
        query: &activity::ActivityQuery,
    ) -> Result<Vec<activity::DatasetActivity>, WarehouseError> {
        let tables = (self.ledger(), self.file_loads(), self.stream_loads());
        let statements = activity::statements(
            (&tables.0, &tables.1, &tables.2),
            query,
            &platform_query::SQLITE,
        );
        let values = platform_query::sqlite_values(statements.ledger_bound.clone());
        let file_values = platform_query::sqlite_values(statements.file_bound.clone());
        let rows = self
            .step("(platform)", "counting loads", move |conn| {
                let params = || rusqlite::params_from_iter(values.clone());
                let totals = conn
                    .prepare(&statements.ledger_totals)?
                    .query_map(params(), |r| {
                        Ok((
                            r.get(0)?,
                            r.get(1)?,
                            r.get(2)?,
                            r.get(3)?,
                            r.get(4)?,
                            r.get(5)?,
                        ))
                    })?
                    .collect::<Result<Vec<activity::LedgerTotals>, _>>()?;
                let series = conn
                    .prepare(&statements.ledger_series)?
                    .query_map(params(), |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                    })?
                    .collect::<Result<Vec<activity::SeriesRow>, _>>()?;
                let files = conn
                    .prepare(&statements.file_totals)?
                    .query_map(rusqlite::params_from_iter(file_values), |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })?
                    .collect::<Result<Vec<activity::FileTotals>, _>>()?;
                let streams = conn
                    .prepare(&statements.stream_totals)?
                    .query_map(params(), |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<Vec<activity::StreamTotals>, _>>()?;
                Ok(activity::ActivityRows {
                    totals,
                    series,
                    files,
                    streams,
                })
            })
            .await?;
        Ok(activity::assemble(query, rows))
    }

    async fn trace_file(
        &self,
        keys: &[String],
        file_id: &str,
    ) -> Result<
        (
            Vec<load_trace::LedgerEntry>,
            Option<load_trace::FileLoadRow>,
        ),
        WarehouseError,
    > {
        let dialect = &platform_query::SQLITE;
        let lookups: Vec<(String, Vec<rusqlite::types::Value>)> = keys
            .chunks(load_trace::MAX_KEYS)
            .map(|chunk| {
                let (sql, bound) = load_trace::ledger_statement(&self.ledger(), chunk, dialect);
                (sql, platform_query::sqlite_values(bound))
            })
            .collect();
        let (file_sql, file_bound) =
            load_trace::file_statement(&self.file_loads(), file_id, dialect);
        let file_values = platform_query::sqlite_values(file_bound);
        self.step("(platform)", "reading the file's loads", move |conn| {
            let mut entries = Vec::new();
            for (sql, values) in lookups {
                let mut select = conn.prepare(&sql)?;
                let rows = select.query_map(rusqlite::params_from_iter(values), |r| {
                    Ok(load_trace::LedgerEntry {
                        idempotency_key: r.get(0)?,
                        rows_loaded: r.get(1)?,
                        rows_rejected: r.get(2)?,
                        loaded_at_ms: r.get(3)?,
                    })
                })?;
                for row in rows {
                    entries.push(row?);
                }
            }
            let file = conn
                .query_row(&file_sql, rusqlite::params_from_iter(file_values), |r| {
                    Ok(load_trace::FileLoadRow {
                        parts_total: r.get(0)?,
                        parts_loaded: r.get(1)?,
                        rows_loaded: r.get(2)?,
                        rows_rejected: r.get(3)?,
                        first_loaded_at_ms: r.get(4)?,
                        completed_at_ms: r.get(5)?,
                        published_at_ms: r.get(6)?,
                    })
                })
                .optional()?;
            Ok((entries, file))
        })
        .await
    }

    async fn find_rejects(&self, query: &RejectQuery) -> Result<Vec<FoundReject>, WarehouseError> {
        let (sql, bound) = rejects::statement(&self.rejects(), query, &platform_query::SQLITE);
        let values = platform_query::sqlite_values(bound);
        self.step("(platform)", "reading the rejects", move |conn| {
            let mut select = conn.prepare(&sql)?;
            select
                .query_map(rusqlite::params_from_iter(values), |row| {
                    Ok(FoundReject {
                        dataset: row.get(0)?,
                        source: row.get(1)?,
                        row_number: row.get(2)?,
                        raw: row.get(3)?,
                        reason: row.get(4)?,
                        rejected_at: row.get(5)?,
                    })
                })?
                .collect()
        })
        .await
    }

    async fn claim_file_completion(
        &self,
        file_id: &str,
        claimant: &str,
    ) -> Result<Claim, WarehouseError> {
        let table = self.file_loads();
        let file_id = file_id.to_owned();
        let claimant = claimant.to_owned();
        let _gate = self.gate.lock().await;
        self.step("(platform)", "claiming a completed file", move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let row = tx
                .query_row(
                    &format!(
                        "SELECT dataset, bucket, object_key, version_id, etag, parts_total, rows_loaded, rows_rejected,
                         completed_at IS NOT NULL, published_at IS NOT NULL,
                         claimed_at IS NOT NULL AND claimed_at > strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-{} seconds'),
                         claim_token
                         FROM {table} WHERE file_id = ?1",
                        files::CLAIM_TIMEOUT_SECS
                    ),
                    params![file_id],
                    |row| {
                        Ok((
                            FileCompletion {
                                file_id: file_id.clone(),
                                claim_token: files::new_claim_token(&claimant),
                                dataset: row.get(0)?,
                                bucket: row.get(1)?,
                                key: row.get(2)?,
                                version_id: row.get(3)?,
                                etag: row.get(4)?,
                                parts: row.get(5)?,
                                rows_loaded: row.get(6)?,
                                rows_rejected: row.get(7)?,
                            },
                            files::unclaimable(
                                row.get(8)?,
                                row.get(9)?,
                                row.get(10)?,
                                row.get::<_, Option<String>>(11)?.as_deref(),
                                &claimant,
                            ),
                        ))
                    },
                )
                .optional()?;
            let claim = match row {
                None => Claim::NotComplete,
                Some((_, Some(found))) => found,
                Some((completion, None)) => {
                    tx.execute(
                        &format!("UPDATE {table} SET claimed_at = {NOW}, claim_token = ?2 WHERE file_id = ?1"),
                        params![completion.file_id, completion.claim_token],
                    )?;
                    Claim::Claimed(completion)
                }
            };
            tx.commit()?;
            Ok(claim)
        })
        .await
    }

    async fn finish_file_claim(
        &self,
        completion: &FileCompletion,
        published: bool,
    ) -> Result<(), WarehouseError> {
        let table = self.file_loads();
        let statement = if published {
            format!(
                "UPDATE {table} SET published_at = {NOW} WHERE file_id = ?1 AND claim_token = ?2"
            )
        } else {
            format!(
                "UPDATE {table} SET claimed_at = NULL, claim_token = NULL WHERE file_id = ?1 AND claim_token = ?2"
            )
        };
        let (file_id, token) = (completion.file_id.clone(), completion.claim_token.clone());
        let _gate = self.gate.lock().await;
        self.step("(platform)", "finishing a file's claim", move |conn| {
            conn.execute(&statement, params![file_id, token])
                .map(|_| ())
        })
        .await
    }
}
