//! The Redshift sink. Redshift loads fastest from files in S3, so a load:
//!
//! 1. reads the ledger and drops the items it already holds;
//! 2. stages the rows of the others as Parquet files under the staging prefix (as many
//!    files as configured, a multiple of the cluster's slices, so `COPY` reads them in
//!    parallel) plus a manifest listing exactly those files;
//! 3. in one transaction: locks the ledger, checks it again, `COPY … FORMAT AS PARQUET
//!    MANIFEST` into a temporary staging table, keeps the last row of each key, `MERGE`s
//!    into the target on the key (or appends rows whose lineage is new), writes rejects and
//!    ledger rows, commits;
//! 4. deletes the staged files, whatever happened (a lifecycle rule on the staging prefix
//!    catches what a crash leaves behind).
//!
//! Redshift has no arrays, no advisory locks and no `MERGE` source subqueries, so its SQL
//! differs from PostgreSQL's; the statements are built here and unit-tested as text.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use object_store::ObjectStore;
use shared::catalog::Dataset;
use shared::config::RedshiftSettings;
use tokio_postgres::Transaction;
use tokio_postgres::types::ToSql;

use super::connection::{Connection, Connector, Login, statement_error};
use super::files;
use super::sql::{self, ColumnDef, REDSHIFT};
use super::{
    ItemSource, LoadRecord, LoadReport, LoadedItem, Warehouse, WarehouseError, distinct_keys,
    fresh_items, merge_keys,
};

mod staging;
pub mod statements;

pub use staging::{ParquetStager, StagedFiles};

/// The deduplicated staging rows: Redshift's `MERGE` takes a table, not a subquery.
pub const SOURCE_TABLE: &str = "_ingest_source_rows";
/// Rows per multi-row `INSERT` of rejects or ledger rows (bind parameters are limited to
/// 32767 per statement by the protocol).
const INSERT_CHUNK_ROWS: usize = 1000;
/// Redshift's longest `VARCHAR`, in bytes.
const MAX_VARCHAR_BYTES: usize = 65535;

/// The Redshift type of an Arrow type, `None` when the sink cannot store it.
pub fn redshift_type(data_type: &DataType) -> Option<String> {
    Some(match data_type {
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int8 | DataType::Int16 => "SMALLINT".into(),
        DataType::Int32 => "INTEGER".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::Float32 => "REAL".into(),
        DataType::Float64 => "DOUBLE PRECISION".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            format!("VARCHAR({MAX_VARCHAR_BYTES})")
        }
        DataType::Date32 => "DATE".into(),
        DataType::Timestamp(_, None) => "TIMESTAMP".into(),
        DataType::Timestamp(_, Some(_)) => "TIMESTAMPTZ".into(),
        DataType::Decimal128(precision, scale) if *precision <= 38 => {
            format!("DECIMAL({precision},{scale})")
        }
        _ => return None,
    })
}

/// The warehouse columns of a load schema.
pub fn redshift_columns(dataset: &str, schema: &Schema) -> Result<Vec<ColumnDef>, WarehouseError> {
    sql::typed_columns(dataset, schema, "Redshift", redshift_type)
}

/// Text for a `VARCHAR(65535)`: at most that many bytes, cut at a character boundary.
fn fit_varchar(text: &str) -> String {
    if text.len() <= MAX_VARCHAR_BYTES {
        return text.to_owned();
    }
    let mut end = MAX_VARCHAR_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// A Redshift warehouse over one connection (one per worker).
#[derive(Debug)]
pub struct RedshiftWarehouse {
    connection: Connection,
    stager: ParquetStager,
    iam_role: String,
    platform_schema: String,
}

impl RedshiftWarehouse {
    pub async fn connect(
        url: &str,
        connector: Connector,
        login: Login,
        settings: &RedshiftSettings,
        staging_store: Arc<dyn ObjectStore>,
        platform_schema: &str,
    ) -> Result<Self, WarehouseError> {
        Ok(Self {
            connection: Connection::open_with(url, connector, login).await?,
            stager: ParquetStager::new(
                staging_store,
                &settings.staging_bucket,
                &settings.staging_prefix,
                settings.staging_files,
            ),
            iam_role: settings.iam_role.clone(),
            platform_schema: platform_schema.to_owned(),
        })
    }

    fn ledger(&self) -> String {
        sql::ledger_table(&self.platform_schema)
    }

    fn file_loads(&self) -> String {
        files::file_loads_table(&self.platform_schema)
    }

    fn rejects(&self) -> String {
        sql::rejects_table(&self.platform_schema)
    }

    /// The keys of `keys` the ledger holds.
    async fn loaded_keys(
        client: &impl tokio_postgres::GenericClient,
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

    /// The transaction of a load whose rows are staged (or that has none): lock, check the
    /// ledger again, COPY and merge, record, commit. Returns the rows staged and written.
    async fn commit_staged(
        &self,
        dataset: &Dataset,
        columns: &[ColumnDef],
        staged: Option<&StagedFiles>,
        record: &LoadRecord,
    ) -> Result<(u64, u64), WarehouseError> {
        let name = dataset.name.as_str();
        let mut client = self.connection.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(statement_error(name, "starting the load transaction"))?;
        self.lock_and_check_again(&tx, name, record).await?;
        let rows = match staged {
            Some(staged) => self.copy_and_merge(&tx, dataset, columns, staged).await?,
            None => (0, 0),
        };
        self.record(&tx, name, record).await?;
        tx.commit()
            .await
            .map_err(statement_error(name, "committing"))?;
        Ok(rows)
    }

    /// Locks the ledger (and the file progress table when the load has file parts) and
    /// fails with `ConcurrentLoad` if another task loaded an item while this one staged it:
    /// the retry skips it.
    async fn lock_and_check_again(
        &self,
        tx: &Transaction<'_>,
        name: &str,
        record: &LoadRecord,
    ) -> Result<(), WarehouseError> {
        let ledger = self.ledger();
        tx.batch_execute(&statements::lock_ledger(&ledger))
            .await
            .map_err(statement_error(name, "locking the load ledger"))?;
        // Locked up front, before the transaction reads anything: a table first locked
        // late, after a concurrent claim changed it, is a serialization conflict.
        if !record.parts.is_empty() {
            tx.batch_execute(&statements::lock_ledger(&self.file_loads()))
                .await
                .map_err(statement_error(name, "locking the file progress table"))?;
        }
        let keys: Vec<&str> = record.ledger.iter().map(|row| row.key.as_str()).collect();
        match Self::loaded_keys(tx, &ledger, name, &keys).await?.first() {
            Some(key) => Err(WarehouseError::ConcurrentLoad {
                dataset: name.to_owned(),
                key: key.clone(),
            }),
            None => Ok(()),
        }
    }

    /// COPY of the staged files into the staging table, the last row of each key kept,
    /// merged into the target (or appended where the lineage is new). Returns the rows
    /// staged and written.
    async fn copy_and_merge(
        &self,
        tx: &Transaction<'_>,
        dataset: &Dataset,
        columns: &[ColumnDef],
        staged: &StagedFiles,
    ) -> Result<(u64, u64), WarehouseError> {
        let name = dataset.name.as_str();
        tx.batch_execute(&statements::create_staging(columns))
            .await
            .map_err(statement_error(name, "creating the staging table"))?;
        let copy =
            statements::copy_from_manifest(&self.stager.s3_url(&staged.manifest), &self.iam_role);
        let rows_staged = tx
            .execute(&copy, &[])
            .await
            .map_err(statement_error(name, "COPY from the staged Parquet files"))?;
        tx.batch_execute(&statements::create_source(columns, &merge_keys(dataset)))
            .await
            .map_err(statement_error(name, "deduplicating the staged rows"))?;
        let write = if dataset.key_columns.is_empty() {
            statements::append_new_lineage(&dataset.target, columns)
        } else {
            statements::merge_on_key(&dataset.target, columns, &dataset.key_columns)
        };
        let rows_written = tx
            .execute(&write, &[])
            .await
            .map_err(statement_error(name, "merging into the target"))?;
        tx.batch_execute(&statements::drop_temporary())
            .await
            .map_err(statement_error(name, "dropping the staging tables"))?;
        Ok((rows_staged, rows_written))
    }

    /// Writes the load's rejects, ledger rows and file parts (text cut to fit `VARCHAR`).
    async fn record(
        &self,
        tx: &Transaction<'_>,
        name: &str,
        record: &LoadRecord,
    ) -> Result<(), WarehouseError> {
        let text = |value: &str| fit_varchar(&value.replace('\0', "\u{FFFD}"));
        let reject_rows: Vec<[Box<dyn ToSql + Sync + Send>; 6]> = record
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
        insert_chunked(
            tx,
            &self.rejects(),
            &columns,
            &reject_rows,
            name,
            "writing rejects",
        )
        .await?;
        let ledger_rows: Vec<[Box<dyn ToSql + Sync + Send>; 5]> = record
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
        let action = "writing the load ledger";
        insert_chunked(tx, &self.ledger(), &columns, &ledger_rows, name, action).await?;
        files::record_parts(tx, &self.file_loads(), REDSHIFT, &record.parts).await
    }
}

async fn insert_chunked<const WIDTH: usize>(
    tx: &tokio_postgres::Transaction<'_>,
    table: &str,
    columns: &[&str; WIDTH],
    rows: &[[Box<dyn ToSql + Sync + Send>; WIDTH]],
    dataset: &str,
    action: &'static str,
) -> Result<(), WarehouseError> {
    for chunk in rows.chunks(INSERT_CHUNK_ROWS) {
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

#[async_trait]
impl Warehouse for RedshiftWarehouse {
    async fn ping(&self) -> Result<(), WarehouseError> {
        self.connection.ping().await
    }

    async fn claim_file_completion(
        &self,
        file_id: &str,
        claimant: &str,
    ) -> Result<files::Claim, WarehouseError> {
        files::claim(
            &self.connection,
            &self.file_loads(),
            REDSHIFT,
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
            REDSHIFT,
            completion,
            published,
        )
        .await
    }

    async fn ensure_platform_tables(&self) -> Result<(), WarehouseError> {
        let statements = sql::platform_tables(&self.platform_schema, REDSHIFT);
        self.connection
            .run_in_transaction(
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
        let columns = redshift_columns(&dataset.name, schema)?;
        let statements = [
            sql::create_schema(&dataset.target.schema),
            sql::create_target_table(&dataset.target, &columns, REDSHIFT),
        ];
        self.connection
            .run_in_transaction(&dataset.name, "creating the target table", &statements)
            .await
    }

    async fn load(
        &self,
        dataset: &Dataset,
        schema: &SchemaRef,
        items: Vec<ItemSource>,
    ) -> Result<LoadReport, WarehouseError> {
        let name = dataset.name.as_str();
        let columns = redshift_columns(name, schema)?;
        let keys = distinct_keys(&items);
        let loaded = {
            let client = self.connection.client().await?;
            Self::loaded_keys(&*client, &self.ledger(), name, &keys).await?
        };
        let (mut fresh, items_skipped) = fresh_items(items, &loaded);
        if fresh.is_empty() {
            return Ok(LoadRecord::default().report(items_skipped, 0, 0));
        }
        let load_id = format!("{:016x}", rand::random::<u64>());
        let (staged, drained) = self
            .stager
            .stage(name, schema, &mut fresh, &load_id)
            .await?;
        let items: Vec<LoadedItem> = fresh.iter().map(LoadedItem::of).collect();
        drop(fresh);
        let record = LoadRecord::new(&items, &drained);
        let result = self
            .commit_staged(dataset, &columns, staged.as_ref(), &record)
            .await;
        if let Some(staged) = &staged {
            self.stager.remove_folder(&staged.folder).await;
        }
        let (rows_staged, rows_written) = result?;
        Ok(record.report(items_skipped, rows_staged, rows_written))
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::TimeUnit;
    use shared::catalog::TableName;

    use super::*;
    use crate::pipeline::lineage;
    use statements::literal;

    fn columns() -> Vec<ColumnDef> {
        [
            ("order_id", "BIGINT", false),
            ("status", "VARCHAR(65535)", true),
        ]
        .iter()
        .map(|(name, sql_type, nullable)| ColumnDef {
            name: (*name).to_owned(),
            sql_type: (*sql_type).to_owned(),
            nullable: *nullable,
        })
        .chain(lineage::fields().iter().map(|f| ColumnDef {
            name: f.name().clone(),
            sql_type: redshift_type(f.data_type()).expect("lineage types map"),
            nullable: false,
        }))
        .collect()
    }

    fn table() -> TableName {
        TableName {
            schema: "sales".into(),
            table: "orders".into(),
        }
    }

    #[test]
    fn copy_reads_exactly_the_manifest_as_parquet_with_the_role() {
        assert_eq!(
            statements::copy_from_manifest(
                "s3://staging-bucket/ingest/orders/00ff/manifest.json",
                "arn:aws:iam::123456789012:role/redshift-copy"
            ),
            "COPY \"_ingest_staging\" FROM 's3://staging-bucket/ingest/orders/00ff/manifest.json' IAM_ROLE 'arn:aws:iam::123456789012:role/redshift-copy' FORMAT AS PARQUET MANIFEST"
        );
        assert_eq!(literal("it's"), "'it''s'");
    }

    #[test]
    fn staging_table_has_the_parquet_column_order_and_the_sequence_last() {
        assert_eq!(
            statements::create_staging(&columns()[..2]),
            "CREATE TEMPORARY TABLE \"_ingest_staging\" (\n  \"order_id\" BIGINT NOT NULL,\n  \"status\" VARCHAR(65535),\n  \"_ingest_seq\" BIGINT NOT NULL\n)"
        );
    }

    #[test]
    fn merge_reads_a_deduplicated_table_and_names_the_target_in_full() {
        let keys = ["order_id".to_owned()];
        let source = statements::create_source(&columns(), &keys);
        assert!(
            source.starts_with(
                "CREATE TEMPORARY TABLE \"_ingest_source_rows\" AS SELECT \"order_id\", \"status\""
            ),
            "{source}"
        );
        assert!(
            source.contains(
                "ROW_NUMBER() OVER (PARTITION BY \"order_id\" ORDER BY \"_ingest_seq\" DESC)"
            ),
            "{source}"
        );
        assert!(
            source.ends_with("WHERE _ingest_rank = 1) AS deduplicated"),
            "{source}"
        );

        let merge = statements::merge_on_key(&table(), &columns(), &keys);
        assert!(
            merge.starts_with("MERGE INTO \"sales\".\"orders\" USING \"_ingest_source_rows\" AS source\nON \"sales\".\"orders\".\"order_id\" = source.\"order_id\"\n"),
            "{merge}"
        );
        assert!(
            merge.contains("WHEN MATCHED THEN UPDATE SET \"status\" = source.\"status\", "),
            "{merge}"
        );
        assert!(
            merge.contains("\"_ingest_loaded_at\" = GETDATE()"),
            "{merge}"
        );
        assert!(
            !merge.contains("\"order_id\" = source.\"order_id\","),
            "keys are not updated: {merge}"
        );
        assert!(
            merge.ends_with("VALUES (source.\"order_id\", source.\"status\", source.\"_ingest_source\", source.\"_ingest_partition\", source.\"_ingest_offset\", source.\"_ingest_sub_offset\")"),
            "{merge}"
        );
    }

    #[test]
    fn append_is_an_anti_join_on_every_lineage_column() {
        let sql = statements::append_new_lineage(&table(), &columns());
        assert!(
            sql.starts_with("INSERT INTO \"sales\".\"orders\" (\"order_id\", "),
            "{sql}"
        );
        assert!(sql.contains("LEFT JOIN \"sales\".\"orders\" AS existing ON existing.\"_ingest_source\" = source.\"_ingest_source\" AND existing.\"_ingest_partition\" = source.\"_ingest_partition\" AND existing.\"_ingest_offset\" = source.\"_ingest_offset\" AND existing.\"_ingest_sub_offset\" = source.\"_ingest_sub_offset\""), "{sql}");
        assert!(
            sql.ends_with("WHERE existing.\"_ingest_source\" IS NULL"),
            "{sql}"
        );
    }

    #[test]
    fn values_travel_as_parameters_never_as_text() {
        assert_eq!(
            statements::ledger_lookup("\"ingest\".\"load_ledger\"", 3),
            "SELECT idempotency_key FROM \"ingest\".\"load_ledger\" WHERE idempotency_key IN ($1, $2, $3)"
        );
        assert_eq!(
            statements::insert_rows("\"ingest\".\"load_ledger\"", &["a", "b"], 2),
            "INSERT INTO \"ingest\".\"load_ledger\" (\"a\", \"b\") VALUES ($1, $2), ($3, $4)"
        );
        assert_eq!(
            statements::lock_ledger("\"ingest\".\"load_ledger\""),
            "LOCK \"ingest\".\"load_ledger\""
        );
    }

    #[test]
    fn platform_and_target_tables_use_redshift_types() {
        let ddl = sql::platform_tables("ingest", REDSHIFT);
        assert!(
            ddl[1].contains("\"idempotency_key\" VARCHAR(65535) NOT NULL PRIMARY KEY"),
            "{}",
            ddl[1]
        );
        assert!(
            ddl[1].contains("\"loaded_at\" TIMESTAMP NOT NULL DEFAULT GETDATE()"),
            "{}",
            ddl[1]
        );
        let target = sql::create_target_table(&table(), &columns()[..1], REDSHIFT);
        assert_eq!(
            target,
            "CREATE TABLE IF NOT EXISTS \"sales\".\"orders\" (\n  \"order_id\" BIGINT NOT NULL,\n  \"_ingest_loaded_at\" TIMESTAMP NOT NULL DEFAULT GETDATE()\n)"
        );
        assert_eq!(
            redshift_type(&DataType::Decimal128(12, 2)).as_deref(),
            Some("DECIMAL(12,2)")
        );
        assert_eq!(
            redshift_type(&DataType::Decimal128(40, 2)),
            None,
            "Redshift stops at 38 digits"
        );
        assert_eq!(
            redshift_type(&DataType::Timestamp(
                TimeUnit::Nanosecond,
                Some("UTC".into())
            ))
            .as_deref(),
            Some("TIMESTAMPTZ")
        );
    }

    #[test]
    fn long_text_is_cut_at_a_character_boundary() {
        let text = "é".repeat(40_000); // 80,000 bytes
        let cut = fit_varchar(&text);
        assert!(cut.len() <= MAX_VARCHAR_BYTES);
        assert!(cut.len() >= MAX_VARCHAR_BYTES - 1);
        assert!(cut.chars().all(|c| c == 'é'));
        assert_eq!(fit_varchar("short"), "short");
    }
}
