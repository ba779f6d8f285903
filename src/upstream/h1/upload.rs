//! A request body on its way up: `Content-Length` framed or chunked, written as the body
//! yields its frames.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use hyper::body::Body;
use tokio::io::AsyncWrite;

use super::Error;
use crate::http::ProxyBody;
use crate::upstream::idle::Io;

/// How a request body is framed on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Upframe {
    Length(u64),
    Chunked,
}

/// A request body on its way up, with the bytes of its current frame not written yet.
pub(super) struct Upload {
    body: ProxyBody,
    framing: Upframe,
    /// Bytes the declared length still expects.
    left: u64,
    /// Chunk-size line (or the last chunk), data, CRLF of the frame being written.
    prefix: Vec<u8>,
    data: Bytes,
    suffix: &'static [u8],
    ended: bool,
}

impl Upload {
    pub(super) fn new(body: ProxyBody, framing: Upframe) -> Upload {
        let left = match framing {
            Upframe::Length(n) => n,
            Upframe::Chunked => 0,
        };
        Upload {
            body,
            framing,
            left,
            prefix: Vec::new(),
            data: Bytes::new(),
            suffix: b"",
            ended: false,
        }
    }

    fn pending(&self) -> bool {
        !self.prefix.is_empty() || !self.data.is_empty() || !self.suffix.is_empty()
    }

    /// Write what the body has ready; `Ready(Ok)` once all of it is written.
    pub(super) fn poll(
        &mut self,
        io: &mut Box<dyn Io>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Error>> {
        loop {
            while self.pending() {
                let slices = [
                    IoSlice::new(&self.prefix),
                    IoSlice::new(&self.data),
                    IoSlice::new(self.suffix),
                ];
                let mut n = match Pin::new(&mut *io).poll_write_vectored(cx, &slices) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(Error::Io(io::ErrorKind::WriteZero.into())));
                    }
                    Poll::Ready(Ok(n)) => n,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(Error::Io(e))),
                    Poll::Pending => return Poll::Pending,
                };
                let k = n.min(self.prefix.len());
                self.prefix.drain(..k);
                n -= k;
                let k = n.min(self.data.len());
                self.data.advance(k);
                n -= k;
                let k = n.min(self.suffix.len());
                self.suffix = &self.suffix[k..];
            }
            match Pin::new(&mut *io).poll_flush(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(Error::Io(e))),
                Poll::Pending => return Poll::Pending,
            }
            if self.ended {
                return Poll::Ready(Ok(()));
            }
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => {
                    return Poll::Ready(Err(Error::RequestBody(e.to_string())));
                }
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue; // trailers are not sent
                    };
                    if data.is_empty() {
                        continue;
                    }
                    match self.framing {
                        Upframe::Length(_) => {
                            if data.len() as u64 > self.left {
                                return Poll::Ready(Err(Error::RequestBody(
                                    "longer than its Content-Length".into(),
                                )));
                            }
                            self.left -= data.len() as u64;
                            self.ended = self.left == 0;
                        }
                        Upframe::Chunked => {
                            self.prefix = format!("{:x}\r\n", data.len()).into_bytes();
                            self.suffix = b"\r\n";
                        }
                    }
                    self.data = data;
                }
                Poll::Ready(None) => match self.framing {
                    Upframe::Length(_) if self.left > 0 => {
                        return Poll::Ready(Err(Error::RequestBody(
                            "shorter than its Content-Length".into(),
                        )));
                    }
                    Upframe::Length(_) => self.ended = true,
                    Upframe::Chunked => {
                        self.suffix = b"0\r\n\r\n";
                        self.ended = true;
                    }
                },
            }
        }
    }
}
