//! What every request reads: the snapshot (configuration, compiled table, pools) behind one
//! `ArcSwap`, the I/O dependencies, and the shutdown and tracking handles.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::audit::AuditSink;
use crate::config::Config;
use crate::destination::Resolver;
use crate::jurisdiction::JurisdictionTable;
use crate::upstream::Connector;
use crate::upstream::pool::{IdleConns, PoolState};

/// Everything a request reads, swapped as one unit: a request takes one snapshot and uses it
/// throughout, so a reload never mixes versions.
#[derive(Debug)]
pub struct Snapshot {
    /// The checked configuration.
    pub config: Config,
    /// The compiled jurisdiction table.
    pub table: JurisdictionTable,
    /// GeoIP database build date, for audit records.
    pub db_version: String,
    /// Upstream pools of reverse routes, by name.
    pub pools: HashMap<String, Arc<PoolState>>,
}

impl Snapshot {
    /// Bundle a configuration with its table.
    pub fn new(config: Config, table: JurisdictionTable) -> Snapshot {
        let db_version = table
            .info()
            .geoip
            .as_ref()
            .map_or_else(|| "none".to_string(), |g| g.build_date());
        let pools = config
            .pools
            .iter()
            .map(|p| (p.name.clone(), PoolState::new(p.clone())))
            .collect();
        Snapshot {
            config,
            table,
            db_version,
            pools,
        }
    }
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
}
