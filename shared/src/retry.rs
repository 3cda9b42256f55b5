//! The one retry policy of the platform: exponential backoff with full jitter.
//!
//! The AWS SDK retries whole calls itself; this policy retries what the SDK does not:
//! the failed *entries* of batch calls (`SendMessageBatch`, `DeleteMessageBatch`,
//! `PutRecords`), which succeed as calls while some entries fail.

use std::future::Future;
use std::time::Duration;

use rand::Rng;

/// Backoff settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts including the first; at least 1.
    pub max_attempts: u32,
    pub initial_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// The ceiling of the delay before attempt `attempt` (1-based; attempt 1 has none):
    /// `initial * 2^(attempt-2)`, capped at `max_delay`.
    pub fn delay_ceiling(&self, attempt: u32) -> Duration {
        if attempt <= 1 {
            return Duration::ZERO;
        }
        let exponent = (attempt - 2).min(20);
        self.initial_delay
            .saturating_mul(1u32 << exponent)
            .min(self.max_delay)
    }

    /// A delay drawn uniformly from `[0, ceiling]` ("full jitter"), so many workers that
    /// failed together do not retry together.
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.delay_ceiling(attempt);
        if ceiling.is_zero() {
            return ceiling;
        }
        let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::rng().random_range(0..=millis))
    }
}

/// Why one entry of a batch call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryFailure {
    /// Index of the entry in the caller's list.
    pub index: usize,
    pub code: String,
    pub message: String,
    pub retryable: bool,
}

/// What happened to each entry of a batch operation: every index the caller gave is in
/// exactly one of the two lists, sorted by index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryReport<S> {
    pub succeeded: Vec<(usize, S)>,
    pub failed: Vec<EntryFailure>,
}

impl<S> Default for EntryReport<S> {
    fn default() -> Self {
        Self {
            succeeded: Vec::new(),
            failed: Vec::new(),
        }
    }
}

impl<S> EntryReport<S> {
    pub fn all_succeeded(&self) -> bool {
        self.failed.is_empty()
    }

    /// Every index fails with the same reason (a whole call failed).
    pub fn all_failed(indices: &[usize], code: &str, message: &str, retryable: bool) -> Self {
        Self {
            succeeded: Vec::new(),
            failed: indices
                .iter()
                .map(|&index| EntryFailure {
                    index,
                    code: code.to_owned(),
                    message: message.to_owned(),
                    retryable,
                })
                .collect(),
        }
    }

    pub fn merge(&mut self, other: EntryReport<S>) {
        self.succeeded.extend(other.succeeded);
        self.failed.extend(other.failed);
    }

    pub fn sort_by_index(&mut self) {
        self.succeeded.sort_by_key(|(index, _)| *index);
        self.failed.sort_by_key(|failure| failure.index);
    }
}

/// Sends `indices` with `attempt`, then again only the entries that failed retryably,
/// with backoff, until none is left or the attempts run out.
///
/// `attempt` gets the indices to send in one call and reports what happened to each.
/// An index it forgets to report is counted as a retryable failure, so an entry is only
/// ever reported as succeeded when the service said so.
pub(crate) async fn retry_failed_entries<S, F, Fut>(
    policy: &RetryPolicy,
    indices: Vec<usize>,
    mut attempt: F,
) -> EntryReport<S>
where
    F: FnMut(Vec<usize>) -> Fut,
    Fut: Future<Output = EntryReport<S>>,
{
    let mut report = EntryReport::default();
    let mut pending = indices;
    let mut last_retryable = Vec::new();
    for number in 1..=policy.max_attempts.max(1) {
        if pending.is_empty() {
            break;
        }
        if number > 1 {
            tokio::time::sleep(policy.delay(number)).await;
        }
        let outcome = attempt(pending.clone()).await;
        let mut answered: Vec<usize> = outcome.succeeded.iter().map(|(i, _)| *i).collect();
        answered.extend(outcome.failed.iter().map(|f| f.index));
        report.succeeded.extend(outcome.succeeded);
        let (retryable, permanent): (Vec<_>, Vec<_>) =
            outcome.failed.into_iter().partition(|f| f.retryable);
        report.failed.extend(permanent);
        last_retryable = retryable;
        for index in pending.iter().filter(|i| !answered.contains(i)) {
            last_retryable.push(EntryFailure {
                index: *index,
                code: "NoResult".to_owned(),
                message: "the service returned no result for this entry".to_owned(),
                retryable: true,
            });
        }
        pending = last_retryable.iter().map(|f| f.index).collect();
    }
    report.failed.extend(last_retryable);
    report.sort_by_index();
    report
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    fn failure(index: usize, retryable: bool) -> EntryFailure {
        EntryFailure {
            index,
            code: if retryable {
                "Throttling"
            } else {
                "InvalidParameterValue"
            }
            .to_owned(),
            message: "x".to_owned(),
            retryable,
        }
    }

    #[test]
    fn delay_ceiling_doubles_and_is_capped() {
        let policy = RetryPolicy {
            max_attempts: 10,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
        };
        let ceilings: Vec<u128> = (1..=7)
            .map(|a| policy.delay_ceiling(a).as_millis())
            .collect();
        assert_eq!(ceilings, [0, 100, 200, 400, 800, 1000, 1000]);
        for attempt in 2..=7 {
            assert!(policy.delay(attempt) <= policy.delay_ceiling(attempt));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_only_the_failed_entries_with_backoff() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let policy = RetryPolicy {
            max_attempts: 4,
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(10),
        };
        let started = tokio::time::Instant::now();
        let seen = Arc::clone(&calls);
        let report = retry_failed_entries(&policy, vec![0, 1, 2, 3], move |indices: Vec<usize>| {
            let seen = Arc::clone(&seen);
            async move {
                let call = {
                    let mut calls = seen.lock().expect("not poisoned");
                    calls.push(indices.clone());
                    calls.len()
                };
                let mut outcome = EntryReport::default();
                for index in indices {
                    match (call, index) {
                        // 1 always throttled, 2 bad input, 3 throttled once then fine
                        (_, 1) => outcome.failed.push(failure(1, true)),
                        (_, 2) => outcome.failed.push(failure(2, false)),
                        (1, 3) => outcome.failed.push(failure(3, true)),
                        (_, i) => outcome.succeeded.push((i, format!("id-{i}"))),
                    }
                }
                outcome
            }
        })
        .await;
        assert_eq!(
            *calls.lock().expect("not poisoned"),
            vec![vec![0, 1, 2, 3], vec![1, 3], vec![1], vec![1]]
        );
        assert_eq!(
            report.succeeded,
            vec![(0, "id-0".to_owned()), (3, "id-3".to_owned())]
        );
        let failed: Vec<(usize, bool)> = report
            .failed
            .iter()
            .map(|f| (f.index, f.retryable))
            .collect();
        assert_eq!(failed, vec![(1, true), (2, false)]);
        // Three backoff sleeps, each at most its ceiling: 1 s + 2 s + 4 s.
        assert!(
            started.elapsed() <= Duration::from_secs(7),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_unanswered_entry_is_never_reported_as_succeeded() {
        let policy = RetryPolicy {
            max_attempts: 2,
            ..RetryPolicy::default()
        };
        let report: EntryReport<()> =
            retry_failed_entries(&policy, vec![0, 1], |indices: Vec<usize>| async move {
                EntryReport {
                    succeeded: indices
                        .into_iter()
                        .filter(|i| *i == 0)
                        .map(|i| (i, ()))
                        .collect(),
                    failed: Vec::new(),
                }
            })
            .await;
        assert_eq!(report.succeeded, vec![(0, ())]);
        assert_eq!(report.failed.len(), 1);
        assert_eq!(
            (report.failed[0].index, report.failed[0].code.as_str()),
            (1, "NoResult")
        );
    }
}
