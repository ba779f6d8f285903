//! The upstream HTTP/1.1 client against a scripted origin on an in-memory pipe: request
//! framing, response framing (length, chunked, close, none), interim responses, early
//! answers, stale connections and when a connection is reused.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::body::Frame;

use super::*;
use crate::http::BodyError;
use crate::policy::VettedAddr;
use crate::upstream::idle::IdleConns;
use crate::upstream::watch::Watched;

fn addr() -> VettedAddr {
    VettedAddr::for_test(SocketAddr::from(([192, 0, 2, 1], 80)))
}

/// A connection whose far end is the returned pipe.
fn pipe() -> (UpstreamConn, DuplexStream) {
    let (near, far) = tokio::io::duplex(256 * 1024);
    let (io, watch) = Watched::new(near, Duration::from_secs(60));
    (UpstreamConn::new(Box::new(io), None, watch), far)
}

fn get(path: &str) -> Request<ProxyBody> {
    Request::get(path)
        .header("host", "origin.test")
        .body(Empty::<Bytes>::new().map_err(crate::http::never).boxed())
        .expect("request")
}

fn post(body: ProxyBody) -> Request<ProxyBody> {
    Request::post("/up")
        .header("host", "origin.test")
        .body(body)
        .expect("request")
}

/// Read one request head from the far end (up to its blank line).
async fn read_head(far: &mut DuplexStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        far.read_exact(&mut b).await.expect("request byte");
        head.push(b[0]);
    }
    String::from_utf8(head).expect("ASCII head")
}

/// Send `req`, with the far end answering `answer` once it has the head; the response's
/// status, body and whether the connection came back to `idle`.
async fn exchange(req: Request<ProxyBody>, answer: &'static [u8]) -> (u16, Bytes, String, bool) {
    let (conn, mut far) = pipe();
    let origin = tokio::spawn(async move {
        let head = read_head(&mut far).await;
        far.write_all(answer).await.expect("answer");
        (head, far)
    });
    let resp = conn.send(req).await.expect("a response");
    let idle = IdleConns::new();
    let (parts, mut body) = resp.into_parts();
    body.return_to(idle.clone(), addr());
    let bytes = body.collect().await.expect("the whole body").to_bytes();
    let (head, _far) = origin.await.expect("origin");
    (parts.status.as_u16(), bytes, head, idle.len() == 1)
}

#[tokio::test]
async fn a_get_goes_up_without_a_length_and_its_sized_answer_reuses_the_connection() {
    let (status, body, head, reused) = exchange(
        get("/a?b=c"),
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-a: 1\r\n\r\nhello",
    )
    .await;
    assert_eq!(head, "GET /a?b=c HTTP/1.1\r\nhost: origin.test\r\n\r\n");
    assert_eq!((status, &body[..], reused), (200, &b"hello"[..], true));
}

#[tokio::test]
async fn a_chunked_answer_with_extensions_and_trailers_is_decoded_and_reuses_the_connection() {
    let (status, body, _, reused) = exchange(
        get("/"),
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n1\r\n!\r\n0\r\nx-t: 1\r\n\r\n",
    )
    .await;
    assert_eq!((status, &body[..], reused), (200, &b"hello!"[..], true));
}

#[tokio::test]
async fn an_answer_dribbled_a_byte_at_a_time_is_read_whole() {
    let (conn, mut far) = pipe();
    let answer: &[u8] =
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\n\r\na\r\n0123456789\r\n0\r\n\r\n";
    let origin = tokio::spawn(async move {
        read_head(&mut far).await;
        for b in answer {
            far.write_all(&[*b]).await.expect("byte");
            tokio::task::yield_now().await;
        }
        far
    });
    let resp = conn.send(get("/")).await.expect("a response");
    assert_eq!(resp.status(), 201, "the interim 100 is skipped");
    let idle = IdleConns::new();
    let (_, mut body) = resp.into_parts();
    body.return_to(idle.clone(), addr());
    let bytes = body.collect().await.expect("body").to_bytes();
    assert_eq!(&bytes[..], b"0123456789");
    assert_eq!(idle.len(), 1);
    drop(origin.await);
}

#[tokio::test]
async fn an_answer_delimited_by_the_close_is_read_to_it_and_the_connection_not_kept() {
    let (conn, mut far) = pipe();
    let origin = tokio::spawn(async move {
        read_head(&mut far).await;
        far.write_all(b"HTTP/1.1 200 OK\r\n\r\nuntil the end")
            .await
            .expect("answer");
    });
    let resp = conn.send(get("/")).await.expect("a response");
    let idle = IdleConns::new();
    let (_, mut body) = resp.into_parts();
    body.return_to(idle.clone(), addr());
    origin.await.expect("origin closes");
    let bytes = body.collect().await.expect("body").to_bytes();
    assert_eq!(&bytes[..], b"until the end");
    assert_eq!(idle.len(), 0);
}

#[tokio::test]
async fn answers_without_a_body_end_at_their_head() {
    let head = Request::head("/")
        .body(Empty::<Bytes>::new().map_err(crate::http::never).boxed())
        .expect("request");
    let (s, body, _, reused) =
        exchange(head, b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n").await;
    assert_eq!((s, body.len(), reused), (200, 0, true), "HEAD");
    for answer in [
        &b"HTTP/1.1 204 No Content\r\n\r\n"[..],
        b"HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
    ] {
        let (conn, mut far) = pipe();
        let origin = tokio::spawn(async move {
            read_head(&mut far).await;
            far.write_all(answer).await.expect("answer");
            far
        });
        let resp = conn.send(get("/")).await.expect("a response");
        assert!(resp.body().is_end_stream());
        let idle = IdleConns::new();
        let (_, mut body) = resp.into_parts();
        // Back at once: a server may never poll a body it knows is empty.
        body.return_to(idle.clone(), addr());
        assert_eq!(idle.len(), 1, "{}", String::from_utf8_lossy(answer));
        drop(origin.await);
    }
}

#[tokio::test]
async fn connection_close_and_http_1_0_answers_are_not_reused() {
    for answer in [
        &b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"[..],
        b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok",
        // Transfer-Encoding and Content-Length both: the coding wins, the connection goes.
        b"HTTP/1.1 200 OK\r\ncontent-length: 99\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        // More than the length said.
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokAND MORE",
    ] {
        let (s, body, _, reused) = exchange(get("/"), answer).await;
        assert_eq!((s, &body[..]), (200, &b"ok"[..]));
        assert!(!reused, "{}", String::from_utf8_lossy(answer));
    }
    let (_, _, _, reused) = exchange(
        get("/"),
        b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nok",
    )
    .await;
    assert!(reused, "HTTP/1.0 that asks to keep alive");
}

#[tokio::test]
async fn a_malformed_or_oversized_head_is_an_error() {
    for (answer, want) in [
        (
            &b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok"[..],
            "Content-Length",
        ),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            "Content-Length",
        ),
        (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", "101"),
        (b"NOT HTTP\r\n\r\n", "invalid response"),
    ] {
        let (conn, mut far) = pipe();
        let origin = tokio::spawn(async move {
            read_head(&mut far).await;
            far.write_all(answer).await.expect("answer");
            far
        });
        let e = conn.send(get("/")).await.expect_err("refused");
        assert!(
            e.error.to_string().contains(want),
            "{}: {}",
            String::from_utf8_lossy(answer),
            e.error
        );
        assert!(e.started && e.unsent.is_none());
        drop(origin.await);
    }
    let (conn, mut far) = pipe();
    let origin = tokio::spawn(async move {
        read_head(&mut far).await;
        far.write_all(b"HTTP/1.1 200 OK\r\n").await.expect("line");
        let filler = format!("x-fill: {}\r\n", "a".repeat(1000));
        for _ in 0..70 {
            if far.write_all(filler.as_bytes()).await.is_err() {
                break;
            }
        }
        far
    });
    let e = conn.send(get("/")).await.expect_err("too large");
    assert!(matches!(e.error, Error::HeadTooLarge), "{}", e.error);
    drop(origin.await);
}

#[tokio::test]
async fn a_body_cut_short_ends_in_an_error_and_the_connection_is_not_kept() {
    let (conn, mut far) = pipe();
    let origin = tokio::spawn(async move {
        read_head(&mut far).await;
        far.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort")
            .await
            .expect("answer");
    });
    let resp = conn.send(get("/")).await.expect("a response");
    let idle = IdleConns::new();
    let (_, mut body) = resp.into_parts();
    body.return_to(idle.clone(), addr());
    origin.await.expect("origin closes");
    let e = body.collect().await.expect_err("cut short");
    assert!(
        e.to_string().contains("before the response body ended"),
        "{e}"
    );
    assert_eq!(idle.len(), 0);
}

#[tokio::test]
async fn a_sized_body_goes_up_with_its_length_and_an_unsized_one_chunked() {
    let (conn, mut far) = pipe();
    let origin = tokio::spawn(async move {
        let head = read_head(&mut far).await;
        let mut body = [0u8; 6];
        far.read_exact(&mut body).await.expect("body");
        far.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .await
            .expect("answer");
        (head, body)
    });
    let full = Full::new(Bytes::from_static(b"abcdef"))
        .map_err(crate::http::never)
        .boxed();
    conn.send(post(full)).await.expect("a response");
    let (head, body) = origin.await.expect("origin");
    assert_eq!(
        head,
        "POST /up HTTP/1.1\r\nhost: origin.test\r\ncontent-length: 6\r\n\r\n"
    );
    assert_eq!(&body, b"abcdef");

    let (conn, mut far) = pipe();
    let origin = tokio::spawn(async move {
        let head = read_head(&mut far).await;
        let want = b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let mut body = vec![0u8; want.len()];
        far.read_exact(&mut body).await.expect("body");
        far.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .await
            .expect("answer");
        (head, body, want, far)
    });
    let chunks = Unsized(VecDeque::from([
        Bytes::from_static(b"abc"),
        Bytes::from_static(b"de"),
    ]));
    let resp = conn.send(post(chunks.boxed())).await.expect("a response");
    let idle = IdleConns::new();
    let (_, mut body) = resp.into_parts();
    body.return_to(idle.clone(), addr());
    let (head, body, want, _far) = origin.await.expect("origin");
    assert_eq!(
        head,
        "POST /up HTTP/1.1\r\nhost: origin.test\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    assert_eq!(&body[..], &want[..]);
    assert_eq!(idle.len(), 1, "sent whole and answered: reused");

    // An empty POST still says its length.
    let empty = Empty::<Bytes>::new().map_err(crate::http::never).boxed();
    let (_, _, head, _) =
        exchange(post(empty), b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
    assert_eq!(
        head,
        "POST /up HTTP/1.1\r\nhost: origin.test\r\ncontent-length: 0\r\n\r\n"
    );
}

#[tokio::test]
async fn an_answer_before_the_whole_request_body_is_relayed_and_the_connection_not_kept() {
    let (conn, mut far) = pipe();
    let origin = tokio::spawn(async move {
        read_head(&mut far).await;
        far.write_all(b"HTTP/1.1 413 Content Too Large\r\ncontent-length: 3\r\n\r\nbig")
            .await
            .expect("answer");
        far
    });
    // A body that never ends.
    let body = Stalled.boxed();
    let req = Request::post("/up")
        .header("content-length", "1000000")
        .body(body)
        .expect("request");
    let resp = conn.send(req).await.expect("the early answer");
    assert_eq!(resp.status(), 413);
    let idle = IdleConns::new();
    let (_, mut body) = resp.into_parts();
    body.return_to(idle.clone(), addr());
    let bytes = body.collect().await.expect("body").to_bytes();
    assert_eq!(&bytes[..], b"big");
    assert_eq!(idle.len(), 0, "the request was not sent whole");
    drop(origin.await);
}

#[tokio::test]
async fn a_connection_closed_before_the_request_hands_the_request_back() {
    let (conn, far) = pipe();
    drop(far);
    let e = conn.send(get("/again")).await.expect_err("closed");
    assert!(!e.started);
    let unsent = e
        .unsent
        .expect("nothing was written: the request comes back");
    assert_eq!(unsent.uri(), "/again");
}

#[tokio::test]
async fn a_connection_closed_after_the_request_is_a_stale_one() {
    let (conn, mut far) = pipe();
    let origin = tokio::spawn(async move {
        read_head(&mut far).await;
    });
    let e = conn.send(get("/")).await.expect_err("closed");
    assert!(matches!(e.error, Error::Closed), "{}", e.error);
    assert!(!e.started && e.unsent.is_none());
    drop(origin.await);
}

#[tokio::test]
async fn an_idle_connection_is_closed_once_its_far_end_closes_or_speaks_out_of_turn() {
    let (mut c, mut far) = pipe();
    assert!(!c.is_closed(), "open and quiet");
    far.write_all(b"x").await.expect("a stray byte");
    assert!(c.is_closed(), "bytes nobody asked for");
    let (mut c, far) = pipe();
    drop(far);
    assert!(c.is_closed(), "closed");
}

/// A body of frames that does not know its size.
struct Unsized(VecDeque<Bytes>);

impl Body for Unsized {
    type Data = Bytes;
    type Error = BodyError;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }
}

/// A body whose bytes never come.
struct Stalled;

impl Body for Stalled {
    type Data = Bytes;
    type Error = BodyError;
    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        Poll::Pending
    }
}

#[tokio::test]
async fn the_response_comes_without_its_hop_by_hop_fields() {
    let (conn, mut far) = pipe();
    let origin = tokio::spawn(async move {
        read_head(&mut far).await;
        far.write_all(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\nX-Hop: 1\r\nTransfer-Encoding: chunked\r\nUpgrade: h2c\r\nX-End: 2\r\nServer: origin\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        )
        .await
        .expect("answer");
        far
    });
    let resp = conn.send(get("/")).await.expect("a response");
    let names: Vec<&str> = resp.headers().keys().map(|k| k.as_str()).collect();
    assert_eq!(names, ["x-end", "server"]);
    let idle = IdleConns::new();
    let (_, mut body) = resp.into_parts();
    body.return_to(idle.clone(), addr());
    let bytes = body.collect().await.expect("body").to_bytes();
    assert_eq!(&bytes[..], b"ok", "framed by the coding it no longer shows");
    assert_eq!(idle.len(), 1);
    drop(origin.await);
}

/// The response's `content-length` fields and its body.
async fn length_and_body(answer: &'static [u8]) -> (Vec<String>, Result<Bytes, String>) {
    let (conn, mut far) = pipe();
    let origin = tokio::spawn(async move {
        read_head(&mut far).await;
        far.write_all(answer).await.expect("answer");
        far
    });
    let resp = conn.send(get("/")).await.expect("a response");
    let lengths = resp
        .headers()
        .get_all(header::CONTENT_LENGTH)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    let body = resp.into_body().collect().await;
    drop(origin.await);
    (
        lengths,
        body.map(|c| c.to_bytes()).map_err(|e| e.to_string()),
    )
}

#[tokio::test]
async fn the_length_forwarded_is_the_one_the_body_was_read_by() {
    // Named by Connection: still the framing, and forwarded once.
    let (l, b) = length_and_body(
        b"HTTP/1.1 200 OK\r\nconnection: content-length\r\ncontent-length: 5\r\n\r\nhello",
    )
    .await;
    assert_eq!(
        (l, b),
        (vec!["5".to_string()], Ok(Bytes::from_static(b"hello")))
    );
    // Repeats of one length: one field.
    let (l, b) = length_and_body(
        b"HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\ncontent-length: 5\r\n\r\nhello",
    )
    .await;
    assert_eq!(
        (l, b),
        (vec!["5".to_string()], Ok(Bytes::from_static(b"hello")))
    );
    // A transfer coding frames the body: the received length is not forwarded (RFC 9112 §6.3).
    let (l, b) = length_and_body(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!((l, b), (vec![], Ok(Bytes::from_static(b"hello"))));
}

#[tokio::test]
async fn a_chunk_line_or_trailer_another_parser_would_read_otherwise_is_refused() {
    for answer in [
        &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n 5\r\nhello\r\n0\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;a\nb\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5x\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nno colon\r\n\r\n",
    ] {
        let (_, b) = length_and_body(answer).await;
        let e = b.expect_err("refused");
        assert!(e.contains("chunked body"), "{e}");
    }
    let (_, b) = length_and_body(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5 ;ext=\"v\"\r\nhello\r\n0\r\nx-t: 1\r\n\r\n",
    )
    .await;
    assert_eq!(
        b,
        Ok(Bytes::from_static(b"hello")),
        "whitespace before an extension"
    );
}

#[tokio::test]
async fn an_answer_left_by_an_upstream_that_closed_on_the_request_body_is_relayed() {
    let (conn, mut far) = pipe();
    let origin = tokio::spawn(async move {
        read_head(&mut far).await;
        far.write_all(
            b"HTTP/1.1 413 Content Too Large\r\nconnection: close\r\ncontent-length: 3\r\n\r\nbig",
        )
        .await
        .expect("answer");
    });
    // More than the pipe holds: writing it fails once the far end is gone.
    let body = Full::new(Bytes::from(vec![b'x'; 4 << 20]))
        .map_err(crate::http::never)
        .boxed();
    let resp = conn
        .send(post(body))
        .await
        .expect("the answer, not the write error");
    origin.await.expect("the origin answered and closed");
    assert_eq!(resp.status(), 413);
    let idle = IdleConns::new();
    let (_, mut body) = resp.into_parts();
    body.return_to(idle.clone(), addr());
    let bytes = body.collect().await.expect("body").to_bytes();
    assert_eq!(&bytes[..], b"big");
    assert_eq!(idle.len(), 0);
}

#[tokio::test]
async fn a_transfer_coding_in_http_1_0_closes_the_connection_after() {
    let (_, body, _, reused) = exchange(
        get("/"),
        b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!((&body[..], reused), (&b"ok"[..], false));
}
