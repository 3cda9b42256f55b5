//! `processor check`: what can be verified about a catalog before any data flows.
//!
//! Loading the catalog already validated its structure; this plans each dataset's
//! transform SQL with DataFusion against the input schema, so a typo in a column name, a
//! statement that is not a query, or a key column the transform drops is found at deploy
//! time instead of on the first file.

use arrow_schema::DataType;
use shared::catalog::{Catalog, Dataset, RESERVED_COLUMN_PREFIX, check_identifier, type_label};

use crate::pipeline::lineage;
use crate::pipeline::transform::{TransformError, Transformer};
use crate::warehouse::evolution::SchemaPlan;
use crate::warehouse::postgres::binary_copy::pg_type;
use crate::warehouse::{Warehouse, WarehouseError};

/// One output column of a dataset's transform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputColumn {
    pub name: String,
    pub type_label: String,
    pub nullable: bool,
}

/// What the check found for one dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetCheck {
    pub dataset: String,
    pub output: Vec<OutputColumn>,
    pub problems: Vec<String>,
}

impl DatasetCheck {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Whether the warehouse sinks can store a column of this type.
pub(crate) fn warehouse_supports(data_type: &DataType) -> bool {
    pg_type(data_type).is_some()
}

/// Plans the transform of one dataset over an empty `input` table of its schema.
pub(crate) async fn check_dataset(dataset: &Dataset) -> DatasetCheck {
    let mut problems = Vec::new();
    let output = match plan_output(dataset).await {
        Ok(output) => output,
        Err(message) => {
            problems.push(format!("transform does not plan: {message}"));
            Vec::new()
        }
    };
    for (index, column) in output.iter().enumerate() {
        if let Err(message) = check_identifier(&column.name) {
            problems.push(format!(
                "output column {message}; rename it with AS in the transform"
            ));
        } else if column.name.starts_with(RESERVED_COLUMN_PREFIX) {
            problems.push(format!(
                "output column {:?} uses the reserved prefix {RESERVED_COLUMN_PREFIX:?}",
                column.name
            ));
        }
        if output[..index].iter().any(|c| c.name == column.name) {
            problems.push(format!("output column {:?} appears twice", column.name));
        }
    }
    if !output.is_empty() {
        for key in &dataset.key_columns {
            if !output.iter().any(|c| &c.name == key) {
                problems.push(format!(
                    "key column {key:?} is not an output column of the transform"
                ));
            }
        }
    }
    DatasetCheck {
        dataset: dataset.name.clone(),
        output,
        problems,
    }
}

/// The transform's output columns, without the lineage columns the platform adds.
async fn plan_output(dataset: &Dataset) -> Result<Vec<OutputColumn>, String> {
    let schema = Transformer::new(dataset)
        .output_schema()
        .await
        .map_err(|err| match err {
            TransformError::Plan { source, .. } | TransformError::Execute { source, .. } => {
                shared::error::report(source.as_ref())
            }
        })?;
    let mut output = Vec::new();
    for field in schema
        .fields()
        .iter()
        .filter(|f| !lineage::COLUMNS.contains(&f.name().as_str()))
    {
        if !warehouse_supports(field.data_type()) {
            return Err(format!(
                "output column {:?} has type {} which the warehouse sinks cannot store; CAST it",
                field.name(),
                field.data_type()
            ));
        }
        output.push(OutputColumn {
            name: field.name().clone(),
            type_label: type_label(field.data_type()),
            nullable: field.is_nullable(),
        });
    }
    Ok(output)
}

/// What each dataset's target table needs (create, evolve, refused), read from the
/// warehouse without changing anything. Datasets whose transform does not plan are left
/// out: [`check_catalog`] reports them.
pub async fn plan_tables(
    warehouse: &dyn Warehouse,
    catalog: &Catalog,
) -> Result<Vec<SchemaPlan>, WarehouseError> {
    let mut plans = Vec::with_capacity(catalog.len());
    for dataset in catalog.datasets() {
        let Ok(schema) = crate::pipeline::plan_load_schema(dataset).await else {
            continue;
        };
        plans.push(warehouse.plan_target(dataset, &schema).await?);
    }
    Ok(plans)
}

/// Checks every dataset of a catalog.
pub async fn check_catalog(catalog: &Catalog) -> Vec<DatasetCheck> {
    let mut checks = Vec::with_capacity(catalog.len());
    for dataset in catalog.datasets() {
        checks.push(check_dataset(dataset).await);
    }
    checks
}

/// A human-readable report: one block per dataset.
pub fn render_report(catalog: &Catalog, checks: &[DatasetCheck]) -> String {
    let mut out = String::new();
    for check in checks {
        let Some(dataset) = catalog.get(&check.dataset) else {
            continue;
        };
        let mut sources = Vec::new();
        if let Some(route) = &dataset.s3 {
            sources.push(format!(
                "s3 {}*{} ({})",
                route.prefix,
                route.suffix,
                dataset.format.as_str()
            ));
        }
        if let Some(route) = &dataset.stream {
            let filter = route
                .discriminator
                .as_ref()
                .map(|d| format!(" where {} = {:?}", d.field, d.value))
                .unwrap_or_default();
            sources.push(format!("stream {}{filter}", route.stream));
        }
        let key = if dataset.key_columns.is_empty() {
            "append (merge on lineage)".to_owned()
        } else {
            dataset.key_columns.join(", ")
        };
        out.push_str(&format!(
            "{} {} -> {}\n  from: {}\n  key:  {}\n",
            if check.is_ok() { "ok  " } else { "FAIL" },
            dataset.name,
            dataset.target,
            sources.join("; "),
            key
        ));
        if !check.output.is_empty() {
            let columns: Vec<String> = check
                .output
                .iter()
                .map(|c| {
                    format!(
                        "{} {}{}",
                        c.name,
                        c.type_label,
                        if c.nullable { "" } else { " not null" }
                    )
                })
                .collect();
            out.push_str(&format!("  rows: {}\n", columns.join(", ")));
        }
        for problem in &check.problems {
            out.push_str(&format!("  problem: {problem}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = crate::local::EXAMPLE_CATALOG;

    fn catalog_with_transform(transform: &str, key: &str) -> Catalog {
        let text = format!(
            r#"
[datasets.orders]
format = "csv"
target = "sales.orders"
key = [{key}]
s3 = {{ prefix = "orders/" }}
transform = """{transform}"""
columns = [
  {{ name = "order_id", type = "int64", nullable = false }},
  {{ name = "amount", type = "decimal(10,2)" }},
  {{ name = "status", type = "string" }},
]
"#
        );
        Catalog::from_toml(&text, "test").expect("structurally valid")
    }

    async fn problems(transform: &str, key: &str) -> Vec<String> {
        let catalog = catalog_with_transform(transform, key);
        check_catalog(&catalog).await.remove(0).problems
    }

    #[tokio::test]
    async fn the_example_catalog_plans_with_the_expected_outputs() {
        let catalog = Catalog::from_toml(EXAMPLE, "example").expect("valid");
        let checks = check_catalog(&catalog).await;
        assert!(checks.iter().all(DatasetCheck::is_ok), "{checks:#?}");
        let items = checks
            .iter()
            .find(|c| c.dataset == "order_items")
            .expect("present");
        let line_total = items
            .output
            .iter()
            .find(|c| c.name == "line_total")
            .expect("derived column");
        assert_eq!(line_total.type_label, "decimal(14,2)");
        let report = render_report(&catalog, &checks);
        assert!(
            report.contains("ok   order_items -> sales.order_items"),
            "{report}"
        );
        assert!(
            report.contains("key:  append (merge on lineage)"),
            "{report}"
        );
    }

    #[tokio::test]
    async fn unknown_columns_and_statements_are_reported() {
        let unknown = problems("SELECT order_id, amount_typo FROM input", "\"order_id\"").await;
        assert_eq!(unknown.len(), 1, "{unknown:?}");
        assert!(
            unknown[0].starts_with("transform does not plan:"),
            "{unknown:?}"
        );
        assert!(unknown[0].contains("amount_typo"), "{unknown:?}");

        let ddl = problems("DROP TABLE input", "\"order_id\"").await;
        assert!(ddl[0].contains("DDL not supported"), "{ddl:?}");
    }

    #[tokio::test]
    async fn keys_dropped_by_the_transform_and_bad_output_names_are_reported() {
        let dropped = problems("SELECT amount, status FROM input", "\"order_id\"").await;
        assert_eq!(
            dropped,
            ["key column \"order_id\" is not an output column of the transform"]
        );

        let badly_named = problems(
            "SELECT order_id, amount AS \"Amount Due\", status AS _ingest_status FROM input",
            "\"order_id\"",
        )
        .await;
        assert_eq!(badly_named.len(), 2, "{badly_named:?}");
        assert!(
            badly_named[0].contains("\"Amount Due\" is not a valid identifier"),
            "{badly_named:?}"
        );
        assert!(
            badly_named[1].contains("reserved prefix"),
            "{badly_named:?}"
        );

        let unsupported = problems(
            "SELECT order_id, CAST(status AS BYTEA) AS raw_status FROM input",
            "\"order_id\"",
        )
        .await;
        assert!(
            unsupported[0].contains("cannot store; CAST it"),
            "{unsupported:?}"
        );
    }
}
