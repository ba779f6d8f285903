//! `lookup`: jurisdiction, class, source and matched prefix of addresses or host names.

use std::net::{IpAddr, ToSocketAddrs};
use std::process::ExitCode;

use residency_proxy::jurisdiction::load::{self, TableSources};
use residency_proxy::jurisdiction::{JurisdictionTable, Lookup};
use residency_proxy::policy::Profile;

use super::{CliError, DataArgs, LookupArgs};

/// The table and profile the data options name.
fn load_data(data: &DataArgs) -> Result<(JurisdictionTable, Profile), CliError> {
    let profile = Profile::load(&data.profile).map_err(|e| e.to_string())?;
    let sources = TableSources {
        geoip: data.geoip.clone(),
        overrides: data.overrides.clone(),
        aws_ranges: data.aws_ranges.clone(),
        cloud_ranges: !data.no_cloud_ranges,
        cloud_dir: data.cloud_dir.clone(),
        cloud_refresh: None,
    };
    let (table, _report) = load::load(&sources).map_err(|e| e.to_string())?;
    Ok((table, profile))
}

pub(super) fn cmd_lookup(args: &LookupArgs) -> Result<ExitCode, CliError> {
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
