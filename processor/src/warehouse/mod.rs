//! The warehouse interface and its load protocol.
//!
//! One load covers one or more work items of one dataset (micro-batching). In one
//! transaction it skips items whose idempotency key is in the ledger, stages the rows of
//! the others, merges them into the target on the dataset's key (or appends rows whose
//! lineage is new), writes their rejects and their ledger rows, and commits.

pub mod pg_binary;
pub mod postgres;
pub mod sql;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use shared::catalog::Dataset;
use shared::envelope::IdempotencyKey;
use shared::error::{Classify, Retryability};

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
}

/// One work item to load: its key, where it came from, and its rows.
#[derive(Debug)]
pub struct ItemSource {
    pub key: IdempotencyKey,
    pub source: String,
    pub rows: Box<dyn RowSource>,
}

/// Rows already in memory.
#[derive(Debug, Default)]
pub struct MemoryRows {
    batches: std::collections::VecDeque<RecordBatch>,
    rejects: Vec<Reject>,
}

impl MemoryRows {
    pub fn new(batches: Vec<RecordBatch>, rejects: Vec<Reject>) -> Self {
        Self {
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
        }
    }
}

/// What one load did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadReport {
    pub items_loaded: usize,
    /// Items whose key the ledger already held: their rows were not loaded again.
    pub items_skipped: usize,
    /// Rows staged for the loaded items.
    pub rows_staged: u64,
    /// Rows inserted or updated in the target.
    pub rows_written: u64,
    pub rows_rejected: u64,
}

/// Why a load failed; nothing of it was committed.
#[derive(Debug, thiserror::Error)]
pub enum WarehouseError {
    #[error("cannot connect to the warehouse at {url}: {reason}")]
    Connect {
        url: String,
        reason: String,
        retryable: bool,
    },
    #[error("{action} for dataset {dataset:?} failed: {reason}")]
    Statement {
        dataset: String,
        action: &'static str,
        reason: String,
        retryable: bool,
    },
    #[error("cannot encode rows of dataset {dataset:?} for the warehouse: {source}")]
    Encode {
        dataset: String,
        source: pg_binary::EncodeError,
    },
    #[error("dataset {dataset:?}: {reason}")]
    Schema { dataset: String, reason: String },
    #[error(transparent)]
    Source(SourceError),
}

impl Classify for WarehouseError {
    fn retryability(&self) -> Retryability {
        let retryable = match self {
            WarehouseError::Connect { retryable, .. }
            | WarehouseError::Statement { retryable, .. } => *retryable,
            WarehouseError::Encode { .. } | WarehouseError::Schema { .. } => false,
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

    /// Creates the dataset's target table (and schema) for the load schema if missing.
    async fn ensure_target(
        &self,
        dataset: &Dataset,
        schema: &SchemaRef,
    ) -> Result<(), WarehouseError>;

    /// Loads the items in one transaction, following the load protocol. Items whose key
    /// the ledger holds are skipped without reading their rows.
    async fn load(
        &self,
        dataset: &Dataset,
        schema: &SchemaRef,
        items: Vec<ItemSource>,
    ) -> Result<LoadReport, WarehouseError>;

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
