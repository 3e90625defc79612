//! Timestamps and durations, without a date library.
//!
//! Timestamps are RFC 3339 in UTC, to the second, and nothing else: `YYYY-MM-DDTHH:MM:SSZ`
//! (years 0001-9999, no fractions, no offsets other than `Z`, no leap second). They are held as
//! i64 unix seconds. Durations are one or more `<number><unit>` parts with units `s`, `m`, `h`,
//! `d` (e.g. `30d`, `1d12h`, `90m`), held as u64 seconds.

use std::fmt;

/// Why a timestamp or duration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    #[error("expected a UTC timestamp like \"2025-06-01T12:00:00Z\", found {0:?}")]
    Format(String),
    #[error("{0:?} is not a valid date or time of day")]
    Range(String),
    #[error("expected a duration like \"30d\", \"12h\", \"90m\" or \"1d12h\", found {0:?}")]
    Duration(String),
    #[error("duration {0:?} must be greater than zero")]
    ZeroDuration(String),
    #[error("duration {0:?} is too long")]
    DurationOverflow(String),
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(y) => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn digits(s: &[u8]) -> Option<i64> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0i64, |acc, b| acc * 10 + i64::from(b - b'0')))
}

/// Parses `YYYY-MM-DDTHH:MM:SSZ` into unix seconds.
pub fn parse_rfc3339_utc(s: &str) -> Result<i64, TimeError> {
    let b = s.as_bytes();
    let shape_ok = b.len() == 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'Z';
    if !shape_ok {
        return Err(TimeError::Format(s.to_string()));
    }
    let field = |r: std::ops::Range<usize>| b.get(r).and_then(digits).ok_or_else(|| TimeError::Format(s.to_string()));
    let (y, mo, d) = (field(0..4)?, field(5..7)?, field(8..10)?);
    let (h, mi, se) = (field(11..13)?, field(14..16)?, field(17..19)?);
    let valid = y >= 1 && (1..=12).contains(&mo) && d >= 1 && d <= days_in_month(y, mo) && h < 24 && mi < 60 && se < 60;
    if !valid {
        return Err(TimeError::Range(s.to_string()));
    }
    Ok(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se)
}

/// Formats unix seconds as `YYYY-MM-DDTHH:MM:SSZ`. Out-of-range values are clamped to
/// 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z.
pub fn format_rfc3339_utc(unix: i64) -> String {
    let min = days_from_civil(1, 1, 1) * 86_400;
    let max = days_from_civil(9999, 12, 31) * 86_400 + 86_399;
    let t = unix.clamp(min, max);
    let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs % 3600 / 60, secs % 60)
}

/// A unix timestamp in seconds that prints as RFC 3339.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn parse(s: &str) -> Result<Self, TimeError> {
        parse_rfc3339_utc(s).map(Timestamp)
    }

    pub fn unix(self) -> i64 {
        self.0
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_rfc3339_utc(self.0))
    }
}

/// Parses a duration like `30d`, `12h`, `90m`, `45s` or `1d12h` into seconds (greater than zero).
pub fn parse_duration(s: &str) -> Result<u64, TimeError> {
    let bad = || TimeError::Duration(s.to_string());
    let overflow = || TimeError::DurationOverflow(s.to_string());
    let mut total: u64 = 0;
    let mut number: Option<u64> = None;
    for c in s.chars() {
        if let Some(d) = c.to_digit(10) {
            let n = number.unwrap_or(0);
            number = Some(n.checked_mul(10).and_then(|n| n.checked_add(u64::from(d))).ok_or_else(overflow)?);
            continue;
        }
        let unit: u64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let n = number.take().ok_or_else(bad)?;
        let part = n.checked_mul(unit).ok_or_else(overflow)?;
        total = total.checked_add(part).ok_or_else(overflow)?;
    }
    if number.is_some() || s.is_empty() {
        // A trailing number without a unit, or nothing at all.
        return Err(bad());
    }
    if total == 0 {
        return Err(TimeError::ZeroDuration(s.to_string()));
    }
    Ok(total)
}

/// Formats seconds as the shortest duration text that [`parse_duration`] reads back.
pub fn format_duration(secs: u64) -> String {
    if secs == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    let mut rest = secs;
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if rest >= size {
            out.push_str(&format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_timestamps() {
        assert_eq!(parse_rfc3339_utc("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_rfc3339_utc("2000-03-01T00:00:00Z"), Ok(951_868_800));
        assert_eq!(parse_rfc3339_utc("2024-02-29T23:59:59Z"), Ok(1_709_251_199));
        assert_eq!(parse_rfc3339_utc("1969-12-31T23:59:59Z"), Ok(-1));
        assert_eq!(format_rfc3339_utc(1_709_251_199), "2024-02-29T23:59:59Z");
    }

    #[test]
    fn round_trip_over_many_days() {
        let mut t = parse_rfc3339_utc("1899-12-30T01:02:03Z").unwrap();
        for _ in 0..2000 {
            let s = format_rfc3339_utc(t);
            assert_eq!(parse_rfc3339_utc(&s), Ok(t), "{s}");
            t += 86_400 * 37 + 3_599;
        }
    }

    #[test]
    fn strictness() {
        for bad in [
            "2025-01-01T00:00:00+00:00",
            "2025-01-01 00:00:00Z",
            "2025-01-01T00:00:00.5Z",
            "2025-1-01T00:00:00Z",
            "2025-01-01t00:00:00z",
            "",
            "２025-01-01T00:00:00Z",
        ] {
            assert!(matches!(parse_rfc3339_utc(bad), Err(TimeError::Format(_))), "{bad}");
        }
        for bad in [
            "2025-02-29T00:00:00Z",
            "2025-13-01T00:00:00Z",
            "2025-00-01T00:00:00Z",
            "2025-01-01T24:00:00Z",
            "2025-01-01T00:60:00Z",
            "2025-06-30T23:59:60Z",
            "0000-01-01T00:00:00Z",
        ] {
            assert!(matches!(parse_rfc3339_utc(bad), Err(TimeError::Range(_))), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30d"), Ok(30 * 86_400));
        assert_eq!(parse_duration("1d12h"), Ok(129_600));
        assert_eq!(parse_duration("90m"), Ok(5400));
        assert_eq!(parse_duration("45s"), Ok(45));
        for bad in ["", "30", "d", "3x", "1.5h", "-1d", " 1d"] {
            assert!(matches!(parse_duration(bad), Err(TimeError::Duration(_))), "{bad}");
        }
        assert!(matches!(parse_duration("0d"), Err(TimeError::ZeroDuration(_))));
        assert!(matches!(parse_duration("99999999999999999999d"), Err(TimeError::DurationOverflow(_))));
        assert_eq!(format_duration(129_600), "1d12h");
        assert_eq!(parse_duration(&format_duration(93_784)), Ok(93_784));
    }
}
