//! Applies a dataset's transform SQL (DataFusion, over a table named `input`) to chunks of
//! typed rows, carrying the lineage columns through.
//!
//! Transforms are row-wise: projections, filters and scalar functions. A chunk is
//! transformed on its own, so an aggregate, join, window, sort or limit would give
//! different answers depending on how rows were chunked; such transforms are refused when
//! planned (by `processor check` and at start-up). Because every output row comes from one
//! input row, the lineage columns can be appended to the projection when the transform does
//! not select them itself.

use std::sync::Arc;

use datafusion::arrow::array::{Array, BooleanArray};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::execution::context::SQLOptions;
use datafusion::logical_expr::{LogicalPlan, LogicalPlanBuilder};
use datafusion::prelude::{SessionContext, col};
use shared::catalog::Dataset;
use shared::error::{BoxError, Classify, Retryability};

use crate::pipeline::lineage;
use crate::pipeline::typing::input_schema_with_lineage;
use crate::warehouse::Reject;

#[derive(Debug, thiserror::Error)]
pub enum TransformError {
    #[error("transform of dataset {dataset:?} does not plan")]
    Plan { dataset: String, source: BoxError },
    #[error("transform of dataset {dataset:?} failed")]
    Execute { dataset: String, source: BoxError },
}

impl Classify for TransformError {
    fn retryability(&self) -> Retryability {
        Retryability::Permanent
    }
}

/// The transform of one dataset.
#[derive(Debug, Clone)]
pub(crate) struct Transformer {
    dataset: Dataset,
}

impl Transformer {
    pub fn new(dataset: &Dataset) -> Self {
        Self {
            dataset: dataset.clone(),
        }
    }

    fn plan_error(&self, source: impl Into<BoxError>) -> TransformError {
        TransformError::Plan {
            dataset: self.dataset.name.clone(),
            source: source.into(),
        }
    }

    /// Plans the transform over `input` rows, with the lineage columns appended.
    async fn plan(
        &self,
        input: Vec<RecordBatch>,
    ) -> Result<(SessionContext, LogicalPlan), TransformError> {
        let context = SessionContext::new();
        let table = MemTable::try_new(input_schema_with_lineage(&self.dataset), vec![input])
            .map_err(|err| self.plan_error(err))?;
        context
            .register_table("input", Arc::new(table))
            .map_err(|err| self.plan_error(err))?;
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let frame = context
            .sql_with_options(&self.dataset.transform_sql, options)
            .await
            .map_err(|err| self.plan_error(err))?;
        let plan = frame.logical_plan().clone();
        check_row_wise(&plan).map_err(|reason| self.plan_error(reason))?;
        let plan = with_lineage(plan).map_err(|reason| self.plan_error(reason))?;
        Ok((context, plan))
    }

    /// The schema of the rows the transform produces, lineage columns included.
    pub async fn output_schema(&self) -> Result<SchemaRef, TransformError> {
        if !self.dataset.has_transform() {
            return Ok(input_schema_with_lineage(&self.dataset));
        }
        let (_, plan) = self.plan(Vec::new()).await?;
        Ok(Arc::new(plan.schema().as_arrow().clone()))
    }

    /// Transforms one chunk. Rows whose merge key comes out NULL are rejected: they could
    /// never be merged.
    pub async fn apply(
        &self,
        input: Vec<RecordBatch>,
    ) -> Result<(Vec<RecordBatch>, Vec<Reject>), TransformError> {
        let output = if self.dataset.has_transform() {
            let (context, plan) = self.plan(input).await?;
            context
                .execute_logical_plan(plan)
                .await
                .map_err(|err| self.plan_error(err))?
                .collect()
                .await
                .map_err(|err| TransformError::Execute {
                    dataset: self.dataset.name.clone(),
                    source: err.into(),
                })?
        } else {
            input
        };
        self.reject_null_keys(output)
    }

    fn reject_null_keys(
        &self,
        batches: Vec<RecordBatch>,
    ) -> Result<(Vec<RecordBatch>, Vec<Reject>), TransformError> {
        if self.dataset.key_columns.is_empty() {
            return Ok((batches, Vec::new()));
        }
        let mut kept = Vec::with_capacity(batches.len());
        let mut rejects = Vec::new();
        for batch in batches {
            let schema = batch.schema();
            let keys: Vec<(&str, &dyn Array)> = self
                .dataset
                .key_columns
                .iter()
                .filter_map(|k| {
                    schema
                        .index_of(k)
                        .ok()
                        .map(|i| (k.as_str(), batch.column(i).as_ref()))
                })
                .collect();
            if keys.iter().all(|(_, array)| array.null_count() == 0) {
                kept.push(batch);
                continue;
            }
            let keep: BooleanArray = (0..batch.num_rows())
                .map(|row| {
                    let null_key = keys.iter().find(|(_, array)| array.is_null(row));
                    if let Some((name, _)) = null_key {
                        rejects.push(Reject {
                            row_number: None,
                            raw: None,
                            reason: format!("key column {name} is NULL after the transform"),
                        });
                    }
                    Some(null_key.is_none())
                })
                .collect();
            kept.push(filter_record_batch(&batch, &keep).map_err(|err| {
                TransformError::Execute {
                    dataset: self.dataset.name.clone(),
                    source: err.into(),
                }
            })?);
        }
        Ok((kept, rejects))
    }
}

/// Refuses plans whose result depends on how rows are chunked.
fn check_row_wise(plan: &LogicalPlan) -> Result<(), String> {
    match plan {
        LogicalPlan::Projection(_)
        | LogicalPlan::Filter(_)
        | LogicalPlan::TableScan(_)
        | LogicalPlan::SubqueryAlias(_) => plan.inputs().into_iter().try_for_each(check_row_wise),
        other => Err(format!(
            "transforms must be row-wise (SELECT … FROM input [WHERE …]); {} is not allowed because chunks are transformed separately",
            other.display()
        )),
    }
}

/// Appends the lineage columns the plan's output lacks to its top projection.
fn with_lineage(plan: LogicalPlan) -> Result<LogicalPlan, String> {
    let schema = plan.schema();
    let missing: Vec<&str> = lineage::COLUMNS
        .iter()
        .copied()
        .filter(|c| !schema.has_column_with_unqualified_name(c))
        .collect();
    if missing.is_empty() {
        return Ok(plan);
    }
    let LogicalPlan::Projection(projection) = plan else {
        return Err("cannot carry the lineage columns through this transform".to_owned());
    };
    let mut expressions = projection.expr.clone();
    expressions.extend(missing.iter().map(|c| col(*c)));
    LogicalPlanBuilder::from(projection.input.as_ref().clone())
        .project(expressions)
        .and_then(LogicalPlanBuilder::build)
        .map_err(|err| err.to_string())
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Decimal128Array, Int32Array, Int64Array, StringArray};
    use shared::catalog::Catalog;

    use super::*;
    use crate::pipeline::typing::{Origin, TextRows};

    const EXAMPLE: &str = crate::local::EXAMPLE_CATALOG;

    fn dataset(name: &str, transform: Option<&str>) -> Dataset {
        let mut dataset = Catalog::from_toml(EXAMPLE, "example")
            .expect("valid")
            .get(name)
            .expect("present")
            .clone();
        if let Some(sql) = transform {
            dataset.transform_sql = sql.to_owned();
        }
        dataset
    }

    fn rows(dataset: &Dataset, cells: &[[&str; 5]]) -> Vec<RecordBatch> {
        let mut text = TextRows::new(5);
        for (i, row) in cells.iter().enumerate() {
            text.push(
                row.iter().map(|c| Some(*c)),
                i as u64 + 1,
                None,
                (i * 100).to_string(),
                0,
            );
        }
        let origin = Origin {
            source: "s3://b/k".into(),
            partition: "etag".into(),
        };
        vec![text.into_typed(dataset, &origin).expect("typed").batch]
    }

    #[tokio::test]
    async fn the_transform_runs_and_lineage_is_carried_through() {
        let dataset = dataset("order_items", None);
        let transformer = Transformer::new(&dataset);
        let input = rows(
            &dataset,
            &[
                ["1", "1", "SKU-1", "3", "2.50"],
                ["1", "2", "SKU-2", "1", "10.00"],
            ],
        );
        let (output, rejects) = transformer.apply(input).await.expect("applies");
        assert!(rejects.is_empty());
        let batch = &output[0];
        let schema = batch.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(
            names,
            [
                "order_id",
                "line_number",
                "product_sku",
                "quantity",
                "unit_price",
                "line_total",
                "_ingest_source",
                "_ingest_partition",
                "_ingest_offset",
                "_ingest_sub_offset"
            ]
        );
        let totals = batch
            .column(5)
            .as_any()
            .downcast_ref::<Decimal128Array>()
            .expect("decimal");
        assert_eq!((totals.value(0), totals.value(1)), (750, 1000));
        let offsets = batch
            .column(8)
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("text");
        assert_eq!((offsets.value(0), offsets.value(1)), ("0", "100"));
        assert_eq!(
            transformer.output_schema().await.expect("plans").as_ref(),
            schema.as_ref()
        );
        let lines = batch
            .column(1)
            .as_any()
            .downcast_ref::<Int32Array>()
            .expect("int32");
        assert_eq!(lines.values(), &[1, 2]);
    }

    #[tokio::test]
    async fn filters_apply_and_null_keys_are_rejected() {
        let dataset = dataset(
            "order_items",
            Some(
                "SELECT CASE WHEN order_id = 2 THEN NULL ELSE order_id END AS order_id, line_number, product_sku, quantity, unit_price FROM input WHERE quantity > 0",
            ),
        );
        let input = rows(
            &dataset,
            &[
                ["1", "1", "A", "1", "1.00"],
                ["2", "1", "B", "1", "1.00"],
                ["3", "1", "C", "0", "1.00"],
            ],
        );
        let (output, rejects) = Transformer::new(&dataset)
            .apply(input)
            .await
            .expect("applies");
        let ids: Vec<i64> = output
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .expect("int64")
                    .values()
                    .to_vec()
            })
            .collect();
        assert_eq!(ids, [1]);
        assert_eq!(rejects.len(), 1);
        assert_eq!(
            rejects[0].reason,
            "key column order_id is NULL after the transform"
        );
    }

    #[tokio::test]
    async fn chunk_dependent_transforms_are_refused() {
        for sql in [
            "SELECT order_id, count(*) AS n FROM input GROUP BY order_id",
            "SELECT * FROM input ORDER BY order_id",
            "SELECT * FROM input LIMIT 10",
            "SELECT a.* FROM input a JOIN input b ON a.order_id = b.order_id",
        ] {
            let dataset = dataset("order_items", Some(sql));
            let err = Transformer::new(&dataset)
                .output_schema()
                .await
                .expect_err(sql);
            assert!(
                shared::error::report(&err).contains("transforms must be row-wise"),
                "{sql}: {err}"
            );
        }
    }
}
