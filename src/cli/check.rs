//! `check`: validate a configuration and its data, build the table, exit.

use std::process::ExitCode;

use super::{CheckArgs, CliError, build_table, load_config};

/// `check`: validate only.
pub fn cmd_check(args: &CheckArgs) -> Result<ExitCode, CliError> {
    let config = load_config(Some(&args.config), None)?;
    let (table, report) = build_table(&config)?;
    let (v4, v6) = table.ranges();
    println!(
        "{}: ok: {} listener(s), {} rule(s), profile {} ({}), GeoIP {} built {}, {} IPv4 + {} IPv6 ranges compiled in {:.0} ms",
        config.source,
        config.listeners.len(),
        config.policy.rules.len(),
        config.profile.name,
        config.profile.version,
        report.geoip.origin,
        report.geoip.build_date(),
        v4,
        v6,
        report.build_ms
    );
    Ok(ExitCode::SUCCESS)
}
