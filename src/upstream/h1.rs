//! The upstream HTTP/1.1 client: one request at a time on an [`UpstreamConn`], in the task of
//! the request that sends it.
//!
//! hyper's client runs each connection as a task of its own and hands every request and
//! response across a channel, waking a task each way; for the small keep-alive requests most
//! of a gateway's traffic is, that hand-over cost more than the parsing. Here the request task
//! writes the request, reads the response head, and its response body reads the rest from the
//! socket as it is polled; when the body ends cleanly the connection goes back to its idle set.
//!
//! The response comes without its hop-by-hop fields (RFC 9110 §7.6.1: `Connection`, the fields
//! it names, `Keep-Alive`, `Transfer-Encoding` and the rest), which describe this connection
//! alone: what the proxy relays is ready to forward. Framing follows RFC 9112: a request body goes with its `Content-Length` (from the header,
//! else the body's exact size) or chunked; a response has no body after `HEAD`, 1xx, 204 and
//! 304, else is framed by `Transfer-Encoding: chunked`, a valid `Content-Length`, or the
//! connection's close (§6.3). 1xx interim responses are skipped. A connection is reused only
//! after a complete exchange with no `Connection: close`, no stray bytes, and a request body
//! sent whole.

use std::fmt;
use std::future::poll_fn;
use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Empty};
use hyper::body::Body;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Version};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::idle::{Io, UpstreamConn};
use crate::http::ProxyBody;
use crate::http::headers::is_hop_by_hop;

/// The largest response head read: 8 times what nginx's proxy reads by default (4 to 8 KiB).
const MAX_HEAD: usize = 64 * 1024;
/// Response header fields at most (hyper's client default).
const MAX_HEADERS: usize = 100;
/// The longest chunk-size line, extensions included, and all trailer fields together.
const MAX_CHUNK_LINE: usize = 4 * 1024;
const MAX_TRAILERS: usize = 16 * 1024;
/// Room made in the read buffer before a read.
const READ_MIN: usize = 8 * 1024;
/// The largest request-head buffer and read buffer an idle connection keeps for its next
/// exchange (one grown for a bulk body is dropped rather than held while idle).
const MAX_KEPT_HEAD: usize = 4 * 1024;
const MAX_KEPT_BUF: usize = 2 * READ_MIN;
const READ_BULK: usize = 256 * 1024;

/// Why an exchange failed.
#[derive(Debug)]
pub enum Error {
    /// Reading or writing the socket failed.
    Io(io::Error),
    /// The connection closed before a complete response head.
    Closed,
    /// The response head could not be parsed, or frames its body in a way that cannot be read.
    Malformed(String),
    /// The response head is larger than the client reads.
    HeadTooLarge,
    /// The connection closed in the middle of the response body.
    Incomplete,
    /// The request body failed (the client's side), or did not match its length.
    RequestBody(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "{e}"),
            Error::Closed => f.write_str("connection closed before the response"),
            Error::Malformed(m) => write!(f, "invalid response: {m}"),
            Error::HeadTooLarge => write!(f, "response head over {MAX_HEAD} bytes"),
            Error::Incomplete => f.write_str("connection closed before the response body ended"),
            Error::RequestBody(m) => write!(f, "request body: {m}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// A request that got no response.
#[derive(Debug)]
pub struct SendError {
    /// What went wrong.
    pub error: Error,
    /// The request, whole, when none of it was written (it may be sent elsewhere).
    pub unsent: Option<Request<ProxyBody>>,
    /// A request without a body whose head was written and got no answer: it may be sent
    /// again elsewhere if its method is idempotent (RFC 9110 §9.2.2).
    pub unanswered: Option<Request<ProxyBody>>,
    /// Whether any byte of a response had arrived.
    pub started: bool,
}

impl UpstreamConn {
    /// Send `req` and read the response head. The response body reads the rest from this
    /// connection; [`ResponseBody::return_to`] says where the connection goes when it ends.
    pub async fn send(
        mut self,
        req: Request<ProxyBody>,
    ) -> Result<Response<ResponseBody>, SendError> {
        let mut head = std::mem::take(&mut self.head);
        head.clear();
        head.reserve(256 + 64 * req.headers().len());
        let upframe = match encode_request(&req, &mut head) {
            Ok(f) => f,
            Err(e) => {
                return Err(SendError {
                    error: e,
                    unsent: None,
                    unanswered: None,
                    started: false,
                });
            }
        };
        let mut wrote = 0;
        if let Err(e) = write_head(&mut self.io, &head, &mut wrote).await {
            return Err(SendError {
                error: Error::Io(e),
                unsent: (wrote == 0).then_some(req),
                unanswered: None,
                started: false,
            });
        }
        if head.capacity() <= MAX_KEPT_HEAD {
            self.head = head;
        }
        let (parts, body) = req.into_parts();
        let bodiless = upframe.is_none();
        let mut upload = upframe.map(|f| Upload::new(body, f));
        let mut buf = std::mem::take(&mut self.buf);
        let conn = &mut self;
        // An upstream that stops taking the request body (it answered early, then closed) may
        // still have its answer on the way: that is read, and the connection closed after it.
        let mut cut: Option<Error> = None;
        let parsed = poll_fn(|cx| {
            if let Some(u) = upload.as_mut() {
                match u.poll(&mut conn.io, cx) {
                    Poll::Ready(Ok(())) => upload = None,
                    Poll::Ready(Err(e @ Error::Io(_))) => {
                        cut = Some(e);
                        upload = None;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {}
                }
            }
            poll_head(&mut conn.io, cx, &mut buf)
        })
        .await;
        let started = self.watch.started();
        let parsed = match (parsed, cut.take()) {
            (Err(_), Some(upload_error)) => Err(upload_error),
            (p, c) => {
                cut = c;
                p
            }
        };
        let (resp, keep_alive) = match parsed.and_then(|p| p.into_response(&parts.method)) {
            Ok((r, k)) => (r, k && cut.is_none()),
            Err(error) => {
                let unanswered = (bodiless && !started).then(|| {
                    let empty = Empty::<Bytes>::new().map_err(crate::http::never).boxed();
                    Request::from_parts(parts, empty)
                });
                return Err(SendError {
                    error,
                    unsent: None,
                    unanswered,
                    started,
                });
            }
        };
        let (resp_parts, framing) = resp;
        let body = ResponseBody {
            state: Some(Box::new(Reading {
                conn: self,
                buf,
                framing,
                keep_alive,
                upload,
                home: None,
            })),
            lent: None,
        };
        Ok(Response::from_parts(resp_parts, body))
    }

    /// Has the far end closed this idle connection (or sent bytes nobody asked for)? A look
    /// at the socket that never waits.
    pub fn is_closed(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        let mut byte = [0u8; 1];
        let mut rb = ReadBuf::new(&mut byte);
        !matches!(
            Pin::new(&mut self.io).poll_read(&mut cx, &mut rb),
            Poll::Pending
        )
    }
}

/// The request head: request line, the headers (framing ones replaced by ours), the framing.
fn encode_request(req: &Request<ProxyBody>, dst: &mut Vec<u8>) -> Result<Option<Upframe>, Error> {
    let body = req.body();
    let declared = match req.headers().get(header::CONTENT_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| Error::RequestBody("invalid Content-Length".into()))?,
        ),
    };
    let framing = if body.is_end_stream() {
        // Methods that define a body say so even when it is empty (RFC 9110 §8.6).
        let says_length = declared.is_some()
            || matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH);
        says_length.then_some(Upframe::Length(0))
    } else {
        Some(match declared.or(body.size_hint().exact()) {
            Some(n) => Upframe::Length(n),
            None => Upframe::Chunked,
        })
    };
    dst.extend_from_slice(req.method().as_str().as_bytes());
    dst.push(b' ');
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    dst.extend_from_slice(if target.is_empty() {
        b"/"
    } else {
        target.as_bytes()
    });
    dst.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in req.headers() {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        dst.extend_from_slice(name.as_str().as_bytes());
        dst.extend_from_slice(b": ");
        dst.extend_from_slice(value.as_bytes());
        dst.extend_from_slice(b"\r\n");
    }
    match framing {
        Some(Upframe::Length(n)) => {
            dst.extend_from_slice(b"content-length: ");
            dst.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            dst.extend_from_slice(b"\r\n");
        }
        Some(Upframe::Chunked) => dst.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        None => {}
    }
    dst.extend_from_slice(b"\r\n");
    // An empty body is finished with its head.
    Ok(framing.filter(|f| *f != Upframe::Length(0)))
}

/// Write the whole head, counting what was written (none: the request can go elsewhere).
async fn write_head(io: &mut Box<dyn Io>, head: &[u8], wrote: &mut usize) -> io::Result<()> {
    poll_fn(|cx| {
        while *wrote < head.len() {
            match Pin::new(&mut *io).poll_write(cx, &head[*wrote..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *wrote += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Pin::new(&mut *io).poll_flush(cx)
    })
    .await
}

/// One read into `buf`: how many bytes (0 at end of stream).
fn poll_fill(
    io: &mut Box<dyn Io>,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
    room: usize,
) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < READ_MIN {
        buf.reserve(room);
    }
    tokio_util::io::poll_read_buf(Pin::new(io), cx, buf)
}

/// A complete response head, as offsets into the buffer it was parsed from.
struct Parsed {
    head: Bytes,
    status: u16,
    version: Version,
    /// Each field's name and value as ranges of `head`.
    fields: Vec<(Range<usize>, Range<usize>)>,
}

/// Read until a final (non-1xx) response head is in `buf`, and take it out.
fn poll_head(
    io: &mut Box<dyn Io>,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<Result<Parsed, Error>> {
    loop {
        if !buf.is_empty() {
            // Left uninitialised: the parser writes the fields it finds.
            let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
            let mut resp = httparse::Response::new(&mut []);
            let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
                &mut resp,
                buf,
                &mut headers,
            );
            match parsed {
                Ok(httparse::Status::Complete(len)) => {
                    let status = resp.code.unwrap_or(0);
                    if (100..200).contains(&status) && status != 101 {
                        buf.advance(len);
                        continue;
                    }
                    let version = if resp.version == Some(0) {
                        Version::HTTP_10
                    } else {
                        Version::HTTP_11
                    };
                    let base = buf.as_ptr() as usize;
                    let range = |s: &[u8]| {
                        let start = (s.as_ptr() as usize).wrapping_sub(base);
                        start..start + s.len()
                    };
                    let fields = resp
                        .headers
                        .iter()
                        .map(|h| (range(h.name.as_bytes()), range(h.value)))
                        .collect();
                    let head = buf.split_to(len).freeze();
                    return Poll::Ready(Ok(Parsed {
                        head,
                        status,
                        version,
                        fields,
                    }));
                }
                Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
                    return Poll::Ready(Err(Error::HeadTooLarge));
                }
                Ok(httparse::Status::Partial) => {}
                Err(httparse::Error::TooManyHeaders) => {
                    return Poll::Ready(Err(Error::HeadTooLarge));
                }
                Err(e) => return Poll::Ready(Err(Error::Malformed(e.to_string()))),
            }
        }
        match poll_fill(io, cx, buf, READ_MIN) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(Error::Io(e))),
            Poll::Ready(Ok(0)) if buf.is_empty() => return Poll::Ready(Err(Error::Closed)),
            Poll::Ready(Ok(0)) => {
                return Poll::Ready(Err(Error::Malformed("incomplete response head".into())));
            }
            Poll::Ready(Ok(_)) => {}
        }
    }
}

impl Parsed {
    /// The response's parts, how its body is framed, and whether the connection may be reused
    /// after it (RFC 9112 §6.3, §9.3).
    #[allow(clippy::type_complexity)]
    fn into_response(
        self,
        method: &Method,
    ) -> Result<((hyper::http::response::Parts, Downframe), bool), Error> {
        if self.status == 101 {
            return Err(Error::Malformed(
                "101 Switching Protocols was not asked for".into(),
            ));
        }
        let status = StatusCode::from_u16(self.status)
            .map_err(|_| Error::Malformed(format!("status {}", self.status)))?;
        let field = |(n, v): &(Range<usize>, Range<usize>)| {
            (self.head.get(n.clone()), self.head.get(v.clone()))
        };
        let hop = Hop::of(self.fields.iter().map(field));
        let mut keep_alive = hop.persists(self.version);
        let bodiless = *method == Method::HEAD
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        let framing = if bodiless {
            Downframe::Empty
        } else if let Some(te) = hop.coding {
            // §6.1: a transfer coding in HTTP/1.0 is faulty framing; close after it.
            if hop.length.is_some() || self.version == Version::HTTP_10 {
                // §6.3 3: Transfer-Encoding wins over a length; the connection is not trusted
                // after either.
                keep_alive = false;
            }
            if te.eq_ignore_ascii_case(b"chunked") {
                Downframe::Chunked(Chunk::Size)
            } else {
                keep_alive = false;
                Downframe::Close
            }
        } else {
            match hop.length {
                Some(Ok(0)) => Downframe::Empty,
                Some(Ok(n)) => Downframe::Length(n),
                Some(Err(())) => return Err(Error::Malformed("invalid Content-Length".into())),
                None => {
                    keep_alive = false;
                    Downframe::Close
                }
            }
        };
        // The length forwarded: one `Content-Length` of the length the body is read by (none
        // when a transfer coding frames it, §6.3 3), or, on an answer without a body, the
        // length it states if that is valid.
        let length = match (hop.coding, hop.length) {
            (None, Some(Ok(n))) => Some(n),
            _ => None,
        };
        // The fields a proxy forwards: hop-by-hop ones, and those `Connection` names, describe
        // this connection alone (RFC 9110 §7.6.1) and are left out here.
        // One more for the `Via` a relay adds.
        let mut headers = HeaderMap::with_capacity(self.fields.len() + 1);
        let mut length_kept = false;
        for (name, value) in &self.fields {
            let bad = || Error::Malformed("invalid header field".into());
            let name = self.head.get(name.clone()).ok_or_else(bad)?;
            let name = HeaderName::from_bytes(name).map_err(|_| bad())?;
            if is_hop_by_hop(name.as_str()) || hop.names(&name) {
                continue;
            }
            let value = self.head.slice(value.clone());
            if name == header::CONTENT_LENGTH {
                // Kept as is when it is the number alone, once; else written anew below.
                let plain = !value.is_empty() && value.iter().all(u8::is_ascii_digit);
                if length_kept || !plain || length.is_none() {
                    continue;
                }
                length_kept = true;
            }
            let value = HeaderValue::from_maybe_shared(value).map_err(|_| bad())?;
            headers.append(name, value);
        }
        if let (Some(n), false) = (length, length_kept) {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        }
        let mut resp = Response::new(());
        *resp.status_mut() = status;
        *resp.version_mut() = self.version;
        *resp.headers_mut() = headers;
        let (parts, ()) = resp.into_parts();
        Ok(((parts, framing), keep_alive))
    }
}

/// What a response's hop-by-hop fields say about its connection and its framing.
#[derive(Default)]
struct Hop<'a> {
    close: bool,
    keep_alive: bool,
    /// The last transfer coding named, if the response has `Transfer-Encoding`.
    coding: Option<&'a [u8]>,
    /// Other field names `Connection` lists.
    named: Vec<&'a [u8]>,
    /// The length every `Content-Length` field agrees on (`Err` when they do not, or one is
    /// not a number), if the response has any.
    length: Option<Result<u64, ()>>,
}

impl<'a> Hop<'a> {
    fn of(fields: impl Iterator<Item = (Option<&'a [u8]>, Option<&'a [u8]>)>) -> Hop<'a> {
        let mut hop = Hop::default();
        for (name, value) in fields {
            let (Some(name), Some(value)) = (name, value) else {
                continue;
            };
            if name.eq_ignore_ascii_case(b"connection") {
                for t in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    if t.eq_ignore_ascii_case(b"close") {
                        hop.close = true;
                    } else if t.eq_ignore_ascii_case(b"keep-alive") {
                        hop.keep_alive = true;
                    } else if !t.is_empty() {
                        hop.named.push(t);
                    }
                }
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                let last = value.rsplit(|&b| b == b',').next().unwrap_or_default();
                hop.coding = Some(last.trim_ascii());
            } else if name.eq_ignore_ascii_case(b"content-length") {
                let prior = hop.length.map_or(Ok(None), |l| l.map(Some));
                hop.length = Some(prior.and_then(|p| content_length(value, p)));
            }
        }
        hop
    }

    /// HTTP/1.1 persists unless `Connection: close`; HTTP/1.0 only with `keep-alive`.
    fn persists(&self, version: Version) -> bool {
        if version == Version::HTTP_10 {
            self.keep_alive && !self.close
        } else {
            !self.close
        }
    }

    /// Does `Connection` name this field?
    fn names(&self, name: &HeaderName) -> bool {
        self.named
            .iter()
            .any(|n| n.eq_ignore_ascii_case(name.as_str().as_bytes()))
    }
}

/// The one length a `Content-Length` value gives, agreeing with `prior` (repeats of one value
/// are allowed, RFC 9110 §8.6); `Err` for anything else.
fn content_length(value: &[u8], mut prior: Option<u64>) -> Result<u64, ()> {
    for part in value.split(|&b| b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return Err(());
        }
        let n: u64 = std::str::from_utf8(part)
            .map_err(|_| ())?
            .parse()
            .map_err(|_| ())?;
        if prior.is_some_and(|p| p != n) {
            return Err(());
        }
        prior = Some(n);
    }
    prior.ok_or(())
}

mod body;
mod upload;

pub use body::ResponseBody;
use body::{Chunk, Downframe, Reading};
use upload::{Upframe, Upload};

#[cfg(test)]
mod tests;
