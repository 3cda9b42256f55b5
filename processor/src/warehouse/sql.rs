//! SQL text for the load protocol, shared by the warehouse dialects. Identifiers come
//! from the validated catalog (lower-case letters, digits, `_`) and are quoted anyway;
//! no value is ever interpolated: values travel as COPY data or bind parameters.

use shared::catalog::TableName;

use crate::pipeline::lineage;

/// A column of a warehouse table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDef {
    pub name: String,
    pub sql_type: String,
    pub nullable: bool,
}

/// What differs between the SQL dialects of the sinks' shared statements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dialect {
    /// Type of free text in the platform tables.
    pub text: &'static str,
    /// Type of the load time columns.
    pub timestamp: &'static str,
    /// The current time, as a column default and in updates.
    pub now: &'static str,
    /// Whether tables take a `SORTKEY` (Redshift): the platform tables sort on their time.
    pub sort_keys: bool,
}

pub(crate) const POSTGRES: Dialect = Dialect {
    text: "text",
    timestamp: "timestamptz",
    now: "CURRENT_TIMESTAMP",
    sort_keys: false,
};

/// Redshift's `TEXT` is `VARCHAR(256)`: free text needs the explicit maximum. `GETDATE()`
/// is the documented column default for the current time (UTC).
pub(crate) const REDSHIFT: Dialect = Dialect {
    text: "VARCHAR(65535)",
    timestamp: "TIMESTAMP",
    now: "GETDATE()",
    sort_keys: true,
};

/// The sort key of a platform table, where the dialect has them: its time column. Rows
/// arrive in that order, so the table stays sorted without a vacuum sort
/// (c_best-practices-sort-key.html), and retention deletes and time-window queries skip
/// blocks. Not the idempotency key: Redshift sorts a `VARCHAR` by its first 8 bytes, and
/// `records-…` keys share theirs (docs/redshift.md).
pub(crate) fn platform_sort_key(dialect: Dialect, time_column: &str) -> String {
    if dialect.sort_keys {
        format!(" COMPOUND SORTKEY({})", quote_ident(time_column))
    } else {
        String::new()
    }
}

/// The staging column that orders rows within one load (last one wins on a key).
pub(crate) const SEQUENCE_COLUMN: &str = "_ingest_seq";
/// The name of the per-transaction staging table.
pub(crate) const STAGING_TABLE: &str = "_ingest_staging";

/// Text as PostgreSQL and Redshift can store it: they cannot hold NUL, so it becomes
/// U+FFFD.
pub(crate) fn storable_text(value: &str) -> String {
    value.replace('\0', "\u{FFFD}")
}

pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

pub fn qualified(table: &TableName) -> String {
    format!(
        "{}.{}",
        quote_ident(&table.schema),
        quote_ident(&table.table)
    )
}

/// The warehouse columns of a load schema, each typed by `sql_type`; a type it cannot
/// map fails naming the column and `warehouse` (the sinks differ only in their types).
pub(crate) fn typed_columns(
    dataset: &str,
    schema: &datafusion::arrow::datatypes::Schema,
    warehouse: &str,
    sql_type: impl Fn(&datafusion::arrow::datatypes::Field) -> Option<String>,
) -> Result<Vec<ColumnDef>, super::WarehouseError> {
    schema
        .fields()
        .iter()
        .map(|field| {
            let sql_type =
                sql_type(field.as_ref()).ok_or_else(|| super::WarehouseError::Schema {
                    dataset: dataset.to_owned(),
                    reason: format!(
                        "column {:?} has type {} with no {warehouse} mapping",
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

pub(crate) fn column_list(columns: &[ColumnDef], prefix: &str) -> String {
    columns
        .iter()
        .map(|c| format!("{prefix}{}", quote_ident(&c.name)))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn column_defs(columns: &[ColumnDef]) -> String {
    columns
        .iter()
        .map(|c| {
            format!(
                "{} {}{}",
                quote_ident(&c.name),
                c.sql_type,
                if c.nullable { "" } else { " NOT NULL" }
            )
        })
        .collect::<Vec<_>>()
        .join(",\n  ")
}

pub(crate) fn create_schema(schema: &str) -> String {
    format!("CREATE SCHEMA IF NOT EXISTS {}", quote_ident(schema))
}

/// The target table: the transform's columns (which include the lineage columns) plus
/// the load time.
pub(crate) fn create_target_table(
    table: &TableName,
    columns: &[ColumnDef],
    dialect: Dialect,
) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {} (\n  {},\n  {} {} NOT NULL DEFAULT {}\n)",
        qualified(table),
        column_defs(columns),
        quote_ident(lineage::LOADED_AT),
        dialect.timestamp,
        dialect.now,
    )
}

/// The temporary staging table of one load transaction.
pub(crate) fn create_staging_table(columns: &[ColumnDef]) -> String {
    format!(
        "CREATE TEMPORARY TABLE {} (\n  {},\n  {} bigint NOT NULL\n) ON COMMIT DROP",
        quote_ident(STAGING_TABLE),
        column_defs(columns),
        quote_ident(SEQUENCE_COLUMN),
    )
}

/// The staging rows with duplicates on the merge key removed: the last row (highest
/// sequence) of each key wins, so two updates of one key in a micro-batch apply in order.
pub(crate) fn deduplicated_staging(columns: &[ColumnDef], merge_keys: &[String]) -> String {
    let partition = merge_keys
        .iter()
        .map(|k| quote_ident(k))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "(SELECT {cols} FROM (SELECT {cols}, ROW_NUMBER() OVER (PARTITION BY {partition} ORDER BY {seq} DESC) AS _ingest_rank FROM {staging}) AS ranked WHERE _ingest_rank = 1)",
        cols = column_list(columns, ""),
        seq = quote_ident(SEQUENCE_COLUMN),
        staging = quote_ident(STAGING_TABLE),
    )
}

pub(crate) fn key_condition(target: &str, merge_keys: &[String]) -> String {
    merge_keys
        .iter()
        .map(|k| format!("{target}.{k} = source.{k}", k = quote_ident(k)))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// `SET` list of a merge: every non-key column from the source, and the load time.
pub(crate) fn merge_updates(
    columns: &[ColumnDef],
    key_columns: &[String],
    dialect: Dialect,
    source_value: impl Fn(&ColumnDef) -> String,
) -> String {
    columns
        .iter()
        .filter(|c| !key_columns.contains(&c.name))
        .map(|c| format!("{} = {}", quote_ident(&c.name), source_value(c)))
        .chain(std::iter::once(format!(
            "{} = {}",
            quote_ident(lineage::LOADED_AT),
            dialect.now
        )))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Upserts the staging rows into the target on the dataset's key columns.
pub(crate) fn merge_on_key(
    table: &TableName,
    columns: &[ColumnDef],
    key_columns: &[String],
) -> String {
    let updates = merge_updates(columns, key_columns, POSTGRES, |c| {
        format!("source.{}", quote_ident(&c.name))
    });
    format!(
        "MERGE INTO {target} AS target\nUSING {source} AS source\nON {on}\nWHEN MATCHED THEN UPDATE SET {updates}\nWHEN NOT MATCHED THEN INSERT ({cols}) VALUES ({values})",
        target = qualified(table),
        source = deduplicated_staging(columns, key_columns),
        on = key_condition("target", key_columns),
        cols = column_list(columns, ""),
        values = column_list(columns, "source."),
    )
}

/// Appends the staging rows whose lineage is not in the target yet: an append that
/// cannot duplicate, however the rows were packed into work items.
pub(crate) fn append_new_lineage(table: &TableName, columns: &[ColumnDef]) -> String {
    let lineage_keys = lineage::column_names();
    format!(
        "INSERT INTO {target} ({cols})\nSELECT {source_cols} FROM {source} AS source\nWHERE NOT EXISTS (SELECT 1 FROM {target} AS target WHERE {on})",
        target = qualified(table),
        cols = column_list(columns, ""),
        source_cols = column_list(columns, "source."),
        source = deduplicated_staging(columns, &lineage_keys),
        on = key_condition("target", &lineage_keys),
    )
}

/// The load ledger of the platform schema, quoted.
pub(crate) fn ledger_table(schema: &str) -> String {
    format!("{}.\"load_ledger\"", quote_ident(schema))
}

/// The rejects table of the platform schema, quoted.
pub(crate) fn rejects_table(schema: &str) -> String {
    format!("{}.\"rejects\"", quote_ident(schema))
}

/// The load ledger, the file progress and the rejects table, in the platform's own schema.
pub(crate) fn platform_tables(schema: &str, dialect: Dialect) -> Vec<String> {
    let (ledger, rejects) = (ledger_table(schema), rejects_table(schema));
    let (text_type, timestamp_type, now) = (dialect.text, dialect.timestamp, dialect.now);
    vec![
        create_schema(schema),
        format!(
            "CREATE TABLE IF NOT EXISTS {ledger} (\n  \"idempotency_key\" {text_type} NOT NULL PRIMARY KEY,\n  \"dataset\" {text_type} NOT NULL,\n  \"source\" {text_type} NOT NULL,\n  \"rows_loaded\" bigint NOT NULL,\n  \"rows_rejected\" bigint NOT NULL,\n  \"loaded_at\" {timestamp_type} NOT NULL DEFAULT {now}\n){}",
            platform_sort_key(dialect, "loaded_at")
        ),
        super::files::create_file_loads(schema, dialect),
        super::streams::create_stream_loads(schema, dialect),
        format!(
            "CREATE TABLE IF NOT EXISTS {rejects} (\n  \"idempotency_key\" {text_type} NOT NULL,\n  \"dataset\" {text_type} NOT NULL,\n  \"source\" {text_type} NOT NULL,\n  \"row_number\" bigint,\n  \"raw\" {text_type},\n  \"reason\" {text_type} NOT NULL,\n  \"rejected_at\" {timestamp_type} NOT NULL DEFAULT {now}\n){}",
            platform_sort_key(dialect, "rejected_at")
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns() -> Vec<ColumnDef> {
        [
            "order_id",
            "status",
            "_ingest_source",
            "_ingest_partition",
            "_ingest_offset",
            "_ingest_sub_offset",
        ]
        .iter()
        .map(|n| ColumnDef {
            name: (*n).to_owned(),
            sql_type: "text".to_owned(),
            nullable: *n == "status",
        })
        .collect()
    }

    fn table() -> TableName {
        TableName {
            schema: "sales".into(),
            table: "orders".into(),
        }
    }

    #[test]
    fn merge_updates_non_key_columns_from_the_last_staged_row_per_key() {
        let sql = merge_on_key(&table(), &columns(), &["order_id".to_owned()]);
        assert!(
            sql.starts_with("MERGE INTO \"sales\".\"orders\" AS target\nUSING (SELECT"),
            "{sql}"
        );
        assert!(
            sql.contains(
                "ROW_NUMBER() OVER (PARTITION BY \"order_id\" ORDER BY \"_ingest_seq\" DESC)"
            ),
            "{sql}"
        );
        assert!(
            sql.contains("ON target.\"order_id\" = source.\"order_id\""),
            "{sql}"
        );
        assert!(sql.contains("UPDATE SET \"status\" = source.\"status\", \"_ingest_source\" = source.\"_ingest_source\""), "{sql}");
        assert!(
            !sql.contains("\"order_id\" = source.\"order_id\", "),
            "key columns are not updated: {sql}"
        );
        assert!(sql.ends_with("VALUES (source.\"order_id\", source.\"status\", source.\"_ingest_source\", source.\"_ingest_partition\", source.\"_ingest_offset\", source.\"_ingest_sub_offset\")"), "{sql}");
    }

    #[test]
    fn append_skips_rows_whose_lineage_is_already_loaded() {
        let sql = append_new_lineage(&table(), &columns());
        assert!(
            sql.starts_with("INSERT INTO \"sales\".\"orders\" (\"order_id\", \"status\""),
            "{sql}"
        );
        assert!(sql.contains("PARTITION BY \"_ingest_source\", \"_ingest_partition\", \"_ingest_offset\", \"_ingest_sub_offset\""), "{sql}");
        assert!(sql.ends_with("WHERE target.\"_ingest_source\" = source.\"_ingest_source\" AND target.\"_ingest_partition\" = source.\"_ingest_partition\" AND target.\"_ingest_offset\" = source.\"_ingest_offset\" AND target.\"_ingest_sub_offset\" = source.\"_ingest_sub_offset\")"), "{sql}");
    }

    #[test]
    fn identifiers_are_always_quoted() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        let ddl = create_target_table(&table(), &columns()[..2], POSTGRES);
        assert_eq!(
            ddl,
            "CREATE TABLE IF NOT EXISTS \"sales\".\"orders\" (\n  \"order_id\" text NOT NULL,\n  \"status\" text,\n  \"_ingest_loaded_at\" timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP\n)"
        );
    }
}
