//! How a `CONNECT` answered by the loop hands its client stream to the tunnel, and the stream
//! with bytes in front that a connection handed over to hyper is read through.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use hyper::Request;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// The client side of a `CONNECT` tunnel this loop answered with a 2xx: the stream, with any
/// bytes the client sent after its request first.
pub type Upgraded = Box<dyn UpgradedIo>;

/// What a tunnel needs of its client's stream.
pub trait UpgradedIo: AsyncRead + AsyncWrite + Send + Unpin {
    /// The TCP socket under this stream, when reading and writing the socket directly is the
    /// same as going through the stream: no TLS, no bytes buffered in front, nothing watched.
    /// A tunnel between two such sockets moves bulk bytes with `splice(2)`.
    fn tcp(&self) -> Option<&TcpStream> {
        None
    }
}

impl UpgradedIo for TcpStream {
    fn tcp(&self) -> Option<&TcpStream> {
        Some(self)
    }
}

impl UpgradedIo for Box<dyn UpgradedIo> {
    fn tcp(&self) -> Option<&TcpStream> {
        (**self).tcp()
    }
}

/// The bytes of a TLS stream are not the socket's.
impl<T: AsyncRead + AsyncWrite + Send + Unpin> UpgradedIo for tokio_rustls::server::TlsStream<T> {}

/// hyper's upgraded stream may hold bytes it read ahead.
impl UpgradedIo for hyper_util::rt::TokioIo<hyper::upgrade::Upgraded> {}

/// In-memory streams (tests).
impl UpgradedIo for tokio::io::DuplexStream {}

impl<T: UpgradedIo> UpgradedIo for Rewind<T> {
    /// Only once the bytes in front have been read.
    fn tcp(&self) -> Option<&TcpStream> {
        if self.at < self.prefix.len() {
            return None;
        }
        self.inner.tcp()
    }
}

/// In the extensions of a `CONNECT` request this loop serves: where it sends the client's
/// stream once a 2xx answer is written (see [`on_upgrade`]).
#[derive(Clone)]
pub(super) struct OnUpgrade(pub(super) Arc<Mutex<Option<oneshot::Receiver<Upgraded>>>>);

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

/// A stream with bytes already read from it in front: what hyper reads first when a
/// connection is handed over.
pub(crate) struct Rewind<T> {
    pub(super) prefix: Vec<u8>,
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
