//! `processor trace`: where one file is and why — routed to which dataset or not, the work
//! items it was planned into (the same planning as the S3 event's, so the same idempotency
//! keys), which of them the ledger holds and with how many rows, which wait in the
//! dead-letter queue and why, its `file_loads` row and `File Loaded` event, its rejects;
//! and the next step to take.

use ingest_batch::events::{CreatedObject, SkipReason};
use ingest_batch::plan::{FilePlanner, Planned};
use shared::catalog::Catalog;
use shared::envelope::{FileItem, WorkItem};
use shared::queue::{QueueError, WorkQueue};

use super::dlq::{DeadLetter, MAX_LOOK, peek_dead_letters};
use crate::timefmt::iso_utc_millis;
use crate::warehouse::load_trace::{FileLoadRow, LedgerEntry};
use crate::warehouse::rejects::{MAX_PAGE, RejectQuery};
use crate::warehouse::{Warehouse, WarehouseError};

/// Where the answers come from.
#[derive(Debug)]
pub struct TraceSources<'a> {
    pub catalog: &'a Catalog,
    pub planner: &'a FilePlanner,
    pub warehouse: &'a dyn Warehouse,
    pub work_queue: &'a dyn WorkQueue,
    pub dead_letter: Option<&'a dyn WorkQueue>,
}

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("HeadObject on {url} failed")]
    Head {
        url: String,
        #[source]
        source: shared::error::BoxError,
    },
    #[error("planning the file as its S3 event would failed")]
    Plan(#[source] ingest_batch::plan::ObjectReadError),
    #[error("reading the platform tables failed")]
    Warehouse(#[source] WarehouseError),
    #[error("reading the {which} failed")]
    Queue {
        which: &'static str,
        #[source]
        source: QueueError,
    },
}

/// Everything known of one file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FileTrace {
    pub url: String,
    /// The object as the bucket holds it now; `None`: no such object.
    pub object: Option<ObjectFacts>,
    pub dataset: Option<String>,
    /// Why the S3 path would not load it (not routed, empty, a folder marker).
    pub skipped: Option<String>,
    pub parts: Vec<PartTrace>,
    pub file_load: Option<FileLoadRow>,
    /// Rejected rows of this file's work items (up to 1000 counted) and their first reasons.
    pub rejects: u64,
    pub reject_reasons: Vec<String>,
    /// Where it is, in one sentence.
    pub verdict: String,
    pub next_step: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ObjectFacts {
    pub size: u64,
    pub etag: String,
    pub version_id: Option<String>,
}

/// One work item of the file (the whole file, or one part).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PartTrace {
    /// 1-based; 1 of 1 for a whole file.
    pub part: u32,
    pub of: u32,
    pub idempotency_key: String,
    #[serde(flatten)]
    pub state: PartState,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum PartState {
    Loaded {
        loaded_at: String,
        rows_loaded: i64,
        rows_rejected: i64,
    },
    DeadLettered {
        reason: String,
        receives: u32,
        redrives: u32,
    },
    /// Neither loaded nor dead-lettered: waiting, being loaded, or never enqueued.
    NotLoaded,
}

/// Splits `s3://bucket/key`; the key as S3 lists it (not URL-encoded).
pub fn parse_s3_url(text: &str) -> Result<(String, String), String> {
    let rest = text.strip_prefix("s3://").ok_or_else(|| {
        format!("{text:?} is not an S3 URL: give s3://bucket/key (the key as S3 lists it)")
    })?;
    match rest.split_once('/') {
        Some((bucket, key)) if !bucket.is_empty() && !key.is_empty() => {
            Ok((bucket.to_owned(), key.to_owned()))
        }
        _ => Err(format!(
            "{text:?} names no object: give s3://bucket/key (the key as S3 lists it)"
        )),
    }
}

/// The object at `bucket`/`key` as S3 holds it now, as its event would describe it;
/// `None` when there is none.
pub async fn head_object(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> Result<Option<CreatedObject>, TraceError> {
    let head = match s3.head_object().bucket(bucket).key(key).send().await {
        Ok(head) => head,
        Err(err) if err.as_service_error().is_some_and(|e| e.is_not_found()) => return Ok(None),
        Err(err) => {
            return Err(TraceError::Head {
                url: format!("s3://{bucket}/{key}"),
                source: err.into(),
            });
        }
    };
    Ok(Some(CreatedObject {
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        size: head
            .content_length()
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(0),
        etag: shared::envelope::normalize_etag(head.e_tag().unwrap_or_default()),
        version_id: head.version_id().map(str::to_owned),
        event_time_ms: head.last_modified().and_then(|t| t.to_millis().ok()),
        undecoded_key: None,
    }))
}

/// Traces the object at `url`; `object` is what the bucket holds there (`None`: nothing).
pub async fn trace_file(
    sources: &TraceSources<'_>,
    url: &str,
    object: Option<CreatedObject>,
) -> Result<FileTrace, TraceError> {
    let mut trace = FileTrace {
        url: url.to_owned(),
        object: None,
        dataset: None,
        skipped: None,
        parts: Vec::new(),
        file_load: None,
        rejects: 0,
        reject_reasons: Vec::new(),
        verdict: String::new(),
        next_step: None,
    };
    let Some(object) = object else {
        trace.verdict = format!("no object at {url}");
        trace.next_step = Some(
            "check the bucket and the key (as S3 lists it, not URL-encoded); a deleted object leaves its rows loaded".to_owned(),
        );
        return Ok(trace);
    };
    trace.object = Some(ObjectFacts {
        size: object.size,
        etag: object.etag.clone(),
        version_id: object.version_id.clone(),
    });
    let items = match sources
        .planner
        .plan(&object)
        .await
        .map_err(TraceError::Plan)?
    {
        Planned::Items(items) => items,
        Planned::Skipped(skipped) => {
            skip(&mut trace, sources.catalog, &object.key, skipped.reason);
            return Ok(trace);
        }
    };
    let Some(first) = items.first() else {
        trace.verdict = "planned into no work item".to_owned();
        return Ok(trace);
    };
    trace.dataset = Some(first.dataset.clone());
    let file_id = first.file_id();
    let keys: Vec<String> = items
        .iter()
        .map(|item| WorkItem::File(item.clone()).idempotency_key().to_string())
        .collect();
    let (ledger, file_load) = sources
        .warehouse
        .trace_file(&keys, &file_id)
        .await
        .map_err(TraceError::Warehouse)?;
    let (letters, all_letters_seen) = dead_letters_of(sources.dead_letter, &keys).await?;
    trace.parts = items
        .iter()
        .zip(&keys)
        .map(|(item, key)| part_trace(item, key, &ledger, &letters))
        .collect();
    trace.file_load = file_load;
    count_rejects(&mut trace, sources.warehouse, &keys).await?;
    let depth = sources
        .work_queue
        .depth()
        .await
        .map_err(|source| TraceError::Queue {
            which: "work queue",
            source,
        })?;
    conclude(&mut trace, &object.key, depth.visible + depth.in_flight);
    if !all_letters_seen {
        trace.verdict.push_str(&format!(
            " (the dead-letter queue holds more than {MAX_LOOK} letters: not all were looked at)"
        ));
    }
    Ok(trace)
}

fn skip(trace: &mut FileTrace, catalog: &Catalog, key: &str, reason: SkipReason) {
    let (verdict, next) = match reason {
        SkipReason::Unrouted => {
            let routes: Vec<String> = catalog
                .datasets()
                .filter_map(|d| {
                    let route = d.s3.as_ref()?;
                    Some(format!("{}*{} → {}", route.prefix, route.suffix, d.name))
                })
                .collect();
            (
                format!(
                    "not routed: no dataset's S3 route matches {key:?} (routes: {})",
                    if routes.is_empty() {
                        "none".to_owned()
                    } else {
                        routes.join(", ")
                    }
                ),
                Some(format!(
                    "add a route for it to the catalog (`processor catalog draft {}` drafts an entry), deploy it, then `processor backfill --prefix {key}`",
                    trace.url
                )),
            )
        }
        SkipReason::EmptyObject => ("an empty object: nothing to load".to_owned(), None),
        SkipReason::FolderMarker => ("a folder marker: nothing to load".to_owned(), None),
        other => (format!("skipped ({})", other.as_str()), None),
    };
    trace.skipped = Some(reason.as_str().to_owned());
    trace.verdict = verdict;
    trace.next_step = next;
}

/// The dead letters of the file's work items (by idempotency key: a letter of an earlier
/// upload of the same key is not this file's), and whether every letter was looked at.
async fn dead_letters_of(
    queue: Option<&dyn WorkQueue>,
    keys: &[String],
) -> Result<(Vec<DeadLetter>, bool), TraceError> {
    let Some(queue) = queue else {
        return Ok((Vec::new(), true));
    };
    let letters = peek_dead_letters(queue, MAX_LOOK)
        .await
        .map_err(|source| TraceError::Queue {
            which: "dead-letter queue",
            source,
        })?;
    let all_seen = letters.len() < MAX_LOOK;
    let mine = letters
        .into_iter()
        .filter(|l| l.idempotency_key.as_ref().is_some_and(|k| keys.contains(k)))
        .collect();
    Ok((mine, all_seen))
}

fn part_trace(
    item: &FileItem,
    key: &str,
    ledger: &[LedgerEntry],
    letters: &[DeadLetter],
) -> PartTrace {
    let (part, of) = item.part.map_or((1, 1), |p| (p.index, p.count));
    let state = if let Some(entry) = ledger.iter().find(|e| e.idempotency_key == key) {
        PartState::Loaded {
            loaded_at: iso_utc_millis(entry.loaded_at_ms),
            rows_loaded: entry.rows_loaded,
            rows_rejected: entry.rows_rejected,
        }
    } else if let Some(letter) = letters
        .iter()
        .find(|l| l.idempotency_key.as_deref() == Some(key))
    {
        PartState::DeadLettered {
            reason: letter.reason.clone(),
            receives: letter.receives,
            redrives: letter.redrives,
        }
    } else {
        PartState::NotLoaded
    };
    PartTrace {
        part,
        of,
        idempotency_key: key.to_owned(),
        state,
    }
}

async fn count_rejects(
    trace: &mut FileTrace,
    warehouse: &dyn Warehouse,
    keys: &[String],
) -> Result<(), TraceError> {
    let query = RejectQuery {
        dataset: None,
        source: None,
        reason: None,
        keys: keys.to_vec(),
        since: None,
        limit: MAX_PAGE,
        offset: 0,
    };
    let found = warehouse
        .find_rejects(&query)
        .await
        .map_err(TraceError::Warehouse)?;
    trace.rejects = found.len() as u64;
    let mut reasons: Vec<String> = Vec::new();
    for reject in &found {
        if reasons.len() < 3 && !reasons.contains(&reject.reason) {
            reasons.push(reject.reason.clone());
        }
    }
    trace.reject_reasons = reasons;
    Ok(())
}

/// The verdict and the next step, from the parts' states.
fn conclude(trace: &mut FileTrace, key: &str, queued: u64) {
    let dataset = trace.dataset.clone().unwrap_or_default();
    let total = trace.parts.len();
    let loaded: Vec<(i64, i64)> = trace
        .parts
        .iter()
        .filter_map(|p| match &p.state {
            PartState::Loaded {
                rows_loaded,
                rows_rejected,
                ..
            } => Some((*rows_loaded, *rows_rejected)),
            _ => None,
        })
        .collect();
    let dead: Vec<&String> = trace
        .parts
        .iter()
        .filter_map(|p| match &p.state {
            PartState::DeadLettered { reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    let rows: i64 = loaded.iter().map(|(rows, _)| rows).sum();
    let rejected: i64 = loaded.iter().map(|(_, rejected)| rejected).sum();
    let rejects_hint = (rejected > 0)
        .then(|| format!("`processor rejects --file {key}` shows the {rejected} rejected row(s)"));
    if loaded.len() == total {
        let announced = match trace.file_load.as_ref().and_then(|f| f.published_at_ms) {
            Some(at) => format!("; its File Loaded event was sent at {}", iso_utc_millis(at)),
            None => "; no File Loaded event recorded (events not configured, or not sent yet)"
                .to_owned(),
        };
        trace.verdict = format!(
            "loaded into {dataset}: {rows} row(s), {rejected} rejected, in {total} work item(s){announced}"
        );
        trace.next_step = rejects_hint;
    } else if let Some(reason) = dead.first() {
        trace.verdict = format!(
            "dead-lettered: {} of {total} work item(s) in the dead-letter queue ({} loaded): {reason}",
            dead.len(),
            loaded.len()
        );
        trace.next_step = Some(if reason.contains("over the dataset's limit") {
            format!(
                "raise reject_limit of {dataset} in the catalog and deploy it (or fix the file and upload it again: a changed file is a new load), then `processor redrive`"
            )
        } else {
            "fix the cause (the catalog, or the file: a changed file is a new load), then `processor redrive`".to_owned()
        });
    } else {
        trace.verdict = format!(
            "not loaded yet: {} of {total} work item(s) loaded; the rest wait in the work queue or are being loaded ({queued} message(s) there now)",
            loaded.len()
        );
        trace.next_step = Some(format!(
            "if the work queue is empty the file was never enqueued (an S3 event lost, or it arrived before the notification was set up): `processor backfill --prefix {key}` enqueues it — the ledger keeps that safe"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_urls_need_a_bucket_and_a_key() {
        assert_eq!(
            parse_s3_url("s3://landing/orders/a b+1.csv"),
            Ok(("landing".to_owned(), "orders/a b+1.csv".to_owned()))
        );
        for bad in [
            "landing/a.csv",
            "s3://",
            "s3://landing",
            "s3://landing/",
            "s3:///a.csv",
            "https://x/y",
        ] {
            assert!(parse_s3_url(bad).is_err(), "{bad:?} accepted");
        }
    }
}
