//! What every request reads: the snapshot (configuration, compiled table, pools) behind one
//! `ArcSwap`, the I/O dependencies, and the shutdown and tracking handles.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub mod tunnels;

use crate::audit::{self, AuditRecord, AuditSink, Intent};
use crate::config::{Config, ListenerConfig};
use crate::destination::Resolver;
use crate::jurisdiction::{JurisdictionTable, TableInfo};
use crate::metrics::{DataState, Metrics};
use crate::policy::Verdict;
use crate::upstream::Connector;
use crate::upstream::pool::{IdleConns, PoolRegistry, PoolState};

/// Everything a request reads, swapped as one unit: a request takes one snapshot and uses it
/// throughout, so a reload never mixes versions.
#[derive(Debug)]
pub struct Snapshot {
    /// The checked configuration.
    pub config: Config,
    /// The compiled jurisdiction table.
    pub table: JurisdictionTable,
    /// GeoIP database build date, for audit records.
    pub db_version: Arc<str>,
    /// The version of every data source of the table, for audit records (`data.versions`):
    /// `geoip=2026-06-01 aws=1761894521 azure=… gcp=…`, GeoIP first, then each cloud source in
    /// load order. Shared, so a record takes a reference rather than a copy.
    pub data_versions: Arc<str>,
    /// Listeners by name, as this snapshot configures them. A request reads its listener's
    /// settings here, from the snapshot it loaded, never from its connection's accept time.
    pub listeners: Vec<Arc<ListenerConfig>>,
    /// Upstream pools of reverse routes, by name: this configuration's pools over runtime state
    /// (health, ejections, idle connections) kept in the [`PoolRegistry`] across swaps.
    pub pools: HashMap<String, Arc<PoolState>>,
}

impl Snapshot {
    /// Bundle a configuration with its table.
    pub fn new(config: Config, table: JurisdictionTable) -> Snapshot {
        let db_version = table
            .info()
            .geoip
            .as_ref()
            .map_or_else(|| "none".to_string(), |g| g.build_date())
            .into();
        let listeners = config.listeners.iter().cloned().map(Arc::new).collect();
        let data_versions = data_versions(table.info()).into();
        Snapshot {
            config,
            table,
            db_version,
            data_versions,
            listeners,
            pools: HashMap::new(),
        }
    }

    /// The record every flow on `listener` starts from: who, where, under which profile and
    /// data, and a deny until something decides otherwise. The one place a record is begun.
    pub fn record(
        &self,
        listener: &ListenerConfig,
        client: SocketAddr,
        intent: Intent,
    ) -> AuditRecord {
        AuditRecord {
            ts: audit::now_rfc3339(),
            listener: listener.name.clone(),
            client_addr: Some(client),
            intent,
            mode: listener.mode,
            profile: self.config.profile.name.clone(),
            db_version: self.db_version.clone(),
            data_versions: self.data_versions.clone(),
            decision: Verdict::Deny,
            ..AuditRecord::default()
        }
    }

    /// This snapshot's settings of listener `name`.
    pub fn listener(&self, name: &str) -> Option<&Arc<ListenerConfig>> {
        self.listeners.iter().find(|l| l.name == name)
    }

    /// What a metrics scrape reports about this snapshot's data and certificates.
    pub fn data_state(&self) -> DataState {
        let info = self.table.info();
        let geoip_build = info.geoip.as_ref().map(|g| g.build_epoch);
        let mut sources = Vec::new();
        if let Some(g) = geoip_build {
            sources.push(("geoip".to_string(), g));
        }
        for c in &info.cloud {
            if let Some(date) = c.date {
                sources.push((c.provider.name().to_string(), date));
            }
        }
        // A profile is as fresh as its least recently verified entry.
        if let Some(verified) = self
            .config
            .profile
            .entries
            .iter()
            .filter_map(|e| crate::time::parse_date(&e.last_verified))
            .min()
        {
            sources.push(("profile".to_string(), verified));
        }
        let cert_expiry = self
            .config
            .listeners
            .iter()
            .filter_map(|l| {
                let expiry = l.reverse()?.cert_expiry?;
                let secs = expiry.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
                Some((l.name.clone(), secs))
            })
            .collect();
        DataState {
            sources,
            geoip_build,
            cert_expiry,
            profile: self.config.profile.name.to_string(),
            data_versions: self.data_versions.to_string(),
        }
    }

    /// Attach this configuration's pools to their runtime state in `registry` (created for
    /// a new pool or member, kept for one that is still configured).
    pub fn attach_pools(&mut self, registry: &PoolRegistry) {
        self.pools = registry.sync(&self.config.pools);
    }
}

/// `geoip=DATE` (or `geoip=none`), then `PROVIDER=VERSION` for each cloud source.
fn data_versions(info: &TableInfo) -> String {
    let geoip = info
        .geoip
        .as_ref()
        .map_or_else(|| "none".to_string(), |g| g.build_date());
    let mut out = format!("geoip={geoip}");
    for c in &info.cloud {
        // One token per source: a version is never split by a space.
        let version: String = c
            .version
            .chars()
            .map(|ch| if ch.is_whitespace() { '_' } else { ch })
            .collect();
        let _ = write!(out, " {}={version}", c.provider.name());
    }
    out
}

/// The I/O the pipeline uses, replaceable in tests.
#[derive(Clone)]
pub struct Deps {
    /// DNS.
    pub resolver: Arc<dyn Resolver>,
    /// Upstream dialling (vetted addresses only).
    pub connector: Arc<dyn Connector>,
    /// Audit records.
    pub audit: AuditSink,
}

/// State shared by all listeners and requests.
pub struct Shared {
    /// The current snapshot.
    pub state: ArcSwap<Snapshot>,
    /// I/O dependencies.
    pub deps: Deps,
    /// Cancelled to stop accepting and finish open requests.
    pub shutdown: CancellationToken,
    /// Cancelled when the drain time is up: cut what is still open.
    pub hard: CancellationToken,
    /// Every connection and tunnel task.
    pub tracker: TaskTracker,
    /// Idle keep-alive connections of forward (absolute-form) requests, by vetted address.
    pub egress_idle: Arc<IdleConns>,
    /// Runtime state of reverse pools, by pool and member, outside any snapshot.
    pub pools: PoolRegistry,
    /// Pools whose active health check loop is running.
    pub health_loops: Mutex<HashSet<String>>,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// Open CONNECT tunnels, for re-evaluation after a reload.
    pub tunnels: Arc<tunnels::LiveTunnels>,
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;
    use crate::upstream::pool::PoolRegistry;

    fn pools(members: &str) -> Config {
        let text = format!(
            "[[listener]]\nname = \"web\"\nkind = \"reverse\"\nbind = \"127.0.0.1:0\"\ndefault_pool = \"app\"\n\n[[pool]]\nname = \"app\"\nmembers = [{members}]\neject_after = 1\neject_for = \"1h\"\n"
        );
        Config::parse(&text, "test.toml", Path::new(".")).expect("config")
    }

    #[test]
    fn data_versions_name_every_source_one_token_each() {
        use crate::jurisdiction::TableInfo;
        use crate::jurisdiction::cloud::{CloudInfo, Provider};
        use crate::jurisdiction::geoip::{GeoIpInfo, Schema};

        let cloud = |provider, version: &str| CloudInfo {
            provider,
            origin: "embedded".into(),
            version: version.into(),
            date: None,
            prefixes: 1,
            unmapped_regions: Vec::new(),
        };
        let mut info = TableInfo {
            geoip: None,
            cloud: vec![
                cloud(Provider::Aws, "1761894521"),
                cloud(Provider::Oracle, "2026-10-30 21:48"),
            ],
            prefixes: [0; 4],
        };
        assert_eq!(
            super::data_versions(&info),
            "geoip=none aws=1761894521 oracle=2026-10-30_21:48"
        );
        info.geoip = Some(GeoIpInfo {
            origin: "embedded".into(),
            database_type: "DBIP-Country-Lite".into(),
            build_epoch: 1_780_272_000,
            schema: Schema::MaxMind,
            networks: 0,
            without_country: 0,
            unknown_codes: 0,
        });
        info.cloud.clear();
        assert_eq!(super::data_versions(&info), "geoip=2026-06-01");
    }

    #[test]
    fn pool_runtime_state_survives_a_swap_for_members_still_configured() {
        let registry = PoolRegistry::default();
        let first = registry.sync(&pools("\"10.0.0.1:80\", \"10.0.0.2:80\"").pools);
        let app = first.get("app").expect("pool");
        app.report(0, false);
        assert!(!app.available(0), "ejected after one failure");

        // Same pool, one member kept, one replaced, one added.
        let second =
            registry.sync(&pools("\"10.0.0.1:80\", \"10.0.0.3:80\", \"10.0.0.2:80\"").pools);
        let app2 = second.get("app").expect("pool");
        assert!(
            !app2.available(0),
            "10.0.0.1 is still ejected after the swap"
        );
        assert!(app2.available(1), "a new member starts in service");
        assert!(app2.available(2), "10.0.0.2 kept its (healthy) state");
        assert!(
            std::sync::Arc::ptr_eq(app.idle(), app2.idle()),
            "idle connections are kept"
        );

        // A pool dropped and configured again starts fresh.
        let none = registry.sync(&[]);
        assert!(none.is_empty());
        let third = registry.sync(&pools("\"10.0.0.1:80\"").pools);
        assert!(third.get("app").expect("pool").available(0));
    }
}
