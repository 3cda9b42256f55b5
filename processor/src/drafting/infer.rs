//! A column's catalog type from the text of its sampled values: the narrowest type every
//! value converts to by the rule a load uses (`pipeline::typing::cast_cells`), with room to
//! grow, and what was seen, for the draft's comment.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, StringArray};
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use shared::catalog::type_label;

use crate::pipeline::typing::cast_cells;

/// Redshift's default `VARCHAR` length, the catalog's default `max_length`.
const DEFAULT_MAX_LENGTH: usize = 256;
/// The longest `VARCHAR` Redshift has.
const MAX_VARCHAR: usize = 65_535;
/// Integers whose sampled magnitude is below this are drafted `int32` (a thousandfold
/// below its limit, room for the values to grow); larger ones `int64`.
const INT32_HEADROOM: i64 = 2_000_000;

/// What a column's sample suggests.
#[derive(Debug, Clone, PartialEq)]
pub struct Inferred {
    pub data_type: DataType,
    pub nullable: bool,
    /// For strings longer than the default: the `max_length` to declare.
    pub max_length: Option<u32>,
    /// What the sample showed, in a few words.
    pub seen: String,
}

impl Inferred {
    pub fn type_label(&self) -> String {
        type_label(&self.data_type)
    }
}

/// The type of a column whose sampled cells are `cells` (`None`: empty or missing).
pub fn infer_column(cells: &[Option<String>]) -> Inferred {
    let values: Vec<&str> = cells
        .iter()
        .flatten()
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
        .collect();
    let empty = cells.len() - values.len();
    let nullable = empty > 0 || cells.is_empty();
    let presence = if empty == 0 {
        format!("a value in all {} sampled rows", cells.len())
    } else {
        format!("empty in {empty} of {} sampled rows", cells.len())
    };
    if values.is_empty() {
        return Inferred {
            data_type: DataType::Utf8,
            nullable: true,
            max_length: None,
            seen: format!("no value in {} sampled rows: typed as text", cells.len()),
        };
    }
    let (data_type, what) = numeric(&values)
        .or_else(|| boolean(&values))
        .or_else(|| temporal(&values))
        .unwrap_or_else(|| (DataType::Utf8, text_seen(&values)));
    let max_length = (data_type == DataType::Utf8)
        .then(|| longest(&values))
        .filter(|&longest| longest > DEFAULT_MAX_LENGTH)
        .map(|longest| u32::try_from((longest * 2).min(MAX_VARCHAR)).unwrap_or(u32::MAX));
    Inferred {
        data_type,
        nullable,
        max_length,
        seen: format!("{what}; {presence}"),
    }
}

/// Whether every value converts to `to` as a load converts it.
fn converts(values: &[&str], to: &DataType) -> bool {
    let source: ArrayRef = Arc::new(StringArray::from_iter_values(values.iter().copied()));
    cast_cells(&source, to).is_ok_and(|typed| typed.null_count() == 0)
}

fn is_integer(value: &str) -> bool {
    let digits = value.strip_prefix(['-', '+']).unwrap_or(value);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Digits before and after the point of a plain decimal (`-12.50`), if it is one.
fn decimal_digits(value: &str) -> Option<(usize, usize)> {
    let unsigned = value.strip_prefix(['-', '+']).unwrap_or(value);
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    (digits(whole) && digits(fraction) && !(whole.is_empty() && fraction.is_empty()))
        .then(|| (whole.trim_start_matches('0').len(), fraction.len()))
}

/// Integers (by range), decimals (precision and scale from the text) or floats.
fn numeric(values: &[&str]) -> Option<(DataType, String)> {
    if values.iter().all(|v| is_integer(v)) {
        // Leading zeros are part of the value (postcodes, account numbers): keep them.
        if values.iter().any(|v| has_leading_zero(v)) {
            return Some((
                DataType::Utf8,
                "digits with leading zeros, kept as text".to_owned(),
            ));
        }
        let parsed: Vec<i64> = values.iter().filter_map(|v| v.parse().ok()).collect();
        if parsed.len() == values.len() {
            let (min, max) = (parsed.iter().min()?, parsed.iter().max()?);
            let magnitude = min.unsigned_abs().max(max.unsigned_abs());
            let data_type = if magnitude < INT32_HEADROOM.unsigned_abs() {
                DataType::Int32
            } else {
                DataType::Int64
            };
            return converts(values, &data_type)
                .then(|| (data_type, format!("integers from {min} to {max}")));
        }
    }
    if let Some(digits) = values
        .iter()
        .map(|v| decimal_digits(v))
        .collect::<Option<Vec<_>>>()
    {
        let whole = digits.iter().map(|d| d.0).max().unwrap_or(0);
        let scale = digits.iter().map(|d| d.1).max().unwrap_or(0);
        // Three more whole digits than seen (values a thousand times larger), at least 10.
        let precision = (whole + scale + 3).max(10);
        if precision <= 38 {
            let data_type =
                DataType::Decimal128(u8::try_from(precision).ok()?, i8::try_from(scale).ok()?);
            if converts(values, &data_type) {
                return Some((
                    data_type,
                    format!("decimals with up to {whole} whole and {scale} fraction digit(s)"),
                ));
            }
        }
    }
    let looks_numeric = values.iter().all(|v| {
        v.bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'))
    });
    (looks_numeric && converts(values, &DataType::Float64))
        .then(|| (DataType::Float64, "numbers with exponents".to_owned()))
}

fn has_leading_zero(value: &str) -> bool {
    let digits = value.strip_prefix(['-', '+']).unwrap_or(value);
    digits.len() > 1 && digits.starts_with('0')
}

/// `true`/`false` words (not 0/1, which are integers).
fn boolean(values: &[&str]) -> Option<(DataType, String)> {
    let words = ["true", "false", "t", "f", "yes", "no"];
    values
        .iter()
        .all(|v| words.contains(&v.to_ascii_lowercase().as_str()))
        .then(|| converts(values, &DataType::Boolean))
        .filter(|ok| *ok)
        .map(|_| (DataType::Boolean, "true/false values".to_owned()))
}

/// Dates (`2026-12-07`) and timestamps (`2026-12-07T10:00:00`, with a zone: timestamptz).
fn temporal(values: &[&str]) -> Option<(DataType, String)> {
    let date_like = |v: &str| {
        let b = v.as_bytes();
        b.len() >= 10
            && b[..4].iter().all(u8::is_ascii_digit)
            && b[4] == b'-'
            && b[5..7].iter().all(u8::is_ascii_digit)
            && b[7] == b'-'
            && b[8..10].iter().all(u8::is_ascii_digit)
    };
    if !values.iter().all(|v| date_like(v)) {
        return None;
    }
    if values.iter().all(|v| v.len() == 10) {
        return converts(values, &DataType::Date32)
            .then(|| (DataType::Date32, "dates (YYYY-MM-DD)".to_owned()));
    }
    let zoned = values.iter().any(|v| has_zone(v));
    let (data_type, what) = if zoned {
        (
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            "timestamps with a time zone",
        )
    } else {
        (
            DataType::Timestamp(TimeUnit::Microsecond, None),
            "timestamps without a time zone",
        )
    };
    converts(values, &data_type).then(|| (data_type, what.to_owned()))
}

/// A timestamp's text ends with `Z` or a `±hh:mm` / `±hhmm` offset.
fn has_zone(value: &str) -> bool {
    if value.ends_with(['Z', 'z']) {
        return true;
    }
    let time = value.get(10..).unwrap_or_default();
    time.rfind(['+', '-']).is_some_and(|at| {
        let offset = &time[at + 1..];
        (offset.len() == 5 && offset.as_bytes()[2] == b':') || offset.len() == 4
    })
}

fn longest(values: &[&str]) -> usize {
    values.iter().map(|v| v.len()).max().unwrap_or(0)
}

fn text_seen(values: &[&str]) -> String {
    let (shortest, longest) = (
        values.iter().map(|v| v.len()).min().unwrap_or(0),
        longest(values),
    );
    if shortest == longest {
        format!("text of {longest} bytes in every value")
    } else {
        format!("text of {shortest} to {longest} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn infer(values: &[&str]) -> Inferred {
        let cells: Vec<Option<String>> = values
            .iter()
            .map(|v| (!v.is_empty()).then(|| (*v).to_owned()))
            .collect();
        infer_column(&cells)
    }

    #[test]
    fn integers_by_range_with_room_to_grow() {
        assert_eq!(infer(&["1", "2", "300"]).data_type, DataType::Int32);
        assert_eq!(infer(&["1", "-3000000"]).data_type, DataType::Int64);
        assert_eq!(
            infer(&["1", "99999999999999999999"]).data_type,
            DataType::Decimal128(23, 0)
        );
        let zip = infer(&["01234", "98765"]);
        assert_eq!(zip.data_type, DataType::Utf8);
        assert!(zip.seen.contains("leading zeros"), "{}", zip.seen);
    }

    #[test]
    fn decimals_take_precision_and_scale_from_the_text() {
        assert_eq!(
            infer(&["9.99", "129.5", "0.125"]).data_type,
            DataType::Decimal128(10, 3)
        );
        assert_eq!(
            infer(&["123456789012.5"]).data_type,
            DataType::Decimal128(16, 1)
        );
        assert_eq!(infer(&["1e5", "2.5E-3"]).data_type, DataType::Float64);
    }

    #[test]
    fn booleans_dates_and_timestamps() {
        assert_eq!(infer(&["true", "FALSE"]).data_type, DataType::Boolean);
        assert_eq!(infer(&["0", "1"]).data_type, DataType::Int32);
        assert_eq!(
            infer(&["2024-01-02", "2026-12-31"]).data_type,
            DataType::Date32
        );
        assert_eq!(
            infer(&["2024-01-02 10:00:00", "2026-12-31T23:59:59.5"]).data_type,
            DataType::Timestamp(TimeUnit::Microsecond, None)
        );
        assert_eq!(
            infer(&["2026-11-24T10:00:00Z", "2026-11-24T10:00:00+01:00"]).data_type,
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
        assert_eq!(infer(&["2024-13-45"]).data_type, DataType::Utf8);
    }

    #[test]
    fn nullability_and_string_lengths_come_from_the_sample() {
        let sometimes = infer(&["a", "", "b"]);
        assert!(sometimes.nullable);
        assert!(
            sometimes.seen.contains("empty in 1 of 3"),
            "{}",
            sometimes.seen
        );
        assert!(!infer(&["a", "b"]).nullable);
        let long = "x".repeat(300);
        assert_eq!(infer(&[&long]).max_length, Some(600));
        assert_eq!(infer(&["short"]).max_length, None);
        let empty = infer(&["", ""]);
        assert!(empty.nullable && empty.data_type == DataType::Utf8);
    }
}
