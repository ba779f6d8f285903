//! The open CONNECT tunnels, so a reload can re-decide each on the address it dialled and
//! close the ones its new policy denies.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use tokio_util::sync::CancellationToken;

use crate::audit::Outcome;
use crate::metrics::GaugeGuard;

/// What a tunnel was decided on: enough to decide it again.
#[derive(Debug, Clone)]
pub struct TunnelSubject {
    /// The listener it was accepted on.
    pub listener: String,
    /// The client's address.
    pub client: IpAddr,
    /// The destination host as requested (normalised).
    pub host: String,
    /// The destination port.
    pub port: u16,
    /// The vetted address it dialled.
    pub dialed: IpAddr,
}

/// Why a reload closed a tunnel: the new decision's reason and rule.
#[derive(Debug, Clone)]
pub struct Closed {
    /// The new decision's reason.
    pub reason: Outcome,
    /// The rule that decided, if any.
    pub rule: Option<String>,
}

#[derive(Debug)]
struct Entry {
    subject: TunnelSubject,
    close: CancellationToken,
    closed: Arc<OnceLock<Closed>>,
}

/// Every open tunnel, by id.
#[derive(Debug, Default)]
pub struct LiveTunnels {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Entry>>,
}

impl LiveTunnels {
    /// Register an open tunnel; it is removed when the returned handle drops.
    pub fn open(self: &Arc<Self>, subject: TunnelSubject, gauge: GaugeGuard) -> OpenTunnel {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let close = CancellationToken::new();
        let closed = Arc::new(OnceLock::new());
        self.lock().insert(
            id,
            Entry {
                subject,
                close: close.clone(),
                closed: closed.clone(),
            },
        );
        OpenTunnel {
            id,
            registry: self.clone(),
            close,
            closed,
            _gauge: gauge,
        }
    }

    /// Every open tunnel's subject, with its id.
    pub fn subjects(&self) -> Vec<(u64, TunnelSubject)> {
        self.lock()
            .iter()
            .map(|(id, e)| (*id, e.subject.clone()))
            .collect()
    }

    /// Close tunnel `id` (if still open) for `why`. Returns whether it was open.
    pub fn close(&self, id: u64, why: Closed) -> bool {
        let open = self.lock();
        let Some(e) = open.get(&id) else {
            return false;
        };
        let _ = e.closed.set(why);
        e.close.cancel();
        true
    }

    /// Number of open tunnels.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no tunnel is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// An open tunnel's registration: removed from [`LiveTunnels`] (and the open-tunnels gauge
/// lowered) when dropped.
#[derive(Debug)]
pub struct OpenTunnel {
    id: u64,
    registry: Arc<LiveTunnels>,
    close: CancellationToken,
    closed: Arc<OnceLock<Closed>>,
    _gauge: GaugeGuard,
}

impl OpenTunnel {
    /// Resolves when a reload closes this tunnel.
    pub async fn closed(&self) {
        self.close.cancelled().await;
    }

    /// Why a reload closed it, if one did.
    pub fn closed_by_reload(&self) -> Option<&Closed> {
        self.closed.get()
    }
}

impl Drop for OpenTunnel {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
    }
}
