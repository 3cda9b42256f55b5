//! The PostgreSQL sink: binary `COPY FROM STDIN` into a temporary staging table, then
//! `MERGE` (or a lineage-checked append), rejects and ledger in the same transaction.

pub mod binary_copy;

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use futures::SinkExt;
use shared::catalog::Dataset;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Transaction};

use super::connection::{Connection, Connector, Login, statement_error};
use super::evolution::{Capabilities, SchemaPlan};
use super::files;
use super::protocol::{LoadSteps, Staged, WriteSteps, run_load};
use super::sql::{self, ColumnDef, SEQUENCE_COLUMN, quote_ident};
use super::streams::{self, StreamPart};
use super::target_table::{self, TargetSetup};
use super::{
    Drained, ItemSource, LoadRecord, LoadReport, StagedRowsSink, Warehouse, WarehouseError,
    drain_items, merge_keys,
};
use binary_copy::{self as pg_binary, pg_type};

/// COPY data is sent in chunks of about this size.
const COPY_CHUNK_BYTES: usize = 1 << 20;

/// A PostgreSQL warehouse over one connection (one per worker).
#[derive(Debug)]
pub struct PostgresWarehouse {
    connection: Connection,
    platform_schema: String,
}

/// The warehouse columns of a load schema.
pub(crate) fn column_defs(
    dataset: &str,
    schema: &Schema,
) -> Result<Vec<ColumnDef>, WarehouseError> {
    sql::typed_columns(dataset, schema, "warehouse", |field| {
        pg_type(field.data_type())
    })
}

/// The target's columns, and how PostgreSQL creates it (schema, table, unique index on the
/// merge key) and changes it: every safe widening and `DROP NOT NULL`, in one transaction
/// under the DDL lock.
fn target(
    dataset: &Dataset,
    schema: &Schema,
) -> Result<(Vec<ColumnDef>, TargetSetup), WarehouseError> {
    let columns = column_defs(&dataset.name, schema)?;
    let keys = merge_keys(dataset);
    let index = format!(
        "CREATE UNIQUE INDEX IF NOT EXISTS {} ON {} ({})",
        quote_ident(&merge_key_index(dataset)),
        sql::qualified(&dataset.target),
        keys.iter()
            .map(|k| quote_ident(k))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let setup = TargetSetup {
        lock: DDL_LOCK.to_owned(),
        create: vec![
            sql::create_schema(&dataset.target.schema),
            sql::create_target_table(&dataset.target, &columns, sql::POSTGRES),
            index.clone(),
        ],
        keep: vec![index],
        capabilities: Capabilities {
            widen_numbers: true,
            widen_strings: true,
            drop_not_null: true,
        },
        key_index: Some(merge_key_index(dataset)),
        widen_outside_transaction: false,
    };
    Ok((columns, setup))
}

/// Serialises the platform's DDL across tasks.
const DDL_LOCK: &str = "SELECT pg_advisory_xact_lock(hashtextextended('redshift-ingest ddl', 0))";

impl PostgresWarehouse {
    /// Connects without TLS; `platform_schema` holds the ledger and rejects tables.
    pub async fn connect(url: &str, platform_schema: &str) -> Result<Self, WarehouseError> {
        Self::connect_with(url, Connector::Plain, Login::Url, platform_schema).await
    }

    pub async fn connect_with(
        url: &str,
        connector: Connector,
        login: Login,
        platform_schema: &str,
    ) -> Result<Self, WarehouseError> {
        Ok(Self {
            connection: Connection::open_with(url, connector, login).await?,
            platform_schema: platform_schema.to_owned(),
        })
    }

    async fn client(&self) -> Result<tokio::sync::MutexGuard<'_, Client>, WarehouseError> {
        self.connection.client().await
    }

    /// Runs DDL in one transaction under a cluster-wide advisory lock: concurrent
    /// `CREATE … IF NOT EXISTS` from several starting tasks would otherwise race and fail.
    async fn run_ddl(
        &self,
        dataset: &str,
        action: &'static str,
        statements: &[String],
    ) -> Result<(), WarehouseError> {
        let locked: Vec<String> = std::iter::once(DDL_LOCK.to_owned())
            .chain(statements.iter().cloned())
            .collect();
        self.connection
            .run_in_transaction(dataset, action, &locked)
            .await
    }

    fn ledger(&self) -> String {
        sql::ledger_table(&self.platform_schema)
    }

    fn rejects(&self) -> String {
        sql::rejects_table(&self.platform_schema)
    }

    fn file_loads(&self) -> String {
        files::file_loads_table(&self.platform_schema)
    }

    fn stream_loads(&self) -> String {
        streams::stream_loads_table(&self.platform_schema)
    }
}

#[async_trait]
impl Warehouse for PostgresWarehouse {
    async fn ping(&self) -> Result<(), WarehouseError> {
        self.connection.ping().await
    }

    async fn prune(
        &self,
        request: &super::retention::PruneRequest,
    ) -> Result<super::retention::PruneReport, WarehouseError> {
        super::retention::prune(&self.connection, &self.platform_schema, request).await
    }

    async fn activity(
        &self,
        query: &super::activity::ActivityQuery,
    ) -> Result<Vec<super::activity::DatasetActivity>, WarehouseError> {
        super::activity::count(
            &self.connection,
            (&self.ledger(), &self.file_loads(), &self.stream_loads()),
            query,
        )
        .await
    }

    async fn trace_file(
        &self,
        keys: &[String],
        file_id: &str,
    ) -> Result<
        (
            Vec<super::load_trace::LedgerEntry>,
            Option<super::load_trace::FileLoadRow>,
        ),
        WarehouseError,
    > {
        super::load_trace::find(
            &self.connection,
            &self.ledger(),
            &self.file_loads(),
            keys,
            file_id,
        )
        .await
    }

    async fn find_rejects(
        &self,
        query: &super::rejects::RejectQuery,
    ) -> Result<Vec<super::rejects::FoundReject>, WarehouseError> {
        let table = super::sql::rejects_table(&self.platform_schema);
        super::rejects::find(&self.connection, &table, query).await
    }

    async fn claim_file_completion(
        &self,
        file_id: &str,
        claimant: &str,
    ) -> Result<files::Claim, WarehouseError> {
        files::claim(
            &self.connection,
            &self.file_loads(),
            sql::POSTGRES,
            file_id,
            claimant,
        )
        .await
    }

    async fn finish_file_claim(
        &self,
        completion: &files::FileCompletion,
        published: bool,
    ) -> Result<(), WarehouseError> {
        files::finish_claim(
            &self.connection,
            &self.file_loads(),
            sql::POSTGRES,
            completion,
            published,
        )
        .await
    }

    async fn ensure_platform_tables(&self) -> Result<(), WarehouseError> {
        let statements = sql::platform_tables(&self.platform_schema, sql::POSTGRES);
        self.run_ddl(
            "(platform)",
            "creating the ledger and rejects tables",
            &statements,
        )
        .await
    }

    async fn ensure_target(
        &self,
        dataset: &Dataset,
        schema: &SchemaRef,
    ) -> Result<SchemaPlan, WarehouseError> {
        let (columns, setup) = target(dataset, schema)?;
        target_table::ensure(&self.connection, dataset, &columns, &setup).await
    }

    async fn plan_target(
        &self,
        dataset: &Dataset,
        schema: &SchemaRef,
    ) -> Result<SchemaPlan, WarehouseError> {
        let (columns, setup) = target(dataset, schema)?;
        target_table::plan(&self.connection, dataset, &columns, &setup).await
    }

    async fn load(
        &self,
        dataset: &Dataset,
        schema: &SchemaRef,
        items: Vec<ItemSource>,
    ) -> Result<LoadReport, WarehouseError> {
        let columns = column_defs(&dataset.name, schema)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(statement_error(
            &dataset.name,
            "starting the load transaction",
        ))?;
        let steps = PostgresLoad {
            warehouse: self,
            tx,
            dataset,
            schema,
            columns,
            copied_directly: None,
        };
        run_load(steps, items).await
    }
}

/// One load, in one transaction from the key locks to the commit.
struct PostgresLoad<'a> {
    warehouse: &'a PostgresWarehouse,
    tx: Transaction<'a>,
    dataset: &'a Dataset,
    schema: &'a SchemaRef,
    columns: Vec<ColumnDef>,
    /// Rows a direct COPY wrote into the target: nothing is left to merge.
    copied_directly: Option<u64>,
}

impl PostgresLoad<'_> {
    fn name(&self) -> &str {
        &self.dataset.name
    }
}

impl LoadSteps for PostgresLoad<'_> {
    type Write = Self;

    /// Serialises loads of the same keys across workers and tasks (whoever comes second
    /// waits, then finds the key in the ledger).
    async fn loaded_keys(&mut self, keys: &[&str]) -> Result<Vec<String>, WarehouseError> {
        self.tx
            .execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM unnest($1::text[]) AS k ORDER BY k",
                &[&keys],
            )
            .await
            .map_err(statement_error(self.name(), "locking the idempotency keys"))?;
        let rows = self
            .tx
            .query(
                &format!(
                    "SELECT idempotency_key FROM {} WHERE idempotency_key = ANY($1)",
                    self.warehouse.ledger()
                ),
                &[&keys],
            )
            .await
            .map_err(statement_error(self.name(), "reading the load ledger"))?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    /// Straight into the target by COPY when that can work, else into the staging table.
    async fn stage(&mut self, items: &mut [ItemSource]) -> Result<Staged, WarehouseError> {
        let (tx, dataset, schema, columns) = (&self.tx, self.dataset, self.schema, &self.columns);
        if let Some((rows, drained)) = try_direct_copy(tx, dataset, schema, columns, items).await? {
            self.copied_directly = Some(rows);
            return Ok(Staged::whole(rows, drained));
        }
        tx.batch_execute(&sql::create_staging_table(columns))
            .await
            .map_err(statement_error(&dataset.name, "creating the staging table"))?;
        let (rows, drained) =
            copy_rows(tx, &dataset.name, schema, columns, items, CopyInto::Staging)
                .await
                .map_err(CopyFailure::into_error)?;
        Ok(Staged::whole(rows, drained))
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

impl WriteSteps for PostgresLoad<'_> {
    /// A merge on the key, or an append of the rows whose lineage is new.
    async fn write_target(&mut self) -> Result<u64, WarehouseError> {
        if let Some(rows) = self.copied_directly {
            return Ok(rows);
        }
        let (dataset, columns) = (self.dataset, &self.columns);
        let write = if dataset.key_columns.is_empty() {
            sql::append_new_lineage(&dataset.target, columns)
        } else {
            sql::merge_on_key(&dataset.target, columns, &dataset.key_columns)
        };
        self.tx
            .execute(&write, &[])
            .await
            .map_err(statement_error(&dataset.name, "merging into the target"))
    }

    async fn record(&mut self, record: &LoadRecord) -> Result<(), WarehouseError> {
        let (tx, name) = (&self.tx, self.dataset.name.as_str());
        let rejects = &record.rejects;
        let keys: Vec<&str> = rejects.iter().map(|r| r.key.as_str()).collect();
        let sources: Vec<&str> = rejects.iter().map(|r| r.source.as_str()).collect();
        let rows: Vec<Option<i64>> = rejects.iter().map(|r| r.row_number).collect();
        let raw: Vec<Option<String>> = rejects
            .iter()
            .map(|r| r.raw.as_deref().map(sql::storable_text))
            .collect();
        let reasons: Vec<String> = rejects
            .iter()
            .map(|r| sql::storable_text(&r.reason))
            .collect();
        if !rejects.is_empty() {
            tx.execute(
                &format!(
                    "INSERT INTO {} (idempotency_key, dataset, source, row_number, raw, reason)
                     SELECT k, $2, s, n, r, why FROM unnest($1::text[], $3::text[], $4::bigint[], $5::text[], $6::text[]) AS t(k, s, n, r, why)",
                    self.warehouse.rejects()
                ),
                &[&keys, &name, &sources, &rows, &raw, &reasons],
            )
            .await
            .map_err(statement_error(name, "writing rejects"))?;
        }
        let ledger = &record.ledger;
        let keys: Vec<&str> = ledger.iter().map(|r| r.key.as_str()).collect();
        let sources: Vec<&str> = ledger.iter().map(|r| r.source.as_str()).collect();
        let loaded: Vec<i64> = ledger.iter().map(|r| r.rows_loaded).collect();
        let rejected: Vec<i64> = ledger.iter().map(|r| r.rows_rejected).collect();
        tx.execute(
            &format!(
                "INSERT INTO {} (idempotency_key, dataset, source, rows_loaded, rows_rejected)
                 SELECT k, $2, s, n, r FROM unnest($1::text[], $3::text[], $4::bigint[], $5::bigint[]) AS t(k, s, n, r)",
                self.warehouse.ledger()
            ),
            &[&keys, &name, &sources, &loaded, &rejected],
        )
        .await
        .map_err(statement_error(name, "writing the load ledger"))?;
        if !record.streams.is_empty() {
            let streams = &record.streams;
            let keys: Vec<&str> = streams.iter().map(|s| s.key.as_str()).collect();
            let text = |field: fn(&StreamPart) -> &str| -> Vec<&str> {
                streams.iter().map(|s| field(&s.part)).collect()
            };
            let names = text(|p| p.stream.as_str());
            let shards = text(|p| p.shard_id.as_str());
            let firsts = text(|p| p.first_sequence.as_str());
            let lasts = text(|p| p.last_sequence.as_str());
            let records: Vec<i64> = streams.iter().map(|s| s.part.records).collect();
            let arrivals: Vec<Option<std::time::SystemTime>> = streams
                .iter()
                .map(|s| {
                    s.part
                        .newest_arrival_ms
                        .map(shared::stream::from_epoch_millis)
                })
                .collect();
            tx.execute(
                &format!(
                    "INSERT INTO {} ({})
                     SELECT k, $2, s, h, f, l, n, a FROM unnest($1::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[], $8::timestamptz[]) AS t(k, s, h, f, l, n, a)",
                    self.warehouse.stream_loads(),
                    streams::COLUMNS.map(sql::quote_ident).join(", ")
                ),
                &[&keys, &name, &names, &shards, &firsts, &lasts, &records, &arrivals],
            )
            .await
            .map_err(statement_error(name, "writing the stream progress"))?;
        }
        files::record_parts(
            tx,
            &self.warehouse.file_loads(),
            sql::POSTGRES,
            &record.parts,
        )
        .await
    }

    async fn commit(self) -> Result<(), WarehouseError> {
        let name = self.dataset.name.clone();
        self.tx
            .commit()
            .await
            .map_err(statement_error(&name, "committing"))
    }

    async fn rollback(self) {
        if let Err(err) = self.tx.rollback().await {
            tracing::warn!(error = %shared::error::Report(&err), "rolling back a failed load failed");
        }
    }
}

/// The fast path for a load of one item that can be read again: COPY straight into the
/// target. Any clash with a row already there (or two rows of one key) is a unique
/// violation: roll back to the savepoint, restart the item's rows and return `None` so the
/// staging path takes over.
async fn try_direct_copy(
    tx: &Transaction<'_>,
    dataset: &Dataset,
    schema: &SchemaRef,
    columns: &[ColumnDef],
    fresh: &mut [ItemSource],
) -> Result<Option<(u64, Drained)>, WarehouseError> {
    let name = dataset.name.as_str();
    let [only] = &mut *fresh else {
        return Ok(None);
    };
    let Some(again) = only.rows.restart() else {
        return Ok(None);
    };
    if !has_merge_key_index(tx, dataset).await? {
        return Ok(None);
    }
    tx.batch_execute("SAVEPOINT ingest_direct_copy")
        .await
        .map_err(statement_error(name, "starting the direct COPY"))?;
    let into = CopyInto::Target(&dataset.target);
    match copy_rows(tx, name, schema, columns, fresh, into).await {
        Ok(copied) => Ok(Some(copied)),
        Err(CopyFailure::Conflict) => {
            tx.batch_execute("ROLLBACK TO SAVEPOINT ingest_direct_copy")
                .await
                .map_err(statement_error(name, "abandoning the direct COPY"))?;
            fresh[0].rows = again;
            tracing::debug!(
                dataset = name,
                "rows clash with the target; merging through staging"
            );
            Ok(None)
        }
        Err(CopyFailure::Other(err)) => Err(err),
    }
}

/// The unique index on the merge key that `ensure_target` creates.
fn merge_key_index(dataset: &Dataset) -> String {
    format!("{}_merge_key", dataset.target.table)
}

/// Whether the target has its unique merge-key index: without it a direct COPY could not
/// see a clash, so it is only tried when the index is there.
async fn has_merge_key_index(
    tx: &tokio_postgres::Transaction<'_>,
    dataset: &Dataset,
) -> Result<bool, WarehouseError> {
    let row = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_indexes WHERE schemaname = $1 AND tablename = $2 AND indexname = $3)",
            &[&dataset.target.schema, &dataset.target.table, &merge_key_index(dataset)],
        )
        .await
        .map_err(statement_error(&dataset.name, "looking up the merge-key index"))?;
    Ok(row.get(0))
}

/// Where [`copy_rows`] writes.
enum CopyInto<'a> {
    /// The temporary staging table, with the sequence column.
    Staging,
    /// The target itself, without it.
    Target(&'a shared::catalog::TableName),
}

enum CopyFailure {
    /// A row clashed with a unique key of the target.
    Conflict,
    Other(WarehouseError),
}

impl CopyFailure {
    fn into_error(self) -> WarehouseError {
        match self {
            CopyFailure::Other(err) => err,
            // Only a COPY into the target can clash; the staging table has no keys.
            CopyFailure::Conflict => WarehouseError::Schema {
                dataset: "(staging)".to_owned(),
                reason: "unexpected unique violation in the staging table".to_owned(),
            },
        }
    }
}

/// Binary COPY of every item's rows; returns the rows the server took.
async fn copy_rows(
    tx: &tokio_postgres::Transaction<'_>,
    name: &str,
    schema: &SchemaRef,
    columns: &[ColumnDef],
    items: &mut [ItemSource],
    into: CopyInto<'_>,
) -> Result<(u64, Drained), CopyFailure> {
    let mut column_names: Vec<String> = columns.iter().map(|c| quote_ident(&c.name)).collect();
    let (table, with_sequence) = match into {
        CopyInto::Staging => {
            column_names.push(quote_ident(SEQUENCE_COLUMN));
            (quote_ident(sql::STAGING_TABLE), true)
        }
        CopyInto::Target(target) => (sql::qualified(target), false),
    };
    let copy = format!(
        "COPY {table} ({}) FROM STDIN (FORMAT binary)",
        column_names.join(", ")
    );
    let conflict_or = |action: &'static str| {
        move |err: tokio_postgres::Error| {
            if err.code() == Some(&SqlState::UNIQUE_VIOLATION) {
                CopyFailure::Conflict
            } else {
                CopyFailure::Other(statement_error(name, action)(err))
            }
        }
    };
    let sink = tx
        .copy_in::<_, Bytes>(&copy)
        .await
        .map_err(conflict_or("starting COPY"))?;
    let mut copy_sink = CopySink {
        dataset: name,
        sink: Box::pin(sink),
        buffer: Vec::with_capacity(COPY_CHUNK_BYTES + 64 * 1024),
        with_sequence,
        conflict: false,
    };
    pg_binary::write_header(&mut copy_sink.buffer);
    let drained = match drain_items(name, schema, items, &mut copy_sink).await {
        Ok(drained) => drained,
        Err(_) if copy_sink.conflict => return Err(CopyFailure::Conflict),
        Err(err) => return Err(CopyFailure::Other(err)),
    };
    let CopySink {
        mut sink,
        mut buffer,
        ..
    } = copy_sink;
    pg_binary::write_trailer(&mut buffer);
    sink.send(Bytes::from(buffer))
        .await
        .map_err(conflict_or("sending COPY data"))?;
    let copied = sink
        .as_mut()
        .finish()
        .await
        .map_err(conflict_or("finishing COPY"))?;
    Ok((copied, drained))
}

/// Binary COPY data, sent in chunks of about [`COPY_CHUNK_BYTES`].
struct CopySink<'a> {
    dataset: &'a str,
    sink: std::pin::Pin<Box<tokio_postgres::CopyInSink<Bytes>>>,
    buffer: Vec<u8>,
    /// Whether the staged sequence column (the last) is sent.
    with_sequence: bool,
    /// Whether sending failed on a unique violation (a key clash with the target).
    conflict: bool,
}

impl StagedRowsSink for CopySink<'_> {
    async fn write(&mut self, batch: RecordBatch) -> Result<(), WarehouseError> {
        let batch = if self.with_sequence {
            batch
        } else {
            let keep: Vec<usize> = (0..batch.num_columns() - 1).collect();
            batch
                .project(&keep)
                .map_err(|source| WarehouseError::Rows {
                    dataset: self.dataset.to_owned(),
                    action: "cannot leave out the columns the target lacks".into(),
                    source,
                })?
        };
        pg_binary::write_batch(&batch, &mut self.buffer).map_err(|source| {
            WarehouseError::Encode {
                dataset: self.dataset.to_owned(),
                source,
            }
        })?;
        if self.buffer.len() >= COPY_CHUNK_BYTES {
            let chunk = Bytes::from(std::mem::replace(
                &mut self.buffer,
                Vec::with_capacity(COPY_CHUNK_BYTES + 64 * 1024),
            ));
            if let Err(err) = self.sink.send(chunk).await {
                self.conflict = err.code() == Some(&SqlState::UNIQUE_VIOLATION);
                return Err(statement_error(self.dataset, "sending COPY data")(err));
            }
        }
        Ok(())
    }
}
