//! No audit record lost: a shutdown that cuts open tunnels at the drain deadline still has one
//! record per tunnel written when it returns (in process and through the binary with SIGTERM);
//! an upstream body that breaks off is recorded as an error; reverse listeners record the
//! requests hyper refuses (400, 431) and failed TLS handshakes, one record each.
//!
//! After a shutdown nothing here waits or polls for records: `ProxyHandle::shutdown` followed
//! by `AuditWriter::shutdown` must be enough. (Before records were tracked, the queue-of-one
//! variant lost a record in about one run in three: the writer's shutdown raced the detached
//! tasks that were still handing records over.)

#[path = "support/pki.rs"]
mod pki;
mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use residency_proxy::audit::{self, AuditRecord, AuditTarget};
use residency_proxy::config::Config;
use residency_proxy::server::{self, Deps, Snapshot};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

use pki::{Pki, client_config};
use support::*;

/// Tunnels held open across the shutdown.
const TUNNELS: usize = 8;

fn of_listener<'a>(records: &'a [AuditRecord], name: &str) -> Vec<&'a AuditRecord> {
    records.iter().filter(|r| r.listener == name).collect()
}

// ---- tunnels cut at the drain deadline ---------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_open_tunnels_cut_at_the_deadline_writes_one_record_per_tunnel() {
    let mut p = spawn_proxy("").await;
    let _echo = p.tcp_origin(GB_IP, 443).await;
    let mut tunnels = Vec::new();
    for i in 0..TUNNELS {
        let (resp, mut t) = p.connect("uk.test:443").await;
        assert_eq!(resp.status, hyper::StatusCode::OK);
        let hello = format!("tunnel-{i}");
        t.write_all(hello.as_bytes()).await.expect("write");
        assert_eq!(read_exactly(&mut t, hello.len()).await, hello.as_bytes());
        tunnels.push(t);
    }
    assert!(
        p.audit.records().iter().all(|r| r.intent != "connect"),
        "no tunnel has ended yet"
    );

    let drained = tokio::time::timeout(WAIT, p.shutdown(Duration::from_millis(50)))
        .await
        .expect("shutdown returns after the drain time");
    assert!(!drained, "the open tunnels had to be cut");
    // Nothing else: the writer is flushed and the records read at once.
    p.close_audit().await;

    let recs = p.audit.records();
    let cut: Vec<&AuditRecord> = recs.iter().filter(|r| r.intent == "connect").collect();
    assert_eq!(cut.len(), TUNNELS, "one record per tunnel: {recs:#?}");
    for r in &cut {
        assert_eq!(r.dest_host.as_deref(), Some("uk.test"));
        assert_eq!(r.status, Some(200));
        assert_eq!(r.decision, "allow");
        assert_eq!(r.bytes_up, r.bytes_down);
        assert!(r.bytes_up >= "tunnel-0".len() as u64, "{r:?}");
        assert_eq!(
            r.error_side.as_deref(),
            Some("internal"),
            "the proxy cut it: {r:?}"
        );
        assert!(
            r.error.as_deref().is_some_and(|e| e.contains("drain")),
            "{r:?}"
        );
    }
    for mut t in tunnels {
        assert_eq!(read_to_eof(&mut t).await, b"", "the client sees the cut");
    }
}

/// As above with a queue of one record: when the tunnels are cut, nearly every record has to
/// wait for queue space, and the shutdown must wait for those too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_tunnels_whose_records_wait_for_queue_space_are_all_written() {
    const MANY: usize = 64;
    let config = Config::parse(&config_text(""), "test.toml", Path::new("."))
        .expect("the test configuration");
    let records = Arc::new(Mutex::new(Vec::new()));
    let (sink, writer) = audit::spawn(
        AuditTarget::Memory(records.clone()),
        1,
        Duration::from_secs(5),
    )
    .expect("the audit writer");
    let connector = Arc::new(RecordingConnector::default());
    let echo = TcpEchoOrigin::start().await;
    connector.register(sa(GB_IP, 443), Route::Origin(echo.addr));
    let deps = Deps {
        resolver: Arc::new(world_resolver()),
        connector,
        audit: sink.clone(),
    };
    let proxy = server::start(Snapshot::new(config, world_table()), deps)
        .await
        .expect("start the proxy");
    let addr = proxy.addr("egress").expect("the egress listener");
    let mut tunnels = Vec::new();
    for _ in 0..MANY {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"CONNECT uk.test:443 HTTP/1.1\r\nHost: uk.test:443\r\n\r\n")
            .await
            .expect("write CONNECT");
        let head = read_exactly(&mut s, b"HTTP/1.1 200 OK\r\n".len()).await;
        assert_eq!(head, b"HTTP/1.1 200 OK\r\n");
        tunnels.push(s);
    }

    let drained = tokio::time::timeout(WAIT, proxy.shutdown(Duration::from_millis(20)))
        .await
        .expect("shutdown returns");
    assert!(!drained);
    writer.shutdown().await.expect("the writer flushes");

    let recs = records.lock().expect("records").clone();
    let cut = recs.iter().filter(|r| r.intent == "connect").count();
    assert_eq!(cut, MANY, "one record per tunnel, none to the fallback");
    assert_eq!(sink.dropped(), 0);
}

// ---- the same through the binary, with SIGTERM and an audit file -----------------------------

/// A blocking TCP echo server on loopback, for the binary's real connector.
fn echo_server() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an echo server");
    let addr = listener.local_addr().expect("echo address");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// Kills the child if the test fails before it exits.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Read the child's stderr until it names the bound address of `listener`; keep draining it in
/// a thread so the child never blocks on a full pipe. Returns the address and the lines so far.
fn listener_addr(child: &mut Child, listener: &str) -> SocketAddr {
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    let prefix = format!("residency-proxy: listener {listener} on ");
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if !sent && let Some(addr) = line.strip_prefix(&prefix) {
                let _ = tx.send(addr.trim().to_string());
                sent = true;
            }
        }
    });
    // Start-up compiles the embedded table, which takes seconds in a debug build.
    let addr = rx
        .recv_timeout(WAIT * 6)
        .expect("the proxy names its listener on stderr");
    addr.parse().expect("a socket address")
}

fn connect_tunnel(proxy: SocketAddr, target: SocketAddr) -> std::net::TcpStream {
    let mut s = std::net::TcpStream::connect(proxy).expect("connect to the proxy");
    s.set_read_timeout(Some(WAIT)).expect("read timeout");
    write!(s, "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").expect("write CONNECT");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut byte).expect("read the CONNECT answer");
        assert_eq!(n, 1, "closed before the CONNECT answer: {head:?}");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    s.write_all(b"ping").expect("write through the tunnel");
    let mut back = [0u8; 4];
    s.read_exact(&mut back).expect("the echo comes back");
    assert_eq!(&back, b"ping");
    s
}

fn audit_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .expect("read the audit file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("each audit line is JSON"))
        .collect()
}

#[test]
fn sigterm_with_open_tunnels_cut_at_the_deadline_still_writes_one_record_per_tunnel() {
    let echo = echo_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let audit = dir.path().join("audit.log");
    let config = dir.path().join("proxy.toml");
    std::fs::write(
        &config,
        format!(
            r#"[audit]
output = {audit:?}

[limits]
drain_timeout = "100ms"

[admin]
bind = "127.0.0.1:0"

[policy]
internal_allowed = ["127.0.0.1/32"]

[[listener]]
name = "egress"
bind = "127.0.0.1:0"
allowed_clients = ["127.0.0.1/32"]
allowed_ports = [{port}]
"#,
            audit = audit.display().to_string(),
            port = echo.port()
        ),
    )
    .expect("write the config");
    let child = Command::new(env!("CARGO_BIN_EXE_residency-proxy"))
        .arg("run")
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the proxy");
    let mut child = Running(child);
    let proxy = listener_addr(&mut child.0, "egress");

    let tunnels: Vec<_> = (0..TUNNELS).map(|_| connect_tunnel(proxy, echo)).collect();

    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "SIGTERM sent");
    let deadline = Instant::now() + WAIT;
    let exit = loop {
        if let Some(s) = child.0.try_wait().expect("wait for the proxy") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the proxy did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(exit.success(), "clean exit after SIGTERM: {exit:?}");
    drop(tunnels);

    let lines = audit_lines(&audit);
    let cut: Vec<&serde_json::Value> = lines.iter().filter(|v| v["intent"] == "connect").collect();
    assert_eq!(cut.len(), TUNNELS, "one record per tunnel: {lines:#?}");
    for v in cut {
        assert_eq!(v["dest.port"], echo.port());
        assert_eq!(v["status"], 200);
        assert_eq!(v["bytes.up"], 4);
        assert_eq!(v["bytes.down"], 4);
        assert_eq!(v["error.side"], "internal", "{v}");
    }
    // The file the process wrote from its start line to its shutdown is one intact chain.
    let verify = Command::new(env!("CARGO_BIN_EXE_residency-proxy"))
        .arg("verify")
        .arg(&audit)
        .output()
        .expect("run verify");
    let said = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "{said}");
    assert!(said.starts_with("OK: "), "{said}");
}

// ---- an upstream body that breaks off ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_body_that_breaks_off_is_recorded_as_an_upstream_error() {
    let mut p = spawn_proxy("").await;
    // An origin that promises 100 bytes, sends 5 and hangs up.
    let origin = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let origin_addr = origin.local_addr().expect("origin address");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = origin.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello")
                    .await;
            });
        }
    });
    p.route(GB_IP, 80, origin_addr);

    let mut client = p.client().await;
    let resp = client
        .send_streaming(request("GET", "http://uk.test/cut", Vec::new()))
        .await;
    assert_eq!(resp.status(), hyper::StatusCode::OK);
    let body = tokio::time::timeout(WAIT, http_body_util::BodyExt::collect(resp.into_body()))
        .await
        .expect("the body ends one way or another");
    assert!(body.is_err(), "the client sees the body break off");
    drop(client);

    p.shutdown(WAIT).await;
    p.close_audit().await;
    let recs = p.audit.records();
    let r = record_for(&recs, "uk.test");
    assert_eq!(r.status, Some(200));
    assert_eq!(r.bytes_down, 5);
    assert_eq!(r.error_side.as_deref(), Some("upstream"), "{r:?}");
    assert!(
        r.error
            .as_deref()
            .is_some_and(|e| e.contains("response body")),
        "{r:?}"
    );
}

// ---- reverse listeners: what hyper refuses, and failed TLS handshakes --------------------------

/// A plain reverse listener `web` (HTTP/1.1 and h2c) with a 16 KiB header limit.
fn plain_reverse() -> String {
    config_text(
        "\n[limits]\nmax_header_bytes = 16384\n\n[[listener]]\nname = \"web\"\nkind = \"reverse\"\nbind = \"127.0.0.1:0\"\n",
    )
}

/// Write `bytes` and read until the server closes (bounded), returning what it sent.
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let (mut rd, mut wr) = s.split();
    // The server may stop reading early (431): write and read concurrently.
    let write = async move {
        let _ = wr.write_all(bytes).await;
    };
    let read = async move {
        let mut got = Vec::new();
        let _ = tokio::time::timeout(WAIT, rd.read_to_end(&mut got)).await;
        got
    };
    let ((), got) = tokio::join!(write, read);
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reverse_listener_records_the_400_and_the_431_hyper_sends() {
    let mut p = spawn_proxy_text(&plain_reverse()).await;
    let web = p.listener_addr("web");

    let bad = exchange(web, b"GET / HTTP/1.1 extra\r\nHost: app.test\r\n\r\n").await;
    assert!(bad.starts_with("HTTP/1.1 400"), "{bad:?}");

    let mut big = b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 100 * 1024));
    big.extend_from_slice(b"\r\n\r\n");
    let too_large = exchange(web, &big).await;
    assert!(too_large.starts_with("HTTP/1.1 431"), "{too_large:?}");

    p.shutdown(WAIT).await;
    p.close_audit().await;
    let recs = p.audit.records();
    let web_recs = of_listener(&recs, "web");
    let mut statuses: Vec<Option<u16>> = web_recs.iter().map(|r| r.status).collect();
    statuses.sort();
    assert_eq!(
        statuses,
        [Some(400), Some(431)],
        "one record each: {recs:#?}"
    );
    for r in web_recs {
        assert_eq!(r.reason, "malformed-request");
        assert_eq!(r.decision, "deny");
        assert_eq!(r.error_side.as_deref(), Some("downstream"));
        assert_eq!(r.intent, "reverse");
    }
}

/// A TLS reverse listener `web` serving `app.test` with a certificate of `pki`.
fn tls_reverse(pki: &Pki) -> String {
    let leaf = pki.leaf("app", &["app.test"]);
    config_text(&format!(
        "\n[[listener]]\nname = \"web\"\nkind = \"reverse\"\nbind = \"127.0.0.1:0\"\n\n[[listener.cert]]\nchain = {:?}\nkey = {:?}\n",
        leaf.chain.display().to_string(),
        leaf.key.display().to_string()
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reverse_listener_records_each_failed_tls_handshake_once() {
    let pki = Pki::new();
    let mut p = spawn_proxy_text(&tls_reverse(&pki)).await;
    let web = p.listener_addr("web");

    // Not TLS at all.
    let garbage = exchange(web, b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n").await;
    assert!(!garbage.starts_with("HTTP/1.1 200"), "{garbage:?}");

    // A client that does not trust the certificate aborts the handshake with an alert (its
    // own CA has the same name, so the alert it sends is a signature failure).
    let stranger = Pki::new();
    let config = client_config(
        &stranger,
        rustls::crypto::ring::default_provider(),
        rustls::DEFAULT_VERSIONS,
        &["http/1.1"],
        false,
        true,
    );
    let stream = TcpStream::connect(web).await.expect("connect");
    let name = ServerName::try_from("app.test").expect("a server name");
    let outcome = tokio::time::timeout(WAIT, TlsConnector::from(config).connect(name, stream))
        .await
        .expect("the handshake ends");
    assert!(outcome.is_err(), "the client refuses the certificate");

    // A connection closed before its first byte attempted nothing: no record.
    drop(TcpStream::connect(web).await.expect("connect"));

    // And a handshake that succeeds is no refusal.
    let trusted = client_config(
        &pki,
        rustls::crypto::ring::default_provider(),
        rustls::DEFAULT_VERSIONS,
        &["http/1.1"],
        false,
        true,
    );
    let stream = TcpStream::connect(web).await.expect("connect");
    let name = ServerName::try_from("app.test").expect("a server name");
    let mut ok = tokio::time::timeout(WAIT, TlsConnector::from(trusted).connect(name, stream))
        .await
        .expect("the handshake ends")
        .expect("a trusting client completes the handshake");
    ok.shutdown().await.expect("close");
    drop(ok);

    p.shutdown(WAIT).await;
    p.close_audit().await;
    let recs = p.audit.records();
    let web_recs = of_listener(&recs, "web");
    assert_eq!(
        web_recs.len(),
        2,
        "one record per failed handshake: {recs:#?}"
    );
    for r in &web_recs {
        assert_eq!(r.reason, "tls-handshake-failed");
        assert_eq!(r.decision, "deny");
        assert_eq!(r.status, None);
        assert_eq!(r.error_side.as_deref(), Some("downstream"));
        assert!(r.client_addr.is_some());
    }
    assert!(
        web_recs.iter().any(|r| r
            .error
            .as_deref()
            .is_some_and(|e| e.contains("fatal alert"))),
        "the client's alert is named: {web_recs:#?}"
    );
}
