//! The operator commands against the local platform (`[local]` in the config): what
//! `backfill`, `replay`, `redrive`, `dlq`, `status`, `trace`, `check --warehouse` and `prune` do against AWS, done on the
//! folder's landing bucket, stream, queues and warehouse with the same code
//! (`crate::operations`). None of them creates or changes a table: that is `serve`'s.

use std::sync::Arc;

use ingest_stream::poller::ReadProgress;
use shared::catalog::Catalog;
use shared::embedded::EmbeddedDb;
use shared::queue::WorkQueue;
use tokio::sync::watch;

use super::{BUCKET, DemoError, Layout, PLATFORM, ingests, landed_files, queues, step};
use crate::objects::folder::LocalBuckets;
use crate::operations::backfill::{BackfillOptions, BackfillProgress, enqueue_page};
use crate::operations::dlq::DeadLetter;
use crate::operations::redrive::{RedriveOptions, RedriveOutcome, redrive_by_moving};
use crate::operations::replay::ReplayOptions;
use crate::operations::status::{StatusReport, StatusSources};
use crate::operations::trace::{FileTrace, TraceSources};
use crate::warehouse::sqlite::SqliteWarehouse;

/// Objects listed per page, as S3 lists them.
const PAGE: usize = 1000;

fn open_db(layout: &Layout) -> Result<EmbeddedDb, DemoError> {
    if !layout.database().exists() {
        return Err(DemoError::Setup(format!(
            "{} holds no local platform yet: start `processor serve` (or `dev`) on it first",
            layout.dir.display()
        )));
    }
    EmbeddedDb::open(&layout.database()).map_err(|err| step("opening the local database")(err))
}

fn only_bucket(layout: &Layout, bucket: &str) -> Result<(), DemoError> {
    if bucket == BUCKET {
        return Ok(());
    }
    Err(DemoError::Setup(format!(
        "the local platform has one bucket, {BUCKET:?} (its landing folder {}), not {bucket:?}",
        layout.landing().display(),
    )))
}

/// Enqueues the files of the landing bucket under `options.prefix`, as `backfill` does
/// for an S3 prefix: the same planning, items and idempotency keys as dropping them in.
pub async fn backfill(
    layout: &Layout,
    catalog: Arc<Catalog>,
    options: &BackfillOptions,
    progress: &mut dyn FnMut(&BackfillProgress),
) -> Result<BackfillProgress, DemoError> {
    only_bucket(layout, &options.bucket)?;
    let db = open_db(layout)?;
    let (queue, _) = queues(&db);
    let buckets = Arc::new(LocalBuckets::new(layout.objects()));
    let (file_ingest, _) = ingests(&catalog, &buckets, &(queue as Arc<dyn WorkQueue>));
    let keys: Vec<String> = landed_files(&buckets)
        .into_keys()
        .filter(|key| key.starts_with(&options.prefix))
        .collect();
    let mut done = BackfillProgress::default();
    for page in keys.chunks(PAGE) {
        let mut objects = Vec::with_capacity(page.len());
        for key in page {
            match buckets.created_object(BUCKET, key).await {
                Ok(object) => objects.push(object),
                // Gone since it was listed, as an S3 object deleted mid-backfill.
                Err(_) => {
                    done.listed += 1;
                    done.skipped += 1;
                }
            }
        }
        enqueue_page(&file_ingest, objects, options, &mut done)
            .await
            .map_err(|err| step("enqueueing the files")(err))?;
        progress(&done);
    }
    Ok(done)
}

/// Reads a window of the folder's stream `stream` again and enqueues its records, as
/// `replay` does for a Kinesis stream.
pub async fn replay(
    layout: &Layout,
    catalog: Arc<Catalog>,
    stream: &str,
    options: &ReplayOptions,
    stop: watch::Receiver<bool>,
    progress: &mut (dyn FnMut(&ReadProgress) + Send),
) -> Result<ReadProgress, DemoError> {
    let db = open_db(layout)?;
    let stream = super::put::existing_stream(db.clone(), stream).await?;
    let (queue, _) = queues(&db);
    let buckets = Arc::new(LocalBuckets::new(layout.objects()));
    let (_, stream_ingest) = ingests(&catalog, &buckets, &(queue as Arc<dyn WorkQueue>));
    crate::operations::replay::replay(&stream, &stream_ingest, options, stop, progress)
        .await
        .map_err(|err| step("replaying the stream")(err))
}

/// Moves the folder's dead letters back to its work queue.
pub async fn redrive(
    layout: &Layout,
    options: RedriveOptions,
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<RedriveOutcome, DemoError> {
    let db = open_db(layout)?;
    let (queue, dead_letter) = queues(&db);
    redrive_by_moving(dead_letter.as_ref(), queue.as_ref(), options, progress)
        .await
        .map_err(|err| step("moving the dead letters")(err))
}

/// Up to `max` of the folder's dead letters, left where they are.
pub async fn peek_dead_letters(layout: &Layout, max: usize) -> Result<Vec<DeadLetter>, DemoError> {
    let db = open_db(layout)?;
    let (_, dead_letter) = queues(&db);
    crate::operations::dlq::peek_dead_letters(dead_letter.as_ref(), max)
        .await
        .map_err(|err| step("reading the dead-letter queue")(err))
}

/// The view `processor status` shows of the folder's platform.
pub async fn status(
    layout: &Layout,
    catalog: &Catalog,
    since: std::time::SystemTime,
    look: usize,
) -> Result<StatusReport, DemoError> {
    let db = open_db(layout)?;
    let (queue, dead_letter) = queues(&db);
    let warehouse = open_warehouse(layout)?;
    let sources = StatusSources {
        catalog,
        warehouse: &warehouse,
        work_queue: queue.as_ref(),
        dead_letter: Some(dead_letter.as_ref()),
    };
    crate::operations::status::status(&sources, since, look)
        .await
        .map_err(|err| step("gathering the status")(err))
}

/// Where the file at `bucket`/`key` of the folder is (`processor trace`).
pub async fn trace_file(
    layout: &Layout,
    catalog: Arc<Catalog>,
    bucket: &str,
    key: &str,
) -> Result<FileTrace, DemoError> {
    only_bucket(layout, bucket)?;
    let db = open_db(layout)?;
    let (queue, dead_letter) = queues(&db);
    let buckets = Arc::new(LocalBuckets::new(layout.objects()));
    let work_queue = Arc::clone(&queue) as Arc<dyn WorkQueue>;
    let (file_ingest, _) = ingests(&catalog, &buckets, &work_queue);
    let object = match buckets.created_object(BUCKET, key).await {
        Ok(object) => Some(object),
        Err(object_store::Error::NotFound { .. }) => None,
        Err(err) => return Err(step("reading the file")(err)),
    };
    let warehouse = open_warehouse(layout)?;
    let sources = TraceSources {
        catalog: &catalog,
        planner: &file_ingest.planner,
        warehouse: &warehouse,
        work_queue: queue.as_ref(),
        dead_letter: Some(dead_letter.as_ref()),
    };
    crate::operations::trace::trace_file(&sources, &format!("s3://{BUCKET}/{key}"), object)
        .await
        .map_err(|err| step("tracing the file")(err))
}

/// The folder's warehouse (for `check --warehouse`, `prune` and `rejects`).
pub fn warehouse(layout: &Layout) -> Result<SqliteWarehouse, DemoError> {
    open_db(layout)?;
    open_warehouse(layout)
}

/// The warehouse of a folder already opened with [`open_db`].
fn open_warehouse(layout: &Layout) -> Result<SqliteWarehouse, DemoError> {
    SqliteWarehouse::open(&layout.database(), PLATFORM)
        .map_err(|err| step("opening the warehouse")(err))
}
