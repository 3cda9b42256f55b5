//! The consume → transform → load loop of `processor serve`.
//!
//! A worker long-polls the work queue, and for each message: decodes the work item, keeps
//! the message hidden with a heartbeat while it works, reads and transforms the rows,
//! loads them with the load protocol, and deletes the message only after the load
//! committed. A retryable failure releases the message with a backoff; a permanent one
//! sends it to the dead-letter queue at once with the reason as a message attribute.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use object_store::ObjectStoreExt;
use shared::catalog::{Catalog, Dataset};
use shared::envelope::FileItem;
use shared::envelope::{EnvelopeError, RecordsItem, RecordsPayload, StreamRecord, WorkItem};
use shared::error::{Classify, Retryability};
use shared::queue::{OutgoingMessage, ReceivedMessage, WorkQueue};
use shared::telemetry::{UNKNOWN_DATASET, names, outcome};
use tokio::sync::{mpsc, watch};

use crate::announce::{AnnounceError, FileEvents};
use crate::objects::{ObjectStores, StoredObject};
use crate::read::{ReadError, source_url, spawn_read};
use crate::transform::{TransformError, Transformer};
use crate::typing::Typed;
use crate::typing::{Origin, TextRows, json_cells};
use crate::warehouse::files::{Claim, FilePart};
use crate::warehouse::{
    ItemSource, LoadReport, MemoryRows, Reject, RowSource, SourceError, Warehouse, WarehouseError,
};

/// Message attributes set on a dead-lettered message.
pub const REASON_ATTRIBUTE: &str = "ingest_failure_reason";
pub const DATASET_ATTRIBUTE: &str = "ingest_dataset";

/// Why a work item could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error("dataset {dataset:?} is not in the catalog")]
    UnknownDataset { dataset: String },
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Transform(#[from] TransformError),
    #[error(transparent)]
    Warehouse(#[from] WarehouseError),
    #[error(
        "{source_url}: {rejected} rows rejected, over the dataset's limit of {limit}; most common: {reasons}"
    )]
    TooManyRejects {
        source_url: String,
        rejected: usize,
        limit: u64,
        reasons: String,
    },
    #[error(transparent)]
    Announce(#[from] AnnounceError),
    #[error(
        "s3://{bucket}/{key} is fully loaded and another worker is announcing it; checking again later"
    )]
    AnnouncementPending { bucket: String, key: String },
}

impl Classify for ProcessError {
    fn retryability(&self) -> Retryability {
        match self {
            ProcessError::Read(err) => err.retryability(),
            ProcessError::Warehouse(err) => err.retryability(),
            ProcessError::Announce(err) => err.retryability(),
            ProcessError::AnnouncementPending { .. } => Retryability::Retryable,
            _ => Retryability::Permanent,
        }
    }
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
                reason: err.to_string(),
                retryable: false,
            })
    }

    /// The rows of one work item as a source the warehouse pulls from while it loads:
    /// files are read, typed and transformed chunk by chunk, and only once the ledger
    /// said the item is new.
    pub fn item_source(
        &self,
        item: &WorkItem,
    ) -> Result<(ItemSource, &Dataset, &SchemaRef), ProcessError> {
        let dataset =
            self.catalog
                .get(item.dataset())
                .ok_or_else(|| ProcessError::UnknownDataset {
                    dataset: item.dataset().to_owned(),
                })?;
        let (transformer, schema) =
            self.transformers
                .get(&dataset.name)
                .ok_or_else(|| ProcessError::UnknownDataset {
                    dataset: dataset.name.clone(),
                })?;
        let (source, rows): (String, Box<dyn RowSource>) = match item {
            WorkItem::File(file) => {
                let object = self.object(&file.bucket, &file.key)?;
                let rows =
                    FileRows::new(object, file.clone(), dataset.clone(), transformer.clone());
                (item_source_name(file), Box::new(rows))
            }
            WorkItem::Records(records) => {
                let source = format!("kinesis://{}", records.stream);
                let claim_store = match &records.payload {
                    RecordsPayload::S3(claim) => Some(self.object(&claim.bucket, &claim.key)?),
                    RecordsPayload::Inline(_) => None,
                };
                (
                    source,
                    Box::new(RecordsRows {
                        records: Some(records.clone()),
                        claim_store,
                        dataset: dataset.clone(),
                        transformer: transformer.clone(),
                        rows: MemoryRows::default(),
                    }),
                )
            }
        };
        let item_source = ItemSource {
            key: item.idempotency_key(),
            source,
            rows,
            file: match item {
                WorkItem::File(file) => Some(FilePart::of(file)),
                WorkItem::Records(_) => None,
            },
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

/// The rows of a file item, read and transformed chunk by chunk.
#[derive(Debug)]
struct FileRows {
    /// Reading starts at the first pull, so an item the ledger skips is never read.
    origin: (StoredObject, FileItem),
    chunks: Option<mpsc::Receiver<Result<Typed, ReadError>>>,
    finished: bool,
    dataset: Dataset,
    transformer: Transformer,
    source_url: String,
    pending: VecDeque<RecordBatch>,
    rejects: Vec<Reject>,
}

impl FileRows {
    /// Rows of `file`, not read yet.
    fn new(
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
                    check_reject_limit(&self.dataset, &self.source_url, &self.rejects)?;
                    return Ok(None);
                }
                Some(chunk) => {
                    let typed = chunk?;
                    self.rejects.extend(typed.rejects);
                    check_reject_limit(&self.dataset, &self.source_url, &self.rejects)?;
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
struct RecordsRows {
    records: Option<RecordsItem>,
    /// Where a claim-check payload is read from.
    claim_store: Option<StoredObject>,
    dataset: Dataset,
    transformer: Transformer,
    rows: MemoryRows,
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
                        reason: "no object store for the claim check".to_owned(),
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
        reason: err.to_string(),
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
                reason: format!("a claim-check line is not a stream record: {err}"),
            })
        })
        .collect()
}

fn typed_records(
    dataset: &Dataset,
    records: &RecordsItem,
    list: &[StreamRecord],
) -> Result<(RecordBatch, Vec<Reject>), ProcessError> {
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
            reason: err.to_string(),
        })?;
    Ok((typed.batch, typed.rejects))
}

fn check_reject_limit(
    dataset: &Dataset,
    source_url: &str,
    rejects: &[Reject],
) -> Result<(), ProcessError> {
    if (rejects.len() as u64) <= dataset.reject_limit {
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
    Err(ProcessError::TooManyRejects {
        source_url: source_url.to_owned(),
        rejected: rejects.len(),
        limit: dataset.reject_limit,
        reasons,
    })
}

/// Worker timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerSettings {
    pub wait_time: Duration,
    pub visibility_timeout: Duration,
    pub retry_backoff: Duration,
    pub max_retry_backoff: Duration,
}

impl WorkerSettings {
    /// The heartbeat extends visibility three times per timeout, so one late call does
    /// not expose the message.
    pub fn heartbeat_interval(&self) -> Duration {
        (self.visibility_timeout / 3).max(Duration::from_millis(200))
    }

    /// How long a worker holds a message whose load failed because the warehouse went
    /// away, waiting for it to answer, before it releases the message: the longest retry
    /// backoff, at most 20 s so a SIGTERM in an outage still ends within the grace period.
    pub fn warehouse_hold(&self) -> Duration {
        self.max_retry_backoff.min(Duration::from_secs(20))
    }

    /// Delay before a retryable failure is tried again: doubles with each receive.
    pub fn backoff(&self, receive_count: u32) -> Duration {
        let exponent = receive_count.saturating_sub(1).min(16);
        self.retry_backoff
            .saturating_mul(1 << exponent)
            .min(self.max_retry_backoff)
    }
}

/// Limits of a micro-batch of records items: whichever is reached first flushes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSettings {
    pub max_rows: usize,
    pub max_bytes: usize,
    pub max_wait: Duration,
}

impl Default for BatchSettings {
    fn default() -> Self {
        Self {
            max_rows: 10_000,
            max_bytes: 8 * 1024 * 1024,
            max_wait: Duration::from_secs(1),
        }
    }
}

/// Records items of one dataset waiting to be loaded together.
#[derive(Debug)]
struct PendingBatch {
    started: tokio::time::Instant,
    rows: usize,
    bytes: usize,
    items: Vec<(ReceivedMessage, WorkItem, tokio::task::JoinHandle<()>)>,
}

impl Default for PendingBatch {
    fn default() -> Self {
        Self {
            started: tokio::time::Instant::now(),
            rows: 0,
            bytes: 0,
            items: Vec::new(),
        }
    }
}

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Loaded (or found in the ledger) and deleted.
    Done(LoadReport),
    /// A retryable failure: the message comes back after `retry_in`.
    Released { reason: String, retry_in: Duration },
    /// A permanent failure: the message is in the dead-letter queue (or, without one,
    /// left to the queue's redrive policy).
    DeadLettered { reason: String },
}

impl Outcome {
    /// A retryable failure: the warehouse or the store may be the cause.
    pub fn is_released(&self) -> bool {
        matches!(self, Outcome::Released { .. })
    }
}

/// One worker: a queue consumer with its own warehouse connection.
#[derive(Debug)]
pub struct Worker {
    pub queue: Arc<dyn WorkQueue>,
    pub dead_letter: Option<Arc<dyn WorkQueue>>,
    pub pipeline: Arc<Pipeline>,
    pub warehouse: Arc<dyn Warehouse>,
    pub settings: WorkerSettings,
    pub batching: BatchSettings,
    /// Where `File Loaded` events go; without it completions are recorded and logged.
    pub announcer: Option<Arc<FileEvents>>,
}

impl Worker {
    /// Receives and handles messages until `shutdown` turns true. File items are loaded
    /// one at a time; records items are micro-batched per dataset until a row, byte or
    /// time limit is reached, so a burst of small stream items becomes one load. Pending
    /// batches are flushed before returning.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) {
        let mut pending: HashMap<String, PendingBatch> = HashMap::new();
        let mut after_retryable_failure = false;
        // One message at a time while the work is files, so a worker never holds files it
        // is not loading: a crash (or a kill) costs each message it held a receive, and
        // after `maxReceiveCount` of those SQS dead-letters it. Up to ten while the work is
        // stream items, which are micro-batched.
        let mut receive_at_most: u8 = 1;
        loop {
            if *shutdown.borrow() {
                break;
            }
            if std::mem::take(&mut after_retryable_failure) {
                self.wait_for_warehouse(async {
                    let _ = shutdown.changed().await;
                })
                .await;
                if *shutdown.borrow() {
                    break;
                }
            }
            let now = tokio::time::Instant::now();
            let wait = pending
                .values()
                .map(|batch| {
                    (batch.started + self.batching.max_wait).saturating_duration_since(now)
                })
                .min()
                .map_or(self.settings.wait_time, |due| {
                    due.min(self.settings.wait_time)
                });
            let received = tokio::select! {
                received = self.queue.receive(receive_at_most, wait, self.settings.visibility_timeout) => received,
                _ = shutdown.changed() => break,
            };
            let messages = match received {
                Ok(messages) => messages,
                Err(err) => {
                    tracing::warn!(error = %err, "receive failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    Vec::new()
                }
            };
            // Messages waiting their turn stay hidden too.
            let mut waiting: Vec<(ReceivedMessage, tokio::task::JoinHandle<()>)> = messages
                .into_iter()
                .map(|message| {
                    let heartbeat = self.start_heartbeat(message.receipt_handle.clone());
                    (message, heartbeat)
                })
                .collect();
            if !waiting.is_empty() {
                receive_at_most = 1;
            }
            for (message, heartbeat) in waiting.drain(..) {
                match WorkItem::from_json(&message.body) {
                    Ok(WorkItem::Records(records))
                        if self.pipeline.catalog().get(&records.dataset).is_some() =>
                    {
                        receive_at_most = 10;
                        let dataset = records.dataset.clone();
                        let batch = pending.entry(dataset.clone()).or_default();
                        batch.rows += match &records.payload {
                            RecordsPayload::Inline(list) => list.len(),
                            RecordsPayload::S3(claim) => {
                                usize::try_from(claim.record_count).unwrap_or(usize::MAX)
                            }
                        };
                        batch.bytes += message.body.len();
                        batch
                            .items
                            .push((message, WorkItem::Records(records), heartbeat));
                        let full = batch.rows >= self.batching.max_rows
                            || batch.bytes >= self.batching.max_bytes;
                        if full && let Some(batch) = pending.remove(&dataset) {
                            after_retryable_failure |= self.flush(batch).await;
                        }
                    }
                    _ => {
                        heartbeat.abort();
                        let outcome = self.handle(&message).await;
                        after_retryable_failure |= outcome.is_released();
                    }
                }
            }
            let now = tokio::time::Instant::now();
            let due: Vec<String> = pending
                .iter()
                .filter(|(_, batch)| now >= batch.started + self.batching.max_wait)
                .map(|(dataset, _)| dataset.clone())
                .collect();
            for dataset in due {
                if let Some(batch) = pending.remove(&dataset) {
                    after_retryable_failure |= self.flush(batch).await;
                }
            }
        }
        for (_, batch) in pending.drain() {
            self.flush(batch).await;
        }
    }

    /// Pings the warehouse until it answers (`true`) or `give_up` completes first
    /// (`false`). After a retryable failure a worker takes no more work until the
    /// warehouse answers, so an outage cannot use up the receives messages have before
    /// the dead-letter queue.
    async fn wait_for_warehouse(&self, give_up: impl std::future::Future<Output = ()>) -> bool {
        tokio::pin!(give_up);
        let mut delay = Duration::from_millis(250);
        let mut unreachable_since: Option<std::time::Instant> = None;
        loop {
            match self.warehouse.ping().await {
                Ok(()) => {
                    if let Some(since) = unreachable_since {
                        tracing::info!(
                            after_secs = since.elapsed().as_secs(),
                            "the warehouse answers again; taking work"
                        );
                    }
                    return true;
                }
                Err(err) => {
                    if unreachable_since.is_none() {
                        tracing::warn!(error = %err, "the warehouse does not answer; taking no work until it does");
                        unreachable_since = Some(std::time::Instant::now());
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = &mut give_up => return false,
            }
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }

    /// Loads a micro-batch in one transaction and deletes its messages. If the batch fails,
    /// each item is retried alone, so one bad item cannot hold the others back. Returns
    /// whether an item was released for a retry.
    async fn flush(&self, batch: PendingBatch) -> bool {
        if batch.items.is_empty() {
            return false;
        }
        let messages: Vec<&ReceivedMessage> = batch.items.iter().map(|(m, _, _)| m).collect();
        let started = std::time::Instant::now();
        let result = self
            .load_many(batch.items.iter().map(|(_, item, _)| item))
            .await;
        if let (Ok(report), Some((_, item, _))) = (&result, batch.items.first()) {
            let items: Vec<(&WorkItem, usize)> = batch
                .items
                .iter()
                .map(|(message, item, _)| (item, message.body.len()))
                .collect();
            self.record_load(item.dataset(), report, started.elapsed(), &items);
        }
        for (_, _, heartbeat) in &batch.items {
            heartbeat.abort();
        }
        match result {
            Ok(report) => {
                let handles: Vec<String> =
                    messages.iter().map(|m| m.receipt_handle.clone()).collect();
                let deleted = self.queue.delete(&handles).await;
                if !deleted.all_succeeded() {
                    tracing::warn!(
                        failed = deleted.failed.len(),
                        "deleting a loaded micro-batch partly failed; the ledger will skip the redeliveries"
                    );
                }
                tracing::info!(items = messages.len(), ?report, "micro-batch loaded");
                for (message, item, _) in &batch.items {
                    tracing::info!(
                        message_id = %message.message_id,
                        idempotency_key = %item.idempotency_key(),
                        dataset = %self.dataset_label(item.dataset()),
                        "work item handled in a micro-batch"
                    );
                }
                false
            }
            Err(err) => {
                tracing::warn!(error = %err, items = messages.len(), "micro-batch failed; loading its items one by one");
                let mut released = false;
                for message in messages {
                    let outcome = self.handle(message).await;
                    released |= outcome.is_released();
                }
                released
            }
        }
    }

    async fn load_many(
        &self,
        items: impl Iterator<Item = &WorkItem>,
    ) -> Result<LoadReport, ProcessError> {
        let mut sources = Vec::new();
        let mut target = None;
        for item in items {
            let (source, dataset, schema) = self.pipeline.item_source(item)?;
            target = Some((dataset, schema));
            sources.push(source);
        }
        let Some((dataset, schema)) = target else {
            return Ok(LoadReport::default());
        };
        Ok(self.warehouse.load(dataset, schema, sources).await?)
    }

    /// Handles one received message end to end, and logs its outcome with the message id,
    /// the work item's idempotency key and its dataset (the fields the ingest Lambdas log
    /// when they send it), so one item can be followed end to end.
    pub async fn handle(&self, message: &ReceivedMessage) -> Outcome {
        let item = match WorkItem::from_json(&message.body) {
            Ok(item) => item,
            Err(err) => {
                let outcome = self.dead_letter(message, None, &err.to_string()).await;
                tracing::warn!(message_id = %message.message_id, ?outcome, "unreadable work item handled");
                return outcome;
            }
        };
        let outcome = self.handle_item(message, &item).await;
        tracing::info!(
            message_id = %message.message_id,
            idempotency_key = %item.idempotency_key(),
            dataset = %self.dataset_label(item.dataset()),
            ?outcome,
            "work item handled"
        );
        outcome
    }

    async fn handle_item(&self, message: &ReceivedMessage, item: &WorkItem) -> Outcome {
        let dataset = self.dataset_label(item.dataset());
        let heartbeat = self.start_heartbeat(message.receipt_handle.clone());
        let started = std::time::Instant::now();
        let mut result = self.load(message, item).await;
        // The warehouse went away under the load: keep the message (its heartbeat keeps it
        // hidden) and load it again once the warehouse answers, so a short outage costs no
        // receive. A longer one releases it as any retryable failure.
        while matches!(&result, Err(err) if err.is_retryable())
            && self.warehouse.ping().await.is_err()
            && self
                .wait_for_warehouse(tokio::time::sleep(self.settings.warehouse_hold()))
                .await
        {
            result = self.load(message, item).await;
        }
        heartbeat.abort();
        match result {
            Ok(report) => {
                self.record_load(
                    item.dataset(),
                    &report,
                    started.elapsed(),
                    &[(item, message.body.len())],
                );
                let deleted = self
                    .queue
                    .delete(std::slice::from_ref(&message.receipt_handle))
                    .await;
                if let Some(failure) = deleted.failed.first() {
                    // The rows are committed; a redelivery will find the key in the ledger.
                    tracing::warn!(message_id = %message.message_id, code = %failure.code, "delete after load failed");
                }
                Outcome::Done(report)
            }
            Err(err) if err.is_retryable() => {
                let retry_in = self.settings.backoff(message.receive_count);
                if let Err(release) = self
                    .queue
                    .extend_visibility(&message.receipt_handle, retry_in)
                    .await
                {
                    tracing::warn!(error = %release, "could not set the retry backoff");
                }
                tracing::warn!(error = %err, retry_in_secs = retry_in.as_secs(), "retryable failure; message released");
                metrics::counter!(names::WORK_ITEMS_PROCESSED_TOTAL, "dataset" => dataset, "outcome" => outcome::RETRIED).increment(1);
                Outcome::Released {
                    reason: err.to_string(),
                    retry_in,
                }
            }
            Err(err) => {
                self.dead_letter(message, Some(item.dataset()), &err.to_string())
                    .await
            }
        }
    }

    /// The `dataset` metric label: a catalog name, never a name taken from a message.
    fn dataset_label(&self, name: &str) -> String {
        match self.pipeline.catalog().get(name) {
            Some(dataset) => dataset.name.clone(),
            None => UNKNOWN_DATASET.to_owned(),
        }
    }

    /// Metrics of one committed load of `items` (each with its message's size).
    fn record_load(
        &self,
        dataset: &str,
        report: &LoadReport,
        elapsed: Duration,
        items: &[(&WorkItem, usize)],
    ) {
        let dataset = self.dataset_label(dataset);
        if report.items_loaded > 0 {
            let bytes: u64 = items
                .iter()
                .map(|(item, message_bytes)| item.source_bytes(*message_bytes))
                .sum();
            metrics::counter!(names::BYTES_READ_TOTAL, "dataset" => dataset.clone())
                .increment(bytes);
            let now_ms = shared::stream::epoch_millis(std::time::SystemTime::now());
            if let Some(oldest) = items
                .iter()
                .filter_map(|(item, _)| item.arrived_at_ms())
                .min()
            {
                let seconds = (now_ms.saturating_sub(oldest)).max(0) as f64 / 1000.0;
                metrics::histogram!(names::END_TO_END_LATENCY_SECONDS, "dataset" => dataset.clone())
                    .record(seconds);
            }
        }
        metrics::counter!(names::WORK_ITEMS_PROCESSED_TOTAL, "dataset" => dataset.clone(), "outcome" => outcome::LOADED)
            .increment(report.items_loaded as u64);
        metrics::counter!(names::WORK_ITEMS_PROCESSED_TOTAL, "dataset" => dataset.clone(), "outcome" => outcome::DUPLICATE)
            .increment(report.items_skipped as u64);
        metrics::counter!(names::ROWS_LOADED_TOTAL, "dataset" => dataset.clone())
            .increment(report.rows_staged);
        metrics::counter!(names::ROWS_REJECTED_TOTAL, "dataset" => dataset.clone())
            .increment(report.rows_rejected);
        metrics::histogram!(names::LOAD_DURATION_SECONDS, "dataset" => dataset)
            .record(elapsed.as_secs_f64());
    }

    /// Loads one item; for a file, then announces it if this load completed it (or an
    /// earlier attempt did and could not announce it). The message is deleted only after
    /// both, so an announcement that failed is retried with the message.
    async fn load(
        &self,
        message: &ReceivedMessage,
        item: &WorkItem,
    ) -> Result<LoadReport, ProcessError> {
        let report = self.load_many(std::iter::once(item)).await?;
        if let WorkItem::File(file) = item {
            self.announce(file, &message.message_id).await?;
        }
        Ok(report)
    }

    /// `message_id` is the claimant: a claim an earlier attempt of the same message left
    /// behind (its warehouse went away, or its process died, before the claim ended) is
    /// taken over at once, so the retries do not spend the message's receives waiting for
    /// the claim to time out.
    async fn announce(&self, file: &FileItem, message_id: &str) -> Result<(), ProcessError> {
        let file_id = file.file_id();
        let completion = match self
            .warehouse
            .claim_file_completion(&file_id, message_id)
            .await?
        {
            Claim::NotComplete | Claim::Published => return Ok(()),
            Claim::ClaimedElsewhere => {
                return Err(ProcessError::AnnouncementPending {
                    bucket: file.bucket.clone(),
                    key: file.key.clone(),
                });
            }
            Claim::Claimed(completion) => completion,
        };
        let dataset = self.dataset_label(&completion.dataset);
        if let Some(events) = &self.announcer {
            let target = self
                .pipeline
                .catalog()
                .get(&completion.dataset)
                .map(|d| d.target.to_string())
                .unwrap_or_default();
            if let Err(err) = events.publish(&completion, target).await {
                // Give the claim back so the retry need not wait for it to time out.
                if let Err(release) = self.warehouse.finish_file_claim(&completion, false).await {
                    tracing::warn!(error = %release, "could not release the claim of a file announcement");
                }
                return Err(err.into());
            }
            metrics::counter!(names::FILE_EVENTS_PUBLISHED_TOTAL).increment(1);
        }
        self.warehouse.finish_file_claim(&completion, true).await?;
        metrics::counter!(names::FILES_COMPLETED_TOTAL, "dataset" => dataset).increment(1);
        tracing::info!(
            bucket = %completion.bucket,
            key = %completion.key,
            dataset = %completion.dataset,
            parts = completion.parts,
            rows_loaded = completion.rows_loaded,
            rows_rejected = completion.rows_rejected,
            completion_id = %completion.file_id,
            published = self.announcer.is_some(),
            "file loaded"
        );
        Ok(())
    }

    fn start_heartbeat(&self, receipt_handle: String) -> tokio::task::JoinHandle<()> {
        let queue = Arc::clone(&self.queue);
        let interval = self.settings.heartbeat_interval();
        let timeout = self.settings.visibility_timeout;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                match queue.extend_visibility(&receipt_handle, timeout).await {
                    Ok(()) => metrics::counter!(names::HEARTBEAT_EXTENSIONS_TOTAL).increment(1),
                    Err(err) => {
                        tracing::warn!(error = %err, "heartbeat failed to extend visibility")
                    }
                }
            }
        })
    }

    async fn dead_letter(
        &self,
        message: &ReceivedMessage,
        dataset: Option<&str>,
        reason: &str,
    ) -> Outcome {
        tracing::error!(message_id = %message.message_id, reason, "permanent failure");
        let label = self.dataset_label(dataset.unwrap_or_default());
        metrics::counter!(names::WORK_ITEMS_PROCESSED_TOTAL, "dataset" => label, "outcome" => outcome::DEAD_LETTERED).increment(1);
        let Some(dead_letter) = &self.dead_letter else {
            // Without a DLQ of our own the queue's redrive policy moves it after
            // maxReceiveCount receives; make it visible again now.
            let _ = self
                .queue
                .extend_visibility(&message.receipt_handle, Duration::ZERO)
                .await;
            return Outcome::DeadLettered {
                reason: reason.to_owned(),
            };
        };
        let mut outgoing = OutgoingMessage::from(message.body.clone())
            .with_attribute(REASON_ATTRIBUTE, truncate(reason, 4096));
        if let Some(dataset) = dataset {
            outgoing = outgoing.with_attribute(DATASET_ATTRIBUTE, dataset);
        }
        let sent = dead_letter.send(&[outgoing]).await;
        if sent.all_succeeded() {
            let deleted = self
                .queue
                .delete(std::slice::from_ref(&message.receipt_handle))
                .await;
            if !deleted.all_succeeded() {
                tracing::warn!(message_id = %message.message_id, "dead-lettered message could not be deleted; it may be dead-lettered twice");
            }
        } else {
            tracing::warn!(message_id = %message.message_id, ?sent, "could not send to the dead-letter queue; the redrive policy will");
        }
        Outcome::DeadLettered {
            reason: reason.to_owned(),
        }
    }
}

fn truncate(text: &str, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text.to_owned();
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_per_receive_and_is_capped() {
        let settings = WorkerSettings {
            wait_time: Duration::from_secs(20),
            visibility_timeout: Duration::from_secs(30),
            retry_backoff: Duration::from_secs(10),
            max_retry_backoff: Duration::from_secs(60),
        };
        let delays: Vec<u64> = (1..=5).map(|n| settings.backoff(n).as_secs()).collect();
        assert_eq!(delays, [10, 20, 40, 60, 60]);
        assert_eq!(settings.heartbeat_interval(), Duration::from_secs(10));
    }

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
        assert!(check_reject_limit(dataset, "s3://b/t/1.csv", &rejects).is_ok());
        let mut more = rejects.clone();
        more.push(reject("expected 1 fields, found 2"));
        let err = check_reject_limit(dataset, "s3://b/t/1.csv", &more).expect_err("over the limit");
        assert_eq!(
            err.to_string(),
            "s3://b/t/1.csv: 3 rows rejected, over the dataset's limit of 2; most common: column id (2), expected 1 fields, found 2 (1)"
        );
        assert!(!err.is_retryable());
        assert_eq!(truncate("ééé", 3), "é…");
    }
}
