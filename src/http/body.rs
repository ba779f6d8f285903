//! The body type every request and response of the proxy has.

use bytes::Bytes;
use http_body_util::combinators::BoxBody;

/// A body's error: hyper's (a client's request body, a hyper-served connection) or the
/// upstream HTTP/1.1 client's ([`crate::upstream::h1`]).
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// Request and response body type of the proxy.
pub type ProxyBody = BoxBody<Bytes, BodyError>;

/// For `map_err` on infallible bodies.
pub fn never(x: std::convert::Infallible) -> BodyError {
    match x {}
}

/// A body hyper read (a request on a hyper-served connection) as the proxy's body type.
pub fn from_hyper(body: hyper::body::Incoming) -> ProxyBody {
    use http_body_util::BodyExt;
    body.map_err(BodyError::from).boxed()
}
