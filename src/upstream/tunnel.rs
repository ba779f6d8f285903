//! Copy bytes both ways between client and destination, counting them, with an idle timeout
//! and an optional lifetime.

use std::time::Duration;

use std::sync::atomic::{AtomicU64, Ordering};

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::audit::recorder::Bytes2;
use crate::http::server::UpgradedIo;
use crate::upstream::splice::{self, CHUNK, Pipe};

/// How a tunnel ended, with the bytes each way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TunnelStats {
    /// Client → destination.
    pub up: u64,
    /// Destination → client.
    pub down: u64,
    /// Closed by the idle timeout.
    pub idle_timeout: bool,
    /// Closed because it had been open for its maximum lifetime.
    pub lifetime_exceeded: bool,
    /// Of `up` and `down`, the bytes moved socket to socket with `splice(2)`.
    pub spliced: u64,
}

/// The per-thread buffer every tunnel reads into. A tunnel owns no buffer while it waits: only
/// bytes the other side could not take at once are kept, in a buffer of the tunnel's own that
/// is freed once they are written. An idle tunnel therefore costs its two sockets and its task,
/// not two read buffers (it used to hold 2 × 16 KiB for its whole life).
const SCRATCH: usize = 16 * 1024;

/// At most this many reads a side in one poll, so that one busy tunnel yields to the others.
const READS_PER_POLL: usize = 16;

/// A direction switches to `splice(2)` after this many reads in a row that filled the scratch
/// buffer: a bulk transfer, not the few small records of a handshake or an API call.
const FULL_READS_TO_SPLICE: u8 = 2;

thread_local! {
    static SCRATCH_BUF: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0u8; SCRATCH].into_boxed_slice());
}

/// How long a tunnel may last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelLimits {
    /// Closed after this long with no bytes either way.
    pub idle: Duration,
    /// Closed after this long in all, busy or not (`None`: no limit).
    pub lifetime: Option<Duration>,
}

/// Relay until both sides have finished (EOF is passed on as a write shutdown), an error,
/// `limits.idle` passes with no bytes either way, or `limits.lifetime` is up.
/// Bytes are added to `counters` as they pass, so a tunnel cut short still reports them.
///
/// Bytes are read into a per-thread buffer and written on; a direction that carries bulk
/// between two plain TCP sockets ([`UpgradedIo::tcp`]) moves them with `splice(2)` instead.
pub async fn tunnel<C, U>(
    client: C,
    upstream: U,
    limits: TunnelLimits,
    counters: &Bytes2,
) -> TunnelStats
where
    C: UpgradedIo,
    U: UpgradedIo,
{
    let mut relay = Relay {
        client,
        upstream,
        up: Side::default(),
        down: Side::default(),
        counters,
        last_moved: Instant::now(),
    };
    let idle = limits.idle;
    let deadline = tokio::time::sleep(idle);
    tokio::pin!(deadline);
    let end_of_life = limits.lifetime.and_then(|l| Instant::now().checked_add(l));
    let life = tokio::time::sleep_until(end_of_life.unwrap_or_else(Instant::now));
    tokio::pin!(life);
    let mut stats = TunnelStats::default();
    loop {
        // The idle deadline is not moved for every chunk: when it fires, it is checked
        // against the time bytes last moved and set again from there if they did since.
        let event = tokio::select! {
            _ = &mut relay => Event::Ended,
            _ = &mut deadline => Event::Idle,
            _ = &mut life, if end_of_life.is_some() => Event::Lifetime,
        };
        match event {
            Event::Ended => break,
            Event::Idle => match relay.last_moved.checked_add(idle) {
                Some(next) if next > Instant::now() => deadline.as_mut().reset(next),
                _ => {
                    stats.idle_timeout = true;
                    break;
                }
            },
            Event::Lifetime => {
                stats.lifetime_exceeded = true;
                break;
            }
        }
    }
    stats.up = relay.up.total;
    stats.down = relay.down.total;
    stats.spliced = relay.up.spliced + relay.down.spliced;
    stats
}

/// What ended one wait of [`tunnel`]'s loop.
enum Event {
    Ended,
    Idle,
    Lifetime,
}

/// One direction of a tunnel.
#[derive(Default)]
struct Side {
    /// Bytes read but not yet written, from `pos` on (`None`: nothing pending, no buffer).
    pending: Option<Vec<u8>>,
    pos: usize,
    /// The reading side reached EOF; the write half of the other side is being shut down.
    shutting: bool,
    /// Finished: EOF passed on.
    done: bool,
    /// Bytes were written since the other side was last flushed (a TLS stream may hold them).
    unflushed: bool,
    /// Bytes written to the other side.
    total: u64,
    /// Whether bytes go through user space or a pipe.
    splice: Splicing,
    /// Of `total`, the bytes moved with `splice(2)`.
    spliced: u64,
}

/// How a direction moves its bytes.
enum Splicing {
    /// Through the scratch buffer; the count of reads in a row that filled it.
    Copy(u8),
    /// Through this pipe.
    Pipe(Pipe),
    /// Through the scratch buffer for good (a side is not a plain socket, no pipe could be
    /// had, or the kernel cannot splice these sockets).
    Never,
}

impl Default for Splicing {
    fn default() -> Self {
        Splicing::Copy(0)
    }
}

/// What one splice step came to.
enum Spliced {
    /// Bytes went from the pipe to the writer.
    Wrote(usize),
    /// Bytes came from the reader into the pipe.
    Filled,
    /// The reader reached EOF.
    Eof,
    /// The reader has nothing, or the writer is full.
    Blocked,
    /// These sockets cannot be spliced: copy instead (the pipe was empty).
    Unsupported,
    /// A read or write failed.
    Failed,
}

/// What polling one direction came to.
enum Flow {
    /// Waiting for the reader or the writer; `moved` says whether bytes passed first.
    Waiting { moved: bool },
    /// EOF passed on.
    Done,
    /// A read or a write failed: the tunnel ends.
    Failed,
}

/// Both directions of a tunnel, polled from one task without splitting either stream. Ends
/// (`Ready`) when both sides have finished or either fails.
struct Relay<'a, C, U> {
    client: C,
    upstream: U,
    /// Client → upstream.
    up: Side,
    /// Upstream → client.
    down: Side,
    counters: &'a Bytes2,
    last_moved: Instant,
}

impl<C, U> Future for Relay<'_, C, U>
where
    C: UpgradedIo,
    U: UpgradedIo,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let up = if this.up.done {
            Flow::Done
        } else {
            let last = this.down.done;
            this.up.poll_pass(
                cx,
                &mut this.client,
                &mut this.upstream,
                &this.counters.up,
                last,
            )
        };
        let down = if this.down.done {
            Flow::Done
        } else {
            let last = this.up.done;
            this.down.poll_pass(
                cx,
                &mut this.upstream,
                &mut this.client,
                &this.counters.down,
                last,
            )
        };
        let mut moved = false;
        for flow in [&up, &down] {
            match flow {
                Flow::Failed => return Poll::Ready(()),
                Flow::Waiting { moved: true } => moved = true,
                _ => {}
            }
        }
        if moved {
            this.last_moved = Instant::now();
        }
        if matches!((up, down), (Flow::Done, Flow::Done)) {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl Side {
    /// Move bytes from `from` to `to` until one of them has to wait (or `READS_PER_POLL`
    /// reads, after which the task is woken again to let others run). `last`: the other
    /// direction has finished, so an EOF here ends the tunnel and closing both sockets passes
    /// it on (no separate shutdown call).
    fn poll_pass<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut R,
        to: &mut W,
        counter: &AtomicU64,
        last: bool,
    ) -> Flow
    where
        R: UpgradedIo,
        W: UpgradedIo,
    {
        let mut moved = false;
        for _ in 0..READS_PER_POLL {
            // First what an earlier write left over.
            if let Some(buf) = self.pending.take() {
                while let Some(rest) = buf.get(self.pos..).filter(|r| !r.is_empty()) {
                    match Pin::new(&mut *to).poll_write(cx, rest) {
                        Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Flow::Failed,
                        Poll::Ready(Ok(n)) => {
                            self.pos += n;
                            self.count(n, counter);
                            moved = true;
                        }
                        Poll::Pending => {
                            self.pending = Some(buf);
                            return Flow::Waiting { moved };
                        }
                    }
                }
                self.pos = 0;
            }
            if self.shutting {
                return match Pin::new(&mut *to).poll_shutdown(cx) {
                    // A peer that already went away cannot be told any more: the side is done.
                    Poll::Ready(_) => {
                        self.shutting = false;
                        self.done = true;
                        Flow::Done
                    }
                    Poll::Pending => Flow::Waiting { moved },
                };
            }
            if matches!(self.splice, Splicing::Copy(n) if n >= FULL_READS_TO_SPLICE) {
                self.start_splice(from, to);
            }
            if let Splicing::Pipe(pipe) = &mut self.splice {
                let step = match (from.tcp(), to.tcp()) {
                    (Some(f), Some(t)) => splice_step(pipe, cx, f, t),
                    // Not reachable: a stream that has its socket keeps it.
                    _ => Spliced::Failed,
                };
                match step {
                    Spliced::Wrote(n) => {
                        self.add(n, counter);
                        self.spliced += n as u64;
                        moved = true;
                    }
                    Spliced::Filled => {}
                    Spliced::Eof if last => {
                        self.done = true;
                        return Flow::Done;
                    }
                    Spliced::Eof => self.shutting = true,
                    Spliced::Blocked => return Flow::Waiting { moved },
                    Spliced::Unsupported => self.splice = Splicing::Never,
                    Spliced::Failed => return Flow::Failed,
                }
                continue;
            }
            match self.read_and_write(cx, from, to, counter) {
                Step::Wrote => moved = true,
                Step::Eof if last && !self.unflushed => {
                    self.done = true;
                    return Flow::Done;
                }
                Step::Eof => self.shutting = true,
                Step::Blocked { wrote } => {
                    // Waiting to read (or for the writer): what was written goes out now.
                    if self.unflushed {
                        match Pin::new(&mut *to).poll_flush(cx) {
                            Poll::Ready(Ok(())) => self.unflushed = false,
                            Poll::Ready(Err(_)) => return Flow::Failed,
                            Poll::Pending => {}
                        }
                    }
                    return Flow::Waiting {
                        moved: moved || wrote,
                    };
                }
                Step::Failed => return Flow::Failed,
            }
        }
        cx.waker().wake_by_ref();
        Flow::Waiting { moved }
    }

    /// Go over to a pipe if both sides are plain sockets (and a pipe can be had). Nothing is
    /// pending (that is written first), and a plain socket needs no flush.
    fn start_splice<R: UpgradedIo, W: UpgradedIo>(&mut self, from: &R, to: &W) {
        self.splice = match (from.tcp(), to.tcp()) {
            (Some(_), Some(_)) => Pipe::new().map_or(Splicing::Never, Splicing::Pipe),
            _ => Splicing::Never,
        };
        if matches!(self.splice, Splicing::Pipe(_)) {
            self.unflushed = false;
        }
    }

    /// One read into the thread's scratch buffer and as much of it written as `to` takes at
    /// once; the rest is copied into `pending`.
    fn read_and_write<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut R,
        to: &mut W,
        counter: &AtomicU64,
    ) -> Step
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        SCRATCH_BUF.with(|cell| match cell.try_borrow_mut() {
            Ok(mut scratch) => self.read_into(cx, from, to, counter, &mut scratch),
            // Not reachable (no read calls back into a tunnel), but never a panic.
            Err(_) => self.read_into(cx, from, to, counter, &mut vec![0u8; SCRATCH]),
        })
    }

    fn read_into<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut R,
        to: &mut W,
        counter: &AtomicU64,
        scratch: &mut [u8],
    ) -> Step
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut rb = ReadBuf::new(scratch);
        match Pin::new(&mut *from).poll_read(cx, &mut rb) {
            Poll::Pending => return Step::Blocked { wrote: false },
            Poll::Ready(Err(_)) => return Step::Failed,
            Poll::Ready(Ok(())) => {}
        }
        let data = rb.filled();
        if data.is_empty() {
            return Step::Eof;
        }
        if let Splicing::Copy(full) = &mut self.splice {
            *full = if data.len() == SCRATCH {
                full.saturating_add(1)
            } else {
                0
            };
        }
        let mut off = 0;
        while let Some(rest) = data.get(off..).filter(|r| !r.is_empty()) {
            match Pin::new(&mut *to).poll_write(cx, rest) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Step::Failed,
                Poll::Ready(Ok(n)) => {
                    off += n;
                    self.count(n, counter);
                }
                Poll::Pending => {
                    self.pending = Some(rest.to_vec());
                    self.pos = 0;
                    return Step::Blocked { wrote: off > 0 };
                }
            }
        }
        Step::Wrote
    }

    /// Bytes written through user space (a TLS writer may hold them until flushed).
    fn count(&mut self, n: usize, counter: &AtomicU64) {
        self.unflushed = true;
        self.add(n, counter);
    }

    fn add(&mut self, n: usize, counter: &AtomicU64) {
        self.total += n as u64;
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Empty the pipe into `to` when it holds bytes, otherwise fill it from `from`.
fn splice_step(pipe: &mut Pipe, cx: &mut Context<'_>, from: &TcpStream, to: &TcpStream) -> Spliced {
    if pipe.held() > 0 {
        return match pipe.poll_drain(cx, to) {
            Poll::Ready(Ok(n)) => Spliced::Wrote(n),
            Poll::Ready(Err(_)) => Spliced::Failed,
            Poll::Pending => Spliced::Blocked,
        };
    }
    match pipe.poll_fill(cx, from, CHUNK) {
        Poll::Ready(Ok(0)) => Spliced::Eof,
        Poll::Ready(Ok(_)) => Spliced::Filled,
        Poll::Ready(Err(e)) if splice::unsupported(&e) => Spliced::Unsupported,
        Poll::Ready(Err(_)) => Spliced::Failed,
        Poll::Pending => Spliced::Blocked,
    }
}

/// What one read and its writes came to.
enum Step {
    /// All of it written.
    Wrote,
    /// The reader reached EOF.
    Eof,
    /// The reader has nothing, or the writer took only part (the rest is pending).
    Blocked { wrote: bool },
    /// A read or write failed.
    Failed,
}

#[cfg(test)]
mod tests;
