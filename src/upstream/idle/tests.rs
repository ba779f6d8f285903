//! The idle set: its caps, expiry, closed connections and the key (address and server name).

use super::*;
use crate::upstream::watch::Watched;

/// A live HTTP/1.1 client connection over an in-memory pipe (the far end kept open).
pub(in crate::upstream) async fn conn(
    server_name: Option<&str>,
) -> (UpstreamConn, tokio::io::DuplexStream) {
    let (near, far) = tokio::io::duplex(1024);
    let (io, watch) = Watched::new(near, Duration::from_secs(60));
    let c = UpstreamConn::handshake(io, server_name.map(Arc::from), watch)
        .await
        .expect("handshake over a pipe");
    // Ready once its connection task has run (as any connection is by the time its
    // response is finished).
    while !c.is_ready() {
        tokio::task::yield_now().await;
    }
    (c, far)
}

fn limits(max: usize, timeout: Duration) -> Limits {
    let mut l = crate::config::Config::example()
        .expect("the example configuration")
        .limits;
    l.upstream_idle_max = max;
    l.upstream_idle_timeout = timeout;
    l
}

pub(in crate::upstream) fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 1], port))
}

#[tokio::test(start_paused = true)]
async fn the_idle_set_is_capped_in_all_and_the_longest_idle_goes_first() {
    let idle = IdleConns::new();
    idle.configure(&limits(2, Duration::from_secs(90)));
    let mut far = Vec::new();
    for port in [1, 2, 3] {
        let (c, f) = conn(None).await;
        far.push(f);
        idle.checkin(addr(port), c);
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    assert_eq!(idle.len(), 2, "capped in all, across keys");
    assert_eq!(idle.keys(), 2, "the evicted connection's key is gone");
    assert!(idle.take(addr(1), None).is_none(), "the longest idle went");
    assert!(idle.take(addr(2), None).is_some());
    assert!(idle.take(addr(3), None).is_some());
    assert_eq!((idle.len(), idle.keys()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_cap_of_zero_keeps_nothing() {
    let idle = IdleConns::new();
    idle.configure(&limits(0, Duration::from_secs(90)));
    let (c, _far) = conn(None).await;
    idle.checkin(addr(1), c);
    assert_eq!((idle.len(), idle.keys()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn idle_connections_expire_and_their_keys_are_removed() {
    let idle = IdleConns::new();
    idle.configure(&limits(256, Duration::from_secs(90)));
    let (c1, _f1) = conn(None).await;
    idle.checkin(addr(1), c1);
    tokio::time::advance(Duration::from_secs(60)).await;
    let (c2, _f2) = conn(Some("a.test")).await;
    idle.checkin(addr(2), c2);
    assert_eq!((idle.len(), idle.keys()), (2, 2));

    // 91 s after the first checkin: the reaper has closed the first, not the second.
    tokio::time::sleep(Duration::from_secs(31)).await;
    assert_eq!((idle.len(), idle.keys()), (1, 1));
    assert!(idle.take(addr(1), None).is_none());

    // And the second 90 s after its own checkin, with nobody asking for it.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!((idle.len(), idle.keys()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn an_expired_connection_is_never_handed_out() {
    let idle = IdleConns::new();
    idle.configure(&limits(256, Duration::from_secs(90)));
    // No reaper: this is about checkout's own check.
    idle.reaper.store(true, Ordering::Release);
    let (c, _far) = conn(None).await;
    idle.checkin(addr(1), c);
    tokio::time::advance(Duration::from_secs(91)).await;
    assert!(idle.take(addr(1), None).is_none());
    assert_eq!((idle.len(), idle.keys()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn checking_out_the_last_connection_of_a_key_removes_the_key() {
    let idle = IdleConns::new();
    let (c, _far) = conn(None).await;
    idle.checkin(addr(1), c);
    assert_eq!(idle.keys(), 1);
    assert!(idle.take(addr(1), None).is_some());
    assert_eq!((idle.len(), idle.keys()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_closed_connection_is_dropped_not_kept() {
    let idle = IdleConns::new();
    let (c, far) = conn(None).await;
    drop(far);
    // Let the connection task see the pipe close.
    while !c.is_closed() {
        tokio::task::yield_now().await;
    }
    idle.checkin(addr(1), c);
    assert_eq!((idle.len(), idle.keys()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn reuse_is_keyed_by_address_and_server_name() {
    let idle = IdleConns::new();
    let (a, _fa) = conn(Some("a.test")).await;
    let (plain, _fp) = conn(None).await;
    idle.checkin(addr(443), a);
    idle.checkin(addr(443), plain);
    assert_eq!(idle.keys(), 2, "one address, two identities");
    assert!(
        idle.take(addr(443), Some("b.test")).is_none(),
        "another name on the same address never takes a.test's connection"
    );
    assert!(idle.take(addr(8443), Some("a.test")).is_none());
    let got = idle.take(addr(443), Some("a.test")).expect("a.test's own");
    assert_eq!(got.server_name.as_deref(), Some("a.test"));
    let got = idle.take(addr(443), None).expect("the plain one");
    assert_eq!(got.server_name, None);
    assert_eq!((idle.len(), idle.keys()), (0, 0));
}
