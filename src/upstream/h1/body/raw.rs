//! The rest of a sized response body lent to the server's loop ([`ResponseBody::lend`]): it
//! moves from the upstream socket to the client's through a pipe with `splice(2)`, so a large
//! body never comes up to user space. The body keeps its watch (the body idle timeout), its
//! count of bytes for the audit record, and its end: the connection goes back to its idle
//! set once the last byte is out, as when the body is read through frames.
//!
//! [`ResponseBody::lend`]: super::ResponseBody::lend

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};

use bytes::Buf;
use tokio::net::TcpStream;

use super::super::Error;
use super::{Downframe, Reading, finish};
use crate::audit::recorder::Bytes2;
use crate::http::RawRest;
use crate::upstream::splice::{self, Pipe};

/// A response body's reading, shared by the body and the server that moves its bytes.
pub(crate) struct Lent {
    /// `None` once the body has ended (its connection home or closed).
    pub(super) reading: Option<Box<Reading>>,
    /// Opened on the first splice.
    pipe: Option<Pipe>,
    bytes: Arc<Bytes2>,
    /// The upstream's side failed during a move: the body's next frame is this error.
    pub(super) failed: Option<Error>,
    /// These bytes cannot be spliced (no pipe to be had, urgent data): the body's frames
    /// carry the rest.
    copy: bool,
}

impl Lent {
    pub(super) fn new(reading: Option<Box<Reading>>, bytes: Arc<Bytes2>) -> Lent {
        Lent {
            reading,
            pipe: None,
            bytes,
            failed: None,
            copy: false,
        }
    }

    fn moved(&self, n: usize) -> Poll<io::Result<u64>> {
        self.bytes.down.fetch_add(n as u64, Ordering::Relaxed);
        Poll::Ready(Ok(n as u64))
    }
}

impl RawRest for Lent {
    fn poll_move(
        &mut self,
        cx: &mut Context<'_>,
        to: &TcpStream,
        most: u64,
    ) -> Poll<io::Result<u64>> {
        loop {
            if self.copy || self.failed.is_some() || most == 0 {
                return Poll::Ready(Ok(0));
            }
            let Some(r) = self.reading.as_mut() else {
                return Poll::Ready(Ok(0));
            };
            // What is in the pipe is the body's already: it goes out first.
            if let Some(pipe) = self.pipe.as_mut().filter(|p| p.held() > 0) {
                let n = ready!(pipe.poll_drain(cx, to))?;
                if pipe.held() == 0 && r.complete() {
                    finish(&mut self.reading);
                }
                return self.moved(n);
            }
            let left = match r.framing {
                Downframe::Length(0) => {
                    finish(&mut self.reading);
                    return Poll::Ready(Ok(0));
                }
                Downframe::Length(left) => left.min(most),
                // Only a sized body is lent.
                _ => {
                    self.copy = true;
                    continue;
                }
            };
            // Bytes read with the head: written from the buffer.
            if !r.buf.is_empty() {
                let k = usize::try_from(left).map_or(r.buf.len(), |l| l.min(r.buf.len()));
                let n = ready!(poll_write(to, cx, &r.buf[..k]))?;
                r.buf.advance(n);
                if let Downframe::Length(l) = &mut r.framing {
                    *l -= n as u64;
                }
                if r.complete() {
                    finish(&mut self.reading);
                }
                return self.moved(n);
            }
            let Some(sock) = r.conn.io.plain() else {
                self.copy = true;
                continue;
            };
            let pipe = match &mut self.pipe {
                Some(p) => p,
                None => match Pipe::new() {
                    Some(p) => self.pipe.insert(p),
                    None => {
                        self.copy = true;
                        continue;
                    }
                },
            };
            // Never more than the body has left: what follows it is the next response's.
            let most = usize::try_from(left).unwrap_or(usize::MAX);
            match pipe.poll_fill(cx, sock.socket(), most) {
                Poll::Pending => {
                    let e = ready!(sock.poll_stalled(cx));
                    self.failed = Some(Error::Io(e));
                }
                Poll::Ready(Ok(0)) => self.failed = Some(Error::Incomplete),
                Poll::Ready(Ok(n)) => {
                    sock.arrived();
                    if let Downframe::Length(l) = &mut r.framing {
                        *l -= n as u64;
                    }
                }
                // The pipe is empty: the frames take over with nothing lost.
                Poll::Ready(Err(e)) if splice::unsupported(&e) => self.copy = true,
                Poll::Ready(Err(e)) => self.failed = Some(Error::Io(e)),
            }
        }
    }
}

/// Write some of `buf` to `to`.
fn poll_write(to: &TcpStream, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
    loop {
        ready!(to.poll_write_ready(cx))?;
        match to.try_write(buf) {
            Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            r => return Poll::Ready(r),
        }
    }
}

#[cfg(test)]
#[path = "raw_tests.rs"]
mod tests;
