//! Stage 1 for reverse listeners: accept, read the PROXY protocol header when the listener
//! expects one, terminate TLS (SNI picks the certificate, ALPN picks h2 or http/1.1), and serve
//! HTTP/1.1 and HTTP/2 with hyper-util's auto server. Also runs the pools' active health checks.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};

use crate::audit::{self, AuditRecord};
use crate::config::ListenerConfig;
use crate::listener::{Activity, ConnInfo, TimedIo, accept_with};
use crate::protocol::reverse;
use crate::proxy_protocol;
use crate::record::Recorder;
use crate::server::Shared;

/// Accept loop of a reverse listener.
pub async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, cfg: Arc<ListenerConfig>) {
    accept_with(shared, listener, cfg, serve).await;
}

async fn serve(
    shared: Arc<Shared>,
    cfg: Arc<ListenerConfig>,
    mut stream: TcpStream,
    peer: SocketAddr,
) {
    let limits = shared.state.load().config.limits.clone();
    let Some(rl) = cfg.reverse.clone() else {
        return;
    };
    let mut client = SocketAddr::new(peer.ip().to_canonical(), peer.port());
    if let Some(accept) = rl.proxy_protocol {
        match proxy_protocol::read_header(&mut stream, accept, limits.header_read_timeout).await {
            Ok(h) => {
                if let Some(src) = h.source {
                    client = SocketAddr::new(src.ip().to_canonical(), src.port());
                }
            }
            Err(e) => {
                audit_refused(&shared, &cfg, client, "bad-proxy-protocol", &e.to_string());
                return;
            }
        }
    }
    let conn = Arc::new(ConnInfo {
        listener: cfg.clone(),
        client,
        activity: Activity::new(),
    });
    let io = TimedIo::new(
        stream,
        conn.activity.clone(),
        limits.header_read_timeout,
        limits.keepalive_idle_timeout,
    );
    match rl.tls.clone() {
        Some(tls) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls);
            let handshake =
                tokio::time::timeout(limits.header_read_timeout, acceptor.accept(io)).await;
            match handshake {
                Ok(Ok(s)) => serve_http(shared, conn, TokioIo::new(s), true).await,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, client.addr = %client, "TLS handshake failed")
                }
                Err(_) => tracing::debug!(client.addr = %client, "TLS handshake timed out"),
            }
        }
        None => serve_http(shared, conn, TokioIo::new(io), false).await,
    }
}

async fn serve_http<I>(shared: Arc<Shared>, conn: Arc<ConnInfo>, io: I, tls: bool)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let limits = shared.state.load().config.limits.clone();
    let svc_shared = shared.clone();
    let svc_conn = conn.clone();
    let svc = service_fn(move |req: Request<Incoming>| {
        let shared = svc_shared.clone();
        let conn = svc_conn.clone();
        async move { Ok::<_, Infallible>(reverse::handle(shared, conn, req, tls).await) }
    });
    let h2 = conn.listener.reverse.as_ref().is_some_and(|r| r.h2);
    if !h2 {
        // `h2 = false` means HTTP/1.1 only: no HTTP/2 by ALPN (see the TLS config) and none by
        // prior knowledge either, which the auto builder below would detect and serve (its
        // `http1_only` does nothing for connections served with upgrades).
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .keep_alive(true)
            .max_buf_size(limits.max_header_bytes.max(8192));
        let c = builder.serve_connection(io, svc).with_upgrades();
        drive(&shared, &conn, c, |c| c.graceful_shutdown()).await;
        return;
    }
    let mut builder = auto::Builder::new(TokioExecutor::new());
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
    let c = builder.serve_connection_with_upgrades(io, svc);
    drive(&shared, &conn, c, |c| c.graceful_shutdown()).await;
}

/// Run a client connection to its end; on shutdown, finish it gracefully, and cut it when the
/// drain time is up.
async fn drive<C, E>(
    shared: &Shared,
    conn: &ConnInfo,
    c: C,
    graceful: impl FnOnce(std::pin::Pin<&mut C>),
) where
    C: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    tokio::pin!(c);
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
    if let Err(e) = result {
        tracing::debug!(error = %e, client.addr = %conn.client, "Connection ended");
    }
}

/// Audit a connection refused before any request (e.g. a malformed PROXY header).
fn audit_refused(
    shared: &Arc<Shared>,
    cfg: &ListenerConfig,
    client: SocketAddr,
    reason: &str,
    error: &str,
) {
    let snap = shared.state.load();
    let mut rec = Recorder::new(
        shared.deps.audit.clone(),
        AuditRecord {
            ts: audit::now_rfc3339(),
            listener: cfg.name.clone(),
            client_addr: Some(client),
            intent: "reverse".into(),
            decision: "deny".into(),
            mode: cfg.mode.as_str().into(),
            reason: reason.into(),
            profile: snap.config.profile.name.clone(),
            db_version: snap.db_version.clone(),
            error_side: Some("downstream".into()),
            error: Some(error.into()),
            ..AuditRecord::default()
        },
    );
    rec.finish();
}

/// Active health checks: every pool with `health_check` has its members probed with a GET of
/// that path every interval, over vetted addresses only; 2xx and 3xx are healthy.
///
/// A member is vetted for the check as the reverse listeners that use the pool would vet it
/// (their name and mode, so their report mode and listener-scoped rules apply; see
/// `probe`). A member no such listener may reach is not dialled and is not held out of
/// rotation by the check: every request vets its members itself, skips a denied one for the
/// next, and answers 403 naming the deny when all are denied (a 503 "no healthy member" would
/// hide the policy's answer). A member whose name does not resolve is unhealthy.
pub async fn health_loop(shared: Arc<Shared>, pool_name: String) {
    loop {
        let snap = shared.state.load_full();
        let Some(pool) = snap.pools.get(&pool_name).cloned() else {
            return;
        };
        let Some(check) = pool.cfg.health_check.clone() else {
            return;
        };
        for (i, member) in pool.cfg.members.iter().enumerate() {
            let outcome = tokio::time::timeout(
                check.timeout,
                probe(&shared, &snap, &pool, member, &check.path),
            )
            .await
            .unwrap_or(Probe::Unhealthy);
            if outcome == Probe::NotVetted {
                tracing::debug!(
                    pool = %pool.cfg.name,
                    member = i,
                    "No listener using the pool may reach this member; not probed"
                );
            }
            pool.set_healthy(i, outcome != Probe::Unhealthy);
        }
        tokio::select! {
            _ = tokio::time::sleep(check.interval) => {}
            _ = shared.shutdown.cancelled() => return,
        }
    }
}

/// What one health check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    /// The member answered 2xx or 3xx.
    Healthy,
    /// It did not resolve, could not be connected to, or answered something else.
    Unhealthy,
    /// No listener using the pool may reach it: not dialled.
    NotVetted,
}

/// Check one member. The member is vetted once per reverse listener that uses the pool
/// ([`crate::config::reverse::pool_users`]), in configuration order, with that listener's
/// name and mode, through the same [`reverse::vet_member`] as live requests; the first
/// decision that allows it gives the addresses dialled. The check has no client: rules are
/// matched as for the client `0.0.0.0`, so a rule scoped to particular clients does not apply
/// to it (and cannot take the member out of rotation).
async fn probe(
    shared: &Shared,
    snap: &crate::server::Snapshot,
    pool: &crate::upstream::pool::PoolState,
    member: &crate::config::reverse::Member,
    path: &str,
) -> Probe {
    let host = member.host.to_string();
    let users = crate::config::reverse::pool_users(
        &snap.config.listeners,
        &snap.config.routes,
        &pool.cfg.name,
    );
    let mut vetted = None;
    for listener in users {
        let subject = crate::policy::Subject {
            listener: &listener.name,
            mode: listener.mode,
            client: std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            host: &host,
            port: member.port,
        };
        let Ok(decision) = reverse::vet_member(shared, snap, &subject, member).await else {
            return Probe::Unhealthy;
        };
        if decision.verdict == crate::policy::Verdict::Allow && !decision.vetted.is_empty() {
            vetted = Some(decision.vetted);
            break;
        }
    }
    let Some(vetted) = vetted else {
        return Probe::NotVetted;
    };
    let target = format!("{host}:{}", member.port);
    let Ok((mut sender, _)) = pool
        .connect(
            &member.host,
            &vetted,
            &shared.deps.connector,
            snap.config.limits.connect_timeout,
            &target,
        )
        .await
    else {
        return Probe::Unhealthy;
    };
    let req = Request::get(path)
        .header(hyper::header::HOST, target.as_str())
        .header(hyper::header::USER_AGENT, "residency-proxy-health-check")
        .body(
            http_body_util::Empty::<bytes::Bytes>::new()
                .map_err(crate::pipeline::never)
                .boxed(),
        );
    let Ok(req) = req else {
        return Probe::Unhealthy;
    };
    match sender.send_request(req).await {
        Ok(resp) if resp.status().is_success() || resp.status().is_redirection() => Probe::Healthy,
        _ => Probe::Unhealthy,
    }
}
