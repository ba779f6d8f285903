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
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Body;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::{ProxyBody, never};

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

/// The client side of a `CONNECT` tunnel this loop answered with a 2xx: the stream, with any
/// bytes the client sent after its request first.
pub type Upgraded = Box<dyn UpgradedIo>;

/// What a tunnel needs of its client's stream.
pub trait UpgradedIo: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> UpgradedIo for T {}

/// In the extensions of a `CONNECT` request this loop serves: where it sends the client's
/// stream once a 2xx answer is written (see [`on_upgrade`]).
#[derive(Clone)]
struct OnUpgrade(Arc<Mutex<Option<oneshot::Receiver<Upgraded>>>>);

/// How a `CONNECT` request's client stream will arrive: from this loop, or from hyper for a
/// connection handed over.
pub enum ClientUpgrade {
    /// From [`serve`].
    Own(oneshot::Receiver<Upgraded>),
    /// From hyper's upgrade.
    Hyper(hyper::upgrade::OnUpgrade),
}

/// Take the upgrade of `req`, a `CONNECT` request: the client's stream arrives once the 2xx
/// response is written.
pub fn on_upgrade<B>(req: &mut Request<B>) -> ClientUpgrade {
    let own = req
        .extensions_mut()
        .remove::<OnUpgrade>()
        .and_then(|o| o.0.lock().ok().and_then(|mut r| r.take()));
    match own {
        Some(rx) => ClientUpgrade::Own(rx),
        None => ClientUpgrade::Hyper(hyper::upgrade::on(req)),
    }
}

impl ClientUpgrade {
    /// The client's stream, or why there is none.
    pub async fn wait(self) -> Result<Upgraded, String> {
        match self {
            ClientUpgrade::Own(rx) => rx
                .await
                .map_err(|_| "the client connection ended before the tunnel opened".to_string()),
            ClientUpgrade::Hyper(on) => match on.await {
                Ok(u) => Ok(Box::new(hyper_util::rt::TokioIo::new(u))),
                Err(e) => Err(e.to_string()),
            },
        }
    }
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
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
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
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let n = match req.parse(buf) {
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
    let mut map = HeaderMap::with_capacity(req.headers.len());
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

/// How a response body goes on the wire.
#[derive(Debug, PartialEq, Eq)]
enum Framing {
    /// No body (1xx, 204, 304).
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
}

/// Write the response head into `dst` as hyper's server would for an HTTP/1.1 request that is
/// not `HEAD` or `CONNECT`; how the body goes and whether the connection closes after it.
/// `None` for a head that cannot be written honestly (a bad or conflicting
/// `Content-Length`): the connection is closed instead.
fn encode_head(
    parts: &hyper::http::response::Parts,
    exact: Option<u64>,
    closing: bool,
    connect: bool,
    dst: &mut Vec<u8>,
) -> Option<(Framing, bool)> {
    let status = parts.status;
    // A 2xx to CONNECT has no body and no framing headers (RFC 9110 §9.3.6): the tunnel
    // follows.
    let tunnel = connect && status.is_success();
    let reason = parts.extensions.get::<hyper::ext::ReasonPhrase>();
    if status == StatusCode::OK && reason.is_none() {
        dst.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        dst.extend_from_slice(b"HTTP/1.1 ");
        dst.extend_from_slice(status.as_str().as_bytes());
        dst.push(b' ');
        match reason {
            Some(r) => dst.extend_from_slice(r.as_bytes()),
            None => dst.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes()),
        }
        dst.extend_from_slice(b"\r\n");
    }
    let bodiless = tunnel
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let mut close = closing || status.is_informational();
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut dated = false;
    let mut said_close = false;
    for (name, value) in &parts.headers {
        match *name {
            header::CONTENT_LENGTH if tunnel => continue,
            header::CONTENT_LENGTH => {
                let n = std::str::from_utf8(value.as_bytes())
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok())?;
                match length {
                    Some(prev) if prev != n => return None,
                    Some(_) => continue,
                    None => length = Some(n),
                }
            }
            header::TRANSFER_ENCODING => {
                if bodiless {
                    continue;
                }
                let last = value
                    .as_bytes()
                    .rsplit(|&b| b == b',')
                    .next()
                    .unwrap_or(b"");
                if !last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                    return None;
                }
                chunked = true;
            }
            header::CONNECTION => {
                let v = value.as_bytes();
                if v.split(|&b| b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
                {
                    close = true;
                    said_close = true;
                }
            }
            header::DATE => dated = true,
            _ => {}
        }
        dst.extend_from_slice(name.as_str().as_bytes());
        dst.extend_from_slice(b": ");
        dst.extend_from_slice(value.as_bytes());
        dst.extend_from_slice(b"\r\n");
    }
    if chunked && length.is_some() {
        return None;
    }
    let framing = if bodiless {
        Framing::None
    } else if chunked {
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else if let Some(n) = exact {
        dst.extend_from_slice(b"content-length: ");
        dst.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        dst.extend_from_slice(b"\r\n");
        Framing::Length(n)
    } else {
        dst.extend_from_slice(b"transfer-encoding: chunked\r\n");
        Framing::Chunked
    };
    if close && !said_close && !tunnel {
        dst.extend_from_slice(b"connection: close\r\n");
    }
    if !dated {
        dst.extend_from_slice(b"date: ");
        date(dst);
        dst.extend_from_slice(b"\r\n");
    }
    dst.extend_from_slice(b"\r\n");
    Some((framing, close))
}

/// The current `Date` value (RFC 9110 §5.6.7), formatted once a second per thread.
fn date(dst: &mut Vec<u8>) {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != secs {
            *d = (secs, httpdate::fmt_http_date(now));
        }
        dst.extend_from_slice(d.1.as_bytes());
    });
}

/// What is next for a connection after one answer.
enum Answered {
    /// The next request.
    KeepAlive,
    /// Nothing: close it.
    Close,
    /// A tunnel: the answer was a 2xx to `CONNECT`.
    Tunnel,
}

/// Answer one request (`connect`: a `CONNECT`). While the answer or its body is awaited, the
/// client's side is read too ([`or_client_gone`]).
async fn respond<T, F>(
    io: &mut T,
    stash: &mut Vec<u8>,
    max_head: usize,
    answer: F,
    shutdown: &CancellationToken,
    connect: bool,
) -> io::Result<Answered>
where
    T: AsyncRead + AsyncWrite + Unpin,
    F: Future<Output = Response<ProxyBody>>,
{
    let (parts, mut body) = or_client_gone(io, stash, max_head, answer)
        .await?
        .into_parts();
    let mut head = Vec::with_capacity(256 + parts.headers.len() * 32);
    let Some((framing, close)) = encode_head(
        &parts,
        body.size_hint().exact(),
        shutdown.is_cancelled(),
        connect,
        &mut head,
    ) else {
        tracing::warn!(status = %parts.status, "Response with a bad Content-Length: connection closed");
        return Ok(Answered::Close);
    };
    let complete = match framing {
        Framing::None => {
            io.write_all(&head).await?;
            true
        }
        Framing::Length(n) => send_length(io, stash, max_head, &mut body, head, n).await?,
        Framing::Chunked => send_chunked(io, stash, max_head, &mut body, head).await?,
    };
    io.flush().await?;
    // The body ends here (its audit record is emitted) whatever was sent.
    drop(body);
    Ok(if connect && parts.status.is_success() {
        Answered::Tunnel
    } else if complete && !close {
        Answered::KeepAlive
    } else {
        Answered::Close
    })
}

/// Await `fut` while reading the client's side: bytes of a next, pipelined request go to
/// `stash` (up to `max_head`), and the client closing or its socket failing ends the wait with
/// an error, dropping `fut` (a request's recorder then writes its record). hyper, without
/// half-close, ends a request whose client has gone the same way.
async fn or_client_gone<T, F>(
    io: &mut T,
    stash: &mut Vec<u8>,
    max_head: usize,
    fut: F,
) -> io::Result<F::Output>
where
    T: AsyncRead + Unpin,
    F: Future,
{
    let mut fut = std::pin::pin!(fut);
    poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Ok(v));
        }
        while stash.len() < max_head {
            match poll_fill(io, cx, stash) {
                Poll::Pending => break,
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "client closed the connection before the response was sent",
                    )));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Pending
    })
    .await
}

/// One read into the per-thread buffer, appended to `stash`: how many bytes (0 at EOF).
fn poll_fill<T>(io: &mut T, cx: &mut Context<'_>, stash: &mut Vec<u8>) -> Poll<io::Result<usize>>
where
    T: AsyncRead + Unpin,
{
    with_scratch(|buf| {
        let mut rb = ReadBuf::new(buf);
        match Pin::new(&mut *io).poll_read(cx, &mut rb) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) => {
                stash.extend_from_slice(rb.filled());
                Poll::Ready(Ok(rb.filled().len()))
            }
        }
    })
}

/// Run `f` with the per-thread read buffer (a fresh one if it is in use).
fn with_scratch<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut b) => f(&mut b[..]),
        Err(_) => f(&mut vec![0; SCRATCH_LEN][..]),
    })
}

/// The next data frame of `body`, or `None` at its end, while watching the client
/// ([`or_client_gone`]); trailers are not sent (hyper sends them only to a client that asked
/// with `TE: trailers`).
async fn next_data<T>(
    io: &mut T,
    stash: &mut Vec<u8>,
    max_head: usize,
    body: &mut ProxyBody,
) -> io::Result<Option<Bytes>>
where
    T: AsyncRead + Unpin,
{
    loop {
        match or_client_gone(io, stash, max_head, body.frame()).await? {
            None => return Ok(None),
            Some(Err(e)) => return Err(io::Error::other(e)),
            Some(Ok(f)) => {
                if let Ok(d) = f.into_data()
                    && !d.is_empty()
                {
                    return Ok(Some(d));
                }
            }
        }
    }
}

/// A body of `n` bytes; the head goes out with its first data. `Ok(false)` if the body did
/// not match its length (the connection must close).
async fn send_length<T>(
    io: &mut T,
    stash: &mut Vec<u8>,
    max_head: usize,
    body: &mut ProxyBody,
    head: Vec<u8>,
    n: u64,
) -> io::Result<bool>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut head = Some(head);
    let mut left = n;
    while left > 0 {
        let Some(data) = next_data(io, stash, max_head, body).await? else {
            break;
        };
        let take = usize::try_from(left).map_or(data.len(), |l| l.min(data.len()));
        let h = head.take().unwrap_or_default();
        write_all(io, &mut [&h, &data[..take]]).await?;
        left -= take as u64;
        if take < data.len() {
            // More than the length said: what was sent is all the client gets.
            return Ok(false);
        }
    }
    if let Some(h) = head {
        io.write_all(&h).await?;
    }
    Ok(left == 0)
}

/// A chunked body; the head goes out with its first chunk.
async fn send_chunked<T>(
    io: &mut T,
    stash: &mut Vec<u8>,
    max_head: usize,
    body: &mut ProxyBody,
    head: Vec<u8>,
) -> io::Result<bool>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut head = Some(head);
    while let Some(data) = next_data(io, stash, max_head, body).await? {
        let size = format!("{:x}\r\n", data.len());
        let h = head.take().unwrap_or_default();
        write_all(io, &mut [&h, size.as_bytes(), &data, b"\r\n"]).await?;
    }
    let h = head.take().unwrap_or_default();
    write_all(io, &mut [&h, b"0\r\n\r\n"]).await?;
    Ok(true)
}

/// Write every byte of `parts`, in as few vectored writes as the stream takes.
async fn write_all<T>(io: &mut T, parts: &mut [&[u8]]) -> io::Result<()>
where
    T: AsyncWrite + Unpin,
{
    let mut first = 0;
    loop {
        while first < parts.len() && parts[first].is_empty() {
            first += 1;
        }
        if first == parts.len() {
            return Ok(());
        }
        let mut slices = [IoSlice::new(&[]); 4];
        let count = (parts.len() - first).min(slices.len());
        for (s, p) in slices.iter_mut().zip(&parts[first..first + count]) {
            *s = IoSlice::new(p);
        }
        let mut wrote = io.write_vectored(&slices[..count]).await?;
        if wrote == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        for p in parts[first..].iter_mut() {
            let k = wrote.min(p.len());
            *p = &p[k..];
            wrote -= k;
            if wrote == 0 {
                break;
            }
        }
    }
}

/// A stream with bytes already read from it in front: what hyper reads first when a
/// connection is handed over.
pub(crate) struct Rewind<T> {
    prefix: Vec<u8>,
    at: usize,
    inner: T,
}

impl<T> Rewind<T> {
    pub(crate) fn new(inner: T, prefix: Vec<u8>) -> Self {
        Rewind {
            prefix,
            at: 0,
            inner,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.at < this.prefix.len() {
            let n = (this.prefix.len() - this.at).min(buf.remaining());
            buf.put_slice(&this.prefix[this.at..this.at + n]);
            this.at += n;
            if this.at == this.prefix.len() {
                this.prefix = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
