//! The body type every response of the proxy has.

use bytes::Bytes;
use http_body_util::combinators::BoxBody;

/// Response body type of the proxy.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// For `map_err` on infallible bodies.
pub fn never(x: std::convert::Infallible) -> hyper::Error {
    match x {}
}
