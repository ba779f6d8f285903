//! Upstream pools of reverse routes: member choice (round-robin or least-connections),
//! passive health (eject after N consecutive failures for T), active health state, and
//! keep-alive connection reuse keyed by the vetted address and TLS server name (each pool's
//! own [`IdleConns`]). Connections are only ever made to [`VettedAddr`]s.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;

use super::idle::Io;
pub use super::idle::{IdleConns, Reserved, Slot, UpstreamConn};
use super::watch::Watched;
use super::{Connector, connect_first};
use crate::audit::recorder::{Held, Release};
use crate::config::Limits;
use crate::config::reverse::{Balance, PoolConfig, UpstreamTls};
use crate::destination::Host;
use crate::error::ProxyError;
use crate::policy::VettedAddr;

/// Runtime state of one member.
#[derive(Debug, Default)]
pub struct MemberState {
    failures: AtomicU32,
    /// Milliseconds after the pool's epoch until which the member is ejected (0: not ejected).
    ejected_until_ms: AtomicU64,
    /// Set false by a failing active health check.
    unhealthy: AtomicBool,
    in_flight: AtomicUsize,
}

/// A pool and its runtime state.
#[derive(Debug)]
pub struct PoolState {
    /// The configuration.
    pub cfg: PoolConfig,
    members: Vec<Arc<MemberState>>,
    /// Each member's host and `host:port` as text, made once rather than for every request.
    texts: Vec<(String, String)>,
    next: AtomicUsize,
    epoch: Instant,
    idle: Arc<IdleConns>,
}

/// Same TLS on/off and server name: a member's health carries over.
fn same_tls_name(a: &Option<UpstreamTls>, b: &Option<UpstreamTls>) -> bool {
    a.as_ref().map(|t| &t.server_name) == b.as_ref().map(|t| &t.server_name)
}

/// Runtime state of every reverse pool, by name, outside any snapshot: a configuration swap
/// keeps the health, ejections and idle connections of the pools and members it still has.
#[derive(Debug, Default)]
pub struct PoolRegistry {
    pools: Mutex<HashMap<String, Arc<PoolState>>>,
}

impl PoolRegistry {
    /// The state of each of `cfgs`: carried over member by member from the pool of the same
    /// name, new for a new pool. Pools no longer configured
    /// are forgotten (in-flight requests keep theirs until they end).
    pub fn sync(&self, cfgs: &[PoolConfig]) -> HashMap<String, Arc<PoolState>> {
        let mut pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        let next: HashMap<String, Arc<PoolState>> = cfgs
            .iter()
            .map(|c| {
                let state = match pools.get(&c.name) {
                    Some(prev) => PoolState::carry(c.clone(), prev),
                    None => PoolState::new(c.clone()),
                };
                (c.name.clone(), state)
            })
            .collect();
        *pools = next.clone();
        next
    }
}

/// Each member's host and `host:port`, as the audit record and the error messages spell them.
fn member_texts(cfg: &PoolConfig) -> Vec<(String, String)> {
    cfg.members
        .iter()
        .map(|m| {
            let host = m.host.to_string();
            let target = format!("{host}:{}", m.port);
            (host, target)
        })
        .collect()
}

/// A request on member `tag` has ended (least-connections counts those in flight).
impl Release for PoolState {
    fn release(&self, member: usize) {
        if let Some(m) = self.members.get(member) {
            m.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl PoolState {
    /// Member `i`'s host and `host:port` as text.
    pub fn member_text(&self, i: usize) -> Option<(&str, &str)> {
        self.texts.get(i).map(|(h, t)| (h.as_str(), t.as_str()))
    }

    /// Runtime state for a configured pool.
    pub fn new(cfg: PoolConfig) -> Arc<PoolState> {
        let members = cfg.members.iter().map(|_| Arc::default()).collect();
        Arc::new(PoolState {
            texts: member_texts(&cfg),
            cfg,
            members,
            next: AtomicUsize::new(0),
            epoch: Instant::now(),
            idle: IdleConns::new(),
        })
    }

    /// `cfg` over the runtime state of `prev`, the same pool in an earlier configuration: a
    /// member still configured (same host, port and upstream TLS) keeps its failures,
    /// ejection, health and in-flight count; a new member starts fresh. Idle connections are
    /// kept (they are keyed by address and TLS name, and every request vets its addresses).
    fn carry(cfg: PoolConfig, prev: &PoolState) -> Arc<PoolState> {
        let members = cfg
            .members
            .iter()
            .map(|m| {
                prev.cfg
                    .members
                    .iter()
                    .position(|p| p == m && same_tls_name(&prev.cfg.tls, &cfg.tls))
                    .and_then(|i| prev.members.get(i).cloned())
                    .unwrap_or_default()
            })
            .collect();
        // Idle TLS connections were verified with the old client configuration: keep them
        // only when it is the same one.
        let same_trust = match (&prev.cfg.tls, &cfg.tls) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(&a.client, &b.client),
            _ => false,
        };
        Arc::new(PoolState {
            texts: member_texts(&cfg),
            cfg,
            members,
            next: AtomicUsize::new(0),
            epoch: prev.epoch,
            idle: if same_trust {
                prev.idle.clone()
            } else {
                IdleConns::new()
            },
        })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Is member `i` in service (not ejected, not failing its active check)?
    pub fn available(&self, i: usize) -> bool {
        self.members.get(i).is_some_and(|m| {
            // 0: never ejected, and no clock read (the common case, on every request).
            let until = m.ejected_until_ms.load(Ordering::Acquire);
            !m.unhealthy.load(Ordering::Acquire) && (until == 0 || until <= self.now_ms())
        })
    }

    /// Choose a member, skipping `exclude`; `None` when no member is in service.
    pub fn pick(&self, exclude: Option<usize>) -> Option<usize> {
        let n = self.members.len();
        let candidates = (0..n).filter(|&i| Some(i) != exclude && self.available(i));
        match self.cfg.balance {
            Balance::RoundRobin => {
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..n)
                    .map(|k| (start + k) % n)
                    .find(|&i| Some(i) != exclude && self.available(i))
            }
            Balance::LeastConnections => candidates.min_by_key(|&i| {
                self.members
                    .get(i)
                    .map_or(usize::MAX, |m| m.in_flight.load(Ordering::Acquire))
            }),
        }
    }

    /// Count a request in flight on member `i` until the guard drops.
    pub fn begin(self: &Arc<Self>, i: usize) -> Held {
        if let Some(m) = self.members.get(i) {
            m.in_flight.fetch_add(1, Ordering::AcqRel);
        }
        Held::new(self.clone(), i)
    }

    /// Passive health: a success resets the failure count; `eject_after` consecutive failures
    /// take the member out for `eject_for`.
    pub fn report(&self, i: usize, ok: bool) {
        let Some(m) = self.members.get(i) else {
            return;
        };
        if ok {
            m.failures.store(0, Ordering::Release);
            return;
        }
        let failures = m.failures.fetch_add(1, Ordering::AcqRel) + 1;
        if failures >= self.cfg.eject_after {
            m.failures.store(0, Ordering::Release);
            let until = self.now_ms() + self.cfg.eject_for.as_millis() as u64;
            m.ejected_until_ms.store(until, Ordering::Release);
            tracing::warn!(
                pool = %self.cfg.name,
                member = i,
                eject_for_s = self.cfg.eject_for.as_secs_f64(),
                "Upstream member ejected after consecutive failures"
            );
        }
    }

    /// Active health: record a check result for member `i`.
    pub fn set_healthy(&self, i: usize, healthy: bool) {
        if let Some(m) = self.members.get(i) {
            let was = !m.unhealthy.swap(!healthy, Ordering::AcqRel);
            if was != healthy {
                tracing::info!(pool = %self.cfg.name, member = i, healthy, "Upstream health changed");
            }
        }
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the pool has no members (never true for a checked configuration).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The TLS server name connections to `member_host` verify (`None` for plain HTTP):
    /// `server_name`, else the member host.
    pub fn server_name(&self, member_host: &Host) -> Option<String> {
        self.cfg.tls.as_ref().map(|tls| {
            tls.server_name
                .clone()
                .unwrap_or_else(|| member_host.to_string())
        })
    }

    /// A pooled idle connection to one of the vetted addresses of `member_host`, opened with
    /// the server name that member gets, if any is ready; else room to dial one, waiting
    /// (within `connect_timeout`) while `upstream_max_connections` are open to it. `limits`
    /// (the current snapshot's) apply to the pool's idle set from now on.
    pub async fn reserve(
        &self,
        member_host: &Host,
        vetted: &[VettedAddr],
        limits: &Limits,
        target: &str,
    ) -> Result<Reserved, ProxyError> {
        self.idle.configure(limits);
        let name = self.server_name(member_host);
        self.idle
            .reserve(vetted, name.as_deref(), limits.connect_timeout, target)
            .await
    }

    /// The pool's idle connections.
    pub fn idle(&self) -> &Arc<IdleConns> {
        &self.idle
    }

    /// Open a new HTTP/1.1 connection to the first vetted address that accepts, with TLS when
    /// the pool asks for it (SNI and verified name: `server_name`, else the member host).
    pub async fn connect(
        &self,
        member_host: &Host,
        vetted: &[VettedAddr],
        connector: &Arc<dyn Connector>,
        timeout: Duration,
        target: &str,
        slot: Option<Slot>,
    ) -> Result<(UpstreamConn, VettedAddr), ProxyError> {
        let (stream, addr) = connect_first(connector, vetted, timeout, target).await?;
        let (stream, watch) = Watched::new(stream, self.idle.body_idle());
        let name = self.server_name(member_host);
        let io: Box<dyn Io> = match (&self.cfg.tls, &name) {
            (Some(tls), Some(name)) => {
                let server_name =
                    ServerName::try_from(name.clone()).map_err(|e| ProxyError::Upstream {
                        target: target.to_string(),
                        reason: format!("invalid TLS name {name}: {e}"),
                    })?;
                let connector = tokio_rustls::TlsConnector::from(tls.client.clone());
                let s = tokio::time::timeout(timeout, connector.connect(server_name, stream))
                    .await
                    .map_err(|_| ProxyError::ConnectTimeout(target.to_string()))?
                    .map_err(|e| ProxyError::Upstream {
                        target: target.to_string(),
                        reason: format!("TLS handshake: {e}"),
                    })?;
                Box::new(s)
            }
            _ => Box::new(stream),
        };
        let mut conn = UpstreamConn::new(io, name.map(Arc::from), watch);
        conn.hold(slot);
        Ok((conn, addr))
    }
}

#[cfg(test)]
mod tests;
