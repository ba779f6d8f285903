//! The idle timeout of relayed response bodies, on the upstream socket: while a connection is
//! carrying a response (from its first byte until the connection is returned to its idle set
//! or dropped), a read that waits `body_idle_timeout` for the next byte fails, which ends the
//! response body with an error instead of leaving the client waiting for ever.

use crate::conn::{ReadTimer, delegate_async_write};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// What a connection is doing, shared by its socket wrapper and whoever hands it out.
#[derive(Debug)]
pub struct Watch {
    /// Handed out for a request (not idle in a pool).
    in_use: AtomicBool,
    /// A response byte has arrived since it was handed out.
    started: AtomicBool,
    /// Longest wait for the next response byte once the response has started.
    idle: Duration,
}

impl Watch {
    /// A watch for a connection handed out at once.
    pub fn new(idle: Duration) -> Arc<Watch> {
        Arc::new(Watch {
            in_use: AtomicBool::new(true),
            started: AtomicBool::new(false),
            idle,
        })
    }

    /// The connection is handed out for a request.
    pub fn begin(&self) {
        self.started.store(false, Ordering::Release);
        self.in_use.store(true, Ordering::Release);
    }

    /// The connection is idle again (its response is finished).
    pub fn end(&self) {
        self.in_use.store(false, Ordering::Release);
        self.started.store(false, Ordering::Release);
    }

    /// Has any byte of the current response arrived?
    pub fn started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }

    fn armed(&self) -> bool {
        self.in_use.load(Ordering::Acquire) && self.started.load(Ordering::Acquire)
    }
}

/// An upstream socket under a [`Watch`].
pub struct Watched<T> {
    inner: T,
    watch: Arc<Watch>,
    /// When the current wait for response bytes began.
    wait_since: Option<Instant>,
    timer: ReadTimer,
}

impl<T> Watched<T> {
    /// Wrap `inner`; the returned watch is in use (a fresh connection is dialled for a request).
    pub fn new(inner: T, idle: Duration) -> (Watched<T>, Arc<Watch>) {
        let watch = Watch::new(idle);
        let w = Watched {
            inner,
            watch: watch.clone(),
            wait_since: None,
            timer: ReadTimer::new(),
        };
        (w, watch)
    }
}

impl<T> Watched<T> {
    /// Response bytes arrived: the wait is over, and a response body under watch has begun.
    pub(crate) fn arrived(&mut self) {
        self.wait_since = None;
        if self.watch.in_use.load(Ordering::Acquire) {
            self.watch.started.store(true, Ordering::Release);
        }
    }

    /// No response byte this time: pending until the body idle time since the last one runs
    /// out, then the timeout's error (a read fails with it).
    pub(crate) fn poll_stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        if !self.watch.armed() {
            self.wait_since = None;
            return Poll::Pending;
        }
        let since = *self.wait_since.get_or_insert_with(Instant::now);
        let Some(deadline) = since.checked_add(self.watch.idle) else {
            return Poll::Pending;
        };
        match self
            .timer
            .poll_at::<()>(cx, deadline, "upstream response body idle timeout")
        {
            Poll::Ready(Err(e)) => Poll::Ready(e),
            _ => Poll::Pending,
        }
    }
}

impl Watched<TcpStream> {
    /// The socket, for moving bytes off it without reading them ([`Self::arrived`] and
    /// [`Self::poll_stalled`] keep the watch).
    pub(crate) fn socket(&self) -> &TcpStream {
        &self.inner
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let filled = buf.filled().len();
        if let Poll::Ready(r) = Pin::new(&mut this.inner).poll_read(cx, buf) {
            if buf.filled().len() > filled {
                this.arrived();
            }
            return Poll::Ready(r);
        }
        this.poll_stalled(cx).map(Err)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    delegate_async_write!(inner);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_started_response_that_stalls_fails_after_the_idle_time() {
        let (near, mut far) = tokio::io::duplex(64);
        let (mut w, watch) = Watched::new(near, Duration::from_secs(60));
        far.write_all(b"head").await.expect("write");
        let mut buf = [0u8; 4];
        w.read_exact(&mut buf).await.expect("first bytes");
        assert!(watch.started());
        let t0 = Instant::now();
        let e = w.read(&mut buf).await.expect_err("the stall is cut");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(t0.elapsed(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_and_a_response_not_started_are_not_cut() {
        let (near, mut far) = tokio::io::duplex(64);
        let (mut w, watch) = Watched::new(near, Duration::from_secs(1));
        let mut buf = [0u8; 4];
        // Waiting for the response head is the response timeout's business.
        let r = tokio::time::timeout(Duration::from_secs(3600), w.read(&mut buf)).await;
        assert!(r.is_err(), "no byte yet: not cut");
        far.write_all(b"body").await.expect("write");
        w.read_exact(&mut buf).await.expect("bytes");
        // Back in the idle set: no body is being relayed.
        watch.end();
        let r = tokio::time::timeout(Duration::from_secs(3600), w.read(&mut buf)).await;
        assert!(r.is_err(), "idle: not cut");
    }
}
