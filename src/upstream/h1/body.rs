//! The response body: read from its upstream connection as the listener polls it, by its
//! length, chunked, or to the close; the connection goes back to its idle set at a clean end.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use hyper::body::{Body, Frame, SizeHint};

use super::upload::Upload;
use super::{Error, MAX_CHUNK_LINE, MAX_KEPT_BUF, MAX_TRAILERS, READ_BULK, READ_MIN, poll_fill};
use crate::audit::recorder::Bytes2;
use crate::http::{BodyError, RawBody};
use crate::policy::VettedAddr;
use crate::upstream::idle::{IdleConns, UpstreamConn};
use crate::upstream::splice::CHUNK;
use raw::Lent;

mod raw;

/// How a response body is framed on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Downframe {
    /// No body.
    Empty,
    /// This many bytes left.
    Length(u64),
    Chunked(Chunk),
    /// Until the connection closes.
    Close,
}

/// Where a chunked response body is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Chunk {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk, with this many bytes left.
    Data(u64),
    /// After a chunk's data, before its CRLF.
    DataEnd,
    /// After the last chunk: trailer fields, this many bytes of them so far.
    Trailers(usize),
    Done,
}

/// A response body read from its upstream connection as it is polled. When it ends cleanly on
/// a connection that may persist, the connection goes to the idle set given with
/// [`ResponseBody::return_to`]; otherwise (an error, an early drop, a body cut short) it
/// closes.
pub struct ResponseBody {
    pub(super) state: Option<Box<Reading>>,
    /// Set once the body's rest is lent to the server ([`ResponseBody::lend`]): the reading is
    /// there, shared, rather than in `state`.
    pub(super) lent: Option<Arc<Mutex<Lent>>>,
}

pub(super) struct Reading {
    pub(super) conn: UpstreamConn,
    pub(super) buf: BytesMut,
    pub(super) framing: Downframe,
    pub(super) keep_alive: bool,
    /// What is left of a request body the response came before.
    pub(super) upload: Option<Upload>,
    pub(super) home: Option<(Arc<IdleConns>, VettedAddr)>,
}

impl fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseBody")
            .field("framing", &self.peek(|r| r.map(|r| r.framing)))
            .field("lent", &self.lent.is_some())
            .finish()
    }
}

impl ResponseBody {
    /// Where the connection goes when this body ends cleanly; a body already complete (none,
    /// or empty) gives it back now.
    pub fn return_to(&mut self, idle: Arc<IdleConns>, addr: VettedAddr) {
        self.with_state(|state| {
            if let Some(r) = state.as_mut() {
                r.home = Some((idle, addr));
                if r.complete() {
                    finish(state);
                }
            }
        });
    }

    /// Lend the rest of this body to the server, so it can be spliced to a plain client socket
    /// ([`RawBody`]); the bytes it moves are counted to `bytes.down`. Only a sized body with
    /// at least [`CHUNK`] bytes still unread on a plain TCP socket, with no request body left
    /// to send, is lent; the body's frames still serve a server that does not splice.
    pub fn lend(&mut self, bytes: Arc<Bytes2>) -> Option<RawBody> {
        if self.lent.is_some() {
            return None;
        }
        let r = self.state.as_mut()?;
        let Downframe::Length(left) = r.framing else {
            return None;
        };
        if left.saturating_sub(r.buf.len() as u64) < CHUNK as u64
            || r.upload.is_some()
            || r.conn.io.plain().is_none()
        {
            return None;
        }
        let lent = Arc::new(Mutex::new(Lent::new(self.state.take(), bytes)));
        self.lent = Some(lent.clone());
        Some(RawBody(lent))
    }

    fn with_state<R>(&mut self, f: impl FnOnce(&mut Option<Box<Reading>>) -> R) -> R {
        match &self.lent {
            None => f(&mut self.state),
            Some(l) => f(&mut lock(l).reading),
        }
    }

    fn peek<R>(&self, f: impl FnOnce(Option<&Reading>) -> R) -> R {
        match &self.lent {
            None => f(self.state.as_deref()),
            Some(l) => f(lock(l).reading.as_deref()),
        }
    }
}

/// The lent body's lock; a panic while it was held leaves nothing half-done that matters here
/// (the body fails or ends on its own terms).
fn lock(l: &Mutex<Lent>) -> std::sync::MutexGuard<'_, Lent> {
    l.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The body is read: the connection goes home if it can be reused.
pub(super) fn finish(state: &mut Option<Box<Reading>>) {
    let Some(r) = state.take() else { return };
    let mut r = *r;
    let reusable = r.keep_alive && r.upload.is_none() && r.buf.is_empty();
    if let (true, Some((idle, addr))) = (reusable, r.home) {
        // A small buffer goes home with its connection (no allocation for the next response,
        // once this one's bytes are dropped); one grown for a bulk body does not.
        if r.buf.capacity() <= MAX_KEPT_BUF {
            r.conn.buf = r.buf;
        }
        idle.checkin(addr.addr(), r.conn);
    }
}

/// The next frame of the body read in `state`.
fn poll_reading(
    state: &mut Option<Box<Reading>>,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
    let Some(r) = state.as_mut() else {
        return Poll::Ready(None);
    };
    match r.poll_data(cx) {
        Poll::Pending => Poll::Pending,
        Poll::Ready(Ok(Some(data))) => {
            if r.complete() {
                finish(state);
            }
            Poll::Ready(Some(Ok(Frame::data(data))))
        }
        Poll::Ready(Ok(None)) => {
            finish(state);
            Poll::Ready(None)
        }
        Poll::Ready(Err(e)) => {
            *state = None;
            Poll::Ready(Some(Err(Box::new(e))))
        }
    }
}

impl Reading {
    pub(super) fn complete(&self) -> bool {
        matches!(
            self.framing,
            Downframe::Empty | Downframe::Length(0) | Downframe::Chunked(Chunk::Done)
        )
    }

    /// The next data of the body, `None` at its end.
    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, Error>> {
        if let Some(u) = self.upload.as_mut() {
            match u.poll(&mut self.conn.io, cx) {
                Poll::Ready(Ok(())) => self.upload = None,
                // The upstream answered before taking the whole request body: the response
                // still goes to the client, and the connection closes after it.
                Poll::Ready(Err(e)) => {
                    tracing::debug!(error = %e, "Request body not sent whole after an early response");
                    self.keep_alive = false;
                    self.upload = None;
                }
                Poll::Pending => {}
            }
        }
        loop {
            match self.framing {
                Downframe::Empty | Downframe::Length(0) | Downframe::Chunked(Chunk::Done) => {
                    return Poll::Ready(Ok(None));
                }
                Downframe::Length(left) => {
                    if !self.buf.is_empty() {
                        let k =
                            usize::try_from(left).map_or(self.buf.len(), |l| l.min(self.buf.len()));
                        self.framing = Downframe::Length(left - k as u64);
                        return Poll::Ready(Ok(Some(self.buf.split_to(k).freeze())));
                    }
                    let room =
                        usize::try_from(left).map_or(READ_BULK, |l| l.clamp(READ_MIN, READ_BULK));
                    if ready!(self.fill(cx, room))? == 0 {
                        return Poll::Ready(Err(Error::Incomplete));
                    }
                }
                Downframe::Close => {
                    if !self.buf.is_empty() {
                        return Poll::Ready(Ok(Some(self.buf.split().freeze())));
                    }
                    if ready!(self.fill(cx, READ_BULK))? == 0 {
                        self.framing = Downframe::Empty;
                    }
                }
                Downframe::Chunked(c) => {
                    if let Some(data) = self.step_chunk(c)? {
                        return Poll::Ready(Ok(Some(data)));
                    }
                    if matches!(self.framing, Downframe::Chunked(n) if n == c) {
                        // No progress on what is buffered: read more.
                        if ready!(self.fill(cx, READ_BULK))? == 0 {
                            return Poll::Ready(Err(Error::Incomplete));
                        }
                    }
                }
            }
        }
    }

    fn fill(&mut self, cx: &mut Context<'_>, room: usize) -> Poll<Result<usize, Error>> {
        poll_fill(&mut self.conn.io, cx, &mut self.buf, room).map_err(Error::Io)
    }

    /// One step of the chunked decoder on what is buffered: data if a chunk has some, else
    /// the state moves on (or stays, when more bytes are needed).
    fn step_chunk(&mut self, c: Chunk) -> Result<Option<Bytes>, Error> {
        let bad = |m: &str| Error::Malformed(format!("chunked body: {m}"));
        match c {
            Chunk::Size => {
                let Some(end) = find_crlf(&self.buf) else {
                    if self.buf.len() > MAX_CHUNK_LINE {
                        return Err(bad("chunk-size line too long"));
                    }
                    return Ok(None);
                };
                if end > MAX_CHUNK_LINE {
                    return Err(bad("chunk-size line too long"));
                }
                let line = &self.buf[..end];
                // chunk-size [ BWS ";" chunk-ext ]: hex digits first, and no bare CR or LF
                // anywhere (a line another parser would end elsewhere).
                let hex = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
                let (digits, rest) = line.split_at(hex);
                let rest = rest.trim_ascii_start();
                if digits.is_empty()
                    || digits.len() > 16
                    || !(rest.is_empty() || rest.starts_with(b";"))
                    || line.iter().any(|&b| b == b'\r' || b == b'\n')
                {
                    return Err(bad("invalid chunk size"));
                }
                let size = std::str::from_utf8(digits)
                    .ok()
                    .and_then(|d| u64::from_str_radix(d, 16).ok())
                    .ok_or_else(|| bad("invalid chunk size"))?;
                self.buf.advance(end + 2);
                self.framing = Downframe::Chunked(if size == 0 {
                    Chunk::Trailers(0)
                } else {
                    Chunk::Data(size)
                });
                Ok(None)
            }
            Chunk::Data(left) => {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                let k = usize::try_from(left).map_or(self.buf.len(), |l| l.min(self.buf.len()));
                let rest = left - k as u64;
                self.framing = Downframe::Chunked(if rest == 0 {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(rest)
                });
                Ok(Some(self.buf.split_to(k).freeze()))
            }
            Chunk::DataEnd => {
                if self.buf.len() < 2 {
                    return Ok(None);
                }
                if &self.buf[..2] != b"\r\n" {
                    return Err(bad("chunk data not followed by CRLF"));
                }
                self.buf.advance(2);
                self.framing = Downframe::Chunked(Chunk::Size);
                Ok(None)
            }
            Chunk::Trailers(seen) => {
                let Some(end) = find_crlf(&self.buf) else {
                    if seen + self.buf.len() > MAX_TRAILERS {
                        return Err(bad("trailers too large"));
                    }
                    return Ok(None);
                };
                // A trailer field (name ":" value), dropped; no bare CR or LF in it.
                let line = &self.buf[..end];
                if end > 0
                    && (!line.contains(&b':') || line.iter().any(|&b| b == b'\r' || b == b'\n'))
                {
                    return Err(bad("invalid trailer field"));
                }
                self.buf.advance(end + 2);
                self.framing = Downframe::Chunked(if end == 0 {
                    Chunk::Done
                } else if seen + end > MAX_TRAILERS {
                    return Err(bad("trailers too large"));
                } else {
                    Chunk::Trailers(seen + end + 2)
                });
                Ok(None)
            }
            Chunk::Done => Ok(None),
        }
    }
}

fn find_crlf(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let Some(lent) = &this.lent else {
            return poll_reading(&mut this.state, cx);
        };
        let mut l = lock(lent);
        // A splice that failed on the upstream's side ends the body here, with its error.
        if let Some(e) = l.failed.take() {
            l.reading = None;
            return Poll::Ready(Some(Err(Box::new(e))));
        }
        poll_reading(&mut l.reading, cx)
    }

    fn is_end_stream(&self) -> bool {
        match &self.lent {
            None => self.state.as_ref().is_none_or(|r| r.complete()),
            Some(l) => {
                let l = lock(l);
                l.failed.is_none() && l.reading.as_ref().is_none_or(|r| r.complete())
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self.peek(|r| r.map(|r| r.framing)) {
            None | Some(Downframe::Empty) => SizeHint::with_exact(0),
            Some(Downframe::Length(n)) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}
