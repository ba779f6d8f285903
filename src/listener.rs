//! Stage 1 of the pipeline: accept connections, enforce connection limits (a CONNECT tunnel
//! keeps its connection's slot until it closes) and client timeouts, serve HTTP/1.1 with
//! keep-alive and upgrades, and shut down gracefully.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

use crate::audit::recorder::Recorder;
use crate::audit::{self, AuditRecord};
use crate::config::ListenerConfig;
use crate::pipeline;
use crate::server::Shared;

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

    fn build(permit: Option<OwnedSemaphorePermit>, body_idle: Duration) -> Arc<Activity> {
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
    pub fn begin(self: &Arc<Self>) -> BusyGuard {
        self.busy.fetch_add(1, Ordering::AcqRel);
        BusyGuard(self.clone())
    }
}

/// Held while a request is in flight.
#[derive(Debug)]
pub struct BusyGuard(Arc<Activity>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        let a = &self.0;
        let ms = a.start.elapsed().as_millis() as u64;
        a.idle_since_ms.store(ms, Ordering::Release);
        a.completed.fetch_add(1, Ordering::AcqRel);
        a.busy.fetch_sub(1, Ordering::AcqRel);
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
    sleep: Pin<Box<Sleep>>,
    armed: Option<Instant>,
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
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
            armed: None,
        }
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
        if this.armed != Some(deadline) {
            this.sleep.as_mut().reset(deadline);
            this.armed = Some(deadline);
        }
        match this.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                if this.body_wait.is_some() {
                    "client request body idle timeout"
                } else {
                    "client read timeout"
                },
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for TimedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Per-connection facts the pipeline needs.
#[derive(Debug)]
pub struct ConnInfo {
    /// The listener's configuration.
    pub listener: Arc<ListenerConfig>,
    /// The client's address (IPv4-mapped addresses canonicalised to IPv4).
    pub client: SocketAddr,
    /// The connection's activity.
    pub activity: Arc<Activity>,
}

/// Accept until shutdown with the listener's connection limit; each connection is served by
/// `serve` in its own task, tracked for draining. Shared by forward and reverse listeners.
pub async fn accept_with<F, Fut>(
    shared: Arc<Shared>,
    listener: TcpListener,
    cfg: Arc<ListenerConfig>,
    serve: F,
) where
    F: Fn(Arc<Shared>, Arc<ListenerConfig>, TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(cfg.max_connections));
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shared.shutdown.cancelled() => break,
        };
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shared.shutdown.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(error = %e, listener = %cfg.name, "Accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let task = serve(shared.clone(), cfg.clone(), stream, peer);
        shared.tracker.spawn(async move {
            task.await;
            drop(permit);
        });
    }
}

/// Connections over the limit being answered 503 at once; past this many they are closed
/// without an answer.
const MAX_REFUSING: usize = 64;

/// How long a refused connection is given to take its 503 before it is closed.
const REFUSE_LINGER: Duration = Duration::from_secs(1);

/// The answer to a connection over `max_connections`.
const OVER_CAPACITY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: text/plain; charset=utf-8\r\n\
x-residency-decision: error; reason=over-capacity\r\n\
connection: close\r\n\
content-length: 57\r\n\
\r\n\
residency-proxy: too many connections, try again shortly\n";

/// Accept loop of a forward listener. `max_connections` counts client connections alive at
/// once, a CONNECT tunnel being its client connection until the tunnel closes (the slot lives
/// in the connection's [`Activity`], which the tunnel holds). A connection over the limit is
/// accepted, answered 503 and closed, so clients see a refusal rather than a stall.
pub async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, cfg: Arc<ListenerConfig>) {
    let permits = Arc::new(Semaphore::new(cfg.max_connections));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let mut last_warn: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shared.shutdown.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(error = %e, listener = %cfg.name, "Accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if last_warn.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                    last_warn = Some(Instant::now());
                    tracing::warn!(
                        listener = %cfg.name,
                        max_connections = cfg.max_connections,
                        client.addr = %peer,
                        "Connection limit reached: refusing with 503"
                    );
                }
                if let Ok(slot) = refusing.clone().try_acquire_owned() {
                    shared.tracker.spawn(async move {
                        refuse(stream).await;
                        drop(slot);
                    });
                }
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let body_idle = shared.state.load().config.limits.body_idle_timeout;
        let conn = Arc::new(ConnInfo {
            listener: cfg.clone(),
            client: SocketAddr::new(peer.ip().to_canonical(), peer.port()),
            activity: Activity::build(Some(permit), body_idle),
        });
        shared.tracker.spawn(serve(shared.clone(), conn, stream));
    }
}

/// Answer 503 to a connection over the limit, then close it once the client has read it (or
/// after [`REFUSE_LINGER`]): closing with its request unread would reset the connection
/// before the answer arrives.
async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(REFUSE_LINGER, async {
        stream.write_all(OVER_CAPACITY).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<(), io::Error>(())
    })
    .await;
}

async fn serve(shared: Arc<Shared>, conn: Arc<ConnInfo>, stream: TcpStream) {
    let limits = shared.state.load().config.limits.clone();
    let io = TimedIo::new(
        stream,
        conn.activity.clone(),
        limits.header_read_timeout,
        limits.keepalive_idle_timeout,
    );
    let svc_shared = shared.clone();
    let svc_conn = conn.clone();
    let svc = service_fn(move |req: Request<Incoming>| {
        let shared = svc_shared.clone();
        let conn = svc_conn.clone();
        async move { Ok::<_, Infallible>(pipeline::handle(shared, conn, req).await) }
    });
    let mut builder = http1::Builder::new();
    builder
        .keep_alive(true)
        .max_buf_size(limits.max_header_bytes.max(8192));
    let c = builder
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    tokio::pin!(c);
    let result = tokio::select! {
        r = c.as_mut() => r,
        _ = shared.shutdown.cancelled() => {
            c.as_mut().graceful_shutdown();
            tokio::select! {
                r = c.as_mut() => r,
                _ = shared.hard.cancelled() => return,
            }
        }
    };
    if let Err(e) = result {
        // hyper refused these itself before any request reached the pipeline: audit them here
        // so every refusal has its record, with the status hyper actually sent.
        match crate::audit::recorder::hyper_refusal(&e) {
            Some(status) => audit_protocol_error(&shared, &conn, status, &e),
            None => tracing::debug!(error = %e, client.addr = %conn.client, "Connection ended"),
        }
    }
}

fn audit_protocol_error(
    shared: &Arc<Shared>,
    conn: &ConnInfo,
    status: Option<StatusCode>,
    e: &hyper::Error,
) {
    let snap = shared.state.load();
    let mut rec = Recorder::new(
        shared.deps.audit.clone(),
        AuditRecord {
            ts: audit::now_rfc3339(),
            listener: conn.listener.name.clone(),
            client_addr: Some(conn.client),
            intent: "unknown".into(),
            decision: "deny".into(),
            mode: conn.listener.mode.as_str().into(),
            reason: "malformed-request".into(),
            profile: snap.config.profile.name.clone(),
            db_version: snap.db_version.clone(),
            status: status.map(|s| s.as_u16()),
            error_side: Some("downstream".into()),
            error: Some(e.to_string()),
            ..AuditRecord::default()
        },
    );
    rec.finish();
}
