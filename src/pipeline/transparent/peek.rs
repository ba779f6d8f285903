//! Peek a connection's first bytes, bounded in size and time, without consuming them.

use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::wire::sniff::{FirstBytes, Sniff, sniff};

/// How long to wait before peeking again when the bytes so far are a prefix of a ClientHello
/// or request head and no more have arrived (a peek returns at once while any byte is queued,
/// so waiting for *more* bytes is a short back-off, bounded by the peek timeout).
const MORE_BYTES_BACKOFF: Duration = Duration::from_millis(2);

/// What the client sent first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peeked {
    /// Bytes, classified (a prefix still incomplete at the size or time bound is `Other`).
    Bytes(FirstBytes),
    /// Nothing within the wait: a server-speaks-first protocol, decided by address.
    Silent,
    /// The client closed (or reset) the connection before sending anything.
    Closed,
}

/// Peek up to `max` bytes for up to `wait`, until they say what they are.
pub async fn peek_first(stream: &TcpStream, max: usize, wait: Duration) -> Peeked {
    let deadline = Instant::now() + wait;
    let mut buf = vec![0u8; max.max(1)];
    let mut last = 0usize;
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Err(_) if last == 0 => return Peeked::Silent,
            Err(_) => return Peeked::Bytes(FirstBytes::Other),
            Ok(Err(_)) | Ok(Ok(0)) if last == 0 => return Peeked::Closed,
            // Closed after a prefix: classify what there is.
            Ok(Err(_)) | Ok(Ok(0)) => return Peeked::Bytes(FirstBytes::Other),
            Ok(Ok(n)) => n,
        };
        let Some(seen) = buf.get(..n) else {
            return Peeked::Bytes(FirstBytes::Other);
        };
        match sniff(seen) {
            Sniff::Known(f) => return Peeked::Bytes(f),
            Sniff::Incomplete if n >= buf.len() => return Peeked::Bytes(FirstBytes::Other),
            Sniff::Incomplete => {}
        }
        if n == last {
            let next = (Instant::now() + MORE_BYTES_BACKOFF).min(deadline);
            tokio::time::sleep_until(next).await;
            if Instant::now() >= deadline {
                return Peeked::Bytes(FirstBytes::Other);
            }
        }
        last = n;
    }
}

#[cfg(test)]
mod tests;
