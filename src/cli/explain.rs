//! `explain`: the decision chain for one destination, through the same vet stage as the live
//! path, without connecting.

use std::net::IpAddr;
use std::process::ExitCode;

use residency_proxy::destination::{self, Resolver, StaticResolver, SystemResolver};
use residency_proxy::jurisdiction::Jurisdiction;
use residency_proxy::jurisdiction::cloud::Provider;
use residency_proxy::pipeline::vet::{self, Vetted};
use residency_proxy::policy::{Decision, Subject, Verdict};

use super::{CliError, ExplainArgs, build_table, load_config};

/// `explain`: the decision chain for one destination, without connecting.
pub fn cmd_explain(args: &ExplainArgs) -> Result<ExitCode, CliError> {
    let config = load_config(args.config.as_ref(), args.geoip.as_ref())?;
    let listener = match &args.listener {
        Some(name) => config
            .listeners
            .iter()
            .find(|l| &l.name == name)
            .ok_or_else(|| format!("no listener named '{name}'"))?,
        None => config
            .listeners
            .first()
            .ok_or_else(|| "the configuration has no listener".to_string())?,
    };
    let dest = destination::parse_authority(&args.target, Some(443))
        .map_err(|e| format!("{}: {e}", args.target))?;
    let (table, report) = build_table(&config)?;
    let resolver: Box<dyn Resolver> = if args.resolve.is_empty() {
        Box::new(SystemResolver::new(config.resolver_timeout).map_err(|e| e.to_string())?)
    } else {
        let mut r = StaticResolver::new();
        for entry in &args.resolve {
            let (name, ip) = entry
                .split_once('=')
                .and_then(|(n, ip)| ip.parse::<IpAddr>().ok().map(|ip| (n, ip)))
                .ok_or_else(|| format!("--resolve {entry}: expected NAME=IP"))?;
            r.insert(name, vec![ip]);
        }
        Box::new(r)
    };
    let host = dest.host.to_string();
    println!("destination  {}", dest.authority());
    println!(
        "listener     {} (mode {}), client {}",
        listener.name,
        listener.mode.as_str(),
        args.client
    );
    println!(
        "profile      {} ({}), GeoIP {} built {}",
        config.profile.name,
        config.profile.version,
        report.geoip.origin,
        report.geoip.build_date()
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let subject = Subject {
        listener: &listener.name,
        mode: listener.mode,
        client: args.client,
        host: &host,
        port: dest.port,
    };
    // The same vet stage as the live path.
    let vetted = runtime.block_on(vet::request(
        resolver.as_ref(),
        &table,
        &config,
        listener,
        &subject,
        &dest.host,
    ));
    let d = match vetted {
        Vetted::Decided(d) => d,
        Vetted::Unresolved(e) => {
            println!("resolve      {e}");
            print_verdict(&Decision::early(
                residency_proxy::policy::Reason::ResolveFailed,
                listener.mode,
            ));
            return Ok(ExitCode::SUCCESS);
        }
    };
    for a in &d.addrs {
        let label = table
            .label(&a.decided_by)
            .map(|l| format!(" ({l})"))
            .unwrap_or_default();
        let rule = a
            .rule
            .as_deref()
            .map(|r| format!(" rule {r}"))
            .unwrap_or_default();
        let attested = a
            .attestation
            .and_then(|i| config.policy.attestations.get(i))
            .map(|at| format!(" attested: {} ({})", at.organisation, at.basis))
            .unwrap_or_default();
        println!(
            "address      {}  {} {} via {} {}{label}  → {}{}: {}{rule}{attested}",
            a.ip,
            a.decided_by.jurisdiction,
            a.class,
            a.decided_by.source_name(),
            a.decided_by.prefix,
            a.verdict.as_str(),
            if a.would_deny { " (would deny)" } else { "" },
            a.reason.as_str()
        );
    }
    for a in d
        .addrs
        .iter()
        .filter(|a| a.decided_by.jurisdiction == Jurisdiction::GLOBAL)
    {
        let provider = a.decided_by.cloud.map_or("a cloud provider", |o| {
            Provider::from_name(o.provider()).map_or(o.provider(), Provider::display_name)
        });
        println!(
            "global       {}: anycast/edge range of {provider}: the serving location cannot be known from the address",
            a.ip
        );
    }
    print_verdict(&d);
    Ok(ExitCode::SUCCESS)
}

fn print_verdict(d: &Decision) {
    let dial: Vec<String> = d.vetted.iter().map(|v| v.addr().to_string()).collect();
    println!(
        "verdict      {} ({}, mode {}{}){}",
        d.verdict.as_str(),
        d.reason.as_str(),
        d.mode.as_str(),
        d.rule
            .as_deref()
            .map(|r| format!(", rule {r}"))
            .unwrap_or_default(),
        if d.verdict == Verdict::Allow {
            format!("; would dial {}", dial.join(", "))
        } else {
            String::new()
        }
    );
}
