//! Idle keep-alive upstream connections ([`IdleConns`]), keyed by the vetted address they were
//! opened to and the TLS server name they verified, and the guard that returns a connection to
//! its set when its response is finished ([`Checkin`]).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant as TokioInstant;

use super::watch::Watch;
use crate::config::Limits;
use crate::config::file::{
    DEFAULT_BODY_IDLE_TIMEOUT, DEFAULT_UPSTREAM_IDLE_MAX, DEFAULT_UPSTREAM_IDLE_TIMEOUT,
};
use crate::http::ProxyBody;
use crate::policy::VettedAddr;

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

    pub(super) fn take(&self, addr: SocketAddr, server_name: Option<&str>) -> Option<UpstreamConn> {
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
pub(super) mod tests;
