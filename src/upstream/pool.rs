//! Upstream pools of reverse routes: member choice (round-robin or least-connections),
//! passive health (eject after N consecutive failures for T), active health state, and
//! keep-alive connection reuse keyed by the vetted address. Connections are only ever made to
//! [`VettedAddr`]s.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Connector, connect_first};
use crate::config::reverse::{Balance, PoolConfig};
use crate::destination::Host;
use crate::error::ProxyError;
use crate::policy::VettedAddr;
use crate::protocol::forward::ProxyBody;

/// Idle connections kept per upstream address.
const MAX_IDLE_PER_ADDR: usize = 64;

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
    members: Vec<MemberState>,
    next: AtomicUsize,
    epoch: Instant,
    idle: Arc<IdleConns>,
}

/// Idle keep-alive HTTP/1.1 connections, keyed by the vetted address they were opened to. A
/// connection is only ever reused for a request whose decision vetted that same address.
#[derive(Debug, Default)]
pub struct IdleConns {
    map: Mutex<HashMap<std::net::SocketAddr, Vec<SendRequest<ProxyBody>>>>,
}

impl IdleConns {
    /// An empty set.
    pub fn new() -> Arc<IdleConns> {
        Arc::new(IdleConns::default())
    }

    /// A ready idle connection to one of the vetted addresses, in their order.
    pub fn checkout(&self, vetted: &[VettedAddr]) -> Option<(SendRequest<ProxyBody>, VettedAddr)> {
        let mut idle = self.map.lock().ok()?;
        for v in vetted {
            if let Some(list) = idle.get_mut(&v.addr()) {
                while let Some(s) = list.pop() {
                    if s.is_ready() {
                        return Some((s, *v));
                    }
                }
            }
        }
        None
    }

    /// Return a connection for reuse (dropped if it is closed or the idle list is full).
    pub fn checkin(&self, addr: VettedAddr, sender: SendRequest<ProxyBody>) {
        if sender.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.map.lock() {
            let list = idle.entry(addr.addr()).or_default();
            if list.len() < MAX_IDLE_PER_ADDR {
                list.push(sender);
            }
        }
    }
}

/// Anything a connection can run over (plain TCP or TLS).
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Marks a member busy (least-connections) until dropped.
#[derive(Debug)]
pub struct InFlight {
    pool: Arc<PoolState>,
    member: usize,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(m) = self.pool.members.get(self.member) {
            m.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl PoolState {
    /// Runtime state for a configured pool.
    pub fn new(cfg: PoolConfig) -> Arc<PoolState> {
        let members = cfg.members.iter().map(|_| MemberState::default()).collect();
        Arc::new(PoolState {
            cfg,
            members,
            next: AtomicUsize::new(0),
            epoch: Instant::now(),
            idle: IdleConns::new(),
        })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Is member `i` in service (not ejected, not failing its active check)?
    pub fn available(&self, i: usize) -> bool {
        self.members.get(i).is_some_and(|m| {
            !m.unhealthy.load(Ordering::Acquire)
                && m.ejected_until_ms.load(Ordering::Acquire) <= self.now_ms()
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
    pub fn begin(self: &Arc<Self>, i: usize) -> InFlight {
        if let Some(m) = self.members.get(i) {
            m.in_flight.fetch_add(1, Ordering::AcqRel);
        }
        InFlight {
            pool: self.clone(),
            member: i,
        }
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

    /// A pooled idle connection to one of the vetted addresses, if any is ready.
    pub fn checkout(&self, vetted: &[VettedAddr]) -> Option<(SendRequest<ProxyBody>, VettedAddr)> {
        self.idle.checkout(vetted)
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
    ) -> Result<(SendRequest<ProxyBody>, VettedAddr), ProxyError> {
        let (stream, addr) = connect_first(connector, vetted, timeout, target).await?;
        let io: Box<dyn Io> = match &self.cfg.tls {
            None => Box::new(stream),
            Some(tls) => {
                let name = tls
                    .server_name
                    .clone()
                    .unwrap_or_else(|| member_host.to_string());
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
        };
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| ProxyError::Upstream {
                target: target.to_string(),
                reason: e.to_string(),
            })?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "Upstream connection ended with an error");
            }
        });
        Ok((sender, addr))
    }
}

/// Returns a connection to its pool when the response it carried is finished.
pub struct Checkin {
    idle: Arc<IdleConns>,
    addr: VettedAddr,
    // A Mutex makes the guard Sync, as response bodies must be.
    sender: Mutex<Option<SendRequest<ProxyBody>>>,
}

impl Checkin {
    /// Hold `sender` until dropped, then return it to `idle`.
    pub fn new(idle: Arc<IdleConns>, addr: VettedAddr, sender: SendRequest<ProxyBody>) -> Self {
        Checkin {
            idle,
            addr,
            sender: Mutex::new(Some(sender)),
        }
    }
}

impl Drop for Checkin {
    fn drop(&mut self) {
        let sender = self.sender.get_mut().ok().and_then(Option::take);
        if let Some(s) = sender {
            self.idle.checkin(self.addr, s);
        }
    }
}
