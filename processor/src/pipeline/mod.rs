//! From a work item to typed, transformed Arrow batches: reading each format, typing
//! text cells, the catalog's SQL transform, and the lineage columns every row carries.
//! `Pipeline` turns a work item into the row source the warehouse pulls from.

pub mod lineage;
pub mod read;
mod sources;
pub mod transform;
pub mod typing;

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use shared::catalog::{Catalog, Dataset};
use shared::envelope::{FileItem, RecordsPayload, WorkItem};
use shared::error::{Classify, Retryability};

use crate::objects::{ObjectStores, StoredObject};
use crate::warehouse::ItemSource;
use crate::warehouse::files::FilePart;
use crate::warehouse::streams::StreamPart;
use read::{ReadError, source_url};
use sources::{FileRows, RecordsRows};
use transform::{TransformError, Transformer};

/// Why the rows of a work item could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("dataset {dataset:?} is not in the catalog")]
    UnknownDataset { dataset: String },
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Transform(#[from] TransformError),
    #[error(
        "{source_url}: {rejected} rows rejected{read}, over the dataset's limit of {limit}; most common: {reasons}"
    )]
    TooManyRejects {
        source_url: String,
        rejected: usize,
        /// `" of N read"` once the item is read to its end.
        read: String,
        limit: shared::catalog::RejectLimit,
        reasons: String,
    },
}

impl Classify for PipelineError {
    fn retryability(&self) -> Retryability {
        match self {
            PipelineError::Read(err) => err.retryability(),
            _ => Retryability::Permanent,
        }
    }
}

/// The load schema of `dataset`: its transform's output plus the lineage columns, as
/// [`Pipeline::load_schema`] holds it once planned.
pub async fn plan_load_schema(dataset: &Dataset) -> Result<SchemaRef, TransformError> {
    Transformer::new(dataset).output_schema().await
}

/// The catalog with every transform planned, shared by the workers.
#[derive(Debug)]
pub struct Pipeline {
    catalog: Arc<Catalog>,
    stores: Arc<dyn ObjectStores>,
    transformers: HashMap<String, (Transformer, SchemaRef)>,
}

impl Pipeline {
    /// Plans every dataset's transform: a bad transform stops start-up, not the first file.
    pub async fn new(
        catalog: Arc<Catalog>,
        stores: Arc<dyn ObjectStores>,
    ) -> Result<Self, TransformError> {
        let mut transformers = HashMap::new();
        for dataset in catalog.datasets() {
            let transformer = Transformer::new(dataset);
            let schema = transformer.output_schema().await?;
            transformers.insert(dataset.name.clone(), (transformer, schema));
        }
        Ok(Self {
            catalog,
            stores,
            transformers,
        })
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The load schema of a dataset (transform output plus lineage).
    pub fn load_schema(&self, dataset: &str) -> Option<&SchemaRef> {
        self.transformers.get(dataset).map(|(_, schema)| schema)
    }

    /// The object `key` of `bucket` to read (a file, or a claim check's records).
    fn object(&self, bucket: &str, key: &str) -> Result<StoredObject, ReadError> {
        self.stores
            .for_object(bucket, key)
            .map_err(|err| ReadError::Object {
                source_url: format!("s3://{bucket}/{key}"),
                source: err.into(),
                retryable: false,
            })
    }

    /// The rows of one work item as a source the warehouse pulls from while it loads:
    /// files are read, typed and transformed chunk by chunk, and only once the ledger
    /// said the item is new.
    pub fn item_source(
        &self,
        item: &WorkItem,
    ) -> Result<(ItemSource, &Dataset, &SchemaRef), PipelineError> {
        let dataset =
            self.catalog
                .get(item.dataset())
                .ok_or_else(|| PipelineError::UnknownDataset {
                    dataset: item.dataset().to_owned(),
                })?;
        let (transformer, schema) =
            self.transformers
                .get(&dataset.name)
                .ok_or_else(|| PipelineError::UnknownDataset {
                    dataset: dataset.name.clone(),
                })?;
        let key = item.idempotency_key();
        let item_source = match item {
            WorkItem::File(file) => {
                let object = self.object(&file.bucket, &file.key)?;
                let rows =
                    FileRows::new(object, file.clone(), dataset.clone(), transformer.clone());
                ItemSource {
                    key,
                    source: item_source_name(file),
                    rows: Box::new(rows),
                    file: Some(FilePart::of(file)),
                    stream: None,
                }
            }
            WorkItem::Records(records) => {
                let claim_store = match &records.payload {
                    RecordsPayload::S3(claim) => Some(self.object(&claim.bucket, &claim.key)?),
                    RecordsPayload::Inline(_) => None,
                };
                let rows = RecordsRows::new(
                    records.clone(),
                    claim_store,
                    dataset.clone(),
                    transformer.clone(),
                );
                ItemSource {
                    key,
                    source: format!("kinesis://{}", records.stream),
                    rows: Box::new(rows),
                    file: None,
                    stream: Some(StreamPart::of(records)),
                }
            }
        };
        Ok((item_source, dataset, schema))
    }
}

/// How the ledger and the rejects table name a file item: its URL, and for a part of a
/// split file which part (reject row numbers count from the start of the part).
fn item_source_name(file: &FileItem) -> String {
    match (file.part, file.range) {
        (Some(part), Some(range)) => format!(
            "{} part {} of {} (bytes {}-{})",
            source_url(file),
            part.index,
            part.count,
            range.start,
            range.end
        ),
        _ => source_url(file),
    }
}
