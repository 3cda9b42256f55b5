//! `processor backfill`: lists the objects under a prefix and enqueues their work items
//! through the same planning and sending code as the ingest-batch Lambda, so an object
//! yields the same items (and idempotency keys) both ways. A second backfill of the same
//! objects therefore loads nothing new: the processor's ledger skips every item.
//!
//! Objects are listed a page (up to 1,000) at a time and each page is planned and sent
//! before the next is listed, so memory stays flat however many objects there are.

use ingest_batch::events::CreatedObject;
use ingest_batch::{FileIngest, IngestError};
use shared::envelope::normalize_etag;
use shared::error::classify_sdk_error;

/// What to backfill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackfillOptions {
    pub bucket: String,
    pub prefix: String,
    /// Only objects last modified at or after this time (milliseconds since the epoch).
    pub since_ms: Option<i64>,
    /// Plan and count, send nothing.
    pub dry_run: bool,
}

/// Progress so far (also the final result).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackfillProgress {
    /// Objects listed under the prefix.
    pub listed: u64,
    /// Objects older than `--since`, left out.
    pub older: u64,
    /// Objects planned (listed and not older).
    pub planned: u64,
    /// Bytes of the planned objects.
    pub bytes: u64,
    pub files_split: u64,
    /// Work items enqueued (or, in a dry run, that would be).
    pub work_items: u64,
    /// Objects that yielded no work item (folder markers, empty, unrouted, gone).
    pub skipped: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error("listing s3://{bucket}/{prefix} failed")]
    List {
        bucket: String,
        prefix: String,
        source: shared::error::BoxError,
        retryable: bool,
    },
    #[error(transparent)]
    Ingest(#[from] IngestError),
}

/// Parses `--since`: an RFC 3339 time (`2026-11-01T00:00:00Z`) or a date (`2026-11-01`,
/// midnight UTC).
pub fn parse_since(text: &str) -> Result<i64, String> {
    use aws_smithy_types::date_time::{DateTime, Format};
    let full = if text.len() == 10 {
        format!("{text}T00:00:00Z")
    } else {
        text.to_owned()
    };
    DateTime::from_str(&full, Format::DateTime)
        .map_err(|err| {
            format!("{text:?} is not a date (2026-11-01) or an RFC 3339 time (2026-11-01T12:00:00Z): {err}")
        })
        .and_then(|time| {
            time.to_millis()
                .map_err(|err| format!("{text:?} is out of range: {err}"))
        })
}

/// Lists, plans and enqueues; `progress` is called after every page.
pub async fn backfill(
    s3: &aws_sdk_s3::Client,
    ingest: &FileIngest,
    options: &BackfillOptions,
    progress: &mut dyn FnMut(&BackfillProgress),
) -> Result<BackfillProgress, BackfillError> {
    let mut done = BackfillProgress::default();
    let mut pages = s3
        .list_objects_v2()
        .bucket(&options.bucket)
        .prefix(&options.prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|err| BackfillError::List {
            bucket: options.bucket.clone(),
            prefix: options.prefix.clone(),
            retryable: classify_sdk_error(&err) == shared::error::Retryability::Retryable,
            source: err.into(),
        })?;
        let mut objects = Vec::new();
        for object in page.contents() {
            let (Some(key), Some(etag)) = (object.key(), object.e_tag()) else {
                // S3 always lists both; count rather than lose track of such an entry.
                done.listed += 1;
                done.skipped += 1;
                continue;
            };
            objects.push(CreatedObject {
                bucket: options.bucket.clone(),
                // ListObjectsV2 returns keys as they are (no encoding type requested).
                key: key.to_owned(),
                size: object
                    .size()
                    .and_then(|n| u64::try_from(n).ok())
                    .unwrap_or(0),
                etag: normalize_etag(etag),
                version_id: None,
                event_time_ms: object.last_modified().and_then(|t| t.to_millis().ok()),
                undecoded_key: None,
            });
        }
        enqueue_page(ingest, objects, options, &mut done).await?;
        progress(&done);
    }
    Ok(done)
}

/// Plans and enqueues (or, in a dry run, counts) one page of listed objects, leaving out
/// those modified before `since` (their `event_time_ms` is their modification time).
pub(crate) async fn enqueue_page(
    ingest: &FileIngest,
    listed: Vec<CreatedObject>,
    options: &BackfillOptions,
    done: &mut BackfillProgress,
) -> Result<(), IngestError> {
    done.listed += listed.len() as u64;
    let mut objects = Vec::with_capacity(listed.len());
    for object in listed {
        if let (Some(since), Some(modified)) = (options.since_ms, object.event_time_ms)
            && modified < since
        {
            done.older += 1;
            continue;
        }
        done.bytes += object.size;
        objects.push(object);
    }
    done.planned += objects.len() as u64;
    let (items, report) = ingest.plan_objects(&objects).await?;
    done.files_split += report.files_split as u64;
    done.skipped += report.skipped.values().sum::<usize>() as u64;
    if options.dry_run {
        done.work_items += items.len() as u64;
    } else {
        done.work_items += ingest.send(&items).await? as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_dates_and_times() {
        assert_eq!(parse_since("2026-11-01"), Ok(1_793_491_200_000));
        assert_eq!(parse_since("2026-11-01T00:00:01Z"), Ok(1_793_491_201_000));
        let err = parse_since("yesterday").expect_err("not a time");
        assert!(err.contains("\"yesterday\" is not a date"), "{err}");
    }
}
