//! The `check`, `explain` and `run` commands, and the example configuration's metadata deny.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use residency_proxy::audit::{self, AuditTarget};
use residency_proxy::config::Config;
use residency_proxy::destination::StaticResolver;
use residency_proxy::jurisdiction::TableBuilder;
use residency_proxy::server::{self, Deps, Snapshot};
use residency_proxy::upstream::TcpConnector;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_residency-proxy"))
}

#[test]
fn check_accepts_the_shipped_configs_and_refuses_a_bad_one_with_exit_64() {
    for cfg in ["config/residency-proxy.toml", "config/demo.toml"] {
        let out = bin().args(["check", cfg]).output().expect("runs");
        assert!(
            out.status.success(),
            "{cfg}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains(": ok:"));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[listener]]\nname = \"egress\"\nbind = \"127.0.0.1:3128\"\nallowed_clients = [\"0.0.0.0/0\"]\n",
    )
    .expect("write");
    let out = bin().arg("check").arg(&bad).output().expect("runs");
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("bad.toml:4"), "{err}");
    assert!(err.contains("allowed_clients"), "{err}");
    let out = bin()
        .args(["run", "--config"])
        .arg(&bad)
        .output()
        .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(64),
        "run refuses to start on a bad config"
    );
}

#[test]
fn explain_prints_the_decision_chain_without_connecting() {
    let out = bin()
        .args([
            "explain",
            "mixed.example:443",
            "--resolve",
            "mixed.example=1.0.1.1",
        ])
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("1.0.1.1  CN not-adequate via geoip"),
        "{text}"
    );
    assert!(text.contains("verdict      deny (not-adequate"), "{text}");
    let out = bin()
        .args(["explain", "169.254.169.254:80"])
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("deny: metadata"), "{text}");
    let out = bin()
        .args(["explain", "uk.example", "--client", "203.0.113.9"])
        .output()
        .expect("runs");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("client-not-allowed"),
        "clients outside allowed_clients are refused before any lookup"
    );
    let out = bin().args(["explain", "0x7f.1:80"]).output().expect("runs");
    assert_eq!(out.status.code(), Some(64));
}

/// The bar of the forward-proxy issue: with the example configuration, a request for the
/// metadata endpoint is denied 403 and audited as `metadata`.
#[tokio::test]
async fn example_config_denies_the_metadata_endpoint_and_audits_it() {
    let mut config = Config::example().expect("example compiles");
    config.listeners[0].bind = "127.0.0.1:0".parse().expect("addr");
    let table = TableBuilder::with_special_ranges().build();
    let records = Arc::new(Mutex::new(Vec::new()));
    let (sink, _writer) = audit::spawn(
        AuditTarget::Memory(records.clone()),
        16,
        Duration::from_millis(50),
    )
    .expect("audit");
    let deps = Deps {
        resolver: Arc::new(StaticResolver::new()),
        connector: Arc::new(TcpConnector),
        audit: sink,
    };
    let proxy = server::start(Snapshot::new(config, table), deps)
        .await
        .expect("starts");
    let addr = proxy.addr("egress").expect("listener");
    let response = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(b"GET http://169.254.169.254/latest/meta-data/ HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n\r\n")
            .expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        out
    })
    .await
    .expect("join");
    assert!(response.starts_with("HTTP/1.1 403"), "{response}");
    assert!(
        response
            .to_ascii_lowercase()
            .contains("x-residency-decision: deny; reason=metadata")
    );
    let mut rec = None;
    for _ in 0..200 {
        if let Some(r) = records.lock().expect("lock").first().cloned() {
            rec = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let rec = rec.expect("one audit record");
    assert_eq!(rec.decision, "deny");
    assert_eq!(rec.reason, "metadata");
    assert_eq!(rec.dest_addrs[0].jurisdiction, "metadata");
    assert_eq!(rec.dialed_ip, None);
    proxy.shutdown(Duration::from_secs(1)).await;
}
