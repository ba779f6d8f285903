//! Operator overrides and cloud-provider ranges: the two sources between the special ranges and
//! GeoIP.
//!
//! - **Overrides** (`cidr, jurisdiction, label`) as CSV or TOML: the operator's word, e.g. a
//!   partner's network whose GeoIP country is wrong, or the test networks of a lab.
//! - **AWS `ip-ranges.json`** files named by the operator: `prefixes[].ip_prefix/region` and
//!   `ipv6_prefixes[].ipv6_prefix/region`, mapped to countries by the shipped region table
//!   (`config/cloud/aws-regions.toml`). GeoIP databases misplace many cloud ranges, so these
//!   outrank GeoIP. `GLOBAL` (edge/anycast) is `global`; regions missing from the table map to
//!   `unknown`, so policy fails closed on them until the table is updated. The embedded ranges
//!   of every provider are in [`super::cloud`].
//!
//! Every error names the file, the line where there is one, and the reason.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use ipnet::IpNet;
use serde::Deserialize;

use super::{CloudOrigin, Jurisdiction, Source, TableBuilder};

/// The shipped AWS region → country table.
pub const AWS_REGIONS: &str = include_str!("../../config/cloud/aws-regions.toml");

/// A refused source file: file, line (where there is one) and reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SourceError {
    /// File name.
    pub file: String,
    /// 1-based line, where the format has lines.
    pub line: Option<usize>,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file, line, self.reason),
            None => write!(f, "{}: {}", self.file, self.reason),
        }
    }
}

fn err(file: &str, line: Option<usize>, reason: impl Into<String>) -> SourceError {
    SourceError {
        file: file.to_string(),
        line,
        reason: reason.into(),
    }
}

/// One override line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverrideEntry {
    /// The prefix.
    pub net: IpNet,
    /// Its jurisdiction.
    pub jurisdiction: Jurisdiction,
    /// Operator's label, shown in `lookup`, `explain` and the audit trail.
    pub label: String,
    /// 1-based line in the file.
    pub line: usize,
}

/// Parse a CIDR strictly: host bits must be clear, and IPv4-mapped IPv6 prefixes are refused.
pub fn parse_cidr(text: &str) -> Result<IpNet, String> {
    let net: IpNet = text.parse().map_err(|_| {
        format!("invalid CIDR '{text}' (expected e.g. 192.0.2.0/24 or 2001:db8::/32)")
    })?;
    if net.trunc() != net {
        return Err(format!(
            "'{text}' has host bits set (did you mean {}?)",
            net.trunc()
        ));
    }
    if let IpNet::V6(n) = net
        && n.prefix_len() >= 96
        && n.network().to_ipv4_mapped().is_some()
    {
        return Err(format!(
            "'{text}' is an IPv4-mapped IPv6 prefix; write the IPv4 prefix instead"
        ));
    }
    Ok(net)
}

fn parse_jurisdiction(text: &str) -> Result<Jurisdiction, String> {
    Jurisdiction::from_code(text).ok_or_else(|| {
        format!(
            "unknown jurisdiction '{text}' (expected an ISO 3166-1 alpha-2 code such as GB, or internal, metadata, reserved, unknown)"
        )
    })
}

/// Parse overrides in CSV: `cidr, jurisdiction, label` per line; `#` comments, blank lines and
/// an optional `cidr,jurisdiction,label` header are skipped; the label may contain commas.
pub fn parse_overrides_csv(text: &str, file: &str) -> Result<Vec<OverrideEntry>, SourceError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let body = raw.trim();
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        let mut fields = body.splitn(3, ',').map(str::trim);
        let (cidr, code, label) = (fields.next(), fields.next(), fields.next());
        if line_is_header(cidr, code) {
            continue;
        }
        let (Some(cidr), Some(code)) = (cidr, code) else {
            return Err(err(
                file,
                Some(line),
                "expected 'cidr, jurisdiction, label'",
            ));
        };
        let net = parse_cidr(cidr).map_err(|r| err(file, Some(line), r))?;
        let jurisdiction = parse_jurisdiction(code).map_err(|r| err(file, Some(line), r))?;
        let label = label.unwrap_or("").trim_matches('"').to_string();
        out.push(OverrideEntry {
            net,
            jurisdiction,
            label,
            line,
        });
    }
    Ok(out)
}

fn line_is_header(cidr: Option<&str>, code: Option<&str>) -> bool {
    cidr.is_some_and(|c| c.eq_ignore_ascii_case("cidr"))
        && code.is_some_and(|c| c.eq_ignore_ascii_case("jurisdiction"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlOverrides {
    version: Option<u32>,
    #[serde(rename = "override", default)]
    overrides: Vec<TomlOverride>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlOverride {
    cidr: toml::Spanned<String>,
    jurisdiction: toml::Spanned<String>,
    #[serde(default)]
    label: String,
}

/// 1-based line of a byte offset.
pub fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map_or(0, |t| t.bytes().filter(|&b| b == b'\n').count())
        + 1
}

/// Parse overrides in TOML: `version = 1` and `[[override]]` tables of `cidr`, `jurisdiction`,
/// `label`.
pub fn parse_overrides_toml(text: &str, file: &str) -> Result<Vec<OverrideEntry>, SourceError> {
    let doc: TomlOverrides = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start));
        err(file, line, e.message().to_string())
    })?;
    if let Some(v) = doc.version
        && v != 1
    {
        return Err(err(
            file,
            None,
            format!("unsupported version {v} (expected 1)"),
        ));
    }
    let mut out = Vec::new();
    for o in doc.overrides {
        let line = line_of(text, o.cidr.span().start);
        let net = parse_cidr(o.cidr.get_ref()).map_err(|r| err(file, Some(line), r))?;
        let jline = line_of(text, o.jurisdiction.span().start);
        let jurisdiction =
            parse_jurisdiction(o.jurisdiction.get_ref()).map_err(|r| err(file, Some(jline), r))?;
        out.push(OverrideEntry {
            net,
            jurisdiction,
            label: o.label,
            line,
        });
    }
    Ok(out)
}

/// Read an overrides file (`.csv` or `.toml`) and add it to `builder`. Returns the entry count.
pub fn load_overrides(path: &Path, builder: &mut TableBuilder) -> Result<usize, SourceError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| err(&file, None, e.to_string()))?;
    let entries = match path.extension().and_then(|e| e.to_str()) {
        Some("csv") => parse_overrides_csv(&text, &file)?,
        Some("toml") => parse_overrides_toml(&text, &file)?,
        _ => {
            return Err(err(&file, None, "overrides file must end in .csv or .toml"));
        }
    };
    add_overrides(&entries, builder, &file)?;
    Ok(entries.len())
}

/// Add parsed overrides to `builder`.
pub fn add_overrides(
    entries: &[OverrideEntry],
    builder: &mut TableBuilder,
    file: &str,
) -> Result<(), SourceError> {
    for e in entries {
        let label = (!e.label.is_empty()).then_some(e.label.as_str());
        builder
            .add(e.net, e.jurisdiction, Source::Override, label)
            .map_err(|x| err(file, Some(e.line), x.to_string()))?;
    }
    Ok(())
}

/// Cloud region → jurisdiction.
#[derive(Debug, Clone)]
pub struct RegionTable {
    regions: HashMap<String, Jurisdiction>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegionFile {
    #[allow(dead_code)]
    version: Option<String>,
    regions: HashMap<String, toml::Spanned<String>>,
}

impl RegionTable {
    /// The shipped AWS table.
    pub fn aws() -> Result<RegionTable, SourceError> {
        Self::parse(AWS_REGIONS, "config/cloud/aws-regions.toml")
    }

    /// Parse a region table: `[regions]` of `"region" = "CC"` (an ISO 3166-1 code, `global`
    /// for a provider's regionless name such as AWS `GLOBAL`, or `unknown` for a region whose
    /// location is not established).
    pub fn parse(text: &str, file: &str) -> Result<RegionTable, SourceError> {
        let doc: RegionFile = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            err(file, line, e.message().to_string())
        })?;
        let mut regions = HashMap::new();
        for (region, code) in doc.regions {
            let line = line_of(text, code.span().start);
            let j = parse_jurisdiction(code.get_ref()).map_err(|r| err(file, Some(line), r))?;
            regions.insert(region, j);
        }
        Ok(RegionTable { regions })
    }

    /// The jurisdiction of `region`: `unknown` for regions not in the table.
    pub fn get(&self, region: &str) -> Jurisdiction {
        self.regions
            .get(region)
            .copied()
            .unwrap_or(Jurisdiction::UNKNOWN)
    }

    /// Is `region` in the table?
    pub fn contains(&self, region: &str) -> bool {
        self.regions.contains_key(region)
    }

    /// Every region the table lists.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.regions.keys().map(String::as_str)
    }
}

/// One cloud range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudEntry {
    /// The prefix.
    pub net: IpNet,
    /// The provider's region name.
    pub region: String,
    /// Its jurisdiction (`global` for `GLOBAL`, `unknown` for unmapped regions).
    pub jurisdiction: Jurisdiction,
}

/// An AWS `ip-ranges.json` document: read once here for both of its uses (`aws_ranges` files
/// and the cloud feeds).
#[derive(Deserialize)]
pub(crate) struct AwsFile {
    /// The feed's version token (an `aws_ranges` file may lack it; a feed may not).
    #[serde(rename = "syncToken", default)]
    pub(crate) sync_token: Option<String>,
    #[serde(default)]
    prefixes: Vec<AwsPrefix>,
    #[serde(default)]
    ipv6_prefixes: Vec<AwsPrefix6>,
}

#[derive(Deserialize)]
struct AwsPrefix {
    ip_prefix: String,
    region: String,
    network_border_group: Option<String>,
}

#[derive(Deserialize)]
struct AwsPrefix6 {
    ipv6_prefix: String,
    region: String,
    network_border_group: Option<String>,
}

impl AwsFile {
    /// Parse the document, or say at which line it is not one.
    pub(crate) fn parse(text: &str, file: &str) -> Result<AwsFile, SourceError> {
        serde_json::from_str(text).map_err(|e| {
            err(
                file,
                Some(e.line()),
                format!("not an AWS ip-ranges.json document: {e}"),
            )
        })
    }

    /// Number of prefixes, IPv4 and IPv6.
    pub(crate) fn len(&self) -> usize {
        self.prefixes.len() + self.ipv6_prefixes.len()
    }

    /// Every prefix: its key path (for errors), its CIDR text and where it is
    /// ([`aws_zone`]).
    pub(crate) fn prefixes(&self) -> impl Iterator<Item = (String, &str, &str)> {
        let v4 = self.prefixes.iter().enumerate().map(|(i, p)| {
            let zone = aws_zone(&p.region, p.network_border_group.as_deref());
            (
                format!("prefixes[{i}].ip_prefix"),
                p.ip_prefix.as_str(),
                zone,
            )
        });
        let v6 = self.ipv6_prefixes.iter().enumerate().map(|(i, p)| {
            let zone = aws_zone(&p.region, p.network_border_group.as_deref());
            (
                format!("ipv6_prefixes[{i}].ipv6_prefix"),
                p.ipv6_prefix.as_str(),
                zone,
            )
        });
        v4.chain(v6)
    }
}

/// Where an AWS range really is: its network border group when that differs from the region.
/// Local Zones and Wavelength Zones carry their parent region (e.g. `us-east-1`) but sit
/// elsewhere (`us-east-1-bue-1` is Buenos Aires).
pub fn aws_zone<'a>(region: &'a str, border_group: Option<&'a str>) -> &'a str {
    match border_group {
        Some(g) if !g.is_empty() && g != region => g,
        _ => region,
    }
}

/// Parse an AWS `ip-ranges.json` document.
pub fn parse_aws_ranges(
    text: &str,
    file: &str,
    regions: &RegionTable,
) -> Result<Vec<CloudEntry>, SourceError> {
    let doc = AwsFile::parse(text, file)?;
    let mut out = Vec::with_capacity(doc.len());
    for (key, cidr, region) in doc.prefixes() {
        let net = parse_cidr(cidr).map_err(|r| err(file, None, format!("{key}: {r}")))?;
        out.push(CloudEntry {
            net,
            region: region.to_string(),
            jurisdiction: regions.get(region),
        });
    }
    Ok(out)
}

/// Summary of a loaded cloud file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CloudSummary {
    /// Prefixes added.
    pub prefixes: usize,
    /// Regions seen that the table does not map (their ranges are `unknown`).
    pub unmapped_regions: Vec<String>,
}

/// Add AWS ranges to `builder` (source `cloud:aws:<region>`).
pub fn add_cloud(
    entries: &[CloudEntry],
    regions: &RegionTable,
    builder: &mut TableBuilder,
) -> CloudSummary {
    let mut summary = CloudSummary::default();
    for e in entries {
        let origin = CloudOrigin::intern("aws", Some(&e.region), e.jurisdiction);
        if builder.add_cloud(e.net, origin).is_ok() {
            summary.prefixes += 1;
        }
        if !regions.contains(&e.region) && !summary.unmapped_regions.contains(&e.region) {
            summary.unmapped_regions.push(e.region.clone());
        }
    }
    summary
}

/// Read an AWS `ip-ranges.json` file and add it to `builder`.
pub fn load_aws_ranges(
    path: &Path,
    builder: &mut TableBuilder,
) -> Result<CloudSummary, SourceError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| err(&file, None, e.to_string()))?;
    let regions = RegionTable::aws()?;
    let entries = parse_aws_ranges(&text, &file, &regions)?;
    Ok(add_cloud(&entries, &regions, builder))
}
