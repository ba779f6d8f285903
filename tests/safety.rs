//! Safety under operator configurations, end to end: the rows of the safety table through a
//! running forward listener whose connector fails the test on any dial, the same rows through
//! `explain`, and the configurations `check` refuses.

mod support;

use std::net::IpAddr;
use std::process::Command;

use hyper::StatusCode;
use residency_proxy::destination::StaticResolver;
use residency_proxy::jurisdiction::{Jurisdiction, Source, TableBuilder};
use support::TestProxy;
use support::custom::spawn_proxy_with;

/// The full special ranges (loopback included) and one GB network.
fn table() -> residency_proxy::jurisdiction::JurisdictionTable {
    let mut b = TableBuilder::with_special_ranges();
    let gb = Jurisdiction::from_code("GB").expect("GB");
    b.add(
        "81.2.64.0/18".parse().expect("cidr"),
        gb,
        Source::Override,
        None,
    )
    .expect("add");
    b.build()
}

fn resolver() -> StaticResolver {
    let mut r = StaticResolver::new();
    for (name, ip) in [
        ("loop.nhs.uk", "127.0.0.1"),
        ("zero.nhs.uk", "0.0.0.0"),
        ("private.nhs.uk", "10.0.0.5"),
        ("loop6.nhs.uk", "::1"),
        ("md.nhs.uk", "169.254.169.254"),
    ] {
        r.insert(name, vec![ip.parse::<IpAddr>().expect("ip")]);
    }
    r
}

const LISTENER: &str =
    "[[listener]]\nname = \"egress\"\nbind = \"127.0.0.1:0\"\nallowed_ports = [80, 443]\n";

async fn proxy(extra: &str) -> TestProxy {
    spawn_proxy_with(&format!("{LISTENER}{extra}"), table(), resolver()).await
}

/// A row: request `url` (absolute-form) or CONNECT `authority`, and the reason of its deny.
struct Row {
    target: &'static str,
    reason: &'static str,
}

async fn ask(p: &TestProxy, target: &str) -> (StatusCode, String) {
    if target.starts_with("http://") {
        let r = p.get(target).await;
        (r.status, r.decision().to_string())
    } else {
        let (r, _s) = p.connect(target).await;
        (r.status, r.decision().to_string())
    }
}

/// Every row is refused with 403 and its reason, the audit record says the same (deny,
/// enforced, not `would_deny`), and nothing is dialled.
async fn assert_rows(extra: &str, rows: &[Row]) {
    let p = proxy(extra).await;
    for row in rows {
        let (status, header) = ask(&p, row.target).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{}: {header}", row.target);
        assert!(
            header.starts_with(&format!("deny; reason={};", row.reason)),
            "{}: {header}",
            row.target
        );
    }
    let records = p.audit.wait_records(rows.len()).await;
    assert_eq!(
        records.len(),
        rows.len(),
        "one record per request: {records:#?}"
    );
    for (row, rec) in rows.iter().zip(&records) {
        assert_eq!(
            (rec.decision.as_str(), rec.reason.as_str(), rec.would_deny),
            ("deny", row.reason, false),
            "{}: {rec:#?}",
            row.target
        );
        assert_eq!(rec.dialed_ip, None, "{}", row.target);
    }
    assert!(p.dials().is_empty(), "dialled: {:?}", p.dials());
    p.assert_no_violations();
}

#[tokio::test]
async fn report_mode_with_a_port_deny_rule_keeps_safety_space_shut() {
    let extra = "mode = \"report\"\n\n[[policy.rule]]\nid = \"no-plain-http\"\naction = \"deny\"\nports = [80]\n";
    #[rustfmt::skip]
    let rows = [
        Row { target: "http://169.254.169.254/latest/meta-data/", reason: "metadata" },
        Row { target: "http://[fd00:ec2::254]/", reason: "metadata" },
        Row { target: "http://127.0.0.1/", reason: "internal-not-allowed" },
        Row { target: "http://10.1.2.3/", reason: "internal-not-allowed" },
        Row { target: "http://0.0.0.0/", reason: "reserved" },
        Row { target: "http://203.0.113.9/", reason: "reserved" },
        Row { target: "169.254.169.254:80", reason: "metadata" },
        Row { target: "[fd00:ec2::254]:80", reason: "metadata" },
        Row { target: "127.0.0.1:80", reason: "internal-not-allowed" },
        Row { target: "10.1.2.3:80", reason: "internal-not-allowed" },
        Row { target: "0.0.0.0:80", reason: "reserved" },
        Row { target: "203.0.113.9:80", reason: "reserved" },
    ];
    assert_rows(extra, &rows).await;
}

#[tokio::test]
async fn an_ipv4_deny_rule_holds_for_mapped_and_nat64_spellings() {
    let extra = "[[policy.rule]]\nid = \"no-81-2-69\"\naction = \"deny\"\ndestinations = [\"81.2.69.0/24\"]\n";
    #[rustfmt::skip]
    let rows = [
        Row { target: "[::ffff:81.2.69.142]:443", reason: "rule-deny" },
        Row { target: "[64:ff9b::5102:458e]:443", reason: "rule-deny" },
        Row { target: "http://[::ffff:81.2.69.142]/", reason: "rule-deny" },
        Row { target: "http://[64:ff9b::5102:458e]/", reason: "rule-deny" },
    ];
    assert_rows(extra, &rows).await;
}

#[tokio::test]
async fn a_host_allow_rule_never_opens_loopback_private_or_reserved_space() {
    let extra = "[[policy.rule]]\nid = \"nhs\"\naction = \"allow\"\nhosts = [\"*.nhs.uk\"]\n";
    #[rustfmt::skip]
    let rows = [
        Row { target: "loop.nhs.uk:443", reason: "internal-not-allowed" },
        Row { target: "zero.nhs.uk:443", reason: "reserved" },
        Row { target: "private.nhs.uk:443", reason: "internal-not-allowed" },
        Row { target: "loop6.nhs.uk:443", reason: "internal-not-allowed" },
        Row { target: "http://md.nhs.uk/", reason: "metadata" },
        Row { target: "http://loop.nhs.uk/", reason: "internal-not-allowed" },
    ];
    assert_rows(extra, &rows).await;
}

// ---- explain: the same decision code, printed -------------------------------------------

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_residency-proxy"))
}

fn explain(config: &str, target: &str, resolve: Option<&str>) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, config).expect("write config");
    let mut cmd = bin();
    cmd.arg("explain").arg(target).arg("--config").arg(&path);
    cmd.args(["--client", "127.0.0.1"]);
    // Names never reach real DNS: every target here is a literal or pinned.
    cmd.args(["--resolve", resolve.unwrap_or("unused.test=192.0.2.1")]);
    let out = cmd.output().expect("explain runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn explain_shows_the_safety_denies_of_the_table() {
    let report80 = format!(
        "{}mode = \"report\"\n\n[[policy.rule]]\nid = \"no-plain-http\"\naction = \"deny\"\nports = [80]\n",
        LISTENER.replace("127.0.0.1:0", "127.0.0.1:3128")
    );
    let deny_net = format!(
        "{}\n[[policy.rule]]\nid = \"no-81-2-69\"\naction = \"deny\"\ndestinations = [\"81.2.69.0/24\"]\n",
        LISTENER.replace("127.0.0.1:0", "127.0.0.1:3128")
    );
    let nhs = format!(
        "{}\n[[policy.rule]]\nid = \"nhs\"\naction = \"allow\"\nhosts = [\"*.nhs.uk\"]\n",
        LISTENER.replace("127.0.0.1:0", "127.0.0.1:3128")
    );
    #[rustfmt::skip]
    let rows: &[(&str, &str, Option<&str>, &str)] = &[
        (&report80, "169.254.169.254:80", None, "verdict      deny (metadata, mode report)"),
        (&report80, "[fd00:ec2::254]:80", None, "verdict      deny (metadata, mode report)"),
        (&report80, "127.0.0.1:80", None, "verdict      deny (internal-not-allowed, mode report)"),
        (&report80, "10.1.2.3:80", None, "verdict      deny (internal-not-allowed, mode report)"),
        (&report80, "0.0.0.0:80", None, "verdict      deny (reserved, mode report)"),
        (&report80, "203.0.113.9:80", None, "verdict      deny (reserved, mode report)"),
        (&deny_net, "[::ffff:81.2.69.142]:443", None, "verdict      deny (rule-deny, mode enforce, rule no-81-2-69)"),
        (&deny_net, "[64:ff9b::5102:458e]:443", None, "verdict      deny (rule-deny, mode enforce, rule no-81-2-69)"),
        (&nhs, "a.nhs.uk:443", Some("a.nhs.uk=127.0.0.1"), "verdict      deny (internal-not-allowed, mode enforce)"),
        (&nhs, "a.nhs.uk:443", Some("a.nhs.uk=0.0.0.0"), "verdict      deny (reserved, mode enforce)"),
        (&nhs, "a.nhs.uk:443", Some("a.nhs.uk=10.0.0.5"), "verdict      deny (internal-not-allowed, mode enforce)"),
        (&nhs, "a.nhs.uk:443", Some("a.nhs.uk=::1"), "verdict      deny (internal-not-allowed, mode enforce)"),
    ];
    for (config, target, resolve, want) in rows {
        let out = explain(config, target, *resolve);
        assert!(out.contains(want), "{target}: want {want:?} in\n{out}");
        assert!(!out.contains("would dial"), "{target}:\n{out}");
    }
}

#[test]
fn check_refuses_ip_literal_hosts_and_client_lists_that_cover_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (text, want) in [
        (
            "[[listener]]\nname = \"egress\"\nbind = \"127.0.0.1:3128\"\n\n[[policy.rule]]\nid = \"a\"\naction = \"allow\"\nhosts = [\"169.254.169.254\"]\n",
            ":8: policy.rule[0].hosts[0]: 169.254.169.254 is an IP address, not a host name",
        ),
        (
            "[[listener]]\nname = \"egress\"\nbind = \"127.0.0.1:3128\"\nallowed_clients = [\"0.0.0.0/1\", \"128.0.0.0/1\"]\n",
            ":4: listener[0].allowed_clients: these networks together cover all of IPv4",
        ),
    ] {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text).expect("write");
        let out = bin().arg("check").arg(&path).output().expect("check runs");
        assert_eq!(out.status.code(), Some(64), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("bad.toml") && err.contains(want),
            "want {want:?} in {err}"
        );
    }
}

#[test]
fn the_gateway_vpc_example_opens_the_private_vpc_for_inbound_only() {
    let out = bin()
        .args(["check", "config/gateway-vpc.toml"])
        .output()
        .expect("check runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = |listener: &str, target: &str| {
        let out = bin()
            .args(["explain", target, "--config", "config/gateway-vpc.toml"])
            .args(["--listener", listener, "--client", "10.0.1.5"])
            .output()
            .expect("explain runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let inbound = run("inbound", "10.0.5.10:8080");
    assert!(
        inbound.contains("verdict      allow (rule-allow, mode enforce, rule inbound-pool); would dial 10.0.5.10:8080"),
        "{inbound}"
    );
    let egress = run("egress", "10.0.5.10:443");
    assert!(
        egress.contains("verdict      deny (internal-not-allowed, mode enforce)"),
        "{egress}"
    );
    let metadata = run("inbound", "169.254.169.254:80");
    assert!(
        metadata.contains("verdict      deny (metadata"),
        "{metadata}"
    );
}
