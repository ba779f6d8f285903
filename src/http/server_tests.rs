use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, SizeHint};
use hyper::{Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_util::sync::CancellationToken;

use super::*;

fn simple(buf: &[u8]) -> (Request<ProxyBody>, usize) {
    match parse(buf, false) {
        Parsed::Simple(r, n) => (r, n),
        Parsed::Partial => panic!("partial"),
        Parsed::Handover => panic!("handover"),
    }
}

fn hands_over(buf: &[u8]) -> bool {
    matches!(parse(buf, false), Parsed::Handover)
}

#[test]
fn a_simple_get_is_parsed_with_its_headers() {
    let raw =
        b"GET /a/b?c=d HTTP/1.1\r\nHost: example.test\r\nX-Two: 1\r\nx-two: 2\r\n\r\nGET /next";
    let (req, n) = simple(raw);
    assert_eq!(n, raw.len() - b"GET /next".len());
    assert_eq!(req.method(), Method::GET);
    assert_eq!(req.uri(), "/a/b?c=d");
    assert_eq!(req.version(), Version::HTTP_11);
    assert_eq!(req.headers()["host"], "example.test");
    let two: Vec<_> = req.headers().get_all("x-two").iter().collect();
    assert_eq!(two, ["1", "2"]);
    assert!(req.body().is_end_stream());
}

#[test]
fn absolute_form_and_keep_alive_are_simple() {
    let (req, _) = simple(
        b"GET http://example.test:8080/x HTTP/1.1\r\nHost: example.test\r\nConnection: Keep-Alive\r\n\r\n",
    );
    assert_eq!(
        req.uri().authority().map(|a| a.as_str()),
        Some("example.test:8080")
    );
}

#[test]
fn an_unfinished_head_is_partial() {
    assert!(matches!(
        parse(b"GET / HTTP/1.1\r\nHost: a\r\n", false),
        Parsed::Partial
    ));
    assert!(matches!(parse(b"GE", false), Parsed::Partial));
}

#[test]
fn requests_hyper_must_serve_are_handed_over() {
    for raw in [
        &b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"[..],
        b"GET / HTTP/1.1\r\nHost: a\r\ncontent-length: 0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
        b"GET / HTTP/1.0\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00",
    ] {
        assert!(hands_over(raw), "{:?}", String::from_utf8_lossy(raw));
    }
}

#[test]
fn more_headers_than_hyper_takes_are_handed_over() {
    let mut raw = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..=MAX_HEADERS {
        raw.extend_from_slice(format!("x-{i}: v\r\n").as_bytes());
    }
    raw.extend_from_slice(b"\r\n");
    assert!(hands_over(&raw));
}

fn head_of(resp: Response<ProxyBody>, closing: bool) -> (String, Option<(Framing, bool)>) {
    let (parts, body) = resp.into_parts();
    let mut dst = Vec::new();
    let f = encode_head(&parts, body.size_hint().exact(), closing, false, &mut dst);
    (String::from_utf8(dst).unwrap_or_default(), f)
}

fn full(s: &'static str) -> ProxyBody {
    Full::new(Bytes::from_static(s.as_bytes()))
        .map_err(never)
        .boxed()
}

/// A body that does not know its size.
struct Unsized(Vec<Bytes>);

impl Body for Unsized {
    type Data = Bytes;
    type Error = crate::http::BodyError;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, crate::http::BodyError>>> {
        if self.0.is_empty() {
            return Poll::Ready(None);
        }
        Poll::Ready(Some(Ok(Frame::data(self.0.remove(0)))))
    }
    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[test]
fn a_known_size_becomes_content_length_and_a_date_is_added() {
    let (head, f) = head_of(Response::new(full("hello")), false);
    assert_eq!(f, Some((Framing::Length(5), false)));
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("\r\ncontent-length: 5\r\n"), "{head}");
    assert!(head.contains("\r\ndate: "), "{head}");
    assert!(head.ends_with("\r\n\r\n"));
}

#[test]
fn a_content_length_header_is_kept_and_a_conflict_refused() {
    let mut r = Response::new(full("abc"));
    r.headers_mut()
        .insert("content-length", HeaderValue::from_static("3"));
    r.headers_mut().insert(
        "date",
        HeaderValue::from_static("Thu, 03 Dec 2026 10:00:00 GMT"),
    );
    let (head, f) = head_of(r, false);
    assert_eq!(f, Some((Framing::Length(3), false)));
    assert_eq!(head.matches("content-length").count(), 1, "{head}");
    assert_eq!(head.matches("date").count(), 1, "{head}");

    let mut r = Response::new(full("abc"));
    r.headers_mut()
        .append("content-length", HeaderValue::from_static("3"));
    r.headers_mut()
        .append("content-length", HeaderValue::from_static("4"));
    assert_eq!(head_of(r, false).1, None);
    let mut r = Response::new(full("abc"));
    r.headers_mut()
        .append("content-length", HeaderValue::from_static("x"));
    assert_eq!(head_of(r, false).1, None);
}

#[test]
fn unknown_size_is_chunked_and_204_has_no_body() {
    let (head, f) = head_of(Response::new(Unsized(vec![]).boxed()), false);
    assert_eq!(f, Some((Framing::Chunked, false)));
    assert!(head.contains("transfer-encoding: chunked\r\n"), "{head}");

    let mut r = Response::new(full(""));
    *r.status_mut() = StatusCode::NO_CONTENT;
    let (head, f) = head_of(r, false);
    assert_eq!(f, Some((Framing::None, false)));
    assert!(head.starts_with("HTTP/1.1 204 No Content\r\n"), "{head}");
    assert!(!head.contains("content-length"), "{head}");
}

#[test]
fn closing_says_so_and_a_close_header_is_honoured() {
    let (head, f) = head_of(Response::new(full("x")), true);
    assert_eq!(f, Some((Framing::Length(1), true)));
    assert!(head.contains("connection: close\r\n"), "{head}");

    let mut r = Response::new(full("x"));
    r.headers_mut()
        .insert("connection", HeaderValue::from_static("close"));
    let (head, f) = head_of(r, false);
    assert_eq!(f, Some((Framing::Length(1), true)));
    assert_eq!(head.matches("connection").count(), 1, "{head}");
}

/// [`serve`] with its own stop tokens, shutdown already signalled when `shutting_down`.
async fn serve_for_test<H, F>(
    io: DuplexStream,
    max_head: usize,
    connect: bool,
    shutting_down: bool,
    handle: H,
) -> End<DuplexStream>
where
    H: FnMut(Request<ProxyBody>) -> F,
    F: Future<Output = Response<ProxyBody>>,
{
    let shutdown = CancellationToken::new();
    let hard = CancellationToken::new();
    if shutting_down {
        shutdown.cancel();
    }
    let stops = Stops {
        shutdown: &shutdown,
        hard: &hard,
    };
    serve(io, max_head, connect, stops, handle).await
}

/// Serve `io` with a handler that answers each request with its method and path (chunked
/// when the path starts with `/chunked`).
async fn run(io: DuplexStream, max_head: usize) -> End<DuplexStream> {
    serve_for_test(
        io,
        max_head,
        false,
        false,
        |req: Request<ProxyBody>| async move {
            let text = format!("{} {}", req.method(), req.uri());
            if req.uri().path().starts_with("/chunked") {
                Response::new(Unsized(vec![Bytes::from(text), Bytes::from_static(b"!")]).boxed())
            } else {
                Response::new(Full::new(Bytes::from(text)).map_err(never).boxed())
            }
        },
    )
    .await
}

async fn read_available(c: &mut DuplexStream, want: &str) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains(want) {
        let n = c.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_then_a_body_is_handed_over_whole() {
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    let post = b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello";
    let mut sent =
        b"GET /one HTTP/1.1\r\nHost: a\r\n\r\nGET /chunked HTTP/1.1\r\nHost: a\r\n\r\n".to_vec();
    sent.extend_from_slice(post);
    client.write_all(&sent).await.ok();
    let task = tokio::spawn(run(server, 8192));
    let got = read_available(&mut client, "0\r\n\r\n").await;
    let one = got.find("GET /one").unwrap_or(usize::MAX);
    let two = got.find("GET /chunked").unwrap_or(usize::MAX);
    assert!(one < two && two < usize::MAX, "{got}");
    assert!(got.contains("content-length: 8\r\n"), "{got}");
    assert!(
        got.contains("\r\n\r\nc\r\nGET /chunked\r\n1\r\n!\r\n0\r\n\r\n"),
        "{got}"
    );
    let Ok(End::Handover(mut rest)) = task.await else {
        panic!("not handed over");
    };
    let mut prefix = vec![0u8; post.len()];
    rest.read_exact(&mut prefix).await.ok();
    assert_eq!(prefix, post);
}

#[tokio::test]
async fn a_head_split_across_reads_is_served() {
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    let task = tokio::spawn(run(server, 8192));
    client.write_all(b"GET /sp").await.ok();
    tokio::task::yield_now().await;
    client.write_all(b"lit HTTP/1.1\r\nHo").await.ok();
    tokio::task::yield_now().await;
    client.write_all(b"st: a\r\n\r\n").await.ok();
    let got = read_available(&mut client, "GET /split").await;
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
    drop(client);
    assert!(matches!(task.await, Ok(End::Done)));
}

#[tokio::test]
async fn a_head_over_the_limit_is_handed_over_with_every_byte() {
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    let mut sent = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
    sent.extend(std::iter::repeat_n(b'a', 3000));
    client.write_all(&sent).await.ok();
    let Ok(End::Handover(mut rest)) = tokio::spawn(run(server, 1024)).await else {
        panic!("not handed over");
    };
    let mut prefix = vec![0u8; sent.len()];
    rest.read_exact(&mut prefix).await.ok();
    assert_eq!(prefix, sent);
    assert_eq!(rest.prefix.len(), 0, "the prefix is freed once read");
}

#[tokio::test]
async fn shutdown_closes_an_idle_connection() {
    let (_client, server) = tokio::io::duplex(1024);
    let end = serve_for_test(
        server,
        8192,
        false,
        true,
        |_req: Request<ProxyBody>| async { Response::new(full("")) },
    )
    .await;
    assert!(matches!(end, End::Done));
}

/// Sets its flag when dropped.
struct Dropped(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_client_that_leaves_while_its_answer_is_pending_ends_the_request() {
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let guard_flag = flag.clone();
    client
        .write_all(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .ok();
    let task = tokio::spawn(async move {
        serve_for_test(
            server,
            8192,
            false,
            false,
            move |_req: Request<ProxyBody>| {
                let guard = Dropped(guard_flag.clone());
                async move {
                    std::future::pending::<()>().await;
                    drop(guard);
                    Response::new(full(""))
                }
            },
        )
        .await
    });
    tokio::task::yield_now().await;
    drop(client);
    assert!(matches!(task.await, Ok(End::Done)));
    assert!(flag.load(std::sync::atomic::Ordering::SeqCst));
}

#[test]
fn connect_is_simple_on_a_forward_listener_and_its_2xx_has_no_framing() {
    let raw = b"CONNECT uk.test:443 HTTP/1.1\r\nHost: uk.test:443\r\n\r\n";
    let Parsed::Simple(req, n) = parse(raw, true) else {
        panic!("not simple");
    };
    assert_eq!(n, raw.len());
    assert_eq!(req.method(), Method::CONNECT);
    assert_eq!(
        req.uri().authority().map(|a| a.as_str()),
        Some("uk.test:443")
    );

    let (parts, body) = Response::new(full("")).into_parts();
    let mut dst = Vec::new();
    let f = encode_head(&parts, body.size_hint().exact(), false, true, &mut dst);
    assert_eq!(f, Some((Framing::None, false)));
    let head = String::from_utf8(dst).unwrap_or_default();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\ndate: "), "{head}");
    assert!(!head.contains("content-length"), "{head}");

    // A refusal is an ordinary response.
    let mut r = Response::new(full("no"));
    *r.status_mut() = StatusCode::FORBIDDEN;
    let (parts, body) = r.into_parts();
    let mut dst = Vec::new();
    let f = encode_head(&parts, body.size_hint().exact(), false, true, &mut dst);
    assert_eq!(f, Some((Framing::Length(2), false)));
}

/// Serve `io` as a forward listener whose handler refuses `CONNECT deny.test` and, for any
/// other CONNECT, echoes the first 5 bytes of the tunnel back.
async fn run_connect(io: DuplexStream) -> End<DuplexStream> {
    serve_for_test(
        io,
        8192,
        true,
        false,
        |mut req: Request<ProxyBody>| async move {
            let up = on_upgrade(&mut req);
            if req.uri().host() == Some("deny.test") {
                let mut r = Response::new(full("denied"));
                *r.status_mut() = StatusCode::FORBIDDEN;
                tokio::spawn(async move {
                    assert!(up.wait().await.is_err(), "no tunnel after a refusal");
                });
                return r;
            }
            tokio::spawn(async move {
                if let Ok(mut s) = up.wait().await {
                    let mut b = [0u8; 5];
                    if s.read_exact(&mut b).await.is_ok() {
                        s.write_all(&b).await.ok();
                    }
                }
            });
            Response::new(Empty::<Bytes>::new().map_err(never).boxed())
        },
    )
    .await
}

#[tokio::test]
async fn a_refused_connect_keeps_the_connection_and_an_allowed_one_becomes_the_tunnel() {
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    let task = tokio::spawn(run_connect(server));
    client
        .write_all(b"CONNECT deny.test:443 HTTP/1.1\r\nHost: deny.test:443\r\n\r\n")
        .await
        .ok();
    let got = read_available(&mut client, "denied").await;
    assert!(got.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{got}");
    // Bytes sent right behind the request reach the tunnel first.
    client
        .write_all(b"CONNECT uk.test:443 HTTP/1.1\r\nHost: uk.test:443\r\n\r\nEARLY")
        .await
        .ok();
    let got = read_available(&mut client, "EARLY").await;
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
    assert!(got.ends_with("\r\n\r\nEARLY"), "{got}");
    assert!(!got.contains("content-length"), "{got}");
    assert!(matches!(task.await, Ok(End::Done)));
}

/// A tunnel may move bytes on the socket itself only once the bytes read in front of it are
/// gone: until then the stream is not the socket.
#[tokio::test]
async fn a_rewound_stream_gives_its_socket_only_once_the_bytes_in_front_are_read() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (near, far) = tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
    let (_far, near) = (far.unwrap().0, near.unwrap());
    let mut io = Rewind::new(near, b"early".to_vec());
    assert!(io.tcp().is_none());
    let mut buf = [0u8; 3];
    io.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ear");
    assert!(io.tcp().is_none(), "two bytes are still in front");
    io.read_exact(&mut buf[..2]).await.unwrap();
    assert_eq!(&buf[..2], b"ly");
    assert!(io.tcp().is_some());
    assert!(
        Rewind::new(tokio::io::duplex(8).0, Vec::new())
            .tcp()
            .is_none()
    );
}
