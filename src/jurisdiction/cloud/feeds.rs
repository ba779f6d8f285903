//! The providers' official feed formats, one parser each: AWS `ip-ranges.json`, Azure Public
//! service tags, GCP `cloud.json`, Oracle `public_ip_ranges.json`, DigitalOcean's geofeed
//! (RFC 8805 CSV) and Cloudflare's `/ips` API document.

use serde::Deserialize;

use super::{CloudRange, Feed, Provider, err, feed_cidr};
use crate::jurisdiction::sources::{AwsFile, SourceError};

fn region_of(text: &str) -> Option<String> {
    let t = text.trim();
    (!t.is_empty()).then(|| t.to_string())
}

fn parse_aws(text: &str, file: &str) -> Result<Feed, SourceError> {
    let doc = AwsFile::parse(text, file)?;
    let Some(version) = doc.sync_token.clone() else {
        return Err(err(
            file,
            None,
            "not an AWS ip-ranges.json document: no syncToken",
        ));
    };
    let mut ranges = Vec::with_capacity(doc.len());
    for (key, cidr, zone) in doc.prefixes() {
        let net = feed_cidr(cidr).map_err(|r| err(file, None, format!("{key}: {r}")))?;
        ranges.push(CloudRange {
            net,
            region: region_of(zone),
        });
    }
    Ok(Feed {
        provider: Provider::Aws,
        date: version.parse().ok(),
        version,
        ranges,
    })
}

#[derive(Deserialize)]
struct AzureDoc {
    #[serde(rename = "changeNumber")]
    change_number: u64,
    values: Vec<AzureTag>,
}

#[derive(Deserialize)]
struct AzureTag {
    name: String,
    properties: AzureProps,
}

#[derive(Deserialize)]
struct AzureProps {
    #[serde(default)]
    region: String,
    #[serde(rename = "addressPrefixes")]
    address_prefixes: Vec<String>,
}

fn parse_azure(text: &str, file: &str) -> Result<Feed, SourceError> {
    let doc: AzureDoc = serde_json::from_str(text).map_err(|e| {
        err(
            file,
            Some(e.line()),
            format!("not an Azure service tags document: {e}"),
        )
    })?;
    let mut ranges = Vec::new();
    for tag in &doc.values {
        for cidr in &tag.properties.address_prefixes {
            let net = feed_cidr(cidr)
                .map_err(|r| err(file, None, format!("service tag {}: {r}", tag.name)))?;
            ranges.push(CloudRange {
                net,
                region: region_of(&tag.properties.region),
            });
        }
    }
    Ok(Feed {
        provider: Provider::Azure,
        version: doc.change_number.to_string(),
        date: None,
        ranges,
    })
}

#[derive(Deserialize)]
struct GcpDoc {
    #[serde(rename = "syncToken")]
    sync_token: String,
    prefixes: Vec<GcpPrefix>,
}

#[derive(Deserialize)]
struct GcpPrefix {
    #[serde(rename = "ipv4Prefix")]
    ipv4: Option<String>,
    #[serde(rename = "ipv6Prefix")]
    ipv6: Option<String>,
    scope: String,
}

fn parse_gcp(text: &str, file: &str) -> Result<Feed, SourceError> {
    let doc: GcpDoc = serde_json::from_str(text).map_err(|e| {
        err(
            file,
            Some(e.line()),
            format!("not a GCP cloud.json document: {e}"),
        )
    })?;
    let mut ranges = Vec::with_capacity(doc.prefixes.len());
    for (i, p) in doc.prefixes.iter().enumerate() {
        let Some(cidr) = p.ipv4.as_ref().or(p.ipv6.as_ref()) else {
            return Err(err(
                file,
                None,
                format!("prefixes[{i}]: no ipv4Prefix or ipv6Prefix"),
            ));
        };
        let net = feed_cidr(cidr).map_err(|r| err(file, None, format!("prefixes[{i}]: {r}")))?;
        ranges.push(CloudRange {
            net,
            region: region_of(&p.scope),
        });
    }
    Ok(Feed {
        provider: Provider::Gcp,
        // GCP's syncToken is a Unix time in milliseconds.
        date: doc.sync_token.parse::<u64>().ok().map(|ms| ms / 1000),
        version: doc.sync_token,
        ranges,
    })
}

#[derive(Deserialize)]
struct OracleDoc {
    last_updated_timestamp: String,
    regions: Vec<OracleRegion>,
}

#[derive(Deserialize)]
struct OracleRegion {
    region: String,
    cidrs: Vec<OracleCidr>,
}

#[derive(Deserialize)]
struct OracleCidr {
    cidr: String,
}

fn parse_oracle(text: &str, file: &str) -> Result<Feed, SourceError> {
    let doc: OracleDoc = serde_json::from_str(text).map_err(|e| {
        err(
            file,
            Some(e.line()),
            format!("not an Oracle public_ip_ranges.json document: {e}"),
        )
    })?;
    let mut ranges = Vec::new();
    for r in &doc.regions {
        for c in &r.cidrs {
            let net = feed_cidr(&c.cidr)
                .map_err(|e| err(file, None, format!("region {}: {e}", r.region)))?;
            ranges.push(CloudRange {
                net,
                region: region_of(&r.region),
            });
        }
    }
    Ok(Feed {
        provider: Provider::Oracle,
        version: doc.last_updated_timestamp,
        date: None,
        ranges,
    })
}

/// FNV-1a 64: a content fingerprint for feeds without a version token.
fn fingerprint(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("fnv1a64:{h:016x}")
}

/// An RFC 8805 geofeed: `prefix,country,region,city,postal` per line; `#` comments. The
/// region is the ISO 3166-2 subdivision (or the country when the feed gives none).
fn parse_geofeed(text: &str, file: &str) -> Result<Feed, SourceError> {
    let mut ranges = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let body = raw.trim();
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        let mut f = body.split(',').map(str::trim);
        let (Some(cidr), country, region) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let net = feed_cidr(cidr).map_err(|r| err(file, Some(i + 1), r))?;
        let region = region
            .filter(|r| !r.is_empty())
            .or(country.filter(|c| !c.is_empty()));
        ranges.push(CloudRange {
            net,
            region: region.map(str::to_string),
        });
    }
    if ranges.is_empty() {
        return Err(err(
            file,
            None,
            "not a geofeed: no 'prefix,country,...' line",
        ));
    }
    Ok(Feed {
        provider: Provider::DigitalOcean,
        version: fingerprint(text),
        date: None,
        ranges,
    })
}

#[derive(Deserialize)]
struct CloudflareDoc {
    result: CloudflareResult,
}

#[derive(Deserialize)]
struct CloudflareResult {
    ipv4_cidrs: Vec<String>,
    ipv6_cidrs: Vec<String>,
    etag: Option<String>,
}

fn parse_cloudflare(text: &str, file: &str) -> Result<Feed, SourceError> {
    let doc: CloudflareDoc = serde_json::from_str(text).map_err(|e| {
        err(
            file,
            Some(e.line()),
            format!("not a Cloudflare /ips document: {e}"),
        )
    })?;
    let mut ranges = Vec::new();
    for cidr in doc.result.ipv4_cidrs.iter().chain(&doc.result.ipv6_cidrs) {
        let net = feed_cidr(cidr).map_err(|r| err(file, None, r))?;
        ranges.push(CloudRange { net, region: None });
    }
    Ok(Feed {
        provider: Provider::Cloudflare,
        version: doc.result.etag.unwrap_or_else(|| fingerprint(text)),
        date: None,
        ranges,
    })
}

/// Parse a provider's official feed. Every error names the file and, for JSON, the line.
pub fn parse_feed(provider: Provider, text: &str, file: &str) -> Result<Feed, SourceError> {
    match provider {
        Provider::Aws => parse_aws(text, file),
        Provider::Azure => parse_azure(text, file),
        Provider::Gcp => parse_gcp(text, file),
        Provider::Oracle => parse_oracle(text, file),
        Provider::DigitalOcean => parse_geofeed(text, file),
        Provider::Cloudflare => parse_cloudflare(text, file),
    }
}
