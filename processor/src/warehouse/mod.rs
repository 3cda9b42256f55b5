//! The warehouse interface, the load protocol every sink follows (`protocol`), and one
//! module per sink.
//!
//! One load covers one or more work items of one dataset (micro-batching). In one
//! transaction it skips items whose idempotency key is in the ledger, stages the rows of
//! the others, merges them into the target on the dataset's key (or appends rows whose
//! lineage is new), writes their rejects and their ledger rows, and commits.

pub mod activity;
pub mod connection;
pub mod evolution;
pub mod files;
mod iam;
pub mod load_trace;
mod platform_query;
pub mod postgres;
mod protocol;
pub mod redshift;
pub mod rejects;
pub mod retention;
pub mod sql;
pub mod sqlite;
pub mod streams;
mod target_table;

pub use protocol::Drained;
pub(crate) use protocol::{LoadRecord, StagedRowsSink, drain_items, with_sequence};

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use shared::catalog::Dataset;
use shared::envelope::IdempotencyKey;
use shared::error::{BoxError, Classify, Retryability};

/// The columns rows are merged on: the dataset's key, or the lineage columns.
pub(crate) fn merge_keys(dataset: &Dataset) -> Vec<String> {
    if dataset.key_columns.is_empty() {
        crate::pipeline::lineage::column_names()
    } else {
        dataset.key_columns.clone()
    }
}

/// A row that could not be loaded, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// 1-based row number in the source (line of a file, record of a batch), when known.
    pub row_number: Option<u64>,
    /// The raw text of the row, when there is one.
    pub raw: Option<String>,
    pub reason: String,
}

/// Something that failed while producing rows (reading, decoding, transforming), with its
/// own retry hint.
pub trait SourceFailure: std::error::Error + Classify + Send + Sync + 'static {}
impl<T: std::error::Error + Classify + Send + Sync + 'static> SourceFailure for T {}

/// A failure of a [`RowSource`] during a load; the load is rolled back.
#[derive(Debug)]
pub struct SourceError(pub Box<dyn SourceFailure>);

impl std::fmt::Display for SourceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SourceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl<T: SourceFailure> From<T> for SourceError {
    fn from(err: T) -> Self {
        SourceError(Box::new(err))
    }
}

/// The rows of one work item, produced while they are loaded, so a large file streams
/// through the load without being held in memory.
#[async_trait]
pub trait RowSource: Send + std::fmt::Debug {
    /// The next rows, in the load schema; `None` when there are no more.
    async fn next_batch(&mut self) -> Result<Option<RecordBatch>, SourceError>;

    /// The rows rejected so far: all of them once `next_batch` has returned `None`.
    fn take_rejects(&mut self) -> Vec<Reject>;

    /// A new source that produces the same rows from the start (a file is read again),
    /// or `None` when the rows cannot be produced twice. Lets a sink try a fast path
    /// that may have to be abandoned part-way.
    fn restart(&self) -> Option<Box<dyn RowSource>> {
        None
    }
}

/// One work item to load: its key, where it came from, and its rows.
#[derive(Debug)]
pub struct ItemSource {
    pub key: IdempotencyKey,
    pub source: String,
    pub rows: Box<dyn RowSource>,
    /// The file this item is (a part of), for completion tracking; `None` for records.
    pub file: Option<files::FilePart>,
    /// The stream records this item holds, for stream progress; `None` for files.
    pub stream: Option<streams::StreamPart>,
}

/// Rows already in memory.
#[derive(Debug, Default)]
pub struct MemoryRows {
    batches: std::collections::VecDeque<RecordBatch>,
    rejects: Vec<Reject>,
    /// Everything, for [`RowSource::restart`] (batches share their buffers).
    original: (Vec<RecordBatch>, Vec<Reject>),
}

impl MemoryRows {
    pub fn new(batches: Vec<RecordBatch>, rejects: Vec<Reject>) -> Self {
        Self {
            original: (batches.clone(), rejects.clone()),
            batches: batches.into(),
            rejects,
        }
    }
}

#[async_trait]
impl RowSource for MemoryRows {
    async fn next_batch(&mut self) -> Result<Option<RecordBatch>, SourceError> {
        Ok(self.batches.pop_front())
    }

    fn take_rejects(&mut self) -> Vec<Reject> {
        std::mem::take(&mut self.rejects)
    }

    fn restart(&self) -> Option<Box<dyn RowSource>> {
        let (batches, rejects) = self.original.clone();
        Some(Box::new(MemoryRows::new(batches, rejects)))
    }
}

/// The rows of one work item, in memory.
#[derive(Debug, Clone)]
pub struct ItemRows {
    pub key: IdempotencyKey,
    /// Where the rows came from, for the ledger and the rejects table (`s3://…`, `kinesis://…`).
    pub source: String,
    /// Rows in the load schema (the transform's output plus the lineage columns).
    pub batches: Vec<RecordBatch>,
    pub rejects: Vec<Reject>,
}

impl ItemRows {
    pub fn row_count(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }

    pub fn into_source(self) -> ItemSource {
        ItemSource {
            key: self.key,
            source: self.source,
            rows: Box::new(MemoryRows::new(self.batches, self.rejects)),
            file: None,
            stream: None,
        }
    }
}

/// What one load did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    pub items_loaded: usize,
    /// The idempotency keys this load wrote to the ledger, each once (what the worker counts
    /// bytes of: a duplicate in the same batch or an item already loaded read nothing).
    pub loaded_keys: Vec<String>,
    /// Items whose key the ledger already held: their rows were not loaded again.
    pub items_skipped: usize,
    /// Rows staged for the loaded items.
    pub rows_staged: u64,
    /// Rows inserted or updated in the target.
    pub rows_written: u64,
    pub rows_rejected: u64,
    /// String values cut to their column's size (Redshift, `too_long = "truncate"`).
    pub values_truncated: u64,
}

/// Why a load failed; nothing of it was committed.
#[derive(Debug, thiserror::Error)]
pub enum WarehouseError {
    #[error("cannot connect to the warehouse at {url}")]
    Connect {
        url: String,
        source: BoxError,
        retryable: bool,
    },
    #[error("{action} for dataset {dataset:?} failed")]
    Statement {
        dataset: String,
        action: &'static str,
        source: BoxError,
        retryable: bool,
    },
    #[error("cannot encode rows of dataset {dataset:?} for the warehouse")]
    Encode {
        dataset: String,
        source: postgres::binary_copy::EncodeError,
    },
    #[error("dataset {dataset:?}: {reason}")]
    Schema { dataset: String, reason: String },
    #[error("dataset {dataset:?}: {action}")]
    Rows {
        dataset: String,
        action: String,
        source: ArrowError,
    },
    #[error("warehouse TLS set-up failed")]
    Tls { source: BoxError },
    #[error("staging rows of dataset {dataset:?} in {location} failed")]
    Staging {
        dataset: String,
        location: String,
        source: BoxError,
        retryable: bool,
    },
    #[error(
        "dataset {dataset:?}: another load committed item {key} while this one staged it; retrying skips it"
    )]
    ConcurrentLoad { dataset: String, key: String },
    #[error(transparent)]
    Source(SourceError),
    #[error(
        "the catalog asks for table changes that are refused; nothing was changed and no work taken:{}",
        evolution::render_plans(plans)
    )]
    SchemaRefused { plans: Vec<evolution::SchemaPlan> },
}

impl Classify for WarehouseError {
    fn retryability(&self) -> Retryability {
        let retryable = match self {
            WarehouseError::Connect { retryable, .. }
            | WarehouseError::Statement { retryable, .. }
            | WarehouseError::Staging { retryable, .. } => *retryable,
            WarehouseError::ConcurrentLoad { .. } => true,
            WarehouseError::Encode { .. }
            | WarehouseError::Schema { .. }
            | WarehouseError::SchemaRefused { .. }
            | WarehouseError::Rows { .. }
            | WarehouseError::Tls { .. } => false,
            WarehouseError::Source(err) => err.0.is_retryable(),
        };
        if retryable {
            Retryability::Retryable
        } else {
            Retryability::Permanent
        }
    }
}

/// What the processor needs from a warehouse.
#[async_trait]
pub trait Warehouse: Send + Sync + std::fmt::Debug {
    /// Checks that the warehouse answers (readiness).
    async fn ping(&self) -> Result<(), WarehouseError>;

    /// Creates the ledger and rejects tables if missing.
    async fn ensure_platform_tables(&self) -> Result<(), WarehouseError>;

    /// Creates the dataset's target table (and schema) for the load schema if missing, or
    /// evolves it ([`evolution`]) under a lock; a plan with refusals changes nothing and
    /// fails with [`WarehouseError::SchemaRefused`].
    async fn ensure_target(
        &self,
        dataset: &Dataset,
        schema: &SchemaRef,
    ) -> Result<evolution::SchemaPlan, WarehouseError>;

    /// What [`Warehouse::ensure_target`] would do, changing nothing.
    async fn plan_target(
        &self,
        dataset: &Dataset,
        schema: &SchemaRef,
    ) -> Result<evolution::SchemaPlan, WarehouseError>;

    /// Loads the items in one transaction, following the load protocol. Items whose key
    /// the ledger holds are skipped without reading their rows.
    async fn load(
        &self,
        dataset: &Dataset,
        schema: &SchemaRef,
        items: Vec<ItemSource>,
    ) -> Result<LoadReport, WarehouseError>;

    /// Claims the announcement of a file whose parts have all loaded (see [`files`]) for
    /// `claimant` (the work-queue message): a live claim of the same claimant is taken
    /// over, anyone else's is [`files::Claim::ClaimedElsewhere`] until it times out.
    async fn claim_file_completion(
        &self,
        file_id: &str,
        claimant: &str,
    ) -> Result<files::Claim, WarehouseError>;

    /// Ends a claim: marks the file announced, or gives the claim back when announcing
    /// failed.
    async fn finish_file_claim(
        &self,
        completion: &files::FileCompletion,
        published: bool,
    ) -> Result<(), WarehouseError>;

    /// Deletes the platform tables' rows older than their retention (or, on a dry run,
    /// counts them).
    async fn prune(
        &self,
        request: &retention::PruneRequest,
    ) -> Result<retention::PruneReport, WarehouseError>;

    /// The rejected rows `query` asks for, newest first (`processor rejects`).
    async fn find_rejects(
        &self,
        query: &rejects::RejectQuery,
    ) -> Result<Vec<rejects::FoundReject>, WarehouseError>;

    /// What loaded per dataset in a window (`processor status`).
    async fn activity(
        &self,
        query: &activity::ActivityQuery,
    ) -> Result<Vec<activity::DatasetActivity>, WarehouseError>;

    /// The ledger entries of `keys` and the `file_loads` row of `file_id`
    /// (`processor trace`).
    async fn trace_file(
        &self,
        keys: &[String],
        file_id: &str,
    ) -> Result<
        (
            Vec<load_trace::LedgerEntry>,
            Option<load_trace::FileLoadRow>,
        ),
        WarehouseError,
    >;

    /// [`Warehouse::load`] for rows already in memory.
    async fn load_rows(
        &self,
        dataset: &Dataset,
        schema: &SchemaRef,
        items: &[ItemRows],
    ) -> Result<LoadReport, WarehouseError> {
        let sources = items.iter().cloned().map(ItemRows::into_source).collect();
        self.load(dataset, schema, sources).await
    }
}

/// Connects the configured warehouse. `stores` reaches the staging bucket (Redshift).
pub async fn connect(
    settings: &shared::config::WarehouseSettings,
    connector: &connection::Connector,
    login: &connection::Login,
    stores: &dyn crate::objects::ObjectStores,
    platform_schema: &str,
) -> Result<Arc<dyn Warehouse>, WarehouseError> {
    let url = settings.url.expose();
    Ok(match &settings.kind {
        shared::config::WarehouseKind::Postgres => Arc::new(
            postgres::PostgresWarehouse::connect_with(
                url,
                connector.clone(),
                login.clone(),
                platform_schema,
            )
            .await?,
        ),
        shared::config::WarehouseKind::Redshift(redshift) => {
            let store = stores.for_bucket(&redshift.staging_bucket).map_err(|err| {
                WarehouseError::Staging {
                    dataset: "(platform)".to_owned(),
                    location: format!(
                        "s3://{}/{}",
                        redshift.staging_bucket, redshift.staging_prefix
                    ),
                    source: err.into(),
                    retryable: false,
                }
            })?;
            Arc::new(
                redshift::RedshiftWarehouse::connect(
                    url,
                    connector.clone(),
                    login.clone(),
                    redshift,
                    store,
                    platform_schema,
                )
                .await?,
            )
        }
    })
}
