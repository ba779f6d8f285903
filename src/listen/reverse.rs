//! Stage 1 for reverse listeners: accept, read the PROXY protocol header when the listener
//! expects one, terminate TLS (SNI picks the certificate, ALPN picks h2 or http/1.1), and serve
//! HTTP/1.1 and HTTP/2 with hyper-util's auto server. Also runs the pools' active health checks.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{ConnSlot, accept_with};
use crate::audit::{self, ProxyReason};
use crate::config::{Limits, ListenerConfig};
use crate::conn::{Activity, ConnInfo, TimedIo};
use crate::http::server::{self, End, Rewind, Stops, UpgradedIo};
use crate::pipeline::reverse;
use crate::state::Shared;
use crate::wire::proxy_protocol;

/// Accept loop of a reverse listener.
pub async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    cfg: Arc<ListenerConfig>,
    stop: CancellationToken,
) {
    accept_with(shared, listener, cfg, stop, serve).await;
}

async fn serve(
    shared: Arc<Shared>,
    cfg: Arc<ListenerConfig>,
    mut stream: TcpStream,
    peer: SocketAddr,
    _slot: ConnSlot,
) {
    let limits = shared.state.load().config.limits.clone();
    let Some((proxy_protocol, tls)) = cfg.reverse().map(|r| (r.proxy_protocol, r.tls.clone()))
    else {
        return;
    };
    let mut client = SocketAddr::new(peer.ip().to_canonical(), peer.port());
    if let Some(accept) = proxy_protocol {
        // Boxed, like the TLS path below: this future is the connection's task for its whole
        // life, so what only some connections need lives on the heap while it runs.
        let header = Box::pin(proxy_protocol::read_header(
            &mut stream,
            accept,
            limits.header_read_timeout,
        ))
        .await;
        match header {
            Ok(h) => {
                if let Some(src) = h.source {
                    client = SocketAddr::new(src.ip().to_canonical(), src.port());
                }
            }
            Err(e) => {
                let e = e.to_string();
                super::audit_refused(
                    &shared,
                    &cfg,
                    client,
                    audit::Intent::Reverse,
                    ProxyReason::BadProxyProtocol,
                    None,
                    &e,
                );
                return;
            }
        }
    }
    let conn = Arc::new(ConnInfo {
        listener: cfg.clone(),
        client,
        activity: Activity::new(),
    });
    match tls {
        Some(tls) => Box::pin(serve_tls(shared, cfg, conn, stream, tls, limits)).await,
        None => {
            let io = TimedIo::new(
                stream,
                conn.activity.clone(),
                limits.header_read_timeout,
                limits.keepalive_idle_timeout,
            );
            serve_http(shared, conn, io, false, false).await;
        }
    }
}

/// Terminate TLS, then serve HTTP over it.
async fn serve_tls(
    shared: Arc<Shared>,
    cfg: Arc<ListenerConfig>,
    conn: Arc<ConnInfo>,
    stream: TcpStream,
    tls: Arc<rustls::ServerConfig>,
    limits: Limits,
) {
    let client = conn.client;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let handshake = async {
        // A connection closed (or left silent) before its first byte attempted no
        // handshake (a TCP health probe, say): nothing to audit. Anything else that
        // does not end in a TLS session is audited once.
        let mut first = [0u8; 1];
        match stream.peek(&mut first).await {
            Ok(0) => return Err(None),
            Ok(_) => {}
            Err(e) => return Err(Some(format!("TLS handshake failed: {e}"))),
        }
        let io = TimedIo::new(
            stream,
            conn.activity.clone(),
            limits.header_read_timeout,
            limits.keepalive_idle_timeout,
        );
        acceptor
            .accept(io)
            .await
            .map_err(|e| Some(format!("TLS handshake failed: {e}")))
    };
    let result = tokio::select! {
        r = tokio::time::timeout(limits.header_read_timeout, handshake) => match r {
            Ok(r) => r,
            Err(_) => Err(Some("TLS handshake timed out".to_string())),
        },
        // Cut at the drain deadline before any request: nothing to record.
        _ = shared.hard.cancelled() => return,
    };
    match result {
        Ok(s) => {
            let h2 = s.get_ref().1.alpn_protocol() == Some(b"h2");
            serve_http(shared, conn, s, true, h2).await
        }
        Err(Some(e)) => {
            tracing::debug!(error = %e, client.addr = %client, "TLS handshake failed");
            super::audit_refused(
                &shared,
                &cfg,
                client,
                audit::Intent::Reverse,
                ProxyReason::TlsHandshakeFailed,
                None,
                &e,
            );
        }
        Err(None) => {
            tracing::debug!(client.addr = %client, "Closed before a TLS handshake");
        }
    }
}

/// Serve HTTP on a client connection: simple HTTP/1.1 requests in the proxy's own keep-alive
/// loop (`http::server`), the rest of the connection by hyper from the first request that
/// needs it; a connection that chose HTTP/2 by ALPN goes to hyper at once.
async fn serve_http<T>(shared: Arc<Shared>, conn: Arc<ConnInfo>, io: T, tls: bool, alpn_h2: bool)
where
    T: UpgradedIo + 'static,
{
    let io = if alpn_h2 {
        Rewind::new(io, Vec::new())
    } else {
        let max_head = shared.state.load().config.limits.max_header_bytes.max(8192);
        let stops = Stops {
            shutdown: &shared.shutdown,
            hard: &shared.hard,
        };
        let handle = |req| Box::pin(reverse::handle(shared.clone(), conn.clone(), req, tls));
        match server::serve(io, max_head, false, stops, handle).await {
            End::Done => return,
            End::Handover(io) => io,
        }
    };
    // Boxed: only connections handed over pay for hyper's connection state.
    Box::pin(serve_hyper(shared, conn, TokioIo::new(io), tls)).await;
}

async fn serve_hyper<I>(shared: Arc<Shared>, conn: Arc<ConnInfo>, io: I, tls: bool)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let limits = shared.state.load().config.limits.clone();
    let svc_shared = shared.clone();
    let svc_conn = conn.clone();
    let svc = service_fn(move |req: Request<Incoming>| {
        let shared = svc_shared.clone();
        let conn = svc_conn.clone();
        // Boxed: hyper keeps the service future's slot for the connection's whole life, so an
        // idle keep-alive connection holds a pointer instead of the request's 4.7 KB state.
        Box::pin(async move {
            let req = req.map(crate::http::from_hyper);
            Ok::<_, Infallible>(reverse::handle(shared, conn, req, tls).await)
        })
    });
    let h2 = conn.listener.reverse().is_some_and(|r| r.h2);
    if !h2 {
        // `h2 = false` means HTTP/1.1 only: no HTTP/2 by ALPN (see the TLS config) and none by
        // prior knowledge either, which the auto builder below would detect and serve (its
        // `http1_only` does nothing for connections served with upgrades).
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .keep_alive(true)
            .max_buf_size(limits.max_header_bytes.max(8192));
        let c = std::pin::pin!(builder.serve_connection(io, svc).with_upgrades());
        drive(&shared, &conn, c, |c| c.graceful_shutdown()).await;
        return;
    }
    // HTTP/2 streams run in tasks of their own: tracked and cut like the connection, so a
    // shutdown waits for (and cuts) them and their records with everything else.
    let mut builder = auto::Builder::new(TrackedExecutor {
        tracker: shared.tracker.clone(),
        hard: shared.hard.clone(),
    });
    builder
        .http1()
        .keep_alive(true)
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(limits.h2_max_header_list_size)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let c = std::pin::pin!(builder.serve_connection_with_upgrades(io, svc));
    drive(&shared, &conn, c, |c| c.graceful_shutdown()).await;
}

/// Run a client connection to its end; on shutdown, finish it gracefully, and cut it when the
/// drain time is up. A malformed request hyper refused itself (400, 431, 414) is audited here,
/// with the status hyper sent. The connection is pinned by the caller: moved in here, it
/// would take its room twice in the connection task's future.
async fn drive<C, E>(
    shared: &Arc<Shared>,
    conn: &ConnInfo,
    mut c: std::pin::Pin<&mut C>,
    graceful: impl FnOnce(std::pin::Pin<&mut C>),
) where
    C: std::future::Future<Output = Result<(), E>>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let result = tokio::select! {
        r = c.as_mut() => r,
        _ = shared.shutdown.cancelled() => {
            graceful(c.as_mut());
            tokio::select! {
                r = c.as_mut() => r,
                _ = shared.hard.cancelled() => return,
            }
        }
    };
    let Err(e) = result else {
        return;
    };
    let e: Box<dyn std::error::Error + Send + Sync> = e.into();
    super::audit_connection_error(shared, conn, audit::Intent::Reverse, e.as_ref());
}

/// Spawns hyper's HTTP/2 stream tasks on the proxy's task tracker, cut at the drain deadline.
#[derive(Clone)]
struct TrackedExecutor {
    tracker: TaskTracker,
    hard: CancellationToken,
}

impl<F> hyper::rt::Executor<F> for TrackedExecutor
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        let hard = self.hard.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                _ = fut => {}
                _ = hard.cancelled() => {}
            }
        });
    }
}
