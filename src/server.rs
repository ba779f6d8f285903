//! Start the proxy: bind every listener (after the configuration and tables are compiled),
//! serve until shutdown, then drain.

use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ListenerKind;
use crate::listen::forward::accept_loop;
pub use crate::state::{Deps, Shared, Snapshot};
use crate::upstream::pool::{IdleConns, PoolRegistry};

/// How long [`ProxyHandle::shutdown`] waits, after every flow has ended, for their records
/// to reach the audit queue before it reports the ones still open.
const RECORDS_WAIT: Duration = Duration::from_secs(30);

/// A running proxy.
pub struct ProxyHandle {
    listeners: Vec<(String, SocketAddr)>,
    shared: Arc<Shared>,
    reloader: Reloader,
    accepts: Vec<JoinHandle<()>>,
}

/// Replaces the running proxy's snapshot; cloneable, for tasks that outlive a borrow of the
/// [`ProxyHandle`] (the cloud-range refresh). Swaps are serialised: one that derives its
/// snapshot from the current one ([`Reloader::swap_with`]) never overwrites another's.
#[derive(Clone)]
pub struct Reloader {
    shared: Arc<Shared>,
    swaps: Arc<Mutex<()>>,
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
        let Some(mut snapshot) = next(&current) else {
            return false;
        };
        snapshot.attach_pools(&self.shared.pools);
        self.shared.state.store(Arc::new(snapshot));
        spawn_health_loops(&self.shared);
        true
    }

    /// Cancelled when the proxy starts shutting down.
    pub fn shutdown(&self) -> CancellationToken {
        self.shared.shutdown.clone()
    }
}

impl ProxyHandle {
    /// Bound address of a listener.
    pub fn addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
    }

    /// Every listener and its bound address.
    pub fn listeners(&self) -> &[(String, SocketAddr)] {
        &self.listeners
    }

    /// Replace the snapshot (configuration reload): requests that start after this decide on
    /// `snapshot`; requests already running finish on the one they loaded. Pool runtime state
    /// (health, ejections, idle connections) carries over for pools and members still
    /// configured, and a pool that gains an active health check gets its loop. Listeners are
    /// not re-bound: a listener's bind address and `max_connections` take effect at start.
    pub fn swap(&self, snapshot: Snapshot) {
        self.reloader.swap_with(|_| Some(snapshot));
    }

    /// The snapshot requests starting now decide on.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.reloader.current()
    }

    /// A cloneable handle that replaces the snapshot.
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// Stop accepting, let open requests and tunnels finish for up to `drain`, then cut them.
    /// Returns true if everything finished within `drain`, false if flows were cut.
    ///
    /// When this returns, the record of every request and tunnel the proxy handled, the cut
    /// ones included, has been handed to the audit writer (or to the fallback log): what is
    /// left is [`crate::audit::AuditWriter::shutdown`], which writes and flushes them.
    pub async fn shutdown(self, drain: Duration) -> bool {
        self.shared.shutdown.cancel();
        for a in self.accepts {
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

/// Bind every listener of the snapshot's configuration and start serving.
pub async fn start(snapshot: Snapshot, deps: Deps) -> io::Result<ProxyHandle> {
    let mut bound = Vec::new();
    for l in &snapshot.config.listeners {
        let listener = TcpListener::bind(l.bind).await.map_err(|e| {
            io::Error::new(e.kind(), format!("listener {} on {}: {e}", l.name, l.bind))
        })?;
        bound.push((Arc::new(l.clone()), listener));
    }
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
    });
    let mut listeners = Vec::new();
    let mut accepts = Vec::new();
    for (cfg, listener) in bound {
        let addr = listener.local_addr()?;
        tracing::info!(listener = %cfg.name, addr = %addr, "Listening");
        listeners.push((cfg.name.clone(), addr));
        accepts.push(match &cfg.kind {
            ListenerKind::Forward(_) => tokio::spawn(accept_loop(shared.clone(), listener, cfg)),
            ListenerKind::Reverse(_) => tokio::spawn(crate::listen::reverse::accept_loop(
                shared.clone(),
                listener,
                cfg,
            )),
            ListenerKind::Transparent(_) => tokio::spawn(crate::listen::transparent::accept_loop(
                shared.clone(),
                listener,
                cfg,
            )),
        });
    }
    spawn_health_loops(&shared);
    let reloader = Reloader {
        shared: shared.clone(),
        swaps: Arc::new(Mutex::new(())),
    };
    Ok(ProxyHandle {
        listeners,
        shared,
        reloader,
        accepts,
    })
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
