//! How many bad rows a work item may have before the whole item fails: a count, a share of
//! the rows read, or a share with a count as its floor.

use std::fmt;

use toml::Value;

use super::{Fields, Issues};

/// The limit applied when a dataset names none: 1 % of the rows read, and never fewer than
/// 1,000 rows, so a large file with a few bad rows loads as its parts would, and a small
/// stream item with one bad record loads its good ones.
pub const DEFAULT_REJECT_LIMIT: RejectLimit = RejectLimit {
    rows: 1000,
    share_ppm: Some(10_000),
};

/// The most rejected rows a share limit lets one work item hold (they wait in memory until
/// the item loads); a count above it raises it.
pub const MAX_HELD_REJECTS: u64 = 100_000;

const FORMS: &str = "expected a count (1000), a share (\"2%\") or both (\"2% or 1000\")";

/// Rejected rows allowed per work item: `rows`, or `share` of the rows read if that is more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RejectLimit {
    /// Rejects always allowed (the only bound when there is no share).
    pub rows: u64,
    /// The share of the rows read, in millionths (1 % = 10,000).
    pub share_ppm: Option<u32>,
}

impl RejectLimit {
    /// Whether `rejected` rows out of `read` are over the limit.
    pub fn exceeded(&self, rejected: u64, read: u64) -> bool {
        rejected > self.allowed(read)
    }

    /// Whether `rejected` is over the limit whatever is read after: a count limit fails an
    /// item as soon as it is passed; a share once the item is read to its end, or as soon as
    /// more than [`MAX_HELD_REJECTS`] (and its count) are rejected, since an item's rejects are
    /// held until it loads.
    pub fn exceeded_already(&self, rejected: u64) -> bool {
        match self.share_ppm {
            None => rejected > self.rows,
            Some(_) => rejected > self.rows.max(MAX_HELD_REJECTS),
        }
    }

    /// The rejects allowed among `read` rows.
    pub fn allowed(&self, read: u64) -> u64 {
        let share = self.share_ppm.map_or(0, |ppm| {
            u64::try_from(u128::from(read) * u128::from(ppm) / 1_000_000).unwrap_or(u64::MAX)
        });
        share.max(self.rows)
    }

    /// Reads `reject_limit` from a dataset table.
    pub(crate) fn read(fields: &mut Fields<'_>, issues: &mut Issues) -> Option<Self> {
        let path = fields.path_of("reject_limit");
        match fields.value("reject_limit")? {
            Value::Integer(n) => match u64::try_from(*n) {
                Ok(rows) => Some(Self {
                    rows,
                    share_ppm: None,
                }),
                Err(_) => {
                    issues.push(path, format!("{n} is negative; {FORMS}"));
                    None
                }
            },
            Value::String(text) => match Self::parse(text) {
                Ok(limit) => Some(limit),
                Err(why) => {
                    issues.push(path, format!("{text:?} {why}; {FORMS}"));
                    None
                }
            },
            other => {
                issues.push(path, format!("found {}; {FORMS}", super::type_name(other)));
                None
            }
        }
    }

    /// `"1000"`, `"2%"`, `"0.5%"` or `"2% or 1000"`.
    fn parse(text: &str) -> Result<Self, &'static str> {
        let (share, rows) = match text.split_once(" or ") {
            Some((share, rows)) => (Some(share.trim()), Some(rows.trim())),
            None if text.trim().ends_with('%') => (Some(text.trim()), None),
            None => (None, Some(text.trim())),
        };
        let rows = match rows {
            Some(rows) => rows.parse::<u64>().map_err(|_| "has no valid count")?,
            None => 0,
        };
        let share_ppm = share.map(parse_share).transpose()?;
        Ok(Self { rows, share_ppm })
    }
}

/// `"2%"` or `"0.25%"` as millionths, at most 100 %.
fn parse_share(text: &str) -> Result<u32, &'static str> {
    let number = text
        .strip_suffix('%')
        .ok_or("has a share without '%'")?
        .trim();
    let percent: f64 = number.parse().map_err(|_| "has no valid share")?;
    if !(0.0..=100.0).contains(&percent) {
        return Err("has a share outside 0% to 100%");
    }
    // At most 1,000,000, so the conversion cannot truncate.
    Ok((percent * 10_000.0).round() as u32)
}

impl fmt::Display for RejectLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.share_ppm {
            None => write!(f, "{} rows", self.rows),
            Some(ppm) => {
                write!(f, "{}%", f64::from(ppm) / 10_000.0)?;
                if self.rows > 0 {
                    write!(f, " or {} rows", self.rows)?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(rows: u64, share_ppm: Option<u32>) -> RejectLimit {
        RejectLimit { rows, share_ppm }
    }

    #[test]
    fn reads_counts_shares_and_both() {
        assert_eq!(RejectLimit::parse("250"), Ok(limit(250, None)));
        assert_eq!(RejectLimit::parse("2%"), Ok(limit(0, Some(20_000))));
        assert_eq!(RejectLimit::parse("0.5%"), Ok(limit(0, Some(5_000))));
        assert_eq!(
            RejectLimit::parse("2% or 100"),
            Ok(limit(100, Some(20_000)))
        );
        assert!(RejectLimit::parse("101%").is_err());
        assert!(RejectLimit::parse("two%").is_err());
        assert!(RejectLimit::parse("2 or 100").is_err());
        assert!(RejectLimit::parse("2% or many").is_err());
    }

    #[test]
    fn a_share_scales_with_the_rows_read_and_the_count_is_its_floor() {
        // 270,000 rows with 2,498 bad ones: over 1,000 rows, within 1 %.
        assert!(limit(1000, None).exceeded(2498, 270_000));
        assert!(!DEFAULT_REJECT_LIMIT.exceeded(2498, 270_000));
        assert!(DEFAULT_REJECT_LIMIT.exceeded(2701, 270_000));
        // One bad record of five: the floor keeps the four good ones.
        assert!(!DEFAULT_REJECT_LIMIT.exceeded(1, 5));
        assert!(limit(0, Some(20_000)).exceeded(1, 5));
        assert!(limit(3, None).exceeded_already(4));
        assert!(!DEFAULT_REJECT_LIMIT.exceeded_already(MAX_HELD_REJECTS));
        assert!(DEFAULT_REJECT_LIMIT.exceeded_already(MAX_HELD_REJECTS + 1));
        assert!(!limit(500_000, Some(10_000)).exceeded_already(MAX_HELD_REJECTS + 1));
    }

    #[test]
    fn displays_as_written() {
        assert_eq!(DEFAULT_REJECT_LIMIT.to_string(), "1% or 1000 rows");
        assert_eq!(limit(0, Some(2_500)).to_string(), "0.25%");
        assert_eq!(limit(7, None).to_string(), "7 rows");
    }
}
