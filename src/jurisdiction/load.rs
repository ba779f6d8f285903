//! Assemble a [`JurisdictionTable`] from its configured sources.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::cloud::{self, CloudInfo};
use super::geoip::{GeoIpDb, GeoIpError, GeoIpInfo};
use super::sources::{self, CloudSummary, SourceError};
use super::{JurisdictionTable, TableBuilder};

/// Where the table's data comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSources {
    /// A MaxMind DB file; `None` uses the embedded DB-IP database.
    pub geoip: Option<PathBuf>,
    /// Operator override files (`.csv` or `.toml`).
    pub overrides: Vec<PathBuf>,
    /// AWS `ip-ranges.json` files.
    pub aws_ranges: Vec<PathBuf>,
    /// Use the embedded cloud-provider ranges (default on).
    pub cloud_ranges: bool,
    /// A directory of provider feeds written by `update-ranges`: each file found there is used
    /// instead of that provider's embedded ranges.
    pub cloud_dir: Option<PathBuf>,
    /// How often the running proxy downloads the providers' feeds into `cloud_dir` and rebuilds
    /// the table (`None`: never; the table is built once, at start).
    pub cloud_refresh: Option<Duration>,
}

impl Default for TableSources {
    fn default() -> Self {
        TableSources {
            geoip: None,
            overrides: Vec::new(),
            aws_ranges: Vec::new(),
            cloud_ranges: true,
            cloud_dir: None,
            cloud_refresh: None,
        }
    }
}

/// A source that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The GeoIP database.
    #[error(transparent)]
    GeoIp(#[from] GeoIpError),
    /// An override or cloud file.
    #[error(transparent)]
    Source(#[from] SourceError),
}

/// What was loaded.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// The GeoIP database.
    pub geoip: GeoIpInfo,
    /// Override entries per file.
    pub overrides: Vec<(PathBuf, usize)>,
    /// AWS ranges per `aws_ranges` file.
    pub cloud: Vec<(PathBuf, CloudSummary)>,
    /// The cloud-provider sources (embedded or from `cloud_dir`), with their versions.
    pub providers: Vec<CloudInfo>,
    /// Wall time to read, merge and compile everything.
    pub build_ms: f64,
}

/// Load every source and compile the table.
pub fn load(src: &TableSources) -> Result<(JurisdictionTable, LoadReport), LoadError> {
    let started = Instant::now();
    let mut builder = TableBuilder::with_special_ranges();
    let mut overrides = Vec::new();
    for path in &src.overrides {
        overrides.push((path.clone(), sources::load_overrides(path, &mut builder)?));
    }
    let providers = cloud::load(src.cloud_ranges, src.cloud_dir.as_deref(), &mut builder)?;
    let mut cloud = Vec::new();
    for path in &src.aws_ranges {
        cloud.push((path.clone(), sources::load_aws_ranges(path, &mut builder)?));
    }
    let db = match &src.geoip {
        Some(path) => GeoIpDb::open(path)?,
        None => GeoIpDb::embedded()?,
    };
    let geoip = db.add_to(&mut builder)?;
    drop(db);
    let table = builder.build();
    let report = LoadReport {
        geoip,
        overrides,
        cloud,
        providers,
        build_ms: started.elapsed().as_secs_f64() * 1000.0,
    };
    Ok((table, report))
}
