//! Reload of the real binary: SIGHUP and `POST /-/reload` re-read the configuration and every
//! file it names. A broken configuration, a truncated GeoIP database and a certificate whose
//! key does not match are each refused with one log line naming the file and the reason,
//! counted as `result="error"`, and the proxy keeps serving on what it had.

#[path = "support/mmdb.rs"]
mod mmdb;
#[path = "support/pki.rs"]
mod pki;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(20);

/// The proxy process, killed when the test ends.
struct Proxy {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proxy {
    fn start(config: &Path) -> Proxy {
        Proxy::spawn(Command::new(env!("CARGO_BIN_EXE_residency-proxy")), config)
    }

    /// The proxy on CPU 0 alone (so it runs its current-thread scheduler).
    fn start_on_one_cpu(config: &Path) -> Proxy {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_residency-proxy"));
        // SAFETY: between fork and exec only sched_setaffinity runs, which is async-signal-safe
        // and allocates nothing (the CPU set is built before the fork).
        let mut one = nix::sched::CpuSet::new();
        one.set(0).expect("CPU 0 fits a CPU set");
        unsafe {
            cmd.pre_exec(move || {
                nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &one)
                    .map_err(std::io::Error::from)
            });
        }
        Proxy::spawn(cmd, config)
    }

    fn spawn(mut cmd: Command, config: &Path) -> Proxy {
        let mut child = cmd
            .args(["run", "--log-format", "json", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the proxy");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Proxy {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The first stderr line (from now or already seen) containing `needle`.
    fn wait_line(&mut self, needle: &str) -> String {
        if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|_| {
                panic!("no line with {needle:?}; saw:\n{}", self.seen.join("\n"))
            });
            self.seen.push(line.clone());
            if line.contains(needle) {
                return line;
            }
        }
    }

    fn addr(&mut self, what: &str) -> SocketAddr {
        let prefix = format!("residency-proxy: {what} on ");
        let line = self.wait_line(&prefix);
        line.trim_start_matches(&prefix)
            .trim()
            .parse()
            .expect("a socket address")
    }

    fn hup(&self) {
        let ok = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "SIGHUP sent");
    }
}

/// One HTTP/1.1 request with `Connection: close`: status and body.
fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    )
    .expect("write");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, body.to_string())
}

/// A CONNECT tunnel through `proxy` to the echo server `target` echoes a byte.
fn tunnel_works(proxy: SocketAddr, target: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect(proxy) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(WAIT));
    if write!(s, "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").is_err() {
        return false;
    }
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return false,
        }
    }
    if !head.starts_with(b"HTTP/1.1 200") {
        return false;
    }
    s.write_all(b"z").is_ok() && s.read_exact(&mut byte).is_ok() && byte == *b"z"
}

/// A loopback echo server for tunnels.
fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A small GeoIP database (81.2.69.0/24 in GB) in `dir`, so each reload compiles in moments.
fn small_db(dir: &Path) {
    let mut b = mmdb::MmdbBuilder::new(6, "GeoLite2-Country").build_epoch(1_780_272_000);
    b.insert_str("81.2.69.0/24", mmdb::maxmind_country("GB"));
    std::fs::write(dir.join("geo.mmdb"), b.build()).expect("write the database");
}

/// The configuration: the small database of [`small_db`], no cloud ranges, the admin
/// listener and a forward listener on OS-picked ports, loopback allowed as internal space.
fn config(echo: SocketAddr, extra: &str) -> String {
    format!(
        "[jurisdiction]\ngeoip = \"geo.mmdb\"\ncloud_ranges = false\n\n[admin]\nbind = \"127.0.0.1:0\"\n\n[policy]\ninternal_allowed = [\"127.0.0.1/32\"]\n\n\
         [[listener]]\nname = \"egress\"\nbind = \"127.0.0.1:0\"\nallowed_clients = [\"127.0.0.1/32\"]\n\
         allowed_ports = [{}]\n{extra}",
        echo.port()
    )
}

fn errors_counted(admin: SocketAddr) -> f64 {
    let (_, body) = http(admin, "GET", "/metrics");
    body.lines()
        .find(|l| l.starts_with("residency_proxy_config_reloads_total{result=\"error\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1.0)
}

#[test]
fn sighup_with_a_broken_file_logs_the_reason_and_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let echo = echo_server();
    small_db(dir.path());
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, config(echo, "")).expect("write");
    let mut p = Proxy::start(&path);
    let proxy = p.addr("listener egress");
    let admin = p.addr("admin");
    assert!(tunnel_works(proxy, echo));

    // A good reload first.
    std::fs::write(
        &path,
        config(echo, "").replace("allowed_ports = [", "allowed_ports = [1, "),
    )
    .expect("write");
    p.hup();
    p.wait_line("Configuration reloaded");

    std::fs::write(&path, "[[listener]]\nname = \"egress\"\nbind = \"127.0.0.1:0\"\nallowed_clients = [\"0.0.0.0/0\"]\n").expect("write");
    p.hup();
    let line = p.wait_line("Reload refused");
    assert!(line.contains("proxy.toml:4"), "file and line: {line}");
    assert!(line.contains("allowed_clients"), "the reason: {line}");
    assert!(line.contains("SIGHUP"), "{line}");
    assert!(tunnel_works(proxy, echo), "the proxy keeps serving");
    assert_eq!(errors_counted(admin), 1.0);
    assert_eq!(http(admin, "GET", "/readyz").0, 200, "still ready");
}

#[test]
fn a_truncated_geoip_database_is_refused_and_the_old_table_serves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let echo = echo_server();
    small_db(dir.path());
    let db = dir.path().join("geo.mmdb");
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, config(echo, "")).expect("write");
    let mut p = Proxy::start(&path);
    let proxy = p.addr("listener egress");
    let admin = p.addr("admin");

    let bytes = std::fs::read(&db).expect("read");
    std::fs::write(&db, &bytes[..bytes.len() / 2]).expect("truncate");
    let (status, body) = http(admin, "POST", "/-/reload");
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("geo.mmdb"), "names the database: {body}");
    let line = p.wait_line("Reload refused");
    assert!(line.contains("geo.mmdb"), "{line}");
    assert!(tunnel_works(proxy, echo), "the proxy keeps serving");
    assert_eq!(errors_counted(admin), 1.0);
    let (_, explain) = http(
        admin,
        "GET",
        &format!("/v1/explain?host=81.2.69.1&port={}", echo.port()),
    );
    assert!(
        explain.contains("\"jurisdiction\":\"GB\""),
        "the old table still places addresses: {explain}"
    );
}

#[test]
fn a_certificate_whose_key_does_not_match_is_refused_and_the_old_one_is_served() {
    let pki = pki::Pki::new();
    let echo = echo_server();
    let a = pki.leaf("web", &["web.test"]);
    let dir = pki.dir.path();
    small_db(dir);
    let reverse = format!(
        "\n[[listener]]\nname = \"web\"\nkind = \"reverse\"\nbind = \"127.0.0.1:0\"\n\n[[listener.cert]]\nchain = {:?}\nkey = {:?}\n",
        a.chain.display().to_string(),
        a.key.display().to_string()
    );
    let path = dir.join("proxy.toml");
    std::fs::write(&path, config(echo, &reverse)).expect("write");
    let mut p = Proxy::start(&path);
    let proxy = p.addr("listener egress");
    let admin = p.addr("admin");
    let (_, before) = http(admin, "GET", "/metrics");
    let expiry = before
        .lines()
        .find(|l| {
            l.starts_with("residency_proxy_certificate_expiry_timestamp_seconds{listener=\"web\"}")
        })
        .map(str::to_string);
    assert!(
        expiry.is_some(),
        "the certificate's expiry is exported:\n{before}"
    );

    // Another key in the key file: the pair no longer matches.
    std::fs::write(&a.key, pki::p256().serialize_pem()).expect("write");
    let (status, body) = http(admin, "POST", "/-/reload");
    assert_eq!(status, 500, "{body}");
    assert!(
        body.contains("listener[1].cert[0]"),
        "names the certificate: {body}"
    );
    assert!(tunnel_works(proxy, echo), "the proxy keeps serving");
    assert_eq!(errors_counted(admin), 1.0);
    let (_, after) = http(admin, "GET", "/metrics");
    let still = after
        .lines()
        .find(|l| {
            l.starts_with("residency_proxy_certificate_expiry_timestamp_seconds{listener=\"web\"}")
        })
        .map(str::to_string);
    assert_eq!(still, expiry, "the old certificate is still the one served");
}

#[test]
fn on_one_cpu_the_current_thread_scheduler_serves_reloads_and_shuts_down_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let echo = echo_server();
    small_db(dir.path());
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, config(echo, "")).expect("write");
    let mut p = Proxy::start_on_one_cpu(&path);
    let line = p.wait_line("\"Runtime\"");
    assert!(line.contains("current-thread"), "{line}");
    let proxy = p.addr("listener egress");
    let admin = p.addr("admin");
    assert!(tunnel_works(proxy, echo));

    // Reloads run their blocking build off the one thread, by signal and over HTTP.
    p.hup();
    p.wait_line("Configuration reloaded");
    let (status, body) = http(admin, "POST", "/-/reload");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("success"), "{body}");
    assert!(tunnel_works(proxy, echo));

    // SIGTERM drains and exits 0.
    let ok = Command::new("kill")
        .args(["-TERM", &p.child.id().to_string()])
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "SIGTERM sent");
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = p.child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "the proxy did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
}
