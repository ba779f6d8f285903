//! Shared test world for the proxy's end-to-end tests: a jurisdiction table and resolver for
//! made-up `.test` names on loopback addresses, fake origins, a connector that records every
//! dial and fails loudly on an address the test did not register, an in-memory audit log, and
//! an in-process proxy with raw and keep-alive clients.
//!
//! Everything is loopback and OS-picked ports; nothing touches the Internet or real DNS.
//!
//! Used by `mod support;` from test files; not every file uses every helper.
#![allow(dead_code)]

pub mod custom;
pub mod scripted;

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use residency_proxy::audit::{AuditRecord, AuditWriter};
use residency_proxy::destination::{BoxFuture, StaticResolver};
use residency_proxy::jurisdiction::sources::{add_overrides, parse_overrides_csv};
use residency_proxy::jurisdiction::{JurisdictionTable, TableBuilder};
use residency_proxy::policy::VettedAddr;
use residency_proxy::server::ProxyHandle;
use residency_proxy::upstream::Connector;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

/// How long any single wait in these tests may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

// ---- the world ---------------------------------------------------------------------------

/// A test address in the United Kingdom (home under `uk-adequate`).
pub const GB_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
/// A test address in France (adequate: EEA).
pub const FR_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
/// A test address in China (not adequate).
pub const CN_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4));
/// A test address in the United States (conditional).
pub const US_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 5));
/// The cloud instance-metadata endpoint (a built-in special range, kept in the test table).
pub const METADATA_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254));
/// A private (RFC 1918) address: jurisdiction `internal`.
pub const INTERNAL_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3));

/// Operator overrides placing the loopback test addresses in countries.
pub const WORLD_CSV: &str = "\
cidr, jurisdiction, label
127.0.0.2/32, GB, test world: United Kingdom
127.0.0.3/32, FR, test world: France
127.0.0.4/32, CN, test world: China
127.0.0.5/32, US, test world: United States
";

/// The jurisdiction table of the test world: the built-in special ranges except loopback
/// (so 127.0.0.x can be given countries; 169.254.169.254 stays `metadata`, 10/8 `internal`),
/// plus [`WORLD_CSV`].
pub fn world_table() -> JurisdictionTable {
    let mut b = TableBuilder::with_special_ranges_where(|r| r.cidr != "127.0.0.0/8");
    let entries = parse_overrides_csv(WORLD_CSV, "test-world.csv").expect("the world CSV parses");
    add_overrides(&entries, &mut b, "test-world.csv").expect("the world CSV adds");
    b.build()
}

/// Names of the test world. `mixed.test` lists its CN address first; `down.test` has no
/// origin behind it (tests register it as refusing); `nx.test` is absent (NXDOMAIN).
pub fn world_resolver() -> StaticResolver {
    let mut r = StaticResolver::new();
    r.insert("uk.test", vec![GB_IP])
        .insert("fr.test", vec![FR_IP])
        .insert("cn.test", vec![CN_IP])
        .insert("us.test", vec![US_IP])
        .insert("mixed.test", vec![CN_IP, GB_IP])
        .insert("allcn.test", vec![CN_IP])
        .insert("down.test", vec![FR_IP])
        .insert("metadata.test", vec![METADATA_IP])
        .insert("internal.test", vec![INTERNAL_IP]);
    r
}

/// `ip:port`.
pub fn sa(ip: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(ip, port)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// ---- fake origins ------------------------------------------------------------------------

/// What an HTTP origin received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Method.
    pub method: String,
    /// HTTP version the origin received (`HTTP/1.1`).
    pub version: String,
    /// Request target as received (origin-form when it came through the proxy).
    pub target: String,
    /// Every header, in order, names lower-case.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Seen {
    /// Every value of header `name`.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The single value of header `name`, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.all(name).first().copied()
    }
}

/// A small HTTP/1.1 origin on 127.0.0.1:0. It answers 200 with a JSON echo of the method,
/// target, headers and body, records what it received, and adds hop-by-hop headers of its own
/// to every response (`Connection: x-origin-hop`, `X-Origin-Hop`, `Keep-Alive`) so tests can
/// check they are stripped on the way back.
///
/// `GET /gated` answers `first;` at once and `second` only after [`HttpOrigin::release`].
///
/// Every response carries `X-Origin-Addr: <addr>` (which origin answered). `GET /healthz` is
/// an active health check: it answers the status set by [`HttpOrigin::set_health`] (200 at
/// first), is counted by [`HttpOrigin::health_checks`] and is not recorded in
/// [`HttpOrigin::seen`].
pub struct HttpOrigin {
    /// Where it listens.
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
    gate: Arc<Notify>,
    health: Arc<OriginHealth>,
    task: JoinHandle<()>,
}

/// What `/healthz` answers and how often it was asked.
#[derive(Debug)]
struct OriginHealth {
    status: std::sync::atomic::AtomicU16,
    checks: AtomicUsize,
}

impl HttpOrigin {
    /// Start one.
    pub async fn start() -> HttpOrigin {
        Self::start_with(None).await
    }

    /// Start one that speaks HTTP/1.1 over TLS with `tls` (for upstream TLS).
    pub async fn start_tls(tls: Arc<rustls::ServerConfig>) -> HttpOrigin {
        Self::start_with(Some(tls)).await
    }

    async fn start_with(tls: Option<Arc<rustls::ServerConfig>>) -> HttpOrigin {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind an origin on loopback");
        let addr = listener.local_addr().expect("origin address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(Notify::new());
        let health = Arc::new(OriginHealth {
            status: std::sync::atomic::AtomicU16::new(200),
            checks: AtomicUsize::new(0),
        });
        let (s, c, g, h) = (
            seen.clone(),
            connections.clone(),
            gate.clone(),
            health.clone(),
        );
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                let (s, g, h) = (s.clone(), g.clone(), h.clone());
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let (s, g, h) = (s.clone(), g.clone(), h.clone());
                        async move { Ok::<_, Infallible>(origin_answer(req, s, g, h, addr).await) }
                    });
                    let builder = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                        }
                        Some(a) => {
                            if let Ok(tls) = a.accept(stream).await {
                                let _ = builder.serve_connection(TokioIo::new(tls), svc).await;
                            }
                        }
                    }
                });
            }
        });
        HttpOrigin {
            addr,
            seen,
            connections,
            gate,
            health,
            task,
        }
    }

    /// The status `GET /healthz` answers from now on.
    pub fn set_health(&self, status: u16) {
        self.health.status.store(status, Ordering::SeqCst);
    }

    /// Health checks (`GET /healthz`) answered so far.
    pub fn health_checks(&self) -> usize {
        self.health.checks.load(Ordering::SeqCst)
    }

    /// Requests (other than health checks) received so far.
    pub fn requests(&self) -> usize {
        lock(&self.seen).len()
    }

    /// Everything received so far.
    pub fn seen(&self) -> Vec<Seen> {
        lock(&self.seen).clone()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Let a pending `/gated` response finish.
    pub fn release(&self) {
        self.gate.notify_one();
    }
}

impl Drop for HttpOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type OriginBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn origin_answer(
    req: Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
    gate: Arc<Notify>,
    health: Arc<OriginHealth>,
    me: SocketAddr,
) -> Response<OriginBody> {
    if req.uri().path() == "/healthz" {
        let status = health.status.load(Ordering::SeqCst);
        let mut resp = Response::new(Full::new(Bytes::from_static(b"health\n")).boxed());
        *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
        // Counted once the answer is decided, so a test that saw the count rise knows the
        // status the checker got (or is about to get).
        health.checks.fetch_add(1, Ordering::SeqCst);
        return resp;
    }
    let version = format!("{:?}", req.version());
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes().to_vec(),
        Err(_) => Vec::new(),
    };
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let target = parts.uri.to_string();
    lock(&seen).push(Seen {
        method: parts.method.to_string(),
        version,
        target: target.clone(),
        headers: headers.clone(),
        body: body.clone(),
    });
    let out: OriginBody = if target == "/gated" {
        let (tx, rx) = mpsc::channel::<Bytes>(4);
        tokio::spawn(async move {
            let _ = tx.send(Bytes::from_static(b"first;")).await;
            gate.notified().await;
            let _ = tx.send(Bytes::from_static(b"second")).await;
        });
        ChannelBody(rx).boxed()
    } else {
        let echo = serde_json::json!({
            "method": parts.method.as_str(),
            "target": target,
            "headers": headers,
            "body": String::from_utf8_lossy(&body),
        });
        Full::new(Bytes::from(echo.to_string())).boxed()
    };
    let mut resp = Response::new(out);
    let h = resp.headers_mut();
    h.insert("x-origin", HeaderValue::from_static("echo"));
    if let Ok(v) = HeaderValue::from_str(&me.to_string()) {
        h.insert("x-origin-addr", v);
    }
    h.insert("connection", HeaderValue::from_static("x-origin-hop"));
    h.insert("x-origin-hop", HeaderValue::from_static("must-not-pass"));
    h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
    resp
}

/// A response body fed by a channel: each message is one data frame, sent when it arrives.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|m| m.map(|b| Ok(Frame::data(b))))
    }
}

/// A raw TCP origin that echoes every byte back and shuts down its write side at EOF.
pub struct TcpEchoOrigin {
    /// Where it listens.
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl TcpEchoOrigin {
    /// Start one.
    pub async fn start() -> TcpEchoOrigin {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind an echo origin on loopback");
        let addr = listener.local_addr().expect("echo origin address");
        let connections = Arc::new(AtomicUsize::new(0));
        let c = connections.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let (mut r, mut w) = stream.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    let _ = w.shutdown().await;
                });
            }
        });
        TcpEchoOrigin {
            addr,
            connections,
            task,
        }
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for TcpEchoOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---- the recording connector -------------------------------------------------------------

/// What the connector does for a registered vetted address.
#[derive(Debug, Clone, Copy)]
pub enum Route {
    /// Connect to this real local origin instead.
    Origin(SocketAddr),
    /// The origin is down: a real connect to a closed loopback port (ECONNREFUSED).
    Refuse,
    /// The connect never completes (for connect timeouts).
    Hang,
}

/// A [`Connector`] that maps each vetted destination (ip, port) to what the test registered
/// for it and records every dial. Dialling an address the test did not register is the one
/// thing the proxy must never do: it is recorded as a violation (asserted by
/// [`TestProxy::assert_no_violations`] and on drop) and the dial fails.
#[derive(Debug, Default)]
pub struct RecordingConnector {
    routes: Mutex<HashMap<SocketAddr, Route>>,
    dials: Mutex<Vec<SocketAddr>>,
    violations: Mutex<Vec<String>>,
}

impl RecordingConnector {
    /// Register what dialling `vetted` does.
    pub fn register(&self, vetted: SocketAddr, route: Route) {
        lock(&self.routes).insert(vetted, route);
    }

    /// Every dial so far, in order.
    pub fn dials(&self) -> Vec<SocketAddr> {
        lock(&self.dials).clone()
    }

    /// Dials of addresses that were never registered.
    pub fn violations(&self) -> Vec<String> {
        lock(&self.violations).clone()
    }
}

/// Connect to a loopback port nobody listens on: a genuine ECONNREFUSED.
async fn refused() -> io::Result<TcpStream> {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?
    };
    match TcpStream::connect(closed).await {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            "test origin is down",
        )),
        Err(e) => Err(e),
    }
}

impl Connector for RecordingConnector {
    fn connect(&self, addr: VettedAddr) -> BoxFuture<'_, io::Result<TcpStream>> {
        let target = addr.addr();
        lock(&self.dials).push(target);
        let route = lock(&self.routes).get(&target).copied();
        Box::pin(async move {
            match route {
                Some(Route::Origin(real)) => TcpStream::connect(real).await,
                Some(Route::Refuse) => refused().await,
                Some(Route::Hang) => std::future::pending().await,
                None => {
                    let msg =
                        format!("the proxy dialled {target}, which the test never registered");
                    eprintln!("VIOLATION: {msg}");
                    lock(&self.violations).push(msg.clone());
                    Err(io::Error::new(io::ErrorKind::PermissionDenied, msg))
                }
            }
        })
    }
}

// ---- the audit log -----------------------------------------------------------------------

/// The proxy's audit records, collected in memory.
#[derive(Debug, Clone, Default)]
pub struct AuditLog {
    records: Arc<Mutex<Vec<AuditRecord>>>,
}

impl AuditLog {
    /// The records written so far.
    pub fn records(&self) -> Vec<AuditRecord> {
        lock(&self.records).clone()
    }

    /// Wait (at most [`WAIT`]) until at least `n` records exist, and return them all.
    pub async fn wait_records(&self, n: usize) -> Vec<AuditRecord> {
        self.wait_until(|r| r.len() >= n, &format!("{n} audit records"))
            .await
    }

    /// Wait (at most [`WAIT`]) until `done` holds for the records, and return them.
    pub async fn wait_until(
        &self,
        done: impl Fn(&[AuditRecord]) -> bool,
        what: &str,
    ) -> Vec<AuditRecord> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let now = self.records();
            if done(&now) {
                return now;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("timed out waiting for {what}; have {now:#?}");
            }
            // Polling the in-memory sink (the writer thread has no notification hook).
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

// ---- responses and clients ---------------------------------------------------------------

/// A response as the client saw it.
#[derive(Debug, Clone)]
pub struct TestResponse {
    /// Status code.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Vec<u8>,
}

impl TestResponse {
    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `X-Residency-Decision` header, or "" if absent.
    pub fn decision(&self) -> &str {
        self.header("x-residency-decision").unwrap_or("")
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The origin's JSON echo in the body.
    pub fn echo(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not the origin's echo ({e}): {}", self.text()))
    }
}

/// Read from `stream` into `buf` until it holds a full response head; returns the head's
/// length (including the blank line). Panics on EOF or timeout.
async fn read_head<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut Vec<u8>) -> usize {
    let fut = async {
        loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                return i + 4;
            }
            let mut chunk = [0u8; 8192];
            let n = stream.read(&mut chunk).await.expect("read a response head");
            assert!(
                n > 0,
                "connection closed before a full response head: {:?}",
                String::from_utf8_lossy(buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(WAIT, fut)
        .await
        .expect("timed out reading a response head")
}

/// Parse a response head (status line and headers).
fn parse_head(head: &[u8]) -> (StatusCode, HeaderMap) {
    let text = std::str::from_utf8(head).expect("response head is UTF-8");
    let mut lines = text.split("\r\n");
    let status_line = lines.next().expect("a status line");
    let code = status_line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let status = StatusCode::from_u16(code).expect("a valid status code");
    let mut headers = HeaderMap::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let (n, v) = line
            .split_once(':')
            .unwrap_or_else(|| panic!("bad header line {line:?}"));
        headers.append(
            HeaderName::from_bytes(n.trim().as_bytes()).expect("header name"),
            HeaderValue::from_str(v.trim()).expect("header value"),
        );
    }
    (status, headers)
}

/// Read a body framed per `headers` (content-length, chunked, or to EOF), `already` being
/// bytes read past the head.
async fn read_body(stream: &mut TcpStream, headers: &HeaderMap, already: Vec<u8>) -> Vec<u8> {
    let mut buf = already;
    let fut = async {
        let chunked = headers
            .get("transfer-encoding")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let length = headers
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let mut chunk = [0u8; 8192];
        if let Some(len) = length {
            while buf.len() < len {
                let n = stream.read(&mut chunk).await.expect("read a body");
                assert!(n > 0, "connection closed mid-body");
                buf.extend_from_slice(&chunk[..n]);
            }
            buf.truncate(len);
            return buf;
        }
        if chunked {
            loop {
                if let Some(body) = dechunk(&buf) {
                    return body;
                }
                let n = stream.read(&mut chunk).await.expect("read a chunked body");
                assert!(n > 0, "connection closed mid-chunked-body");
                buf.extend_from_slice(&chunk[..n]);
            }
        }
        loop {
            let n = stream.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                return buf;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(WAIT, fut)
        .await
        .expect("timed out reading a response body")
}

/// Decode a complete chunked body, or `None` if more bytes are needed.
fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&b[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        b = &b[eol + 2..];
        if size == 0 {
            // Trailers (none expected) end with an empty line.
            return b.windows(2).any(|w| w == b"\r\n").then_some(out);
        }
        if b.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

/// One HTTP/1.1 client connection to the proxy that can send several requests (keep-alive),
/// built on hyper's low-level client connection.
pub struct KeepAliveClient {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    conn: JoinHandle<()>,
}

impl KeepAliveClient {
    /// Connect to the proxy at `addr`.
    pub async fn connect(addr: SocketAddr) -> KeepAliveClient {
        let stream = TcpStream::connect(addr)
            .await
            .expect("connect to the proxy");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("HTTP/1.1 handshake with the proxy");
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        KeepAliveClient { sender, conn }
    }

    /// Send a request and return the response with its body still streaming.
    pub async fn send_streaming(&mut self, req: Request<Full<Bytes>>) -> Response<Incoming> {
        let fut = async {
            self.sender.ready().await.expect("client connection ready");
            self.sender.send_request(req).await.expect("send a request")
        };
        tokio::time::timeout(WAIT, fut)
            .await
            .expect("timed out waiting for a response")
    }

    /// Send a request and read the whole response, or say why that failed (for tests where
    /// the proxy closing the connection is a possible outcome).
    pub async fn try_send(&mut self, req: Request<Full<Bytes>>) -> Result<TestResponse, String> {
        let fut = async {
            self.sender
                .ready()
                .await
                .map_err(|e| format!("not ready: {e}"))?;
            let resp = self
                .sender
                .send_request(req)
                .await
                .map_err(|e| format!("send: {e:?}"))?;
            let (parts, body) = resp.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| format!("body: {e:?}"))?
                .to_bytes()
                .to_vec();
            Ok(TestResponse {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(WAIT, fut)
            .await
            .map_err(|_| "timed out".to_string())?
    }

    /// Send a request and read the whole response.
    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> TestResponse {
        let resp = self.send_streaming(req).await;
        let (parts, body) = resp.into_parts();
        let body = tokio::time::timeout(WAIT, body.collect())
            .await
            .expect("timed out reading a response body")
            .expect("read a response body")
            .to_bytes()
            .to_vec();
        TestResponse {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    /// `GET url` (absolute-form), with `Host` set from the URL.
    pub async fn get(&mut self, url: &str) -> TestResponse {
        self.send(request("GET", url, Vec::new())).await
    }

    /// Is the connection still usable?
    pub fn is_open(&self) -> bool {
        !self.sender.is_closed()
    }
}

impl Drop for KeepAliveClient {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

/// An absolute-form request with `Host` set from the URL's authority.
pub fn request(method: &str, url: &str, body: Vec<u8>) -> Request<Full<Bytes>> {
    let uri: hyper::Uri = url.parse().expect("a valid test URL");
    let host = uri.authority().map(|a| a.as_str().to_string());
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(h) = host {
        b = b.header("host", h);
    }
    b.body(Full::new(Bytes::from(body)))
        .expect("a valid test request")
}

// ---- the proxy ---------------------------------------------------------------------------

/// The proxy under test, in-process, with its recording connector and audit log.
pub struct TestProxy {
    /// The `egress` listener's address.
    pub addr: SocketAddr,
    /// The connector (dial log, routes, violations).
    pub connector: Arc<RecordingConnector>,
    /// The audit records.
    pub audit: AuditLog,
    handle: Option<ProxyHandle>,
    writer: Option<AuditWriter>,
    barriers: AtomicUsize,
}

/// The configuration text used by [`spawn_proxy`]: one forward listener `egress` on
/// 127.0.0.1:0 with allowed ports 80 and 443, followed by `extra`.
///
/// Lines of `extra` before its first `[table]` header continue the `[[listener]]` table, so
/// `mode = "report"` or `allowed_clients = [...]` there set listener keys; the rest (`[limits]`,
/// `[policy]`, `[[policy.rule]]`, ...) are top-level sections. An `allowed_ports` given there
/// replaces the default.
pub fn config_text(extra: &str) -> String {
    let listener_part = extra
        .lines()
        .take_while(|l| !l.trim_start().starts_with('['))
        .collect::<Vec<_>>();
    let sets_ports = listener_part
        .iter()
        .any(|l| l.trim_start().starts_with("allowed_ports"));
    let mut text = String::from("[[listener]]\nname = \"egress\"\nbind = \"127.0.0.1:0\"\n");
    if !sets_ports {
        text.push_str("allowed_ports = [80, 443]\n");
    }
    text.push_str(extra);
    text.push('\n');
    text
}

/// Start the proxy with the test world and `extra` configuration (see [`config_text`]).
pub async fn spawn_proxy(extra_toml: &str) -> TestProxy {
    spawn_proxy_text(&config_text(extra_toml)).await
}

/// Start the proxy with the test world and exactly the configuration `text`, which must have
/// a forward listener named `egress` (used by [`TestProxy::audit_barrier`]). Other listeners'
/// addresses: [`TestProxy::listener_addr`].
pub async fn spawn_proxy_text(text: &str) -> TestProxy {
    spawn_proxy_on(text, Arc::new(RecordingConnector::default())).await
}

/// As [`spawn_proxy_text`], with a connector the test has already registered routes on (for
/// what the proxy dials as soon as it starts, such as active health checks).
pub async fn spawn_proxy_on(text: &str, connector: Arc<RecordingConnector>) -> TestProxy {
    custom::spawn_proxy_full(text, world_table(), world_resolver(), connector).await
}

impl TestProxy {
    /// The bound address of listener `name`.
    pub fn listener_addr(&self, name: &str) -> SocketAddr {
        self.handle
            .as_ref()
            .expect("the proxy is running")
            .addr(name)
            .unwrap_or_else(|| panic!("no listener named {name}"))
    }

    /// Route dials of the vetted `(ip, port)` to `real`.
    pub fn route(&self, ip: IpAddr, port: u16, real: SocketAddr) {
        self.connector.register(sa(ip, port), Route::Origin(real));
    }

    /// Dials of `(ip, port)` are refused (origin down).
    pub fn refuse(&self, ip: IpAddr, port: u16) {
        self.connector.register(sa(ip, port), Route::Refuse);
    }

    /// Dials of `(ip, port)` never complete.
    pub fn hang(&self, ip: IpAddr, port: u16) {
        self.connector.register(sa(ip, port), Route::Hang);
    }

    /// Start an HTTP echo origin and route `(ip, port)` to it.
    pub async fn http_origin(&self, ip: IpAddr, port: u16) -> HttpOrigin {
        let o = HttpOrigin::start().await;
        self.route(ip, port, o.addr);
        o
    }

    /// Start a TCP echo origin and route `(ip, port)` to it.
    pub async fn tcp_origin(&self, ip: IpAddr, port: u16) -> TcpEchoOrigin {
        let o = TcpEchoOrigin::start().await;
        self.route(ip, port, o.addr);
        o
    }

    /// Every dial so far.
    pub fn dials(&self) -> Vec<SocketAddr> {
        self.connector.dials()
    }

    /// Fail if the proxy ever dialled an address the test did not register.
    pub fn assert_no_violations(&self) {
        let v = self.connector.violations();
        assert!(v.is_empty(), "unvetted dials: {v:#?}");
    }

    /// A new keep-alive client connection.
    pub async fn client(&self) -> KeepAliveClient {
        KeepAliveClient::connect(self.addr).await
    }

    /// `GET url` on a fresh client connection.
    pub async fn get(&self, url: &str) -> TestResponse {
        self.client().await.get(url).await
    }

    /// Write `bytes` on a fresh connection and read one response (head and body).
    pub async fn raw(&self, bytes: &[u8]) -> TestResponse {
        let mut s = TcpStream::connect(self.addr)
            .await
            .expect("connect to the proxy");
        s.write_all(bytes).await.expect("write a raw request");
        read_response(&mut s).await
    }

    /// Send `CONNECT authority` and read the response head. On 200 the returned stream is
    /// the tunnel.
    pub async fn connect(&self, authority: &str) -> (TestResponse, TcpStream) {
        let mut s = TcpStream::connect(self.addr)
            .await
            .expect("connect to the proxy");
        let req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("write CONNECT");
        let mut buf = Vec::new();
        let n = read_head(&mut s, &mut buf).await;
        let (status, headers) = parse_head(&buf[..n]);
        let rest = buf.split_off(n);
        let body = if status == StatusCode::OK {
            assert!(rest.is_empty(), "bytes after a CONNECT 200 head: {rest:?}");
            rest
        } else {
            read_body(&mut s, &headers, rest).await
        };
        (
            TestResponse {
                status,
                headers,
                body,
            },
            s,
        )
    }

    /// Make sure every record of requests that have already completed has been written,
    /// without waiting for an arbitrary time: send a request to a name that does not resolve
    /// (audited, never dialled) and wait for its record. Returns the records without the
    /// barrier's own.
    pub async fn audit_barrier(&self) -> Vec<AuditRecord> {
        let n = self.barriers.fetch_add(1, Ordering::SeqCst);
        let host = format!("barrier-{n}.test");
        let resp = self.get(&format!("http://{host}/")).await;
        assert_eq!(resp.status, StatusCode::BAD_GATEWAY, "barrier request");
        let want = Some(host.clone());
        let all = self
            .audit
            .wait_until(
                |r| r.iter().any(|x| x.dest_host == want),
                &format!("the audit barrier {host}"),
            )
            .await;
        all.into_iter()
            .filter(|r| {
                !r.dest_host
                    .as_deref()
                    .is_some_and(|h| h.starts_with("barrier-") && h.ends_with(".test"))
            })
            .collect()
    }

    /// Stop accepting and drain for up to `drain`; true if everything finished in time.
    pub async fn shutdown(&mut self, drain: Duration) -> bool {
        let handle = self.handle.take().expect("the proxy is running");
        handle.shutdown(drain).await
    }

    /// Take the shutdown handle (to shut down from another task).
    pub fn take_handle(&mut self) -> ProxyHandle {
        self.handle.take().expect("the proxy is running")
    }

    /// Flush the audit writer (after shutdown).
    pub async fn close_audit(&mut self) {
        if let Some(w) = self.writer.take() {
            w.shutdown().await.expect("audit writer flushes");
        }
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.assert_no_violations();
        }
    }
}

/// Read one response (head and body) from `s`.
pub async fn read_response(s: &mut TcpStream) -> TestResponse {
    let mut buf = Vec::new();
    let n = read_head(s, &mut buf).await;
    let (status, headers) = parse_head(&buf[..n]);
    let rest = buf.split_off(n);
    let body = read_body(s, &headers, rest).await;
    TestResponse {
        status,
        headers,
        body,
    }
}

/// Read from `s` until exactly `n` bytes arrived (bounded by [`WAIT`]).
pub async fn read_exactly(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(WAIT, s.read_exact(&mut buf))
        .await
        .expect("timed out reading tunnel bytes")
        .expect("read tunnel bytes");
    buf
}

/// Read until EOF (bounded by [`WAIT`]).
pub async fn read_to_eof(s: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .expect("timed out waiting for EOF")
        .expect("read to EOF");
    buf
}

/// The single record whose `dest.host` is `host`.
pub fn record_for<'a>(records: &'a [AuditRecord], host: &str) -> &'a AuditRecord {
    let matching: Vec<&AuditRecord> = records
        .iter()
        .filter(|r| r.dest_host.as_deref() == Some(host))
        .collect();
    assert_eq!(
        matching.len(),
        1,
        "expected exactly one record for {host}: {records:#?}"
    );
    matching[0]
}
