//! Headers the proxy removes or adds on every relayed message.

use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};

/// The `Via` value this proxy adds (RFC 9110 §7.6.3).
pub const VIA: &str = "1.1 residency-proxy";

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

/// Append this proxy's `Via` entry.
pub fn add_via(headers: &mut HeaderMap) {
    headers.append(header::VIA, HeaderValue::from_static(VIA));
}
