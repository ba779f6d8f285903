//! Lent response bodies between real loopback sockets: what is spliced, where it stops, and
//! how the body ends (home, cut short, stalled).

use std::future::poll_fn;
use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper::body::Body;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::http::{ProxyBody, RawBody};
use crate::policy::VettedAddr;
use crate::upstream::h1::ResponseBody;
use crate::upstream::idle::{IdleConns, UpstreamConn};
use crate::upstream::splice::CHUNK;
use crate::upstream::watch::Watched;

/// A connected pair of loopback sockets.
async fn pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let near = TcpStream::connect(l.local_addr().expect("address"))
        .await
        .expect("connect");
    let (far, _) = l.accept().await.expect("accept");
    (near, far)
}

fn get() -> Request<ProxyBody> {
    Request::get("/big")
        .header("host", "origin.test")
        .body(
            Empty::<bytes::Bytes>::new()
                .map_err(crate::http::never)
                .boxed(),
        )
        .expect("request")
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 253) as u8).collect()
}

/// Read one request head from the origin's side.
async fn read_head(far: &mut TcpStream) {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        far.read_exact(&mut b).await.expect("request byte");
        head.push(b[0]);
    }
}

/// Send a GET over a plain upstream connection whose origin answers with `answer` (then
/// holds its socket open until the returned sender goes); the lent body, or `None`.
async fn lent_response(
    answer: Vec<u8>,
    idle_time: Duration,
) -> (
    ResponseBody,
    Option<RawBody>,
    Arc<Bytes2>,
    Arc<IdleConns>,
    tokio::sync::oneshot::Sender<()>,
) {
    let (near, mut far) = pair().await;
    let (io, watch) = Watched::new(near, idle_time);
    let conn = UpstreamConn::new(Box::new(io), None, watch);
    let (hold, held) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        read_head(&mut far).await;
        far.write_all(&answer).await.expect("answer");
        let _ = held.await;
    });
    let resp = conn.send(get()).await.expect("a response");
    let (_, mut body) = resp.into_parts();
    let idle = IdleConns::new();
    let addr = VettedAddr::for_test(SocketAddr::from(([192, 0, 2, 1], 80)));
    body.return_to(idle.clone(), addr);
    let bytes = Arc::new(Bytes2::default());
    let raw = body.lend(bytes.clone());
    (body, raw, bytes, idle, hold)
}

/// Move the lent body to a client socket until nothing more moves: the bytes moved, and
/// what the client received once the proxy's side closed.
async fn move_all(raw: &RawBody) -> (u64, Vec<u8>) {
    let (to, mut client) = pair().await;
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.expect("client reads");
        got
    });
    let mut moved = 0;
    loop {
        let n = poll_fn(|cx| {
            raw.0
                .lock()
                .expect("not poisoned")
                .poll_move(cx, &to, u64::MAX)
        })
        .await
        .expect("the client takes the bytes");
        if n == 0 {
            break;
        }
        moved += n;
    }
    drop(to);
    (moved, reader.await.expect("reader"))
}

fn answer(len: usize, body: &[u8]) -> Vec<u8> {
    let mut a = format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\n\r\n").into_bytes();
    a.extend_from_slice(body);
    a
}

#[tokio::test]
async fn a_large_sized_body_moves_whole_and_its_connection_goes_home() {
    let body_bytes = pattern(2 * 1024 * 1024 + 7);
    let (mut body, raw, bytes, idle, _hold) = lent_response(
        answer(body_bytes.len(), &body_bytes),
        Duration::from_secs(60),
    )
    .await;
    let raw = raw.expect("a large sized body on plain TCP is lent");
    let (moved, got) = move_all(&raw).await;
    assert_eq!(
        moved,
        body_bytes.len() as u64,
        "all of it moved, none by frames"
    );
    assert!(got == body_bytes, "every byte, in order");
    assert_eq!(bytes.down.load(Ordering::Relaxed), moved);
    assert!(body.is_end_stream());
    assert!(body.frame().await.is_none(), "the frames only end it");
    assert_eq!(idle.len(), 1, "the connection went back to its idle set");
}

#[tokio::test]
async fn a_move_stops_at_the_end_of_the_body_however_much_follows_it() {
    let body_bytes = pattern(300 * 1024);
    let mut a = answer(body_bytes.len(), &body_bytes);
    a.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nextra");
    let (mut body, raw, _bytes, idle, _hold) = lent_response(a, Duration::from_secs(60)).await;
    let (moved, got) = move_all(&raw.expect("lent")).await;
    assert_eq!(moved, body_bytes.len() as u64);
    assert!(got == body_bytes, "not a byte of what follows");
    assert!(body.frame().await.is_none());
    assert_eq!(idle.len(), 0, "bytes nobody asked for: not kept");
}

#[tokio::test]
async fn a_body_cut_short_ends_in_an_upstream_error_and_the_connection_is_not_kept() {
    let body_bytes = pattern(200 * 1024);
    let (mut body, raw, bytes, idle, hold) =
        lent_response(answer(400 * 1024, &body_bytes), Duration::from_secs(60)).await;
    drop(hold);
    let (moved, got) = move_all(&raw.expect("lent")).await;
    assert_eq!(moved, body_bytes.len() as u64, "what came was passed on");
    assert!(got == body_bytes);
    assert_eq!(bytes.down.load(Ordering::Relaxed), moved);
    assert!(!body.is_end_stream(), "the error is still to come");
    let e = body
        .frame()
        .await
        .expect("a frame")
        .expect_err("the body failed");
    assert!(
        e.to_string().contains("before the response body ended"),
        "{e}"
    );
    assert!(body.frame().await.is_none());
    assert_eq!(idle.len(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_stalled_body_fails_after_the_body_idle_time() {
    let body_bytes = pattern(100 * 1024);
    let (mut body, raw, _bytes, idle, _hold) =
        lent_response(answer(400 * 1024, &body_bytes), Duration::from_secs(30)).await;
    let t0 = tokio::time::Instant::now();
    let (moved, _) = move_all(&raw.expect("lent")).await;
    assert_eq!(moved, body_bytes.len() as u64);
    assert!(
        t0.elapsed() >= Duration::from_secs(30),
        "cut by the idle time"
    );
    let e = body
        .frame()
        .await
        .expect("a frame")
        .expect_err("the body failed");
    assert!(e.to_string().contains("idle timeout"), "{e}");
    assert_eq!(idle.len(), 0);
}

#[tokio::test]
async fn small_unsized_and_in_memory_bodies_are_not_lent() {
    let small = pattern(CHUNK - 1);
    let (_b, raw, ..) = lent_response(answer(small.len(), &small), Duration::from_secs(60)).await;
    assert!(raw.is_none(), "less than a pipe's worth");
    let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    let (_b, raw, ..) = lent_response(chunked, Duration::from_secs(60)).await;
    assert!(raw.is_none(), "not sized");

    let (near, mut far) = tokio::io::duplex(64 * 1024);
    let (io, watch) = Watched::new(near, Duration::from_secs(60));
    let conn = UpstreamConn::new(Box::new(io), None, watch);
    tokio::spawn(async move {
        let mut b = vec![0u8; 1024];
        let _ = far.read(&mut b).await;
        let _ = far
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\n\r\n")
            .await;
        let _ = far.read(&mut b).await;
    });
    let (_, mut body) = conn.send(get()).await.expect("a response").into_parts();
    assert!(
        body.lend(Arc::new(Bytes2::default())).is_none(),
        "no socket under it"
    );
}

#[tokio::test]
async fn a_lent_body_read_through_its_frames_is_whole_and_goes_home() {
    // A server that does not splice (TLS to the client, a connection hyper serves) reads the
    // lent body as any other.
    let body_bytes = pattern(700 * 1024 + 3);
    let (body, raw, bytes, idle, _hold) = lent_response(
        answer(body_bytes.len(), &body_bytes),
        Duration::from_secs(60),
    )
    .await;
    assert!(raw.is_some(), "lent");
    let got = body.collect().await.expect("the whole body").to_bytes();
    assert!(got[..] == body_bytes[..]);
    assert_eq!(
        bytes.down.load(Ordering::Relaxed),
        0,
        "frames are counted by the relay"
    );
    assert_eq!(idle.len(), 1);
}
