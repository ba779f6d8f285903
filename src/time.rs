//! Calendar arithmetic for timestamps, without a date crate: RFC 3339 text for audit records,
//! certificate validity and GeoIP build dates. One copy, used everywhere.

use std::time::{SystemTime, UNIX_EPOCH};

/// The current time as RFC 3339 UTC with milliseconds, e.g. `2026-11-23T11:00:00.123Z`.
pub fn now_rfc3339() -> String {
    format_rfc3339_millis(SystemTime::now())
}

/// Format `t` as RFC 3339 UTC with milliseconds (`YYYY-MM-DDTHH:MM:SS.mmmZ`).
///
/// Times before 1970 are handled; the millisecond part is truncated, not rounded.
pub fn format_rfc3339_millis(t: SystemTime) -> String {
    let millis: i64 = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        // Before the epoch: floor towards the past so the millisecond field stays positive.
        Err(e) => {
            let d = e.duration();
            let whole = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
            let has_fraction = d.as_nanos() % 1_000_000 != 0;
            -whole - i64::from(has_fraction)
        }
    };
    let days = millis.div_euclid(86_400_000);
    let ms_of_day = millis.rem_euclid(86_400_000);
    // Every audit record is stamped, many within one second: the text up to the seconds is
    // kept per thread and only the milliseconds are written each time.
    let whole_secs = millis.div_euclid(1000);
    let cached = SECOND
        .try_with(|c| {
            let mut c = c.try_borrow_mut().ok()?;
            if c.0 != Some(whole_secs) {
                c.0 = None;
                c.1.clear();
                if !second_text(&mut c.1, days, ms_of_day / 1000) {
                    return None;
                }
                c.0 = Some(whole_secs);
            }
            let mut out = String::with_capacity(24);
            out.push_str(&c.1);
            out.push('.');
            push_digits(&mut out, (ms_of_day % 1000) as u32, 3);
            out.push('Z');
            Some(out)
        })
        .ok()
        .flatten();
    if let Some(out) = cached {
        return out;
    }
    let (year, month, day) = civil_from_days(days);
    let secs = ms_of_day / 1000;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        ms_of_day % 1000
    )
}

thread_local! {
    /// The second last formatted on this thread and its text up to the seconds.
    static SECOND: std::cell::RefCell<(Option<i64>, String)> =
        const { std::cell::RefCell::new((None, String::new())) };
}

/// `YYYY-MM-DDTHH:MM:SS` of day `days` since the epoch and second `secs` of it into `out`;
/// false (nothing written) for a year outside 0..=9999.
fn second_text(out: &mut String, days: i64, secs: i64) -> bool {
    let (year, month, day) = civil_from_days(days);
    let Ok(y @ 0..=9999) = u32::try_from(year) else {
        return false;
    };
    let secs = secs as u32;
    let fields = [
        (y, 4),
        (month, 2),
        (day, 2),
        (secs / 3600, 2),
        (secs / 60 % 60, 2),
        (secs % 60, 2),
    ];
    for ((value, width), sep) in fields.into_iter().zip(["-", "-", "T", ":", ":", ""]) {
        push_digits(out, value, width);
        out.push_str(sep);
    }
    true
}

/// Append `value` as exactly `width` decimal digits (zero-padded; `value < 10^width`).
fn push_digits(out: &mut String, value: u32, width: u32) {
    for i in (0..width).rev() {
        let digit = value / 10u32.pow(i) % 10;
        out.push(char::from(b'0' + digit as u8));
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A proleptic Gregorian date to days since 1970-01-01 (the inverse of [`civil_from_days`]).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD` as Unix seconds at midnight UTC, or `None` if it is not such a date.
pub fn parse_date(text: &str) -> Option<u64> {
    let mut parts = text.trim().splitn(3, '-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: u32 = parts.next()?.parse().ok()?;
    let d: u32 = parts.next()?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let days = days_from_civil(y, m, d);
    (civil_from_days(days) == (y, m, d))
        .then(|| u64::try_from(days * 86_400).ok())
        .flatten()
}

/// A Unix timestamp as RFC 3339 UTC (`2025-01-31T12:00:00Z`).
pub fn rfc3339_seconds(seconds: i64) -> String {
    let days = seconds.div_euclid(86_400);
    let secs = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod date_tests {
    #[test]
    fn dates_round_trip() {
        assert_eq!(super::parse_date("1970-01-01"), Some(0));
        assert_eq!(super::parse_date("2026-09-30"), Some(1_790_726_400));
        assert_eq!(super::parse_date("2026-02-30"), None);
        assert_eq!(super::parse_date("2026-9"), None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_605), (2026, 6, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn ts_format() {
        let at = |ms: i64| {
            let t = if ms >= 0 {
                UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs())
            } else {
                UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
            };
            format_rfc3339_millis(t)
        };
        assert_eq!(at(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(1_795_431_600_123), "2026-11-23T11:00:00.123Z");
        assert_eq!(at(951_868_799_999), "2000-02-29T23:59:59.999Z");
        assert_eq!(at(951_868_800_000), "2000-03-01T00:00:00.000Z");
        assert_eq!(at(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(at(-2_208_988_800_000), "1900-01-01T00:00:00.000Z");
        // Outside years 0-9999, the general formatting.
        assert_eq!(at(253_402_300_800_000), "10000-01-01T00:00:00.000Z");
        assert_eq!(at(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
        // Sub-millisecond parts are truncated.
        assert_eq!(
            format_rfc3339_millis(UNIX_EPOCH + Duration::from_nanos(1_999_999)),
            "1970-01-01T00:00:00.001Z"
        );

        // The per-thread second: reused within a second, renewed across one, and never left
        // half-written by a year it cannot hold.
        assert_eq!(at(1_795_431_600_001), "2026-11-23T11:00:00.001Z");
        assert_eq!(at(1_795_431_600_999), "2026-11-23T11:00:00.999Z");
        assert_eq!(at(1_795_431_601_000), "2026-11-23T11:00:01.000Z");
        assert_eq!(at(253_402_300_800_000), "10000-01-01T00:00:00.000Z");
        assert_eq!(at(1_795_431_601_500), "2026-11-23T11:00:01.500Z");
        assert_eq!(at(1_795_431_600_002), "2026-11-23T11:00:00.002Z");

        let now = now_rfc3339();
        let b = now.as_bytes();
        assert_eq!(b.len(), 24, "{now}");
        for (i, c) in b.iter().enumerate() {
            match i {
                4 | 7 => assert_eq!(*c, b'-', "{now}"),
                10 => assert_eq!(*c, b'T', "{now}"),
                13 | 16 => assert_eq!(*c, b':', "{now}"),
                19 => assert_eq!(*c, b'.', "{now}"),
                23 => assert_eq!(*c, b'Z', "{now}"),
                _ => assert!(c.is_ascii_digit(), "{now}"),
            }
        }
    }
}
