//! The SQL of one Redshift load, built as text here and unit-tested as text.

use shared::catalog::{Distribution, RedshiftLayout, TableName};

use super::SOURCE_TABLE;
use crate::pipeline::lineage;
use crate::warehouse::sql::{
    self, ColumnDef, REDSHIFT, SEQUENCE_COLUMN, STAGING_TABLE, column_list, key_condition,
    qualified, quote_ident,
};

/// A literal for the few values COPY only takes as text (an S3 URL, a role ARN). Both are
/// validated to plain characters at start-up; quotes are doubled anyway.
pub(super) fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
}

/// `$first, $first+1, …` for `count` parameters.
pub(super) fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The target table's distribution and sort key, after its column list.
pub(crate) fn table_layout(layout: &RedshiftLayout) -> String {
    let distribution = match &layout.distribution {
        Distribution::Auto => "DISTSTYLE AUTO".to_owned(),
        Distribution::Even => "DISTSTYLE EVEN".to_owned(),
        Distribution::All => "DISTSTYLE ALL".to_owned(),
        Distribution::Key(column) => format!("DISTSTYLE KEY DISTKEY({})", quote_ident(column)),
    };
    let sort = if layout.sort_key.is_empty() {
        "SORTKEY AUTO".to_owned()
    } else {
        let names: Vec<String> = layout.sort_key.iter().map(|c| quote_ident(c)).collect();
        format!("COMPOUND SORTKEY({})", names.join(", "))
    };
    format!("{distribution} {sort}")
}

/// A temporary table's distribution: the target's key, so the merge joins rows on the
/// slice that holds them; otherwise Redshift's choice.
fn temporary_distribution(layout: &RedshiftLayout) -> String {
    match &layout.distribution {
        Distribution::Key(column) => format!(" DISTKEY({})", quote_ident(column)),
        _ => String::new(),
    }
}

/// The staged form of a `TIMESTAMPTZ` column: UTC wall-clock time as `TIMESTAMP`, the
/// Parquet timestamp Redshift's columnar COPY documents without doubt; the merge converts it
/// back (`AT TIME ZONE 'UTC'`, which gives a `TIMESTAMPTZ`: r_AT_TIME_ZONE.html).
const STAGED_TIMESTAMPTZ: &str = "TIMESTAMP";

/// A staged column's value as the target column takes it.
fn source_value(column: &ColumnDef) -> String {
    let value = format!("source.{}", quote_ident(&column.name));
    if column.sql_type == "TIMESTAMPTZ" {
        format!("{value} AT TIME ZONE 'UTC'")
    } else {
        value
    }
}

fn source_values(columns: &[ColumnDef]) -> String {
    columns
        .iter()
        .map(source_value)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The temporary staging table: the load columns plus the sequence, in the Parquet
/// files' column order (Parquet `COPY` maps columns by position); `TIMESTAMPTZ` staged as
/// UTC `TIMESTAMP`.
pub(crate) fn create_staging(columns: &[ColumnDef], layout: &RedshiftLayout) -> String {
    let staged: Vec<ColumnDef> = columns
        .iter()
        .map(|column| ColumnDef {
            sql_type: match column.sql_type.as_str() {
                "TIMESTAMPTZ" => STAGED_TIMESTAMPTZ.to_owned(),
                other => other.to_owned(),
            },
            ..column.clone()
        })
        .collect();
    format!(
        "CREATE TEMPORARY TABLE {} (\n  {},\n  {} BIGINT NOT NULL\n){}",
        quote_ident(STAGING_TABLE),
        sql::column_defs(&staged),
        quote_ident(SEQUENCE_COLUMN),
        temporary_distribution(layout),
    )
}

/// `COPY` of exactly the manifest's files. `STATUPDATE OFF`: the staging table is always
/// empty before, and COPY into an empty table would otherwise analyze it every load
/// (copy-parameters-data-load.html); only the merge reads it, once.
pub(crate) fn copy_from_manifest(manifest_url: &str, iam_role: &str) -> String {
    format!(
        "COPY {} FROM {} IAM_ROLE {} FORMAT AS PARQUET MANIFEST STATUPDATE OFF",
        quote_ident(STAGING_TABLE),
        literal(manifest_url),
        literal(iam_role),
    )
}

/// The last staged row of each merge key, as a table `MERGE` can read.
pub(crate) fn create_source(
    columns: &[ColumnDef],
    merge_keys: &[String],
    layout: &RedshiftLayout,
) -> String {
    format!(
        "CREATE TEMPORARY TABLE {}{} AS SELECT {} FROM {}",
        quote_ident(SOURCE_TABLE),
        temporary_distribution(layout),
        column_list(columns, ""),
        sql::deduplicated_staging(columns, merge_keys)
            .strip_prefix('(')
            .and_then(|s| s.strip_suffix(')'))
            .map(|inner| format!("({inner}) AS deduplicated"))
            .expect("deduplicated_staging is parenthesised"),
    )
}

/// Upsert on the key. Redshift's `MERGE` takes no alias for the target, so the target
/// is named in full in the match condition.
pub(crate) fn merge_on_key(
    table: &TableName,
    columns: &[ColumnDef],
    key_columns: &[String],
) -> String {
    format!(
        "MERGE INTO {target} USING {source} AS source\nON {on}\nWHEN MATCHED THEN UPDATE SET {updates}\nWHEN NOT MATCHED THEN INSERT ({cols}) VALUES ({values})",
        target = qualified(table),
        source = quote_ident(SOURCE_TABLE),
        on = key_condition(&qualified(table), key_columns),
        updates = sql::merge_updates(columns, key_columns, REDSHIFT, source_value),
        cols = column_list(columns, ""),
        values = source_values(columns),
    )
}

/// Append of the rows whose lineage the target does not hold yet (an anti-join). Only the
/// target rows of the batch's sources can match, so only those are read (a sort key on the
/// source lets Redshift skip the rest).
pub(crate) fn append_new_lineage(table: &TableName, columns: &[ColumnDef]) -> String {
    let lineage_keys = lineage::column_names();
    let source = quote_ident(SOURCE_TABLE);
    let first = quote_ident(lineage::SOURCE);
    format!(
        "INSERT INTO {target} ({cols})\nSELECT {source_cols} FROM {source} AS source\nLEFT JOIN (SELECT {lineage_cols} FROM {target} WHERE {first} IN (SELECT DISTINCT {first} FROM {source})) AS existing ON {on}\nWHERE existing.{first} IS NULL",
        target = qualified(table),
        cols = column_list(columns, ""),
        source_cols = source_values(columns),
        lineage_cols = lineage_keys
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", "),
        on = key_condition("existing", &lineage_keys),
    )
}

/// Serialises loads: Redshift has no advisory locks; a table lock on the ledger makes
/// a second load of the same key wait, then find the key.
pub(crate) fn lock_ledger(ledger: &str) -> String {
    format!("LOCK {ledger}")
}

pub(crate) fn ledger_lookup(ledger: &str, keys: usize) -> String {
    format!(
        "SELECT idempotency_key FROM {ledger} WHERE idempotency_key IN ({})",
        placeholders(1, keys)
    )
}

/// A multi-row insert of `rows` rows of `width` parameters each.
pub(crate) fn insert_rows(table: &str, columns: &[&str], rows: usize) -> String {
    let width = columns.len();
    let values = (0..rows)
        .map(|row| format!("({})", placeholders(1 + row * width, width)))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "INSERT INTO {table} ({}) VALUES {values}",
        columns
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

pub(crate) fn drop_temporary() -> String {
    format!(
        "DROP TABLE IF EXISTS {}; DROP TABLE IF EXISTS {}",
        quote_ident(SOURCE_TABLE),
        quote_ident(STAGING_TABLE)
    )
}
