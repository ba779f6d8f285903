//! The `run`, `check` and `explain` commands of the binary.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use residency_proxy::audit::{self, AuditTarget};
use residency_proxy::config::{AuditOutput, Config};
use residency_proxy::destination::{self, Resolver, StaticResolver, SystemResolver};
use residency_proxy::jurisdiction::cloud::Provider;
use residency_proxy::jurisdiction::load::{self, LoadReport};
use residency_proxy::jurisdiction::{Jurisdiction, JurisdictionTable};
use residency_proxy::policy::{Decision, Subject, Verdict};
use residency_proxy::server::{self, Deps, Snapshot};
use residency_proxy::upstream::TcpConnector;
use residency_proxy::vet::{self, Vetted};

use super::{CheckArgs, ExplainArgs, RunArgs};

/// Exit code for an environment failure after the configuration was accepted (EX_OSERR).
const EXIT_OS: u8 = 71;

fn load_config(path: Option<&PathBuf>, geoip: Option<&PathBuf>) -> Result<Config, String> {
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

fn build_table(config: &Config) -> Result<(JurisdictionTable, LoadReport), String> {
    load::load(&config.jurisdiction).map_err(|e| e.to_string())
}

fn warn_if_stale(report: &LoadReport) {
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

fn log_cloud_sources(report: &LoadReport) {
    for c in &report.providers {
        tracing::info!(provider = c.provider.name(), version = %c.version, origin = %c.origin, prefixes = c.prefixes, "Cloud ranges loaded");
    }
    residency_proxy::jurisdiction::cloud::warn_if_stale(&report.providers);
}

/// `run`: compile everything, bind, serve until SIGTERM/SIGINT, drain.
pub fn cmd_run(args: &RunArgs) -> Result<ExitCode, String> {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
    let config = load_config(args.config.as_ref(), args.geoip.as_ref())?;
    let (table, report) = build_table(&config)?;
    tracing::info!(
        source = %config.source,
        profile = %config.profile.name,
        db.version = %report.geoip.build_date(),
        geoip = %report.geoip.origin,
        networks = report.geoip.networks,
        build_ms = report.build_ms,
        "Configuration and jurisdiction table compiled"
    );
    warn_if_stale(&report);
    log_cloud_sources(&report);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let result = runtime.block_on(serve(config, table));
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("residency-proxy: {e}");
            Ok(ExitCode::from(EXIT_OS))
        }
    }
}

async fn serve(config: Config, table: JurisdictionTable) -> Result<(), String> {
    let target = match &config.audit.output {
        AuditOutput::Stdout => AuditTarget::Stdout,
        AuditOutput::File(p) => AuditTarget::File(p.clone()),
    };
    let (sink, writer) = audit::spawn(target, config.audit.queue, config.audit.full_wait)
        .map_err(|e| format!("audit output: {e}"))?;
    let _reopen = audit::spawn_reopen_on_sigusr1(sink.clone())
        .map_err(|e| format!("SIGUSR1 handler: {e}"))?;
    let resolver = SystemResolver::new(config.resolver_timeout).map_err(|e| e.to_string())?;
    let drain = config.limits.drain_timeout;
    let deps = Deps {
        resolver: Arc::new(resolver),
        connector: Arc::new(TcpConnector),
        audit: sink.clone(),
    };
    let handle = server::start(Snapshot::new(config, table), deps)
        .await
        .map_err(|e| e.to_string())?;
    for (name, addr) in handle.listeners() {
        eprintln!("residency-proxy: listener {name} on {addr}");
    }
    wait_for_signal().await?;
    tracing::info!(
        drain_s = drain.as_secs_f64(),
        "Shutting down: draining open work"
    );
    // Returns once the record of every flow, cut ones included, is in the writer's queue.
    let drained = handle.shutdown(drain).await;
    if !drained {
        tracing::warn!("Drain time ran out: open requests and tunnels were cut");
    }
    // Writes and flushes every queued record before the process exits.
    let flushed = writer.shutdown().await;
    let (dropped, unwritten) = (sink.dropped(), sink.unwritten());
    if dropped + unwritten > 0 {
        tracing::error!(
            dropped,
            unwritten,
            "Audit records went to the audit_overflow log instead of the audit output"
        );
    }
    flushed.map_err(|e| format!("audit flush: {e}"))
}

async fn wait_for_signal() -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

/// `check`: validate only.
pub fn cmd_check(args: &CheckArgs) -> Result<ExitCode, String> {
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

/// `explain`: the decision chain for one destination, without connecting.
pub fn cmd_explain(args: &ExplainArgs) -> Result<ExitCode, String> {
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
