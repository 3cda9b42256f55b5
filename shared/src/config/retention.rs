//! `[retention]`: how long the platform tables keep their rows (`processor prune`).

use std::time::Duration;

use crate::toml_walk::{Fields, Issues};

/// The shortest ledger retention accepted, in days. The ledger is what makes a load
/// idempotent: an item that comes back after its ledger row is gone loads again. Items come
/// back through the work queue (up to 14 days), the dead-letter queue and redrive, replays
/// of a stream's retention (up to 365 days) and backfills.
pub const MIN_LEDGER_RETENTION_DAYS: i64 = 400;

const DAY: Duration = Duration::from_secs(86_400);

/// How long each platform table keeps a row; `None` keeps it for ever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionSettings {
    /// Rejected rows, by `rejected_at`.
    pub rejects: Option<Duration>,
    /// Progress rows of completed files, by `completed_at` (a file still missing parts is
    /// kept: it is something to look into).
    pub file_loads: Option<Duration>,
    /// Ledger rows, by `loaded_at`.
    pub ledger: Option<Duration>,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            rejects: Some(90 * DAY),
            file_loads: Some(90 * DAY),
            ledger: None,
        }
    }
}

/// Whole days; 0 keeps rows for ever.
fn days(value: i64) -> Option<Duration> {
    (value > 0).then(|| Duration::from_secs(value.unsigned_abs() * DAY.as_secs()))
}

pub(super) fn read_retention(mut section: Fields<'_>, issues: &mut Issues) -> RetentionSettings {
    let mut retention = RetentionSettings::default();
    if let Some(n) = section.integer_in("rejects_days", 0..=36_500, issues) {
        retention.rejects = days(n);
    }
    if let Some(n) = section.integer_in("file_loads_days", 0..=36_500, issues) {
        retention.file_loads = days(n);
    }
    if let Some(n) = section.integer_in("ledger_days", 0..=36_500, issues) {
        if n > 0 && n < MIN_LEDGER_RETENTION_DAYS {
            issues.push(
                section.path_of("ledger_days"),
                format!(
                    "{n} days is too short: an item that comes back after its ledger row is gone loads again (stream replays reach 365 days back); use at least {MIN_LEDGER_RETENTION_DAYS}, or 0 to keep the ledger for ever"
                ),
            );
        } else {
            retention.ledger = days(n);
        }
    }
    section.finish(issues);
    retention
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigError, PlatformConfig};

    fn parse(text: &str) -> Result<PlatformConfig, ConfigError> {
        PlatformConfig::from_toml(text, "test", Vec::<(String, String)>::new())
    }

    #[test]
    fn retention_keeps_the_ledger_unless_asked_and_refuses_a_short_one() {
        let config = parse("").expect("valid");
        assert_eq!(config.retention, RetentionSettings::default());
        assert_eq!(config.retention.ledger, None);
        let config =
            parse("[retention]\nrejects_days = 0\nfile_loads_days = 7\nledger_days = 730\n")
                .expect("valid");
        assert_eq!(config.retention.rejects, None);
        assert_eq!(config.retention.file_loads, Some(7 * DAY));
        assert_eq!(config.retention.ledger, Some(730 * DAY));
        let Err(ConfigError::Invalid { issues, .. }) =
            parse("[retention]\nledger_days = 30\nrejects_days = -1\n")
        else {
            panic!("a 30-day ledger is refused");
        };
        let issues: Vec<String> = issues.iter().map(ToString::to_string).collect();
        assert_eq!(issues.len(), 2, "{issues:?}");
        assert!(
            issues
                .iter()
                .any(|i| i.starts_with("retention.ledger_days: 30 days is too short")),
            "{issues:?}"
        );
        assert!(
            issues
                .iter()
                .any(|i| i.starts_with("retention.rejects_days: -1 is out of range")),
            "{issues:?}"
        );
    }
}
