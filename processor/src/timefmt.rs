//! UTC dates and times as ISO 8601 text, without a calendar crate.

/// `2026-11-24T10:00:00.000000Z` for microseconds since the epoch (UTC).
pub(crate) fn iso_utc_micros(micros: i64) -> String {
    let seconds = micros.div_euclid(1_000_000);
    let fraction = micros.rem_euclid(1_000_000);
    let days = seconds.div_euclid(86_400);
    let of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{fraction:06}Z",
        of_day / 3600,
        (of_day % 3600) / 60,
        of_day % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `2026-11-24T10:00:00.000Z` for milliseconds since the epoch (UTC): the form of
/// SQLite's `strftime('%Y-%m-%dT%H:%M:%fZ')`, so the two compare as text.
pub(crate) fn iso_utc_millis(millis: i64) -> String {
    let micros = iso_utc_micros(millis.saturating_mul(1000));
    format!("{}Z", &micros[..micros.len() - 4])
}

/// `2026-11-24` for a day count since 1970-01-01.
pub(crate) fn iso_date(days: i64) -> String {
    let (year, month, day) = civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_iso_8601_utc_with_microseconds() {
        assert_eq!(
            iso_utc_millis(1_795_946_400_123),
            "2026-11-29T10:00:00.123Z"
        );
        assert_eq!(iso_utc_micros(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            iso_utc_micros(1_795_946_400_123_456),
            "2026-11-29T10:00:00.123456Z"
        );
        assert_eq!(iso_utc_micros(-1), "1969-12-31T23:59:59.999999Z");
        assert_eq!(
            iso_utc_micros(951_782_400_000_000),
            "2000-02-29T00:00:00.000000Z"
        );
    }
}
