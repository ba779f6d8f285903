//! Headers the proxy removes or adds on every relayed message.

use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};

/// The `Via` value this proxy adds (RFC 9110 §7.6.3).
pub const VIA: &str = "1.1 residency-proxy";

/// Remove hop-by-hop headers, including those the `Connection` header names.
///
/// One pass over the names present, then a removal for each hop-by-hop one found: most
/// messages carry one or none, and a removal of an absent name still hashes it.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    let present: Vec<HeaderName> = headers
        .keys()
        // Transfer-Encoding is hop-by-hop too; hyper re-frames the body itself.
        .filter(|k| is_hop_by_hop(k.as_str()) || named.contains(k))
        .cloned()
        .collect();
    for n in present {
        headers.remove(n);
    }
}

/// Headers that apply to one connection only and are never forwarded (RFC 9110 §7.6.1, plus
/// `proxy-connection`, `keep-alive` and `transfer-encoding`, which hyper re-frames); names
/// are lower case in a `HeaderMap`.
pub(crate) fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "upgrade"
            | "transfer-encoding"
    )
}

/// Append this proxy's `Via` entry.
pub fn add_via(headers: &mut HeaderMap) {
    headers.append(header::VIA, HeaderValue::from_static(VIA));
}

/// The origin-form of `uri` (RFC 9112 §3.2.1): its path and query alone, `/` if it has none.
/// A cheap clone of the parsed part, not a re-parse.
pub fn origin_form(uri: &hyper::Uri) -> Result<hyper::Uri, hyper::http::uri::InvalidUriParts> {
    let mut parts = hyper::http::uri::Parts::default();
    parts.path_and_query = Some(
        uri.path_and_query()
            .cloned()
            .unwrap_or_else(|| hyper::http::uri::PathAndQuery::from_static("/")),
    );
    hyper::Uri::from_parts(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_every_hop_by_hop_header_and_those_connection_names() {
        let mut h = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, X-Private"),
            ("connection", "close"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("proxy-authenticate", "Basic"),
            ("te", "trailers"),
            ("trailer", "x-sum"),
            ("upgrade", "websocket"),
            ("transfer-encoding", "chunked"),
            ("x-private", "1"),
            ("x-private", "2"),
            ("x-kept", "yes"),
            ("host", "example.org"),
        ] {
            h.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["host", "x-kept"]);
        assert_eq!(
            h.get("x-kept").map(HeaderValue::as_bytes),
            Some(&b"yes"[..])
        );
    }

    #[test]
    fn the_name_match_covers_the_list() {
        for name in [
            header::CONNECTION,
            HeaderName::from_static("keep-alive"),
            HeaderName::from_static("proxy-connection"),
            header::PROXY_AUTHENTICATE,
            header::PROXY_AUTHORIZATION,
            header::TE,
            header::TRAILER,
            header::UPGRADE,
            header::TRANSFER_ENCODING,
        ] {
            assert!(is_hop_by_hop(name.as_str()), "{name}");
        }
        assert!(!is_hop_by_hop("host"));
    }

    #[test]
    fn leaves_a_message_without_hop_by_hop_headers_alone() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("example.org"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        let before = h.clone();
        strip_hop_by_hop(&mut h);
        assert_eq!(h, before);
    }
}
