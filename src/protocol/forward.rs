//! Absolute-form HTTP: relay one request to the vetted upstream connection, bodies streamed
//! both ways, hop-by-hop headers removed (RFC 9110 §7.6.1), `Via` added.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use std::sync::Arc;

use hyper::client::conn::http1::SendRequest;

use crate::destination::Destination;
use crate::error::ProxyError;
use crate::policy::VettedAddr;
use crate::record::{Counted, Direction, Recorder};
use crate::upstream::pool::{Checkin, IdleConns};

/// The `Via` value this proxy adds (RFC 9110 §7.6.3).
pub const VIA: &str = "1.1 residency-proxy";

/// Response body type of the proxy.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// Headers that apply to one connection only and are never forwarded.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

/// Remove hop-by-hop headers, including those the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(n);
    }
    // Transfer-Encoding is hop-by-hop too; hyper re-frames the body itself.
    headers.remove(header::TRANSFER_ENCODING);
}

fn add_via(headers: &mut HeaderMap) {
    headers.append(header::VIA, HeaderValue::from_static(VIA));
}

/// The upstream connection a request goes over: an idle keep-alive connection to a vetted
/// address, or a freshly dialled one.
pub enum Upstream {
    /// Reused from the idle set.
    Pooled(SendRequest<ProxyBody>, VettedAddr),
    /// Newly connected.
    Fresh(TcpStream, VettedAddr),
}

/// Send `req` to `dest` over `conn` and return the response with its body counted; the
/// recorder rides in the response body and emits the audit record when it ends.
pub async fn relay(
    req: Request<Incoming>,
    dest: &Destination,
    conn: Upstream,
    idle: &Arc<IdleConns>,
    response_timeout: Duration,
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
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    parts.uri = match path.parse::<Uri>() {
        Ok(u) => u,
        Err(e) => return Err((ProxyError::BadRequest(e.to_string()), rec)),
    };
    let up_body = Counted::new(body, rec.bytes.clone(), Direction::Up, None).boxed();
    let req = Request::from_parts(parts, up_body);
    let (mut sender, addr) = match conn {
        Upstream::Pooled(sender, addr) => (sender, addr),
        Upstream::Fresh(stream, addr) => {
            let (sender, conn) = match hyper::client::conn::http1::Builder::new()
                .handshake(TokioIo::new(stream))
                .await
            {
                Ok(x) => x,
                Err(e) => return Err((upstream_err(e.to_string()), rec)),
            };
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "Upstream connection ended with an error");
                }
            });
            (sender, addr)
        }
    };
    let resp = match tokio::time::timeout(response_timeout, sender.send_request(req)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return Err((upstream_err(e.to_string()), rec)),
        Err(_) => return Err((ProxyError::UpstreamTimeout(target.clone()), rec)),
    };
    // The connection goes back to the idle set when the response body is finished.
    rec.hold(Checkin::new(idle.clone(), addr, sender));
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    add_via(&mut parts.headers);
    rec.rec().status = Some(parts.status.as_u16());
    let bytes = rec.bytes.clone();
    let body = Counted::new(body, bytes, Direction::Down, Some(rec));
    Ok(Response::from_parts(parts, body.boxed()))
}
