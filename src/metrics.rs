//! Prometheus metrics: every family declared once, here, with labels only from closed sets.
//!
//! Flow metrics (decisions, requests, durations, bytes) are observed from each audit record as
//! it is emitted ([`Metrics::observe`], installed as the audit sink's observer), so they count
//! exactly what the audit trail holds: one observation per flow, never a second code path to
//! drift from the first. Gauges of the running state (connections, tunnels) move with RAII
//! guards; data ages, certificate expiry and the audit writer's counters are read when a
//! scrape renders them ([`Metrics::render`]).
//!
//! Label values are bounded: `listener` is a configured name, `class`, `reason`, `intent`,
//! `decision` and `mode` come from closed enums, and `jurisdiction` is one of the active
//! profile's entries, a special-space label (`internal`, `metadata`, `reserved`), `unknown`,
//! `other` (any other country) or `none` (no address was looked up). A host name or a client
//! address is never a label.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::audit::{AuditRecord, Intent};
use flows::{FlowEntry, FlowLabels};

mod flows;
use crate::policy::Profile;

/// The metric family names, each declared once.
pub mod names {
    /// Decisions by listener, decision, mode, class, reason and jurisdiction.
    pub const DECISIONS: &str = "residency_proxy_decisions_total";
    /// Requests (and tunnels) by listener, intent and status class.
    pub const REQUESTS: &str = "residency_proxy_requests_total";
    /// Request (or tunnel) duration by listener and intent.
    pub const REQUEST_DURATION: &str = "residency_proxy_request_duration_seconds";
    /// Time to connect to an upstream address.
    pub const UPSTREAM_CONNECT: &str = "residency_proxy_upstream_connect_seconds";
    /// Time to resolve a destination name.
    pub const DNS_RESOLVE: &str = "residency_proxy_dns_resolve_seconds";
    /// Client connections being served, by listener.
    pub const ACTIVE_CONNECTIONS: &str = "residency_proxy_active_connections";
    /// CONNECT tunnels open, by listener.
    pub const OPEN_TUNNELS: &str = "residency_proxy_open_tunnels";
    /// Bytes through tunnels, by direction.
    pub const TUNNEL_BYTES: &str = "residency_proxy_tunnel_bytes_total";
    /// Bytes of request and response bodies, by direction.
    pub const BODY_BYTES: &str = "residency_proxy_body_bytes_total";
    /// Tunnels closed because a reload's policy denies them.
    pub const TUNNELS_CLOSED_BY_RELOAD: &str = "residency_proxy_tunnels_closed_by_reload_total";
    /// Configuration reloads by result.
    pub const RELOADS: &str = "residency_proxy_config_reloads_total";
    /// When the last reload succeeded (Unix seconds; the start counts as the first).
    pub const LAST_RELOAD_SUCCESS: &str =
        "residency_proxy_config_last_reload_success_timestamp_seconds";
    /// Build time of the GeoIP database in use.
    pub const GEOIP_BUILD: &str = "residency_proxy_geoip_database_build_timestamp_seconds";
    /// Build or publication time of each data source, by source.
    pub const DATA_SOURCE_TIMESTAMP: &str = "residency_proxy_data_source_timestamp_seconds";
    /// Age of each data source, by source.
    pub const DATA_SOURCE_AGE: &str = "residency_proxy_data_source_age_seconds";
    /// When each TLS listener's certificate expires (the earliest of its certificates).
    pub const CERT_EXPIRY: &str = "residency_proxy_certificate_expiry_timestamp_seconds";
    /// Audit records written to the audit output.
    pub const AUDIT_WRITTEN: &str = "residency_proxy_audit_records_written_total";
    /// Audit records that went to the fallback (overflow) log instead.
    pub const AUDIT_OVERFLOWED: &str = "residency_proxy_audit_records_overflowed_total";
    /// Audit records that could be written nowhere.
    pub const AUDIT_DROPPED: &str = "residency_proxy_audit_dropped_total";
    /// Always 1; the version and the data versions are its labels.
    pub const BUILD_INFO: &str = "residency_proxy_build_info";
    /// When the process started (Unix seconds).
    pub const START_TIME: &str = "residency_proxy_process_start_time_seconds";
}

/// Label sets of flows whose handles are kept: a proxy's traffic is mostly a few at a time.
const FLOW_CACHE: usize = 16;

/// The `direction` label's values, in the order of the by-direction handles.
const DIRECTIONS: [&str; 2] = ["up", "down"];

/// Labels a `jurisdiction` may take besides the active profile's entries.
const SPECIAL_JURISDICTIONS: [&str; 5] = ["internal", "metadata", "reserved", "unknown", "none"];

/// Counters the audit writer keeps, read at scrape time.
#[derive(Debug, Clone, Copy, Default)]
pub struct AuditCounts {
    /// Records written to the audit output.
    pub written: u64,
    /// Records that went to the fallback log.
    pub overflowed: u64,
    /// Records lost entirely.
    pub dropped: u64,
}

/// What a scrape reports about the data and certificates in use (from the current snapshot).
#[derive(Debug, Clone, Default)]
pub struct DataState {
    /// `(source, Unix seconds)` for each data source whose date is known.
    pub sources: Vec<(String, u64)>,
    /// Build time of the GeoIP database, if there is one.
    pub geoip_build: Option<u64>,
    /// `(listener, Unix seconds)`: earliest certificate expiry of each TLS listener.
    pub cert_expiry: Vec<(String, u64)>,
    /// The active profile's name.
    pub profile: String,
    /// The data versions string of audit records.
    pub data_versions: String,
}

/// Every metric family of the proxy.
pub struct Metrics {
    registry: Registry,
    decisions: IntCounterVec,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    upstream_connect: Histogram,
    dns_resolve: Histogram,
    active_connections: IntGaugeVec,
    open_tunnels: IntGaugeVec,
    tunnels_closed_by_reload: IntCounter,
    reloads: IntCounterVec,
    last_reload_success: Gauge,
    geoip_build: Gauge,
    data_source_timestamp: GaugeVec,
    data_source_age: GaugeVec,
    cert_expiry: GaugeVec,
    audit_written: IntCounter,
    audit_overflowed: IntCounter,
    audit_dropped: IntCounter,
    build_info: IntGaugeVec,
    /// Jurisdiction labels allowed besides the special ones: the active profile's entries.
    jurisdictions: ArcSwap<HashSet<String>>,
    /// Body and tunnel byte counters by direction: `[up, down]`.
    body_dirs: [IntCounter; 2],
    tunnel_dirs: [IntCounter; 2],
    /// Handles of recently seen flow label sets, at most [`FLOW_CACHE`].
    flows: Mutex<Vec<FlowEntry>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Metrics {
    /// Every family, registered, with the start time and a first successful "reload" (the
    /// start) recorded.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let m = Metrics::register(&registry).unwrap_or_else(|e| {
            // Only a programming error (a duplicate or malformed name) gets here, and the
            // metric names are constants: fail loudly in tests rather than run unobserved.
            panic!("metric families are malformed: {e}")
        });
        m.last_reload_success.set(now_secs());
        m
    }

    fn register(registry: &Registry) -> prometheus::Result<Metrics> {
        use names::*;
        fn reg<C: prometheus::core::Collector + Clone + 'static>(
            r: &Registry,
            c: C,
        ) -> prometheus::Result<C> {
            r.register(Box::new(c.clone()))?;
            Ok(c)
        }
        let counter = |name: &str, help: &str, labels: &[&str]| {
            reg(registry, IntCounterVec::new(Opts::new(name, help), labels)?)
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            reg(registry, GaugeVec::new(Opts::new(name, help), labels)?)
        };
        let tunnel_bytes = counter(
            TUNNEL_BYTES,
            "Bytes through tunnels, counted when each tunnel ends.",
            &["direction"],
        )?;
        let body_bytes = counter(
            BODY_BYTES,
            "Bytes of request (up) and response (down) bodies, counted when each request ends.",
            &["direction"],
        )?;
        let m = Metrics {
            decisions: counter(
                DECISIONS,
                "Decisions, one per flow, as in the audit trail.",
                &[
                    "listener",
                    "decision",
                    "mode",
                    "class",
                    "reason",
                    "jurisdiction",
                ],
            )?,
            requests: counter(
                REQUESTS,
                "Requests and tunnels by the status class answered (none: no HTTP answer).",
                &["listener", "intent", "status_class"],
            )?,
            request_duration: reg(
                registry,
                HistogramVec::new(
                    HistogramOpts::new(REQUEST_DURATION, "Request or tunnel duration."),
                    &["listener", "intent"],
                )?,
            )?,
            upstream_connect: reg(
                registry,
                Histogram::with_opts(HistogramOpts::new(
                    UPSTREAM_CONNECT,
                    "Time to connect to a vetted upstream address.",
                ))?,
            )?,
            dns_resolve: reg(
                registry,
                Histogram::with_opts(HistogramOpts::new(
                    DNS_RESOLVE,
                    "Time to resolve a destination name.",
                ))?,
            )?,
            active_connections: reg(
                registry,
                IntGaugeVec::new(
                    Opts::new(ACTIVE_CONNECTIONS, "Client connections being served."),
                    &["listener"],
                )?,
            )?,
            open_tunnels: reg(
                registry,
                IntGaugeVec::new(
                    Opts::new(OPEN_TUNNELS, "CONNECT tunnels open."),
                    &["listener"],
                )?,
            )?,
            body_dirs: [0, 1].map(|i| body_bytes.with_label_values(&[DIRECTIONS[i]])),
            tunnel_dirs: [0, 1].map(|i| tunnel_bytes.with_label_values(&[DIRECTIONS[i]])),
            flows: Mutex::new(Vec::new()),
            tunnels_closed_by_reload: reg(
                registry,
                IntCounter::new(
                    TUNNELS_CLOSED_BY_RELOAD,
                    "Open tunnels closed because the reloaded policy denies them.",
                )?,
            )?,
            reloads: counter(RELOADS, "Configuration reloads by result.", &["result"])?,
            last_reload_success: reg(
                registry,
                Gauge::new(
                    LAST_RELOAD_SUCCESS,
                    "When the configuration last loaded successfully (start or reload).",
                )?,
            )?,
            geoip_build: reg(
                registry,
                Gauge::new(GEOIP_BUILD, "Build time of the GeoIP database in use.")?,
            )?,
            data_source_timestamp: gauge(
                DATA_SOURCE_TIMESTAMP,
                "Build, publication or last-verified time of each data source.",
                &["source"],
            )?,
            data_source_age: gauge(
                DATA_SOURCE_AGE,
                "Age of each data source at the time of the scrape.",
                &["source"],
            )?,
            cert_expiry: gauge(
                CERT_EXPIRY,
                "Earliest certificate expiry of each TLS listener.",
                &["listener"],
            )?,
            audit_written: reg(
                registry,
                IntCounter::new(AUDIT_WRITTEN, "Audit records written to the audit output.")?,
            )?,
            audit_overflowed: reg(
                registry,
                IntCounter::new(
                    AUDIT_OVERFLOWED,
                    "Audit records written to the fallback log instead of the audit output.",
                )?,
            )?,
            audit_dropped: reg(
                registry,
                IntCounter::new(
                    AUDIT_DROPPED,
                    "Audit records that could be written nowhere.",
                )?,
            )?,
            build_info: reg(
                registry,
                IntGaugeVec::new(
                    Opts::new(BUILD_INFO, "Version and data versions (always 1)."),
                    &["version", "profile", "data_versions"],
                )?,
            )?,
            jurisdictions: ArcSwap::from_pointee(HashSet::new()),
            registry: registry.clone(),
        };
        let start = reg(
            registry,
            Gauge::new(START_TIME, "When the process started.")?,
        )?;
        start.set(now_secs());
        for result in ["success", "error"] {
            m.reloads.with_label_values(&[result]);
        }
        Ok(m)
    }

    /// Bound the `jurisdiction` label to `profile`'s entries (at start and after a reload).
    pub fn set_profile(&self, profile: &Profile) {
        let set: HashSet<String> = profile.entries.iter().map(|e| e.code.clone()).collect();
        self.jurisdictions.store(Arc::new(set));
    }

    /// Show every configured listener's gauges, at 0 until it has connections or tunnels.
    pub fn set_listeners<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        for name in names {
            self.active_connections.with_label_values(&[name]);
            self.open_tunnels.with_label_values(&[name]);
        }
    }

    /// Count one flow from its audit record.
    pub fn observe(&self, rec: &AuditRecord) {
        let addr = rec
            .dialed_ip
            .and_then(|ip| rec.dest_addrs.iter().find(|a| a.ip == ip))
            .or_else(|| rec.dest_addrs.first());
        let jurisdictions = self.jurisdictions.load();
        let (class, jurisdiction) = match addr {
            None => ("none", "none"),
            Some(a) => {
                let j = &*a.jurisdiction;
                let bounded = if SPECIAL_JURISDICTIONS.contains(&j) || jurisdictions.contains(j) {
                    j
                } else {
                    "other"
                };
                (&*a.class, bounded)
            }
        };
        let labels = FlowLabels {
            listener: rec.listener.as_str(),
            intent: rec.intent.as_str(),
            status_class: status_class(rec.status),
            decision: rec.decision.as_str(),
            mode: rec.mode.as_str(),
            class,
            reason: rec.reason.as_str(),
            jurisdiction,
        };
        self.flow(&labels, |f| {
            f.decisions.inc();
            f.requests.inc();
            f.duration.observe(rec.duration_ms / 1000.0);
        });
        let [up, down] = if rec.intent == Intent::Connect {
            &self.tunnel_dirs
        } else {
            &self.body_dirs
        };
        if rec.bytes_up > 0 {
            up.inc_by(rec.bytes_up);
        }
        if rec.bytes_down > 0 {
            down.inc_by(rec.bytes_down);
        }
    }

    /// Run `f` on the handles of the flow label set `l`: kept ones when it was seen recently,
    /// else found in their families and kept. A hit moves one place towards the front, so the
    /// busiest label sets are found first; a miss, when all places are taken, replaces the
    /// last one.
    fn flow(&self, l: &FlowLabels<'_>, f: impl FnOnce(&FlowEntry)) {
        let mut flows = self
            .flows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(i) = flows.iter().position(|e| e.is(l)) {
            let at = i.saturating_sub(1);
            flows.swap(i, at);
            if let Some(e) = flows.get(at) {
                f(e);
            }
            return;
        }
        let entry = FlowEntry {
            listener: l.listener.into(),
            intent: l.intent,
            status_class: l.status_class,
            decision: l.decision,
            mode: l.mode,
            class: l.class.into(),
            reason: l.reason,
            jurisdiction: l.jurisdiction.into(),
            decisions: self.decisions.with_label_values(&[
                l.listener,
                l.decision,
                l.mode,
                l.class,
                l.reason,
                l.jurisdiction,
            ]),
            requests: self
                .requests
                .with_label_values(&[l.listener, l.intent, l.status_class]),
            duration: self
                .request_duration
                .with_label_values(&[l.listener, l.intent]),
        };
        f(&entry);
        if flows.len() >= FLOW_CACHE {
            flows.pop();
        }
        flows.push(entry);
    }

    /// A client connection on `listener` is being served until the guard drops.
    pub fn connection(&self, listener: &str) -> GaugeGuard {
        GaugeGuard::new(self.active_connections.with_label_values(&[listener]))
    }

    /// A tunnel on `listener` is open until the guard drops.
    pub fn tunnel(&self, listener: &str) -> GaugeGuard {
        GaugeGuard::new(self.open_tunnels.with_label_values(&[listener]))
    }

    /// An upstream connect took `seconds`.
    pub fn upstream_connected(&self, seconds: f64) {
        self.upstream_connect.observe(seconds);
    }

    /// A name resolution took `seconds`.
    pub fn resolved(&self, seconds: f64) {
        self.dns_resolve.observe(seconds);
    }

    /// A reload finished: `ok` or not.
    pub fn reloaded(&self, ok: bool) {
        self.reloads
            .with_label_values(&[if ok { "success" } else { "error" }])
            .inc();
        if ok {
            self.last_reload_success.set(now_secs());
        }
    }

    /// `n` tunnels were closed because the reloaded policy denies them.
    pub fn tunnels_closed_by_reload(&self, n: u64) {
        self.tunnels_closed_by_reload.inc_by(n);
    }

    /// The Prometheus text exposition of every family, with the scrape-time values of `data`
    /// and `audit` filled in first.
    pub fn render(&self, data: &DataState, audit: AuditCounts) -> String {
        let now = now_secs();
        self.data_source_timestamp.reset();
        self.data_source_age.reset();
        for (source, ts) in &data.sources {
            self.data_source_timestamp
                .with_label_values(&[source])
                .set(*ts as f64);
            self.data_source_age
                .with_label_values(&[source])
                .set((now - *ts as f64).max(0.0));
        }
        if let Some(g) = data.geoip_build {
            self.geoip_build.set(g as f64);
        }
        self.cert_expiry.reset();
        for (listener, ts) in &data.cert_expiry {
            self.cert_expiry
                .with_label_values(&[listener])
                .set(*ts as f64);
        }
        catch_up(&self.audit_written, audit.written);
        catch_up(&self.audit_overflowed, audit.overflowed);
        catch_up(&self.audit_dropped, audit.dropped);
        self.build_info.reset();
        self.build_info
            .with_label_values(&[
                env!("CARGO_PKG_VERSION"),
                &data.profile,
                &data.data_versions,
            ])
            .set(1);
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "Cannot encode the metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

impl crate::audit::RecordObserver for Metrics {
    fn observe(&self, rec: &AuditRecord) {
        Metrics::observe(self, rec);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Move a counter that mirrors a monotonic count kept elsewhere up to `value`.
fn catch_up(counter: &IntCounter, value: u64) {
    let now = counter.get();
    if value > now {
        counter.inc_by(value - now);
    }
}

/// `2xx`-style class of an HTTP status; `none` when no HTTP answer was given.
fn status_class(status: Option<u16>) -> &'static str {
    match status {
        Some(100..=199) => "1xx",
        Some(200..=299) => "2xx",
        Some(300..=399) => "3xx",
        Some(400..=499) => "4xx",
        Some(500..=599) => "5xx",
        _ => "none",
    }
}

/// Holds a gauge up by one until dropped.
#[derive(Debug)]
pub struct GaugeGuard(IntGauge);

impl GaugeGuard {
    fn new(g: IntGauge) -> GaugeGuard {
        g.inc();
        GaugeGuard(g)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests;
