use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

/// Bytes one way through pipes much smaller than a read (so most writes take part of a
/// read and the rest waits in the tunnel's own buffer), the other way at the same time,
/// and each EOF passed on as a shutdown.
#[tokio::test]
async fn bytes_pass_whole_both_ways_through_small_pipes() {
    let (client, client_far) = duplex(700);
    let (upstream, upstream_far) = duplex(300);
    let stats = both_ways(client, client_far, upstream, upstream_far, 300_000, 200_000).await;
    assert!(!stats.idle_timeout && !stats.lifetime_exceeded, "{stats:?}");
    assert_eq!(
        stats.spliced, 0,
        "in-memory streams have no socket to splice"
    );
}

/// Through a tunnel from `client` to `upstream` (their far ends given), `up` bytes one way
/// and `down` the other at once, each side shutting down after its last: every byte arrives
/// in order and the stats and counters say exactly how many.
async fn both_ways<C, U, CF, UF>(
    client: C,
    mut client_far: CF,
    upstream: U,
    mut upstream_far: UF,
    up: u32,
    down: u32,
) -> TunnelStats
where
    C: UpgradedIo,
    U: UpgradedIo,
    CF: AsyncRead + AsyncWrite + Unpin,
    UF: AsyncRead + AsyncWrite + Unpin,
{
    let counters = Bytes2::default();
    let limits = TunnelLimits {
        idle: Duration::from_secs(60),
        lifetime: None,
    };
    let up: Vec<u8> = (0..up).map(|i| (i % 251) as u8).collect();
    let down: Vec<u8> = (0..down).map(|i| (i % 241) as u8).collect();
    let relay = tunnel(client, upstream, limits, &counters);
    let client_side = send_and_read_all(&mut client_far, &up);
    let upstream_side = send_and_read_all(&mut upstream_far, &down);
    let (stats, at_client, at_upstream) = tokio::join!(relay, client_side, upstream_side);
    assert!(at_upstream == up, "the upstream got other bytes");
    assert!(at_client == down, "the client got other bytes");
    let (up, down) = (up.len() as u64, down.len() as u64);
    assert_eq!((stats.up, stats.down), (up, down));
    assert_eq!(counters.up.load(Ordering::Relaxed), up);
    assert_eq!(counters.down.load(Ordering::Relaxed), down);
    stats
}

/// A connected pair of loopback sockets: the near end and the far one.
async fn socket_pair() -> (TcpStream, TcpStream) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (near, far) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (near.unwrap(), far.unwrap().0)
}

/// Bulk both ways at once between two plain sockets: each direction goes over to
/// `splice(2)`, every byte arrives in order, the counts are exact and each EOF is passed on.
#[tokio::test]
async fn bulk_between_sockets_is_spliced_and_arrives_whole() {
    let (client, client_far) = socket_pair().await;
    let (upstream, upstream_far) = socket_pair().await;
    let stats = both_ways(
        client,
        client_far,
        upstream,
        upstream_far,
        3_000_000,
        2_000_000,
    )
    .await;
    // The first full reads go through user space; the bulk after them through pipes.
    assert!(
        stats.spliced > 4_000_000,
        "only {} of 5,000,000 bytes were spliced",
        stats.spliced
    );
}

/// TCP urgent data in a direction that splices: the splice stops in front of the urgent
/// byte, the direction goes back to copying, and every other byte arrives in order (the
/// urgent byte is not part of the stream, as for any reader without `SO_OOBINLINE`). With
/// the sender's FIN right behind, the splice sees an end there; without it, "would block".
#[tokio::test]
async fn urgent_data_in_a_spliced_direction_neither_ends_nor_stalls_it() {
    urgent_data_passes(true).await;
    urgent_data_passes(false).await;
}

async fn urgent_data_passes(fin_right_behind: bool) {
    let (client, mut client_far) = socket_pair().await;
    let (upstream, mut upstream_far) = socket_pair().await;
    let counters = Bytes2::default();
    let limits = TunnelLimits {
        idle: Duration::from_secs(3600),
        lifetime: None,
    };
    let head: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let tail: Vec<u8> = (0..200_000u32).map(|i| (i % 239) as u8).collect();
    let want: Vec<u8> = head.iter().chain(&tail).copied().collect();
    let (got_all, all_in) = tokio::sync::oneshot::channel::<()>();
    let relay = tunnel(client, upstream, limits, &counters);
    let send = async {
        client_far.write_all(&head).await.unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&client_far);
        let oob = || {
            nix::sys::socket::send(fd, b"!", nix::sys::socket::MsgFlags::MSG_OOB)
                .map_err(std::io::Error::from)
        };
        loop {
            client_far.writable().await.unwrap();
            match client_far.try_io(tokio::io::Interest::WRITABLE, oob) {
                Ok(n) => break assert_eq!(n, 1),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("urgent byte not sent: {e}"),
            }
        }
        client_far.write_all(&tail).await.unwrap();
        if !fin_right_behind {
            // Nothing more is sent until every byte is through.
            all_in.await.unwrap();
        }
        client_far.shutdown().await.unwrap();
    };
    let receive = async {
        let mut got = vec![0u8; want.len()];
        upstream_far.read_exact(&mut got).await.unwrap();
        let _ = got_all.send(());
        let mut rest = Vec::new();
        upstream_far.read_to_end(&mut rest).await.unwrap();
        upstream_far.shutdown().await.unwrap();
        got.extend(rest);
        got
    };
    // A stalled direction would wait for the idle timeout: fail instead of waiting.
    let all = async { tokio::join!(relay, send, receive) };
    let (stats, (), got) = tokio::time::timeout(Duration::from_secs(30), all)
        .await
        .expect("the tunnel stalled at the urgent byte");
    assert!(stats.spliced > 0, "the bulk was not spliced: {stats:?}");
    assert_eq!(
        got.len(),
        want.len(),
        "FIN right behind: {fin_right_behind}"
    );
    assert!(got == want, "the upstream got other bytes");
}

/// A few small messages each way never leave user space: no pipe for a chat.
#[tokio::test]
async fn small_exchanges_between_sockets_are_not_spliced() {
    let (client, mut client_far) = socket_pair().await;
    let (upstream, mut upstream_far) = socket_pair().await;
    let counters = Bytes2::default();
    let limits = TunnelLimits {
        idle: Duration::from_secs(60),
        lifetime: None,
    };
    let relay = tunnel(client, upstream, limits, &counters);
    let talk = async {
        let mut buf = [0u8; 5];
        for _ in 0..20 {
            client_far.write_all(b"ping!").await.unwrap();
            upstream_far.read_exact(&mut buf).await.unwrap();
            upstream_far.write_all(b"pong!").await.unwrap();
            client_far.read_exact(&mut buf).await.unwrap();
        }
        client_far.shutdown().await.unwrap();
        upstream_far.shutdown().await.unwrap();
    };
    let (stats, ()) = tokio::join!(relay, talk);
    assert_eq!((stats.up, stats.down, stats.spliced), (100, 100, 0));
}

/// Write `data` and shut down, while reading everything the other end sends until EOF.
async fn send_and_read_all<S>(end: &mut S, data: &[u8]) -> Vec<u8>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut r, mut w) = tokio::io::split(end);
    let write = async {
        w.write_all(data).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let mut got = Vec::new();
    let read = r.read_to_end(&mut got);
    let (_, n) = tokio::join!(write, read);
    n.unwrap();
    got
}

/// The idle deadline is measured from the last byte, not from the start.
#[tokio::test(start_paused = true)]
async fn the_idle_timeout_counts_from_the_last_byte() {
    let (client, mut client_far) = duplex(1024);
    let (upstream, mut upstream_far) = duplex(1024);
    let counters = Bytes2::default();
    let limits = TunnelLimits {
        idle: Duration::from_secs(60),
        lifetime: None,
    };
    let start = Instant::now();
    let relay = tunnel(client, upstream, limits, &counters);
    let talk = async {
        tokio::time::sleep(Duration::from_secs(50)).await;
        client_far.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        upstream_far.read_exact(&mut buf).await.unwrap();
        std::future::pending::<()>().await;
    };
    let stats = tokio::select! {
        s = relay => s,
        _ = talk => unreachable!(),
    };
    assert!(stats.idle_timeout, "{stats:?}");
    assert_eq!(start.elapsed(), Duration::from_secs(110));
    assert_eq!(stats.up, 5);
}

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
