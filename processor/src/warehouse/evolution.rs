//! Schema evolution: what a target table must become for the catalog's output, decided
//! before any work is taken.
//!
//! A sink describes the table it holds ([`ExistingTable`]); [`plan`] compares it with the
//! load schema's columns and returns the steps a sink applies (new columns, safe widenings,
//! `NOT NULL` dropped from columns the output no longer fills) and what it refuses (a type
//! narrowed or changed, a key changed, anything under a `freeze` contract), each naming
//! table, column, old and new type.

use std::fmt;

use shared::catalog::{Dataset, SchemaContract};

use super::sql::{ColumnDef, quote_ident};
use crate::pipeline::lineage;

/// A column as the warehouse holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableColumn {
    pub name: String,
    /// The type as the warehouse spells it (`character varying(256)`, `INTEGER`).
    pub sql_type: String,
    pub nullable: bool,
}

/// The target table as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExistingTable {
    pub columns: Vec<TableColumn>,
    /// The columns of the table's unique merge-key index, where the sink keeps one.
    pub key: Option<Vec<String>>,
}

/// Which changes a sink can make in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Integers to a wider integer, decimals to a higher precision of the same scale.
    pub widen_numbers: bool,
    /// `VARCHAR(n)` to a larger `n`.
    pub widen_strings: bool,
    /// `ALTER COLUMN … DROP NOT NULL`.
    pub drop_not_null: bool,
}

/// One change to the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A new output column, added nullable: the rows already loaded have no value.
    Add(ColumnDef),
    /// A column widened to `to`.
    Widen {
        column: String,
        from: String,
        to: String,
    },
    /// A column the output no longer fills (or fills with NULLs) made nullable.
    DropNotNull { column: String },
}

/// A change the platform will not make, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub column: String,
    pub from: String,
    pub to: String,
    pub reason: String,
}

/// What a dataset's target needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaPlan {
    pub dataset: String,
    /// The table as `schema.table`.
    pub table: String,
    /// The table does not exist yet and is created.
    pub create: bool,
    pub steps: Vec<Step>,
    /// Columns the output no longer has: kept, and left NULL by new loads.
    pub kept: Vec<String>,
    pub refused: Vec<Refusal>,
}

impl SchemaPlan {
    pub fn is_refused(&self) -> bool {
        !self.refused.is_empty()
    }

    /// Whether the table is left as it is.
    pub fn is_unchanged(&self) -> bool {
        !self.create && self.steps.is_empty()
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Add(column) => write!(
                f,
                "add column {} {} (nullable; rows already loaded hold NULL)",
                column.name, column.sql_type
            ),
            Step::Widen { column, from, to } => write!(f, "widen column {column} {from} → {to}"),
            Step::DropNotNull { column } => write!(f, "make column {column} nullable"),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "column {} {} → {}: {}",
            self.column, self.from, self.to, self.reason
        )
    }
}

impl fmt::Display for SchemaPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.table, self.dataset)?;
        if self.create {
            return write!(f, ": create");
        }
        if self.is_unchanged() && self.refused.is_empty() && self.kept.is_empty() {
            return write!(f, ": up to date");
        }
        for step in &self.steps {
            write!(f, "\n  + {step}")?;
        }
        for column in &self.kept {
            write!(
                f,
                "\n  = keep column {column} (no longer in the output; new rows hold NULL)"
            )?;
        }
        for refusal in &self.refused {
            write!(f, "\n  ! refused: {refusal}")?;
        }
        Ok(())
    }
}

/// Plans one per line block, for logs and errors.
pub fn render_plans(plans: &[SchemaPlan]) -> String {
    plans.iter().map(|plan| format!("\n{plan}")).collect()
}

/// A warehouse type, whatever its spelling (`int8` and `BIGINT`, `character varying(9)`
/// and `VARCHAR(9)`), so a table read back compares with the columns the sink would create.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SqlType {
    SmallInt,
    Integer,
    BigInt,
    Decimal { precision: u32, scale: u32 },
    Varchar(u32),
    Other(String),
}

impl SqlType {
    fn parse(text: &str) -> Self {
        let lower = text.trim().to_ascii_lowercase();
        let (name, args) = match lower.split_once('(') {
            Some((name, rest)) => (name.trim(), rest.trim_end_matches(')')),
            None => (lower.as_str(), ""),
        };
        let numbers: Vec<u32> = args
            .split(',')
            .filter_map(|n| n.trim().parse().ok())
            .collect();
        match (name, numbers.as_slice()) {
            ("smallint" | "int2", []) => Self::SmallInt,
            ("integer" | "int" | "int4", []) => Self::Integer,
            ("bigint" | "int8", []) => Self::BigInt,
            ("numeric" | "decimal", [precision, scale]) => Self::Decimal {
                precision: *precision,
                scale: *scale,
            },
            ("character varying" | "varchar", [length]) => Self::Varchar(*length),
            ("timestamp" | "timestamp without time zone", []) => Self::Other("timestamp".into()),
            ("timestamptz" | "timestamp with time zone", []) => Self::Other("timestamptz".into()),
            ("float8" | "double precision", []) => Self::Other("double precision".into()),
            ("float4" | "real", []) => Self::Other("real".into()),
            ("bool" | "boolean", []) => Self::Other("boolean".into()),
            _ => Self::Other(lower.clone()),
        }
    }

    fn integer_rank(&self) -> Option<u8> {
        match self {
            Self::SmallInt => Some(1),
            Self::Integer => Some(2),
            Self::BigInt => Some(3),
            _ => None,
        }
    }
}

/// Whether `to` holds every value of `from`, and whether the sink can make the change.
enum Change {
    Same,
    Widen,
    WidenUnsupported,
    Refused(&'static str),
}

fn compare(from: &SqlType, to: &SqlType, caps: Capabilities) -> Change {
    if from == to {
        return Change::Same;
    }
    let widens = match (from, to) {
        (
            SqlType::Decimal {
                precision: p1,
                scale: s1,
            },
            SqlType::Decimal {
                precision: p2,
                scale: s2,
            },
        ) => {
            if s1 != s2 {
                return Change::Refused("a decimal's scale cannot change");
            }
            if p2 < p1 {
                return Change::Refused("a narrower type could not hold the rows already loaded");
            }
            caps.widen_numbers
        }
        (SqlType::Varchar(n1), SqlType::Varchar(n2)) => {
            if n2 < n1 {
                return Change::Refused("a shorter string could not hold the rows already loaded");
            }
            caps.widen_strings
        }
        _ => match (from.integer_rank(), to.integer_rank()) {
            (Some(a), Some(b)) if b > a => caps.widen_numbers,
            (Some(_), Some(_)) => {
                return Change::Refused("a narrower type could not hold the rows already loaded");
            }
            _ => return Change::Refused("the type changed; only widenings are made in place"),
        },
    };
    if widens {
        Change::Widen
    } else {
        Change::WidenUnsupported
    }
}

/// The plan that brings `existing` (or no table) to the `desired` columns of `dataset`.
pub fn plan(
    dataset: &Dataset,
    desired: &[ColumnDef],
    existing: Option<&ExistingTable>,
    caps: Capabilities,
) -> SchemaPlan {
    let mut plan = SchemaPlan {
        dataset: dataset.name.clone(),
        table: format!("{}.{}", dataset.target.schema, dataset.target.table),
        create: existing.is_none(),
        steps: Vec::new(),
        kept: Vec::new(),
        refused: Vec::new(),
    };
    let Some(existing) = existing else {
        return plan;
    };
    for column in desired {
        match existing.columns.iter().find(|c| c.name == column.name) {
            None => plan.steps.push(Step::Add(ColumnDef {
                nullable: true,
                ..column.clone()
            })),
            Some(held) => plan_column(&mut plan, held, column, caps),
        }
    }
    for held in &existing.columns {
        if held.name == lineage::LOADED_AT || desired.iter().any(|c| c.name == held.name) {
            continue;
        }
        plan.kept.push(held.name.clone());
        if !held.nullable {
            plan_drop_not_null(&mut plan, held, "(no longer in the output)", caps);
        }
    }
    check_key(&mut plan, dataset, existing);
    if dataset.schema_contract == SchemaContract::Freeze {
        freeze(&mut plan);
    }
    plan
}

fn plan_column(plan: &mut SchemaPlan, held: &TableColumn, column: &ColumnDef, caps: Capabilities) {
    let refuse = |plan: &mut SchemaPlan, reason: &str| {
        plan.refused.push(Refusal {
            column: column.name.clone(),
            from: held.sql_type.clone(),
            to: column.sql_type.clone(),
            reason: reason.to_owned(),
        })
    };
    match compare(
        &SqlType::parse(&held.sql_type),
        &SqlType::parse(&column.sql_type),
        caps,
    ) {
        Change::Same => {}
        Change::Widen => plan.steps.push(Step::Widen {
            column: column.name.clone(),
            from: held.sql_type.clone(),
            to: column.sql_type.clone(),
        }),
        Change::WidenUnsupported => refuse(
            plan,
            "a safe widening this warehouse cannot make in place; create a new table with the wider type and copy the rows, or keep the old type in the catalog",
        ),
        Change::Refused(reason) => refuse(plan, reason),
    }
    if !held.nullable && column.nullable {
        plan_drop_not_null(plan, held, &column.sql_type, caps);
    }
}

fn plan_drop_not_null(plan: &mut SchemaPlan, held: &TableColumn, to: &str, caps: Capabilities) {
    if caps.drop_not_null {
        plan.steps.push(Step::DropNotNull {
            column: held.name.clone(),
        });
    } else {
        plan.refused.push(Refusal {
            column: held.name.clone(),
            from: format!("{} NOT NULL", held.sql_type),
            to: to.to_owned(),
            reason: "the table requires a value that new loads may not have, and this warehouse cannot drop NOT NULL in place; declare the column nullable = false in the catalog again".into(),
        });
    }
}

fn check_key(plan: &mut SchemaPlan, dataset: &Dataset, existing: &ExistingTable) {
    let Some(held) = &existing.key else {
        return;
    };
    let wanted = super::merge_keys(dataset);
    let (mut a, mut b) = (held.clone(), wanted.clone());
    a.sort();
    b.sort();
    if a != b {
        plan.refused.push(Refusal {
            column: "(merge key)".into(),
            from: held.join(", "),
            to: wanted.join(", "),
            reason: "the merge key changed; rows already loaded were merged on the old key. Load into a new table, or rebuild this one".into(),
        });
    }
}

/// Under a `freeze` contract every change is refused.
fn freeze(plan: &mut SchemaPlan) {
    for step in std::mem::take(&mut plan.steps) {
        let (column, from, to) = match step {
            Step::Add(column) => (column.name, "(none)".to_owned(), column.sql_type),
            Step::Widen { column, from, to } => (column, from, to),
            Step::DropNotNull { column } => (column, "NOT NULL".into(), "nullable".into()),
        };
        plan.refused.push(Refusal {
            column,
            from,
            to,
            reason: "the dataset's schema_contract is \"freeze\"".into(),
        });
    }
}

/// The statements that apply `plan` to `table` (already quoted) in one transaction: `create`
/// for a missing table; else the steps `now` admits, then `keep` (statements an existing
/// table gets too).
pub(crate) fn apply_statements(
    plan: &SchemaPlan,
    table: &str,
    create: &[String],
    keep: &[String],
    now: impl Fn(&Step) -> bool,
) -> Vec<String> {
    if plan.create {
        return create.to_vec();
    }
    plan.steps
        .iter()
        .filter(|step| now(step))
        .map(|step| step_statement(table, step))
        .chain(keep.iter().cloned())
        .collect()
}

/// The statement of one step on `table` (already quoted), in the dialect the sinks share.
pub(crate) fn step_statement(table: &str, step: &Step) -> String {
    match step {
        Step::Add(column) => format!(
            "ALTER TABLE {table} ADD COLUMN {} {}",
            quote_ident(&column.name),
            column.sql_type
        ),
        Step::Widen { column, to, .. } => format!(
            "ALTER TABLE {table} ALTER COLUMN {} TYPE {to}",
            quote_ident(column)
        ),
        Step::DropNotNull { column } => format!(
            "ALTER TABLE {table} ALTER COLUMN {} DROP NOT NULL",
            quote_ident(column)
        ),
    }
}

#[cfg(test)]
mod tests {
    use shared::catalog::Catalog;

    use super::*;

    const POSTGRES: Capabilities = Capabilities {
        widen_numbers: true,
        widen_strings: true,
        drop_not_null: true,
    };
    const REDSHIFT: Capabilities = Capabilities {
        widen_numbers: false,
        widen_strings: true,
        drop_not_null: false,
    };

    fn dataset(extra: &str) -> Dataset {
        let text = format!(
            "[datasets.orders]\nformat = \"csv\"\ntarget = \"sales.orders\"\nkey = [\"id\"]\n{extra}\ns3 = {{ prefix = \"o/\" }}\ncolumns = [{{ name = \"id\", type = \"int64\", nullable = false }}]\n"
        );
        Catalog::from_toml(&text, "t")
            .expect("valid")
            .get("orders")
            .expect("present")
            .clone()
    }

    fn def(name: &str, sql_type: &str, nullable: bool) -> ColumnDef {
        ColumnDef {
            name: name.into(),
            sql_type: sql_type.into(),
            nullable,
        }
    }

    fn held(name: &str, sql_type: &str, nullable: bool) -> TableColumn {
        TableColumn {
            name: name.into(),
            sql_type: sql_type.into(),
            nullable,
        }
    }

    fn table(columns: Vec<TableColumn>) -> ExistingTable {
        ExistingTable {
            columns,
            key: Some(vec!["id".into()]),
        }
    }

    #[test]
    fn a_missing_table_is_created_and_a_matching_one_left_alone() {
        let desired = [def("id", "bigint", false), def("note", "text", true)];
        let plan_of =
            |existing: Option<&ExistingTable>| plan(&dataset(""), &desired, existing, POSTGRES);
        assert!(plan_of(None).create);
        // Spelled as the catalog reads it back: int8 is bigint.
        let same = table(vec![
            held("id", "int8", false),
            held("note", "text", true),
            held(lineage::LOADED_AT, "timestamp with time zone", false),
        ]);
        let plan = plan_of(Some(&same));
        assert!(plan.is_unchanged() && !plan.is_refused(), "{plan}");
        assert_eq!(plan.to_string(), "sales.orders (orders): up to date");
    }

    #[test]
    fn new_columns_are_added_nullable_and_safe_widenings_made() {
        let desired = [
            def("id", "bigint", false),
            def("qty", "integer", true),
            def("price", "numeric(12,2)", true),
            def("code", "VARCHAR(64)", true),
            def("added", "date", false),
        ];
        let existing = table(vec![
            held("id", "bigint", false),
            held("qty", "smallint", true),
            held("price", "numeric(10,2)", true),
            held("code", "character varying(16)", true),
        ]);
        let plan = plan(&dataset(""), &desired, Some(&existing), POSTGRES);
        assert!(!plan.is_refused(), "{plan}");
        let statements: Vec<String> = plan.steps.iter().map(|s| step_statement("t", s)).collect();
        assert_eq!(
            statements,
            [
                "ALTER TABLE t ALTER COLUMN \"qty\" TYPE integer",
                "ALTER TABLE t ALTER COLUMN \"price\" TYPE numeric(12,2)",
                "ALTER TABLE t ALTER COLUMN \"code\" TYPE VARCHAR(64)",
                "ALTER TABLE t ADD COLUMN \"added\" date",
            ]
        );
    }

    #[test]
    fn narrowings_type_changes_and_key_changes_are_refused_naming_both_types() {
        let desired = [
            def("id", "bigint", false),
            def("qty", "smallint", true),
            def("price", "numeric(12,3)", true),
            def("note", "bigint", true),
        ];
        let existing = ExistingTable {
            columns: vec![
                held("id", "bigint", false),
                held("qty", "integer", true),
                held("price", "numeric(12,2)", true),
                held("note", "text", true),
            ],
            key: Some(vec!["id".into(), "qty".into()]),
        };
        let plan = plan(&dataset(""), &desired, Some(&existing), POSTGRES);
        let refused: Vec<String> = plan.refused.iter().map(ToString::to_string).collect();
        assert_eq!(
            refused,
            [
                "column qty integer → smallint: a narrower type could not hold the rows already loaded",
                "column price numeric(12,2) → numeric(12,3): a decimal's scale cannot change",
                "column note text → bigint: the type changed; only widenings are made in place",
                "column (merge key) id, qty → id: the merge key changed; rows already loaded were merged on the old key. Load into a new table, or rebuild this one",
            ]
        );
    }

    #[test]
    fn removed_columns_stay_and_lose_not_null_where_the_warehouse_can() {
        let desired = [def("id", "bigint", false)];
        let existing = table(vec![
            held("id", "bigint", false),
            held("gone", "text", true),
            held("required", "text", false),
        ]);
        let on_postgres = plan(&dataset(""), &desired, Some(&existing), POSTGRES);
        assert_eq!(on_postgres.kept, ["gone", "required"]);
        assert_eq!(
            on_postgres.steps,
            [Step::DropNotNull {
                column: "required".into()
            }]
        );
        let on_redshift = plan(&dataset(""), &desired, Some(&existing), REDSHIFT);
        assert!(on_redshift.steps.is_empty());
        assert_eq!(on_redshift.refused.len(), 1, "{on_redshift}");
        assert_eq!(on_redshift.refused[0].column, "required");
    }

    #[test]
    fn redshift_widens_strings_only_and_freeze_refuses_everything() {
        let desired = [
            def("id", "BIGINT", false),
            def("qty", "INTEGER", true),
            def("code", "VARCHAR(64)", true),
        ];
        let existing = table(vec![
            held("id", "bigint", false),
            held("qty", "smallint", true),
            held("code", "character varying(16)", true),
        ]);
        let plan_on = |extra: &str| plan(&dataset(extra), &desired, Some(&existing), REDSHIFT);
        let evolve = plan_on("");
        assert_eq!(evolve.steps.len(), 1, "{evolve}");
        assert_eq!(evolve.refused.len(), 1, "{evolve}");
        assert!(evolve.refused[0].reason.contains("cannot make in place"));
        let frozen = plan_on("schema_contract = \"freeze\"");
        assert!(frozen.steps.is_empty());
        assert_eq!(frozen.refused.len(), 2, "{frozen}");
        assert!(frozen.to_string().contains(
            "! refused: column code character varying(16) → VARCHAR(64): the dataset's schema_contract is \"freeze\""
        ));
    }
}
