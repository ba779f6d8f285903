//! Transparent sidecar mode end to end, in network namespaces made by the test.
//!
//! ```text
//!  app namespace (the pod)                                  net namespace ("the Internet")
//!  ┌──────────────────────────────────────────────┐         ┌──────────────────────────────┐
//!  │ curl (root, no proxy settings)               │         │ origins on [::]:80 and :443  │
//!  │   │ iptables -t nat OUTPUT: REDIRECT :15001  │  veth   │ 81.2.69.160  2a00:23c0::1  GB│
//!  │   ▼ (except uid 47001 and loopback)          │ ──────▶ │ 1.2.4.8      240e::8       CN│
//!  │ residency-proxy run (uid 47001)              │         │ 3.5.140.1/.2 2600:1f18::1  US│
//!  │   sidecar 127.0.0.1:15001, sidecar6 [::1]    │         │ 169.254.169.254     metadata │
//!  └──────────────────────────────────────────────┘         └──────────────────────────────┘
//! ```
//!
//! The proxy is the built binary, started with `ip netns exec APP setpriv --reuid 47001`: the
//! redirect rule exempts that uid (`-m owner --uid-owner 47001 -j RETURN`), as a sidecar's
//! init container exempts the proxy's user. Names resolve through `/etc/netns/APP/hosts`
//! (which `ip netns exec` mounts over `/etc/hosts` for curl and the proxy alike); the
//! operator overrides of the test configuration place the origin addresses in countries.
//! The origins' certificate is issued by a CA made in the test; curl trusts only that CA, so
//! a completed handshake is one with the origin itself.
//!
//! Needs root, `ip`, `iptables`, `ip6tables`, `setpriv` and `curl`; without them each test
//! prints why and passes without running.

#[path = "support/mmdb.rs"]
mod mmdb;
#[path = "support/netns.rs"]
mod netns;
#[path = "support/pki.rs"]
mod pki;

use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rcgen::SanType;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

use netns::{Netns, veth};

/// The uid the proxy runs as, exempt from the redirect.
const PROXY_UID: &str = "47001";
/// The transparent listeners' port (REDIRECT sends IPv4 to 127.0.0.1, IPv6 to ::1).
const PORT: &str = "15001";
/// How long the proxy may take to start, and a curl to finish.
const WAIT: Duration = Duration::from_secs(60);

const GB4: &str = "81.2.69.160";
const GB6: &str = "2a00:23c0::1";
const CN4: &str = "1.2.4.8";
const CN6: &str = "240e::8";
const US4: &str = "3.5.140.1";
const US4_OTHER: &str = "3.5.140.2";
const US6: &str = "2600:1f18::1";
const METADATA: &str = "169.254.169.254";

const WORLD_CSV: &str = "cidr, jurisdiction, label
81.2.69.160/32, GB, test: United Kingdom
2a00:23c0::1/128, GB, test: United Kingdom
1.2.4.8/32, CN, test: China
240e::8/128, CN, test: China
3.5.140.1/32, US, test: United States (the attested recipient)
3.5.140.2/32, US, test: United States (someone else)
2600:1f18::1/128, US, test: United States (the attested recipient)
";

const HOSTS: &str = "81.2.69.160 gb.test
2a00:23c0::1 gb.test
1.2.4.8 cn.test
240e::8 cn.test
3.5.140.1 attested.test
2600:1f18::1 attested.test
";

/// Where the redirect happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Topology {
    /// The proxy in the application's namespace, `residency-redirect.sh sidecar` (nat OUTPUT,
    /// the proxy's uid exempt).
    Sidecar,
    /// As `Sidecar`, by hand, without the owner exemption: the proxy's own connections are
    /// redirected back to it.
    SidecarWithoutExemption,
    /// A container host: the client in a container namespace, the proxy in the host
    /// namespace, `residency-redirect.sh host IFACE` (nat PREROUTING from the container's
    /// veth); the listener is one dual-stack socket on `[::]`.
    Host,
}

/// The namespaces, the origins, and the proxy.
struct Lab {
    /// Where curl runs.
    client: Netns,
    /// Where the proxy runs, if not beside the client.
    gateway: Option<Netns>,
    _net: Netns,
    pki: pki::Pki,
    dir: tempfile::TempDir,
    proxy: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
    stop_origins: Option<tokio::sync::oneshot::Sender<()>>,
}

/// The redirect script, as deployed.
const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/transparent/residency-redirect.sh"
);

impl Lab {
    /// Build the lab, or `None` (with a message) where namespace tests cannot run.
    fn start(test: &str, topology: Topology) -> Option<Lab> {
        if let Some(why) = netns::missing(&["ip", "iptables", "ip6tables", "setpriv", "curl"]) {
            eprintln!("SKIPPED {test}: transparent namespace tests cannot run here: {why}");
            return None;
        }
        let base = netns::unique("rt");
        let client = Netns::add(&format!("{base}-app"));
        let net = Netns::add(&format!("{base}-net"));
        // The namespace the proxy runs in, and its way out to the net namespace.
        let gateway = (topology == Topology::Host).then(|| Netns::add(&format!("{base}-host")));
        let egress = gateway.as_ref().unwrap_or(&client);
        veth(
            &format!("{base}o"),
            egress,
            &["10.77.0.1/24", "fd77::1/64"],
            &net,
            &["10.77.0.2/24", "fd77::2/64"],
        );
        egress.ip(&["route", "add", "default", "via", "10.77.0.2"]);
        egress.ip(&["-6", "route", "add", "default", "via", "fd77::2"]);
        if let Some(host) = &gateway {
            veth(
                &format!("{base}c"),
                host,
                &["10.78.0.1/24", "fd78::1/64"],
                &client,
                &["10.78.0.2/24", "fd78::2/64"],
            );
            client.ip(&["route", "add", "default", "via", "10.78.0.1"]);
            client.ip(&["-6", "route", "add", "default", "via", "fd78::1"]);
        }
        for addr in [GB4, CN4, US4, US4_OTHER, METADATA] {
            net.ip(&["addr", "add", &format!("{addr}/32"), "dev", "lo"]);
        }
        for addr in [GB6, CN6, US6] {
            net.ip(&["addr", "add", &format!("{addr}/128"), "dev", "lo"]);
        }
        let env = [("PROXY_UID", PROXY_UID), ("PROXY_PORT", PORT)];
        match (topology, &gateway) {
            (Topology::Sidecar, _) => client.must_env(&env, "sh", &[SCRIPT, "sidecar"]),
            (Topology::Host, Some(host)) => {
                host.must_env(&env, "sh", &[SCRIPT, "host", &format!("{base}ca")])
            }
            (Topology::Host, None) => unreachable!("a host topology has a gateway"),
            (Topology::SidecarWithoutExemption, _) => {
                for tool in ["iptables", "ip6tables"] {
                    client.must(
                        tool,
                        &[
                            "-t",
                            "nat",
                            "-A",
                            "OUTPUT",
                            "-p",
                            "tcp",
                            "-m",
                            "addrtype",
                            "--dst-type",
                            "LOCAL",
                            "-j",
                            "RETURN",
                        ],
                    );
                    client.must(
                        tool,
                        &[
                            "-t",
                            "nat",
                            "-A",
                            "OUTPUT",
                            "-p",
                            "tcp",
                            "-j",
                            "REDIRECT",
                            "--to-ports",
                            PORT,
                        ],
                    );
                }
            }
        }
        for ns in std::iter::once(&client).chain(&gateway) {
            ns.etc("hosts", HOSTS);
            // No DNS server: every name the test uses is in the hosts file.
            ns.etc("resolv.conf", "nameserver 127.0.0.1\n");
        }

        let pki = pki::Pki::new();
        let stop_origins = origins(&net, &pki);
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut lab = Lab {
            client,
            gateway,
            _net: net,
            pki,
            dir,
            proxy: None,
            log: Arc::new(Mutex::new(Vec::new())),
            stop_origins: Some(stop_origins),
        };
        lab.start_proxy(topology);
        Some(lab)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Write the configuration and start the proxy binary in its namespace as [`PROXY_UID`];
    /// return once its listeners are bound.
    fn start_proxy(&mut self, topology: Topology) {
        std::fs::set_permissions(self.dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod the directory");
        let mut geo = mmdb::MmdbBuilder::new(6, "GeoLite2-Country");
        geo.insert_str("192.0.2.0/24", mmdb::maxmind_country("FR"));
        std::fs::write(self.path("geo.mmdb"), geo.build()).expect("write the GeoIP database");
        std::fs::write(self.path("world.csv"), WORLD_CSV).expect("write the overrides");
        let audit = self.path("audit.log");
        std::fs::write(&audit, "").expect("create the audit log");
        std::fs::set_permissions(&audit, std::fs::Permissions::from_mode(0o666))
            .expect("chmod the audit log");
        // Sidecar: REDIRECT from OUTPUT goes to 127.0.0.1 or ::1. Host: to the address of the
        // interface the connection arrived on; one dual-stack socket takes both families.
        let listeners = match topology {
            Topology::Host => format!(
                "[[listener]]\nname = \"gateway\"\nkind = \"transparent\"\nbind = \"[::]:{PORT}\"\n"
            ),
            _ => format!(
                "[[listener]]\nname = \"sidecar\"\nkind = \"transparent\"\nbind = \"127.0.0.1:{PORT}\"\n\n\
                 [[listener]]\nname = \"sidecar6\"\nkind = \"transparent\"\nbind = \"[::1]:{PORT}\"\n"
            ),
        };
        let expected = if topology == Topology::Host { 1 } else { 2 };
        let config = format!(
            r#"[jurisdiction]
geoip = "geo.mmdb"
overrides = ["world.csv"]
cloud_ranges = false

[resolver]
timeout = "2s"

[audit]
output = {audit:?}

[limits]
drain_timeout = "2s"

{listeners}
[[policy.attestation]]
host = "attested.test"
organisation = "Attested Ltd"
basis = "test attestation"
"#
        );
        let config_path = self.path("residency-proxy.toml");
        std::fs::write(&config_path, config).expect("write the configuration");
        let mut child = self
            .gateway
            .as_ref()
            .unwrap_or(&self.client)
            .command("setpriv")
            .args([
                &format!("--reuid={PROXY_UID}"),
                &format!("--regid={PROXY_UID}"),
                "--clear-groups",
                env!("CARGO_BIN_EXE_residency-proxy"),
                "run",
                "--config",
            ])
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the proxy");
        let stderr = child.stderr.take().expect("piped stderr");
        self.proxy = Some(child);
        let (tx, rx) = std::sync::mpsc::channel();
        let log = self.log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if line.starts_with("residency-proxy: listener ") {
                    let _ = tx.send(());
                }
                log.lock().expect("log").push(line);
            }
        });
        for _ in 0..expected {
            if rx.recv_timeout(WAIT).is_err() {
                panic!("the proxy did not start:\n{}", self.log());
            }
        }
    }

    /// The proxy's stderr so far.
    fn log(&self) -> String {
        self.log.lock().expect("log").join("\n")
    }

    /// Run curl in the client namespace, as root (so redirected), trusting only the test CA.
    fn curl(&self, args: &[&str]) -> Curl {
        let ca = self.pki.ca_path.display().to_string();
        let mut all = vec!["-sS", "--max-time", "20", "--cacert", ca.as_str()];
        all.extend_from_slice(args);
        let out = self.client.run("curl", &all);
        Curl {
            exit: out.status.code().unwrap_or(-1),
            out: String::from_utf8_lossy(&out.stdout).into_owned(),
            err: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Stop the proxy (SIGTERM: it drains and flushes every record) and read its audit log.
    fn stop(&mut self) -> Vec<Value> {
        let mut child = self.proxy.take().expect("the proxy is running");
        let pid = Pid::from_raw(i32::try_from(child.id()).expect("a pid"));
        kill(pid, Signal::SIGTERM).expect("signal the proxy");
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait for the proxy") {
                break s;
            }
            assert!(Instant::now() < deadline, "the proxy did not exit");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "clean exit: {status:?}\n{}", self.log());
        std::fs::read_to_string(self.path("audit.log"))
            .expect("read the audit log")
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a JSON audit line"))
            // The flow records: the start and checkpoint lines of the chain carry a `kind`.
            .filter(|v| v.get("kind").is_none())
            .collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut child) = self.proxy.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(stop) = self.stop_origins.take() {
            let _ = stop.send(());
        }
    }
}

/// What curl did.
#[derive(Debug)]
struct Curl {
    exit: i32,
    out: String,
    /// Shown when an assertion fails.
    #[allow(dead_code)]
    err: String,
}

/// The one record matching `want`, or a panic listing them all.
fn one<'a>(records: &'a [Value], what: &str, want: impl Fn(&Value) -> bool) -> &'a Value {
    let found: Vec<&Value> = records.iter().filter(|r| want(r)).collect();
    assert_eq!(found.len(), 1, "one record for {what}: {records:#?}");
    found[0]
}

/// The origins, in the net namespace: HTTP on `[::]:80`, HTTPS on `[::]:443` with a
/// certificate of the test CA for every test name and the GB addresses; each answers with
/// the address it was reached on and the SNI and Host it saw. Stopped by the returned sender.
fn origins(net: &Netns, pki: &pki::Pki) -> tokio::sync::oneshot::Sender<()> {
    let spec = pki.leaf_with(
        "origin",
        &["gb.test", "cn.test", "attested.test"],
        &pki::p256(),
        |p| {
            for ip in [GB4, GB6] {
                let ip: IpAddr = ip.parse().expect("an address");
                p.subject_alt_names.push(SanType::IpAddress(ip));
            }
        },
    );
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&spec.chain)
        .expect("read the chain")
        .collect::<Result<_, _>>()
        .expect("parse the chain");
    let key = PrivateKeyDer::from_pem_file(&spec.key).expect("read the key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("the origin's TLS settings");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready) = std::sync::mpsc::channel();
    net.spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async move {
            let plain = TcpListener::bind("[::]:80").await.expect("bind :80");
            let secure = TcpListener::bind("[::]:443").await.expect("bind :443");
            ready_tx.send(()).expect("ready");
            let serve = async {
                loop {
                    tokio::select! {
                        Ok((s, _)) = plain.accept() => {
                            let local = s.local_addr().map(|a| a.ip().to_canonical().to_string());
                            tokio::spawn(answer(s, local.unwrap_or_default(), None));
                        }
                        Ok((s, _)) = secure.accept() => {
                            let acceptor = acceptor.clone();
                            tokio::spawn(async move {
                                let local = s.local_addr().map(|a| a.ip().to_canonical().to_string());
                                if let Ok(tls) = acceptor.accept(s).await {
                                    let sni = tls.get_ref().1.server_name().unwrap_or("-").to_string();
                                    answer(tls, local.unwrap_or_default(), Some(sni)).await;
                                }
                            });
                        }
                    }
                }
            };
            tokio::select! {
                _ = serve => {}
                _ = stopped => {}
            }
        });
    });
    ready.recv_timeout(WAIT).expect("the origins start");
    stop
}

/// Read a request head and answer `origin ADDR sni SNI host HOST`.
async fn answer<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, local: String, sni: Option<String>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&head);
    let host = text
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("host"))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "-".into());
    let body = format!(
        "origin {local} sni {} host {host}\n",
        sni.as_deref().unwrap_or("-")
    );
    let resp = format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.write_all(resp.as_bytes()).await;
    let _ = s.shutdown().await;
}

fn claimed(r: &Value) -> Option<&str> {
    r["dest.claimed"].as_str()
}

fn dest(r: &Value) -> Option<&str> {
    r["dest.addrs"][0]["ip"].as_str()
}

#[test]
fn a_sidecar_redirect_lets_curl_reach_allowed_origins_only() {
    if let Some(lab) = Lab::start("sidecar", Topology::Sidecar) {
        the_bar(lab, "sidecar", "sidecar6", "127.0.0.1");
    }
}

#[test]
fn a_container_host_redirect_lets_curl_reach_allowed_origins_only() {
    if let Some(lab) = Lab::start("container_host", Topology::Host) {
        the_bar(lab, "gateway", "gateway", "10.78.0.1");
    }
}

/// curl, with no proxy settings, from the client namespace: each case, then each record.
/// `v4` and `v6` are the listeners IPv4 and IPv6 connections reach; `direct` is the address
/// a connection straight to the listener (not redirected) goes to.
fn the_bar(mut lab: Lab, v4: &str, v6: &str, direct: &str) {
    // Allowed TLS: the handshake completes with the origin's own certificate (curl trusts
    // only the test CA, and the proxy holds no key), the origin saw the client's SNI.
    let gb = lab.curl(&["-4", "https://gb.test/"]);
    assert_eq!(gb.exit, 0, "{gb:?}\n{}", lab.log());
    assert_eq!(gb.out, format!("origin {GB4} sni gb.test host gb.test\n"));
    // Not adequate: closed before any byte of TLS comes back.
    let cn = lab.curl(&["-4", "https://cn.test/"]);
    assert_ne!(cn.exit, 0, "{cn:?}");
    assert!(cn.out.is_empty(), "{cn:?}");
    // An attested name: allowed where it resolves, refused elsewhere.
    let attested = lab.curl(&["-4", "https://attested.test/"]);
    assert_eq!(attested.exit, 0, "{attested:?}");
    assert!(
        attested.out.starts_with(&format!("origin {US4} ")),
        "{attested:?}"
    );
    let resolve = format!("attested.test:443:{US4_OTHER}");
    let borrowed = lab.curl(&["--resolve", &resolve, "https://attested.test/"]);
    assert_ne!(borrowed.exit, 0, "{borrowed:?}");
    // Plain HTTP, decided on its Host; a deny is answered 403 with the decision.
    let http = lab.curl(&["-4", "http://gb.test/"]);
    assert_eq!(
        http.out,
        format!("origin {GB4} sni - host gb.test\n"),
        "{http:?}"
    );
    let http_cn = lab.curl(&["-4", "-i", "http://cn.test/"]);
    assert!(http_cn.out.starts_with("HTTP/1.1 403"), "{http_cn:?}");
    assert!(
        http_cn
            .out
            .contains("x-residency-decision: deny; reason=not-adequate; jurisdiction=CN"),
        "{http_cn:?}"
    );
    // No SNI (an address URL): decided by address.
    let bare = lab.curl(&[&format!("https://{GB4}/")]);
    assert_eq!(
        bare.out,
        format!("origin {GB4} sni - host {GB4}\n"),
        "{bare:?}"
    );
    // The metadata address, whatever the Host says.
    let meta = lab.curl(&[
        "-i",
        "-H",
        "Host: gb.test",
        &format!("http://{METADATA}/latest/"),
    ]);
    assert!(meta.out.contains("reason=metadata"), "{meta:?}");
    // IPv6, through ip6tables and the [::1] listener.
    let gb6 = lab.curl(&["-6", "https://gb.test/"]);
    assert_eq!(
        gb6.out,
        format!("origin {GB6} sni gb.test host gb.test\n"),
        "{gb6:?}"
    );
    let cn6 = lab.curl(&["-6", "https://cn.test/"]);
    assert_ne!(cn6.exit, 0, "{cn6:?}");
    // Straight to the listener (local addresses are not redirected): refused.
    let direct = lab.curl(&[&format!("http://{direct}:{PORT}/")]);
    assert_ne!(direct.exit, 0, "{direct:?}");

    let records = lab.stop();
    assert_eq!(records.len(), 11, "one record per connection: {records:#?}");
    for r in &records {
        assert_eq!(r["intent"], "transparent", "{r}");
    }
    let r = one(&records, "gb.test over TLS", |r| {
        claimed(r) == Some("gb.test") && dest(r) == Some(GB4) && r["dest.port"] == 443
    });
    assert_eq!(r["listener"], v4);
    assert_eq!(r["decision"], "allow");
    assert_eq!(r["reason"], "home");
    assert_eq!(r["dest.verified"], true);
    assert_eq!(r["dest.host"], "gb.test");
    assert_eq!(r["dialed.ip"], GB4);
    assert_eq!(r["dest.addrs"][0]["jurisdiction"], "GB");
    assert!(
        r["bytes.up"].as_u64() > Some(200) && r["bytes.down"].as_u64() > Some(200),
        "{r}"
    );

    let r = one(&records, "cn.test over TLS", |r| {
        dest(r) == Some(CN4) && r["dest.port"] == 443
    });
    assert_eq!(
        (&r["decision"], &r["reason"]),
        (&"deny".into(), &"not-adequate".into())
    );
    assert_eq!(r["dest.verified"], true);
    assert_eq!(r["dialed.ip"], Value::Null);

    let r = one(&records, "attested.test", |r| dest(r) == Some(US4));
    assert_eq!(
        (&r["decision"], &r["reason"]),
        (&"allow".into(), &"attested".into())
    );
    let r = one(&records, "attested.test elsewhere", |r| {
        dest(r) == Some(US4_OTHER)
    });
    assert_eq!(r["decision"], "deny");
    assert_eq!(r["reason"], "conditional-not-attested");
    assert_eq!(r["dest.claimed"], "attested.test");
    assert_eq!(r["dest.verified"], false);
    assert_eq!(r["dest.host"], US4_OTHER);
    assert_eq!(r["dialed.ip"], Value::Null);

    let r = one(&records, "plain HTTP to gb.test", |r| {
        dest(r) == Some(GB4) && r["dest.port"] == 80
    });
    assert_eq!(
        (&r["decision"], &r["dest.verified"]),
        (&"allow".into(), &true.into())
    );
    let r = one(&records, "plain HTTP to cn.test", |r| {
        dest(r) == Some(CN4) && r["dest.port"] == 80
    });
    assert_eq!(
        (&r["decision"], &r["status"]),
        (&"deny".into(), &403.into())
    );

    let r = one(&records, "no SNI", |r| {
        dest(r) == Some(GB4) && r["dest.port"] == 443 && claimed(r).is_none()
    });
    assert_eq!(
        (&r["decision"], &r["reason"]),
        (&"allow".into(), &"home".into())
    );
    assert_eq!(r["dest.verified"], false);
    assert_eq!(r["dest.host"], GB4);

    let r = one(&records, "metadata", |r| dest(r) == Some(METADATA));
    assert_eq!(
        (&r["decision"], &r["reason"]),
        (&"deny".into(), &"metadata".into())
    );
    assert_eq!(r["dialed.ip"], Value::Null);

    let r = one(&records, "gb.test over IPv6", |r| dest(r) == Some(GB6));
    assert_eq!(r["listener"], v6);
    assert_eq!(
        (&r["decision"], &r["dest.verified"]),
        (&"allow".into(), &true.into())
    );
    assert_eq!(r["dialed.ip"], GB6);
    let r = one(&records, "cn.test over IPv6", |r| dest(r) == Some(CN6));
    assert_eq!(
        (&r["decision"], &r["reason"]),
        (&"deny".into(), &"not-adequate".into())
    );

    let r = one(&records, "not redirected", |r| {
        r["reason"] == "not-redirected"
    });
    assert_eq!(r["decision"], "deny");
    assert!(lab.log().contains("was not redirected"), "{}", lab.log());
}

#[test]
fn a_redirect_that_catches_the_proxy_itself_is_refused_as_a_loop() {
    let Some(mut lab) = Lab::start("redirect_loop", Topology::SidecarWithoutExemption) else {
        return;
    };
    let looped = lab.curl(&["-4", "http://gb.test/"]);
    assert!(looped.out.is_empty(), "{looped:?}");
    let records = lab.stop();
    let r = one(&records, "the looped connection", |r| {
        r["reason"] == "redirect-loop"
    });
    assert_eq!(r["decision"], "deny");
    assert!(
        r["error"]
            .as_str()
            .is_some_and(|e| e.contains("--uid-owner")),
        "{r}"
    );
    let outer = one(&records, "the client's connection", |r| {
        r["dialed.ip"] == GB4
    });
    assert_eq!(outer["bytes.down"], 0, "nothing came back through the loop");
    let log = lab.log();
    assert!(
        log.contains("redirected back to it"),
        "a clear log line:\n{log}"
    );
    assert!(records.len() == 2, "{records:#?}");
}
