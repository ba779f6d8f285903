//! A connection redirected to a transparent listener, start to end: was it redirected (and
//! not looped back)? → peek its first bytes (TLS SNI or HTTP `Host`, never consumed) → believe
//! the name only if it resolves to the original destination → vet the original destination
//! (the one and only dial target) → record → dial the vetted address → tunnel the bytes,
//! the peeked ones included, untouched.
//!
//! One audit record per connection, `intent = "transparent"`, with the original destination
//! (`dest.addrs`, `dest.port`), the name claimed (`dest.claimed`), whether it was verified and
//! decided on (`dest.verified`), and the bytes both ways.

mod peek;

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::audit::recorder::Recorder;
use crate::audit::{Intent, ProxyReason};
use crate::config::ListenerConfig;
use crate::destination::{Host, normalize_host, parse_authority};
use crate::error::{ProxyError, Side};
use crate::pipeline::vet;
use crate::policy::{Decision, Subject, Verdict};
use crate::state::{Shared, Snapshot};
use crate::upstream::connect_first;
use crate::upstream::tunnel::{TunnelLimits, tunnel};
use crate::wire::sniff::FirstBytes;

pub use peek::{Peeked, peek_first};

/// Longest claimed name kept in the audit record (an SNI is at most 255 bytes; a `Host`
/// header can be longer).
const MAX_CLAIM_LEN: usize = 512;

/// How long a client answered 403 or 502 is given to read it before the connection closes.
const ANSWER_LINGER: std::time::Duration = std::time::Duration::from_secs(1);

/// What the accept loop knows of a redirected connection.
#[derive(Debug, Clone)]
pub struct Redirected {
    /// The client (its address as the listener saw it, IPv4-mapped addresses unmapped).
    pub client: SocketAddr,
    /// The listener's side of the connection.
    pub local: SocketAddr,
    /// The original destination (`SO_ORIGINAL_DST` / `IP6T_SO_ORIGINAL_DST`), or why there is
    /// none.
    pub original: Result<SocketAddr, String>,
}

/// The local addresses of the upstream connections a transparent listener has open. A new
/// connection coming *from* one of them is the proxy's own dial redirected back to it: the
/// redirect rule does not exempt the proxy, and the connection is refused instead of looping.
#[derive(Debug, Default)]
pub struct OwnConnections {
    addrs: Mutex<HashSet<SocketAddr>>,
}

impl OwnConnections {
    fn insert(self: &Arc<Self>, addr: SocketAddr) -> OwnGuard {
        self.lock().insert(canonical(addr));
        OwnGuard {
            set: self.clone(),
            addr: canonical(addr),
        }
    }

    fn contains(&self, addr: SocketAddr) -> bool {
        self.lock().contains(&canonical(addr))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<SocketAddr>> {
        self.addrs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Removes an upstream connection's address from [`OwnConnections`] when it closes.
struct OwnGuard {
    set: Arc<OwnConnections>,
    addr: SocketAddr,
}

impl Drop for OwnGuard {
    fn drop(&mut self) {
        self.set.lock().remove(&self.addr);
    }
}

fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// Handle one connection accepted by a transparent listener. Exactly one audit record is
/// emitted for it, whatever happens.
pub async fn handle(
    shared: Arc<Shared>,
    bound: Arc<ListenerConfig>,
    mut stream: TcpStream,
    conn: Redirected,
    own: Arc<OwnConnections>,
) {
    let snap = shared.state.load_full();
    // This connection's listener settings: from the snapshot it decides on.
    let current = snap
        .listener(&bound.name)
        .and_then(|l| l.transparent().map(|t| (l.clone(), t.clone())));
    let Some((listener, settings)) = current else {
        let base = snap.record(&bound, conn.client, Intent::Transparent);
        let mut rec = Recorder::new(shared.deps.audit.clone(), base);
        tracing::warn!(listener = %bound.name, "Connection on a listener the current configuration no longer has");
        let r = rec.rec();
        r.reason = ProxyReason::ListenerNotConfigured.into();
        r.error_side = Some(Side::Internal);
        r.error = Some(format!("listener {} is no longer configured", bound.name));
        rec.finish();
        return;
    };
    let mut rec = Recorder::new(
        shared.deps.audit.clone(),
        snap.record(&listener, conn.client, Intent::Transparent),
    );
    rec.rec().dest_verified = Some(false);

    // 1. redirected here, and not looping?
    let original = match conn.original {
        Ok(o) => canonical(o),
        Err(e) => {
            let why = format!(
                "no original destination ({e}): the connection was not redirected to this listener"
            );
            return refuse(rec, ProxyReason::NotRedirected, Side::Downstream, why);
        }
    };
    {
        let r = rec.rec();
        r.dest_host = Some(original.ip().to_string());
        r.dest_port = Some(original.port());
    }
    if original == canonical(conn.local) {
        let why = format!(
            "original destination {original} is the listener itself: the connection was not redirected"
        );
        return refuse(rec, ProxyReason::NotRedirected, Side::Downstream, why);
    }
    if let Some(name) = own_listener(&snap, original, conn.local) {
        let why = format!(
            "original destination {original} is the proxy's own listener {name}: refusing a redirect loop"
        );
        return refuse(rec, ProxyReason::RedirectLoop, Side::Internal, why);
    }

    // 2. peek: TLS SNI, HTTP Host, or nothing to go on
    let first = match peek_first(&stream, settings.peek_max_bytes, settings.peek_timeout).await {
        Peeked::Bytes(f) => f,
        Peeked::Silent => FirstBytes::Other,
        Peeked::Closed => {
            let r = rec.rec();
            r.error_side = Some(Side::Downstream);
            r.error = Some("client closed the connection before sending anything".into());
            rec.finish();
            return;
        }
    };
    // The proxy's own upstream connection, redirected back (checked after the peek: by the
    // time bytes arrive, the dialling side has registered its connection).
    if own.contains(conn.client) {
        let why = format!(
            "connection from {} is the proxy's own upstream connection redirected back to it: exempt the proxy's user (iptables -m owner ! --uid-owner) from the redirect rule",
            conn.client
        );
        return refuse(rec, ProxyReason::RedirectLoop, Side::Internal, why);
    }

    // 3. the name claimed, believed only if it resolves to the original destination
    let claimed = first.claimed_name().map(|c| truncate(c, MAX_CLAIM_LEN));
    let verified = match first.claimed_name() {
        Some(raw) => believe(&shared, raw, &first, original, settings.host_must_resolve).await,
        None => None,
    };
    let (host, is_verified) = match &verified {
        Some(Belief::Verified(name)) => (name.clone(), true),
        Some(Belief::Unchecked(name)) => (name.clone(), false),
        None => (original.ip().to_string(), false),
    };
    {
        let r = rec.rec();
        r.dest_claimed = claimed;
        r.dest_verified = Some(is_verified);
        r.dest_host = Some(host.clone());
    }

    // 4. vet the original destination, the only address this connection can reach
    let cfg = &snap.config;
    let subject = Subject {
        listener: &listener.name,
        mode: listener.mode,
        client: conn.client.ip(),
        host: &host,
        port: original.port(),
    };
    let decision = match vet::gate(&listener, subject.client, subject.port) {
        Some(reason) => Decision::early(reason, listener.mode),
        None => vet::decide(&snap.table, cfg, &subject, &[original.ip()]),
    };
    rec.decision(&decision, &cfg.profile);
    let http = matches!(first, FirstBytes::Http { .. });
    if decision.verdict == Verdict::Deny {
        tracing::debug!(
            listener = %listener.name,
            client.addr = %conn.client,
            original = %original,
            host = %host,
            reason = %decision.reason,
            "Transparent connection denied"
        );
        if http {
            rec.rec().status = Some(403);
            answer(&mut stream, &deny_answer(&decision, &snap, &host, original)).await;
        }
        rec.finish();
        return;
    }

    // 5. dial the vetted original destination
    let authority = SocketAddr::new(original.ip(), original.port()).to_string();
    let upstream = match connect_first(
        &shared.deps.connector,
        &decision.vetted,
        cfg.limits.connect_timeout,
        &authority,
    )
    .await
    {
        Ok((s, addr)) => {
            rec.rec().dialed_ip = Some(addr.addr().ip());
            s
        }
        Err(e) => return failed(rec, &mut stream, &e, http).await,
    };
    let _own = upstream.local_addr().ok().map(|a| own.insert(a));

    // 6. tunnel, the peeked bytes first (they are still in the client socket)
    let limits = TunnelLimits {
        idle: cfg.limits.tunnel_idle_timeout,
        lifetime: cfg.limits.max_tunnel_lifetime,
    };
    let counters = rec.bytes.clone();
    let hard = shared.hard.clone();
    tokio::select! {
        stats = tunnel(stream, upstream, limits, &counters) => {
            if stats.idle_timeout {
                rec.rec().error = Some("tunnel idle timeout".into());
            } else if stats.lifetime_exceeded {
                rec.rec().error = Some("tunnel lifetime exceeded".into());
            }
            rec.finish();
        }
        // Cut at the drain deadline: the recorder, dropped unfinished, says so.
        _ = hard.cancelled() => {}
    }
}

/// How a claimed name came to be used for the decision.
enum Belief {
    /// It resolves to the original destination (or is that address written out).
    Verified(String),
    /// `host_must_resolve = false`: used as claimed.
    Unchecked(String),
}

/// Whether to believe the name `raw` that `first` claimed for a connection to `original`;
/// `None`: decide by address. A `Host` value's port is ignored (the original destination's
/// port is the one dialled and decided on).
async fn believe(
    shared: &Shared,
    raw: &str,
    first: &FirstBytes,
    original: SocketAddr,
    must_resolve: bool,
) -> Option<Belief> {
    let host = match first {
        FirstBytes::Http { .. } => parse_authority(raw, Some(original.port())).map(|d| d.host),
        _ => normalize_host(raw),
    };
    let host = match host {
        Ok(h) => h,
        Err(e) => {
            tracing::debug!(claimed = %raw.escape_debug(), error = %e, "Claimed name is not a host name: deciding by address");
            return None;
        }
    };
    let want: IpAddr = original.ip();
    match host {
        Host::Ip(ip) if ip.to_canonical() == want => Some(Belief::Verified(ip.to_string())),
        Host::Ip(_) => None,
        Host::Name(name) if !must_resolve => Some(Belief::Unchecked(name)),
        Host::Name(name) => match shared.deps.resolver.resolve(&name).await {
            Ok(addrs) if addrs.iter().any(|a| a.to_canonical() == want) => {
                Some(Belief::Verified(name))
            }
            Ok(addrs) => {
                tracing::debug!(claimed = %name, original = %original, resolved = ?addrs, "Claimed name does not resolve to the original destination: deciding by address");
                None
            }
            Err(e) => {
                tracing::debug!(claimed = %name, error = %e, "Claimed name does not resolve: deciding by address");
                None
            }
        },
    }
}

/// The name of the proxy listener whose address `original` is, if any (a listener bound to an
/// unspecified address counts for the loopback addresses and the address the connection
/// arrived on).
fn own_listener(snap: &Snapshot, original: SocketAddr, local: SocketAddr) -> Option<String> {
    let local_ip = local.ip().to_canonical();
    snap.config
        .listeners
        .iter()
        .find(|l| {
            let bind = canonical(l.bind);
            bind.port() != 0
                && bind.port() == original.port()
                && (bind.ip() == original.ip()
                    || (bind.ip().is_unspecified()
                        && (original.ip().is_loopback() || original.ip() == local_ip)))
        })
        .map(|l| l.name.clone())
}

/// Record a refused connection (not redirected, or a loop), log it, and close.
fn refuse(mut rec: Recorder, reason: ProxyReason, side: Side, why: String) {
    let listener = rec.rec().listener.clone();
    let client = rec.rec().client_addr;
    match reason {
        ProxyReason::RedirectLoop => {
            tracing::error!(listener = %listener, client.addr = ?client, "Refused: {why}")
        }
        _ => tracing::warn!(listener = %listener, client.addr = ?client, "Refused: {why}"),
    }
    let r = rec.rec();
    r.reason = reason.into();
    r.error_side = Some(side);
    r.error = Some(why);
    rec.finish();
}

/// Record a dial failure; a plain-HTTP client is answered with its status.
async fn failed(mut rec: Recorder, stream: &mut TcpStream, e: &ProxyError, http: bool) {
    rec.error(e);
    if http {
        let text = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\nx-residency-decision: error; reason={}\r\nconnection: close\r\ncontent-length: {}\r\n\r\nresidency-proxy: {e}\n",
            e.status().as_u16(),
            e.status().canonical_reason().unwrap_or(""),
            e.label(),
            format!("residency-proxy: {e}\n").len(),
        );
        answer(stream, &text).await;
    } else {
        // Nothing was sent to the client: a TLS or other client sees the connection close.
        rec.rec().status = None;
    }
    rec.finish();
}

/// The 403 a plain-HTTP client gets for a deny, naming the decision as forward listeners do.
fn deny_answer(decision: &Decision, snap: &Snapshot, host: &str, original: SocketAddr) -> String {
    let jurisdiction = decision
        .jurisdiction
        .map_or("-".to_string(), |j| j.code().to_string());
    let mut header = format!(
        "deny; reason={}; jurisdiction={jurisdiction}",
        decision.reason.as_str()
    );
    if let Some(rule) = &decision.rule {
        header.push_str(&format!("; rule={rule}"));
    }
    let body = format!(
        "residency-proxy: {host} ({original}) denied: {} (jurisdiction {jurisdiction}, profile {})\n",
        decision.reason.as_str(),
        snap.config.profile.name
    );
    format!(
        "HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain; charset=utf-8\r\nx-residency-decision: {header}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Write `text` to the client and close once it has been read (or after [`ANSWER_LINGER`]):
/// closing with the request unread would reset the connection before the answer arrives.
async fn answer(stream: &mut TcpStream, text: &str) {
    let _ = tokio::time::timeout(ANSWER_LINGER, async {
        stream.write_all(text.as_bytes()).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<(), std::io::Error>(())
    })
    .await;
}

/// `s` cut to at most `max` bytes, on a character boundary.
fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests;
