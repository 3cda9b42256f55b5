//! The row sources of work items: a file read and transformed chunk by chunk, and a
//! records item (inline or behind a claim check) decoded at the first pull.

use std::collections::{BTreeMap, VecDeque};

use async_trait::async_trait;
use datafusion::arrow::record_batch::RecordBatch;
use object_store::ObjectStoreExt;
use shared::catalog::Dataset;
use shared::envelope::{FileItem, RecordsItem, RecordsPayload, StreamRecord};
use tokio::sync::mpsc;

use super::PipelineError;
use super::read::{ReadError, source_url, spawn_read};
use super::transform::Transformer;
use super::typing::{Origin, TextRows, Typed, json_cells};
use crate::objects::StoredObject;
use crate::warehouse::{MemoryRows, Reject, RowSource, SourceError};

/// The rows of a file item, read and transformed chunk by chunk.
#[derive(Debug)]
pub(super) struct FileRows {
    /// Reading starts at the first pull, so an item the ledger skips is never read.
    origin: (StoredObject, FileItem),
    chunks: Option<mpsc::Receiver<Result<Typed, ReadError>>>,
    finished: bool,
    dataset: Dataset,
    transformer: Transformer,
    source_url: String,
    pending: VecDeque<RecordBatch>,
    rejects: Vec<Reject>,
    /// Rows read so far, good and rejected (what a share limit is a share of).
    rows_read: u64,
}

impl FileRows {
    /// Rows of `file`, not read yet.
    pub(super) fn new(
        object: StoredObject,
        file: FileItem,
        dataset: Dataset,
        transformer: Transformer,
    ) -> Self {
        Self {
            source_url: source_url(&file),
            origin: (object, file),
            chunks: None,
            finished: false,
            dataset,
            transformer,
            pending: VecDeque::new(),
            rejects: Vec::new(),
            rows_read: 0,
        }
    }
}

#[async_trait]
impl RowSource for FileRows {
    async fn next_batch(&mut self) -> Result<Option<RecordBatch>, SourceError> {
        loop {
            if let Some(batch) = self.pending.pop_front() {
                return Ok(Some(batch));
            }
            if self.finished {
                return Ok(None);
            }
            let chunks = self.chunks.get_or_insert_with(|| {
                let (object, file) = &self.origin;
                spawn_read(object.clone(), file.clone(), self.dataset.clone())
            });
            match chunks.recv().await {
                None => {
                    self.chunks = None;
                    self.finished = true;
                    let read = Some(self.rows_read);
                    check_reject_limit(&self.dataset, &self.source_url, &self.rejects, read)?;
                    return Ok(None);
                }
                Some(chunk) => {
                    let typed = chunk?;
                    self.rows_read += (typed.batch.num_rows() + typed.rejects.len()) as u64;
                    self.rejects.extend(typed.rejects);
                    check_reject_limit(&self.dataset, &self.source_url, &self.rejects, None)?;
                    let (output, rejects) = self.transformer.apply(vec![typed.batch]).await?;
                    self.rejects.extend(rejects);
                    self.pending
                        .extend(output.into_iter().filter(|b| b.num_rows() > 0));
                }
            }
        }
    }

    fn take_rejects(&mut self) -> Vec<Reject> {
        std::mem::take(&mut self.rejects)
    }

    fn restart(&self) -> Option<Box<dyn RowSource>> {
        let (object, file) = self.origin.clone();
        Some(Box::new(FileRows::new(
            object,
            file,
            self.dataset.clone(),
            self.transformer.clone(),
        )))
    }
}

/// The rows of a records item: small, decoded and transformed at the first pull.
#[derive(Debug)]
pub(super) struct RecordsRows {
    records: Option<RecordsItem>,
    /// Where a claim-check payload is read from.
    claim_store: Option<StoredObject>,
    dataset: Dataset,
    transformer: Transformer,
    rows: MemoryRows,
}

impl RecordsRows {
    /// Rows of `records`, not decoded yet; `claim_store` holds a claim check's records.
    pub(super) fn new(
        records: RecordsItem,
        claim_store: Option<StoredObject>,
        dataset: Dataset,
        transformer: Transformer,
    ) -> Self {
        Self {
            records: Some(records),
            claim_store,
            dataset,
            transformer,
            rows: MemoryRows::default(),
        }
    }
}

#[async_trait]
impl RowSource for RecordsRows {
    async fn next_batch(&mut self) -> Result<Option<RecordBatch>, SourceError> {
        if let Some(records) = self.records.take() {
            let list = match &records.payload {
                RecordsPayload::Inline(list) => list.clone(),
                RecordsPayload::S3(claim) => {
                    let object = self.claim_store.as_ref().ok_or_else(|| ReadError::Object {
                        source_url: format!("s3://{}/{}", claim.bucket, claim.key),
                        source: "no object store for the claim check".into(),
                        retryable: false,
                    })?;
                    read_claim_check(object, claim).await?
                }
            };
            let (typed, mut rejects) = typed_records(&self.dataset, &records, &list)?;
            let (output, transform_rejects) = self.transformer.apply(vec![typed]).await?;
            rejects.extend(transform_rejects);
            check_reject_limit(
                &self.dataset,
                &format!("kinesis://{}/{}", records.stream, records.shard_id),
                &rejects,
                Some(list.len() as u64),
            )?;
            self.rows = MemoryRows::new(
                output.into_iter().filter(|b| b.num_rows() > 0).collect(),
                rejects,
            );
        }
        self.rows.next_batch().await
    }

    fn take_rejects(&mut self) -> Vec<Reject> {
        self.rows.take_rejects()
    }
}

/// The records a claim check points to: JSON lines of stream records.
async fn read_claim_check(
    StoredObject { store, path }: &StoredObject,
    claim: &shared::envelope::ClaimCheck,
) -> Result<Vec<StreamRecord>, ReadError> {
    let source_url = format!("s3://{}/{}", claim.bucket, claim.key);
    let fetch_error = |err: object_store::Error| ReadError::Object {
        source_url: source_url.clone(),
        retryable: !matches!(err, object_store::Error::NotFound { .. }),
        source: err.into(),
    };
    let bytes = store
        .get(path)
        .await
        .map_err(fetch_error)?
        .bytes()
        .await
        .map_err(fetch_error)?;
    bytes
        .split(|b| *b == b'\n')
        .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
        .map(|line| {
            serde_json::from_slice::<StreamRecord>(line).map_err(|err| ReadError::Convert {
                source_url: source_url.clone(),
                source: shared::error::context("a claim-check line is not a stream record", err),
            })
        })
        .collect()
}

fn typed_records(
    dataset: &Dataset,
    records: &RecordsItem,
    list: &[StreamRecord],
) -> Result<(RecordBatch, Vec<Reject>), PipelineError> {
    let source_url = format!("kinesis://{}/{}", records.stream, records.shard_id);
    let mut rows = TextRows::new(dataset.columns.len());
    for (index, record) in list.iter().enumerate() {
        let row_number = index as u64 + 1;
        match json_cells(dataset, &record.data) {
            Ok(cells) => rows.push(
                cells.iter().map(Option::as_deref),
                row_number,
                Some(record.data.to_string()),
                record.position.sequence_number.clone(),
                i64::try_from(record.position.sub_sequence_number).unwrap_or(i64::MAX),
            ),
            Err(reason) => rows.reject(Reject {
                row_number: Some(row_number),
                raw: Some(record.data.to_string()),
                reason,
            }),
        }
    }
    let origin = Origin {
        source: format!("kinesis://{}", records.stream),
        partition: records.shard_id.clone(),
    };
    let typed = rows
        .into_typed(dataset, &origin)
        .map_err(|err| ReadError::Convert {
            source_url,
            source: err.into(),
        })?;
    Ok((typed.batch, typed.rejects))
}

/// Fails an item whose rejects are over its dataset's limit: with `read`, the item's rows
/// are all read; without, more may follow, and only a count limit can be passed already.
fn check_reject_limit(
    dataset: &Dataset,
    source_url: &str,
    rejects: &[Reject],
    read: Option<u64>,
) -> Result<(), PipelineError> {
    let rejected = rejects.len() as u64;
    let over = match read {
        Some(read) => dataset.reject_limit.exceeded(rejected, read),
        None => dataset.reject_limit.exceeded_already(rejected),
    };
    if !over {
        return Ok(());
    }
    // Group reasons by what precedes the offending value, e.g. "column amount".
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for reject in rejects {
        let kind = reject.reason.split(": ").next().unwrap_or(&reject.reason);
        *counts.entry(kind).or_default() += 1;
    }
    let mut common: Vec<(&str, usize)> = counts.into_iter().collect();
    common.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let reasons = common
        .iter()
        .take(3)
        .map(|(kind, n)| format!("{kind} ({n})"))
        .collect::<Vec<_>>()
        .join(", ");
    Err(PipelineError::TooManyRejects {
        source_url: source_url.to_owned(),
        rejected: rejects.len(),
        read: read.map_or_else(String::new, |n| format!(" of {n} read")),
        limit: dataset.reject_limit,
        reasons,
    })
}

#[cfg(test)]
mod tests {
    use shared::catalog::Catalog;
    use shared::error::Classify;

    use super::*;

    #[test]
    fn too_many_rejects_names_the_count_and_the_common_reasons() {
        let text = r#"
[datasets.t]
format = "csv"
target = "s.t"
reject_limit = 2
s3 = { prefix = "t/" }
columns = [{ name = "id", type = "int64" }]
"#;
        let catalog = Catalog::from_toml(text, "t").expect("valid");
        let dataset = catalog.get("t").expect("present");
        let reject = |reason: &str| Reject {
            row_number: None,
            raw: None,
            reason: reason.to_owned(),
        };
        let rejects = vec![
            reject("column id: \"a\" is not a valid int64"),
            reject("column id: \"b\" is not a valid int64"),
        ];
        assert!(check_reject_limit(dataset, "s3://b/t/1.csv", &rejects, None).is_ok());
        let mut more = rejects.clone();
        more.push(reject("expected 1 fields, found 2"));
        let err =
            check_reject_limit(dataset, "s3://b/t/1.csv", &more, None).expect_err("over the limit");
        assert_eq!(
            err.to_string(),
            "s3://b/t/1.csv: 3 rows rejected, over the dataset's limit of 2 rows; most common: column id (2), expected 1 fields, found 2 (1)"
        );
        assert!(!err.is_retryable());
    }

    #[test]
    fn a_share_limit_waits_for_the_item_to_be_read_and_counts_every_row() {
        let text = r#"
[datasets.t]
format = "csv"
target = "s.t"
reject_limit = "10%"
s3 = { prefix = "t/" }
columns = [{ name = "id", type = "int64" }]
"#;
        let catalog = Catalog::from_toml(text, "t").expect("valid");
        let dataset = catalog.get("t").expect("present");
        let rejects: Vec<Reject> = (0..3)
            .map(|n| Reject {
                row_number: Some(n),
                raw: None,
                reason: "column id: bad".into(),
            })
            .collect();
        let url = "s3://b/t/1.csv";
        assert!(check_reject_limit(dataset, url, &rejects, None).is_ok());
        assert!(check_reject_limit(dataset, url, &rejects, Some(30)).is_ok());
        let err = check_reject_limit(dataset, url, &rejects, Some(29)).expect_err("over 10 %");
        assert_eq!(
            err.to_string(),
            "s3://b/t/1.csv: 3 rows rejected of 29 read, over the dataset's limit of 10%; most common: column id (3)"
        );
    }
}
