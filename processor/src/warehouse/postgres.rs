//! The PostgreSQL sink: binary `COPY FROM STDIN` into a temporary staging table, then
//! `MERGE` (or a lineage-checked append), rejects and ledger in the same transaction.

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use futures::SinkExt;
use shared::catalog::Dataset;
use tokio_postgres::Client;

use super::connection::{Connection, Connector, statement_error};
use super::pg_binary::{self, pg_type};
use super::sql::{self, ColumnDef, SEQUENCE_COLUMN, quote_ident};
use super::{
    Drained, ItemSource, LoadReport, StagedRowsSink, Warehouse, WarehouseError, drain_items,
    fresh_items, merge_keys,
};

/// COPY data is sent in chunks of about this size.
const COPY_CHUNK_BYTES: usize = 1 << 20;

/// A PostgreSQL warehouse over one connection (one per worker).
#[derive(Debug)]
pub struct PostgresWarehouse {
    connection: Connection,
    platform_schema: String,
}

/// The warehouse columns of a load schema.
pub fn column_defs(dataset: &str, schema: &Schema) -> Result<Vec<ColumnDef>, WarehouseError> {
    schema
        .fields()
        .iter()
        .map(|field| {
            let sql_type = pg_type(field.data_type()).ok_or_else(|| WarehouseError::Schema {
                dataset: dataset.to_owned(),
                reason: format!(
                    "column {:?} has type {} with no warehouse mapping",
                    field.name(),
                    field.data_type()
                ),
            })?;
            Ok(ColumnDef {
                name: field.name().clone(),
                sql_type,
                nullable: field.is_nullable(),
            })
        })
        .collect()
}

impl PostgresWarehouse {
    /// Connects without TLS; `platform_schema` holds the ledger and rejects tables.
    pub async fn connect(url: &str, platform_schema: &str) -> Result<Self, WarehouseError> {
        Self::connect_with(url, Connector::Plain, platform_schema).await
    }

    pub async fn connect_with(
        url: &str,
        connector: Connector,
        platform_schema: &str,
    ) -> Result<Self, WarehouseError> {
        Ok(Self {
            connection: Connection::open(url, connector).await?,
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
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(statement_error(dataset, action))?;
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('redshift-ingest ddl', 0))",
            &[],
        )
        .await
        .map_err(statement_error(dataset, action))?;
        for statement in statements {
            tx.batch_execute(statement)
                .await
                .map_err(statement_error(dataset, action))?;
        }
        tx.commit().await.map_err(statement_error(dataset, action))
    }

    fn ledger(&self) -> String {
        format!("{}.\"load_ledger\"", quote_ident(&self.platform_schema))
    }

    fn rejects(&self) -> String {
        format!("{}.\"rejects\"", quote_ident(&self.platform_schema))
    }
}

#[async_trait]
impl Warehouse for PostgresWarehouse {
    async fn ping(&self) -> Result<(), WarehouseError> {
        self.connection.ping().await
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
    ) -> Result<(), WarehouseError> {
        let columns = column_defs(&dataset.name, schema)?;
        let keys = merge_keys(dataset);
        let index = format!(
            "CREATE UNIQUE INDEX IF NOT EXISTS {} ON {} ({})",
            quote_ident(&format!("{}_merge_key", dataset.target.table)),
            sql::qualified(&dataset.target),
            keys.iter()
                .map(|k| quote_ident(k))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let statements = [
            sql::create_schema(&dataset.target.schema),
            sql::create_target_table(&dataset.target, &columns, sql::POSTGRES),
            index,
        ];
        self.run_ddl(&dataset.name, "creating the target table", &statements)
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
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(statement_error(name, "starting the load transaction"))?;

        // Serialise loads of the same keys across workers and tasks: whoever comes second
        // waits, then finds the key in the ledger.
        let mut keys: Vec<&str> = items.iter().map(|i| i.key.as_str()).collect();
        keys.sort_unstable();
        keys.dedup();
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM unnest($1::text[]) AS k ORDER BY k",
            &[&keys],
        )
        .await
        .map_err(statement_error(name, "locking the idempotency keys"))?;
        let loaded: Vec<String> = tx
            .query(
                &format!(
                    "SELECT idempotency_key FROM {} WHERE idempotency_key = ANY($1)",
                    self.ledger()
                ),
                &[&keys],
            )
            .await
            .map_err(statement_error(name, "reading the load ledger"))?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let (mut fresh, items_skipped) = fresh_items(items, &loaded);
        let mut report = LoadReport {
            items_skipped,
            ..LoadReport::default()
        };
        if fresh.is_empty() {
            tx.commit()
                .await
                .map_err(statement_error(name, "committing"))?;
            return Ok(report);
        }

        tx.batch_execute(&sql::create_staging_table(&columns))
            .await
            .map_err(statement_error(name, "creating the staging table"))?;
        let copy = format!(
            "COPY {} ({}, {}) FROM STDIN (FORMAT binary)",
            quote_ident(sql::STAGING_TABLE),
            columns
                .iter()
                .map(|c| quote_ident(&c.name))
                .collect::<Vec<_>>()
                .join(", "),
            quote_ident(SEQUENCE_COLUMN)
        );
        let sink = tx
            .copy_in::<_, Bytes>(&copy)
            .await
            .map_err(statement_error(name, "starting COPY"))?;
        let sink = Box::pin(sink);
        let mut copy_sink = CopySink {
            sink,
            buffer: Vec::with_capacity(COPY_CHUNK_BYTES + 64 * 1024),
            dataset: name,
        };
        pg_binary::write_header(&mut copy_sink.buffer);
        let drained = drain_items(name, schema, &mut fresh, &mut copy_sink).await?;
        let CopySink {
            mut sink,
            mut buffer,
            ..
        } = copy_sink;
        let Drained {
            rows_per_item,
            rejects_per_item,
        } = drained;
        pg_binary::write_trailer(&mut buffer);
        sink.send(Bytes::from(buffer))
            .await
            .map_err(statement_error(name, "sending COPY data"))?;
        report.rows_staged = sink
            .as_mut()
            .finish()
            .await
            .map_err(statement_error(name, "finishing COPY"))?;

        let write = if dataset.key_columns.is_empty() {
            sql::append_new_lineage(&dataset.target, &columns)
        } else {
            sql::merge_on_key(&dataset.target, &columns, &dataset.key_columns)
        };
        report.rows_written = tx
            .execute(&write, &[])
            .await
            .map_err(statement_error(name, "merging into the target"))?;

        let mut reject_keys = Vec::new();
        let mut reject_sources = Vec::new();
        let mut reject_rows: Vec<Option<i64>> = Vec::new();
        let mut reject_raw: Vec<Option<String>> = Vec::new();
        let mut reject_reasons = Vec::new();
        for (item, rejects) in fresh.iter().zip(&rejects_per_item) {
            for reject in rejects {
                reject_keys.push(item.key.as_str());
                reject_sources.push(item.source.as_str());
                reject_rows.push(reject.row_number.and_then(|n| i64::try_from(n).ok()));
                // PostgreSQL text cannot hold NUL.
                reject_raw.push(reject.raw.as_ref().map(|raw| raw.replace('\0', "\u{FFFD}")));
                reject_reasons.push(reject.reason.replace('\0', "\u{FFFD}"));
            }
        }
        report.rows_rejected = reject_keys.len() as u64;
        if !reject_keys.is_empty() {
            tx.execute(
                &format!(
                    "INSERT INTO {} (idempotency_key, dataset, source, row_number, raw, reason)
                     SELECT k, $2, s, n, r, why FROM unnest($1::text[], $3::text[], $4::bigint[], $5::text[], $6::text[]) AS t(k, s, n, r, why)",
                    self.rejects()
                ),
                &[&reject_keys, &name, &reject_sources, &reject_rows, &reject_raw, &reject_reasons],
            )
            .await
            .map_err(statement_error(name, "writing rejects"))?;
        }

        let ledger_keys: Vec<&str> = fresh.iter().map(|i| i.key.as_str()).collect();
        let ledger_sources: Vec<&str> = fresh.iter().map(|i| i.source.as_str()).collect();
        let ledger_rejects: Vec<i64> = rejects_per_item.iter().map(|r| r.len() as i64).collect();
        tx.execute(
            &format!(
                "INSERT INTO {} (idempotency_key, dataset, source, rows_loaded, rows_rejected)
                 SELECT k, $2, s, n, r FROM unnest($1::text[], $3::text[], $4::bigint[], $5::bigint[]) AS t(k, s, n, r)",
                self.ledger()
            ),
            &[&ledger_keys, &name, &ledger_sources, &rows_per_item, &ledger_rejects],
        )
        .await
        .map_err(statement_error(name, "writing the load ledger"))?;
        tx.commit()
            .await
            .map_err(statement_error(name, "committing"))?;
        report.items_loaded = fresh.len();
        Ok(report)
    }
}

/// Binary COPY data, sent in chunks of about [`COPY_CHUNK_BYTES`].
struct CopySink<'a> {
    sink: std::pin::Pin<Box<tokio_postgres::CopyInSink<Bytes>>>,
    buffer: Vec<u8>,
    dataset: &'a str,
}

impl StagedRowsSink for CopySink<'_> {
    async fn write(&mut self, batch: RecordBatch) -> Result<(), WarehouseError> {
        let dataset = self.dataset;
        pg_binary::write_batch(&batch, &mut self.buffer).map_err(|source| {
            WarehouseError::Encode {
                dataset: dataset.to_owned(),
                source,
            }
        })?;
        if self.buffer.len() >= COPY_CHUNK_BYTES {
            let chunk = Bytes::from(std::mem::replace(
                &mut self.buffer,
                Vec::with_capacity(COPY_CHUNK_BYTES + 64 * 1024),
            ));
            self.sink
                .send(chunk)
                .await
                .map_err(statement_error(dataset, "sending COPY data"))?;
        }
        Ok(())
    }
}
