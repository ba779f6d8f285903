//! The `residency-proxy` binary: a thin CLI over the library.

use std::net::{IpAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use residency_proxy::jurisdiction::geoip::{self, GeoIpDb};
use residency_proxy::jurisdiction::load::{self, TableSources};
use residency_proxy::jurisdiction::{JurisdictionTable, Lookup};
use residency_proxy::policy::Profile;
use residency_proxy::policy::profile::DEFAULT_PROFILE;

mod commands;
use commands::{cmd_check, cmd_explain, cmd_run};
mod cli {
    pub mod update_ranges;
}

/// Exit code for invalid configuration or data (EX_DATAERR is 65, EX_USAGE 64; linkerd and
/// the BSD sysexits use 64 for "the input was wrong").
const EXIT_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(
    name = "residency-proxy",
    version,
    about = "Data-residency enforcement proxy: every destination resolved, located and decided"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
    UpdateRanges(cli::update_ranges::UpdateRangesArgs),
}

#[derive(Args)]
struct RunArgs {
    /// Configuration file (default: the embedded config/residency-proxy.toml).
    #[arg(long, short, value_name = "PATH")]
    config: Option<PathBuf>,
    /// A MaxMind DB file instead of the configured or embedded GeoIP database.
    #[arg(long, value_name = "PATH")]
    geoip: Option<PathBuf>,
}

#[derive(Args)]
struct CheckArgs {
    /// Configuration file.
    config: PathBuf,
}

#[derive(Args)]
struct ExplainArgs {
    /// Destination: HOST, HOST:PORT, IP or [IPv6]:PORT (default port 443).
    target: String,
    /// Client address to decide for.
    #[arg(long, default_value = "127.0.0.1")]
    client: IpAddr,
    /// Listener to decide for (default: the first listener).
    #[arg(long)]
    listener: Option<String>,
    /// Configuration file (default: the embedded example).
    #[arg(long, short, value_name = "PATH")]
    config: Option<PathBuf>,
    /// A MaxMind DB file instead of the configured or embedded GeoIP database.
    #[arg(long, value_name = "PATH")]
    geoip: Option<PathBuf>,
    /// Resolve NAME to IP instead of asking DNS (like curl --resolve). Repeatable.
    #[arg(long, value_name = "NAME=IP")]
    resolve: Vec<String>,
}

/// Options that choose the jurisdiction data.
#[derive(Args, Clone)]
struct DataArgs {
    /// A MaxMind DB file (GeoLite2/GeoIP2 Country or an ip-location-db build) instead of the
    /// embedded DB-IP database.
    #[arg(long, value_name = "PATH")]
    geoip: Option<PathBuf>,
    /// Operator overrides file (`cidr, jurisdiction, label`; .csv or .toml). Repeatable.
    #[arg(long, value_name = "PATH")]
    overrides: Vec<PathBuf>,
    /// AWS ip-ranges.json file. Repeatable.
    #[arg(long, value_name = "PATH")]
    aws_ranges: Vec<PathBuf>,
    /// Leave out the embedded cloud-provider ranges.
    #[arg(long)]
    no_cloud_ranges: bool,
    /// Directory of provider feeds written by update-ranges (used instead of the embedded ones).
    #[arg(long, value_name = "DIR")]
    cloud_dir: Option<PathBuf>,
    /// Adequacy profile: a built-in name (uk-adequate, uk-only) or a .toml file.
    #[arg(long, default_value = DEFAULT_PROFILE)]
    profile: String,
}

#[derive(Args)]
struct LookupArgs {
    /// IP addresses or host names (names are resolved with the system resolver).
    #[arg(required = true, value_name = "ADDR|HOST")]
    targets: Vec<String>,
    /// One JSON object per address.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    data: DataArgs,
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

fn main() -> ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    let matches = Cli::command().long_version(long_version()).get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let result = match cli.command {
        Command::Run(args) => cmd_run(&args),
        Command::Check(args) => cmd_check(&args),
        Command::Explain(args) => cmd_explain(&args),
        Command::Lookup(args) => cmd_lookup(&args),
        Command::UpdateRanges(args) => cli::update_ranges::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("residency-proxy: {msg}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn load_data(data: &DataArgs) -> Result<(JurisdictionTable, Profile), String> {
    let profile = Profile::load(&data.profile).map_err(|e| e.to_string())?;
    let sources = TableSources {
        geoip: data.geoip.clone(),
        overrides: data.overrides.clone(),
        aws_ranges: data.aws_ranges.clone(),
        cloud_ranges: !data.no_cloud_ranges,
        cloud_dir: data.cloud_dir.clone(),
    };
    let (table, _report) = load::load(&sources).map_err(|e| e.to_string())?;
    Ok((table, profile))
}

fn cmd_lookup(args: &LookupArgs) -> Result<ExitCode, String> {
    let (table, profile) = load_data(&args.data)?;
    let mut failed = false;
    for target in &args.targets {
        let addrs: Vec<IpAddr> = match target.trim_matches(['[', ']']).parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => match (target.as_str(), 0u16).to_socket_addrs() {
                Ok(it) => {
                    let mut v: Vec<IpAddr> = it.map(|s| s.ip()).collect();
                    v.dedup();
                    v
                }
                Err(e) => {
                    eprintln!("residency-proxy: {target}: cannot resolve: {e}");
                    failed = true;
                    continue;
                }
            },
        };
        for ip in addrs {
            let l = table.lookup(ip);
            print_lookup(target, ip, &l, &table, &profile, args.json);
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn print_lookup(
    target: &str,
    ip: IpAddr,
    l: &Lookup,
    table: &JurisdictionTable,
    profile: &Profile,
    json: bool,
) {
    let (class, decisive) = profile.classify(l);
    let label = table.label(&l.hit());
    if json {
        let mut obj = serde_json::json!({
            "address": ip.to_string(),
            "jurisdiction": l.jurisdiction().code(),
            "class": class.as_str(),
            "source": l.source_name(),
            "prefix": l.prefix().to_string(),
            "profile": profile.name,
        });
        if target != ip.to_string() {
            obj["host"] = target.into();
        }
        if let Some(label) = label {
            obj["label"] = label.into();
        }
        if let Some(e) = l.embedded() {
            obj["embedded"] = e.as_str().into();
        }
        if let Some(r) = l.relay() {
            obj["relay"] = serde_json::json!({
                "jurisdiction": r.jurisdiction.code(),
                "class": profile.class_of(r.jurisdiction).as_str(),
                "source": r.source_name(),
                "prefix": r.prefix.to_string(),
            });
            obj["decided_by"] = decisive.prefix.to_string().into();
        }
        println!("{obj}");
    } else {
        let mut line = format!(
            "{ip}\t{}\t{}\t{}\t{}",
            l.jurisdiction(),
            class,
            l.source_name(),
            l.prefix()
        );
        if let Some(label) = label {
            line.push_str(&format!("\t({label})"));
        }
        if let Some(e) = l.embedded() {
            line.push_str(&format!("\t[{}]", e.as_str()));
        }
        if let Some(r) = l.relay() {
            line.push_str(&format!(
                "\trelay {} {} {} {}",
                r.jurisdiction,
                profile.class_of(r.jurisdiction),
                r.source_name(),
                r.prefix
            ));
        }
        if target != ip.to_string() {
            line = format!("{target}\t{line}");
        }
        println!("{line}");
    }
}
