//! The idle set: its caps, expiry, closed connections and the key (address and server name).

use super::*;
use crate::upstream::watch::Watched;

/// A live HTTP/1.1 client connection over an in-memory pipe (the far end kept open).
pub(in crate::upstream) async fn conn(
    server_name: Option<&str>,
) -> (UpstreamConn, tokio::io::DuplexStream) {
    let (near, far) = tokio::io::duplex(1024);
    let (io, watch) = Watched::new(near, Duration::from_secs(60));
    (
        UpstreamConn::new(Box::new(io), server_name.map(Arc::from), watch),
        far,
    )
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

fn capped(max_open: usize) -> Arc<IdleConns> {
    let idle = IdleConns::new();
    let mut l = limits(256, Duration::from_secs(90));
    l.upstream_max_connections = max_open;
    idle.configure(&l);
    idle
}

fn vetted(port: u16) -> Vec<VettedAddr> {
    vec![VettedAddr::for_test(addr(port))]
}

async fn slot(idle: &Arc<IdleConns>, port: u16) -> Option<Slot> {
    match idle
        .reserve(&vetted(port), None, Duration::from_secs(5), "t")
        .await
    {
        Ok(Reserved::Dial(s)) => s,
        Ok(Reserved::Idle(..)) => panic!("an idle connection, expected room to dial"),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test(start_paused = true)]
async fn past_the_connection_limit_a_request_waits_for_a_slot_to_free() {
    let idle = capped(2);
    let a = slot(&idle, 1).await.expect("a slot");
    let _b = slot(&idle, 1).await.expect("a slot");
    assert_eq!(idle.open(addr(1), None), 2);
    // Another address has its own limit.
    let _other = slot(&idle, 2).await.expect("a slot");

    let idle2 = idle.clone();
    let third = tokio::spawn(async move { slot(&idle2, 1).await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!third.is_finished(), "the third waits while two are open");
    drop(a);
    let third = third.await.ok().flatten();
    assert!(third.is_some(), "it dials once one closed");
    assert_eq!(idle.open(addr(1), None), 2);
}

#[tokio::test(start_paused = true)]
async fn a_waiting_request_takes_the_connection_checked_in_first() {
    let idle = capped(1);
    let s = slot(&idle, 1).await;
    let (mut c, _far) = conn(None).await;
    c.hold(s);
    let idle2 = idle.clone();
    let waiter = tokio::spawn(async move {
        matches!(
            idle2
                .reserve(&vetted(1), None, Duration::from_secs(5), "t")
                .await,
            Ok(Reserved::Idle(..))
        )
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!waiter.is_finished());
    idle.checkin(addr(1), c);
    assert!(waiter.await.unwrap_or(false), "handed the idle connection");
}

#[tokio::test(start_paused = true)]
async fn a_request_that_waits_past_the_connect_timeout_fails_and_leaves_no_trace() {
    let idle = capped(1);
    let s = slot(&idle, 1).await;
    let r = idle
        .reserve(&vetted(1), None, Duration::from_secs(5), "app:80")
        .await;
    assert!(
        matches!(r, Err(ProxyError::ConnectTimeout(ref t)) if t == "app:80"),
        "{:?}",
        r.err()
    );
    drop(s);
    assert_eq!(idle.open(addr(1), None), 0);
    let m = idle.open.lock().map(|m| m.len()).unwrap_or(usize::MAX);
    assert_eq!(m, 0, "the key is gone once nothing is open or waiting");
}

#[tokio::test(start_paused = true)]
async fn a_limit_of_zero_never_waits_or_counts() {
    let idle = capped(0);
    for _ in 0..3 {
        assert!(slot(&idle, 1).await.is_none());
    }
    assert_eq!(idle.open(addr(1), None), 0);
}

#[tokio::test(start_paused = true)]
async fn a_connection_evicted_or_expired_gives_its_slot_back() {
    let idle = IdleConns::new();
    let mut l = limits(1, Duration::from_secs(90));
    l.upstream_max_connections = 4;
    idle.configure(&l);
    let mut far = Vec::new();
    let mut conns = Vec::new();
    for _ in 0..2 {
        let s = slot(&idle, 1).await;
        let (mut c, f) = conn(None).await;
        far.push(f);
        c.hold(s);
        conns.push(c);
    }
    assert_eq!(idle.open(addr(1), None), 2);
    // The second checkin evicts the first while the idle set is locked: its slot goes back
    // all the same.
    for c in conns {
        idle.checkin(addr(1), c);
    }
    assert_eq!(idle.len(), 1);
    assert_eq!(idle.open(addr(1), None), 1);
    tokio::time::sleep(Duration::from_secs(91)).await;
    assert_eq!(idle.len(), 0, "expired");
    assert_eq!(idle.open(addr(1), None), 0);
}

#[tokio::test(start_paused = true)]
async fn a_waiter_is_handed_the_connection_checked_in() {
    let idle = capped(1);
    let s = slot(&idle, 1).await;
    let (mut c, _far) = conn(None).await;
    c.hold(s);
    let idle2 = idle.clone();
    let waiter = tokio::spawn(async move {
        match idle2
            .reserve(&vetted(1), None, Duration::from_secs(5), "t")
            .await
        {
            Ok(Reserved::Idle(mut c, _)) => !c.is_closed(),
            _ => false,
        }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    idle.checkin(addr(1), c);
    assert!(waiter.await.unwrap_or(false));
}
