//! The embedded snapshot (`config/cloud/ranges.txt`): a compact text form of the providers'
//! feeds, and the dates it carries.

use super::{CloudRange, Feed, Provider, SNAPSHOT, err, feed_cidr};
use crate::jurisdiction::sources::SourceError;

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD` as Unix seconds at midnight UTC.
pub fn parse_date(text: &str) -> Option<u64> {
    let mut it = text.splitn(3, '-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: u32 = it.next()?.parse().ok()?;
    let d: u32 = it.next()?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    u64::try_from(days_from_civil(y, m, d) * 86_400).ok()
}

/// Parse the snapshot format: `@provider version date` opens a provider's section, `=region`
/// a region (`-`: regionless), then one CIDR per line; `#` comments.
pub fn parse_snapshot(text: &str, file: &str) -> Result<Vec<Feed>, SourceError> {
    let mut feeds: Vec<Feed> = Vec::new();
    let mut region: Option<Option<String>> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let body = raw.trim();
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        if let Some(head) = body.strip_prefix('@') {
            let mut f = head.split_whitespace();
            let name = f.next().unwrap_or("");
            let provider = Provider::from_name(name)
                .ok_or_else(|| err(file, Some(line), format!("unknown provider '{name}'")))?;
            feeds.push(Feed {
                provider,
                version: f.next().unwrap_or("").to_string(),
                date: f.next().and_then(parse_date),
                ranges: Vec::new(),
            });
            region = None;
        } else if let Some(r) = body.strip_prefix('=') {
            region = Some((r != "-").then(|| r.to_string()));
        } else {
            let (Some(feed), Some(region)) = (feeds.last_mut(), region.as_ref()) else {
                return Err(err(
                    file,
                    Some(line),
                    "range before '@provider' and '=region'",
                ));
            };
            let net = feed_cidr(body).map_err(|r| err(file, Some(line), r))?;
            feed.ranges.push(CloudRange {
                net,
                region: region.clone(),
            });
        }
    }
    Ok(feeds)
}

/// The embedded snapshot, parsed.
pub fn embedded() -> Result<Vec<Feed>, SourceError> {
    parse_snapshot(SNAPSHOT, "config/cloud/ranges.txt")
}
