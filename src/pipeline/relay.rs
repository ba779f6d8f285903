//! Absolute-form HTTP: relay one request to the vetted upstream connection, bodies streamed
//! both ways, hop-by-hop headers removed (RFC 9110 §7.6.1), `Via` added.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Body;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response};
use tokio::net::TcpStream;

use crate::audit::recorder::{Counted, Direction, Recorder};
use crate::config::Limits;
use crate::conn::Activity;
use crate::destination::Destination;
use crate::error::ProxyError;
use crate::http::ProxyBody;
use crate::http::headers::{add_via, origin_form, strip_hop_by_hop};
use crate::policy::VettedAddr;
use crate::upstream::h1::{self, SendError};
use crate::upstream::pool::{IdleConns, Slot, UpstreamConn};
use crate::upstream::watch::Watched;
use crate::upstream::{Connector, connect_first};

/// The upstream connection a request goes over: an idle keep-alive connection to a vetted
/// address, or a freshly dialled one.
pub enum Upstream {
    /// Reused from the idle set.
    Pooled(UpstreamConn, VettedAddr),
    /// Newly connected, with its place in the address's connection limit (if one applies).
    Fresh(TcpStream, VettedAddr, Option<Slot>),
}

impl Upstream {
    /// The vetted address it goes to.
    pub fn addr(&self) -> VettedAddr {
        match self {
            Upstream::Pooled(_, a) | Upstream::Fresh(_, a, _) => *a,
        }
    }
}

/// What a relay needs besides the request: where connections come from and go back to, and
/// the limits that apply.
pub struct RelayCtx<'a> {
    /// The idle set connections are taken from and returned to.
    pub idle: &'a Arc<IdleConns>,
    /// For the one fresh dial that retries a request a stale pooled connection failed.
    pub connector: &'a Arc<dyn Connector>,
    /// The addresses the decision vetted, in order.
    pub vetted: &'a [VettedAddr],
    /// The snapshot's limits.
    pub limits: &'a Limits,
    /// The client connection (its request body idle timeout).
    pub activity: &'a Arc<Activity>,
}

/// The request to send once more, on a fresh dial, after a pooled connection failed under it
/// before any answer byte (the upstream closed it as it was taken): the request if none of it
/// was written, or if it is idempotent (RFC 9110 §9.2.2) and has no body. Once only; else the
/// failure.
pub(super) fn retry_stale(
    e: SendError,
    pooled: bool,
    retried: bool,
    upstream: std::net::SocketAddr,
) -> Result<Request<ProxyBody>, h1::Error> {
    if !pooled || retried || e.started {
        return Err(e.error);
    }
    let Some(r) = e.unsent.or(e.unanswered.filter(|r| idempotent(r.method()))) else {
        return Err(e.error);
    };
    tracing::debug!(
        error = %e.error,
        upstream = %upstream,
        "Pooled upstream connection failed before answering: retrying on a fresh dial"
    );
    Ok(r)
}

/// RFC 9110 §9.2.2.
fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

fn open(stream: TcpStream, body_idle: Duration) -> UpstreamConn {
    let (io, watch) = Watched::new(stream, body_idle);
    UpstreamConn::new(Box::new(io), None, watch)
}

/// Send `req` to `dest` over `conn` and return the response with its body counted; the
/// recorder rides in the response body and emits the audit record when it ends.
///
/// A pooled connection can turn out stale (the origin closed it as it was taken). When such a
/// connection fails before any response byte, the request is sent once more on a fresh dial
/// of the vetted addresses if none of it was written, or if it is idempotent and has no body
/// (the client hands either back). Nothing else is ever replayed.
pub async fn relay(
    req: Request<ProxyBody>,
    dest: &Destination,
    conn: Upstream,
    ctx: RelayCtx<'_>,
    mut rec: Recorder,
) -> Result<Response<ProxyBody>, (ProxyError, Recorder)> {
    let target = dest.authority();
    let upstream_err = |reason: String| ProxyError::Upstream {
        target: target.clone(),
        reason,
    };
    let (mut parts, body) = req.into_parts();
    // RFC 9112 §3.2.2: a proxy replaces Host with the target URI's authority.
    let host_value = if dest.port == 80 {
        dest.host.to_string()
    } else {
        target.clone()
    };
    let host_value = match dest.host {
        crate::destination::Host::Ip(std::net::IpAddr::V6(_)) if dest.port == 80 => {
            format!("[{}]", dest.host)
        }
        _ => host_value,
    };
    strip_hop_by_hop(&mut parts.headers);
    match HeaderValue::from_str(&host_value) {
        Ok(v) => {
            parts.headers.insert(header::HOST, v);
        }
        Err(e) => return Err((ProxyError::BadRequest(e.to_string()), rec)),
    }
    add_via(&mut parts.headers);
    parts.uri = match origin_form(&parts.uri) {
        Ok(u) => u,
        Err(e) => return Err((ProxyError::BadRequest(e.to_string()), rec)),
    };
    let guard = (!body.is_end_stream()).then(|| ctx.activity.body());
    // While the request body is open, the client's reads are held to `body_idle_timeout`
    // (see `conn::TimedIo`).
    let up_body = Counted::new(body, rec.bytes.clone(), Direction::Up, None)
        .holding(guard)
        .boxed();
    let mut req = Request::from_parts(parts, up_body);
    let body_idle = ctx.limits.body_idle_timeout;
    let mut conn = conn;
    let mut retried = false;
    let (resp, addr) = loop {
        let addr = conn.addr();
        rec.rec().dialed_ip = Some(addr.addr().ip());
        let (sender, pooled) = match conn {
            Upstream::Pooled(sender, _) => (sender, true),
            Upstream::Fresh(stream, _, slot) => {
                let mut s = open(stream, body_idle);
                s.hold(slot);
                (s, false)
            }
        };
        let sent =
            tokio::time::timeout(ctx.limits.upstream_response_timeout, sender.send(req)).await;
        let e = match sent {
            Ok(Ok(r)) => break (r, addr),
            Ok(Err(e)) => e,
            Err(_) => return Err((ProxyError::UpstreamTimeout(target.clone()), rec)),
        };
        match retry_stale(e, pooled, retried, addr.addr()) {
            Ok(r) => {
                retried = true;
                req = r;
                let (stream, fresh) = match connect_first(
                    ctx.connector,
                    ctx.vetted,
                    ctx.limits.connect_timeout,
                    &target,
                )
                .await
                {
                    Ok(x) => x,
                    Err(e) => return Err((e, rec)),
                };
                // In no connection limit: it stands in for the failed one, whose place
                // was given back when it closed.
                conn = Upstream::Fresh(stream, fresh, None);
            }
            Err(e) => return Err((upstream_err(e.to_string()), rec)),
        }
    };
    // The connection goes back to the idle set when the response body is finished.
    let (mut parts, mut body) = resp.into_parts();
    body.return_to(ctx.idle.clone(), addr);
    // A large sized body may be spliced to the client (`http::RawBody`).
    if let Some(raw) = body.lend(rec.bytes.clone()) {
        parts.extensions.insert(raw);
    }
    // The client leaves the hop-by-hop fields out (`upstream::h1`).
    add_via(&mut parts.headers);
    rec.rec().status = Some(parts.status.as_u16());
    let bytes = rec.bytes.clone();
    let body = Counted::new(body, bytes, Direction::Down, Some(rec));
    Ok(Response::from_parts(parts, body.boxed()))
}
