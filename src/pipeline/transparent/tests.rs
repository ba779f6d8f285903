//! The transparent pipeline over loopback, with the original destination handed in (the
//! kernel's `SO_ORIGINAL_DST` needs a NAT rule: `tests/transparent_netns.rs` covers that part
//! in network namespaces). Origins listen on 127.0.0.x addresses the test table places in
//! countries; the real connector dials them, so only what the policy vetted is reached.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::*;
use crate::audit::{self, AuditRecord, AuditTarget, AuditWriter};
use crate::config::Config;
use crate::destination::StaticResolver;
use crate::jurisdiction::TableBuilder;
use crate::jurisdiction::sources::{add_overrides, parse_overrides_csv};
use crate::state::Deps;
use crate::upstream::TcpConnector;
use crate::upstream::pool::{IdleConns, PoolRegistry};

const GB: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const CN: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4));
const US: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 5));
const US_OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 6));
const WAIT: Duration = Duration::from_secs(10);

const WORLD: &str = "cidr, jurisdiction, label
127.0.0.2/32, GB, test: United Kingdom
127.0.0.4/32, CN, test: China
127.0.0.5/32, US, test: United States
127.0.0.6/32, US, test: United States, another recipient
";

/// An origin on `ip` (an OS-picked port) that echoes, after an optional banner.
async fn echo_origin(ip: IpAddr, banner: &'static [u8]) -> SocketAddr {
    let l = TcpListener::bind((ip, 0)).await.expect("bind an origin");
    let addr = l.local_addr().expect("origin address");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let _ = s.write_all(banner).await;
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// A TLS origin on `ip` with its own certificate for `name` (made here with rcgen); it
/// answers every line with `origin:` and the line. Returns its address and certificate.
async fn tls_origin(ip: IpAddr, name: &str) -> (SocketAddr, CertificateDer<'static>) {
    let ck = rcgen::generate_simple_self_signed(vec![name.to_string()]).expect("a certificate");
    let cert = ck.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let l = TcpListener::bind((ip, 0)).await.expect("bind a TLS origin");
    let addr = l.local_addr().expect("origin address");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(s).await else {
                    return;
                };
                let mut buf = [0u8; 256];
                while let Ok(n) = tls.read(&mut buf).await {
                    if n == 0 || tls.write_all(b"origin:").await.is_err() {
                        break;
                    }
                    let _ = tls.write_all(&buf[..n]).await;
                }
            });
        }
    });
    (addr, cert)
}

struct World {
    shared: Arc<Shared>,
    records: Arc<Mutex<Vec<AuditRecord>>>,
    writer: Option<AuditWriter>,
    listener: Arc<ListenerConfig>,
    /// Stands in for the transparent listener's socket.
    front: TcpListener,
    own: Arc<OwnConnections>,
    flows: Vec<JoinHandle<()>>,
}

impl World {
    /// A proxy state with one transparent listener `sidecar` (its own keys in `keys`), and an
    /// attestation for `attested.test`, which resolves to [`US`].
    async fn new(keys: &str, ports: &[u16]) -> World {
        let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
        let text = format!(
            "[[listener]]\nname = \"sidecar\"\nkind = \"transparent\"\nbind = \"127.0.0.1:0\"\nallowed_ports = [{}]\n{keys}\n\
             [[listener]]\nname = \"egress\"\nbind = \"127.0.0.1:39128\"\n\
             [jurisdiction]\ncloud_ranges = false\n\
             [[policy.attestation]]\nhost = \"attested.test\"\norganisation = \"Attested Ltd\"\nbasis = \"test\"\n",
            ports.join(", ")
        );
        let config = Config::parse(&text, "test.toml", Path::new(".")).expect("config");
        let mut b = TableBuilder::with_special_ranges_where(|r| r.cidr != "127.0.0.0/8");
        let entries = parse_overrides_csv(WORLD, "world.csv").expect("world");
        add_overrides(&entries, &mut b, "world.csv").expect("world");
        let mut resolver = StaticResolver::new();
        resolver
            .insert("gb.test", vec![GB])
            .insert("cn.test", vec![CN])
            .insert("attested.test", vec![US]);
        let records = Arc::new(Mutex::new(Vec::new()));
        let (sink, writer) = audit::spawn(
            AuditTarget::Memory(records.clone()),
            64,
            Duration::from_secs(1),
        )
        .expect("audit");
        let snapshot = Snapshot::new(config, b.build());
        let listener = snapshot.listener("sidecar").expect("sidecar").clone();
        let shared = Arc::new(Shared {
            state: ArcSwap::from_pointee(snapshot),
            deps: Deps {
                resolver: Arc::new(resolver),
                connector: Arc::new(TcpConnector),
                audit: sink,
            },
            shutdown: CancellationToken::new(),
            hard: CancellationToken::new(),
            tracker: TaskTracker::new(),
            egress_idle: IdleConns::new(),
            pools: PoolRegistry::default(),
            health_loops: Mutex::new(HashSet::new()),
            metrics: Arc::new(crate::metrics::Metrics::new()),
            tunnels: Arc::new(crate::state::tunnels::LiveTunnels::default()),
        });
        World {
            shared,
            records,
            writer: Some(writer),
            listener,
            front: TcpListener::bind("127.0.0.1:0").await.expect("front"),
            own: Arc::new(OwnConnections::default()),
            flows: Vec::new(),
        }
    }

    /// A client connection "redirected" from `original`: the pipeline handles it as it
    /// would one whose conntrack entry names `original`.
    async fn connect(&mut self, original: Result<SocketAddr, String>) -> TcpStream {
        let client = TcpStream::connect(self.front.local_addr().expect("front"))
            .await
            .expect("connect");
        let (server, peer) = self.front.accept().await.expect("accept");
        let conn = Redirected {
            client: peer,
            local: server.local_addr().expect("local"),
            original,
        };
        let flow = handle(
            self.shared.clone(),
            self.listener.clone(),
            server,
            conn,
            self.own.clone(),
        );
        self.flows.push(tokio::spawn(flow));
        client
    }

    /// Wait for every flow to end, flush the audit writer, and return the records.
    async fn records(mut self) -> Vec<AuditRecord> {
        for f in self.flows.drain(..) {
            tokio::time::timeout(WAIT, f)
                .await
                .expect("the flow ends")
                .expect("the flow does not panic");
        }
        let writer = self.writer.take().expect("writer");
        drop(self.shared);
        writer.shutdown().await.expect("flush");
        self.records.lock().expect("records").clone()
    }
}

fn client_config(trusted: &CertificateDer<'static>, sni: bool) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.clone()).expect("trust the origin");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut c = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    c.enable_sni = sni;
    Arc::new(c)
}

/// Read until EOF (bounded): what a denied or refused client gets.
async fn read_all(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .expect("the proxy closes the connection");
    out
}

#[tokio::test]
async fn tls_reaches_the_origin_with_its_own_certificate_and_is_recorded() {
    let (origin, cert) = tls_origin(GB, "gb.test").await;
    let mut w = World::new("", &[origin.port()]).await;
    let tcp = w.connect(Ok(origin)).await;
    let connector = tokio_rustls::TlsConnector::from(client_config(&cert, true));
    let name = ServerName::try_from("gb.test").expect("name");
    let mut tls = tokio::time::timeout(WAIT, connector.connect(name, tcp))
        .await
        .expect("handshake in time")
        .expect("the handshake completes with the origin's certificate");
    tls.write_all(b"hello").await.expect("write");
    let mut buf = [0u8; 12];
    tls.read_exact(&mut buf).await.expect("read");
    assert_eq!(&buf, b"origin:hello");
    drop(tls);
    let recs = w.records().await;
    assert_eq!(recs.len(), 1, "{recs:#?}");
    let r = &recs[0];
    assert_eq!(r.intent, Intent::Transparent);
    assert_eq!(r.decision, Verdict::Allow);
    assert_eq!(r.reason, "home");
    assert_eq!(r.dest_host.as_deref(), Some("gb.test"));
    assert_eq!(r.dest_claimed.as_deref(), Some("gb.test"));
    assert_eq!(r.dest_verified, Some(true));
    assert_eq!(r.dest_port, Some(origin.port()));
    assert_eq!(r.dialed_ip, Some(GB));
    assert_eq!(r.dest_addrs.len(), 1);
    assert_eq!(r.dest_addrs[0].jurisdiction, "GB");
    assert!(r.bytes_up > 200 && r.bytes_down > 200, "{r:?}");
    assert_eq!(r.error, None);
}

#[tokio::test]
async fn a_not_adequate_destination_is_closed_unanswered_and_never_dialled() {
    let (origin, cert) = tls_origin(CN, "cn.test").await;
    let mut w = World::new("", &[origin.port()]).await;
    let tcp = w.connect(Ok(origin)).await;
    let connector = tokio_rustls::TlsConnector::from(client_config(&cert, true));
    let name = ServerName::try_from("cn.test").expect("name");
    let r = tokio::time::timeout(WAIT, connector.connect(name, tcp))
        .await
        .expect("the proxy answers in time");
    assert!(r.is_err(), "no handshake through a deny");
    let recs = w.records().await;
    let r = &recs[0];
    assert_eq!(
        (r.decision, r.reason.as_str()),
        (Verdict::Deny, "not-adequate")
    );
    assert_eq!(r.dest_verified, Some(true), "cn.test does resolve there");
    assert_eq!(r.dialed_ip, None);
    assert_eq!(r.dest_addrs[0].jurisdiction, "CN");
}

#[tokio::test]
async fn an_attested_name_counts_only_where_it_resolves() {
    let (attested, cert) = tls_origin(US, "attested.test").await;
    let (elsewhere, _) = tls_origin(US_OTHER, "attested.test").await;
    let mut w = World::new("", &[attested.port(), elsewhere.port()]).await;
    for original in [attested, elsewhere] {
        let tcp = w.connect(Ok(original)).await;
        let connector = tokio_rustls::TlsConnector::from(client_config(&cert, true));
        let name = ServerName::try_from("attested.test").expect("name");
        let _ = tokio::time::timeout(WAIT, async {
            let mut tls = connector.connect(name, tcp).await?;
            tls.write_all(b"x").await?;
            let mut buf = [0u8; 8];
            tls.read_exact(&mut buf).await?;
            Ok::<_, std::io::Error>(())
        })
        .await
        .expect("in time");
    }
    let recs = w.records().await;
    let at = |ip: IpAddr| {
        recs.iter()
            .find(|r| r.dest_addrs.first().is_some_and(|a| a.ip == ip))
            .expect("a record")
    };
    let ok = at(US);
    assert_eq!(
        (ok.decision, ok.reason.as_str()),
        (Verdict::Allow, "attested")
    );
    assert_eq!(ok.dest_verified, Some(true));
    assert!(ok.bytes_down > 0);
    let borrowed = at(US_OTHER);
    assert_eq!(
        (borrowed.decision, borrowed.reason.as_str()),
        (Verdict::Deny, "conditional-not-attested"),
        "a client cannot borrow an attested name to reach another address"
    );
    assert_eq!(borrowed.dest_claimed.as_deref(), Some("attested.test"));
    assert_eq!(borrowed.dest_verified, Some(false));
    assert_eq!(borrowed.dest_host, Some(US_OTHER.to_string()));
    assert_eq!(borrowed.dialed_ip, None);
}

#[tokio::test]
async fn without_host_must_resolve_the_claim_is_believed_and_recorded_unverified() {
    let (elsewhere, cert) = tls_origin(US_OTHER, "attested.test").await;
    let mut w = World::new("host_must_resolve = false", &[elsewhere.port()]).await;
    let tcp = w.connect(Ok(elsewhere)).await;
    let connector = tokio_rustls::TlsConnector::from(client_config(&cert, true));
    let name = ServerName::try_from("attested.test").expect("name");
    let mut tls = connector.connect(name, tcp).await.expect("handshake");
    tls.write_all(b"x").await.expect("write");
    let mut buf = [0u8; 8];
    tls.read_exact(&mut buf).await.expect("read");
    drop(tls);
    let r = &w.records().await[0];
    assert_eq!(
        (r.decision, r.reason.as_str()),
        (Verdict::Allow, "attested")
    );
    assert_eq!(r.dest_verified, Some(false));
}

#[tokio::test]
async fn plain_http_is_decided_on_its_host_and_a_deny_is_answered_403() {
    let gb = echo_origin(GB, b"").await;
    let cn = echo_origin(CN, b"").await;
    let mut w = World::new("", &[gb.port(), cn.port()]).await;
    let req = |port: u16, host: &str| {
        format!("GET / HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n")
    };
    let mut c = w.connect(Ok(gb)).await;
    let sent = req(gb.port(), "gb.test");
    c.write_all(sent.as_bytes()).await.expect("write");
    let mut echoed = vec![0u8; sent.len()];
    c.read_exact(&mut echoed).await.expect("echo");
    assert_eq!(
        echoed,
        sent.as_bytes(),
        "the peeked bytes reach the origin untouched"
    );
    drop(c);
    let mut c = w.connect(Ok(cn)).await;
    c.write_all(req(cn.port(), "cn.test").as_bytes())
        .await
        .expect("write");
    let answer = String::from_utf8(read_all(&mut c).await).expect("text");
    assert!(answer.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{answer}");
    assert!(
        answer.contains("x-residency-decision: deny; reason=not-adequate; jurisdiction=CN"),
        "{answer}"
    );
    let recs = w.records().await;
    let gb_rec = recs.iter().find(|r| r.dialed_ip == Some(GB)).expect("gb");
    assert_eq!(gb_rec.dest_host.as_deref(), Some("gb.test"));
    assert_eq!(gb_rec.dest_claimed, Some(format!("gb.test:{}", gb.port())));
    assert_eq!(gb_rec.dest_verified, Some(true));
    assert_eq!(gb_rec.bytes_up as usize, sent.len());
    let cn_rec = recs
        .iter()
        .find(|r| r.decision == Verdict::Deny)
        .expect("cn");
    assert_eq!(cn_rec.status, Some(403));
}

#[tokio::test]
async fn no_sni_and_a_silent_client_are_decided_by_address() {
    let (origin, cert) = tls_origin(GB, "gb.test").await;
    let banner = echo_origin(GB, b"220 smtp.gb.test ready\r\n").await;
    let mut w = World::new("peek_timeout = \"50ms\"", &[origin.port(), banner.port()]).await;
    let tcp = w.connect(Ok(origin)).await;
    let connector = tokio_rustls::TlsConnector::from(client_config(&cert, false));
    let name = ServerName::try_from("gb.test").expect("name");
    let mut tls = connector.connect(name, tcp).await.expect("handshake");
    tls.write_all(b"x").await.expect("write");
    let mut buf = [0u8; 8];
    tls.read_exact(&mut buf).await.expect("read");
    drop(tls);
    // Server speaks first: nothing to peek; the banner arrives once the wait is over.
    let mut c = w.connect(Ok(banner)).await;
    let mut line = vec![0u8; 24];
    tokio::time::timeout(WAIT, c.read_exact(&mut line))
        .await
        .expect("in time")
        .expect("the banner");
    assert_eq!(&line, b"220 smtp.gb.test ready\r\n");
    drop(c);
    let recs = w.records().await;
    for r in &recs {
        assert_eq!(
            (r.decision, r.reason.as_str()),
            (Verdict::Allow, "home"),
            "{r:?}"
        );
        assert_eq!(r.dest_claimed, None);
        assert_eq!(r.dest_verified, Some(false));
        assert_eq!(r.dest_host, Some(GB.to_string()));
    }
    assert_eq!(recs.len(), 2);
}

#[tokio::test]
async fn metadata_and_unlisted_ports_are_denied_before_any_dial() {
    let mut w = World::new("", &[443]).await;
    let metadata: SocketAddr = "169.254.169.254:443".parse().expect("addr");
    let mut c = w.connect(Ok(metadata)).await;
    c.write_all(b"GET / HTTP/1.1\r\nHost: gb.test\r\n\r\n")
        .await
        .expect("write");
    let answer = String::from_utf8(read_all(&mut c).await).expect("text");
    assert!(answer.contains("reason=metadata"), "{answer}");
    let gb_port: SocketAddr = SocketAddr::new(GB, 8443);
    let mut c = w.connect(Ok(gb_port)).await;
    c.write_all(b"\x16\x03\x01").await.expect("write");
    c.shutdown().await.expect("shutdown");
    read_all(&mut c).await;
    let recs = w.records().await;
    let reasons: HashSet<String> = recs.iter().map(|r| r.reason.to_string()).collect();
    assert_eq!(
        reasons,
        HashSet::from(["metadata".to_string(), "port-not-allowed".to_string()]),
        "{recs:#?}"
    );
    assert!(recs.iter().all(|r| r.dialed_ip.is_none()));
}

#[tokio::test]
async fn connections_not_redirected_or_looping_are_refused_with_a_record() {
    let mut w = World::new("", &[443, 39128]).await;
    let front = w.front.local_addr().expect("front");
    let egress: SocketAddr = "127.0.0.1:39128".parse().expect("addr");
    for original in [
        Err("Protocol not available".to_string()),
        Ok(front),
        Ok(egress),
    ] {
        let mut c = w.connect(original).await;
        assert!(read_all(&mut c).await.is_empty());
    }
    let recs = w.records().await;
    let reasons: Vec<String> = recs.iter().map(|r| r.reason.to_string()).collect();
    assert_eq!(
        reasons.iter().filter(|r| *r == "not-redirected").count(),
        2,
        "{recs:#?}"
    );
    assert_eq!(
        reasons.iter().filter(|r| *r == "redirect-loop").count(),
        1,
        "{recs:#?}"
    );
    assert!(
        recs.iter()
            .all(|r| r.decision == Verdict::Deny && r.dialed_ip.is_none())
    );
    assert!(recs.iter().all(|r| r.intent == Intent::Transparent));
}

#[tokio::test]
async fn the_proxys_own_upstream_connection_redirected_back_is_refused() {
    let origin = echo_origin(GB, b"").await;
    let mut w = World::new("", &[origin.port()]).await;
    // A connection from an address the proxy's own upstream connection has: as if the
    // redirect rule had caught the proxy's dial.
    let client = TcpStream::connect(w.front.local_addr().expect("front"))
        .await
        .expect("connect");
    let (server, peer) = w.front.accept().await.expect("accept");
    let _registered = w.own.insert(client.local_addr().expect("local"));
    let conn = Redirected {
        client: peer,
        local: server.local_addr().expect("local"),
        original: Ok(origin),
    };
    let flow = handle(
        w.shared.clone(),
        w.listener.clone(),
        server,
        conn,
        w.own.clone(),
    );
    w.flows.push(tokio::spawn(flow));
    let mut client = client;
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: gb.test\r\n\r\n")
        .await
        .expect("write");
    assert!(read_all(&mut client).await.is_empty());
    let recs = w.records().await;
    assert_eq!(recs[0].reason, "redirect-loop");
    assert!(
        recs[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("--uid-owner"))
    );
}

#[test]
fn own_connections_forget_a_connection_when_it_closes() {
    let own = Arc::new(OwnConnections::default());
    let a: SocketAddr = "10.0.0.1:40000".parse().expect("addr");
    let mapped: SocketAddr = "[::ffff:10.0.0.1]:40000".parse().expect("addr");
    let g = own.insert(a);
    assert!(own.contains(a) && own.contains(mapped));
    drop(g);
    assert!(!own.contains(a));
}

#[test]
fn claims_are_cut_on_a_character_boundary() {
    assert_eq!(truncate("abc", 2), "ab");
    assert_eq!(truncate("é", 1), "");
    assert_eq!(truncate("short", 512), "short");
}

#[tokio::test]
async fn a_connection_on_a_listener_no_longer_configured_is_recorded_and_closed() {
    let origin = echo_origin(GB, b"").await;
    let mut w = World::new("", &[origin.port()]).await;
    // A reload that turned `sidecar` into a forward listener.
    let text = "[[listener]]\nname = \"sidecar\"\nbind = \"127.0.0.1:0\"\n";
    let config = Config::parse(text, "test.toml", Path::new(".")).expect("config");
    let table = TableBuilder::with_special_ranges_where(|r| r.cidr != "127.0.0.0/8").build();
    w.shared.state.store(Arc::new(Snapshot::new(config, table)));
    let mut c = w.connect(Ok(origin)).await;
    assert!(read_all(&mut c).await.is_empty());
    let recs = w.records().await;
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].reason, "listener-not-configured");
    assert_eq!(recs[0].intent, Intent::Transparent);
    assert_eq!(recs[0].dialed_ip, None);
}
