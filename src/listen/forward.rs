//! Forward listeners: accept connections, enforce connection limits (a CONNECT tunnel
//! keeps its connection's slot until it closes) and client timeouts, serve HTTP/1.1 with
//! keep-alive and upgrades, and shut down gracefully.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::audit::{self};
use crate::config::ListenerConfig;
use crate::conn::{Activity, ConnInfo, TimedIo};
use crate::http::server::{self, End, Rewind, Stops};
use crate::pipeline;
use crate::state::Shared;

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
pub async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    cfg: Arc<ListenerConfig>,
    stop: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(cfg.max_connections));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let mut last_warn: Option<Instant> = None;
    let inherited = super::nodelay_inherited(&listener);
    while let Some((stream, peer)) = super::accept(&listener, &cfg.name, &stop, inherited).await {
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
        let body_idle = shared.state.load().config.limits.body_idle_timeout;
        let conn = Arc::new(ConnInfo {
            listener: super::current(&shared, &cfg),
            client: SocketAddr::new(peer.ip().to_canonical(), peer.port()),
            activity: Activity::build(Some(permit), body_idle),
        });
        let gauge = shared.metrics.connection(&cfg.name);
        // The future of `serve` is the task (see `accept_with`): no async block around it.
        shared
            .tracker
            .spawn(serve(shared.clone(), conn, stream, gauge));
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

/// Serve one client connection; `_gauge` counts it among the open connections until it ends.
async fn serve(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    stream: TcpStream,
    _gauge: crate::metrics::GaugeGuard,
) {
    let limits = shared.state.load().config.limits.clone();
    let io = TimedIo::new(
        stream,
        conn.activity.clone(),
        limits.header_read_timeout,
        limits.keepalive_idle_timeout,
    );
    // Simple requests in the proxy's own keep-alive loop; hyper serves the rest of the
    // connection from the first request that needs it (a body, an upgrade).
    let stops = Stops {
        shutdown: &shared.shutdown,
        hard: &shared.hard,
    };
    let handle = |req| Box::pin(pipeline::forward::handle(shared.clone(), conn.clone(), req));
    let max_head = limits.max_header_bytes.max(8192);
    let io = match server::serve(io, max_head, true, stops, handle).await {
        End::Done => return,
        End::Handover(io) => io,
    };
    // Boxed: only connections handed over pay for hyper's connection state.
    Box::pin(serve_hyper(shared, conn, io, limits)).await;
}

/// hyper's HTTP/1.1 server for the rest of a connection.
async fn serve_hyper(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    io: Rewind<TimedIo>,
    limits: crate::config::Limits,
) {
    let svc_shared = shared.clone();
    let svc_conn = conn.clone();
    let svc = service_fn(move |req: Request<Incoming>| {
        let shared = svc_shared.clone();
        let conn = svc_conn.clone();
        // Boxed: hyper keeps the service future's slot for the connection's whole life, so an
        // idle keep-alive connection holds a pointer instead of the request's state.
        Box::pin(async move {
            let req = req.map(crate::http::from_hyper);
            Ok::<_, Infallible>(pipeline::forward::handle(shared, conn, req).await)
        })
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
        super::audit_connection_error(&shared, &conn, audit::Intent::Unknown, &e);
    }
}
