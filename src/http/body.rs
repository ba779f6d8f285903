//! The body type every request and response of the proxy has.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use tokio::net::TcpStream;

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

/// The rest of a sized response body, still unread on a plain TCP upstream socket. The
/// server's own loop, answering on a plain TCP client socket, moves it socket to socket
/// (`splice(2)`) instead of through the body's frames; the body's frames then only end it.
/// Any other server just polls the body.
pub trait RawRest: Send {
    /// Move up to `most` bytes of the body to `to`: how many went. 0 once nothing more moves
    /// this way: the body is complete, or it failed (its next frame is the error), or its bytes
    /// cannot be spliced (its frames carry the rest). An error is the client socket's.
    fn poll_move(
        &mut self,
        cx: &mut Context<'_>,
        to: &TcpStream,
        most: u64,
    ) -> Poll<std::io::Result<u64>>;
}

/// In a response's extensions: its body's [`RawRest`].
#[derive(Clone)]
pub struct RawBody(pub Arc<Mutex<dyn RawRest>>);
