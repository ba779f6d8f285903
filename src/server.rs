//! Start the proxy: bind every listener (after the configuration and tables are compiled),
//! serve until shutdown, then drain.

use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod listeners;
mod timed;

use crate::metrics::{AuditCounts, Metrics};
use crate::state::tunnels::LiveTunnels;
pub use crate::state::{Deps, Shared, Snapshot};
use crate::upstream::pool::{IdleConns, PoolRegistry};
use listeners::ListenerSet;
use timed::{TimedConnector, TimedResolver};

/// How long [`ProxyHandle::shutdown`] waits, after every flow has ended, for their records
/// to reach the audit queue before it reports the ones still open.
const RECORDS_WAIT: Duration = Duration::from_secs(30);

/// A running proxy.
pub struct ProxyHandle {
    shared: Arc<Shared>,
    reloader: Reloader,
}

/// Replaces the running proxy's snapshot; cloneable, for tasks that outlive a borrow of the
/// [`ProxyHandle`] (reload, the cloud-range refresh, the admin listener). Swaps are
/// serialised: one that derives its snapshot from the current one ([`Reloader::swap_with`])
/// never overwrites another's.
#[derive(Clone)]
pub struct Reloader {
    shared: Arc<Shared>,
    swaps: Arc<Mutex<()>>,
    listeners: Arc<Mutex<ListenerSet>>,
}

/// What [`Reloader::apply`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Listeners bound (or moved to a new name or kind), by name.
    pub added: Vec<String>,
    /// Listeners stopped (or moved), by name.
    pub removed: Vec<String>,
    /// Open tunnels the new policy denies, closed.
    pub tunnels_closed: usize,
}

impl Reloader {
    /// The snapshot requests starting now decide on.
    pub fn current(&self) -> Arc<Snapshot> {
        self.shared.state.load_full()
    }

    /// Replace the snapshot with the one `next` derives from the current one, if it returns
    /// one (see [`ProxyHandle::swap`]). Returns whether the snapshot was replaced.
    pub fn swap_with(&self, next: impl FnOnce(&Snapshot) -> Option<Snapshot>) -> bool {
        let _one_at_a_time = self.swaps.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.shared.state.load_full();
        let Some(snapshot) = next(&current) else {
            return false;
        };
        self.store(snapshot);
        true
    }

    fn store(&self, mut snapshot: Snapshot) {
        snapshot.attach_pools(&self.shared.pools);
        self.shared.metrics.set_profile(&snapshot.config.profile);
        self.shared
            .metrics
            .set_listeners(snapshot.listeners.iter().map(|l| l.name.as_str()));
        self.shared.state.store(Arc::new(snapshot));
        spawn_health_loops(&self.shared);
    }

    /// A reload: make `snapshot` current together with its listeners. Every address it adds
    /// is bound first; if one cannot be, nothing changes and the error says which. Then the
    /// snapshot is swapped (requests already running finish on theirs), removed listeners stop
    /// accepting (their connections drain), added ones start, and, with
    /// `policy.reevaluate_tunnels`, every open tunnel the new policy denies is closed.
    pub fn apply(&self, snapshot: Snapshot) -> Result<Applied, String> {
        let _one_at_a_time = self.swaps.lock().unwrap_or_else(PoisonError::into_inner);
        let mut set = self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let plan = set.plan(&snapshot.listeners).map_err(|e| e.to_string())?;
        let (added, removed) = plan.changes(&set);
        let reevaluate = snapshot.config.reevaluate_tunnels;
        self.store(snapshot);
        set.apply(&self.shared, plan).map_err(|e| e.to_string())?;
        drop(set);
        let tunnels_closed = if reevaluate {
            crate::pipeline::connect::reevaluate(&self.shared, &self.shared.state.load())
        } else {
            0
        };
        self.shared
            .metrics
            .tunnels_closed_by_reload(tunnels_closed as u64);
        Ok(Applied {
            added,
            removed,
            tunnels_closed,
        })
    }

    /// Every listener and its bound address.
    pub fn listeners(&self) -> Vec<(String, SocketAddr)> {
        self.listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .addrs()
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    /// The Prometheus exposition of the metrics, as of now.
    pub fn render_metrics(&self) -> String {
        let audit = &self.shared.deps.audit;
        let counts = AuditCounts {
            written: audit.written(),
            overflowed: audit.dropped() + audit.unwritten(),
            dropped: 0,
        };
        self.shared
            .metrics
            .render(&self.current().data_state(), counts)
    }

    /// The I/O dependencies (the resolver `explain` uses).
    pub fn deps(&self) -> &Deps {
        &self.shared.deps
    }

    /// Whether the proxy is draining for shutdown (not ready for new work).
    pub fn draining(&self) -> bool {
        self.shared.shutdown.is_cancelled()
    }

    /// Cancelled when the proxy starts shutting down.
    pub fn shutdown(&self) -> CancellationToken {
        self.shared.shutdown.clone()
    }
}

impl ProxyHandle {
    /// Bound address of a listener.
    pub fn addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| a)
    }

    /// Every listener and its bound address.
    pub fn listeners(&self) -> Vec<(String, SocketAddr)> {
        self.reloader.listeners()
    }

    /// Replace the snapshot: requests that start after this decide on `snapshot`; requests
    /// already running finish on the one they loaded. Pool runtime state (health, ejections,
    /// idle connections) carries over for pools and members still configured, and a pool that
    /// gains an active health check gets its loop. Listeners are not re-bound and tunnels are
    /// not re-decided: [`Reloader::apply`] does both.
    pub fn swap(&self, snapshot: Snapshot) {
        self.reloader.swap_with(|_| Some(snapshot));
    }

    /// A reload with listener changes and tunnel re-evaluation ([`Reloader::apply`]).
    pub fn apply(&self, snapshot: Snapshot) -> Result<Applied, String> {
        self.reloader.apply(snapshot)
    }

    /// The snapshot requests starting now decide on.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.reloader.current()
    }

    /// A cloneable handle that replaces the snapshot.
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    /// Stop accepting, let open requests and tunnels finish for up to `drain`, then cut them.
    /// Returns true if everything finished within `drain`, false if flows were cut.
    ///
    /// When this returns, the record of every request and tunnel the proxy handled, the cut
    /// ones included, has been handed to the audit writer (or to the fallback log): what is
    /// left is [`crate::audit::AuditWriter::shutdown`], which writes and flushes them.
    pub async fn shutdown(self, drain: Duration) -> bool {
        self.shared.shutdown.cancel();
        let joins = self
            .reloader
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take_joins();
        for a in joins {
            let _ = a.await;
        }
        self.shared.tracker.close();
        let drained = tokio::time::timeout(drain, self.shared.tracker.wait())
            .await
            .is_ok();
        let audit = &self.shared.deps.audit;
        if !drained {
            audit.note_drain_cut();
            self.shared.hard.cancel();
            self.shared.tracker.wait().await;
        }
        // Every connection, stream and tunnel task has ended, so every recorder has been
        // finished or dropped; wait for the records still waiting for queue space (bounded
        // by `audit.full_wait` each). The bound only guards against a recorder kept alive
        // outside the tracked tasks, which would be a bug.
        if tokio::time::timeout(RECORDS_WAIT, audit.settled())
            .await
            .is_err()
        {
            tracing::error!(
                records = audit.in_flight(),
                "Audit records still open after shutdown"
            );
        }
        drained
    }
}

/// Bind every listener of the snapshot's configuration and start serving. The resolver and
/// connector of `deps` are timed into the metrics, and the metrics observe every audit record.
pub async fn start(snapshot: Snapshot, deps: Deps) -> io::Result<ProxyHandle> {
    let mut bound = Vec::new();
    for l in &snapshot.listeners {
        bound.push((l.clone(), listeners::bind(l)?));
    }
    let metrics = Arc::new(Metrics::new());
    metrics.set_profile(&snapshot.config.profile);
    metrics.set_listeners(snapshot.listeners.iter().map(|l| l.name.as_str()));
    deps.audit.set_observer(metrics.clone());
    let deps = Deps {
        resolver: Arc::new(TimedResolver {
            inner: deps.resolver,
            metrics: metrics.clone(),
        }),
        connector: Arc::new(TimedConnector {
            inner: deps.connector,
            metrics: metrics.clone(),
        }),
        audit: deps.audit,
    };
    let pools = PoolRegistry::default();
    let mut snapshot = snapshot;
    snapshot.attach_pools(&pools);
    let shared = Arc::new(Shared {
        state: ArcSwap::from_pointee(snapshot),
        deps,
        shutdown: CancellationToken::new(),
        hard: CancellationToken::new(),
        tracker: TaskTracker::new(),
        egress_idle: IdleConns::new(),
        pools,
        health_loops: Mutex::new(HashSet::new()),
        metrics,
        tunnels: Arc::new(LiveTunnels::default()),
    });
    let mut set = ListenerSet::default();
    for (cfg, socket) in bound {
        set.bound.push(listeners::spawn(&shared, cfg, socket)?);
    }
    spawn_health_loops(&shared);
    let reloader = Reloader {
        shared: shared.clone(),
        swaps: Arc::new(Mutex::new(())),
        listeners: Arc::new(Mutex::new(set)),
    };
    Ok(ProxyHandle { shared, reloader })
}

/// Start the active health check loop of every pool of the current snapshot that has a check
/// and no loop yet. A loop ends when its pool, or the pool's check, is no longer configured.
fn spawn_health_loops(shared: &Arc<Shared>) {
    let snap = shared.state.load();
    let mut running = shared
        .health_loops
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    for pool in snap.pools.values() {
        if pool.cfg.health_check.is_some() && running.insert(pool.cfg.name.clone()) {
            tokio::spawn(crate::pipeline::health::health_loop(
                shared.clone(),
                pool.cfg.name.clone(),
            ));
        }
    }
}
