//! `processor status` and the `/status` page: per dataset, what loaded in a window (from
//! the warehouse's ledger and `file_loads`), what the dead-letter queue holds for it and
//! why, and how much work waits in the work queue. Figures are counted where they can be
//! (the warehouse's tables); queue depths are the queue's own approximate counts.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use shared::catalog::Catalog;
use shared::queue::{QueueDepth, QueueError, WorkQueue};
use shared::stream::{epoch_millis, from_epoch_millis};

use super::dlq::{DeadLetter, peek_dead_letters};
use crate::timefmt::iso_utc_millis;
use crate::warehouse::activity::{ActivityQuery, DatasetActivity};
use crate::warehouse::{Warehouse, WarehouseError};

/// How long after its first part a file with parts still to load counts as incomplete.
pub const INCOMPLETE_AFTER: Duration = Duration::from_secs(15 * 60);
/// The most reasons listed per dataset.
const TOP_REASONS: usize = 3;

/// Where the figures come from.
#[derive(Debug)]
pub struct StatusSources<'a> {
    pub catalog: &'a Catalog,
    pub warehouse: &'a dyn Warehouse,
    pub work_queue: &'a dyn WorkQueue,
    /// `None` when no dead-letter queue is configured.
    pub dead_letter: Option<&'a dyn WorkQueue>,
}

/// Why the figures could not be gathered.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("counting the loads in the warehouse failed")]
    Warehouse(#[source] WarehouseError),
    #[error("reading the {which} failed")]
    Queue {
        which: &'static str,
        #[source]
        source: QueueError,
    },
}

/// The whole view.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StatusReport {
    pub generated_at: String,
    pub generated_at_ms: i64,
    /// The window's start (ISO 8601, UTC, and milliseconds) and its length in seconds.
    pub since: String,
    pub since_ms: i64,
    pub window_seconds: u64,
    /// The width of a point of the datasets' series.
    pub bucket_ms: i64,
    pub datasets: Vec<DatasetStatus>,
    pub work_queue: QueueStatus,
    pub dead_letters: DeadLetterStatus,
}

/// One dataset's line.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DatasetStatus {
    #[serde(flatten)]
    pub activity: DatasetActivity,
    /// `files`, `stream` or `files+stream`, by the catalog's routes; `removed` for a dataset
    /// the catalog no longer has.
    pub routes: &'static str,
    pub last_loaded_at: Option<String>,
    /// For a dataset loaded from a stream: when the newest record committed in the window
    /// arrived in the stream, and how long ago that is (the stream's lag; it grows also
    /// while nothing arrives).
    pub last_arrival_at: Option<String>,
    pub lag_seconds: Option<u64>,
    /// Dead letters of this dataset among those looked at.
    pub dead_letters: u64,
    /// Their most common reasons, values masked (`"…"`, `N`), most frequent first.
    pub top_reasons: Vec<ReasonCount>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReasonCount {
    pub reason: String,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct QueueStatus {
    pub waiting: u64,
    pub in_flight: u64,
    /// How old the oldest message is, where the queue tells (see [`QueueDepth`]).
    pub oldest_age_seconds: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeadLetterStatus {
    /// Whether a dead-letter queue is configured (`[queue] dead_letter_url`).
    pub configured: bool,
    /// The queue's count (waiting and in flight).
    pub depth: u64,
    /// How many were looked at for their dataset and reason (at most the look's cap).
    pub looked_at: u64,
    /// Letters looked at that belong to no dataset shown (bodies that are not items).
    pub without_dataset: u64,
}

/// The view of the window starting at `since`; up to `look` dead letters are read for
/// their reasons (0: none, only the depth).
pub async fn status(
    sources: &StatusSources<'_>,
    since: SystemTime,
    look: usize,
) -> Result<StatusReport, StatusError> {
    let now = SystemTime::now();
    let window = now.duration_since(since).unwrap_or_default();
    let query = ActivityQuery {
        since,
        bucket_ms: bucket_ms(window),
        incomplete_before: now.checked_sub(INCOMPLETE_AFTER).unwrap_or(since),
    };
    let activity = sources
        .warehouse
        .activity(&query)
        .await
        .map_err(StatusError::Warehouse)?;
    let work = sources
        .work_queue
        .depth()
        .await
        .map_err(|source| StatusError::Queue {
            which: "work queue",
            source,
        })?;
    let dead_letter_error = |source| StatusError::Queue {
        which: "dead-letter queue",
        source,
    };
    let (dead, letters) = match sources.dead_letter {
        None => (None, Vec::new()),
        Some(queue) => {
            let depth = queue.depth().await.map_err(dead_letter_error)?;
            let letters = if look > 0 && depth.visible > 0 {
                peek_dead_letters(queue, look)
                    .await
                    .map_err(dead_letter_error)?
            } else {
                Vec::new()
            };
            (Some(depth), letters)
        }
    };
    let report = assemble(sources.catalog, activity, &letters, work, dead, since, now);
    Ok(StatusReport {
        bucket_ms: query.bucket_ms,
        ..report
    })
}

/// Points of the rows-over-time series: about 24 of them, at least a minute each.
fn bucket_ms(window: Duration) -> i64 {
    let millis = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
    (millis / 24).max(60_000)
}

fn assemble(
    catalog: &Catalog,
    activity: Vec<DatasetActivity>,
    letters: &[DeadLetter],
    work: QueueDepth,
    dead: Option<QueueDepth>,
    since: SystemTime,
    now: SystemTime,
) -> StatusReport {
    let mut by_name: BTreeMap<String, DatasetActivity> = catalog
        .datasets()
        .map(|d| {
            let empty = DatasetActivity {
                dataset: d.name.clone(),
                ..DatasetActivity::default()
            };
            (d.name.clone(), empty)
        })
        .collect();
    for found in activity {
        by_name.insert(found.dataset.clone(), found);
    }
    let datasets: Vec<DatasetStatus> = by_name
        .into_values()
        .map(|activity| dataset_status(catalog, activity, letters, epoch_millis(now)))
        .collect();
    let without_dataset = letters
        .iter()
        .filter(|l| {
            !datasets
                .iter()
                .any(|d| l.dataset.as_deref() == Some(d.activity.dataset.as_str()))
        })
        .count() as u64;
    let now_ms = epoch_millis(now);
    StatusReport {
        generated_at: iso_utc_millis(now_ms),
        generated_at_ms: now_ms,
        since: iso_utc_millis(epoch_millis(since)),
        since_ms: epoch_millis(since),
        bucket_ms: 0,
        window_seconds: now.duration_since(since).unwrap_or_default().as_secs(),
        datasets,
        work_queue: QueueStatus {
            waiting: work.visible,
            in_flight: work.in_flight,
            oldest_age_seconds: work
                .oldest_sent_ms
                .map(|sent| (now_ms.saturating_sub(sent) / 1000).unsigned_abs()),
        },
        dead_letters: DeadLetterStatus {
            configured: dead.is_some(),
            depth: dead.map_or(0, |d| d.visible + d.in_flight),
            looked_at: letters.len() as u64,
            without_dataset,
        },
    }
}

fn dataset_status(
    catalog: &Catalog,
    activity: DatasetActivity,
    letters: &[DeadLetter],
    now_ms: i64,
) -> DatasetStatus {
    let routes = match catalog.get(&activity.dataset) {
        None => "removed",
        Some(d) => match (d.s3.is_some(), d.stream.is_some()) {
            (true, true) => "files+stream",
            (false, true) => "stream",
            _ => "files",
        },
    };
    let mine: Vec<&DeadLetter> = letters
        .iter()
        .filter(|l| l.dataset.as_deref() == Some(activity.dataset.as_str()))
        .collect();
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    for letter in &mine {
        *reasons.entry(mask_values(&letter.reason)).or_default() += 1;
    }
    let mut top_reasons: Vec<ReasonCount> = reasons
        .into_iter()
        .map(|(reason, count)| ReasonCount { reason, count })
        .collect();
    top_reasons.sort_by(|a, b| b.count.cmp(&a.count).then(a.reason.cmp(&b.reason)));
    top_reasons.truncate(TOP_REASONS);
    DatasetStatus {
        last_loaded_at: activity.last_loaded_ms.map(iso_utc_millis),
        last_arrival_at: activity.last_arrival_ms.map(iso_utc_millis),
        lag_seconds: activity
            .last_arrival_ms
            .map(|arrived| (now_ms.saturating_sub(arrived).max(0) / 1000).unsigned_abs()),
        activity,
        routes,
        dead_letters: mine.len() as u64,
        top_reasons,
    }
}

/// A reason with its values masked, so that reasons of the same kind group together and
/// no row value (personal data, perhaps) is shown: quoted text (`"…"`, `'…'`) becomes `…`,
/// digits `N`, data URLs `s3://…`, and a database's `DETAIL` (which lists a failing row's
/// values) is cut off.
pub fn mask_values(reason: &str) -> String {
    let reason = ["DETAIL", "Failing row contains"]
        .iter()
        .filter_map(|cut| reason.find(cut))
        .min()
        .map_or(reason, |at| &reason[..at]);
    let mut masked = String::with_capacity(reason.len());
    let mut quote: Option<char> = None;
    let mut in_number = false;
    let mut escaped = false;
    let mut previous = ' ';
    let mut rest = reason;
    while let Some(c) = rest.chars().next() {
        // A data URL names a file or stream: up to the ": " that ends it.
        if quote.is_none()
            && let Some(scheme) = ["s3://", "kinesis://"]
                .iter()
                .find(|s| rest.starts_with(**s))
        {
            masked.push_str(scheme);
            masked.push('…');
            rest = rest.find(": ").map_or("", |end| &rest[end..]);
            in_number = false;
            continue;
        }
        rest = &rest[c.len_utf8()..];
        if let Some(open) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == open {
                quote = None;
                masked.push('…');
                masked.push(c);
            }
            continue;
        }
        // An apostrophe inside a word ("dataset's") opens nothing.
        let opens = c == '"' || (c == '\'' && !previous.is_alphanumeric());
        // Digits inside a word ("Int64", "shardId-0001" aside) are names, not values.
        let in_word = previous.is_alphabetic() || (previous.is_ascii_digit() && !in_number);
        previous = c;
        if opens {
            quote = Some(c);
            in_number = false;
            masked.push(c);
        } else if c.is_ascii_digit() && !in_word {
            if !in_number {
                masked.push('N');
            }
            in_number = true;
        } else {
            in_number = false;
            masked.push(c);
        }
    }
    if quote.is_some() {
        masked.push('…');
    }
    masked.trim_end().to_owned()
}

/// A length of time: a count and a unit (`30s`, `90m`, `24h`, `7d`), more than zero.
pub fn parse_length(text: &str) -> Option<Duration> {
    let (count, unit) = text.split_at(text.len().checked_sub(1)?);
    let per = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    let count: u64 = count.parse().ok().filter(|n| *n > 0)?;
    Some(Duration::from_secs(count.saturating_mul(per)))
}

/// Parses a window: a length back from now (`90m`, `24h`, `7d`), a date (`2026-11-01`,
/// midnight UTC) or an RFC 3339 time. Returns its start.
pub fn parse_window(text: &str, now: SystemTime) -> Result<SystemTime, String> {
    let text = text.trim();
    let start = match parse_length(text) {
        Some(length) => now.checked_sub(length),
        None => super::backfill::parse_since(text).ok().map(from_epoch_millis),
    }
    .ok_or_else(|| {
        format!(
            "{text:?} is not a window: give a length back from now (90m, 24h, 7d), a date (2026-11-01) or an RFC 3339 time (2026-11-01T12:00:00Z)"
        )
    })?;
    if start > now {
        return Err(format!("{text:?} is in the future"));
    }
    Ok(start)
}

/// A condition under which `processor status` exits non-zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOn {
    /// The dead-letter queue is not empty.
    DeadLetters,
    /// Rows were rejected in the window.
    Rejects,
    /// A file has parts loaded and parts not.
    Incomplete,
    /// A dataset has loaded nothing for this long (a stream or a feed that stopped).
    Idle(Duration),
    /// The oldest work-queue message is older than this (local queue only).
    QueueAge(Duration),
    /// A stream dataset's newest committed record arrived longer ago than this, or none
    /// was committed in the window.
    Lag(Duration),
}

impl std::str::FromStr for FailOn {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let duration = |value: &str| {
            parse_length(value)
                .ok_or_else(|| format!("{value:?} is not a length such as 15m, 2h or 1d"))
        };
        match text.split_once('=') {
            None if text == "dlq" => Ok(FailOn::DeadLetters),
            None if text == "rejects" => Ok(FailOn::Rejects),
            None if text == "incomplete" => Ok(FailOn::Incomplete),
            Some(("idle", value)) => duration(value).map(FailOn::Idle),
            Some(("queue-age", value)) => duration(value).map(FailOn::QueueAge),
            Some(("lag", value)) => duration(value).map(FailOn::Lag),
            _ => Err(format!(
                "{text:?} is not a condition: dlq, rejects, incomplete, idle=DURATION (2h), lag=DURATION (5m) or queue-age=DURATION (15m)"
            )),
        }
    }
}

/// The conditions `report` meets, each said in a sentence (empty: none).
pub fn failures(report: &StatusReport, conditions: &[FailOn]) -> Vec<String> {
    let now_ms = report.generated_at_ms;
    let mut failed = Vec::new();
    for condition in conditions {
        match *condition {
            FailOn::DeadLetters if report.dead_letters.depth > 0 => failed.push(format!(
                "the dead-letter queue holds {} message(s)",
                report.dead_letters.depth
            )),
            FailOn::Rejects => failed.extend(
                report
                    .datasets
                    .iter()
                    .filter(|d| d.activity.rows_rejected > 0)
                    .map(|d| format!("{}: {} row(s) rejected", d.activity.dataset, d.activity.rows_rejected)),
            ),
            FailOn::Incomplete => failed.extend(
                report
                    .datasets
                    .iter()
                    .filter(|d| d.activity.files_incomplete > 0)
                    .map(|d| {
                        format!("{}: {} file(s) with parts still to load", d.activity.dataset, d.activity.files_incomplete)
                    }),
            ),
            FailOn::Idle(limit) => failed.extend(
                report
                    .datasets
                    .iter()
                    .filter(|d| d.routes != "removed")
                    .filter(|d| {
                        d.activity.last_loaded_ms.is_none_or(|last| {
                            now_ms.saturating_sub(last) > i64::try_from(limit.as_millis()).unwrap_or(i64::MAX)
                        })
                    })
                    .map(|d| match &d.last_loaded_at {
                        Some(at) => format!("{}: nothing loaded since {at}", d.activity.dataset),
                        None => format!("{}: nothing loaded in the window", d.activity.dataset),
                    }),
            ),
            FailOn::Lag(limit) => failed.extend(
                report
                    .datasets
                    .iter()
                    .filter(|d| d.routes.contains("stream"))
                    .filter_map(|d| match (d.lag_seconds, &d.last_arrival_at) {
                        (Some(lag), Some(at)) if lag > limit.as_secs() => Some(format!(
                            "{}: the newest record loaded arrived at {at}, {lag} s ago",
                            d.activity.dataset
                        )),
                        (None, _) => Some(format!(
                            "{}: no stream record loaded in the window",
                            d.activity.dataset
                        )),
                        _ => None,
                    }),
            ),
            FailOn::QueueAge(limit) => match report.work_queue.oldest_age_seconds {
                Some(age) if age > limit.as_secs() => failed.push(format!(
                    "the oldest work-queue message is {age} s old"
                )),
                Some(_) => {}
                None => failed.push(
                    "queue-age: this queue does not tell its oldest message's age (SQS reports it to CloudWatch as ApproximateAgeOfOldestMessage)".to_owned(),
                ),
            },
            _ => {}
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_masked_so_values_stay_hidden_and_kinds_group() {
        assert_eq!(
            mask_values(r#"column "amount": "12,5\"x" is not a valid decimal; 12 of 100 rows"#),
            r#"column "…": "…" is not a valid decimal; N of N rows"#
        );
        assert_eq!(mask_values("unterminated \"abc"), "unterminated \"…");
        assert_eq!(
            mask_values("the dataset's transform: Cannot cast string 'alice@x.com' to Int64"),
            "the dataset's transform: Cannot cast string '…' to Int64"
        );
        assert_eq!(
            mask_values(
                "duplicate key value violates unique constraint DETAIL: Key (email)=(a@b.c) already exists."
            ),
            "duplicate key value violates unique constraint"
        );
        assert_eq!(
            mask_values("s3://b/landing/a 1.csv: 3 rows rejected of 3 read"),
            "s3://…: N rows rejected of N read"
        );
    }

    #[test]
    fn windows_are_lengths_dates_or_times_and_nothing_else() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(10 * 86_400);
        let back = |text: &str| {
            now.duration_since(parse_window(text, now).expect(text))
                .expect("past")
        };
        assert_eq!(back("24h"), Duration::from_secs(86_400));
        assert_eq!(back("90m"), Duration::from_secs(5400));
        assert_eq!(back("7d"), Duration::from_secs(7 * 86_400));
        assert_eq!(
            parse_window("1970-01-02", now).expect("date"),
            SystemTime::UNIX_EPOCH + Duration::from_secs(86_400)
        );
        for bad in [
            "",
            "h",
            "0h",
            "-1d",
            "yesterday",
            "12x",
            "1970-13-01",
            "2999-01-01",
        ] {
            assert!(parse_window(bad, now).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn fail_on_conditions_parse_and_refuse_what_they_cannot_mean() {
        assert_eq!("dlq".parse::<FailOn>(), Ok(FailOn::DeadLetters));
        assert_eq!(
            "idle=2h".parse::<FailOn>(),
            Ok(FailOn::Idle(Duration::from_secs(7200)))
        );
        assert_eq!(
            "queue-age=15m".parse::<FailOn>(),
            Ok(FailOn::QueueAge(Duration::from_secs(900)))
        );
        assert_eq!(
            "lag=5m".parse::<FailOn>(),
            Ok(FailOn::Lag(Duration::from_secs(300)))
        );
        for bad in [
            "lag",
            "idle",
            "idle=",
            "idle=2026-01-01",
            "idle=0m",
            "dlq=1",
        ] {
            assert!(bad.parse::<FailOn>().is_err(), "{bad:?} accepted");
        }
    }
}
