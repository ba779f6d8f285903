//! Bulk bytes between two TCP sockets through a pipe with `splice(2)`: the kernel moves the
//! received pages into the pipe and on to the other socket, and the bytes never come up to
//! user space (a read and a write copy each of them once otherwise).
//!
//! Tunnels use it for a direction that carries bulk, and sized response bodies from a plain
//! upstream to a plain client for the part of the body not yet read (`h1::body`).
//!
//! A pipe costs two descriptors and, while it holds bytes, their pages; so a tunnel opens one
//! for a direction only once that direction carries bulk (see `tunnel::Side::poll_pass`), and
//! a response body only when at least [`CHUNK`] of it is still to come. Once a user's pipes
//! pass `fs.pipe-user-pages-soft` the kernel gives new ones 2 pages instead of 16; a pipe that
//! small would take more calls than the copy, so the bytes are copied.
//!
//! TCP urgent data (`MSG_OOB`, telnet's interrupt, FTP's abort) stops a splice in front of the
//! urgent byte for good: the socket has bytes but the splice says "would block", or, once the
//! peer's FIN is in, returns 0 as at the end (which lost every byte after the urgent one in
//! the first version of this path). `SIOCATMARK` tells it: at the urgent mark the direction
//! goes back to copying, with its pipe empty and nothing lost; a read skips the urgent byte
//! (it is not in the stream without `SO_OOBINLINE`).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::task::{Context, Poll, ready};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl, splice};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Bytes asked of one splice into the pipe: a default pipe's capacity (16 pages).
pub(crate) const CHUNK: usize = 64 * 1024;

/// One direction's pipe, and the bytes in it not yet passed on.
pub(crate) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    held: usize,
}

impl Pipe {
    /// A non-blocking pipe of at least the default size, or `None` when none can be had
    /// (descriptors exhausted, the user's pipe pages used up): the direction then goes on
    /// copying through user space.
    pub(crate) fn new() -> Option<Pipe> {
        let (read, write) = match nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC) {
            Ok(ends) => ends,
            Err(e) => {
                tracing::debug!(error = %e, "No pipe to splice with: copying through user space");
                return None;
            }
        };
        let size = fcntl(&write, FcntlArg::F_GETPIPE_SZ).unwrap_or(0);
        if usize::try_from(size).unwrap_or(0) < CHUNK {
            tracing::debug!(
                size,
                "Pipe to splice with too small: copying through user space"
            );
            return None;
        }
        Some(Pipe {
            read,
            write,
            held: 0,
        })
    }

    /// Bytes in the pipe not yet written on.
    pub(crate) fn held(&self) -> usize {
        self.held
    }

    /// Move what `from` has received, up to `most` bytes (at most [`CHUNK`]), into the (empty)
    /// pipe: the number of bytes, 0 at EOF.
    pub(crate) fn poll_fill(
        &mut self,
        cx: &mut Context<'_>,
        from: &TcpStream,
        most: usize,
    ) -> Poll<io::Result<usize>> {
        debug_assert_eq!(self.held, 0, "filled only when empty");
        let most = most.min(CHUNK);
        let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
        loop {
            ready!(from.poll_read_ready(cx))?;
            // The pipe is empty, so "would block" can only be the socket's: the readiness
            // `try_io` clears on it is the socket's own.
            // Urgent data is found inside the call: reported as "would block", `try_io` would
            // clear the readiness, and the copy that takes over would wait for an event that
            // never comes (the bytes behind the urgent one are already in).
            match from.try_io(Interest::READABLE, || {
                match splice(from, None, &self.write, None, most, flags) {
                    // One `ioctl` each time the socket runs dry, and at the end: past the
                    // urgent byte a splice says "would block", or 0 once the peer's FIN is in.
                    Ok(0) | Err(Errno::EAGAIN) if at_mark(from) => Err(stuck()),
                    r => r.map_err(io::Error::from),
                }
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
    pub(crate) fn poll_drain(
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

/// Whether a failed fill means this kernel or socket cannot splice (at all, or past urgent
/// data), so the direction copies through user space instead, rather than a broken
/// connection.
pub(crate) fn unsupported(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Unsupported
        || matches!(
            e.raw_os_error().map(Errno::from_raw),
            Some(Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP)
        )
}

/// A socket whose bytes a splice cannot pass (urgent data in front of them).
fn stuck() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "the socket holds urgent data a splice cannot pass",
    )
}

/// `SIOCATMARK` (asm-generic/sockios.h, used by these architectures), which the libc crate
/// does not name for Linux; elsewhere urgent data is not detected.
const SIOCATMARK: Option<libc::c_ulong> = if cfg!(any(
    target_arch = "x86",
    target_arch = "x86_64",
    target_arch = "arm",
    target_arch = "aarch64",
    target_arch = "riscv64"
)) {
    Some(0x8905)
} else {
    None
};

/// Whether the socket's next byte is the urgent one (false if it cannot be told).
fn at_mark(socket: &TcpStream) -> bool {
    let Some(request) = SIOCATMARK else {
        return false;
    };
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCATMARK on a socket descriptor we own writes one c_int to the pointer given,
    // which points at `n`, alive for the call.
    let r = unsafe { libc::ioctl(socket.as_raw_fd(), request as _, &mut n) };
    r == 0 && n != 0
}
