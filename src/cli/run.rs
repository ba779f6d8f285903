//! `run`: compile everything, bind, serve until SIGTERM/SIGINT, drain.

use std::process::ExitCode;
use std::sync::Arc;

use residency_proxy::audit::{self, AuditTarget, SealOptions, StartInfo};
use residency_proxy::config::{AuditOutput, Config};
use residency_proxy::destination::SystemResolver;
use residency_proxy::jurisdiction::JurisdictionTable;
use residency_proxy::reload::{Loader, Reload};
use residency_proxy::server::{self, Deps, Snapshot};
use residency_proxy::upstream::TcpConnector;

use super::{
    CliError, LogFormat, RunArgs, build_table, load_config, log_cloud_sources, warn_if_stale,
};

/// `run`: compile everything, bind, serve until SIGTERM/SIGINT, drain.
pub fn cmd_run(args: &RunArgs) -> Result<ExitCode, CliError> {
    init_logging(args.log_format);
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
    residency_proxy::reload::release_freed_memory();
    let runtime = runtime_builder()
        .enable_all()
        .build()
        .map_err(|e| CliError::Os(format!("cannot start the runtime: {e}")))?;
    let (path, geoip) = (args.config.clone(), args.geoip.clone());
    // A reload re-reads the same file (or the embedded configuration) and every file it names.
    let loader: Loader = Arc::new(move || {
        let config = load_config(path.as_ref(), geoip.as_ref())?;
        let (table, report) = build_table(&config)?;
        warn_if_stale(&report);
        log_cloud_sources(&report);
        Ok(Snapshot::new(config, table))
    });
    runtime
        .block_on(serve(config, table, loader))
        .map_err(CliError::Os)?;
    Ok(ExitCode::SUCCESS)
}

/// The multi-thread scheduler on a machine (or CPU set) with several CPUs; on one CPU, the
/// current-thread scheduler, which does the same work with no cross-thread queues or wake-ups
/// (12 % less CPU per small reverse request than a one-worker multi-thread runtime, measured
/// pinned to one CPU). Blocking work goes to the blocking pool either way.
fn runtime_builder() -> tokio::runtime::Builder {
    match std::thread::available_parallelism() {
        Ok(n) if n.get() == 1 => {
            tracing::info!(scheduler = "current-thread", cpus = 1, "Runtime");
            tokio::runtime::Builder::new_current_thread()
        }
        n => {
            let cpus = n.map_or(0, std::num::NonZero::get);
            tracing::info!(scheduler = "multi-thread", cpus, "Runtime");
            tokio::runtime::Builder::new_multi_thread()
        }
    }
}

/// Log lines on stderr, filtered by `RUST_LOG` (default `info`); the audit stream is separate.
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Human => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}

/// How the audit writer seals its lines: the start line names this configuration and its data;
/// the key is the one configured at start (a reload does not change it).
fn seal_options(snapshot: &Snapshot) -> SealOptions {
    let audit = &snapshot.config.audit;
    SealOptions {
        start: StartInfo {
            config_digest: Some(snapshot.config.digest.clone()),
            data_versions: snapshot.data_versions.to_string(),
            profile: snapshot.config.profile.name.to_string(),
            db_version: snapshot.db_version.to_string(),
        },
        key: audit.signing_key.clone(),
        checkpoint_records: audit.checkpoint_records,
        checkpoint_interval: audit.checkpoint_interval,
    }
}

async fn serve(config: Config, table: JurisdictionTable, loader: Loader) -> Result<(), String> {
    let target = match &config.audit.output {
        AuditOutput::Stdout => AuditTarget::Stdout,
        AuditOutput::File(p) => AuditTarget::File(p.clone()),
    };
    let (queue, full_wait) = (config.audit.queue, config.audit.full_wait);
    let drain = config.limits.drain_timeout;
    let admin = config.admin.clone();
    let resolver = SystemResolver::new(config.resolver_timeout).map_err(|e| e.to_string())?;
    let snapshot = Snapshot::new(config, table);
    if let Some(key) = &snapshot.config.audit.signing_key {
        tracing::info!(key.id = key.id(), "Audit checkpoints are signed");
    }
    let (sink, writer) = audit::spawn_sealed(target, queue, full_wait, seal_options(&snapshot))
        .map_err(|e| format!("audit output: {e}"))?;
    let _reopen = audit::spawn_reopen_on_sigusr1(sink.clone())
        .map_err(|e| format!("SIGUSR1 handler: {e}"))?;
    let deps = Deps {
        resolver: Arc::new(resolver),
        connector: Arc::new(TcpConnector),
        audit: sink.clone(),
    };
    let handle = server::start(snapshot, deps)
        .await
        .map_err(|e| e.to_string())?;
    let _refresh = residency_proxy::refresh::spawn_configured(&handle)?;
    let reload = Reload::new(handle.reloader(), loader);
    let _hup = reload
        .spawn_on_sighup()
        .map_err(|e| format!("SIGHUP handler: {e}"))?;
    for (name, addr) in handle.listeners() {
        eprintln!("residency-proxy: listener {name} on {addr}");
    }
    if admin.enabled {
        let (addr, _admin) = residency_proxy::admin::serve(reload.clone(), admin.bind)
            .await
            .map_err(|e| e.to_string())?;
        eprintln!("residency-proxy: admin on {addr}");
    }
    residency_proxy::reload::set_serving_purge_delay();
    residency_proxy::reload::release_startup_pages();
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
