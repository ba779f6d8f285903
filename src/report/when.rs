//! Times in the report: the `ts` of a record and the `--since`/`--until` bounds, as
//! milliseconds since the Unix epoch (UTC), and the buckets of the over-time series.

use crate::time::{civil_from_days, days_from_civil};

/// Milliseconds in an hour and in a day.
pub(crate) const HOUR_MS: i64 = 3_600_000;
/// Milliseconds in a day.
pub(crate) const DAY_MS: i64 = 86_400_000;

/// Parse RFC 3339 (`2026-11-23T11:00:00.123Z`, `2026-11-23 11:00:00+01:00`, fraction
/// optional) or a bare date (`2026-11-23`, midnight UTC) to Unix milliseconds.
pub(crate) fn parse_millis(text: &str) -> Option<i64> {
    let t = text.trim().as_bytes();
    let date = t.get(..10)?;
    let day = parse_day(date)?;
    if t.len() == 10 {
        return Some(day * DAY_MS);
    }
    if !matches!(t.get(10)?, b'T' | b't' | b' ') {
        return None;
    }
    let num = |i: usize, n: usize| -> Option<i64> {
        let s = t.get(i..i + n)?;
        s.iter()
            .all(u8::is_ascii_digit)
            .then(|| s.iter().fold(0i64, |a, d| a * 10 + i64::from(d - b'0')))
    };
    let (h, m, s) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if t.get(13) != Some(&b':') || t.get(16) != Some(&b':') || h > 23 || m > 59 || s > 60 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0i64;
    if t.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while t.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 3 {
                millis = millis * 10 + i64::from(t[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        for _ in (i - start)..3 {
            millis *= 10;
        }
    }
    let offset_min = match t.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (oh, om) = (num(i + 1, 2)?, num(i + 4, 2)?);
            let o = oh * 60 + om;
            if *sign == b'-' { -o } else { o }
        }
        _ => return None,
    };
    Some(day * DAY_MS + ((h * 60 + m - offset_min) * 60 + s) * 1000 + millis)
}

/// `YYYY-MM-DD` as days since the epoch.
fn parse_day(d: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(d).ok()?;
    if d.get(4) != Some(&b'-') || d.get(7) != Some(&b'-') {
        return None;
    }
    let y: i64 = s.get(0..4)?.parse().ok()?;
    let m: u32 = s.get(5..7)?.parse().ok()?;
    let dd: u32 = s.get(8..10)?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&dd) {
        return None;
    }
    let days = days_from_civil(y, m, dd);
    (civil_from_days(days) == (y, m, dd)).then_some(days)
}

/// Unix milliseconds as `YYYY-MM-DDTHH:MMZ` (bucket starts) or, with `seconds`, as
/// `YYYY-MM-DDTHH:MM:SSZ`.
pub(crate) fn format_millis(ms: i64, seconds: bool) -> String {
    let days = ms.div_euclid(DAY_MS);
    let of_day = ms.rem_euclid(DAY_MS) / 1000;
    let (y, mo, d) = civil_from_days(days);
    let (h, mi, s) = (of_day / 3600, of_day / 60 % 60, of_day % 60);
    if seconds {
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
    } else {
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}Z")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_stamps_dates_and_offsets_parse_to_the_same_instant() {
        let base = parse_millis("2026-11-23T11:00:00.123Z").expect("stamp");
        assert_eq!(format_millis(base, true), "2026-11-23T11:00:00Z");
        assert_eq!(base % 1000, 123);
        assert_eq!(parse_millis("2026-11-23T12:00:00.123+01:00"), Some(base));
        assert_eq!(parse_millis("2026-11-23 11:00:00.1234Z"), Some(base));
        assert_eq!(parse_millis("2026-11-23T11:00:00Z"), Some(base - 123));
        assert_eq!(parse_millis("2026-11-23"), Some(base - 123 - 11 * HOUR_MS));
    }

    #[test]
    fn malformed_times_are_refused() {
        for bad in [
            "",
            "2026-13-01",
            "2026-02-30",
            "2026-11-23T25:00:00Z",
            "2026-11-23T11:00:00",
            "2026-11-23T11:00:00.Z",
            "yesterday",
            "2026-11-23T11:00:00+1",
        ] {
            assert_eq!(parse_millis(bad), None, "{bad:?}");
        }
    }
}
