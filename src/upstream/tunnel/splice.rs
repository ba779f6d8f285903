//! Bulk bytes between two TCP sockets through a pipe with `splice(2)`: the kernel moves the
//! received pages into the pipe and on to the other socket, and the bytes never come up to
//! user space (a read and a write copy each of them once otherwise).
//!
//! A pipe costs two descriptors and, while it holds bytes, their pages; so a tunnel opens one
//! for a direction only once that direction carries bulk (see `Side::poll_pass`).

use std::io;
use std::os::fd::OwnedFd;
use std::task::{Context, Poll, ready};

use nix::errno::Errno;
use nix::fcntl::{OFlag, SpliceFFlags, splice};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Bytes asked of one splice into the pipe: a default pipe's capacity (16 pages).
const CHUNK: usize = 64 * 1024;

/// One direction's pipe, and the bytes in it not yet passed on.
pub(super) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    held: usize,
}

impl Pipe {
    /// A non-blocking pipe, or `None` when none can be had (descriptors exhausted): the
    /// direction then goes on copying through user space.
    pub(super) fn new() -> Option<Pipe> {
        match nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC) {
            Ok((read, write)) => Some(Pipe {
                read,
                write,
                held: 0,
            }),
            Err(e) => {
                tracing::debug!(error = %e, "No pipe for a tunnel: copying through user space");
                None
            }
        }
    }

    /// Bytes in the pipe not yet written on.
    pub(super) fn held(&self) -> usize {
        self.held
    }

    /// Move what `from` has received into the (empty) pipe: the number of bytes, 0 at EOF.
    pub(super) fn poll_fill(
        &mut self,
        cx: &mut Context<'_>,
        from: &TcpStream,
    ) -> Poll<io::Result<usize>> {
        debug_assert_eq!(self.held, 0, "filled only when empty");
        let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
        loop {
            ready!(from.poll_read_ready(cx))?;
            // The pipe is empty, so "would block" can only be the socket's: the readiness
            // `try_io` clears on it is the socket's own.
            match from.try_io(Interest::READABLE, || {
                splice(from, None, &self.write, None, CHUNK, flags).map_err(io::Error::from)
            }) {
                Ok(n) => {
                    self.held = n;
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Write bytes of the pipe to `to`: how many went, or pending while `to` is full.
    pub(super) fn poll_drain(
        &mut self,
        cx: &mut Context<'_>,
        to: &TcpStream,
    ) -> Poll<io::Result<usize>> {
        let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
        loop {
            ready!(to.poll_write_ready(cx))?;
            // The pipe holds bytes, so "would block" is the socket's.
            match to.try_io(Interest::WRITABLE, || {
                splice(&self.read, None, to, None, self.held, flags).map_err(io::Error::from)
            }) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    self.held -= n.min(self.held);
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// Whether a failed first splice means this kernel or socket cannot splice at all (so the
/// direction copies through user space instead) rather than a broken connection.
pub(super) fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error().map(Errno::from_raw),
        Some(Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP)
    )
}
