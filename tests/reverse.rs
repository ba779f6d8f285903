//! The reverse proxy end to end: TLS termination with SNI, HTTP/1.1 and HTTP/2 clients, plain
//! listeners (h2c, redirects), routes and pools (round-robin, least-connections, passive
//! ejection, active health checks, connection reuse, upstream TLS), residency decisions on pool
//! members, forwarding headers, the PROXY protocol, large streamed bodies and the audit record
//! of every request.
//!
//! Certificates are made at run time with rcgen in a temporary directory and referenced by
//! absolute path. Pool members are `.test` names (or literals) of the test world; the recording
//! connector maps their vetted addresses to local origins and fails on anything else.

#[path = "support/pki.rs"]
mod pki;
mod support;

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use residency_proxy::audit::AuditRecord;
use residency_proxy::config::Config;
use residency_proxy::tls::{self as ptls, CertSpec};
use residency_proxy::wire::proxy_protocol::{encode_v1, encode_v2};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use pki::{Pki, client_config, dns_sans, p256};
use support::*;

// ---- certificates ----------------------------------------------------------------------------

impl Pki {
    /// A server configuration (HTTP/1.1 only) for a TLS origin serving `sans`.
    fn origin_config(&self, sans: &[&str]) -> Arc<rustls::ServerConfig> {
        let spec = self.leaf(&format!("origin-{}", sans[0]), sans);
        let loaded = ptls::load_cert(&spec, SystemTime::now()).expect("the origin cert loads");
        ptls::server_config(vec![loaded], 0, false).expect("origin TLS config")
    }
}

/// A path as a TOML string.
fn q(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

// ---- configuration snippets ------------------------------------------------------------------

/// A reverse listener on 127.0.0.1:0 with `keys` (listener keys only; certificates follow as
/// separate [`cert`] tables).
fn listener(name: &str, keys: &str) -> String {
    format!(
        "\n[[listener]]\nname = \"{name}\"\nkind = \"reverse\"\nbind = \"127.0.0.1:0\"\n{keys}\n"
    )
}

/// A `[[listener.cert]]` table for the listener above it.
fn cert(c: &CertSpec, keys: &str) -> String {
    format!(
        "\n[[listener.cert]]\nchain = {}\nkey = {}\n{keys}\n",
        q(&c.chain),
        q(&c.key)
    )
}

fn pool(name: &str, members: &[&str], keys: &str) -> String {
    let members: Vec<String> = members.iter().map(|m| format!("\"{m}\"")).collect();
    format!(
        "\n[[pool]]\nname = \"{name}\"\nmembers = [{}]\n{keys}\n",
        members.join(", ")
    )
}

fn route(host: &str, path_prefix: &str, pool: &str) -> String {
    format!("\n[[route]]\nhost = \"{host}\"\npath_prefix = \"{path_prefix}\"\npool = \"{pool}\"\n")
}

/// The proxy with the `egress` forward listener (for audit barriers) and `reverse_toml`.
async fn proxy(reverse_toml: &str) -> TestProxy {
    spawn_proxy(reverse_toml).await
}

// ---- clients ---------------------------------------------------------------------------------

type ReqBody = BoxBody<Bytes, Infallible>;

fn empty() -> ReqBody {
    Full::new(Bytes::new()).boxed()
}

fn full(b: impl Into<Bytes>) -> ReqBody {
    Full::new(b.into()).boxed()
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<ReqBody>),
    H2(hyper::client::conn::http2::SendRequest<ReqBody>),
}

/// One client connection to a reverse listener, HTTP/1.1 or HTTP/2, plain or TLS.
struct Client {
    sender: Sender,
    scheme: &'static str,
    conn: Option<JoinHandle<()>>,
}

/// A response as the client saw it.
#[derive(Debug)]
struct Resp {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The origin that answered (`X-Origin-Addr`).
    fn origin(&self) -> Option<SocketAddr> {
        self.header("x-origin-addr").and_then(|v| v.parse().ok())
    }
}

impl Client {
    async fn h1<I>(io: I, scheme: &'static str) -> Client
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .expect("HTTP/1.1 handshake");
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        Client {
            sender: Sender::H1(sender),
            scheme,
            conn: Some(conn),
        }
    }

    async fn h2<I>(io: I, scheme: &'static str) -> Client
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(io))
            .await
            .expect("HTTP/2 handshake");
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        Client {
            sender: Sender::H2(sender),
            scheme,
            conn: Some(conn),
        }
    }

    /// Another handle on the same HTTP/2 connection (concurrent streams).
    fn stream(&self) -> Client {
        match &self.sender {
            Sender::H2(s) => Client {
                sender: Sender::H2(s.clone()),
                scheme: self.scheme,
                conn: None,
            },
            Sender::H1(_) => panic!("only HTTP/2 connections carry concurrent streams"),
        }
    }

    /// A request for `host` (may carry a port) and `path`: origin-form with `Host` on
    /// HTTP/1.1, an absolute URI (`:authority`) on HTTP/2.
    fn request(&self, method: &str, host: &str, path: &str, body: ReqBody) -> Request<ReqBody> {
        let b = Request::builder().method(method);
        let b = match self.sender {
            Sender::H1(_) => b.uri(path).header("host", host),
            Sender::H2(_) => b.uri(format!("{}://{host}{path}", self.scheme)),
        };
        b.body(body).expect("a valid test request")
    }

    async fn try_send_streaming(
        &mut self,
        req: Request<ReqBody>,
    ) -> Result<Response<Incoming>, String> {
        self.try_send_streaming_within(req, WAIT).await
    }

    /// Send `req` and wait at most `limit` for the response head.
    async fn try_send_streaming_within(
        &mut self,
        req: Request<ReqBody>,
        limit: Duration,
    ) -> Result<Response<Incoming>, String> {
        let fut = async {
            match &mut self.sender {
                Sender::H1(s) => {
                    s.ready().await.map_err(|e| format!("not ready: {e}"))?;
                    s.send_request(req).await.map_err(|e| format!("{e:?}"))
                }
                Sender::H2(s) => {
                    s.ready().await.map_err(|e| format!("not ready: {e}"))?;
                    s.send_request(req).await.map_err(|e| format!("{e:?}"))
                }
            }
        };
        tokio::time::timeout(limit, fut)
            .await
            .map_err(|_| "timed out".to_string())?
    }

    async fn try_send(&mut self, req: Request<ReqBody>) -> Result<Resp, String> {
        let resp = self.try_send_streaming(req).await?;
        let (parts, body) = resp.into_parts();
        let body = tokio::time::timeout(WAIT, body.collect())
            .await
            .map_err(|_| "timed out reading the body".to_string())?
            .map_err(|e| format!("body: {e:?}"))?
            .to_bytes()
            .to_vec();
        Ok(Resp {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body,
        })
    }

    async fn send(&mut self, req: Request<ReqBody>) -> Resp {
        self.try_send(req)
            .await
            .unwrap_or_else(|e| panic!("request failed: {e}"))
    }

    async fn get(&mut self, host: &str, path: &str) -> Resp {
        let req = self.request("GET", host, path, empty());
        self.send(req).await
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            c.abort();
        }
    }
}

async fn tcp(addr: SocketAddr) -> TcpStream {
    tokio::time::timeout(WAIT, TcpStream::connect(addr))
        .await
        .expect("timed out connecting")
        .expect("connect to the listener")
}

/// A plain HTTP/1.1 connection.
async fn h1(addr: SocketAddr) -> Client {
    Client::h1(tcp(addr).await, "http").await
}

/// `GET host path` on a fresh plain HTTP/1.1 connection.
async fn get(addr: SocketAddr, host: &str, path: &str) -> Resp {
    h1(addr).await.get(host, path).await
}

/// A TLS client trusting the test CA, offering `alpn`; `any_name` accepts a certificate for
/// another name; `sni` false sends no server name.
fn tls_client(pki: &Pki, alpn: &[&str], any_name: bool, sni: bool) -> Arc<ClientConfig> {
    let provider = rustls::crypto::ring::default_provider();
    client_config(pki, provider, rustls::DEFAULT_VERSIONS, alpn, any_name, sni)
}

/// A TLS handshake as `name` over `stream`.
async fn tls_over(
    stream: TcpStream,
    config: Arc<ClientConfig>,
    name: &str,
) -> TlsStream<TcpStream> {
    let server_name = ServerName::try_from(name.to_string()).expect("a server name");
    tokio::time::timeout(
        WAIT,
        TlsConnector::from(config).connect(server_name, stream),
    )
    .await
    .expect("timed out in the TLS handshake")
    .expect("TLS handshake with the listener")
}

async fn tls(addr: SocketAddr, config: Arc<ClientConfig>, name: &str) -> TlsStream<TcpStream> {
    tls_over(tcp(addr).await, config, name).await
}

/// The DNS SANs of the certificate the server presented.
fn served_sans(s: &TlsStream<TcpStream>) -> Vec<String> {
    let chain = s
        .get_ref()
        .1
        .peer_certificates()
        .expect("a server certificate");
    dns_sans(chain[0].as_ref())
}

/// Whether the peer closed `s` (EOF or reset) before `WAIT`, discarding what it sent.
async fn closed_by_peer(s: &mut TcpStream) -> bool {
    let fut = async {
        let mut buf = [0u8; 1024];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => continue,
            }
        }
    };
    tokio::time::timeout(WAIT, fut).await.unwrap_or(false)
}

/// Records of listener `name`.
fn of_listener<'a>(records: &'a [AuditRecord], name: &str) -> Vec<&'a AuditRecord> {
    records.iter().filter(|r| r.listener == name).collect()
}

// ---- generated bodies and a counting origin --------------------------------------------------

/// A body of `left` bytes produced on demand from one shared 64 KiB chunk: the test never
/// holds the whole body.
struct Generated {
    left: u64,
    chunk: Bytes,
}

impl Generated {
    fn new(len: u64) -> Generated {
        let chunk: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
        Generated {
            left: len,
            chunk: Bytes::from(chunk),
        }
    }
}

impl Body for Generated {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(self.chunk.len() as u64) as usize;
        self.left -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

/// Count a body's data bytes as they arrive, holding none of them.
async fn count_body<B>(mut body: B) -> Result<u64, String>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Debug,
{
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("{e:?}"))?;
        if let Some(d) = frame.data_ref() {
            n += d.len() as u64;
        }
    }
    Ok(n)
}

/// An HTTP/1.1 origin that counts the request body without keeping it, then answers with
/// `X-Send-Bytes` generated bytes and the count in `X-Received`.
struct CountingOrigin {
    addr: SocketAddr,
    received: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl CountingOrigin {
    async fn start() -> CountingOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let received = Arc::new(AtomicU64::new(0));
        let r = received.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let r = r.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let r = r.clone();
                        async move {
                            let want: u64 = req
                                .headers()
                                .get("x-send-bytes")
                                .and_then(|v| v.to_str().ok())
                                .and_then(|v| v.parse().ok())
                                .unwrap_or(0);
                            let n = count_body(req.into_body()).await.unwrap_or(0);
                            r.store(n, Ordering::SeqCst);
                            let mut resp = Response::new(Generated::new(want));
                            resp.headers_mut()
                                .insert("x-received", HeaderValue::from(n));
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        CountingOrigin {
            addr,
            received,
            task,
        }
    }
}

impl Drop for CountingOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---- TLS: certificates by SNI, HTTP/2 and HTTP/1.1 -------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_the_certificate_by_name_and_the_default_for_unknown_or_no_sni() {
    let pki = Pki::new();
    let a = pki.leaf("a", &["a.test"]);
    let b = pki.leaf("b", &["b.test"]);
    let d = pki.leaf("fallback", &["fallback.test"]);
    let text = listener("web", "") + &cert(&a, "") + &cert(&b, "") + &cert(&d, "default = true");
    let p = proxy(&text).await;
    let addr = p.listener_addr("web");

    let strict = tls_client(&pki, &[], false, true);
    let s = tls(addr, strict.clone(), "a.test").await;
    assert_eq!(served_sans(&s), vec!["a.test"]);
    let s = tls(addr, strict, "B.Test").await;
    assert_eq!(served_sans(&s), vec!["b.test"], "SNI is case-insensitive");

    let lenient = tls_client(&pki, &[], true, true);
    let s = tls(addr, lenient, "unknown.test").await;
    assert_eq!(
        served_sans(&s),
        vec!["fallback.test"],
        "an unknown name gets the default certificate, not the first one"
    );
    let no_sni = tls_client(&pki, &[], true, false);
    let s = tls(addr, no_sni, "a.test").await;
    assert_eq!(
        served_sans(&s),
        vec!["fallback.test"],
        "no SNI gets the default certificate"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_and_http11_clients_over_tls_are_both_proxied_to_an_http11_origin() {
    let pki = Pki::new();
    let a = pki.leaf("app", &["app.test"]);
    let text = listener("web", "")
        + &cert(&a, "")
        + &pool("app", &["uk.test:8080"], "")
        + &route("app.test", "/", "app");
    let p = proxy(&text).await;
    let origin = p.http_origin(GB_IP, 8080).await;
    let addr = p.listener_addr("web");

    // HTTP/2, chosen by ALPN.
    let s = tls(
        addr,
        tls_client(&pki, &["h2", "http/1.1"], false, true),
        "app.test",
    )
    .await;
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut c = Client::h2(s, "https").await;
    let req = c.request(
        "POST",
        &format!("app.test:{}", addr.port()),
        "/h2?x=1",
        full("over h2"),
    );
    let r = c.send(req).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.version, Version::HTTP_2);
    assert_eq!(r.header("x-origin"), Some("echo"));
    let echo: serde_json::Value = serde_json::from_slice(&r.body).expect("echo JSON");
    assert_eq!(echo["target"], "/h2?x=1");
    assert_eq!(echo["body"], "over h2");
    assert!(
        r.header("x-origin-hop").is_none(),
        "hop-by-hop headers never reach h2"
    );

    // HTTP/1.1, chosen by ALPN.
    let s = tls(
        addr,
        tls_client(&pki, &["http/1.1"], false, true),
        "app.test",
    )
    .await;
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let mut c = Client::h1(s, "https").await;
    let r = c.get("app.test", "/h1").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.version, Version::HTTP_11);
    let echo: serde_json::Value = serde_json::from_slice(&r.body).expect("echo JSON");
    assert_eq!(echo["target"], "/h1");

    let seen = origin.seen();
    assert_eq!(seen.len(), 2);
    for s in &seen {
        assert_eq!(s.version, "HTTP/1.1", "the origin speaks HTTP/1.1: {s:?}");
        assert_eq!(s.header("x-forwarded-proto"), Some("https"));
        assert_eq!(s.all("via"), vec!["1.1 residency-proxy"]);
    }
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].body, b"over h2");
    assert_eq!(
        seen[0].header("host"),
        Some(format!("app.test:{}", addr.port()).as_str()),
        "the h2 :authority becomes Host"
    );
    assert_eq!(seen[1].header("host"), Some("app.test"));

    let recs = p.audit.wait_records(2).await;
    let web = of_listener(&recs, "web");
    assert_eq!(web.len(), 2);
    for r in web {
        assert_eq!(r.intent, "reverse");
        assert_eq!(r.decision, "allow");
        assert_eq!(r.reason, "home");
        assert_eq!(r.status, Some(200));
        assert_eq!(r.dest_host.as_deref(), Some("uk.test"));
        assert_eq!(r.dest_port, Some(8080));
        assert_eq!(r.dialed_ip, Some(GB_IP));
    }
}

// ---- plain listeners: h1, h2c, redirects -----------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_listener_serves_http11_and_h2c_prior_knowledge() {
    let text =
        listener("web", "") + &pool("app", &["fr.test:8080"], "") + &route("app.test", "/", "app");
    let p = proxy(&text).await;
    let origin = p.http_origin(FR_IP, 8080).await;
    let addr = p.listener_addr("web");

    let r = get(addr, "app.test", "/plain").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.version, Version::HTTP_11);

    let mut c = Client::h2(tcp(addr).await, "http").await;
    let r = c.get("app.test", "/h2c").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.version, Version::HTTP_2);

    let seen = origin.seen();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|s| s.version == "HTTP/1.1"));
    assert!(
        seen.iter()
            .all(|s| s.header("x-forwarded-proto") == Some("http"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_listener_with_h2_off_refuses_h2c_prior_knowledge() {
    let text = listener("web", "h2 = false")
        + &pool("app", &["fr.test:8080"], "")
        + &route("app.test", "/", "app");
    let p = proxy(&text).await;
    let origin = p.http_origin(FR_IP, 8080).await;
    let addr = p.listener_addr("web");

    let r = get(addr, "app.test", "/").await;
    assert_eq!(r.status, StatusCode::OK, "HTTP/1.1 still works");

    let stream = tcp(addr).await;
    let outcome = match hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake::<_, ReqBody>(TokioIo::new(stream))
        .await
    {
        Err(e) => Err(format!("handshake: {e}")),
        Ok((mut sender, conn)) => {
            let task = tokio::spawn(async move {
                let _ = conn.await;
            });
            let req = Request::get("http://app.test/").body(empty()).unwrap();
            let r = tokio::time::timeout(WAIT, sender.send_request(req))
                .await
                .expect("the h2c attempt ends");
            task.abort();
            r.map(|r| r.status()).map_err(|e| e.to_string())
        }
    };
    assert!(
        outcome.is_err(),
        "h2 = false must not serve HTTP/2 by prior knowledge: {outcome:?}"
    );
    assert_eq!(
        origin.seen().len(),
        1,
        "only the HTTP/1.1 request went through"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_https_port_answers_308_with_the_https_location() {
    let text = listener("redir", "redirect_https_port = 8443")
        + &listener("redir443", "redirect_https_port = 443");
    let p = proxy(&text).await;

    let r = get(p.listener_addr("redir"), "App.Test:8080", "/a/b?c=d").await;
    assert_eq!(r.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(r.header("location"), Some("https://app.test:8443/a/b?c=d"));

    let r = get(p.listener_addr("redir443"), "app.test", "/x").await;
    assert_eq!(r.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(r.header("location"), Some("https://app.test/x"), "no :443");

    let r = get(p.listener_addr("redir"), "[::1]:8080", "/v6").await;
    assert_eq!(r.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        r.header("location"),
        Some("https://[::1]:8443/v6"),
        "an IPv6 literal keeps its brackets"
    );

    let mut c = Client::h2(tcp(p.listener_addr("redir")).await, "http").await;
    let r = c.get("app.test", "/h2").await;
    assert_eq!(r.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(r.header("location"), Some("https://app.test:8443/h2"));

    let recs = p.audit.wait_records(4).await;
    assert_eq!(recs.len(), 4);
    for r in &recs {
        assert_eq!(r.reason, "redirect-https");
        assert_eq!(r.status, Some(308));
        assert_eq!(r.dialed_ip, None);
    }
    assert!(p.dials().is_empty(), "a redirect never dials");
}

// ---- routes ----------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_match_exact_and_wildcard_hosts_and_path_prefixes_first_match_wins() {
    // Route 0 only applies to the admin listener; route 4 is shadowed by route 1. Pool
    // "shadowed" has an unregistered member: reaching it would be an unvetted-dial violation.
    let text = listener("web", "")
        + &listener("admin", "")
        + "\n[[route]]\nhost = \"api.test\"\npool = \"admin\"\nlisteners = [\"admin\"]\n"
        + &route("api.test", "/v1/", "v1")
        + &route("*.wild.test", "/", "wild")
        + &route("api.test", "/", "api")
        + &route("api.test", "/v1/special", "shadowed")
        + &pool("v1", &["uk.test:81"], "")
        + &pool("wild", &["uk.test:82"], "")
        + &pool("api", &["uk.test:83"], "")
        + &pool("admin", &["uk.test:84"], "")
        + &pool("shadowed", &["uk.test:85"], "");
    let p = proxy(&text).await;
    let v1 = p.http_origin(GB_IP, 81).await;
    let wild = p.http_origin(GB_IP, 82).await;
    let api = p.http_origin(GB_IP, 83).await;
    let admin = p.http_origin(GB_IP, 84).await;
    let web = p.listener_addr("web");

    let cases = [
        ("api.test", "/v1/users", v1.addr),
        ("api.test", "/v1/special/x", v1.addr),
        ("API.Test.", "/v1/", v1.addr),
        ("api.test", "/v1", api.addr),
        ("api.test", "/v2/users", api.addr),
        ("x.wild.test", "/", wild.addr),
        ("a.b.wild.test:8080", "/deep", wild.addr),
    ];
    for (host, path, want) in cases {
        let r = get(web, host, path).await;
        assert_eq!(r.status, StatusCode::OK, "{host}{path}: {}", r.text());
        assert_eq!(r.origin(), Some(want), "{host}{path}");
    }
    let r = get(web, "wild.test", "/").await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "*.wild.test does not match wild.test itself"
    );

    let r = get(p.listener_addr("admin"), "api.test", "/v1/users").await;
    assert_eq!(
        r.origin(),
        Some(admin.addr),
        "the admin-only route comes first there"
    );
    assert_eq!(admin.seen().len(), 1, "and never applies to web");
    assert_eq!(
        v1.seen()
            .iter()
            .map(|s| s.target.as_str())
            .collect::<Vec<_>>(),
        vec!["/v1/users", "/v1/special/x", "/v1/"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absolute_form_request_reaches_the_origin_with_the_host_it_was_routed_by() {
    // RFC 9112 §3.2.2: with an absolute-form target, Host is ignored in favour of the URI's
    // authority. Routing does so; the upstream must see the same host, or a request routed as
    // app.test could reach the pool asking for another virtual host.
    let text =
        listener("web", "") + &pool("app", &["uk.test:80"], "") + &route("app.test", "/", "app");
    let p = proxy(&text).await;
    let origin = p.http_origin(GB_IP, 80).await;

    let mut s = tcp(p.listener_addr("web")).await;
    s.write_all(
        b"GET http://app.test/abs HTTP/1.1\r\nHost: admin.internal.test\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let r = read_response(&mut s).await;
    assert_eq!(r.status, StatusCode::OK);
    let seen = &origin.seen()[0];
    assert_eq!(seen.target, "/abs", "origin-form upstream");
    assert_eq!(seen.all("host"), vec!["app.test"]);
    assert_eq!(seen.all("x-forwarded-host"), vec!["app.test"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_host_gets_404_audited_as_no_route() {
    let text =
        listener("web", "") + &pool("app", &["uk.test:80"], "") + &route("app.test", "/", "app");
    let p = proxy(&text).await;

    let r = get(p.listener_addr("web"), "nowhere.test", "/x").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(
        r.text().contains("no route for nowhere.test"),
        "{}",
        r.text()
    );

    let recs = p.audit.wait_records(1).await;
    let r = record_for(&recs, "nowhere.test");
    assert_eq!(r.listener, "web");
    assert_eq!(r.intent, "reverse");
    assert_eq!(r.reason, "no-route");
    assert_eq!(r.decision, "deny");
    assert_eq!(r.status, Some(404));
    assert!(p.dials().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_pool_takes_requests_no_route_matches() {
    let text = listener("web", "default_pool = \"fallback\"")
        + &pool("app", &["uk.test:80"], "")
        + &pool("fallback", &["fr.test:80"], "")
        + &route("app.test", "/", "app");
    let p = proxy(&text).await;
    let app = p.http_origin(GB_IP, 80).await;
    let fallback = p.http_origin(FR_IP, 80).await;
    let web = p.listener_addr("web");

    assert_eq!(get(web, "app.test", "/").await.origin(), Some(app.addr));
    let r = get(web, "nowhere.test", "/x").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.origin(), Some(fallback.addr));
    assert_eq!(fallback.seen()[0].header("host"), Some("nowhere.test"));
}

// ---- pools -----------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_alternates_between_two_members() {
    let text = listener("web", "")
        + &pool(
            "app",
            &["uk.test:81", "fr.test:82"],
            "balance = \"round-robin\"",
        )
        + &route("app.test", "/", "app");
    let p = proxy(&text).await;
    let a = p.http_origin(GB_IP, 81).await;
    let b = p.http_origin(FR_IP, 82).await;
    let web = p.listener_addr("web");

    let mut order = Vec::new();
    let mut c = h1(web).await;
    for _ in 0..6 {
        let r = c.get("app.test", "/").await;
        assert_eq!(r.status, StatusCode::OK);
        order.push(r.origin().expect("an origin answered"));
    }
    assert_eq!(order, [a.addr, b.addr, a.addr, b.addr, a.addr, b.addr]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_member_is_ejected_after_eject_after_failures_and_readmitted_after_eject_for() {
    let eject_for = Duration::from_millis(300);
    let text = listener("web", "")
        + &pool(
            "app",
            &["uk.test:81", "fr.test:82"],
            "eject_after = 2\neject_for = \"300ms\"",
        )
        + &route("app.test", "/", "app");
    let p = proxy(&text).await;
    p.refuse(GB_IP, 81);
    let good = p.http_origin(FR_IP, 82).await;
    let web = p.listener_addr("web");
    let bad_dials = || p.dials().iter().filter(|d| **d == sa(GB_IP, 81)).count();

    // 1st failure: the request is retried on the other member; not ejected yet.
    let r = get(web, "app.test", "/1").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.origin(), Some(good.addr));
    assert_eq!(bad_dials(), 1);
    // 2nd failure ejects it.
    let t0 = Instant::now();
    let r = get(web, "app.test", "/2").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        bad_dials(),
        2,
        "one failure does not eject (eject_after = 2)"
    );

    // The member comes back to life, but stays out for eject_for.
    let back = p.http_origin(GB_IP, 81).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let r = get(web, "app.test", "/poll").await;
        assert_eq!(r.status, StatusCode::OK);
        if r.origin() == Some(back.addr) {
            break;
        }
        assert!(Instant::now() < deadline, "the member was never readmitted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        t0.elapsed() >= eject_for,
        "readmitted after {:?}, before eject_for",
        t0.elapsed()
    );
    assert_eq!(bad_dials(), 3, "no dial while ejected");

    // Every request got exactly one (successful) record: failures were retried, not audited.
    let recs = p.audit_barrier().await;
    let web_recs = of_listener(&recs, "web");
    assert!(
        web_recs.iter().all(|r| r.status == Some(200)),
        "{web_recs:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_member_is_ejected_the_answer_is_503_no_healthy_member() {
    let text = listener("web", "")
        + &pool(
            "app",
            &["uk.test:81"],
            "eject_after = 1\neject_for = \"1m\"",
        )
        + &route("app.test", "/", "app");
    let p = proxy(&text).await;
    p.refuse(GB_IP, 81);
    let web = p.listener_addr("web");

    let r = get(web, "app.test", "/").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text());
    let r = get(web, "app.test", "/").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    assert_eq!(p.dials().len(), 1, "an ejected member is not dialled");

    let recs = p.audit.wait_records(2).await;
    assert_eq!(recs[0].status, Some(502));
    assert_eq!(recs[0].error_side.as_deref(), Some("upstream"));
    assert_eq!(recs[1].reason, "no-healthy-member");
    assert_eq!(recs[1].status, Some(503));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_prefers_the_idle_member() {
    let text = listener("web", "")
        + &pool(
            "app",
            &["uk.test:81", "fr.test:82"],
            "balance = \"least-connections\"",
        )
        + &route("app.test", "/", "app");
    let p = proxy(&text).await;
    let a = p.http_origin(GB_IP, 81).await;
    let b = p.http_origin(FR_IP, 82).await;
    let web = p.listener_addr("web");

    // A slow request holds member a (ties go to the first member).
    let mut slow = h1(web).await;
    let req = slow.request("GET", "app.test", "/gated", empty());
    let held = slow
        .try_send_streaming(req)
        .await
        .expect("the slow request");
    assert_eq!(
        held.headers()
            .get("x-origin-addr")
            .and_then(|v| v.to_str().ok()),
        Some(a.addr.to_string().as_str())
    );

    // Everything else goes to the idle member while it is busy (round-robin would alternate).
    let mut c = h1(web).await;
    for _ in 0..4 {
        let r = c.get("app.test", "/").await;
        assert_eq!(r.origin(), Some(b.addr));
    }
    a.release();
    let body = count_body(held.into_body()).await.expect("the slow body");
    assert_eq!(body, "first;second".len() as u64);
    assert_eq!(a.seen().len(), 1);
    assert_eq!(b.seen().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_requests_reuse_one_upstream_connection() {
    let text =
        listener("web", "") + &pool("app", &["uk.test:80"], "") + &route("app.test", "/", "app");
    let p = proxy(&text).await;
    let origin = p.http_origin(GB_IP, 80).await;
    let web = p.listener_addr("web");

    // Two client connections, one after the other, and two requests on one more.
    assert_eq!(get(web, "app.test", "/1").await.status, StatusCode::OK);
    assert_eq!(get(web, "app.test", "/2").await.status, StatusCode::OK);
    let mut c = h1(web).await;
    assert_eq!(c.get("app.test", "/3").await.status, StatusCode::OK);
    assert_eq!(c.get("app.test", "/4").await.status, StatusCode::OK);

    assert_eq!(p.dials(), vec![sa(GB_IP, 80)], "one upstream dial");
    assert_eq!(origin.connections(), 1, "one upstream TCP connection");
    assert_eq!(origin.seen().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_pooled_connection_to_a_member_is_retried_once_and_not_held_against_it() {
    use support::scripted::{Script, ScriptedOrigin};
    let text = listener("web", "")
        + &pool(
            "app",
            &["uk.test:80"],
            "eject_after = 1\neject_for = \"1h\"",
        )
        + &route("app.test", "/", "app");
    let p = proxy(&text).await;
    let origin = ScriptedOrigin::start(vec![
        Script::AnswerOneThenCut { body_bytes: 0 },
        Script::Answer,
    ])
    .await;
    p.route(GB_IP, 80, origin.addr);
    let web = p.listener_addr("web");

    let mut c = h1(web).await;
    assert_eq!(c.get("app.test", "/one").await.status, StatusCode::OK);
    // Goes over the kept-alive upstream connection, which the member closes unanswered.
    let second = c.get("app.test", "/two").await;
    assert_eq!(second.status, StatusCode::OK, "{second:?}");
    assert_eq!(
        p.dials(),
        vec![sa(GB_IP, 80), sa(GB_IP, 80)],
        "one extra dial"
    );
    assert_eq!(
        origin.requests(),
        vec![
            "GET /one HTTP/1.1",
            "GET /two HTTP/1.1",
            "GET /two HTTP/1.1"
        ],
        "the second request reached the stale connection, then the fresh one"
    );
    // Not counted as a failure: with eject_after = 1 the only member would be out for an hour.
    assert_eq!(c.get("app.test", "/three").await.status, StatusCode::OK);
}

/// Wait (bounded) until `o` has answered `n` health checks.
async fn wait_health_checks(o: &HttpOrigin, n: usize) {
    let deadline = Instant::now() + WAIT;
    while o.health_checks() < n {
        assert!(
            Instant::now() < deadline,
            "health checks stalled at {}",
            o.health_checks()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_active_health_check_failing_with_500_takes_a_member_out_of_rotation() {
    let a = HttpOrigin::start().await;
    let b = HttpOrigin::start().await;
    a.set_health(500);
    // Routes are registered before the proxy starts: its health checks dial at once.
    let connector = Arc::new(RecordingConnector::default());
    connector.register(sa(GB_IP, 81), Route::Origin(a.addr));
    connector.register(sa(FR_IP, 82), Route::Origin(b.addr));
    let text = config_text(
        &(listener("web", "")
            + &pool(
                "app",
                &["uk.test:81", "fr.test:82"],
                "health_check = \"/healthz\"\nhealth_interval = \"50ms\"\nhealth_timeout = \"2s\"",
            )
            + &route("app.test", "/", "app")),
    );
    let p = spawn_proxy_on(&text, connector).await;
    let web = p.listener_addr("web");

    // The checker probes the members in turn: a's second check means its first result is in.
    wait_health_checks(&a, 2).await;
    let mut c = h1(web).await;
    for _ in 0..4 {
        let r = c.get("app.test", "/").await;
        assert_eq!(
            r.origin(),
            Some(b.addr),
            "traffic avoids the unhealthy member"
        );
    }
    assert_eq!(a.requests(), 0);

    // Healthy again: a check started after the switch has answered, and one more has begun.
    a.set_health(200);
    let n = a.health_checks();
    wait_health_checks(&a, n + 3).await;
    let mut served = Vec::new();
    for _ in 0..4 {
        served.push(c.get("app.test", "/").await.origin());
    }
    assert!(
        served.contains(&Some(a.addr)),
        "the member is back in rotation: {served:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_to_a_member_with_a_test_ca_works_and_a_wrong_name_fails() {
    let pki = Pki::new();
    let origin = HttpOrigin::start_tls(pki.origin_config(&["origin.test"])).await;
    let text = listener("web", "")
        + &pool(
            "secure",
            &["uk.test:443"],
            &format!(
                "tls = true\nca = {}\nserver_name = \"origin.test\"",
                q(&pki.ca_path)
            ),
        )
        + &pool(
            "wrong",
            &["fr.test:443"],
            &format!(
                "tls = true\nca = {}\nserver_name = \"other.test\"",
                q(&pki.ca_path)
            ),
        )
        + &route("secure.test", "/", "secure")
        + &route("wrong.test", "/", "wrong");
    let p = proxy(&text).await;
    p.route(GB_IP, 443, origin.addr);
    p.route(FR_IP, 443, origin.addr);
    let web = p.listener_addr("web");

    let r = get(web, "secure.test", "/tls").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(origin.seen()[0].target, "/tls");
    assert_eq!(origin.seen()[0].version, "HTTP/1.1");

    let r = get(web, "wrong.test", "/tls").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text());
    assert_eq!(
        origin.seen().len(),
        1,
        "nothing is sent over an unverified connection"
    );

    let recs = p.audit.wait_records(2).await;
    let failed = record_for(&recs, "fr.test");
    assert_eq!(failed.status, Some(502));
    assert!(
        failed.error.as_deref().is_some_and(|e| e.contains("TLS")),
        "{failed:#?}"
    );
}

// ---- residency of pool members ---------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_in_a_not_adequate_country_is_refused_403_and_never_dialled() {
    let text = listener("web", "")
        + &pool("cn", &["cn.test:80"], "")
        + &pool("cnlit", &["127.0.0.4:8080"], "")
        + &route("app.test", "/", "cn")
        + &route("lit.test", "/", "cnlit");
    let p = proxy(&text).await;
    let web = p.listener_addr("web");

    for host in ["app.test", "lit.test"] {
        let r = get(web, host, "/").await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{host}");
        let decision = r.header("x-residency-decision").unwrap_or("");
        assert!(
            decision.contains("reason=not-adequate") && decision.contains("jurisdiction=CN"),
            "{decision}"
        );
    }
    assert!(p.dials().is_empty(), "a CN member is never dialled");

    let recs = p.audit.wait_records(2).await;
    for host in ["cn.test", "127.0.0.4"] {
        let r = record_for(&recs, host);
        assert_eq!(r.decision, "deny");
        assert_eq!(r.reason, "not-adequate");
        assert_eq!(r.status, Some(403));
        assert_eq!(r.dialed_ip, None);
        assert_eq!(r.dest_addrs.len(), 1);
        assert_eq!(r.dest_addrs[0].ip, CN_IP);
        assert_eq!(r.dest_addrs[0].jurisdiction, "CN");
        assert!(!r.would_deny);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_mode_passes_a_not_adequate_member_and_records_would_deny() {
    let text = listener("web", "mode = \"report\"")
        + &pool("cn", &["cn.test:80"], "")
        + &route("app.test", "/", "cn");
    let p = proxy(&text).await;
    let origin = p.http_origin(CN_IP, 80).await;

    let r = get(p.listener_addr("web"), "app.test", "/").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(origin.seen().len(), 1);
    assert_eq!(p.dials(), vec![sa(CN_IP, 80)]);

    let recs = p.audit.wait_records(1).await;
    let r = record_for(&recs, "cn.test");
    assert_eq!(r.mode, "report");
    assert!(r.would_deny);
    assert_eq!(r.decision, "allow");
    assert_eq!(r.dialed_ip, Some(CN_IP));
    assert_eq!(r.dest_addrs[0].jurisdiction, "CN");
}

// ---- client identity: forwarding headers, PROXY protocol, allowed clients -------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_are_replaced_for_an_untrusted_peer() {
    let pki = Pki::new();
    let a = pki.leaf("app", &["app.test"]);
    let text = listener("web", "")
        + &cert(&a, "")
        + &pool("app", &["uk.test:80"], "")
        + &route("app.test", "/", "app");
    let p = proxy(&text).await;
    let origin = p.http_origin(GB_IP, 80).await;
    let addr = p.listener_addr("web");

    let stream = tcp(addr).await;
    let me = stream.local_addr().expect("client address");
    let s = tls_over(
        stream,
        tls_client(&pki, &["http/1.1"], false, true),
        "app.test",
    )
    .await;
    let mut c = Client::h1(s, "https").await;
    let req = Request::get("/spoof")
        .header("host", "app.test")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-for", "7.7.7.7")
        .header("x-forwarded-proto", "gopher")
        .header("x-forwarded-host", "evil.test")
        .header("forwarded", "for=6.6.6.6;proto=gopher")
        .body(empty())
        .unwrap();
    assert_eq!(c.send(req).await.status, StatusCode::OK);

    let seen = &origin.seen()[0];
    assert_eq!(seen.all("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(seen.all("x-forwarded-proto"), vec!["https"]);
    assert_eq!(seen.all("x-forwarded-host"), vec!["app.test"]);
    assert!(
        seen.all("forwarded").is_empty(),
        "Forwarded is not the listener's header (forwarded_header = \"x-forwarded-for\")"
    );

    let recs = p.audit.wait_records(1).await;
    assert_eq!(
        record_for(&recs, "uk.test").client_addr,
        Some(me),
        "the spoofed chain is not believed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_s_x_forwarded_for_names_the_client_in_the_audit_record() {
    let text = listener("web", "trusted_proxies = [\"127.0.0.0/8\"]")
        + &pool("app", &["uk.test:80"], "")
        + &route("app.test", "/", "app");
    let p = proxy(&text).await;
    let origin = p.http_origin(GB_IP, 80).await;

    let mut c = h1(p.listener_addr("web")).await;
    let req = Request::get("/")
        .header("host", "app.test")
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-proto", "https")
        .body(empty())
        .unwrap();
    assert_eq!(c.send(req).await.status, StatusCode::OK);

    let seen = &origin.seen()[0];
    assert_eq!(seen.all("x-forwarded-for"), vec!["203.0.113.7, 127.0.0.1"]);
    assert_eq!(
        seen.all("x-forwarded-proto"),
        vec!["https"],
        "a trusted proxy's proto is kept"
    );
    assert!(seen.all("forwarded").is_empty());

    let recs = p.audit.wait_records(1).await;
    let r = record_for(&recs, "uk.test");
    assert_eq!(
        r.client_addr,
        Some(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)),
            0
        ))
    );
}

/// A raw HTTP/1.1 GET that closes the connection.
fn raw_get(host: &str, path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_v1_gives_the_audit_record_the_proxy_source() {
    let text = listener("pp", "proxy_protocol = \"v1\"")
        + &pool("app", &["uk.test:80"], "")
        + &route("app.test", "/", "app");
    let p = proxy(&text).await;
    let origin = p.http_origin(GB_IP, 80).await;
    let addr = p.listener_addr("pp");
    let src: SocketAddr = "198.51.100.7:4242".parse().unwrap();

    let mut s = tcp(addr).await;
    let mut bytes = encode_v1(src, addr);
    bytes.extend_from_slice(&raw_get("app.test", "/v1"));
    s.write_all(&bytes).await.unwrap();
    let r = read_response(&mut s).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        origin.seen()[0].all("x-forwarded-for"),
        vec!["198.51.100.7"]
    );

    let recs = p.audit.wait_records(1).await;
    assert_eq!(record_for(&recs, "uk.test").client_addr, Some(src));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_v2_before_tls_gives_the_audit_record_the_proxy_source() {
    let pki = Pki::new();
    let a = pki.leaf("app", &["app.test"]);
    let text = listener("pp", "proxy_protocol = \"v2\"")
        + &cert(&a, "")
        + &pool("app", &["uk.test:80"], "")
        + &route("app.test", "/", "app");
    let p = proxy(&text).await;
    let origin = p.http_origin(GB_IP, 80).await;
    let addr = p.listener_addr("pp");
    let src: SocketAddr = "[2001:db8::7]:5555".parse().unwrap();

    let mut s = tcp(addr).await;
    s.write_all(&encode_v2(src, addr)).await.unwrap();
    let s = tls_over(s, tls_client(&pki, &["h2"], false, true), "app.test").await;
    let mut c = Client::h2(s, "https").await;
    let r = c.get("app.test", "/v2").await;
    assert_eq!(r.status, StatusCode::OK);
    let seen = &origin.seen()[0];
    assert_eq!(seen.all("x-forwarded-for"), vec!["2001:db8::7"]);
    assert_eq!(seen.header("forwarded"), None);

    let recs = p.audit.wait_records(1).await;
    assert_eq!(record_for(&recs, "uk.test").client_addr, Some(src));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_proxy_header_closes_the_connection_and_is_audited() {
    let text = listener("pp", "proxy_protocol = \"v1\"")
        + &pool("app", &["uk.test:80"], "")
        + &route("app.test", "/", "app");
    let p = proxy(&text).await;
    let addr = p.listener_addr("pp");

    // No header at all, then a v2 header on a v1-only listener.
    let v2 = encode_v2("192.0.2.1:1000".parse().unwrap(), addr);
    let attempts: [Vec<u8>; 2] = [
        raw_get("app.test", "/"),
        [v2, raw_get("app.test", "/")].concat(),
    ];
    let mut peers = Vec::new();
    for bytes in attempts {
        let mut s = tcp(addr).await;
        peers.push(s.local_addr().unwrap());
        s.write_all(&bytes).await.unwrap();
        assert!(
            closed_by_peer(&mut s).await,
            "the proxy closes the connection"
        );
    }

    let recs = p.audit.wait_records(2).await;
    assert_eq!(recs.len(), 2, "{recs:#?}");
    for (r, peer) in recs.iter().zip(&peers) {
        assert_eq!(r.listener, "pp");
        assert_eq!(r.reason, "bad-proxy-protocol");
        assert_eq!(r.decision, "deny");
        assert_eq!(r.error_side.as_deref(), Some("downstream"));
        assert!(r.error.is_some());
        assert!(
            peers.contains(&r.client_addr.expect("client address")),
            "{r:#?} vs {peer}"
        );
    }
    assert!(p.dials().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_clients_on_a_reverse_listener_refuses_others_with_403() {
    let text = listener("closed", "allowed_clients = [\"10.0.0.0/8\"]")
        + &listener(
            "behind-lb",
            "allowed_clients = [\"10.0.0.0/8\"]\nproxy_protocol = \"v1\"",
        )
        + &pool("app", &["uk.test:80"], "")
        + &route("app.test", "/", "app");
    let p = proxy(&text).await;
    let origin = p.http_origin(GB_IP, 80).await;

    let r = get(p.listener_addr("closed"), "app.test", "/").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(
        r.header("x-residency-decision")
            .unwrap_or("")
            .contains("client-not-allowed")
    );
    assert!(p.dials().is_empty());

    // The real client (the PROXY source) is what allowed_clients judges.
    let addr = p.listener_addr("behind-lb");
    let mut s = tcp(addr).await;
    let mut bytes = encode_v1("10.9.8.7:1234".parse().unwrap(), addr);
    bytes.extend_from_slice(&raw_get("app.test", "/"));
    s.write_all(&bytes).await.unwrap();
    assert_eq!(read_response(&mut s).await.status, StatusCode::OK);
    assert_eq!(origin.seen().len(), 1);

    let recs = p.audit.wait_records(2).await;
    let refused = record_for(&recs, "app.test");
    assert_eq!(refused.listener, "closed");
    assert_eq!(refused.reason, "client-not-allowed");
    assert_eq!(refused.status, Some(403));
}

// ---- bodies and audit ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mb_body_streams_both_ways_and_is_counted_in_the_audit_record() {
    const SIZE: u64 = 100 * 1024 * 1024;
    // A bulk transfer: alone it takes well under a second, but it is CPU-bound, so it gets a
    // larger bound than WAIT for machines busy with other tests.
    const BULK_WAIT: Duration = Duration::from_secs(60);
    let text =
        listener("web", "") + &pool("bulk", &["uk.test:80"], "") + &route("bulk.test", "/", "bulk");
    let p = proxy(&text).await;
    let origin = CountingOrigin::start().await;
    p.route(GB_IP, 80, origin.addr);

    let mut c = h1(p.listener_addr("web")).await;
    let mut req = c.request("PUT", "bulk.test", "/upload", Generated::new(SIZE).boxed());
    req.headers_mut()
        .insert("x-send-bytes", HeaderValue::from(SIZE));
    let resp = c
        .try_send_streaming_within(req, BULK_WAIT)
        .await
        .expect("the upload is answered");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()
            .get("x-received")
            .and_then(|v| v.to_str().ok()),
        Some(SIZE.to_string().as_str())
    );
    let down = tokio::time::timeout(BULK_WAIT, count_body(resp.into_body()))
        .await
        .expect("the download finishes")
        .expect("the download");
    assert_eq!(down, SIZE);
    assert_eq!(origin.received.load(Ordering::SeqCst), SIZE);

    let recs = p.audit.wait_records(1).await;
    let r = record_for(&recs, "uk.test");
    assert_eq!(r.bytes_up, SIZE);
    assert_eq!(r.bytes_down, SIZE);
    assert_eq!(r.status, Some(200));
}

/// A large sized response to a plain client from a plain upstream is moved socket to socket
/// (`splice(2)`): every byte arrives in order, the record counts them, and both the client's
/// and the upstream's connection go on to the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_sized_download_to_a_plain_client_arrives_whole_counted_and_keeps_both_connections()
{
    const SIZE: u64 = 3 * 1024 * 1024 + 5;
    let text =
        listener("web", "") + &pool("bulk", &["uk.test:80"], "") + &route("bulk.test", "/", "bulk");
    let p = proxy(&text).await;
    let origin = CountingOrigin::start().await;
    p.route(GB_IP, 80, origin.addr);

    let mut c = h1(p.listener_addr("web")).await;
    let expected: Vec<u8> = (0..SIZE).map(|i| ((i % (64 * 1024)) % 251) as u8).collect();
    for size in [SIZE, 10, SIZE] {
        let mut req = c.request("GET", "bulk.test", "/download", empty());
        req.headers_mut()
            .insert("x-send-bytes", HeaderValue::from(size));
        let resp = c.send(req).await;
        assert_eq!(resp.status, StatusCode::OK);
        assert_eq!(resp.body.len() as u64, size);
        assert!(
            resp.body == expected[..size as usize],
            "the bytes, in order"
        );
    }

    let recs = p.audit.wait_records(3).await;
    let downs: Vec<u64> = recs.iter().map(|r| r.bytes_down).collect();
    assert_eq!(downs, [SIZE, 10, SIZE]);
    assert_eq!(
        p.dials().len(),
        1,
        "the upstream connection was reused after each body"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reverse_request_yields_exactly_one_audit_record() {
    let text = listener("web", "")
        + &pool("app", &["uk.test:80"], "")
        + &pool("cn", &["cn.test:80"], "")
        + &pool("down", &["down.test:80"], "")
        + &route("app.test", "/", "app")
        + &route("cn.example", "/", "cn")
        + &route("down.example", "/", "down");
    let p = proxy(&text).await;
    let origin = p.http_origin(GB_IP, 80).await;
    p.refuse(FR_IP, 80);
    let web = p.listener_addr("web");

    let mut statuses = Vec::new();
    // HTTP/1.1: allowed, POST, no route, not adequate, origin down.
    let mut c = h1(web).await;
    statuses.push(c.get("app.test", "/1").await.status);
    let req = c.request("POST", "app.test", "/post", full("payload"));
    statuses.push(c.send(req).await.status);
    statuses.push(c.get("nowhere.test", "/").await.status);
    statuses.push(c.get("cn.example", "/").await.status);
    statuses.push(c.get("down.example", "/").await.status);
    // Three concurrent h2c streams.
    let h2 = Client::h2(tcp(web).await, "http").await;
    let (mut s1, mut s2, mut s3) = (h2.stream(), h2.stream(), h2.stream());
    let (r1, r2, r3) = tokio::join!(
        s1.get("app.test", "/a"),
        s2.get("app.test", "/b"),
        s3.get("nowhere.test", "/c")
    );
    statuses.extend([r1.status, r2.status, r3.status]);
    // No Host at all.
    let mut s = tcp(web).await;
    s.write_all(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    statuses.push(read_response(&mut s).await.status);
    // A client that leaves in the middle of a response body.
    let mut quitter = h1(web).await;
    let req = quitter.request("GET", "app.test", "/gated", empty());
    let resp = quitter
        .try_send_streaming(req)
        .await
        .expect("response head");
    statuses.push(resp.status());
    drop(resp);
    drop(quitter);

    use StatusCode as S;
    assert_eq!(
        statuses,
        [
            S::OK,
            S::OK,
            S::NOT_FOUND,
            S::FORBIDDEN,
            S::BAD_GATEWAY,
            S::OK,
            S::OK,
            S::NOT_FOUND,
            S::BAD_REQUEST,
            S::OK
        ]
    );
    let n = statuses.len();
    p.audit
        .wait_until(
            |r| r.iter().filter(|x| x.listener == "web").count() >= n,
            "a record for every request",
        )
        .await;
    let recs = p.audit_barrier().await;
    let web_recs = of_listener(&recs, "web");
    assert_eq!(web_recs.len(), n, "{web_recs:#?}");
    let mut got: Vec<Option<u16>> = web_recs.iter().map(|r| r.status).collect();
    got.sort();
    let mut want: Vec<Option<u16>> = statuses.iter().map(|s| Some(s.as_u16())).collect();
    want.sort();
    assert_eq!(got, want);
    assert!(web_recs.iter().all(|r| r.intent == "reverse"));
    origin.release();
}

// ---- certificates refused at configuration time ----------------------------------------------

fn reverse_first_config(c: &CertSpec) -> String {
    listener("web", "") + &cert(c, "")
}

#[test]
fn an_expired_certificate_is_refused_at_config_time_naming_the_cert() {
    let pki = Pki::new();
    let c = pki.leaf_with("old", &["old.test"], &p256(), |p| {
        p.not_before = rcgen::date_time_ymd(2000, 1, 1);
        p.not_after = rcgen::date_time_ymd(2001, 1, 1);
    });
    let err = Config::parse(&reverse_first_config(&c), "test.toml", Path::new("/"))
        .expect_err("an expired certificate is refused")
        .to_string();
    assert!(err.contains("listener[0].cert[0]"), "{err}");
    assert!(err.contains("expired on 2001-01-01"), "{err}");
    assert!(err.contains(&c.chain.display().to_string()), "{err}");
}

#[test]
fn a_key_that_does_not_match_its_certificate_is_refused_at_config_time() {
    let pki = Pki::new();
    let a = pki.leaf("one", &["one.test"]);
    let b = pki.leaf("two", &["two.test"]);
    let crossed = CertSpec {
        chain: a.chain,
        key: b.key,
        names: Vec::new(),
    };
    let err = Config::parse(&reverse_first_config(&crossed), "test.toml", Path::new("/"))
        .expect_err("a mismatched key is refused")
        .to_string();
    assert!(err.contains("listener[0].cert[0]"), "{err}");
    assert!(err.contains("does not match"), "{err}");
}

// ---- one forwarding header per listener -------------------------------------------------------

/// `GET /` for `app.test` on a fresh plain connection with extra `headers`; the response and
/// the client's own address.
async fn get_with(addr: SocketAddr, headers: &[(&str, &str)]) -> (Resp, SocketAddr) {
    let stream = tcp(addr).await;
    let me = stream.local_addr().expect("client address");
    let mut c = Client::h1(stream, "http").await;
    let mut req = Request::get("/").header("host", "app.test");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    (c.send(req.body(empty()).unwrap()).await, me)
}

fn ip_port(ip: &str) -> Option<SocketAddr> {
    Some(SocketAddr::new(ip.parse().expect("test address"), 0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_a_trusted_proxy_s_forwarded_is_ignored_and_removed_upstream() {
    let text = listener("web", "trusted_proxies = [\"127.0.0.0/8\"]")
        + &pool("app", &["uk.test:80"], "")
        + &route("app.test", "/", "app");
    let p = proxy(&text).await;
    let origin = p.http_origin(GB_IP, 80).await;
    let web = p.listener_addr("web");

    // Both headers: X-Forwarded-For names the client, Forwarded is not passed on.
    let (r, _) = get_with(
        web,
        &[
            ("x-forwarded-for", "203.0.113.7"),
            ("forwarded", "for=198.51.100.9;proto=https"),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let recs = p.audit.wait_records(1).await;
    assert_eq!(recs[0].client_addr, ip_port("203.0.113.7"));
    let seen = &origin.seen()[0];
    assert_eq!(seen.all("x-forwarded-for"), vec!["203.0.113.7, 127.0.0.1"]);
    assert!(seen.all("forwarded").is_empty(), "{:?}", seen.headers);

    // Forwarded alone says nothing: the client is the peer.
    let (r, me) = get_with(web, &[("forwarded", "for=198.51.100.9")]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let recs = p.audit.wait_records(2).await;
    assert_eq!(recs[1].client_addr, Some(me), "Forwarded is not believed");
    let seen = &origin.seen()[1];
    assert_eq!(seen.all("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(seen.all("x-forwarded-proto"), vec!["http"]);
    assert!(seen.all("forwarded").is_empty(), "{:?}", seen.headers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_header_forwarded_believes_forwarded_and_removes_the_x_forwarded_family() {
    let text = listener(
        "web",
        "trusted_proxies = [\"127.0.0.0/8\"]\nforwarded_header = \"forwarded\"",
    ) + &pool("app", &["uk.test:80"], "")
        + &route("app.test", "/", "app");
    let p = proxy(&text).await;
    let origin = p.http_origin(GB_IP, 80).await;
    let web = p.listener_addr("web");

    let (r, _) = get_with(
        web,
        &[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "gopher"),
            ("x-forwarded-host", "evil.test"),
            ("forwarded", "for=198.51.100.9;proto=https"),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let recs = p.audit.wait_records(1).await;
    assert_eq!(recs[0].client_addr, ip_port("198.51.100.9"));
    let seen = &origin.seen()[0];
    assert_eq!(
        seen.all("forwarded"),
        vec!["for=198.51.100.9;proto=https, for=127.0.0.1;proto=http;host=app.test"]
    );
    for name in ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"] {
        assert!(seen.all(name).is_empty(), "{name}: {:?}", seen.headers);
    }

    // X-Forwarded-For alone says nothing: the client is the peer.
    let (r, me) = get_with(web, &[("x-forwarded-for", "203.0.113.7")]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let recs = p.audit.wait_records(2).await;
    assert_eq!(
        recs[1].client_addr,
        Some(me),
        "X-Forwarded-For is not believed"
    );
    let seen = &origin.seen()[1];
    assert_eq!(
        seen.all("forwarded"),
        vec!["for=127.0.0.1;proto=http;host=app.test"]
    );
    assert!(seen.all("x-forwarded-for").is_empty(), "{:?}", seen.headers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_peer_s_forwarded_is_not_believed_by_a_forwarded_listener() {
    let text = listener(
        "web",
        "trusted_proxies = [\"192.0.2.0/24\"]\nforwarded_header = \"forwarded\"",
    ) + &pool("app", &["uk.test:80"], "")
        + &route("app.test", "/", "app");
    let p = proxy(&text).await;
    let origin = p.http_origin(GB_IP, 80).await;

    let (r, me) = get_with(
        p.listener_addr("web"),
        &[
            ("forwarded", "for=6.6.6.6;proto=gopher"),
            ("x-forwarded-for", "7.7.7.7"),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let recs = p.audit.wait_records(1).await;
    assert_eq!(
        recs[0].client_addr,
        Some(me),
        "the spoofed chain is not believed"
    );
    let seen = &origin.seen()[0];
    assert_eq!(
        seen.all("forwarded"),
        vec!["for=127.0.0.1;proto=http;host=app.test"]
    );
    assert!(seen.all("x-forwarded-for").is_empty(), "{:?}", seen.headers);
}

#[test]
fn a_bad_forwarded_header_is_refused_at_config_time_with_its_line() {
    for (keys, want) in [
        (
            "forwarded_header = \"x-real-ip\"",
            "expected x-forwarded-for or forwarded",
        ),
        ("forwarded_header = \"X-Forwarded-For\"", "expected"),
    ] {
        let text = config_text(&(listener("web", keys) + &pool("app", &["uk.test:80"], "")));
        let line = text
            .lines()
            .position(|l| l.starts_with("forwarded_header"))
            .map(|i| i + 1);
        let err = Config::parse(&text, "test.toml", Path::new("/"))
            .expect_err("a bad forwarded_header is refused");
        assert_eq!(err.line, line, "{err}");
        let msg = err.to_string();
        assert!(msg.contains("listener[1].forwarded_header"), "{msg}");
        assert!(msg.contains(want), "{msg}");
        assert!(
            msg.contains(&format!("test.toml:{}", line.unwrap_or(0))),
            "{msg}"
        );
    }
    // A forward listener has no forwarding header to believe.
    let text = config_text("forwarded_header = \"forwarded\"");
    let err = Config::parse(&text, "test.toml", Path::new("/"))
        .expect_err("forwarded_header on a forward listener is refused");
    let msg = err.to_string();
    assert!(msg.contains("listener[0].forwarded_header"), "{msg}");
    assert!(msg.contains("only reverse listeners"), "{msg}");
}

// ---- health checks and member choice decided as the listener decides ---------------------------

/// A pool section with an active health check every 50 ms.
fn checked_pool(name: &str, members: &[&str]) -> String {
    pool(
        name,
        members,
        "health_check = \"/healthz\"\nhealth_interval = \"50ms\"\nhealth_timeout = \"2s\"",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_mode_listener_s_not_adequate_member_is_probed_and_stays_healthy() {
    let cn = HttpOrigin::start().await;
    let connector = Arc::new(RecordingConnector::default());
    connector.register(sa(CN_IP, 80), Route::Origin(cn.addr));
    let text = config_text(
        &(listener("web", "mode = \"report\"")
            + &checked_pool("cn", &["cn.test:80"])
            + &route("app.test", "/", "cn")),
    );
    let p = spawn_proxy_on(&text, connector).await;

    // A second check means the first one's result is in.
    wait_health_checks(&cn, 2).await;
    let r = get(p.listener_addr("web"), "app.test", "/").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.origin(), Some(cn.addr));
    let recs = p.audit.wait_records(1).await;
    let rec = record_for(&recs, "cn.test");
    assert!(rec.would_deny, "{rec:#?}");
    assert_eq!(rec.dialed_ip, Some(CN_IP));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_allowed_only_by_a_listener_scoped_rule_is_probed_and_stays_healthy() {
    let cn = HttpOrigin::start().await;
    let connector = Arc::new(RecordingConnector::default());
    connector.register(sa(CN_IP, 80), Route::Origin(cn.addr));
    // `web` may reach the CN member by a rule; `other` shares the pool and may not.
    let text = config_text(
        &(listener("web", "")
            + &listener("other", "")
            + &checked_pool("cn", &["cn.test:80"])
            + &route("app.test", "/", "cn")
            + "\n[[policy.rule]]\nid = \"web-cn\"\naction = \"allow\"\nlisteners = [\"web\"]\nhosts = [\"cn.test\"]\n"),
    );
    let p = spawn_proxy_on(&text, connector).await;

    wait_health_checks(&cn, 2).await;
    let r = get(p.listener_addr("web"), "app.test", "/").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.origin(), Some(cn.addr));
    let recs = p.audit.wait_records(1).await;
    assert_eq!(recs[0].reason, "rule-allow");
    assert_eq!(recs[0].rule.as_deref(), Some("web-cn"));

    // At request time the request's own listener decides.
    let r = get(p.listener_addr("other"), "app.test", "/").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    let recs = p.audit.wait_records(2).await;
    let rec = &of_listener(&recs, "other")[0];
    assert_eq!(rec.reason, "not-adequate");
    assert_eq!(rec.status, Some(403));
    assert_eq!(cn.requests(), 1, "only web's request reached the member");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_member_is_skipped_for_the_next_and_the_request_is_served() {
    let text = listener("web", "")
        + &pool("app", &["cn.test:80", "uk.test:81"], "")
        + &route("app.test", "/", "app");
    let p = proxy(&text).await;
    let uk = p.http_origin(GB_IP, 81).await;
    let web = p.listener_addr("web");

    // Round-robin starts at each member in turn: every request is served by the UK member.
    for i in 0..4 {
        let r = get(web, "app.test", &format!("/{i}")).await;
        assert_eq!(r.status, StatusCode::OK, "request {i}: {}", r.text());
        assert_eq!(r.origin(), Some(uk.addr), "request {i}");
    }
    assert!(
        p.dials().iter().all(|d| *d == sa(GB_IP, 81)),
        "the CN member is never dialled: {:?}",
        p.dials()
    );
    let recs = p.audit_barrier().await;
    let web_recs = of_listener(&recs, "web");
    assert_eq!(web_recs.len(), 4, "{web_recs:#?}");
    for r in web_recs {
        assert_eq!(r.decision, "allow");
        assert_eq!(r.reason, "home");
        assert_eq!(r.status, Some(200));
        assert_eq!(r.dest_host.as_deref(), Some("uk.test"));
        assert_eq!(r.dialed_ip, Some(GB_IP));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_member_is_denied_the_answer_is_403_with_one_record_naming_the_deny() {
    let text = listener("web", "")
        + &pool("app", &["cn.test:80", "127.0.0.4:8080"], "")
        + &route("app.test", "/", "app");
    let p = proxy(&text).await;
    let web = p.listener_addr("web");

    for i in 0..2 {
        let r = get(web, "app.test", &format!("/{i}")).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
        let decision = r.header("x-residency-decision").unwrap_or("");
        assert!(
            decision.contains("reason=not-adequate") && decision.contains("jurisdiction=CN"),
            "{decision}"
        );
    }
    assert!(p.dials().is_empty(), "{:?}", p.dials());
    let recs = p.audit_barrier().await;
    let web_recs = of_listener(&recs, "web");
    assert_eq!(web_recs.len(), 2, "one record per request: {web_recs:#?}");
    let mut hosts = Vec::new();
    for r in web_recs {
        assert_eq!(r.decision, "deny");
        assert_eq!(r.reason, "not-adequate");
        assert_eq!(r.status, Some(403));
        assert_eq!(r.dest_addrs.len(), 1);
        assert_eq!(r.dest_addrs[0].ip, CN_IP);
        let port = if r.dest_host.as_deref() == Some("cn.test") {
            80
        } else {
            8080
        };
        assert_eq!(r.dest_port, Some(port), "{r:#?}");
        hosts.extend(r.dest_host.clone());
    }
    hosts.sort();
    assert_eq!(
        hosts,
        ["127.0.0.4", "cn.test"],
        "each record names the member the request tried first"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_health_checked_pool_never_dials_a_denied_member_and_serves_from_the_next() {
    let uk = HttpOrigin::start().await;
    let connector = Arc::new(RecordingConnector::default());
    connector.register(sa(GB_IP, 81), Route::Origin(uk.addr));
    let text = config_text(
        &(listener("web", "")
            + &checked_pool("app", &["cn.test:80", "uk.test:81"])
            + &route("app.test", "/", "app")),
    );
    let p = spawn_proxy_on(&text, connector).await;

    // The checker goes through the members in order: the UK member's second check means the
    // CN member has been through the checker at least once.
    wait_health_checks(&uk, 2).await;
    for i in 0..4 {
        let r = get(p.listener_addr("web"), "app.test", &format!("/{i}")).await;
        assert_eq!(r.status, StatusCode::OK, "request {i}: {}", r.text());
        assert_eq!(r.origin(), Some(uk.addr));
    }
    assert!(
        p.dials().iter().all(|d| *d == sa(GB_IP, 81)),
        "the CN member is never dialled, by checks or requests: {:?}",
        p.dials()
    );
    p.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_upstream_max_connections_a_request_waits_then_times_out_as_a_connect() {
    let text = "\n[limits]\nupstream_max_connections = 1\nconnect_timeout = \"300ms\"\n"
        .to_string()
        + &listener("web", "")
        + &pool("app", &["uk.test:80"], "")
        + &route("app.test", "/", "app");
    let p = proxy(&text).await;
    let origin = p.http_origin(GB_IP, 80).await;
    let web = p.listener_addr("web");

    // The first request holds the member's one connection until its body ends, which is
    // not before the second request has its answer.
    let mut slow = h1(web).await;
    let req = slow.request("GET", "app.test", "/gated", empty());
    let held = slow
        .try_send_streaming(req)
        .await
        .expect("the slow request");
    let second = get(web, "app.test", "/second").await;
    assert_eq!(
        second.status,
        StatusCode::GATEWAY_TIMEOUT,
        "no second connection"
    );
    assert_eq!(origin.connections(), 1);

    origin.release();
    let body = count_body(held.into_body()).await.expect("the slow body");
    assert_eq!(body, "first;second".len() as u64);
    // Once the first is done, its connection serves the next request.
    assert_eq!(get(web, "app.test", "/third").await.status, StatusCode::OK);
    assert_eq!(origin.seen().len(), 2);
    assert_eq!(origin.connections(), 1, "both over the one connection");
}
