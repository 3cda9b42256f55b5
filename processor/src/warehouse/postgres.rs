//! The PostgreSQL sink: binary `COPY FROM STDIN` into a temporary staging table, then
//! `MERGE` (or a lineage-checked append), rejects and ledger in the same transaction.

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::arrow::array::Int64Array;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use futures::SinkExt;
use shared::catalog::Dataset;
use shared::config::redact_url;
use std::sync::Arc;
use tokio::sync::Mutex;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

use super::pg_binary::{self, pg_type};
use super::sql::{self, ColumnDef, SEQUENCE_COLUMN, quote_ident};
use super::{ItemSource, LoadReport, Warehouse, WarehouseError};
use crate::lineage;

/// COPY data is sent in chunks of about this size.
const COPY_CHUNK_BYTES: usize = 1 << 20;

/// A PostgreSQL warehouse over one connection (one per worker).
#[derive(Debug)]
pub struct PostgresWarehouse {
    url: shared::config::Secret,
    client: Mutex<Client>,
    platform_schema: String,
}

fn is_retryable(err: &tokio_postgres::Error) -> bool {
    match err.code() {
        None => true, // I/O, closed connection, timeout
        Some(code) => {
            let class = &code.code()[..2];
            matches!(class, "08" | "40" | "53" | "55" | "57" | "58")
                || *code == SqlState::LOCK_NOT_AVAILABLE
        }
    }
}

fn describe(err: &tokio_postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => {
            let mut text = format!("{} ({})", db.message(), db.code().code());
            if let Some(detail) = db.detail() {
                text.push_str(&format!("; {detail}"));
            }
            text
        }
        None => err.to_string(),
    }
}

fn statement_error<'a>(
    dataset: &'a str,
    action: &'static str,
) -> impl Fn(tokio_postgres::Error) -> WarehouseError + 'a {
    move |err| WarehouseError::Statement {
        dataset: dataset.to_owned(),
        action,
        reason: describe(&err),
        retryable: is_retryable(&err),
    }
}

async fn open(url: &str) -> Result<Client, WarehouseError> {
    let (client, connection) =
        tokio_postgres::connect(url, NoTls)
            .await
            .map_err(|err| WarehouseError::Connect {
                url: redact_url(url),
                reason: describe(&err),
                retryable: is_retryable(&err),
            })?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::warn!(error = %err, "warehouse connection ended");
        }
    });
    Ok(client)
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

/// The columns rows are merged on: the dataset's key, or the lineage columns.
pub fn merge_keys(dataset: &Dataset) -> Vec<String> {
    if dataset.key_columns.is_empty() {
        lineage::COLUMNS.iter().map(|c| (*c).to_owned()).collect()
    } else {
        dataset.key_columns.clone()
    }
}

impl PostgresWarehouse {
    /// Connects; `platform_schema` holds the ledger and rejects tables.
    pub async fn connect(url: &str, platform_schema: &str) -> Result<Self, WarehouseError> {
        Ok(Self {
            client: Mutex::new(open(url).await?),
            url: shared::config::Secret::new(url),
            platform_schema: platform_schema.to_owned(),
        })
    }

    /// The connection, opened again first if the server closed it (a restart, a failover,
    /// an idle timeout), so one lost connection costs one retry, not the worker.
    async fn client(&self) -> Result<tokio::sync::MutexGuard<'_, Client>, WarehouseError> {
        let mut client = self.client.lock().await;
        if client.is_closed() {
            tracing::info!("warehouse connection was closed; reconnecting");
            *client = open(self.url.expose()).await?;
        }
        Ok(client)
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
        let client = self.client().await?;
        client
            .simple_query("SELECT 1")
            .await
            .map(drop)
            .map_err(statement_error("(platform)", "checking the connection"))
    }

    async fn ensure_platform_tables(&self) -> Result<(), WarehouseError> {
        let statements = sql::platform_tables(&self.platform_schema, "text", "timestamptz");
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
            sql::create_target_table(&dataset.target, &columns, "timestamptz"),
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
        let item_count = items.len();
        let mut seen = std::collections::HashSet::new();
        let mut fresh: Vec<ItemSource> = items
            .into_iter()
            .filter(|item| {
                !loaded.iter().any(|k| k == item.key.as_str()) && seen.insert(item.key.clone())
            })
            .collect();
        let mut report = LoadReport {
            items_skipped: item_count - fresh.len(),
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
        futures::pin_mut!(sink);
        let staged_schema = with_sequence(schema);
        let mut buffer = Vec::with_capacity(COPY_CHUNK_BYTES + 64 * 1024);
        pg_binary::write_header(&mut buffer);
        let mut sequence: i64 = 0;
        let mut rows_per_item = Vec::with_capacity(fresh.len());
        let mut rejects_per_item = Vec::with_capacity(fresh.len());
        for item in &mut fresh {
            let mut item_rows: i64 = 0;
            while let Some(batch) = item
                .rows
                .next_batch()
                .await
                .map_err(WarehouseError::Source)?
            {
                let rows = batch.num_rows() as i64;
                item_rows += rows;
                let sequence_column = Int64Array::from_iter_values(sequence..sequence + rows);
                sequence += rows;
                let mut arrays = batch.columns().to_vec();
                arrays.push(Arc::new(sequence_column));
                let staged =
                    RecordBatch::try_new(staged_schema.clone(), arrays).map_err(|err| {
                        WarehouseError::Schema {
                            dataset: name.to_owned(),
                            reason: format!("rows do not match the load schema: {err}"),
                        }
                    })?;
                pg_binary::write_batch(&staged, &mut buffer).map_err(|source| {
                    WarehouseError::Encode {
                        dataset: name.to_owned(),
                        source,
                    }
                })?;
                if buffer.len() >= COPY_CHUNK_BYTES {
                    let chunk = Bytes::from(std::mem::replace(
                        &mut buffer,
                        Vec::with_capacity(COPY_CHUNK_BYTES + 64 * 1024),
                    ));
                    sink.send(chunk)
                        .await
                        .map_err(statement_error(name, "sending COPY data"))?;
                }
            }
            rows_per_item.push(item_rows);
            rejects_per_item.push(item.rows.take_rejects());
        }
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

fn with_sequence(schema: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(SEQUENCE_COLUMN, DataType::Int64, false));
    Arc::new(Schema::new(fields))
}
