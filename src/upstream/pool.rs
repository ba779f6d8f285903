//! Upstream pools of reverse routes: member choice (round-robin or least-connections),
//! passive health (eject after N consecutive failures for T), active health state, and
//! keep-alive connection reuse keyed by the vetted address and TLS server name. Connections
//! are only ever made to [`VettedAddr`]s.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant as TokioInstant;

use super::watch::{Watch, Watched};
use super::{Connector, connect_first};
use crate::config::Limits;
use crate::config::file::{
    DEFAULT_BODY_IDLE_TIMEOUT, DEFAULT_UPSTREAM_IDLE_MAX, DEFAULT_UPSTREAM_IDLE_TIMEOUT,
};
use crate::config::reverse::{Balance, PoolConfig, UpstreamTls};
use crate::destination::Host;
use crate::error::ProxyError;
use crate::http::ProxyBody;
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
    next: AtomicUsize,
    epoch: Instant,
    idle: Arc<IdleConns>,
}

/// Idle keep-alive connections kept per key (address and TLS name), within the global cap.
const MAX_IDLE_PER_KEY: usize = 64;

/// An HTTP/1.1 upstream connection: its request sender, the TLS server name it was opened
/// with (none for plain TCP) and the watch of its socket (response body idle timeout).
pub struct UpstreamConn {
    sender: SendRequest<ProxyBody>,
    server_name: Option<Arc<str>>,
    watch: Arc<Watch>,
}

impl UpstreamConn {
    /// Speak HTTP/1.1 over `io`, which carries `watch`; the connection task is spawned.
    pub async fn handshake<T>(
        io: T,
        server_name: Option<Arc<str>>,
        watch: Arc<Watch>,
    ) -> hyper::Result<UpstreamConn>
    where
        T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(io))
            .await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "Upstream connection ended with an error");
            }
        });
        Ok(UpstreamConn {
            sender,
            server_name,
            watch,
        })
    }

    /// Has any byte of the current response arrived on this connection?
    pub fn response_started(&self) -> bool {
        self.watch.started()
    }
}

impl std::ops::Deref for UpstreamConn {
    type Target = SendRequest<ProxyBody>;
    fn deref(&self) -> &Self::Target {
        &self.sender
    }
}

impl std::ops::DerefMut for UpstreamConn {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.sender
    }
}

/// Where an idle connection may be reused: the vetted address it was opened to and the TLS
/// server name it verified. Never the address alone: two names on one address are two
/// identities.
type IdleKey = (SocketAddr, Option<Arc<str>>);

struct IdleEntry {
    conn: UpstreamConn,
    since: TokioInstant,
}

#[derive(Default)]
struct IdleMap {
    map: HashMap<IdleKey, VecDeque<IdleEntry>>,
    total: usize,
}

impl IdleMap {
    /// Drop entries idle for `timeout` or closed; remove emptied keys. Returns the earliest
    /// expiry left.
    fn expire(&mut self, now: TokioInstant, timeout: Duration) -> Option<TokioInstant> {
        let mut next: Option<TokioInstant> = None;
        self.map.retain(|_, list| {
            list.retain(|e| now.duration_since(e.since) < timeout && !e.conn.is_closed());
            if let Some(first) = list.front() {
                let at = first.since + timeout;
                next = Some(next.map_or(at, |n| n.min(at)));
            }
            !list.is_empty()
        });
        self.total = self.map.values().map(VecDeque::len).sum();
        next
    }

    /// Drop the connection idle the longest, to make room.
    fn evict_oldest(&mut self) {
        let oldest = self
            .map
            .iter()
            .filter_map(|(k, list)| list.front().map(|e| (e.since, k.clone())))
            .min_by_key(|(since, _)| *since)
            .map(|(_, k)| k);
        if let Some(k) = oldest
            && let Some(list) = self.map.get_mut(&k)
        {
            list.pop_front();
            self.total -= 1;
            if list.is_empty() {
                self.map.remove(&k);
            }
        }
    }
}

/// Idle keep-alive HTTP/1.1 connections, keyed by the vetted address they were opened to and
/// the TLS server name they verified. A connection is only ever reused for a request whose
/// decision vetted that same address, with the same server name. At most `upstream_idle_max`
/// are kept in all (the longest idle goes first), each for at most `upstream_idle_timeout`;
/// keys left empty are removed.
pub struct IdleConns {
    inner: Mutex<IdleMap>,
    max: AtomicUsize,
    timeout_ms: AtomicU64,
    body_idle_ms: AtomicU64,
    reaper: AtomicBool,
}

impl std::fmt::Debug for IdleConns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdleConns")
            .field("idle", &self.len())
            .field("max", &self.max.load(Ordering::Relaxed))
            .finish()
    }
}

impl Default for IdleConns {
    fn default() -> Self {
        IdleConns {
            inner: Mutex::new(IdleMap::default()),
            max: AtomicUsize::new(DEFAULT_UPSTREAM_IDLE_MAX),
            timeout_ms: AtomicU64::new(ms(DEFAULT_UPSTREAM_IDLE_TIMEOUT)),
            body_idle_ms: AtomicU64::new(ms(DEFAULT_BODY_IDLE_TIMEOUT)),
            reaper: AtomicBool::new(false),
        }
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl IdleConns {
    /// An empty set with the default limits.
    pub fn new() -> Arc<IdleConns> {
        Arc::new(IdleConns::default())
    }

    /// Apply the limits of the current configuration (cheap; called on every checkout so a
    /// reload takes effect).
    pub fn configure(&self, limits: &Limits) {
        self.max.store(limits.upstream_idle_max, Ordering::Relaxed);
        self.timeout_ms
            .store(ms(limits.upstream_idle_timeout), Ordering::Relaxed);
        self.body_idle_ms
            .store(ms(limits.body_idle_timeout), Ordering::Relaxed);
    }

    /// Idle time after which a kept connection is closed.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.load(Ordering::Relaxed))
    }

    /// The response body idle timeout of connections opened now.
    pub fn body_idle(&self) -> Duration {
        Duration::from_millis(self.body_idle_ms.load(Ordering::Relaxed))
    }

    /// Connections idle now.
    pub fn len(&self) -> usize {
        self.inner.lock().map_or(0, |m| m.total)
    }

    /// Whether no connection is idle.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keys with idle connections now (an emptied key is removed).
    pub fn keys(&self) -> usize {
        self.inner.lock().map_or(0, |m| m.map.len())
    }

    /// A ready idle connection to one of the vetted addresses, in their order, opened with
    /// `server_name` (`None`: plain TCP).
    pub fn checkout(
        &self,
        vetted: &[VettedAddr],
        server_name: Option<&str>,
    ) -> Option<(UpstreamConn, VettedAddr)> {
        vetted
            .iter()
            .find_map(|v| self.take(v.addr(), server_name).map(|c| (c, *v)))
    }

    fn take(&self, addr: SocketAddr, server_name: Option<&str>) -> Option<UpstreamConn> {
        let timeout = self.timeout();
        let key: IdleKey = (addr, server_name.map(Arc::from));
        let mut m = self.inner.lock().ok()?;
        let now = TokioInstant::now();
        let list = m.map.get_mut(&key)?;
        let mut found = None;
        let mut dropped = 0;
        while let Some(e) = list.pop_back() {
            if e.conn.is_ready() && now.duration_since(e.since) < timeout {
                found = Some(e.conn);
                break;
            }
            dropped += 1;
        }
        let empty = list.is_empty();
        m.total -= dropped + usize::from(found.is_some());
        if empty {
            m.map.remove(&key);
        }
        let conn = found?;
        conn.watch.begin();
        Some(conn)
    }

    /// Return a connection for reuse (dropped if it is closed or the cap is 0; the longest
    /// idle one makes room when the set is full).
    pub fn checkin(self: &Arc<Self>, addr: SocketAddr, conn: UpstreamConn) {
        conn.watch.end();
        if conn.is_closed() {
            return;
        }
        let max = self.max.load(Ordering::Relaxed);
        if max == 0 {
            return;
        }
        let timeout = self.timeout();
        let Ok(mut m) = self.inner.lock() else {
            return;
        };
        let key: IdleKey = (addr, conn.server_name.clone());
        if m.map.get(&key).is_some_and(|l| l.len() >= MAX_IDLE_PER_KEY) {
            return;
        }
        if m.total >= max {
            m.expire(TokioInstant::now(), timeout);
        }
        while m.total >= max {
            m.evict_oldest();
        }
        m.map.entry(key).or_default().push_back(IdleEntry {
            conn,
            since: TokioInstant::now(),
        });
        m.total += 1;
        drop(m);
        self.start_reaper();
    }

    /// Close connections idle past the timeout, now; returns the earliest expiry left.
    pub fn expire(&self) -> Option<TokioInstant> {
        let timeout = self.timeout();
        self.inner
            .lock()
            .ok()
            .and_then(|mut m| m.expire(TokioInstant::now(), timeout))
    }

    /// One task per set closes expired connections as they expire; it ends with the set.
    fn start_reaper(self: &Arc<Self>) {
        if self.reaper.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.reaper.store(false, Ordering::Release);
            return;
        };
        let weak = Arc::downgrade(self);
        rt.spawn(async move {
            loop {
                let wake = {
                    let Some(idle) = weak.upgrade() else { return };
                    let next = idle.expire();
                    next.unwrap_or_else(|| TokioInstant::now() + idle.timeout())
                };
                tokio::time::sleep_until(wake).await;
            }
        });
    }
}

/// Anything a connection can run over (plain TCP or TLS).
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

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
        let members = cfg.members.iter().map(|_| Arc::default()).collect();
        Arc::new(PoolState {
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
    /// the server name that member gets, if any is ready. `limits` (the current snapshot's)
    /// apply to the pool's idle set from now on.
    pub fn checkout(
        &self,
        member_host: &Host,
        vetted: &[VettedAddr],
        limits: &Limits,
    ) -> Option<(UpstreamConn, VettedAddr)> {
        self.idle.configure(limits);
        let name = self.server_name(member_host);
        self.idle.checkout(vetted, name.as_deref())
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
        let conn = UpstreamConn::handshake(io, name.map(Arc::from), watch)
            .await
            .map_err(|e| ProxyError::Upstream {
                target: target.to_string(),
                reason: e.to_string(),
            })?;
        Ok((conn, addr))
    }
}

/// Returns a connection to its pool when the response it carried is finished.
pub struct Checkin {
    idle: Arc<IdleConns>,
    addr: VettedAddr,
    // A Mutex makes the guard Sync, as response bodies must be.
    conn: Mutex<Option<UpstreamConn>>,
}

impl Checkin {
    /// Hold `conn` until dropped, then return it to `idle` under its address and server name.
    pub fn new(idle: Arc<IdleConns>, addr: VettedAddr, conn: UpstreamConn) -> Self {
        Checkin {
            idle,
            addr,
            conn: Mutex::new(Some(conn)),
        }
    }
}

impl Drop for Checkin {
    fn drop(&mut self) {
        let conn = self.conn.get_mut().ok().and_then(Option::take);
        if let Some(c) = conn {
            self.idle.checkin(self.addr.addr(), c);
        }
    }
}

#[cfg(test)]
mod tests;
