//! Idle keep-alive upstream connections ([`IdleConns`]), keyed by the vetted address they were
//! opened to and the TLS server name they verified. A connection comes back to its set when
//! the response it carried is read to its end ([`super::h1::ResponseBody::return_to`]).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::BytesMut;
use tokio::sync::Notify;
use tokio::time::Instant as TokioInstant;

use super::watch::{Watch, Watched};
use crate::config::Limits;
use crate::config::file::{
    DEFAULT_BODY_IDLE_TIMEOUT, DEFAULT_UPSTREAM_IDLE_MAX, DEFAULT_UPSTREAM_IDLE_TIMEOUT,
    DEFAULT_UPSTREAM_MAX_CONNECTIONS,
};
use crate::error::ProxyError;
use crate::policy::VettedAddr;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Idle keep-alive connections kept per key (address and TLS name), within the global cap.
const MAX_IDLE_PER_KEY: usize = 64;

/// Anything an upstream connection runs over (plain TCP or TLS), under its watch.
pub trait Io: AsyncRead + AsyncWrite + Send + Sync + Unpin {
    /// The watched plain TCP socket, when reading it directly is the same as reading this
    /// stream (no TLS): a sized response body may then be spliced off it.
    fn plain(&mut self) -> Option<&mut Watched<TcpStream>> {
        None
    }
}

impl Io for Watched<TcpStream> {
    fn plain(&mut self) -> Option<&mut Watched<TcpStream>> {
        Some(self)
    }
}

impl Io for tokio_rustls::client::TlsStream<Watched<TcpStream>> {}

/// In-memory streams (tests).
#[cfg(test)]
impl Io for Watched<tokio::io::DuplexStream> {}

/// An HTTP/1.1 upstream connection ([`super::h1`] speaks on it): its socket, the TLS server
/// name it was opened with (none for plain TCP) and the watch of its socket (response body
/// idle timeout).
pub struct UpstreamConn {
    pub(super) io: Box<dyn Io>,
    server_name: Option<Arc<str>>,
    pub(super) watch: Arc<Watch>,
    /// Its place in its address's `upstream_max_connections`, given back when it closes.
    slot: Option<Slot>,
    /// The read buffer of its last response, kept (empty) for the next one when small.
    pub(super) buf: BytesMut,
    /// The buffer its last request head was written from, kept (cleared) for the next one.
    pub(super) head: Vec<u8>,
}

impl UpstreamConn {
    /// A connection over `io`, which carries `watch`.
    pub fn new(io: Box<dyn Io>, server_name: Option<Arc<str>>, watch: Arc<Watch>) -> Self {
        UpstreamConn {
            io,
            server_name,
            watch,
            slot: None,
            buf: BytesMut::new(),
            head: Vec::new(),
        }
    }

    /// Count this connection in `slot` for as long as it lives.
    pub fn hold(&mut self, slot: Option<Slot>) {
        self.slot = slot;
    }
}

/// The idle and open maps' hasher: looked up a few times every request, keyed by addresses and
/// names a client's requests choose, so fast and seeded per process (not SipHash, not unseeded).
type Hasher = foldhash::fast::RandomState;

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
    map: HashMap<IdleKey, VecDeque<IdleEntry>, Hasher>,
    total: usize,
}

/// Open connections (busy or idle) per key, and who waits for one; a key is removed when it
/// has neither. Its own lock, never held while the idle map's is taken: a connection dropped
/// under the idle map's lock gives its slot back here.
type OpenMap = HashMap<IdleKey, Opened, Hasher>;

/// The connections open to one key and the requests waiting for one of them.
#[derive(Default)]
struct Opened {
    count: usize,
    waiting: usize,
    /// Woken when a connection of this key goes idle or closes.
    notify: Arc<Notify>,
}

/// A place in a key's `upstream_max_connections`: held by a connection (or by the request
/// about to dial it), given back on drop.
pub struct Slot {
    idle: Weak<IdleConns>,
    key: IdleKey,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(idle) = self.idle.upgrade() else {
            return;
        };
        let Ok(mut open) = idle.open.lock() else {
            return;
        };
        if let Some(o) = open.get_mut(&self.key) {
            o.count = o.count.saturating_sub(1);
            o.notify.notify_one();
            if o.count == 0 && o.waiting == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// What a request gets to send on: an idle connection, or a slot to dial a new one with.
pub enum Reserved {
    /// A ready idle connection to this vetted address.
    Idle(UpstreamConn, VettedAddr),
    /// Room to open one more connection (`None` when no limit applies).
    Dial(Option<Slot>),
}

impl IdleMap {
    /// Drop entries idle for `timeout` or closed; remove emptied keys. Returns the earliest
    /// expiry left.
    fn expire(&mut self, now: TokioInstant, timeout: Duration) -> Option<TokioInstant> {
        let mut next: Option<TokioInstant> = None;
        self.map.retain(|_, list| {
            list.retain_mut(|e| now.duration_since(e.since) < timeout && !e.conn.is_closed());
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
    open: Mutex<OpenMap>,
    max: AtomicUsize,
    max_open: AtomicUsize,
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
            open: Mutex::new(OpenMap::default()),
            max: AtomicUsize::new(DEFAULT_UPSTREAM_IDLE_MAX),
            max_open: AtomicUsize::new(DEFAULT_UPSTREAM_MAX_CONNECTIONS),
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
        self.max_open
            .store(limits.upstream_max_connections, Ordering::Relaxed);
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

    /// An idle connection to one of the vetted addresses, else room to dial one: at most
    /// `upstream_max_connections` are open to the first vetted address (with this server name)
    /// at once, and a request past that waits, up to `wait`, for one of them to go idle or
    /// close. Past `wait` it fails as a connect timeout to `target`.
    pub async fn reserve(
        self: &Arc<Self>,
        vetted: &[VettedAddr],
        server_name: Option<&str>,
        wait: Duration,
        target: &str,
    ) -> Result<Reserved, ProxyError> {
        let Some(first) = vetted.first() else {
            return Ok(Reserved::Dial(None));
        };
        let key: IdleKey = (first.addr(), server_name.map(Arc::from));
        let deadline = TokioInstant::now() + wait;
        let mut waiting = false;
        loop {
            if let Some((c, a)) = self.checkout(vetted, server_name) {
                self.stop_waiting(&key, waiting);
                return Ok(Reserved::Idle(c, a));
            }
            let max = self.max_open.load(Ordering::Relaxed);
            if max == 0 {
                self.stop_waiting(&key, waiting);
                return Ok(Reserved::Dial(None));
            }
            let notify = {
                let Ok(mut open) = self.open.lock() else {
                    return Ok(Reserved::Dial(None));
                };
                let o = open.entry(key.clone()).or_default();
                if o.count < max {
                    o.count += 1;
                    if waiting {
                        o.waiting -= 1;
                    }
                    return Ok(Reserved::Dial(Some(Slot {
                        idle: Arc::downgrade(self),
                        key,
                    })));
                }
                if !waiting {
                    o.waiting += 1;
                    waiting = true;
                }
                o.notify.clone()
            };
            // A wake-up between the unlock and this wait is kept by `Notify` for us.
            if tokio::time::timeout_at(deadline, notify.notified())
                .await
                .is_err()
            {
                self.stop_waiting(&key, true);
                return Err(ProxyError::ConnectTimeout(target.to_string()));
            }
        }
    }

    fn stop_waiting(&self, key: &IdleKey, waiting: bool) {
        if !waiting {
            return;
        }
        let Ok(mut open) = self.open.lock() else {
            return;
        };
        if let Some(o) = open.get_mut(key) {
            o.waiting = o.waiting.saturating_sub(1);
            if o.count == 0 && o.waiting == 0 {
                open.remove(key);
            }
        }
    }

    /// Connections open now (busy or idle) under the key of `addr` and `server_name`, as
    /// counted for `upstream_max_connections`.
    pub fn open(&self, addr: SocketAddr, server_name: Option<&str>) -> usize {
        let key: IdleKey = (addr, server_name.map(Arc::from));
        self.open
            .lock()
            .ok()
            .and_then(|m| m.get(&key).map(|o| o.count))
            .unwrap_or(0)
    }

    /// An open idle connection under this key, the most recently idle first.
    pub(super) fn take(&self, addr: SocketAddr, server_name: Option<&str>) -> Option<UpstreamConn> {
        let timeout = self.timeout();
        let key: IdleKey = (addr, server_name.map(Arc::from));
        let mut m = self.inner.lock().ok()?;
        let now = TokioInstant::now();
        let list = m.map.get_mut(&key)?;
        let mut found = None;
        let mut dropped = 0;
        while let Some(mut e) = list.pop_back() {
            if now.duration_since(e.since) < timeout && !e.conn.is_closed() {
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
    pub fn checkin(self: &Arc<Self>, addr: SocketAddr, mut conn: UpstreamConn) {
        conn.watch.end();
        if conn.is_closed() {
            return;
        }
        let max = self.max.load(Ordering::Relaxed);
        if max == 0 {
            return;
        }
        let timeout = self.timeout();
        // A request waiting for a connection of this key takes this one: kept past the
        // per-key cap rather than closed and dialled again.
        let wanted = conn.slot.as_ref().and_then(|s| {
            let open = self.open.lock().ok()?;
            open.get(&s.key)
                .filter(|o| o.waiting > 0)
                .map(|o| o.notify.clone())
        });
        let Ok(mut m) = self.inner.lock() else {
            return;
        };
        let key: IdleKey = (addr, conn.server_name.clone());
        if wanted.is_none() && m.map.get(&key).is_some_and(|l| l.len() >= MAX_IDLE_PER_KEY) {
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
        if let Some(n) = wanted {
            n.notify_one();
        }
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

#[cfg(test)]
pub(super) mod tests;
