//! Start the proxy: bind every listener (after the configuration and tables are compiled),
//! serve until shutdown, then drain.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ListenerKind;
use crate::listen::forward::accept_loop;
pub use crate::state::{Deps, Shared, Snapshot};
use crate::upstream::pool::IdleConns;

/// How long [`ProxyHandle::shutdown`] waits, after every flow has ended, for their records
/// to reach the audit queue before it reports the ones still open.
const RECORDS_WAIT: Duration = Duration::from_secs(30);

/// A running proxy.
pub struct ProxyHandle {
    listeners: Vec<(String, SocketAddr)>,
    shared: Arc<Shared>,
    accepts: Vec<JoinHandle<()>>,
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

    /// Replace the snapshot (configuration reload).
    pub fn swap(&self, snapshot: Snapshot) {
        self.shared.state.store(Arc::new(snapshot));
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
    let shared = Arc::new(Shared {
        state: ArcSwap::from_pointee(snapshot),
        deps,
        shutdown: CancellationToken::new(),
        hard: CancellationToken::new(),
        tracker: TaskTracker::new(),
        egress_idle: IdleConns::new(),
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
        });
    }
    let pools: Vec<String> = shared
        .state
        .load()
        .pools
        .values()
        .filter(|p| p.cfg.health_check.is_some())
        .map(|p| p.cfg.name.clone())
        .collect();
    for name in pools {
        tokio::spawn(crate::pipeline::health::health_loop(shared.clone(), name));
    }
    Ok(ProxyHandle {
        listeners,
        shared,
        accepts,
    })
}
