//! The HTTP/1.1 keep-alive loop of the forward and reverse listeners.
//!
//! Most requests a gateway sees are simple: HTTP/1.1, no body, no upgrade (a `GET` for a page,
//! an API read). This loop serves those itself and keeps nothing per connection between
//! requests: it reads into a per-thread buffer, copies out the head of each request (its
//! header values are slices of that one copy) and keeps only bytes of a next, pipelined
//! request. hyper keeps a read and a header write buffer of 8 to 16 KiB each for a
//! connection's whole life; for a gateway holding thousands of idle keep-alive connections
//! that is most of its memory.
//!
//! On a forward listener `CONNECT` is served here too: after a 2xx answer the stream, with any
//! bytes the client sent after its request, goes to the tunnel ([`on_upgrade`]).
//!
//! Everything else (a request with a body, an upgrade, `Expect`, `HEAD`,
//! `Connection: close`, HTTP/1.0, an HTTP/2 preface, and anything malformed or too large) is
//! handed over with the bytes read so far: hyper serves the rest of the connection from
//! exactly where this loop stopped ([`End::Handover`]), with its own checks and error
//! answers. The loop never answers a malformed request itself.
//!
//! Responses are framed as hyper frames them: `Content-Length` from the header or the body's
//! exact size, otherwise chunked; no body for 1xx, 204 and 304; a `Date` header when the
//! response has none; `Connection: close` (and a close after the response) while the proxy
//! shuts down.

use std::cell::RefCell;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, Uri, Version};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::{ProxyBody, never};

mod upgrade;
mod write;

use upgrade::OnUpgrade;
pub(crate) use upgrade::Rewind;
pub use upgrade::{ClientUpgrade, UpgradedIo, on_upgrade};
use write::{Answered, respond};
#[cfg(test)]
use write::{Framing, encode_head};

/// hyper's limit on request headers, kept so a request this loop accepts is one hyper would.
const MAX_HEADERS: usize = 100;

/// The per-thread read buffer.
const SCRATCH_LEN: usize = 16 * 1024;

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_LEN].into_boxed_slice());
    static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// How a connection's time in this loop ended.
pub(crate) enum End<T> {
    /// The connection is finished: closed by the client, by a failed read or write, after a
    /// response that closes it, or at shutdown.
    Done,
    /// hyper serves the rest: the stream with the bytes this loop read and did not serve.
    Handover(Rewind<T>),
}

/// When the loop stops between requests and when it abandons a response.
pub(crate) struct Stops<'a> {
    /// Graceful shutdown: no new request is read; a response in flight says
    /// `Connection: close` if its head is not written yet.
    pub shutdown: &'a CancellationToken,
    /// The drain deadline: a response in flight is cut.
    pub hard: &'a CancellationToken,
}

/// Serve simple requests from `io` with `handle` until the connection ends or a request needs
/// hyper. `max_head` is the largest request head this loop buffers before handing over (hyper
/// then answers 431). With `connect` (forward listeners), a `CONNECT` request is served here
/// too: after a 2xx answer its stream goes to the request's tunnel ([`on_upgrade`]).
pub(crate) async fn serve<T, H, F>(
    mut io: T,
    max_head: usize,
    connect: bool,
    stops: Stops<'_>,
    mut handle: H,
) -> End<T>
where
    T: UpgradedIo + 'static,
    H: FnMut(Request<ProxyBody>) -> F,
    F: Future<Output = Response<ProxyBody>>,
{
    let mut stash = Vec::new();
    loop {
        let next = tokio::select! {
            biased;
            n = next_request(&mut io, &mut stash, max_head, connect) => n,
            _ = stops.shutdown.cancelled() => return End::Done,
        };
        let mut req = match next {
            Ok(Next::Request(r)) => r,
            Ok(Next::Handover) => return End::Handover(Rewind::new(io, stash)),
            Ok(Next::Closed) => {
                let _ = io.shutdown().await;
                return End::Done;
            }
            Err(e) => {
                tracing::debug!(error = %e, "Connection ended");
                return End::Done;
            }
        };
        let tunnel = (req.method() == Method::CONNECT).then(|| {
            let (tx, rx) = oneshot::channel();
            req.extensions_mut()
                .insert(OnUpgrade(Arc::new(Mutex::new(Some(rx)))));
            tx
        });
        let answered = tokio::select! {
            r = respond(&mut io, &mut stash, max_head, handle(req), stops.shutdown, tunnel.is_some()) => r,
            _ = stops.hard.cancelled() => return End::Done,
        };
        if let (Some(tx), Ok(Answered::Tunnel)) = (tunnel, &answered) {
            // The client's stream is the tunnel's now (dropped, and closed, if the tunnel
            // is gone already).
            let _ = tx.send(Box::new(Rewind::new(io, stash)));
            return End::Done;
        }
        match answered {
            Ok(Answered::KeepAlive) => {}
            Ok(Answered::Close | Answered::Tunnel) => {
                let _ = io.shutdown().await;
                return End::Done;
            }
            Err(e) => {
                tracing::debug!(error = %e, "Connection ended while answering");
                return End::Done;
            }
        }
    }
}

// A return value that lives for one poll: boxing the request would cost an allocation each.
#[allow(clippy::large_enum_variant)]
enum Next {
    Request(Request<ProxyBody>),
    Handover,
    Closed,
}

/// What a parse of the buffered bytes found.
#[allow(clippy::large_enum_variant)]
enum Parsed {
    /// Not a whole head yet.
    Partial,
    /// A simple request, whose head took this many bytes.
    Simple(Request<ProxyBody>, usize),
    /// A request hyper must serve, or bytes it must refuse.
    Handover,
}

/// Read until a whole request head is buffered, then parse it.
async fn next_request<T>(
    io: &mut T,
    stash: &mut Vec<u8>,
    max_head: usize,
    connect: bool,
) -> io::Result<Next>
where
    T: AsyncRead + Unpin,
{
    if !stash.is_empty() {
        match parse(stash, connect) {
            Parsed::Simple(req, n) => {
                stash.drain(..n);
                return Ok(Next::Request(req));
            }
            Parsed::Handover => return Ok(Next::Handover),
            Parsed::Partial if stash.len() > max_head => return Ok(Next::Handover),
            Parsed::Partial => {}
        }
    }
    poll_fn(|cx| poll_next(io, cx, stash, max_head, connect)).await
}

/// One read into the per-thread buffer. Bytes that do not make a simple request go to
/// `stash`; a head is parsed straight from the buffer when nothing is stashed.
fn poll_next<T>(
    io: &mut T,
    cx: &mut Context<'_>,
    stash: &mut Vec<u8>,
    max_head: usize,
    connect: bool,
) -> Poll<io::Result<Next>>
where
    T: AsyncRead + Unpin,
{
    with_scratch(|buf| {
        loop {
            let mut rb = ReadBuf::new(&mut *buf);
            match Pin::new(&mut *io).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
            }
            let got = rb.filled();
            if got.is_empty() {
                if stash.is_empty() {
                    return Poll::Ready(Ok(Next::Closed));
                }
                // A partial head, then EOF: hyper says what it makes of that.
                return Poll::Ready(Ok(Next::Handover));
            }
            if stash.is_empty() {
                match parse(got, connect) {
                    Parsed::Simple(req, n) => {
                        stash.extend_from_slice(&got[n..]);
                        return Poll::Ready(Ok(Next::Request(req)));
                    }
                    Parsed::Handover => {
                        stash.extend_from_slice(got);
                        return Poll::Ready(Ok(Next::Handover));
                    }
                    Parsed::Partial => stash.extend_from_slice(got),
                }
            } else {
                stash.extend_from_slice(got);
                match parse(stash, connect) {
                    Parsed::Simple(req, n) => {
                        stash.drain(..n);
                        return Poll::Ready(Ok(Next::Request(req)));
                    }
                    Parsed::Handover => return Poll::Ready(Ok(Next::Handover)),
                    Parsed::Partial => {}
                }
            }
            if stash.len() > max_head {
                return Poll::Ready(Ok(Next::Handover));
            }
        }
    })
}

/// Parse the head at the start of `buf`: a simple request is built here, its header values
/// slices of one copy of the head. `CONNECT` is simple only with `connect`.
fn parse(buf: &[u8], connect: bool) -> Parsed {
    // Left uninitialised: the parser writes the fields it finds (no 3.2 KB to clear a request).
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let n = match req.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Handover,
    };
    if req.version != Some(1) {
        return Parsed::Handover;
    }
    let (Some(method), Some(path)) = (req.method, req.path) else {
        return Parsed::Handover;
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Parsed::Handover;
    };
    if method == Method::CONNECT && !connect || method == Method::HEAD {
        return Parsed::Handover;
    }
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        let needs_hyper = name.eq_ignore_ascii_case(b"content-length")
            || name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"upgrade")
            || name.eq_ignore_ascii_case(b"expect")
            || name.eq_ignore_ascii_case(b"connection")
                && !h.value.trim_ascii().eq_ignore_ascii_case(b"keep-alive");
        if needs_hyper {
            return Parsed::Handover;
        }
    }
    let head = Bytes::copy_from_slice(&buf[..n]);
    let base = buf.as_ptr() as usize;
    let slice = |s: &[u8]| {
        let at = s.as_ptr() as usize - base;
        head.slice(at..at + s.len())
    };
    let Ok(uri) = Uri::from_maybe_shared(slice(path.as_bytes())) else {
        return Parsed::Handover;
    };
    // Room for the fields a relay adds (`Via`, `X-Forwarded-*`, `Forwarded`) without the map
    // growing twice on the way.
    let mut map = HeaderMap::with_capacity(req.headers.len() + 6);
    for h in req.headers.iter() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_maybe_shared(slice(h.value)),
        ) else {
            return Parsed::Handover;
        };
        map.append(name, value);
    }
    let mut out = Request::new(Empty::<Bytes>::new().map_err(never).boxed());
    *out.method_mut() = method;
    *out.uri_mut() = uri;
    *out.version_mut() = Version::HTTP_11;
    *out.headers_mut() = map;
    Parsed::Simple(out, n)
}

/// Run `f` with the per-thread read buffer (a fresh one if it is in use).
pub(super) fn with_scratch<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut b) => f(&mut b[..]),
        Err(_) => f(&mut vec![0; SCRATCH_LEN][..]),
    })
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
