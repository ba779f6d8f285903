//! Copy bytes both ways between client and destination, counting them, with an idle timeout
//! and an optional lifetime.

use std::time::Duration;

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::audit::recorder::Bytes2;

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
}

const BUF: usize = 16 * 1024;

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
pub async fn tunnel<C, U>(
    client: C,
    upstream: U,
    limits: TunnelLimits,
    counters: &Bytes2,
) -> TunnelStats
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
    let idle = limits.idle;
    let deadline = tokio::time::sleep(idle);
    tokio::pin!(deadline);
    let end_of_life = limits.lifetime.and_then(|l| Instant::now().checked_add(l));
    let life = tokio::time::sleep_until(end_of_life.unwrap_or_else(Instant::now));
    tokio::pin!(life);
    while up_open || down_open {
        tokio::select! {
            r = cr.read(&mut up_buf), if up_open => {
                match pass(r, &mut uw, &up_buf, &mut stats.up, &counters.up).await {
                    Pass::Moved => deadline.as_mut().reset(Instant::now() + idle),
                    Pass::Closed => up_open = false,
                    Pass::Failed => break,
                }
            }
            r = ur.read(&mut down_buf), if down_open => {
                match pass(r, &mut cw, &down_buf, &mut stats.down, &counters.down).await {
                    Pass::Moved => deadline.as_mut().reset(Instant::now() + idle),
                    Pass::Closed => down_open = false,
                    Pass::Failed => break,
                }
            }
            _ = &mut deadline => { stats.idle_timeout = true; break; }
            _ = &mut life, if end_of_life.is_some() => { stats.lifetime_exceeded = true; break; }
        }
    }
    stats
}

/// What one read on one side of a tunnel came to.
enum Pass {
    /// Bytes read and written to the other side.
    Moved,
    /// The side closed; the other side's write half is shut down.
    Closed,
    /// A read or write failed: the tunnel ends.
    Failed,
}

/// Write what one side read (`read`, into `buf`) to the other side `to`, and count it.
async fn pass<W: AsyncWrite + Unpin>(
    read: std::io::Result<usize>,
    to: &mut W,
    buf: &[u8],
    total: &mut u64,
    counter: &AtomicU64,
) -> Pass {
    match read {
        Ok(0) => {
            let _ = to.shutdown().await;
            Pass::Closed
        }
        Ok(n) => {
            let Some(data) = buf.get(..n) else {
                return Pass::Failed;
            };
            if to.write_all(data).await.is_err() {
                return Pass::Failed;
            }
            *total += n as u64;
            counter.fetch_add(n as u64, Ordering::Relaxed);
            Pass::Moved
        }
        Err(_) => Pass::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    #[tokio::test(start_paused = true)]
    async fn a_busy_tunnel_is_cut_at_its_lifetime() {
        let (client, mut client_far) = duplex(1024);
        let (upstream, mut upstream_far) = duplex(1024);
        let counters = Bytes2::default();
        let limits = TunnelLimits {
            idle: Duration::from_secs(60),
            lifetime: Some(Duration::from_secs(310)),
        };
        let start = Instant::now();
        let relay = tunnel(client, upstream, limits, &counters);
        // A byte every 30 s keeps the idle timer from ever firing.
        let chatter = async {
            let mut buf = [0u8; 1];
            loop {
                if client_far.write_all(b"x").await.is_err() {
                    break;
                }
                if upstream_far.read_exact(&mut buf).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
        };
        let stats = tokio::select! {
            s = relay => s,
            _ = chatter => panic!("the tunnel ended without being cut"),
        };
        assert!(stats.lifetime_exceeded, "{stats:?}");
        assert!(!stats.idle_timeout, "{stats:?}");
        assert_eq!(start.elapsed(), Duration::from_secs(310));
        assert_eq!(stats.up, 11, "one byte per 30 s, from 0 s to 300 s");
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_lifetime_only_the_idle_timeout_cuts() {
        let (client, _client_far) = duplex(1024);
        let (upstream, _upstream_far) = duplex(1024);
        let counters = Bytes2::default();
        let limits = TunnelLimits {
            idle: Duration::from_secs(7200),
            lifetime: None,
        };
        let start = Instant::now();
        let stats = tunnel(client, upstream, limits, &counters).await;
        assert!(stats.idle_timeout && !stats.lifetime_exceeded, "{stats:?}");
        assert_eq!(start.elapsed(), Duration::from_secs(7200));
    }
}
