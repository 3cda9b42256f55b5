//! A dataset's target table over the PostgreSQL wire (PostgreSQL and Redshift): read back
//! as it is, then created or evolved ([`evolution`]) under a lock, so two tasks starting
//! together neither race nor apply a change twice.

use shared::catalog::Dataset;
use tokio_postgres::GenericClient;

use super::WarehouseError;
use super::connection::{Connection, statement_error};
use super::evolution::{self, Capabilities, ExistingTable, SchemaPlan, Step, TableColumn};
use super::sql::{ColumnDef, qualified};

/// How one sink creates and changes its target tables.
#[derive(Debug, Clone)]
pub(crate) struct TargetSetup {
    /// The statement that serialises schema changes, first in the transaction.
    pub lock: String,
    /// The statements that create the table where it is missing.
    pub create: Vec<String>,
    /// Statements run on an existing table too (the merge-key index, if it went missing).
    pub keep: Vec<String>,
    pub capabilities: Capabilities,
    /// The table's unique merge-key index, where the sink keeps one.
    pub key_index: Option<String>,
    /// Redshift alters a column's type only outside a transaction block.
    pub widen_outside_transaction: bool,
}

/// The table's columns (in order) and merge key, or `None` when it does not exist.
async fn describe(
    client: &impl GenericClient,
    dataset: &Dataset,
    key_index: Option<&str>,
) -> Result<Option<ExistingTable>, WarehouseError> {
    let (schema, table) = (&dataset.target.schema, &dataset.target.table);
    let rows = client
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod)::text, NOT a.attnotnull \
             FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
            &[schema, table],
        )
        .await
        .map_err(statement_error(
            &dataset.name,
            "reading the target table's columns",
        ))?;
    if rows.is_empty() {
        return Ok(None);
    }
    let columns = rows
        .iter()
        .map(|row| TableColumn {
            name: row.get(0),
            sql_type: row.get(1),
            nullable: row.get(2),
        })
        .collect();
    let key = match key_index {
        Some(index) => index_columns(client, dataset, index).await?,
        None => None,
    };
    Ok(Some(ExistingTable { columns, key }))
}

/// The columns of the unique index `index` beside the target, or `None` without one.
async fn index_columns(
    client: &impl GenericClient,
    dataset: &Dataset,
    index: &str,
) -> Result<Option<Vec<String>>, WarehouseError> {
    let rows = client
        .query(
            "SELECT a.attname::text FROM pg_index i \
             JOIN pg_class ic ON ic.oid = i.indexrelid \
             JOIN pg_namespace n ON n.oid = ic.relnamespace \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
             WHERE n.nspname = $1 AND ic.relname = $2",
            &[&dataset.target.schema, &index],
        )
        .await
        .map_err(statement_error(
            &dataset.name,
            "reading the merge-key index",
        ))?;
    Ok((!rows.is_empty()).then(|| rows.iter().map(|row| row.get(0)).collect()))
}

/// What the target needs, read without changing anything.
pub(crate) async fn plan(
    connection: &Connection,
    dataset: &Dataset,
    columns: &[ColumnDef],
    setup: &TargetSetup,
) -> Result<SchemaPlan, WarehouseError> {
    let client = connection.client().await?;
    let existing = describe(&*client, dataset, setup.key_index.as_deref()).await?;
    Ok(evolution::plan(
        dataset,
        columns,
        existing.as_ref(),
        setup.capabilities,
    ))
}

/// Creates the target or brings it to `columns`; refuses (changing nothing) when the plan
/// has refusals.
pub(crate) async fn ensure(
    connection: &Connection,
    dataset: &Dataset,
    columns: &[ColumnDef],
    setup: &TargetSetup,
) -> Result<SchemaPlan, WarehouseError> {
    let action = "creating or evolving the target table";
    let mut client = connection.client().await?;
    let tx = client
        .transaction()
        .await
        .map_err(statement_error(&dataset.name, action))?;
    tx.batch_execute(&setup.lock)
        .await
        .map_err(statement_error(
            &dataset.name,
            "locking for a schema change",
        ))?;
    let existing = describe(&tx, dataset, setup.key_index.as_deref()).await?;
    let plan = evolution::plan(dataset, columns, existing.as_ref(), setup.capabilities);
    if plan.is_refused() {
        return Err(WarehouseError::SchemaRefused { plans: vec![plan] });
    }
    let table = qualified(&dataset.target);
    // Redshift alters a column's type only outside a transaction block: after the commit.
    let later = |step: &Step| setup.widen_outside_transaction && matches!(step, Step::Widen { .. });
    let statements =
        evolution::apply_statements(&plan, &table, &setup.create, &setup.keep, |s| !later(s));
    for statement in &statements {
        tx.batch_execute(statement)
            .await
            .map_err(statement_error(&dataset.name, action))?;
    }
    tx.commit()
        .await
        .map_err(statement_error(&dataset.name, action))?;
    for step in plan.steps.iter().filter(|step| later(step)) {
        client
            .batch_execute(&evolution::step_statement(&table, step))
            .await
            .map_err(statement_error(&dataset.name, "widening a column"))?;
    }
    Ok(plan)
}
