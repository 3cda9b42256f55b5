//! Checks a JSON record against a dataset's columns before it is queued: an object, every
//! required column present and not null, every value of a kind and form its column's
//! type accepts. The stream Lambda quarantines what fails here, so a wrong type never
//! reaches the work queue; the processor's typing stays the final word (a value that
//! passes here but not there lands in the rejects table).
//!
//! The rules follow the processor's: strings, numbers and booleans are read as their
//! text, so `"42"` is a valid int64 and `42` a valid string; nested values are only valid
//! for string columns (stored as JSON text). Fields the catalog does not name are ignored.

use arrow_schema::DataType;
use serde_json::Value;

use crate::catalog::{Dataset, type_label};

/// Why a record does not fit its dataset: the first problem found, naming the column.
pub fn validate_record(dataset: &Dataset, record: &Value) -> Result<(), String> {
    let Value::Object(object) = record else {
        return Err(format!("expected a JSON object, found {}", kind(record)));
    };
    for column in &dataset.columns {
        let value = object.get(&column.name).filter(|v| !v.is_null());
        let Some(value) = value else {
            if column.nullable {
                continue;
            }
            return Err(format!(
                "column {}: required, but missing or null",
                column.name
            ));
        };
        check_value(&column.data_type, value).map_err(|why| {
            format!(
                "column {}: expected {}, found {why}",
                column.name,
                type_label(&column.data_type)
            )
        })?;
    }
    Ok(())
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The value as text, the way the processor reads it; `None` for nested values.
fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(_) | Value::Bool(_) => Some(value.to_string()),
        _ => None,
    }
}

fn check_value(data_type: &DataType, value: &Value) -> Result<(), String> {
    if *data_type == DataType::Utf8 {
        return Ok(());
    }
    let Some(text) = text(value) else {
        return Err(kind(value).to_owned());
    };
    let text = text.trim();
    let valid = match data_type {
        DataType::Boolean => matches!(
            text.to_ascii_lowercase().as_str(),
            "true" | "false" | "t" | "f" | "1" | "0" | "yes" | "no"
        ),
        DataType::Int16 => text.parse::<i16>().is_ok(),
        DataType::Int32 => text.parse::<i32>().is_ok(),
        DataType::Int64 => text.parse::<i64>().is_ok(),
        DataType::Float32 | DataType::Float64 => text.parse::<f64>().is_ok(),
        DataType::Decimal128(precision, scale) => is_decimal(text, *precision, *scale),
        DataType::Date32 => is_date(text),
        DataType::Timestamp(_, _) => is_timestamp(text),
        // Types the catalog cannot declare: leave them to the processor.
        _ => true,
    };
    if valid {
        Ok(())
    } else {
        Err(format!("{:?}", truncated(text)))
    }
}

fn truncated(text: &str) -> String {
    match text.char_indices().nth(64) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// `-123.45`: digits that fit `precision` with at most `scale` after the point.
fn is_decimal(text: &str, precision: u8, scale: i8) -> bool {
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    let scale = usize::try_from(scale.max(0)).unwrap_or(0);
    let whole_digits = whole.trim_start_matches('0').len();
    !(whole.is_empty() && fraction.is_empty())
        && digits(whole)
        && digits(fraction)
        && fraction.len() <= scale
        && whole_digits + scale <= usize::from(precision)
}

/// `YYYY-MM-DD` with a real month and day.
fn is_date(text: &str) -> bool {
    let bytes = text.as_bytes();
    if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return false;
    }
    let number = |range: std::ops::Range<usize>| text.get(range)?.parse::<u32>().ok();
    let (Some(year), Some(month), Some(day)) = (number(0..4), number(5..7), number(8..10)) else {
        return false;
    };
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&day)
}

/// A date, optionally followed by `T` or a space and `HH:MM[:SS[.fraction]]`, and a zone
/// (`Z` or `±HH:MM`).
fn is_timestamp(text: &str) -> bool {
    let Some(date) = text.get(..10) else {
        return false;
    };
    if !is_date(date) {
        return false;
    }
    let rest = &text[10..];
    if rest.is_empty() {
        return true;
    }
    let Some(time) = rest.strip_prefix(['T', ' ']) else {
        return false;
    };
    let (clock, zone) = match time.find(['Z', '+', '-']) {
        Some(at) => time.split_at(at),
        None => (time, ""),
    };
    let zone_ok = zone.is_empty()
        || zone == "Z"
        || (zone.len() == 6
            && zone.as_bytes()[3] == b':'
            && zone[1..3].parse::<u32>().is_ok_and(|h| h <= 14)
            && zone[4..6].parse::<u32>().is_ok_and(|m| m < 60));
    let (hms, fraction) = clock.split_once('.').unwrap_or((clock, "0"));
    let parts: Vec<&str> = hms.split(':').collect();
    let in_range =
        |part: &str, max: u32| part.len() == 2 && part.parse::<u32>().is_ok_and(|n| n <= max);
    let clock_ok = matches!(parts.as_slice(), [h, m] if in_range(h, 23) && in_range(m, 59))
        || matches!(parts.as_slice(), [h, m, s] if in_range(h, 23) && in_range(m, 59) && in_range(s, 60));
    zone_ok && clock_ok && !fraction.is_empty() && fraction.chars().all(|c| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;
    use serde_json::json;

    fn dataset() -> Dataset {
        let text = r#"
[datasets.events]
target = "s.events"
stream = { name = "s" }
columns = [
  { name = "event_id", type = "string", nullable = false },
  { name = "order_id", type = "int64", nullable = false },
  { name = "amount", type = "decimal(6,2)" },
  { name = "paid", type = "boolean" },
  { name = "day", type = "date" },
  { name = "at", type = "timestamptz" },
  { name = "small", type = "int16" },
]
"#;
        Catalog::from_toml(text, "t")
            .expect("valid")
            .get("events")
            .expect("present")
            .clone()
    }

    #[test]
    fn valid_records_pass_whatever_their_json_kinds() {
        let dataset = dataset();
        for record in [
            json!({"event_id": "e1", "order_id": 7}),
            json!({"event_id": 1, "order_id": "7", "amount": "1234.50", "paid": true,
                   "day": "2024-02-29", "at": "2026-11-24T10:00:00.123Z", "small": -3, "extra": [1]}),
            json!({"event_id": {"nested": true}, "order_id": 7, "amount": 12.5,
                   "at": "2026-11-24 10:00:00+01:00", "day": null}),
        ] {
            assert_eq!(validate_record(&dataset, &record), Ok(()), "{record}");
        }
    }

    #[test]
    fn each_problem_names_its_column() {
        let dataset = dataset();
        let cases = [
            (json!([1]), "expected a JSON object, found an array"),
            (
                json!({"order_id": 1}),
                "column event_id: required, but missing or null",
            ),
            (
                json!({"event_id": "e", "order_id": null}),
                "column order_id: required, but missing or null",
            ),
            (
                json!({"event_id": "e", "order_id": "seven"}),
                "column order_id: expected int64, found \"seven\"",
            ),
            (
                json!({"event_id": "e", "order_id": 1.5}),
                "column order_id: expected int64, found \"1.5\"",
            ),
            (
                json!({"event_id": "e", "order_id": [1]}),
                "column order_id: expected int64, found an array",
            ),
            (
                json!({"event_id": "e", "order_id": 1, "amount": "12345.6"}),
                "column amount: expected decimal(6,2), found \"12345.6\"",
            ),
            (
                json!({"event_id": "e", "order_id": 1, "amount": "1.234"}),
                "column amount: expected decimal(6,2), found \"1.234\"",
            ),
            (
                json!({"event_id": "e", "order_id": 1, "day": "2023-02-29"}),
                "column day: expected date, found \"2023-02-29\"",
            ),
            (
                json!({"event_id": "e", "order_id": 1, "at": "2026-11-24T25:00:00Z"}),
                "column at: expected timestamptz, found \"2026-11-24T25:00:00Z\"",
            ),
            (
                json!({"event_id": "e", "order_id": 1, "small": 40000}),
                "column small: expected int16, found \"40000\"",
            ),
            (
                json!({"event_id": "e", "order_id": 1, "paid": "maybe"}),
                "column paid: expected boolean, found \"maybe\"",
            ),
        ];
        for (record, expected) in cases {
            assert_eq!(
                validate_record(&dataset, &record),
                Err(expected.to_owned()),
                "{record}"
            );
        }
    }
}
