//! A client connection as the pipeline sees it: the listener it came in on, the client, and its
//! activity (requests in flight, relayed bodies, the connection slot), plus the timed socket
//! that enforces the client-side deadlines.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};

use crate::audit::recorder::{Held, Release};
use crate::config::ListenerConfig;

/// The `AsyncWrite` methods of a wrapper that only watches reads: each one forwards to the
/// wrapped stream in field `$inner` (used by [`TimedIo`] and `upstream::watch::Watched`).
macro_rules! delegate_async_write {
    ($inner:ident) => {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            std::pin::Pin::new(&mut self.$inner).poll_write(cx, buf)
        }

        fn poll_flush(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.$inner).poll_flush(cx)
        }

        fn poll_shutdown(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.$inner).poll_shutdown(cx)
        }

        fn poll_write_vectored(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            bufs: &[std::io::IoSlice<'_>],
        ) -> std::task::Poll<std::io::Result<usize>> {
            std::pin::Pin::new(&mut self.$inner).poll_write_vectored(cx, bufs)
        }

        fn is_write_vectored(&self) -> bool {
            self.$inner.is_write_vectored()
        }
    };
}
pub(crate) use delegate_async_write;

/// The timer of a read deadline that moves: one sleep, re-armed only when the deadline
/// changes, that turns into a `TimedOut` read error when it fires.
pub(crate) struct ReadTimer {
    sleep: Pin<Box<Sleep>>,
    armed: Option<Instant>,
}

impl ReadTimer {
    pub(crate) fn new() -> ReadTimer {
        ReadTimer {
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
            armed: None,
        }
    }

    /// Pending until `deadline`, then the `TimedOut` error `what`.
    pub(crate) fn poll_at<T>(
        &mut self,
        cx: &mut Context<'_>,
        deadline: Instant,
        what: &'static str,
    ) -> Poll<io::Result<T>> {
        if self.armed != Some(deadline) {
            self.sleep.as_mut().reset(deadline);
            self.armed = Some(deadline);
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// What one client connection is doing, shared by its requests and its timed I/O.
#[derive(Debug)]
pub struct Activity {
    start: Instant,
    /// Requests in flight (a response body or tunnel still open counts).
    busy: AtomicUsize,
    /// Milliseconds after `start` when the connection last became idle.
    idle_since_ms: AtomicU64,
    /// Requests completed.
    completed: AtomicU64,
    /// Request bodies being relayed (read from the client) right now.
    bodies: AtomicUsize,
    /// A read waiting this long for the next byte of a relayed request body fails.
    body_idle: Duration,
    /// The listener's connection slot: held for as long as anything of the connection lives
    /// (its socket, a CONNECT tunnel over it, a response still streaming), so a tunnel counts
    /// against `max_connections` until it closes.
    _permit: Option<OwnedSemaphorePermit>,
}

impl Activity {
    pub(crate) fn new() -> Arc<Activity> {
        Self::build(None, Duration::MAX)
    }

    pub(crate) fn build(
        permit: Option<OwnedSemaphorePermit>,
        body_idle: Duration,
    ) -> Arc<Activity> {
        Arc::new(Activity {
            start: Instant::now(),
            busy: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            bodies: AtomicUsize::new(0),
            body_idle,
            _permit: permit,
        })
    }

    /// Mark a request body as being relayed until the returned guard is dropped: meanwhile a
    /// client read that waits `body_idle` for its next byte fails.
    pub fn body(self: &Arc<Self>) -> BodyGuard {
        self.bodies.fetch_add(1, Ordering::AcqRel);
        BodyGuard(self.clone())
    }

    /// Mark a request in flight until the returned guard is dropped.
    pub fn begin(self: &Arc<Self>) -> Held {
        self.busy.fetch_add(1, Ordering::AcqRel);
        Held::new(self.clone(), 0)
    }
}

/// A request's end: the connection is idle from now unless another is in flight.
impl Release for Activity {
    fn release(&self, _: usize) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.idle_since_ms.store(ms, Ordering::Release);
        self.completed.fetch_add(1, Ordering::AcqRel);
        self.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Held while a request body is being relayed.
#[derive(Debug)]
pub struct BodyGuard(Arc<Activity>);

impl Drop for BodyGuard {
    fn drop(&mut self) {
        self.0.bodies.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A client socket with the client-side read deadlines: the header-read timeout (from the
/// first byte of a request, or from accept, until a request is being handled), the
/// keep-alive idle timeout (from the end of the last response while no byte arrives) and,
/// while a request body is being relayed, the body idle timeout (from the start of each wait
/// for its next byte).
pub(crate) struct TimedIo {
    inner: TcpStream,
    act: Arc<Activity>,
    header_read: Duration,
    keepalive_idle: Duration,
    /// Set when bytes of a new request arrive on an idle connection, with the number of
    /// requests completed at that moment: once that request has been handled the deadline is
    /// stale (a request answered within one poll never lets a read observe it busy).
    header_deadline: Option<(Instant, u64)>,
    /// When the current wait for request-body bytes began (a relayed body is open and the
    /// last read found nothing).
    body_wait: Option<Instant>,
    timer: ReadTimer,
}

impl TimedIo {
    pub(crate) fn new(
        inner: TcpStream,
        act: Arc<Activity>,
        header_read: Duration,
        idle: Duration,
    ) -> Self {
        TimedIo {
            inner,
            act,
            header_read,
            keepalive_idle: idle,
            header_deadline: None,
            body_wait: None,
            timer: ReadTimer::new(),
        }
    }

    /// The socket. While a tunnel runs, the connection is busy with no request body (the
    /// recorder holds the busy guard), so no deadline applies ([`TimedIo::deadline`]) and the
    /// tunnel may move bytes on the socket directly.
    pub(crate) fn socket(&self) -> &TcpStream {
        &self.inner
    }

    fn deadline(&mut self) -> Option<Instant> {
        if self.act.busy.load(Ordering::Acquire) > 0 {
            self.header_deadline = None;
            if self.act.bodies.load(Ordering::Acquire) > 0 {
                let since = *self.body_wait.get_or_insert_with(Instant::now);
                return since.checked_add(self.act.body_idle);
            }
            self.body_wait = None;
            return None;
        }
        self.body_wait = None;
        let completed = self.act.completed.load(Ordering::Acquire);
        match self.header_deadline {
            Some((d, at)) if at == completed => return Some(d),
            Some(_) => self.header_deadline = None,
            None => {}
        }
        if completed == 0 {
            return Some(self.act.start + self.header_read);
        }
        let idle_since = Duration::from_millis(self.act.idle_since_ms.load(Ordering::Acquire));
        Some(self.act.start + idle_since + self.keepalive_idle)
    }
}

impl AsyncRead for TimedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.body_wait = None;
                }
                let idle = this.act.busy.load(Ordering::Acquire) == 0;
                if buf.filled().len() > before && idle {
                    let completed = this.act.completed.load(Ordering::Acquire);
                    if this.header_deadline.is_none_or(|(_, at)| at != completed) {
                        this.header_deadline = Some((Instant::now() + this.header_read, completed));
                    }
                }
                return Poll::Ready(Ok(()));
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {}
        }
        let Some(deadline) = this.deadline() else {
            return Poll::Pending;
        };
        let what = if this.body_wait.is_some() {
            "client request body idle timeout"
        } else {
            "client read timeout"
        };
        this.timer.poll_at(cx, deadline, what)
    }
}

impl AsyncWrite for TimedIo {
    delegate_async_write!(inner);
}

/// Per-connection facts the pipeline needs.
#[derive(Debug)]
pub struct ConnInfo {
    /// The listener's settings when the connection was accepted: connection-level things
    /// (TLS, PROXY protocol) come from here. A request reads its listener's settings from the
    /// snapshot it loads ([`Snapshot::listener`](crate::state::Snapshot::listener)) by this
    /// name, so a swap never mixes versions within a request.
    pub listener: Arc<ListenerConfig>,
    /// The client's address (IPv4-mapped addresses canonicalised to IPv4).
    pub client: SocketAddr,
    /// The connection's activity.
    pub activity: Arc<Activity>,
}
