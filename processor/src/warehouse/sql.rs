//! SQL text for the load protocol, shared by the warehouse dialects. Identifiers come
//! from the validated catalog (lower-case letters, digits, `_`) and are quoted anyway;
//! no value is ever interpolated: values travel as COPY data or bind parameters.

use shared::catalog::TableName;

use crate::lineage;

/// A column of a warehouse table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDef {
    pub name: String,
    pub sql_type: String,
    pub nullable: bool,
}

/// The staging column that orders rows within one load (last one wins on a key).
pub const SEQUENCE_COLUMN: &str = "_ingest_seq";
/// The name of the per-transaction staging table.
pub const STAGING_TABLE: &str = "_ingest_staging";

pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

pub fn qualified(table: &TableName) -> String {
    format!(
        "{}.{}",
        quote_ident(&table.schema),
        quote_ident(&table.table)
    )
}

fn column_list(columns: &[ColumnDef], prefix: &str) -> String {
    columns
        .iter()
        .map(|c| format!("{prefix}{}", quote_ident(&c.name)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn column_defs(columns: &[ColumnDef]) -> String {
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

pub fn create_schema(schema: &str) -> String {
    format!("CREATE SCHEMA IF NOT EXISTS {}", quote_ident(schema))
}

/// The target table: the transform's columns (which include the lineage columns) plus
/// the load time.
pub fn create_target_table(
    table: &TableName,
    columns: &[ColumnDef],
    timestamp_type: &str,
) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {} (\n  {},\n  {} {timestamp_type} NOT NULL DEFAULT CURRENT_TIMESTAMP\n)",
        qualified(table),
        column_defs(columns),
        quote_ident(lineage::LOADED_AT),
    )
}

/// The temporary staging table of one load transaction.
pub fn create_staging_table(columns: &[ColumnDef]) -> String {
    format!(
        "CREATE TEMPORARY TABLE {} (\n  {},\n  {} bigint NOT NULL\n) ON COMMIT DROP",
        quote_ident(STAGING_TABLE),
        column_defs(columns),
        quote_ident(SEQUENCE_COLUMN),
    )
}

/// The staging rows with duplicates on the merge key removed: the last row (highest
/// sequence) of each key wins, so two updates of one key in a micro-batch apply in order.
fn deduplicated_staging(columns: &[ColumnDef], merge_keys: &[String]) -> String {
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

fn key_condition(merge_keys: &[String]) -> String {
    merge_keys
        .iter()
        .map(|k| format!("target.{k} = source.{k}", k = quote_ident(k)))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// Upserts the staging rows into the target on the dataset's key columns.
pub fn merge_on_key(table: &TableName, columns: &[ColumnDef], key_columns: &[String]) -> String {
    let updates = columns
        .iter()
        .filter(|c| !key_columns.contains(&c.name))
        .map(|c| format!("{n} = source.{n}", n = quote_ident(&c.name)))
        .chain(std::iter::once(format!(
            "{} = CURRENT_TIMESTAMP",
            quote_ident(lineage::LOADED_AT)
        )))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "MERGE INTO {target} AS target\nUSING {source} AS source\nON {on}\nWHEN MATCHED THEN UPDATE SET {updates}\nWHEN NOT MATCHED THEN INSERT ({cols}) VALUES ({values})",
        target = qualified(table),
        source = deduplicated_staging(columns, key_columns),
        on = key_condition(key_columns),
        cols = column_list(columns, ""),
        values = column_list(columns, "source."),
    )
}

/// Appends the staging rows whose lineage is not in the target yet: an append that
/// cannot duplicate, however the rows were packed into work items.
pub fn append_new_lineage(table: &TableName, columns: &[ColumnDef]) -> String {
    let lineage_keys: Vec<String> = lineage::COLUMNS.iter().map(|c| (*c).to_owned()).collect();
    format!(
        "INSERT INTO {target} ({cols})\nSELECT {source_cols} FROM {source} AS source\nWHERE NOT EXISTS (SELECT 1 FROM {target} AS target WHERE {on})",
        target = qualified(table),
        cols = column_list(columns, ""),
        source_cols = column_list(columns, "source."),
        source = deduplicated_staging(columns, &lineage_keys),
        on = key_condition(&lineage_keys),
    )
}

/// The load ledger and the rejects table, in the platform's own schema.
pub fn platform_tables(schema: &str, text_type: &str, timestamp_type: &str) -> Vec<String> {
    let schema_q = quote_ident(schema);
    vec![
        create_schema(schema),
        format!(
            "CREATE TABLE IF NOT EXISTS {schema_q}.\"load_ledger\" (\n  \"idempotency_key\" {text_type} NOT NULL PRIMARY KEY,\n  \"dataset\" {text_type} NOT NULL,\n  \"source\" {text_type} NOT NULL,\n  \"rows_loaded\" bigint NOT NULL,\n  \"rows_rejected\" bigint NOT NULL,\n  \"loaded_at\" {timestamp_type} NOT NULL DEFAULT CURRENT_TIMESTAMP\n)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {schema_q}.\"rejects\" (\n  \"idempotency_key\" {text_type} NOT NULL,\n  \"dataset\" {text_type} NOT NULL,\n  \"source\" {text_type} NOT NULL,\n  \"row_number\" bigint,\n  \"raw\" {text_type},\n  \"reason\" {text_type} NOT NULL,\n  \"rejected_at\" {timestamp_type} NOT NULL DEFAULT CURRENT_TIMESTAMP\n)"
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
        let ddl = create_target_table(&table(), &columns()[..2], "timestamptz");
        assert_eq!(
            ddl,
            "CREATE TABLE IF NOT EXISTS \"sales\".\"orders\" (\n  \"order_id\" text NOT NULL,\n  \"status\" text,\n  \"_ingest_loaded_at\" timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP\n)"
        );
    }
}
