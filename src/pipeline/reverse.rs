//! Reverse proxying: the real client (PROXY protocol, trusted forwarding headers), host and path
//! to a route, a pool member, and the same resolve → lookup → decide stages as egress before
//! dialling only vetted addresses of that member. Bodies stream both ways.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http_body_util::BodyExt;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode, Version};

use crate::audit::recorder::{Counted, Direction, Recorder};
use crate::audit::{self, ProxyReason};
use crate::config::ListenerConfig;
use crate::config::reverse::{Member, RouteConfig};
use crate::conn::ConnInfo;
use crate::error::{ProxyError, Side};
use crate::http::ProxyBody;
use crate::http::headers::{VIA, origin_form, strip_hop_by_hop};
use crate::http::{failure, listener_gone, refusal, text_response};
use crate::pipeline::vet;
use crate::policy::{Decision, Reason, Subject, Verdict};
use crate::state::{Shared, Snapshot};
use crate::upstream::pool::{PoolState, Reserved};
use crate::wire::forwarded;

/// The host a request is for: `:authority` (HTTP/2, absolute-form) or `Host`, without port,
/// lower-cased, one trailing dot removed.
pub fn request_host<B>(req: &Request<B>) -> Option<String> {
    let raw = req
        .uri()
        .authority()
        .map(|a| a.host().to_string())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(|h| match h.rsplit_once(':') {
                    Some((host, port))
                        if port.bytes().all(|b| b.is_ascii_digit()) && !host.ends_with(']')
                            || host.starts_with('[') && host.ends_with(']') =>
                    {
                        host.to_string()
                    }
                    _ => h.to_string(),
                })
        })?;
    let h = raw
        .trim_matches(['[', ']'])
        .trim_end_matches('.')
        .to_ascii_lowercase();
    (!h.is_empty()).then_some(h)
}

/// The first route for this listener, host and path.
pub fn route<'a>(
    routes: &'a [RouteConfig],
    listener: &str,
    host: &str,
    path: &str,
) -> Option<&'a RouteConfig> {
    routes.iter().find(|r| {
        (r.listeners.is_empty() || r.listeners.iter().any(|l| l == listener))
            && r.host.matches(host)
            && path.starts_with(r.path_prefix.as_str())
    })
}

/// Resolve a member and decide on its addresses: the vet stage egress and `explain` use.
pub async fn vet_member(
    shared: &Shared,
    snap: &Snapshot,
    subject: &Subject<'_>,
    member: &Member,
) -> Result<Decision, ProxyError> {
    vet::resolve_and_decide(
        shared.deps.resolver.as_ref(),
        &snap.table,
        &snap.config,
        subject,
        &member.host,
    )
    .await
    .into_result(subject.host)
}

/// Handle one request on a reverse listener. Exactly one audit record.
pub async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    req: Request<ProxyBody>,
    tls: bool,
) -> Response<ProxyBody> {
    let busy = conn.activity.begin();
    let snap = shared.state.load_full();
    let cfg = &snap.config;
    // This request's listener settings: from the snapshot it decides on.
    let gone = || {
        let base = snap.record(&conn.listener, conn.client, audit::Intent::Reverse);
        listener_gone(Recorder::new(shared.deps.audit.clone(), base))
    };
    let Some(listener) = snap.listener(&conn.listener.name).cloned() else {
        return gone();
    };
    let Some(rl) = listener.reverse() else {
        return gone();
    };
    // Client identity: the PROXY-protocol or socket peer, then the trusted forwarding header.
    let client_ip = forwarded::client_addr(
        conn.client.ip(),
        req.headers(),
        &rl.trusted_proxies,
        rl.forwarded_header,
    );
    let client = if client_ip == conn.client.ip() {
        conn.client
    } else {
        SocketAddr::new(client_ip, 0)
    };
    let mut rec = Recorder::new(
        shared.deps.audit.clone(),
        snap.record(&listener, client, audit::Intent::Reverse),
    );
    rec.hold(busy);
    let host = request_host(&req);
    rec.rec().dest_host = host.clone();
    if !listener
        .allowed_clients
        .iter()
        .any(|n| n.contains(&client_ip))
    {
        let d = Decision::early(Reason::ClientNotAllowed, listener.mode);
        return refusal(rec, d, &cfg.profile, host.as_deref().unwrap_or("-"), 0);
    }
    let Some(host) = host else {
        return failure(
            rec,
            ProxyError::BadRequest("no Host header or :authority".into()),
            ProxyReason::MalformedRequest,
        );
    };
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    if let Some(port) = rl.redirect_https_port {
        // `host` has lost its brackets: an IPv6 literal needs them back in a URI.
        let authority = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        let location = if port == 443 {
            format!("https://{authority}{path}")
        } else {
            format!("https://{authority}:{port}{path}")
        };
        let r = rec.rec();
        r.decision = Verdict::Allow;
        r.reason = ProxyReason::RedirectHttps.into();
        r.status = Some(308);
        rec.finish();
        let mut resp = text_response(
            StatusCode::PERMANENT_REDIRECT,
            format!("{location}\n"),
            "redirect",
        );
        if let Ok(v) = HeaderValue::from_str(&location) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        return resp;
    }
    let pool_name = route(&cfg.routes, &listener.name, &host, path)
        .map(|r| r.pool.clone())
        .or_else(|| rl.default_pool.clone());
    let Some(pool) = pool_name.and_then(|n| snap.pools.get(&n).cloned()) else {
        let r = rec.rec();
        r.reason = ProxyReason::NoRoute.into();
        r.status = Some(404);
        rec.finish();
        return text_response(
            StatusCode::NOT_FOUND,
            format!("residency-proxy: no route for {host}\n"),
            &format!("deny; reason={}", ProxyReason::NoRoute),
        );
    };
    forward_to_pool(
        shared.clone(),
        &snap,
        &conn,
        &listener,
        pool,
        req,
        rec,
        client_ip,
        &host,
        tls,
    )
    .await
}

/// Serve the request from a member of `pool`.
///
/// Members are tried in the pool's order, starting with the one the balancer picks. A member
/// the policy denies for this request is skipped for the next available one (nothing is
/// dialled or sent to it, and it is not counted as a failure); a member that cannot be resolved
/// or connected to is reported to passive health and the request moves on once more. Only when
/// every available member is denied is the answer 403, recorded with the first deny.
#[allow(clippy::too_many_arguments)]
async fn forward_to_pool(
    shared: Arc<Shared>,
    snap: &Snapshot,
    conn: &ConnInfo,
    listener: &ListenerConfig,
    pool: Arc<PoolState>,
    req: Request<ProxyBody>,
    mut rec: Recorder,
    client_ip: IpAddr,
    host: &str,
    tls: bool,
) -> Response<ProxyBody> {
    /// Resolution or connection failures after which the request gives up (nothing was sent).
    const MAX_FAILURES: usize = 2;
    let cfg = &snap.config;
    let rl = listener.reverse();
    let mut tried = vec![false; pool.len()];
    let mut prev = None;
    let mut failures = 0;
    let mut last_err = None;
    let mut denied: Option<(&Member, Decision)> = None;
    while failures < MAX_FAILURES {
        let next = match prev {
            None => pool.pick(None),
            Some(p) => next_member(&pool, p, &tried),
        };
        let Some(i) = next else { break };
        prev = Some(i);
        if let Some(t) = tried.get_mut(i) {
            *t = true;
        }
        let (Some(member), Some((member_host, target))) =
            (pool.cfg.members.get(i), pool.member_text(i))
        else {
            break;
        };
        {
            let r = rec.rec();
            r.dest_host = Some(member_host.to_string());
            r.dest_port = Some(member.port);
        }
        let subject = Subject {
            listener: &listener.name,
            mode: listener.mode,
            client: client_ip,
            host: member_host,
            port: member.port,
        };
        let decision = match vet_member(&shared, snap, &subject, member).await {
            Ok(d) => d,
            Err(e) => {
                pool.report(i, false);
                rec.rec().reason = Reason::ResolveFailed.into();
                last_err = Some(e);
                failures += 1;
                continue;
            }
        };
        if decision.verdict == Verdict::Deny {
            tracing::debug!(
                pool = %pool.cfg.name,
                member = i,
                reason = decision.reason.as_str(),
                "Pool member denied for this request; trying the next"
            );
            if denied.is_none() {
                denied = Some((member, decision));
            }
            continue;
        }
        rec.decision(&decision, &cfg.profile);
        let reserved = match pool
            .reserve(&member.host, &decision.vetted, &cfg.limits, target)
            .await
        {
            Ok(r) => r,
            // Every connection this member may have is busy, for all of connect_timeout: the
            // next member, as for a failed dial (the member is not unhealthy).
            Err(e) => {
                last_err = Some(e);
                failures += 1;
                continue;
            }
        };
        let pooled = matches!(reserved, Reserved::Idle(..));
        let (sender, addr) = match reserved {
            Reserved::Idle(c, a) => (c, a),
            // Boxed: a fresh dial (TCP, perhaps TLS, the HTTP handshake) is the rare case on
            // a warm pool, and inline its state would grow every request's future.
            Reserved::Dial(slot) => match Box::pin(pool.connect(
                &member.host,
                &decision.vetted,
                &shared.deps.connector,
                cfg.limits.connect_timeout,
                target,
                slot,
            ))
            .await
            {
                Ok(x) => x,
                Err(e) => {
                    pool.report(i, false);
                    last_err = Some(e);
                    failures += 1;
                    continue;
                }
            },
        };
        rec.rec().dialed_ip = Some(addr.addr().ip());
        let in_flight = pool.begin(i);
        rec.hold(in_flight);
        let (trusted, believed) = rl.map_or((&[][..], Default::default()), |r| {
            (&r.trusted_proxies[..], r.forwarded_header)
        });
        let upstream_req = match rewrite(req, host, conn.client.ip(), tls, trusted, believed, &rec)
        {
            Ok(r) => r,
            Err(e) => return failure(rec, e, decision.reason),
        };
        let (mut sender, mut addr, mut req, mut retried) = (sender, addr, upstream_req, false);
        let sent = loop {
            let sent =
                tokio::time::timeout(cfg.limits.upstream_response_timeout, sender.send(req)).await;
            let e = match sent {
                Ok(Ok(r)) => break Ok(Ok(r)),
                Ok(Err(e)) => e,
                Err(elapsed) => break Err(elapsed),
            };
            // A pooled connection the member closed as it was taken (its keep-alive ran out):
            // the retry on a fresh dial of the same member is not counted as failing.
            let r = match super::relay::retry_stale(e, pooled, retried, addr.addr()) {
                Ok(r) => r,
                Err(e) => break Ok(Err(e)),
            };
            retried = true;
            req = r;
            // Outside the member's connection limit: it stands in for the failed one.
            match Box::pin(pool.connect(
                &member.host,
                &decision.vetted,
                &shared.deps.connector,
                cfg.limits.connect_timeout,
                target,
                None,
            ))
            .await
            {
                Ok((c, a)) => {
                    (sender, addr) = (c, a);
                    rec.rec().dialed_ip = Some(addr.addr().ip());
                }
                Err(e) => {
                    pool.report(i, false);
                    return failure(rec, e, decision.reason);
                }
            }
        };
        let resp = match sent {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                pool.report(i, false);
                let e = ProxyError::Upstream {
                    target: target.to_string(),
                    reason: e.to_string(),
                };
                return failure(rec, e, decision.reason);
            }
            Err(_) => {
                pool.report(i, false);
                return failure(
                    rec,
                    ProxyError::UpstreamTimeout(target.to_string()),
                    decision.reason,
                );
            }
        };
        pool.report(i, true);
        // The connection goes back to the idle set when the response body is finished.
        let (mut parts, mut body) = resp.into_parts();
        body.return_to(pool.idle().clone(), addr);
        // A large sized body may be spliced to the client (`http::RawBody`).
        if let Some(raw) = body.lend(rec.bytes.clone()) {
            parts.extensions.insert(raw);
        }
        // The client leaves the hop-by-hop fields out (`upstream::h1`).
        parts
            .headers
            .append(header::VIA, HeaderValue::from_static(VIA));
        rec.rec().status = Some(parts.status.as_u16());
        let bytes = rec.bytes.clone();
        let body = Counted::new(body, bytes, Direction::Down, Some(rec));
        return Response::from_parts(parts, body.boxed());
    }
    match (last_err, denied) {
        (Some(e), _) => failure(rec, e, ProxyReason::UpstreamUnavailable),
        (None, Some((member, decision))) => {
            let member_host = member.host.to_string();
            {
                let r = rec.rec();
                r.dest_host = Some(member_host.clone());
                r.dest_port = Some(member.port);
            }
            refusal(rec, decision, &cfg.profile, &member_host, member.port)
        }
        (None, None) => {
            let r = rec.rec();
            r.reason = ProxyReason::NoHealthyMember.into();
            r.status = Some(503);
            r.error_side = Some(Side::Upstream);
            rec.finish();
            text_response(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "residency-proxy: no healthy upstream in pool {}\n",
                    pool.cfg.name
                ),
                &format!("error; reason={}", ProxyReason::NoHealthyMember),
            )
        }
    }
}

/// The member to try after `prev`: the balancer's next pick if it has not been tried, else the
/// next untried member in service after `prev` in pool order. `None` when none is left.
fn next_member(pool: &PoolState, prev: usize, tried: &[bool]) -> Option<usize> {
    let untried = |i: usize| tried.get(i).is_some_and(|t| !t);
    if let Some(i) = pool.pick(Some(prev))
        && untried(i)
    {
        return Some(i);
    }
    let n = tried.len();
    (1..n)
        .map(|k| (prev + k) % n)
        .find(|&i| untried(i) && pool.available(i))
}

/// The request as the upstream sees it: HTTP/1.1, origin-form, hop-by-hop headers removed,
/// `Host` set to the authority the request was routed by, the listener's forwarding header
/// applied (the other removed), `Via` added, body counted.
fn rewrite(
    req: Request<ProxyBody>,
    host: &str,
    peer: IpAddr,
    tls: bool,
    trusted: &[ipnet::IpNet],
    believed: forwarded::ForwardedHeader,
    rec: &Recorder,
) -> Result<Request<ProxyBody>, ProxyError> {
    let (mut parts, body) = req.into_parts();
    // The authority the request was routed by: the URI's (absolute-form, HTTP/2 `:authority`)
    // outranks `Host` (RFC 9112 §3.2.2, RFC 9113 §8.3.1), exactly as in `request_host`.
    // A `Host` field the request already has is kept as it is (shared, not copied).
    let original_host = match parts.uri.authority() {
        Some(a) => HeaderValue::from_str(a.as_str()),
        None => match parts.headers.get(header::HOST) {
            Some(h) if h.to_str().is_ok() => Ok(h.clone()),
            _ => HeaderValue::from_str(host),
        },
    }
    .map_err(|e| ProxyError::BadRequest(e.to_string()))?;
    strip_hop_by_hop(&mut parts.headers);
    forwarded::apply(
        &mut parts.headers,
        peer,
        if tls { "https" } else { "http" },
        original_host.to_str().ok(),
        trusted,
        believed,
    );
    parts.headers.insert(header::HOST, original_host);
    parts
        .headers
        .append(header::VIA, HeaderValue::from_static(VIA));
    parts.uri = origin_form(&parts.uri).map_err(|e| ProxyError::BadRequest(e.to_string()))?;
    parts.version = Version::HTTP_11;
    let body = Counted::new(body, rec.bytes.clone(), Direction::Up, None);
    Ok(Request::from_parts(parts, body.boxed()))
}
