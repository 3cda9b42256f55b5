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

/// The rows of one work item, ready to load.
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
}

impl Classify for WarehouseError {
    fn retryability(&self) -> Retryability {
        let retryable = match self {
            WarehouseError::Connect { retryable, .. }
            | WarehouseError::Statement { retryable, .. } => *retryable,
            WarehouseError::Encode { .. } | WarehouseError::Schema { .. } => false,
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
    /// Creates the ledger and rejects tables if missing.
    async fn ensure_platform_tables(&self) -> Result<(), WarehouseError>;

    /// Creates the dataset's target table (and schema) for the load schema if missing.
    async fn ensure_target(
        &self,
        dataset: &Dataset,
        schema: &SchemaRef,
    ) -> Result<(), WarehouseError>;

    /// Loads the items in one transaction, following the load protocol.
    async fn load(
        &self,
        dataset: &Dataset,
        schema: &SchemaRef,
        items: &[ItemRows],
    ) -> Result<LoadReport, WarehouseError>;
}
