//! The Redshift sink. Redshift loads fastest from files in S3, so a load:
//!
//! 1. reads the ledger and drops the items it already holds (`load.rs` holds the steps);
//! 2. stages the rows of the others as Parquet files under the staging prefix (as many
//!    files as configured, a multiple of the cluster's slices, so `COPY` reads them in
//!    parallel) plus a manifest listing exactly those files;
//! 3. in a transaction of its own, outside any lock: `COPY … FORMAT AS PARQUET MANIFEST`
//!    into a temporary staging table, and the last row of each key kept in a second one;
//! 4. in a short write transaction: locks the ledger, checks it again, `MERGE`s into the
//!    target on the key (or appends rows whose lineage is new), writes rejects and ledger
//!    rows, commits;
//! 5. deletes the staged files, whatever happened (a lifecycle rule on the staging prefix
//!    catches what a crash leaves behind).
//!
//! Redshift has no arrays, no advisory locks and no `MERGE` source subqueries, so its SQL
//! differs from PostgreSQL's. The statements are unit-tested as text here, and run end to
//! end on the Redshift stand-in (`test-support`) by the warehouse contract suite.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use object_store::ObjectStore;
use shared::catalog::{Dataset, TooLong};
use shared::config::RedshiftSettings;

use super::connection::{Connection, Connector, Login};
use super::evolution::{Capabilities, SchemaPlan};
use super::files;
use super::protocol::run_load;
use super::sql::{self, ColumnDef, REDSHIFT};
use super::target_table::{self, TargetSetup};
use super::{ItemSource, LoadReport, Warehouse, WarehouseError};
use crate::pipeline::lineage;

mod load;
mod staging;
pub mod statements;

pub use staging::{ParquetStager, StagedFiles};

/// The deduplicated staging rows: Redshift's `MERGE` takes a table, not a subquery.
pub(crate) const SOURCE_TABLE: &str = "_ingest_source_rows";
/// Redshift's longest `VARCHAR`, in bytes.
const MAX_VARCHAR_BYTES: usize = shared::catalog::MAX_VARCHAR_BYTES as usize;

/// The bytes each lineage column needs: `s3://`, a bucket (63) and a key (1,024); an ETag
/// or a shard id; a byte offset or a Kinesis sequence number (up to 128 digits).
fn lineage_max_length(column: &str) -> Option<u32> {
    match column {
        lineage::SOURCE => Some(1100),
        lineage::PARTITION => Some(256),
        lineage::OFFSET => Some(128),
        _ => None,
    }
}

/// The Redshift type of an Arrow type, strings as `VARCHAR(max_length)`; `None` when the
/// sink cannot store it.
pub(crate) fn redshift_type(data_type: &DataType, max_length: u32) -> Option<String> {
    Some(match data_type {
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int8 | DataType::Int16 => "SMALLINT".into(),
        DataType::Int32 => "INTEGER".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::Float32 => "REAL".into(),
        DataType::Float64 => "DOUBLE PRECISION".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            format!("VARCHAR({max_length})")
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

/// The warehouse columns of a dataset's load schema, strings sized by the catalog.
pub(crate) fn redshift_columns(
    dataset: &Dataset,
    schema: &Schema,
) -> Result<Vec<ColumnDef>, WarehouseError> {
    sql::typed_columns(&dataset.name, schema, "Redshift", |field| {
        let name = field.name().as_str();
        let max_length = lineage_max_length(name).unwrap_or_else(|| dataset.max_length(name));
        redshift_type(field.data_type(), max_length)
    })
}

/// Checks that the catalog's Redshift layout names columns of the load schema (with a
/// transform they are known only once it is planned).
fn check_layout(dataset: &Dataset, columns: &[ColumnDef]) -> Result<(), WarehouseError> {
    match dataset
        .redshift
        .columns()
        .find(|name| !columns.iter().any(|c| c.name == *name))
    {
        Some(missing) => Err(WarehouseError::Schema {
            dataset: dataset.name.clone(),
            reason: format!(
                "the redshift layout (dist_key, sort_key or the merge key) names {missing:?}, which the dataset's output does not have"
            ),
        }),
        None => Ok(()),
    }
}

/// The byte limit of a `VARCHAR(n)` column, and what happens to a longer value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VarcharLimit {
    pub bytes: usize,
    pub too_long: TooLong,
}

/// The byte limit of each column that has one (`VARCHAR(n)`), by position.
pub(crate) fn varchar_limits(
    dataset: &Dataset,
    columns: &[ColumnDef],
) -> Vec<Option<VarcharLimit>> {
    columns
        .iter()
        .map(|column| {
            let bytes = column
                .sql_type
                .strip_prefix("VARCHAR(")?
                .strip_suffix(')')?
                .parse()
                .ok()?;
            Some(VarcharLimit {
                bytes,
                too_long: dataset.too_long(&column.name),
            })
        })
        .collect()
}

/// Text for a `VARCHAR(65535)`: at most that many bytes, cut at a character boundary.
fn fit_varchar(text: &str) -> String {
    crate::text::byte_prefix(text, MAX_VARCHAR_BYTES).to_owned()
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

    /// The target's columns, and how Redshift creates it (with its layout) and changes it: new columns in a
    /// transaction that holds the ledger lock every writer takes first; `VARCHAR` widenings
    /// after it, since Redshift alters a column's type only outside a transaction block and
    /// no other type (`r_ALTER_TABLE.html`); `NOT NULL` stays.
    fn target(
        &self,
        dataset: &Dataset,
        schema: &SchemaRef,
    ) -> Result<(Vec<ColumnDef>, TargetSetup), WarehouseError> {
        let columns = redshift_columns(dataset, schema)?;
        check_layout(dataset, &columns)?;
        let setup = TargetSetup {
            lock: statements::lock_ledger(&self.ledger()),
            create: vec![
                sql::create_schema(&dataset.target.schema),
                format!(
                    "{} {}",
                    sql::create_target_table(&dataset.target, &columns, REDSHIFT),
                    statements::table_layout(&dataset.redshift)
                ),
            ],
            keep: Vec::new(),
            capabilities: Capabilities {
                widen_numbers: false,
                widen_strings: true,
                drop_not_null: false,
            },
            key_index: None,
            widen_outside_transaction: true,
        };
        Ok((columns, setup))
    }

    fn ledger(&self) -> String {
        sql::ledger_table(&self.platform_schema)
    }

    fn file_loads(&self) -> String {
        files::file_loads_table(&self.platform_schema)
    }

    fn stream_loads(&self) -> String {
        super::streams::stream_loads_table(&self.platform_schema)
    }

    fn rejects(&self) -> String {
        sql::rejects_table(&self.platform_schema)
    }
}

#[async_trait]
impl Warehouse for RedshiftWarehouse {
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
    ) -> Result<SchemaPlan, WarehouseError> {
        let (columns, setup) = self.target(dataset, schema)?;
        target_table::ensure(&self.connection, dataset, &columns, &setup).await
    }

    async fn plan_target(
        &self,
        dataset: &Dataset,
        schema: &SchemaRef,
    ) -> Result<SchemaPlan, WarehouseError> {
        let (columns, setup) = self.target(dataset, schema)?;
        target_table::plan(&self.connection, dataset, &columns, &setup).await
    }

    async fn load(
        &self,
        dataset: &Dataset,
        schema: &SchemaRef,
        items: Vec<ItemSource>,
    ) -> Result<LoadReport, WarehouseError> {
        let columns = redshift_columns(dataset, schema)?;
        let mut client = self.connection.client().await?;
        let steps = load::RedshiftStage::new(self, &mut client, dataset, schema, columns);
        run_load(steps, items).await
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::TimeUnit;
    use shared::catalog::TableName;

    use shared::catalog::{Distribution, RedshiftLayout};

    use super::*;
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
        .chain(lineage::fields().iter().map(|f| {
            ColumnDef {
                name: f.name().clone(),
                sql_type: redshift_type(f.data_type(), lineage_max_length(f.name()).unwrap_or(0))
                    .expect("lineage types map"),
                nullable: false,
            }
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
            "COPY \"_ingest_staging\" FROM 's3://staging-bucket/ingest/orders/00ff/manifest.json' IAM_ROLE 'arn:aws:iam::123456789012:role/redshift-copy' FORMAT AS PARQUET MANIFEST STATUPDATE OFF"
        );
        assert_eq!(literal("it's"), "'it''s'");
    }

    fn keyed() -> RedshiftLayout {
        RedshiftLayout::default_for(&["order_id".to_owned()])
    }

    #[test]
    fn staging_table_has_the_parquet_column_order_the_sequence_last_and_the_targets_distribution() {
        assert_eq!(
            statements::create_staging(&columns()[..2], &keyed()),
            "CREATE TEMPORARY TABLE \"_ingest_staging\" (\n  \"order_id\" BIGINT NOT NULL,\n  \"status\" VARCHAR(65535),\n  \"_ingest_seq\" BIGINT NOT NULL\n) DISTKEY(\"order_id\")"
        );
        assert!(
            statements::create_staging(&columns()[..2], &RedshiftLayout::default()).ends_with(')')
        );
    }

    #[test]
    fn tables_are_distributed_and_sorted_as_the_catalog_says() {
        assert_eq!(
            statements::table_layout(&keyed()),
            "DISTSTYLE KEY DISTKEY(\"order_id\") COMPOUND SORTKEY(\"order_id\")"
        );
        assert_eq!(
            statements::table_layout(&RedshiftLayout::default()),
            "DISTSTYLE AUTO SORTKEY AUTO"
        );
        let even = RedshiftLayout {
            distribution: Distribution::Even,
            sort_key: vec!["day".into(), "order_id".into()],
        };
        assert_eq!(
            statements::table_layout(&even),
            "DISTSTYLE EVEN COMPOUND SORTKEY(\"day\", \"order_id\")"
        );
    }

    #[test]
    fn strings_are_sized_by_the_catalog_and_lineage_by_what_it_holds() {
        let text = r#"
[datasets.orders]
format = "csv"
target = "sales.orders"
s3 = { prefix = "o/" }
columns = [
  { name = "status", type = "string", max_length = 32 },
  { name = "note", type = "string", too_long = "truncate" },
]
"#;
        let catalog = shared::catalog::Catalog::from_toml(text, "test").expect("valid");
        let dataset = catalog.get("orders").expect("present");
        let mut fields = vec![
            datafusion::arrow::datatypes::Field::new("status", DataType::Utf8, true),
            datafusion::arrow::datatypes::Field::new("note", DataType::Utf8, true),
        ];
        fields.extend(lineage::fields());
        let columns = redshift_columns(dataset, &Schema::new(fields)).expect("columns");
        let types: Vec<&str> = columns.iter().map(|c| c.sql_type.as_str()).collect();
        assert_eq!(
            types,
            [
                "VARCHAR(32)",
                "VARCHAR(256)",
                "VARCHAR(1100)",
                "VARCHAR(256)",
                "VARCHAR(128)",
                "BIGINT"
            ]
        );
        let limits: Vec<Option<(usize, TooLong)>> = varchar_limits(dataset, &columns)
            .into_iter()
            .map(|limit| limit.map(|l| (l.bytes, l.too_long)))
            .collect();
        let reject = |bytes| Some((bytes, TooLong::Reject));
        assert_eq!(
            limits,
            [
                reject(32),
                Some((256, TooLong::Truncate)),
                reject(1100),
                reject(256),
                reject(128),
                None
            ]
        );
    }

    #[test]
    fn merge_reads_a_deduplicated_table_and_names_the_target_in_full() {
        let keys = ["order_id".to_owned()];
        let source = statements::create_source(&columns(), &keys, &keyed());
        assert!(
            source.starts_with(
                "CREATE TEMPORARY TABLE \"_ingest_source_rows\" DISTKEY(\"order_id\") AS SELECT \"order_id\", \"status\""
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
        assert!(sql.contains("LEFT JOIN (SELECT \"_ingest_source\", \"_ingest_partition\", \"_ingest_offset\", \"_ingest_sub_offset\" FROM \"sales\".\"orders\" WHERE \"_ingest_source\" IN (SELECT DISTINCT \"_ingest_source\" FROM \"_ingest_source_rows\")) AS existing ON existing.\"_ingest_source\" = source.\"_ingest_source\" AND existing.\"_ingest_partition\" = source.\"_ingest_partition\" AND existing.\"_ingest_offset\" = source.\"_ingest_offset\" AND existing.\"_ingest_sub_offset\" = source.\"_ingest_sub_offset\""), "{sql}");
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
        // The platform tables sort on their time column (Redshift only).
        let sorted_on = ["loaded_at", "first_loaded_at", "loaded_at", "rejected_at"];
        for (ddl, column) in ddl[1..].iter().zip(sorted_on) {
            assert!(
                ddl.ends_with(&format!("\n) COMPOUND SORTKEY(\"{column}\")")),
                "{ddl}"
            );
        }
        let postgres = sql::platform_tables("ingest", sql::POSTGRES);
        assert!(postgres.iter().all(|ddl| !ddl.contains("SORTKEY")));
        let target = sql::create_target_table(&table(), &columns()[..1], REDSHIFT);
        assert_eq!(
            target,
            "CREATE TABLE IF NOT EXISTS \"sales\".\"orders\" (\n  \"order_id\" BIGINT NOT NULL,\n  \"_ingest_loaded_at\" TIMESTAMP NOT NULL DEFAULT GETDATE()\n)"
        );
        assert_eq!(
            redshift_type(&DataType::Decimal128(12, 2), 0).as_deref(),
            Some("DECIMAL(12,2)")
        );
        assert_eq!(
            redshift_type(&DataType::Decimal128(40, 2), 0),
            None,
            "Redshift stops at 38 digits"
        );
        assert_eq!(
            redshift_type(
                &DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                0
            )
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
