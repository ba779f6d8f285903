//! The binary's commands, one file each, over the library. Every command returns a
//! [`CliError`] on failure; `main` prints it and exits with its code.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand};

use residency_proxy::config::Config;
use residency_proxy::jurisdiction::JurisdictionTable;
use residency_proxy::jurisdiction::geoip::{self, GeoIpDb};
use residency_proxy::jurisdiction::load::{self, LoadReport};
use residency_proxy::policy::profile::DEFAULT_PROFILE;

mod check;
mod explain;
mod keygen;
mod lookup;
mod report;
mod run;
pub mod update_ranges;
mod verify;

/// Exit code for invalid configuration or data (EX_DATAERR is 65, EX_USAGE 64; linkerd and
/// the BSD sysexits use 64 for "the input was wrong").
const EXIT_CONFIG: u8 = 64;

/// Exit code for an environment failure after the configuration was accepted (EX_OSERR).
const EXIT_OS: u8 = 71;

/// Why a command failed, and so which exit code it gets.
#[derive(Debug)]
pub enum CliError {
    /// The input was wrong: configuration, data file, argument (exit 64).
    Input(String),
    /// The environment failed after the input was accepted: bind, runtime, I/O (exit 71).
    Os(String),
}

impl CliError {
    fn code(&self) -> u8 {
        match self {
            CliError::Input(_) => EXIT_CONFIG,
            CliError::Os(_) => EXIT_OS,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Input(m) | CliError::Os(m) => f.write_str(m),
        }
    }
}

/// Input errors are the common case: every loader's error text names file, line and reason.
impl From<String> for CliError {
    fn from(m: String) -> Self {
        CliError::Input(m)
    }
}

#[derive(Parser)]
#[command(
    name = "residency-proxy",
    version,
    about = "Data-residency enforcement proxy: every destination resolved, located and decided"
)]
struct Cli {
    #[command(subcommand)]
    pub(super) command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (with no --config: the embedded example configuration).
    Run(RunArgs),
    /// Validate a configuration file and its data sources, then exit.
    Check(CheckArgs),
    /// Print the whole decision chain for a destination, without connecting.
    Explain(ExplainArgs),
    /// Print the jurisdiction, class, source and matched prefix of addresses or host names.
    Lookup(LookupArgs),
    /// Download the cloud providers' official range feeds, validate them and write them to a
    /// directory (`jurisdiction.cloud_dir`).
    UpdateRanges(update_ranges::UpdateRangesArgs),
    /// Summarise audit logs for the risk owner: where data went, what was denied, what
    /// enforcement would break (text, --json, or one --html page).
    Report(report::ReportArgs),
    /// Make an Ed25519 key pair for signed audit checkpoints (`audit.signing_key`).
    Keygen(KeygenArgs),
    /// Check the hash chain and checkpoint signatures of audit files (plain or gzip), in the
    /// order given: exit 0 when they verify, 1 when they do not.
    Verify(VerifyArgs),
}

#[derive(Args)]
pub(super) struct KeygenArgs {
    /// Private key file to create (PKCS#8 PEM, mode 0600); the public key goes to FILE.pub.
    #[arg(long, value_name = "FILE")]
    pub(super) out: PathBuf,
}

#[derive(Args)]
pub(super) struct VerifyArgs {
    /// Audit files, oldest first (rotated files before the current one).
    #[arg(required = true, value_name = "FILE")]
    pub(super) files: Vec<PathBuf>,
    /// Public key (SPKI PEM, from keygen's FILE.pub) to check checkpoint signatures with.
    #[arg(long, value_name = "PUB.pem")]
    pub(super) key: Option<PathBuf>,
    /// No progress bar, even on a terminal.
    #[arg(long)]
    pub(super) no_progress: bool,
}

#[derive(Args)]
pub(super) struct RunArgs {
    /// Configuration file (default: the embedded config/residency-proxy.toml).
    #[arg(long, short, value_name = "PATH")]
    pub(super) config: Option<PathBuf>,
    /// A MaxMind DB file instead of the configured or embedded GeoIP database.
    #[arg(long, value_name = "PATH")]
    pub(super) geoip: Option<PathBuf>,
    /// Log format on stderr: human on a terminal and JSON otherwise (auto), or either always.
    #[arg(long, value_enum, default_value_t = LogFormat::Auto)]
    pub(super) log_format: LogFormat,
}

/// How `run` writes its log lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum LogFormat {
    /// Human on a terminal, JSON otherwise.
    Auto,
    /// One readable line per event.
    Human,
    /// One JSON object per event.
    Json,
}

#[derive(Args)]
pub(super) struct CheckArgs {
    /// Configuration file.
    pub(super) config: PathBuf,
}

#[derive(Args)]
pub(super) struct ExplainArgs {
    /// Destination: HOST, HOST:PORT, IP or [IPv6]:PORT (default port 443).
    pub(super) target: String,
    /// Client address to decide for.
    #[arg(long, default_value = "127.0.0.1")]
    pub(super) client: IpAddr,
    /// Listener to decide for (default: the first listener).
    #[arg(long)]
    pub(super) listener: Option<String>,
    /// Configuration file (default: the embedded example).
    #[arg(long, short, value_name = "PATH")]
    pub(super) config: Option<PathBuf>,
    /// A MaxMind DB file instead of the configured or embedded GeoIP database.
    #[arg(long, value_name = "PATH")]
    pub(super) geoip: Option<PathBuf>,
    /// Resolve NAME to IP instead of asking DNS (like curl --resolve). Repeatable.
    #[arg(long, value_name = "NAME=IP")]
    pub(super) resolve: Vec<String>,
}

/// Options that choose the jurisdiction data.
#[derive(Args, Clone)]
pub(super) struct DataArgs {
    /// A MaxMind DB file (GeoLite2/GeoIP2 Country or an ip-location-db build) instead of the
    /// embedded DB-IP database.
    #[arg(long, value_name = "PATH")]
    pub(super) geoip: Option<PathBuf>,
    /// Operator overrides file (`cidr, jurisdiction, label`; .csv or .toml). Repeatable.
    #[arg(long, value_name = "PATH")]
    pub(super) overrides: Vec<PathBuf>,
    /// AWS ip-ranges.json file. Repeatable.
    #[arg(long, value_name = "PATH")]
    pub(super) aws_ranges: Vec<PathBuf>,
    /// Leave out the embedded cloud-provider ranges.
    #[arg(long)]
    pub(super) no_cloud_ranges: bool,
    /// Directory of provider feeds written by update-ranges (used instead of the embedded ones).
    #[arg(long, value_name = "DIR")]
    pub(super) cloud_dir: Option<PathBuf>,
    /// Adequacy profile: a built-in name (uk-adequate, uk-only) or a .toml file.
    #[arg(long, default_value = DEFAULT_PROFILE)]
    pub(super) profile: String,
}

#[derive(Args)]
pub(super) struct LookupArgs {
    /// IP addresses or host names (names are resolved with the system resolver).
    #[arg(required = true, value_name = "ADDR|HOST")]
    pub(super) targets: Vec<String>,
    /// One JSON object per address.
    #[arg(long)]
    pub(super) json: bool,
    #[command(flatten)]
    pub(super) data: DataArgs,
}

fn long_version() -> String {
    let db = GeoIpDb::embedded()
        .ok()
        .map(|db| {
            let m = db.reader().metadata();
            let info = geoip::GeoIpInfo {
                origin: geoip::EMBEDDED_ORIGIN.into(),
                database_type: m.database_type.clone(),
                build_epoch: m.build_epoch,
                schema: db.schema(),
                networks: 0,
                without_country: 0,
                unknown_codes: 0,
            };
            format!("{}, built {}", info.origin, info.build_date())
        })
        .unwrap_or_else(|| "embedded database unreadable".into());
    format!(
        "{}\nGeoIP data: {}\n{}",
        env!("CARGO_PKG_VERSION"),
        db,
        geoip::ATTRIBUTION
    )
}

/// Parse the arguments, run the command, and turn its outcome into the exit code.
pub fn main() -> ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    // Usage errors exit 64 (EX_USAGE), like every other input error; help and version 0.
    let usage = |e: clap::Error| {
        let _ = e.print();
        if e.use_stderr() {
            ExitCode::from(EXIT_CONFIG)
        } else {
            ExitCode::SUCCESS
        }
    };
    let matches = match Cli::command()
        .long_version(long_version())
        .try_get_matches()
    {
        Ok(m) => m,
        Err(e) => return usage(e),
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => return usage(e),
    };
    let result = match cli.command {
        Command::Run(args) => run::cmd_run(&args),
        Command::Check(args) => check::cmd_check(&args),
        Command::Explain(args) => explain::cmd_explain(&args),
        Command::Lookup(args) => lookup::cmd_lookup(&args),
        Command::UpdateRanges(args) => update_ranges::run(&args).map_err(CliError::from),
        Command::Report(args) => report::cmd_report(&args),
        Command::Keygen(args) => keygen::cmd_keygen(&args),
        Command::Verify(args) => verify::cmd_verify(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("residency-proxy: {e}");
            ExitCode::from(e.code())
        }
    }
}

pub(super) fn load_config(
    path: Option<&PathBuf>,
    geoip: Option<&PathBuf>,
) -> Result<Config, String> {
    let mut config = match path {
        Some(p) => Config::load(p),
        None => Config::example(),
    }
    .map_err(|e| e.to_string())?;
    if let Some(g) = geoip {
        config.jurisdiction.geoip = Some(g.clone());
    }
    Ok(config)
}

pub(super) fn build_table(config: &Config) -> Result<(JurisdictionTable, LoadReport), String> {
    load::load(&config.jurisdiction).map_err(|e| e.to_string())
}

/// Log each cloud source's version, and warn about stale ones.
pub(super) fn log_cloud_sources(report: &LoadReport) {
    for c in &report.providers {
        tracing::info!(
            provider = c.provider.name(),
            version = %c.version,
            origin = %c.origin,
            prefixes = c.prefixes,
            "Cloud ranges loaded"
        );
    }
    residency_proxy::jurisdiction::cloud::warn_if_stale(&report.providers);
}

pub(super) fn warn_if_stale(report: &LoadReport) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let age = report.geoip.age_days(now);
    if age > 30 {
        tracing::warn!(
            db.version = %report.geoip.build_date(),
            age_days = age,
            "GeoIP database is older than 30 days: update it"
        );
    }
}
