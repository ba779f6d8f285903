//! Copy bytes both ways between client and destination, counting them, with an idle timeout.

use std::time::Duration;

use std::sync::atomic::Ordering;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::record::Bytes2;

/// How a tunnel ended, with the bytes each way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TunnelStats {
    /// Client → destination.
    pub up: u64,
    /// Destination → client.
    pub down: u64,
    /// Closed by the idle timeout.
    pub idle_timeout: bool,
    /// Closed because an I/O error occurred on either side.
    pub io_error: bool,
}

const BUF: usize = 16 * 1024;

/// Relay until both sides have finished (EOF is passed on as a write shutdown), an error, or
/// `idle` passes with no bytes either way.
/// Bytes are added to `counters` as they pass, so a tunnel cut short still reports them.
pub async fn tunnel<C, U>(client: C, upstream: U, idle: Duration, counters: &Bytes2) -> TunnelStats
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut ur, mut uw) = tokio::io::split(upstream);
    let mut stats = TunnelStats::default();
    let mut up_buf = vec![0u8; BUF];
    let mut down_buf = vec![0u8; BUF];
    let (mut up_open, mut down_open) = (true, true);
    let deadline = tokio::time::sleep(idle);
    tokio::pin!(deadline);
    while up_open || down_open {
        tokio::select! {
            r = cr.read(&mut up_buf), if up_open => match r {
                Ok(0) => { up_open = false; let _ = uw.shutdown().await; }
                Ok(n) => {
                    if uw.write_all(&up_buf[..n]).await.is_err() { stats.io_error = true; break; }
                    stats.up += n as u64;
                    counters.up.fetch_add(n as u64, Ordering::Relaxed);
                    deadline.as_mut().reset(Instant::now() + idle);
                }
                Err(_) => { stats.io_error = true; break; }
            },
            r = ur.read(&mut down_buf), if down_open => match r {
                Ok(0) => { down_open = false; let _ = cw.shutdown().await; }
                Ok(n) => {
                    if cw.write_all(&down_buf[..n]).await.is_err() { stats.io_error = true; break; }
                    stats.down += n as u64;
                    counters.down.fetch_add(n as u64, Ordering::Relaxed);
                    deadline.as_mut().reset(Instant::now() + idle);
                }
                Err(_) => { stats.io_error = true; break; }
            },
            _ = &mut deadline => { stats.idle_timeout = true; break; }
        }
    }
    stats
}
