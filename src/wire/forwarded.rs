//! Client identity through trusted proxies: `X-Forwarded-For`, `X-Forwarded-Proto`,
//! `X-Forwarded-Host` and `Forwarded` (RFC 7239).
//!
//! # One header per listener: [`ForwardedHeader`]
//!
//! Each reverse listener names the one forwarding header it believes from trusted proxies
//! (`forwarded_header`, default `x-forwarded-for`). The two lists are never mixed: a client
//! can put either header in its request, and a trusted proxy that maintains only one of them
//! passes the other through unchallenged, so believing "whichever is present" would let a
//! client choose its own identity. The header not chosen is neither read nor passed on.
//!
//! - `x-forwarded-for`: `X-Forwarded-For` is walked; `X-Forwarded-Proto` and
//!   `X-Forwarded-Host` are kept from a trusted peer. `Forwarded` is removed.
//! - `forwarded`: `Forwarded` `for=` is walked. `X-Forwarded-For`, `X-Forwarded-Proto` and
//!   `X-Forwarded-Host` are removed (`Forwarded` carries `proto` and `host` itself).
//!
//! # Reading: [`client_addr`]
//!
//! The starting point is the connection's peer (the PROXY protocol source when the listener
//! uses it, else the socket peer). The believed header is read only when that peer is a
//! trusted proxy; then its list of hops is walked right to left (each proxy appends the address
//! it received the request from), skipping trusted hops, and the first untrusted address is the
//! client. Anything the walk cannot use (a malformed entry, `unknown`, an obfuscated
//! identifier, a `Forwarded` element without `for=`) stops it at the last trusted hop seen:
//! entries to the left of such a hop were written by someone we cannot vouch for.
//!
//! Addresses are compared with the trusted CIDRs both as written and in canonical form (an
//! IPv4-mapped IPv6 address such as `::ffff:10.0.0.1`, which a dual-stack socket reports for
//! IPv4 peers, matches `10.0.0.0/8`), and are returned exactly as seen.
//!
//! # Writing: [`apply`]
//!
//! The header not believed is removed; the believed one is removed too when the peer is not
//! trusted; then our hop is appended, so the upstream only ever receives a chain we vetted.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hyper::HeaderMap;
use hyper::header::{FORWARDED, HeaderName, HeaderValue};
use ipnet::IpNet;

/// `X-Forwarded-For`: comma-separated client address chain, left-most is the original client.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`: the scheme the client used ("https" / "http").
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`: the `Host` the client asked for.
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The forwarding header a reverse listener believes from trusted proxies and writes for its
/// upstreams (`forwarded_header`); the other one is removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For` (with `X-Forwarded-Proto` and `X-Forwarded-Host`).
    #[default]
    XForwardedFor,
    /// `Forwarded` (RFC 7239).
    Forwarded,
}

impl ForwardedHeader {
    /// The configuration spelling: `x-forwarded-for` or `forwarded`.
    pub fn as_str(self) -> &'static str {
        match self {
            ForwardedHeader::XForwardedFor => "x-forwarded-for",
            ForwardedHeader::Forwarded => "forwarded",
        }
    }

    /// Parse the configuration spelling (exact, lower case).
    pub fn parse(text: &str) -> Option<ForwardedHeader> {
        match text {
            "x-forwarded-for" => Some(ForwardedHeader::XForwardedFor),
            "forwarded" => Some(ForwardedHeader::Forwarded),
            _ => None,
        }
    }
}

/// What one hop of a forwarding list says about who sent the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    /// A usable address (any port is dropped).
    Addr(IpAddr),
    /// `for=unknown` (RFC 7239 §6.2).
    Unknown,
    /// An obfuscated identifier such as `for=_hidden` (RFC 7239 §6.3).
    Obfuscated,
    /// A `Forwarded` element without a `for` parameter.
    Missing,
    /// Not parseable.
    Malformed,
}

/// Work out the real client: start from the socket peer (or the PROXY-protocol source); if
/// that peer is in `trusted` (CIDRs), walk the `believed` header's list (X-Forwarded-For, or
/// Forwarded `for=`) right to left, skipping trusted hops, and take the first untrusted
/// address; never believe the headers when the peer is not trusted. The other header is
/// ignored entirely. Malformed entries stop the walk (use the last trusted-hop address seen).
///
/// If every hop is trusted, the left-most one is returned. `unknown`, obfuscated identifiers
/// and `Forwarded` elements without `for=` stop the walk like malformed entries do. Ports in
/// entries (`203.0.113.7:4711`, `"[2001:db8::7]:443"`) are accepted and dropped.
pub fn client_addr(
    peer: IpAddr,
    headers: &HeaderMap,
    trusted: &[IpNet],
    believed: ForwardedHeader,
) -> IpAddr {
    if !is_trusted(peer, trusted) {
        return peer;
    }
    let hops = match believed {
        ForwardedHeader::Forwarded => forwarded_hops(headers),
        ForwardedHeader::XForwardedFor => xff_hops(headers),
    };
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Node::Addr(ip) = *hop else {
            break;
        };
        client = ip;
        if !is_trusted(ip, trusted) {
            break;
        }
    }
    client
}

/// Rewrite the request headers for the upstream, in the `believed` vocabulary only.
///
/// The other header is removed (for `forwarded`, the whole `X-Forwarded-*` family). If the
/// peer is NOT trusted, the believed header (and for `x-forwarded-for`, X-Forwarded-Proto and
/// -Host) is removed as well. Then, for `x-forwarded-for`: append the peer to X-Forwarded-For
/// (comma-joined onto the existing list when trusted), set X-Forwarded-Proto to `proto`
/// ("https"/"http") unless trusted and already present, and set X-Forwarded-Host to the
/// original Host unless trusted and present. For `forwarded`: append a
/// `Forwarded: for=...;proto=...;host=...` element (RFC 7239 §4, IPv6 quoted and bracketed:
/// `for="[2001:db8::1]"`).
///
/// The list leaves as a single field (several incoming fields are joined in order). `proto`
/// and `host` values that cannot be carried in a header (control or non-ASCII characters) are
/// left out. An incoming `Forwarded` field with an unterminated quoted-string, which would
/// swallow our element, is passed on as `for=unknown` (a walk stops there either way).
pub fn apply(
    headers: &mut HeaderMap,
    peer: IpAddr,
    proto: &'static str,
    host: Option<&str>,
    trusted: &[IpNet],
    believed: ForwardedHeader,
) {
    let trusted_peer = is_trusted(peer, trusted);
    // One pass over the names present: most requests carry none of these headers, and
    // removing or reading an absent name still hashes it.
    let carries_any = headers.keys().any(|k| {
        matches!(
            k.as_str(),
            "forwarded" | "x-forwarded-for" | "x-forwarded-proto" | "x-forwarded-host"
        )
    });
    match believed {
        ForwardedHeader::XForwardedFor => {
            if carries_any {
                headers.remove(FORWARDED);
                if !trusted_peer {
                    for name in [&X_FORWARDED_FOR, &X_FORWARDED_PROTO, &X_FORWARDED_HOST] {
                        headers.remove(name);
                    }
                }
            }
            let xff = carries_any
                .then(|| joined_list(headers, &X_FORWARDED_FOR, |v| v))
                .flatten();
            let mut buf = [0u8; 39];
            let spelled;
            let own: &[u8] = match ip_bytes(peer, &mut buf) {
                Some(text) => text,
                None => {
                    spelled = peer.to_string();
                    spelled.as_bytes()
                }
            };
            match xff {
                Some(prior) => set_list(headers, X_FORWARDED_FOR, Some(prior), own),
                // The common case, no list to extend: the address alone, one copy.
                None => match HeaderValue::from_bytes(own) {
                    Ok(value) => {
                        headers.insert(X_FORWARDED_FOR, value);
                    }
                    Err(_) => {
                        headers.remove(X_FORWARDED_FOR);
                    }
                },
            }
            if !(trusted_peer && headers.contains_key(&X_FORWARDED_PROTO)) {
                headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
            }
            if !(trusted_peer && headers.contains_key(&X_FORWARDED_HOST))
                && let Some(Ok(value)) = host.map(HeaderValue::from_str)
            {
                headers.insert(X_FORWARDED_HOST, value);
            }
        }
        ForwardedHeader::Forwarded => {
            if carries_any {
                for name in [&X_FORWARDED_FOR, &X_FORWARDED_PROTO, &X_FORWARDED_HOST] {
                    headers.remove(name);
                }
                if !trusted_peer {
                    headers.remove(FORWARDED);
                }
            }
            // A field with an unterminated quoted-string would swallow every element appended
            // after it; `for=unknown` stops a walk exactly where that malformed field did.
            let fwd = joined_list(headers, &FORWARDED, |v| {
                if quotes_balanced(v) {
                    v
                } else {
                    b"for=unknown"
                }
            });
            let mut element = format!("for={}", node_text(peer));
            if let Some(proto) = param_value(proto) {
                element.push_str(";proto=");
                element.push_str(&proto);
            }
            if let Some(host) = host.and_then(param_value) {
                element.push_str(";host=");
                element.push_str(&host);
            }
            set_list(headers, FORWARDED, fwd, element.as_bytes());
        }
    }
}

/// Whether `ip` is inside a trusted CIDR, as written or in canonical form.
fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    let canonical = ip.to_canonical();
    trusted
        .iter()
        .any(|net| net.contains(&ip) || net.contains(&canonical))
}

/// All values of `name` with content, each passed through `fix`, joined with ", " in order;
/// None when there are none.
fn joined_list(
    headers: &HeaderMap,
    name: &HeaderName,
    fix: impl Fn(&[u8]) -> &[u8],
) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    for value in headers.get_all(name) {
        let bytes = value.as_bytes().trim_ascii();
        if bytes.is_empty() {
            continue;
        }
        let bytes = fix(bytes);
        match out.as_mut() {
            None => out = Some(bytes.to_vec()),
            Some(list) => {
                list.extend_from_slice(b", ");
                list.extend_from_slice(bytes);
            }
        }
    }
    out
}

/// Replace `name` with `prior` (if any) plus `last`, as one comma-joined field.
fn set_list(headers: &mut HeaderMap, name: HeaderName, prior: Option<Vec<u8>>, last: &[u8]) {
    let mut list = prior.unwrap_or_default();
    if !list.is_empty() {
        list.extend_from_slice(b", ");
    }
    list.extend_from_slice(last);
    // `prior` is made of header values and ASCII, so this cannot fail; if it somehow did,
    // the chain is restarted from our own hop rather than dropped.
    let value = HeaderValue::from_maybe_shared(bytes::Bytes::from(list))
        .or_else(|_| HeaderValue::from_bytes(last));
    match value {
        Ok(value) => {
            headers.insert(name, value);
        }
        Err(_) => {
            headers.remove(name);
        }
    }
}

/// The hops of all `X-Forwarded-For` fields, in order. Empty list elements are ignored
/// (RFC 9110 §5.6.1); a field that is not visible ASCII counts as one malformed hop.
fn xff_hops(headers: &HeaderMap) -> Vec<Node> {
    let mut hops = Vec::new();
    for value in headers.get_all(&X_FORWARDED_FOR) {
        let Ok(text) = value.to_str() else {
            hops.push(Node::Malformed);
            continue;
        };
        hops.extend(
            text.split(',')
                .map(str::trim)
                .filter(|entry| !entry.is_empty())
                .map(xff_entry),
        );
    }
    hops
}

/// One `X-Forwarded-For` entry: an address, optionally with a port (`1.2.3.4:80`,
/// `[2001:db8::1]:443`) or brackets (`[2001:db8::1]`).
fn xff_entry(entry: &str) -> Node {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Node::Addr(ip);
    }
    if let Ok(sock) = entry.parse::<SocketAddr>() {
        return Node::Addr(sock.ip());
    }
    match entry
        .strip_prefix('[')
        .and_then(|e| e.strip_suffix(']'))
        .map(str::parse::<Ipv6Addr>)
    {
        Some(Ok(v6)) => Node::Addr(IpAddr::V6(v6)),
        _ => Node::Malformed,
    }
}

/// The `for=` of every element of all `Forwarded` fields, in order.
fn forwarded_hops(headers: &HeaderMap) -> Vec<Node> {
    let mut hops = Vec::new();
    for value in headers.get_all(FORWARDED) {
        match value.to_str() {
            Ok(text) => parse_forwarded(text.as_bytes(), &mut hops),
            Err(_) => hops.push(Node::Malformed),
        }
    }
    hops
}

/// Parse one `Forwarded` field value (RFC 7239 §4):
/// `1#forwarded-element`, `forwarded-element = [ pair ] *( ";" [ pair ] )`,
/// `pair = token "=" ( token / quoted-string )`. Optional whitespace is tolerated around `,`
/// and `;`. A syntax error makes its element malformed and parsing resumes at the next comma
/// outside a quoted string; an unterminated quoted string makes the rest of the value one
/// malformed element.
fn parse_forwarded(s: &[u8], hops: &mut Vec<Node>) {
    let mut i = 0;
    loop {
        let (node, next) = parse_element(s, i);
        if let Some(node) = node {
            hops.push(node);
        }
        i = next;
        // `parse_element` stops at a comma or at the end.
        if i >= s.len() {
            return;
        }
        i += 1;
    }
}

/// Parse the element starting at `i`; return what it says (None for an empty element) and
/// the index of the comma ending it (or the end of `s`).
fn parse_element(s: &[u8], mut i: usize) -> (Option<Node>, usize) {
    let mut names: Vec<String> = Vec::new();
    let mut node = None;
    loop {
        i = skip_ows(s, i);
        match s.get(i) {
            None | Some(b',') => break,
            Some(b';') => {
                i += 1;
                continue;
            }
            Some(_) => {}
        }
        let Some((name, value, next)) = parse_pair(s, i) else {
            return (Some(Node::Malformed), skip_to_comma(s, i));
        };
        let name = name.to_ascii_lowercase();
        // RFC 7239 §4: a parameter must not occur more than once per element.
        if names.contains(&name) {
            return (Some(Node::Malformed), skip_to_comma(s, next));
        }
        if name == "for" {
            node = Some(parse_node(&value));
        }
        names.push(name);
        i = skip_ows(s, next);
        match s.get(i) {
            None | Some(b',') => break,
            Some(b';') => i += 1,
            Some(_) => return (Some(Node::Malformed), skip_to_comma(s, i)),
        }
    }
    let node = match node {
        Some(node) => Some(node),
        None if names.is_empty() => None,
        None => Some(Node::Missing),
    };
    (node, i)
}

/// `token "=" ( token / quoted-string )` at `i`: (name, unescaped value, index after).
fn parse_pair(s: &[u8], i: usize) -> Option<(String, String, usize)> {
    let name_end = token_end(s, i);
    if name_end == i || s.get(name_end) != Some(&b'=') {
        return None;
    }
    let name = String::from_utf8(s[i..name_end].to_vec()).ok()?;
    let start = name_end + 1;
    if s.get(start) == Some(&b'"') {
        let (value, next) = quoted_string(s, start)?;
        return Some((name, value, next));
    }
    let end = token_end(s, start);
    if end == start {
        return None;
    }
    let value = String::from_utf8(s[start..end].to_vec()).ok()?;
    Some((name, value, end))
}

fn token_end(s: &[u8], mut i: usize) -> usize {
    while s.get(i).is_some_and(|&b| is_tchar(b)) {
        i += 1;
    }
    i
}

/// The index after the closing quote of the quoted-string opening at `i` (which is a `"`);
/// None if it never closes.
fn quoted_end(s: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    loop {
        match *s.get(j)? {
            b'"' => return Some(j + 1),
            b'\\' => j += 2,
            _ => j += 1,
        }
    }
}

/// The quoted-string opening at `i` (which is a `"`), unescaped, and the index after its
/// closing quote; None if it never closes.
fn quoted_string(s: &[u8], i: usize) -> Option<(String, usize)> {
    let end = quoted_end(s, i)?;
    let mut out = Vec::with_capacity(end - i);
    let mut escaped = false;
    for &b in &s[i + 1..end - 1] {
        if b == b'\\' && !escaped {
            escaped = true;
            continue;
        }
        escaped = false;
        out.push(b);
    }
    Some((String::from_utf8(out).ok()?, end))
}

/// Whether every quoted-string in a `Forwarded` value closes. Outside quoted strings the
/// parser only ever opens one at a `"`, so this scan sees the value as the parser does.
fn quotes_balanced(s: &[u8]) -> bool {
    let mut i = 0;
    while let Some(&b) = s.get(i) {
        if b == b'"' {
            match quoted_end(s, i) {
                Some(next) => i = next,
                None => return false,
            }
        } else {
            i += 1;
        }
    }
    true
}

fn skip_ows(s: &[u8], mut i: usize) -> usize {
    while matches!(s.get(i), Some(b' ' | b'\t')) {
        i += 1;
    }
    i
}

/// The index of the next comma at or after `i` outside quoted strings, or the end of `s`
/// (also when a quoted string never closes: the rest is one malformed element).
fn skip_to_comma(s: &[u8], mut i: usize) -> usize {
    while let Some(&b) = s.get(i) {
        match b {
            b',' => return i,
            b'"' => match quoted_end(s, i) {
                Some(next) => i = next,
                None => return s.len(),
            },
            _ => i += 1,
        }
    }
    i
}

/// A `for=` node (RFC 7239 §6): `nodename [ ":" node-port ]`, where nodename is an IPv4
/// address, a bracketed IPv6 address, `unknown` or an obfuscated `_identifier`.
fn parse_node(value: &str) -> Node {
    if let Some(rest) = value.strip_prefix('[') {
        return parse_bracketed_node(rest);
    }
    let (name, port) = match value.split_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (value, None),
    };
    if !port.is_none_or(valid_port) {
        return Node::Malformed;
    }
    if name.eq_ignore_ascii_case("unknown") {
        return Node::Unknown;
    }
    if is_obfuscated(name) {
        return Node::Obfuscated;
    }
    match name.parse::<Ipv4Addr>() {
        Ok(v4) => Node::Addr(IpAddr::V4(v4)),
        Err(_) => Node::Malformed,
    }
}

/// The rest of a node after its `[`: `IPv6address "]" [ ":" node-port ]`.
fn parse_bracketed_node(rest: &str) -> Node {
    let Some((v6, after)) = rest.split_once(']') else {
        return Node::Malformed;
    };
    let port_ok = after.is_empty() || after.strip_prefix(':').is_some_and(valid_port);
    match v6.parse::<Ipv6Addr>() {
        Ok(v6) if port_ok => Node::Addr(IpAddr::V6(v6)),
        _ => Node::Malformed,
    }
}

/// `node-port = port / obfport`, `port = 1*5DIGIT`.
fn valid_port(port: &str) -> bool {
    (!port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit()))
        || is_obfuscated(port)
}

/// `"_" 1*( ALPHA / DIGIT / "." / "_" / "-" )`.
fn is_obfuscated(text: &str) -> bool {
    text.strip_prefix('_').is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    })
}

mod text;
#[cfg(test)]
use text::ip_text;
use text::{ip_bytes, is_tchar, node_text, param_value};

#[cfg(test)]
mod tests;
