//! The forward proxy end to end: absolute-form HTTP and CONNECT through an in-process proxy,
//! with made-up `.test` destinations on loopback, a connector that fails the test when an
//! unvetted address is dialled, and the audit records in memory.

mod support;

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::StatusCode;
use residency_proxy::audit::AuditRecord;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use support::scripted::{Script, ScriptedOrigin};
use support::*;

/// `(ip, jurisdiction)` of every address in a record.
fn addrs(r: &AuditRecord) -> Vec<(IpAddr, String)> {
    r.dest_addrs
        .iter()
        .map(|a| (a.ip, a.jurisdiction.to_string()))
        .collect()
}

fn raw_get(target: &str, host: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").into_bytes()
}

// ---- allowed flows -------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_to_a_home_destination_is_relayed_and_audited() {
    let p = spawn_proxy("").await;
    let origin = p.http_origin(GB_IP, 80).await;

    let resp = p.get("http://uk.test/path?q=1").await;

    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.header("x-origin"), Some("echo"));
    let echo = resp.echo();
    assert_eq!(echo["method"], "GET");
    assert_eq!(
        echo["target"], "/path?q=1",
        "origin-form on the upstream side"
    );
    let seen = origin.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(p.dials(), vec![sa(GB_IP, 80)]);

    let recs = p.audit.wait_records(1).await;
    let r = record_for(&recs, "uk.test");
    assert_eq!(r.intent, "forward");
    assert_eq!(r.decision, "allow");
    assert_eq!(r.reason, "home");
    assert_eq!(r.listener, "egress");
    assert_eq!(r.mode, "enforce");
    assert!(!r.would_deny);
    assert_eq!(r.status, Some(200));
    assert_eq!(r.dest_port, Some(80));
    assert_eq!(r.dialed_ip, Some(GB_IP));
    assert_eq!(addrs(r), vec![(GB_IP, "GB".to_string())]);
    assert_eq!(r.dest_addrs[0].class, "home");
    assert_eq!(r.dest_addrs[0].source, "override");
    assert_eq!(r.bytes_down, resp.body.len() as u64);
    assert_eq!(r.error, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_body_reaches_the_origin_and_is_counted() {
    let p = spawn_proxy("").await;
    let origin = p.http_origin(FR_IP, 80).await;
    let body = b"patient=42&ward=7".repeat(1000);

    let mut c = p.client().await;
    let resp = c
        .send(request("POST", "http://fr.test/submit", body.clone()))
        .await;

    assert_eq!(resp.status, StatusCode::OK);
    let seen = origin.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].target, "/submit");
    assert_eq!(seen[0].body, body, "the origin got the whole body");
    assert_eq!(resp.echo()["body"].as_str().map(str::len), Some(body.len()));

    let recs = p.audit.wait_records(1).await;
    let r = record_for(&recs, "fr.test");
    assert_eq!(r.reason, "adequate");
    assert_eq!(r.bytes_up, body.len() as u64);
    assert_eq!(r.bytes_down, resp.body.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_body_streams_back_before_the_origin_has_finished() {
    let p = spawn_proxy("").await;
    let origin = p.http_origin(GB_IP, 80).await;

    let mut c = p.client().await;
    let resp = c
        .send_streaming(request("GET", "http://uk.test/gated", Vec::new()))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();

    // The origin holds the rest back until released: the first chunk must arrive on its own.
    let first = tokio::time::timeout(WAIT, body.frame())
        .await
        .expect("the first chunk arrives while the origin is still sending")
        .expect("a frame")
        .expect("a data frame");
    assert_eq!(first.into_data().ok(), Some(Bytes::from_static(b"first;")));
    // The record is written when the body ends, not before.
    let before = p.audit_barrier().await;
    assert!(
        before
            .iter()
            .all(|r| r.dest_host.as_deref() != Some("uk.test")),
        "record emitted before the body ended: {before:#?}"
    );

    origin.release();
    let rest = tokio::time::timeout(WAIT, body.collect())
        .await
        .expect("the rest arrives")
        .expect("read the rest")
        .to_bytes();
    assert_eq!(&rest[..], b"second");

    let recs = p
        .audit
        .wait_until(
            |r| r.iter().any(|x| x.dest_host.as_deref() == Some("uk.test")),
            "the uk.test record",
        )
        .await;
    assert_eq!(record_for(&recs, "uk.test").bytes_down, 12);
}

// ---- header handling -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn via_is_added_and_proxy_authorization_is_never_forwarded() {
    let p = spawn_proxy("").await;
    let origin = p.http_origin(GB_IP, 80).await;

    let resp = p
        .raw(
            b"GET http://uk.test/ HTTP/1.1\r\n\
              Host: uk.test\r\n\
              Proxy-Authorization: Basic c2VjcmV0OnNlY3JldA==\r\n\
              Via: 1.0 client-side\r\n\
              X-Kept: yes\r\n\
              Connection: close\r\n\r\n",
        )
        .await;

    assert_eq!(resp.status, StatusCode::OK);
    let seen = &origin.seen()[0];
    assert_eq!(seen.header("proxy-authorization"), None);
    assert_eq!(seen.header("x-kept"), Some("yes"));
    let via = seen.all("via");
    assert!(
        via.contains(&"1.0 client-side") && via.contains(&"1.1 residency-proxy"),
        "existing Via kept and ours appended: {via:?}"
    );
    // And on the way back.
    assert!(
        resp.headers
            .get_all("via")
            .iter()
            .any(|v| v == "1.1 residency-proxy"),
        "Via on the response: {:?}",
        resp.headers
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_are_removed_in_both_directions() {
    let p = spawn_proxy("").await;
    let origin = p.http_origin(GB_IP, 80).await;

    let resp = p
        .raw(
            b"GET http://uk.test/ HTTP/1.1\r\n\
              Host: uk.test\r\n\
              Connection: close, X-Hop-Custom\r\n\
              X-Hop-Custom: connection-scoped\r\n\
              Keep-Alive: timeout=5\r\n\
              TE: trailers\r\n\
              Upgrade: websocket\r\n\
              Proxy-Connection: keep-alive\r\n\
              X-End-To-End: kept\r\n\r\n",
        )
        .await;

    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    let seen = &origin.seen()[0];
    for h in [
        "x-hop-custom",
        "keep-alive",
        "te",
        "upgrade",
        "proxy-connection",
    ] {
        assert_eq!(seen.header(h), None, "{h} must not reach the origin");
    }
    assert!(
        seen.all("connection").iter().all(|v| !v.contains("X-Hop")),
        "the client's Connection header is not forwarded: {:?}",
        seen.headers
    );
    assert_eq!(seen.header("x-end-to-end"), Some("kept"));
    // The origin's own hop-by-hop headers do not reach the client.
    assert_eq!(resp.header("x-origin-hop"), None);
    assert_eq!(resp.header("keep-alive"), None);
    assert_eq!(resp.header("x-origin"), Some("echo"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_is_replaced_by_the_uri_authority() {
    let p = spawn_proxy("").await;
    let origin80 = p.http_origin(GB_IP, 80).await;
    let origin443 = p.http_origin(GB_IP, 443).await;

    let a = p
        .raw(b"GET http://uk.test/ HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n")
        .await;
    let b = p
        .raw(
            b"GET http://UK.test:443/x HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n",
        )
        .await;

    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(b.status, StatusCode::OK);
    assert_eq!(origin80.seen()[0].all("host"), vec!["uk.test"]);
    assert_eq!(origin443.seen()[0].all("host"), vec!["uk.test:443"]);
    assert_eq!(p.dials(), vec![sa(GB_IP, 80), sa(GB_IP, 443)]);
}

// ---- CONNECT -------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_tunnels_bytes_and_is_audited_when_the_tunnel_closes() {
    let p = spawn_proxy("").await;
    let echo = p.tcp_origin(GB_IP, 443).await;

    let (resp, mut tunnel) = p.connect("uk.test:443").await;
    assert_eq!(resp.status, StatusCode::OK);
    tunnel.write_all(b"hello, origin").await.expect("write");
    assert_eq!(read_exactly(&mut tunnel, 13).await, b"hello, origin");
    tunnel.write_all(b"!").await.expect("write");
    assert_eq!(read_exactly(&mut tunnel, 1).await, b"!");
    assert_eq!(echo.connections(), 1);

    // Still open: no record yet.
    let open = p.audit_barrier().await;
    assert!(
        open.iter().all(|r| r.intent != "connect"),
        "record written while the tunnel is open: {open:#?}"
    );

    tunnel.shutdown().await.expect("half-close");
    assert_eq!(
        read_to_eof(&mut tunnel).await,
        b"",
        "the origin's EOF comes back"
    );

    let recs = p
        .audit
        .wait_until(
            |r| r.iter().any(|x| x.intent == "connect"),
            "the tunnel record",
        )
        .await;
    let r = record_for(&recs, "uk.test");
    assert_eq!(r.intent, "connect");
    assert_eq!(r.decision, "allow");
    assert_eq!(r.status, Some(200));
    assert_eq!(r.dest_port, Some(443));
    assert_eq!(r.dialed_ip, Some(GB_IP));
    assert_eq!(r.bytes_up, 14);
    assert_eq!(r.bytes_down, 14);
    assert_eq!(p.dials(), vec![sa(GB_IP, 443)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_a_not_adequate_destination_is_refused_without_a_dial() {
    let p = spawn_proxy("").await;

    let (resp, _s) = p.connect("cn.test:443").await;

    assert_eq!(resp.status, StatusCode::FORBIDDEN);
    assert!(resp.decision().contains("reason=not-adequate"), "{resp:?}");
    assert!(resp.decision().contains("jurisdiction=CN"), "{resp:?}");
    assert!(p.dials().is_empty());
    let recs = p.audit.wait_records(1).await;
    let r = record_for(&recs, "cn.test");
    assert_eq!(r.intent, "connect");
    assert_eq!(r.decision, "deny");
    assert_eq!(r.status, Some(403));
    assert_eq!(r.dialed_ip, None);
}

// ---- jurisdiction decisions ----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_resolving_to_cn_and_gb_dials_only_the_gb_address() {
    let p = spawn_proxy("").await;
    let _origin = p.http_origin(GB_IP, 80).await;
    // CN is deliberately not registered: dialling it would be a violation.

    let resp = p.get("http://mixed.test/").await;

    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(p.dials(), vec![sa(GB_IP, 80)]);
    let recs = p.audit.wait_records(1).await;
    let r = record_for(&recs, "mixed.test");
    assert_eq!(r.decision, "allow");
    assert_eq!(r.reason, "home");
    assert_eq!(r.dialed_ip, Some(GB_IP));
    assert_eq!(
        addrs(r),
        vec![(CN_IP, "CN".to_string()), (GB_IP, "GB".to_string())],
        "both addresses with their jurisdictions, in resolver order"
    );
    assert_eq!(r.dest_addrs[0].class, "not-adequate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_all_cn_host_is_refused_naming_not_adequate_and_cn() {
    let p = spawn_proxy("").await;

    let resp = p.get("http://allcn.test/").await;

    assert_eq!(resp.status, StatusCode::FORBIDDEN);
    let d = resp.decision();
    assert!(d.starts_with("deny"), "{d}");
    assert!(d.contains("reason=not-adequate"), "{d}");
    assert!(d.contains("jurisdiction=CN"), "{d}");
    assert!(resp.text().contains("not-adequate"), "{}", resp.text());
    assert!(resp.text().contains("allcn.test"), "{}", resp.text());
    assert!(p.dials().is_empty());
    let recs = p.audit.wait_records(1).await;
    let r = record_for(&recs, "allcn.test");
    assert_eq!(r.decision, "deny");
    assert_eq!(r.reason, "not-adequate");
    assert_eq!(r.status, Some(403));
    assert_eq!(addrs(r), vec![(CN_IP, "CN".to_string())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_us_host_is_refused_without_an_attestation() {
    let p = spawn_proxy("").await;

    let resp = p.get("http://us.test/").await;

    assert_eq!(resp.status, StatusCode::FORBIDDEN);
    assert!(
        resp.decision().contains("reason=conditional-not-attested"),
        "{}",
        resp.decision()
    );
    assert!(resp.decision().contains("jurisdiction=US"));
    assert!(p.dials().is_empty());
    let recs = p.audit.wait_records(1).await;
    assert_eq!(
        record_for(&recs, "us.test").reason,
        "conditional-not-attested"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_us_host_is_allowed_with_an_attestation() {
    let p = spawn_proxy(
        r#"
[[policy.attestation]]
host = "us.test"
organisation = "Example Inc."
basis = "UK Extension to the EU-US DPF; list entry checked (test)"
"#,
    )
    .await;
    let origin = p.http_origin(US_IP, 80).await;

    let resp = p.get("http://us.test/").await;

    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(origin.seen().len(), 1);
    assert_eq!(p.dials(), vec![sa(US_IP, 80)]);
    let recs = p.audit.wait_records(1).await;
    let r = record_for(&recs, "us.test");
    assert_eq!(r.decision, "allow");
    assert_eq!(r.reason, "attested");
    assert_eq!(r.dest_addrs[0].class, "conditional");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_mode_passes_a_cn_destination_and_records_would_deny() {
    let p = spawn_proxy(r#"mode = "report""#).await;
    let origin = p.http_origin(CN_IP, 80).await;

    let resp = p.get("http://cn.test/").await;

    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(origin.seen().len(), 1);
    let recs = p.audit.wait_records(1).await;
    let r = record_for(&recs, "cn.test");
    assert_eq!(r.decision, "allow");
    assert_eq!(r.mode, "report");
    assert!(r.would_deny);
    assert_eq!(r.reason, "not-adequate");
    assert_eq!(r.dialed_ip, Some(CN_IP));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_mode_still_refuses_metadata() {
    let p = spawn_proxy(r#"mode = "report""#).await;

    let resp = p.get("http://metadata.test/latest/meta-data/").await;

    assert_eq!(resp.status, StatusCode::FORBIDDEN);
    assert!(resp.decision().contains("reason=metadata"), "{resp:?}");
    assert!(p.dials().is_empty());
    let recs = p.audit.wait_records(1).await;
    let r = record_for(&recs, "metadata.test");
    assert_eq!(r.decision, "deny");
    assert!(!r.would_deny, "a safety deny is enforced, not reported");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_matching_rule_wins_a_deny_before_an_allow() {
    let p = spawn_proxy(
        r#"
[[policy.rule]]
id = "no-test-hosts"
action = "deny"
hosts = ["*.test"]

[[policy.rule]]
id = "uk-ok"
action = "allow"
hosts = ["uk.test"]
"#,
    )
    .await;

    let resp = p.get("http://uk.test/").await;

    assert_eq!(resp.status, StatusCode::FORBIDDEN);
    assert!(resp.decision().contains("reason=rule-deny"), "{resp:?}");
    assert!(resp.decision().contains("rule=no-test-hosts"), "{resp:?}");
    assert!(p.dials().is_empty());
    let recs = p.audit.wait_records(1).await;
    let r = record_for(&recs, "uk.test");
    assert_eq!(r.rule.as_deref(), Some("no-test-hosts"));
    assert_eq!(r.reason, "rule-deny");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_matching_rule_wins_an_allow_before_a_deny() {
    let p = spawn_proxy(
        r#"
[[policy.rule]]
id = "test-hosts-ok"
action = "allow"
hosts = ["*.test"]

[[policy.rule]]
id = "no-cn"
action = "deny"
jurisdictions = ["CN"]
"#,
    )
    .await;
    let _origin = p.http_origin(CN_IP, 80).await;

    let resp = p.get("http://cn.test/").await;
    assert_eq!(resp.status, StatusCode::OK);

    // A wildcard allow never opens the metadata endpoint: only a rule naming it could.
    let meta = p.get("http://metadata.test/").await;
    assert_eq!(meta.status, StatusCode::FORBIDDEN);
    assert!(meta.decision().contains("reason=metadata"), "{meta:?}");

    assert_eq!(p.dials(), vec![sa(CN_IP, 80)]);
    let recs = p.audit.wait_records(2).await;
    let r = record_for(&recs, "cn.test");
    assert_eq!(r.rule.as_deref(), Some("test-hosts-ok"));
    assert_eq!(r.reason, "rule-allow");
    assert_eq!(r.decision, "allow");
    assert_eq!(record_for(&recs, "metadata.test").rule, None);
}

// ---- safety denies -------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metadata_endpoint_is_refused_by_name_and_by_literal() {
    let p = spawn_proxy("").await;

    let by_name = p.get("http://metadata.test/latest/meta-data/").await;
    let by_ip = p.get("http://169.254.169.254/latest/meta-data/").await;
    let (tunnel, _s) = p.connect("169.254.169.254:443").await;

    for resp in [&by_name, &by_ip, &tunnel] {
        assert_eq!(resp.status, StatusCode::FORBIDDEN);
        assert!(resp.decision().contains("reason=metadata"), "{resp:?}");
        assert!(
            resp.decision().contains("jurisdiction=metadata"),
            "{resp:?}"
        );
    }
    assert!(p.dials().is_empty());
    let recs = p.audit.wait_records(3).await;
    assert_eq!(recs.len(), 3);
    for r in &recs {
        assert_eq!(r.decision, "deny");
        assert_eq!(r.reason, "metadata");
        assert_eq!(addrs(r), vec![(METADATA_IP, "metadata".to_string())]);
    }
    assert_eq!(
        recs.iter()
            .filter(|r| r.dest_host.as_deref() == Some("169.254.169.254"))
            .count(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_addresses_are_refused_unless_in_internal_allowed() {
    let closed = spawn_proxy("").await;
    for url in ["http://10.1.2.3/", "http://internal.test/"] {
        let resp = closed.get(url).await;
        assert_eq!(resp.status, StatusCode::FORBIDDEN, "{url}");
        assert!(
            resp.decision().contains("reason=internal-not-allowed"),
            "{resp:?}"
        );
        assert!(
            resp.decision().contains("jurisdiction=internal"),
            "{resp:?}"
        );
    }
    assert!(closed.dials().is_empty());
    let recs = closed.audit.wait_records(2).await;
    assert!(recs.iter().all(|r| r.reason == "internal-not-allowed"));

    let open = spawn_proxy(
        r#"
[policy]
internal_allowed = ["10.1.2.0/24"]
"#,
    )
    .await;
    let origin = open.http_origin(INTERNAL_IP, 80).await;
    let resp = open.get("http://internal.test/").await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(origin.seen().len(), 1);
    // Outside the allowed CIDR: still refused.
    let other = open.get("http://10.9.9.9/").await;
    assert_eq!(other.status, StatusCode::FORBIDDEN);
    assert_eq!(open.dials(), vec![sa(INTERNAL_IP, 80)]);
    let recs = open.audit.wait_records(2).await;
    assert_eq!(
        record_for(&recs, "internal.test").reason,
        "internal-allowed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_outside_allowed_clients_is_refused() {
    let p = spawn_proxy(r#"allowed_clients = ["10.0.0.0/8"]"#).await;

    let resp = p.get("http://uk.test/").await;
    let (tunnel, _s) = p.connect("uk.test:443").await;

    for r in [&resp, &tunnel] {
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert!(r.decision().contains("reason=client-not-allowed"), "{r:?}");
    }
    assert!(p.dials().is_empty());
    let recs = p.audit.wait_records(2).await;
    for r in &recs {
        assert_eq!(r.reason, "client-not-allowed");
        assert_eq!(r.status, Some(403));
        assert_eq!(
            r.client_addr.map(|a| a.ip()),
            Some("127.0.0.1".parse::<IpAddr>().expect("ip"))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_outside_allowed_ports_is_refused() {
    let p = spawn_proxy("").await;

    let resp = p.get("http://uk.test:8080/").await;
    let (tunnel, _s) = p.connect("uk.test:22").await;

    for r in [&resp, &tunnel] {
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert!(r.decision().contains("reason=port-not-allowed"), "{r:?}");
    }
    assert!(p.dials().is_empty());
    let recs = p.audit.wait_records(2).await;
    assert!(recs.iter().all(|r| r.reason == "port-not-allowed"));
    let mut ports: Vec<_> = recs.iter().filter_map(|r| r.dest_port).collect();
    ports.sort_unstable();
    assert_eq!(ports, vec![22, 8080]);
}

// ---- failures ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_does_not_resolve_gets_502() {
    let p = spawn_proxy("").await;

    let resp = p.get("http://nx.test/").await;

    assert_eq!(resp.status, StatusCode::BAD_GATEWAY);
    assert!(
        resp.decision().contains("reason=resolve-failed"),
        "{resp:?}"
    );
    assert!(p.dials().is_empty());
    let recs = p.audit.wait_records(1).await;
    let r = record_for(&recs, "nx.test");
    assert_eq!(r.reason, "resolve-failed");
    assert_eq!(r.decision, "deny");
    assert_eq!(r.status, Some(502));
    assert_eq!(r.error_side.as_deref(), Some("upstream"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_that_is_down_gets_502() {
    let p = spawn_proxy("").await;
    p.refuse(FR_IP, 80);
    p.refuse(FR_IP, 443);

    let resp = p.get("http://down.test/").await;
    let (tunnel, _s) = p.connect("down.test:443").await;

    for r in [&resp, &tunnel] {
        assert_eq!(r.status, StatusCode::BAD_GATEWAY);
        assert!(r.decision().contains("reason=connect-failed"), "{r:?}");
    }
    assert_eq!(p.dials(), vec![sa(FR_IP, 80), sa(FR_IP, 443)]);
    let recs = p.audit.wait_records(2).await;
    assert_eq!(recs.len(), 2);
    for r in &recs {
        assert_eq!(r.dest_host.as_deref(), Some("down.test"));
        assert_eq!(r.status, Some(502));
        assert_eq!(r.decision, "allow", "policy allowed it; the origin failed");
        assert_eq!(r.reason, "adequate");
        assert_eq!(r.error_side.as_deref(), Some("upstream"));
        assert_eq!(r.dialed_ip, None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_that_never_completes_gets_504_after_connect_timeout() {
    let p = spawn_proxy(
        r#"
[limits]
connect_timeout = "200ms"
"#,
    )
    .await;
    p.hang(FR_IP, 80);

    let resp = p.get("http://fr.test/").await;

    assert_eq!(resp.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        resp.decision().contains("reason=connect-timeout"),
        "{resp:?}"
    );
    assert_eq!(p.dials(), vec![sa(FR_IP, 80)]);
    let recs = p.audit.wait_records(1).await;
    let r = record_for(&recs, "fr.test");
    assert_eq!(r.status, Some(504));
    assert_eq!(r.error_side.as_deref(), Some("upstream"));
}

// ---- request parsing -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_ipv4_literals_and_ipv6_zone_ids_get_400_without_a_dial() {
    let p = spawn_proxy("").await;
    let cases = [
        ("http://2130706433/", "2130706433"),
        ("http://0177.0.0.1/", "0177.0.0.1"),
        ("http://0x7f.1/", "0x7f.1"),
        ("http://127.1/", "127.1"),
        ("http://[fe80::1%25eth0]/", "[fe80::1%25eth0]"),
    ];
    for (target, host) in cases {
        let resp = p.raw(&raw_get(target, host)).await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{target}: {resp:?}");
    }
    // And as CONNECT targets.
    for authority in ["2130706433:443", "127.1:443", "0x7f.0.0.1:443"] {
        let (resp, _s) = p.connect(authority).await;
        assert_eq!(
            resp.status,
            StatusCode::BAD_REQUEST,
            "{authority}: {resp:?}"
        );
    }
    assert!(p.dials().is_empty(), "dialled {:?}", p.dials());
    let recs = p.audit.wait_records(cases.len() + 3).await;
    assert_eq!(recs.len(), cases.len() + 3);
    for r in &recs {
        assert_eq!(r.status, Some(400), "{r:?}");
        assert_eq!(r.decision, "deny");
        assert_eq!(r.reason, "malformed-request");
        assert_eq!(r.error_side.as_deref(), Some("downstream"));
    }
    // The refused spelling is on record.
    let errors: Vec<_> = recs.iter().filter_map(|r| r.error.as_deref()).collect();
    for needle in ["2130706433", "0177.0.0.1", "0x7f.1", "127.1", "zone"] {
        assert!(
            errors.iter().any(|e| e.contains(needle)),
            "{needle} in {errors:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bracketed_ipv6_literal_is_accepted_and_refused_as_internal() {
    let p = spawn_proxy("").await;

    let resp = p.raw(&raw_get("http://[::1]:80/", "[::1]")).await;

    assert_eq!(resp.status, StatusCode::FORBIDDEN, "{resp:?}");
    assert!(
        resp.decision().contains("reason=internal-not-allowed"),
        "{resp:?}"
    );
    assert!(p.dials().is_empty());
    let recs = p.audit.wait_records(1).await;
    let r = record_for(&recs, "::1");
    assert_eq!(
        addrs(r),
        vec![("::1".parse().expect("ip"), "internal".to_string())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_form_request_gets_400() {
    let p = spawn_proxy("").await;

    let resp = p
        .raw(b"GET / HTTP/1.1\r\nHost: uk.test\r\nConnection: close\r\n\r\n")
        .await;

    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    assert!(resp.text().contains("absolute-form"), "{}", resp.text());
    assert!(p.dials().is_empty());
    let recs = p.audit.wait_records(1).await;
    assert_eq!(recs[0].status, Some(400));
    assert_eq!(recs[0].reason, "malformed-request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_absolute_form_request_gets_400() {
    let p = spawn_proxy("").await;

    let resp = p.raw(&raw_get("https://uk.test/", "uk.test")).await;

    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    assert!(resp.text().contains("CONNECT"), "{}", resp.text());
    assert!(p.dials().is_empty());
    let recs = p.audit.wait_records(1).await;
    assert_eq!(recs[0].status, Some(400));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_header_section_gets_431_and_is_audited() {
    let p = spawn_proxy(
        r#"
[limits]
max_header_bytes = 16384
"#,
    )
    .await;
    let mut req = b"GET http://uk.test/ HTTP/1.1\r\nHost: uk.test\r\nX-Big: ".to_vec();
    req.extend(std::iter::repeat_n(b'a', 100 * 1024));
    req.extend_from_slice(b"\r\n\r\n");

    let mut s = TcpStream::connect(p.addr).await.expect("connect");
    // The proxy stops reading after 16 KiB: write from another task so the response can be
    // read while the rest of the header is refused.
    let (mut rd, mut wr) = s.split();
    let write = async move {
        let _ = wr.write_all(&req).await;
    };
    let read = async move {
        let mut head = Vec::new();
        let _ = tokio::time::timeout(
            WAIT,
            tokio::io::AsyncReadExt::read_to_end(&mut rd, &mut head),
        )
        .await;
        head
    };
    let ((), got) = tokio::join!(write, read);
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("HTTP/1.1 431"),
        "expected a 431 response, got {text:?}"
    );

    assert!(p.dials().is_empty());
    let recs = p.audit.wait_records(1).await;
    assert_eq!(recs[0].status, Some(431));
    assert_eq!(recs[0].reason, "malformed-request");
    assert_eq!(recs[0].error_side.as_deref(), Some("downstream"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_request_line_gets_400_and_is_audited() {
    let p = spawn_proxy("").await;

    let resp = p.raw(b"GET http://uk.test/ HTTP/1.1 extra\r\n\r\n").await;

    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    assert!(p.dials().is_empty());
    let recs = p.audit.wait_records(1).await;
    assert_eq!(recs[0].status, Some(400));
    assert_eq!(recs[0].reason, "malformed-request");
    assert_eq!(recs[0].intent, "unknown");
}

// ---- connections and records ---------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_carries_several_requests_on_one_client_connection() {
    let p = spawn_proxy("").await;
    let origin = p.http_origin(GB_IP, 80).await;

    let mut c = p.client().await;
    let a = c.get("http://uk.test/one").await;
    let denied = c.get("http://cn.test/").await;
    let b = c
        .send(request("POST", "http://uk.test/two", b"body".to_vec()))
        .await;

    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert_eq!(b.status, StatusCode::OK);
    assert!(c.is_open(), "the client connection is still open");
    let seen = origin.seen();
    let targets: Vec<_> = seen.iter().map(|s| s.target.as_str()).collect();
    assert_eq!(targets, vec!["/one", "/two"]);
    assert_eq!(seen[1].body, b"body");

    let recs = p.audit.wait_records(3).await;
    assert_eq!(recs.len(), 3);
    let port = recs[0].client_addr.map(|a| a.port());
    assert!(
        recs.iter().all(|r| r.client_addr.map(|a| a.port()) == port),
        "all from one client connection: {recs:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_gets_exactly_one_audit_record() {
    let p = spawn_proxy("").await;
    let _gb = p.http_origin(GB_IP, 80).await;
    let _fr = p.tcp_origin(FR_IP, 443).await;
    p.refuse(FR_IP, 80);

    let mut c = p.client().await;
    let mut expected = Vec::new();
    for i in 0..5 {
        let path = format!("http://uk.test/{i}");
        assert_eq!(c.get(&path).await.status, StatusCode::OK);
        expected.push("uk.test");
    }
    assert_eq!(
        p.get("http://allcn.test/").await.status,
        StatusCode::FORBIDDEN
    );
    expected.push("allcn.test");
    assert_eq!(
        p.get("http://down.test/").await.status,
        StatusCode::BAD_GATEWAY
    );
    expected.push("down.test");
    assert_eq!(
        p.get("http://nx.test/").await.status,
        StatusCode::BAD_GATEWAY
    );
    expected.push("nx.test");
    let (resp, mut t) = p.connect("fr.test:443").await;
    assert_eq!(resp.status, StatusCode::OK);
    t.write_all(b"x").await.expect("write");
    assert_eq!(read_exactly(&mut t, 1).await, b"x");
    t.shutdown().await.expect("half-close");
    read_to_eof(&mut t).await;
    expected.push("fr.test");
    let bad = p.raw(&raw_get("http://127.1/", "127.1")).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    // Refused before a destination was parsed: no dest.host (the error names it).
    expected.push("");

    let n = expected.len();
    p.audit.wait_records(n).await;
    // Anything emitted twice would show up before a later request's record.
    let recs = p.audit_barrier().await;
    let mut got: Vec<_> = recs
        .iter()
        .map(|r| r.dest_host.clone().unwrap_or_default())
        .collect();
    got.sort();
    expected.sort_unstable();
    assert_eq!(got, expected, "one record per request: {recs:#?}");
}

// ---- shutdown ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_lets_an_open_tunnel_finish_and_records_it() {
    let mut p = spawn_proxy("").await;
    let _echo = p.tcp_origin(GB_IP, 443).await;
    let (resp, mut t) = p.connect("uk.test:443").await;
    assert_eq!(resp.status, StatusCode::OK);
    t.write_all(b"before").await.expect("write");
    assert_eq!(read_exactly(&mut t, 6).await, b"before");

    let handle = p.take_handle();
    let addr = p.addr;
    let shutdown = tokio::spawn(async move { handle.shutdown(Duration::from_secs(30)).await });

    // Wait until the proxy has stopped accepting (its listener is closed).
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if TcpStream::connect(addr).await.is_err() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the proxy kept accepting after shutdown"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The tunnel still works while draining.
    t.write_all(b"during").await.expect("write");
    assert_eq!(read_exactly(&mut t, 6).await, b"during");
    assert!(
        !shutdown.is_finished(),
        "shutdown waits for the open tunnel"
    );
    assert!(
        p.audit.records().iter().all(|r| r.intent != "connect"),
        "no tunnel record before the tunnel ends"
    );

    t.shutdown().await.expect("half-close");
    read_to_eof(&mut t).await;
    let drained = tokio::time::timeout(WAIT, shutdown)
        .await
        .expect("shutdown finishes once the tunnel closes")
        .expect("shutdown task");
    assert!(drained, "everything finished inside the drain time");

    p.close_audit().await;
    let recs = p.audit.records();
    let r = record_for(&recs, "uk.test");
    assert_eq!(r.intent, "connect");
    assert_eq!(r.bytes_up, 12);
    assert_eq!(r.bytes_down, 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cuts_a_tunnel_after_the_drain_time_and_still_records_it() {
    let mut p = spawn_proxy("").await;
    let _echo = p.tcp_origin(GB_IP, 443).await;
    let (resp, mut t) = p.connect("uk.test:443").await;
    assert_eq!(resp.status, StatusCode::OK);
    t.write_all(b"abc").await.expect("write");
    assert_eq!(read_exactly(&mut t, 3).await, b"abc");

    let drained = tokio::time::timeout(WAIT, p.shutdown(Duration::from_millis(200)))
        .await
        .expect("shutdown returns after the drain time");
    assert!(!drained, "the idle tunnel had to be cut");
    assert_eq!(
        read_to_eof(&mut t).await,
        b"",
        "the client sees the tunnel close"
    );

    let recs = p
        .audit
        .wait_until(
            |r| r.iter().any(|x| x.intent == "connect"),
            "the cut tunnel's record",
        )
        .await;
    let r = record_for(&recs, "uk.test");
    assert_eq!(r.bytes_up, 3);
    assert_eq!(r.bytes_down, 3);
    assert_eq!(r.status, Some(200));
}

// ---- client timeouts -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_alive_connection_idles_for_the_keepalive_timeout_not_the_header_timeout() {
    // The header-read timer runs from a request's first byte until it is being handled; once
    // answered, the idle connection gets the (much longer) keep-alive timeout.
    let p = spawn_proxy(
        r#"
[limits]
header_read_timeout = "300ms"
keepalive_idle_timeout = "60s"
"#,
    )
    .await;
    let _origin = p.http_origin(GB_IP, 80).await;

    // The first request is written at once, so it is already queued when the proxy first
    // reads: only the idle gap below depends on timing, and delays only lengthen it.
    let mut s = TcpStream::connect(p.addr).await.expect("connect");
    s.write_all(b"GET http://cn.test/ HTTP/1.1\r\nHost: cn.test\r\n\r\n")
        .await
        .expect("write the first request");
    // A refusal is answered without the request ever waiting on I/O.
    assert_eq!(read_response(&mut s).await.status, StatusCode::FORBIDDEN);

    // Idle for well past the header-read timeout (the thing under test is a timer).
    tokio::time::sleep(Duration::from_millis(900)).await;

    s.write_all(b"GET http://uk.test/ HTTP/1.1\r\nHost: uk.test\r\n\r\n")
        .await
        .expect("the idle connection is still open");
    let second = read_response(&mut s).await;
    assert_eq!(second.status, StatusCode::OK, "{second:?}");
}

// ---- edge cases ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_adequate_address_is_down_the_not_adequate_one_is_never_tried() {
    let p = spawn_proxy("").await;
    p.refuse(GB_IP, 80);
    // CN stays unregistered: a fallback to it would be a violation.

    let resp = p.get("http://mixed.test/").await;

    assert_eq!(resp.status, StatusCode::BAD_GATEWAY);
    assert_eq!(p.dials(), vec![sa(GB_IP, 80)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_that_accepts_but_never_answers_gets_504() {
    let p = spawn_proxy(
        r#"
[limits]
upstream_response_timeout = "200ms"
"#,
    )
    .await;
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    p.route(GB_IP, 80, silent.local_addr().expect("addr"));
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });

    let resp = p.get("http://uk.test/").await;

    assert_eq!(resp.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        resp.decision().contains("reason=upstream-timeout"),
        "{resp:?}"
    );
    let recs = p.audit.wait_records(1).await;
    let r = record_for(&recs, "uk.test");
    assert_eq!(r.status, Some(504));
    assert_eq!(r.dialed_ip, Some(GB_IP));
    hold.abort();
}

/// Read a response head byte by byte (nothing behind it is consumed) and check it is a 200.
async fn expect_200_head(s: &mut TcpStream) {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.extend(read_exactly(s, 1).await);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&head)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_sent_right_behind_the_connect_head_reach_the_origin() {
    let p = spawn_proxy("").await;
    let _echo = p.tcp_origin(GB_IP, 443).await;

    let mut s = TcpStream::connect(p.addr).await.expect("connect");
    s.write_all(b"CONNECT uk.test:443 HTTP/1.1\r\nHost: uk.test:443\r\n\r\nearly-bytes")
        .await
        .expect("write");
    expect_200_head(&mut s).await;
    assert_eq!(read_exactly(&mut s, 11).await, b"early-bytes");
}

/// Bulk through a tunnel (moved socket to socket once it is bulk), with bytes sent right behind
/// the request head in front: all of it comes back from the echo in order, and the record
/// counts every byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_through_a_tunnel_arrives_whole_and_is_counted() {
    let p = spawn_proxy("").await;
    let _echo = p.tcp_origin(GB_IP, 443).await;

    let mut s = TcpStream::connect(p.addr).await.expect("connect");
    let mut sent = b"early".to_vec();
    sent.extend((0..4_000_000u32).map(|i| (i % 253) as u8));
    let mut first = b"CONNECT uk.test:443 HTTP/1.1\r\nHost: uk.test:443\r\n\r\n".to_vec();
    first.extend_from_slice(&sent[..5]);
    s.write_all(&first).await.expect("write");
    expect_200_head(&mut s).await;
    let (mut r, mut w) = s.into_split();
    let rest = sent[5..].to_vec();
    let writer = tokio::spawn(async move {
        w.write_all(&rest).await.expect("write");
        w.shutdown().await.expect("half-close");
    });
    let mut back = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut r, &mut back)
        .await
        .expect("read");
    writer.await.expect("writer");
    assert_eq!(back.len(), sent.len());
    assert!(back == sent, "the echo sent back other bytes");

    let recs = p
        .audit
        .wait_until(
            |r| r.iter().any(|x| x.intent == "connect"),
            "the tunnel record",
        )
        .await;
    let rec = record_for(&recs, "uk.test");
    assert_eq!((rec.bytes_up, rec.bytes_down), (4_000_005, 4_000_005));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_request_body_reaches_the_origin_whole() {
    let p = spawn_proxy("").await;
    let origin = p.http_origin(GB_IP, 80).await;

    let resp = p
        .raw(
            b"POST http://uk.test/up HTTP/1.1\r\nHost: uk.test\r\nTransfer-Encoding: chunked\r\n\
              Connection: close\r\n\r\n5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n",
        )
        .await;

    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(origin.seen()[0].body, b"hello, world");
    let recs = p.audit.wait_records(1).await;
    assert_eq!(record_for(&recs, "uk.test").bytes_up, 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_in_the_url_get_400_without_a_dial() {
    let p = spawn_proxy("").await;
    let _origin = p.http_origin(GB_IP, 80).await;

    let resp = p
        .raw(&raw_get("http://user:secret@uk.test/", "uk.test"))
        .await;

    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    assert!(p.dials().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metadata_endpoint_is_refused_inside_ipv6_literals_too() {
    let p = spawn_proxy("").await;

    for host in ["[::ffff:169.254.169.254]", "[64:ff9b::a9fe:a9fe]"] {
        let resp = p.raw(&raw_get(&format!("http://{host}/"), host)).await;
        assert_eq!(resp.status, StatusCode::FORBIDDEN, "{host}: {resp:?}");
        assert!(resp.decision().contains("reason=metadata"), "{resp:?}");
    }
    assert!(p.dials().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv6_literal_destination_gets_a_bracketed_host_header() {
    let p = spawn_proxy(
        r#"
[policy]
internal_allowed = ["::1/128"]
"#,
    )
    .await;
    let v6: IpAddr = "::1".parse().expect("ip");
    let o80 = p.http_origin(v6, 80).await;
    let o443 = p.http_origin(v6, 443).await;

    assert_eq!(p.get("http://[::1]/").await.status, StatusCode::OK);
    assert_eq!(p.get("http://[::1]:443/").await.status, StatusCode::OK);

    assert_eq!(o80.seen()[0].all("host"), vec!["[::1]"]);
    assert_eq!(o443.seen()[0].all("host"), vec!["[::1]:443"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_mid_response_still_gets_exactly_one_record() {
    let p = spawn_proxy("").await;
    let origin = p.http_origin(GB_IP, 80).await;

    let mut s = TcpStream::connect(p.addr).await.expect("connect");
    s.write_all(&raw_get("http://uk.test/gated", "uk.test"))
        .await
        .expect("write");
    let mut buf = Vec::new();
    while !String::from_utf8_lossy(&buf).contains("first;") {
        buf.extend(read_exactly(&mut s, 1).await);
    }
    drop(s);

    let recs = p
        .audit
        .wait_until(
            |r| r.iter().any(|x| x.dest_host.as_deref() == Some("uk.test")),
            "the aborted request's record",
        )
        .await;
    assert_eq!(record_for(&recs, "uk.test").bytes_down, 6);
    origin.release();
    let all = p.audit_barrier().await;
    assert_eq!(all.len(), 1, "{all:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_uri_longer_than_hyper_accepts_is_audited_with_the_status_sent() {
    let p = spawn_proxy(
        r#"
[limits]
max_header_bytes = 1048576
"#,
    )
    .await;
    let long = "a".repeat(70_000);

    let resp = p
        .raw(&raw_get(&format!("http://uk.test/{long}"), "uk.test"))
        .await;

    let recs = p.audit.wait_records(1).await;
    assert_eq!(
        recs[0].status,
        Some(resp.status.as_u16()),
        "the record states the status the client got"
    );
    assert!(p.dials().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_preface_is_audited_without_claiming_a_response() {
    let p = spawn_proxy("").await;

    let mut s = TcpStream::connect(p.addr).await.expect("connect");
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .expect("write");
    let got = read_to_eof(&mut s).await;

    let recs = p.audit.wait_records(1).await;
    let sent = String::from_utf8_lossy(&got)
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok());
    assert_eq!(
        recs[0].status,
        sent,
        "record status vs response {:?}",
        String::from_utf8_lossy(&got)
    );
    assert_eq!(recs[0].reason, "malformed-request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_requests_reuse_one_upstream_connection_to_the_vetted_address() {
    let p = spawn_proxy("").await;
    let origin = p.http_origin(GB_IP, 80).await;
    for i in 0..3 {
        let resp = p.get(&format!("http://uk.test/r{i}")).await;
        assert_eq!(resp.status, StatusCode::OK);
        // Each request is decided on its own: one audit record each.
        p.audit.wait_records(i + 1).await;
    }
    assert_eq!(origin.requests(), 3);
    assert_eq!(origin.connections(), 1, "keep-alive to the origin");
    assert_eq!(p.dials(), vec![sa(GB_IP, 80)], "dialled once");
    // A destination vetted to another address never takes that connection.
    let fr = p.http_origin(FR_IP, 80).await;
    let resp = p.get("http://fr.test/").await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(fr.requests(), 1);
    assert_eq!(p.dials(), vec![sa(GB_IP, 80), sa(FR_IP, 80)]);
}

// ---- bounded resources ---------------------------------------------------------------------

/// Read until the proxy closes the connection (EOF or reset), within [`WAIT`]; what arrived.
async fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    tokio::time::timeout(WAIT, async {
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .expect("the proxy closes the connection");
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnels_count_against_max_connections_until_they_close() {
    const MAX: usize = 3;
    let p = spawn_proxy(&format!("max_connections = {MAX}\n")).await;
    let echo = p.tcp_origin(GB_IP, 443).await;

    let mut tunnels = Vec::new();
    for i in 0..MAX {
        let (resp, mut t) = p.connect("uk.test:443").await;
        assert_eq!(resp.status, StatusCode::OK, "tunnel {i}");
        t.write_all(b"x").await.expect("write");
        assert_eq!(read_exactly(&mut t, 1).await, b"x", "tunnel {i} is live");
        tunnels.push(t);
    }

    // The open tunnels hold every slot: the next ten are refused, not tunnelled.
    for i in 0..10 {
        let Ok(mut s) = TcpStream::connect(p.addr).await else {
            continue; // connection refused
        };
        let _ = s
            .write_all(b"CONNECT uk.test:443 HTTP/1.1\r\nHost: uk.test:443\r\n\r\n")
            .await;
        let got = String::from_utf8_lossy(&read_until_closed(&mut s).await).to_string();
        assert!(
            got.is_empty() || got.starts_with("HTTP/1.1 503 "),
            "connection {} over the limit got {got:?}",
            MAX + i
        );
    }
    assert_eq!(echo.connections(), MAX, "no tunnel past the limit");
    assert_eq!(p.dials().len(), MAX);
    assert!(
        p.audit.records().iter().all(|r| r.intent != "connect"),
        "the open tunnels have no record yet"
    );

    // The open ones still work, and closing one frees its slot.
    let mut first = tunnels.remove(0);
    first.write_all(b"y").await.expect("write");
    assert_eq!(read_exactly(&mut first, 1).await, b"y");
    first.shutdown().await.expect("half-close");
    read_to_eof(&mut first).await;
    drop(first);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (resp, _t) = p.connect("uk.test:443").await;
        if resp.status == StatusCode::OK {
            break;
        }
        assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the closed tunnel's slot was never freed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_tunnel_lifetime_cuts_an_open_tunnel_and_the_record_says_so() {
    let p = spawn_proxy(
        r#"
[limits]
max_tunnel_lifetime = "300ms"
tunnel_idle_timeout = "5m"
"#,
    )
    .await;
    let _echo = p.tcp_origin(GB_IP, 443).await;
    let (resp, mut t) = p.connect("uk.test:443").await;
    assert_eq!(resp.status, StatusCode::OK);
    t.write_all(b"abc").await.expect("write");
    assert_eq!(read_exactly(&mut t, 3).await, b"abc");

    // Idle for far less than the five-minute idle timeout: only the lifetime can close it.
    read_until_closed(&mut t).await;

    let recs = p
        .audit
        .wait_until(
            |r| r.iter().any(|x| x.intent == "connect"),
            "the cut tunnel's record",
        )
        .await;
    let r = record_for(&recs, "uk.test");
    assert_eq!(
        r.error.as_deref(),
        Some("tunnel lifetime exceeded"),
        "{r:#?}"
    );
    assert_eq!(r.bytes_up, 3);
    assert_eq!(r.status, Some(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_pooled_connection_is_retried_once_on_a_fresh_dial() {
    let p = spawn_proxy("").await;
    let origin = ScriptedOrigin::start(vec![
        Script::AnswerOneThenCut { body_bytes: 0 },
        Script::Answer,
    ])
    .await;
    p.route(GB_IP, 80, origin.addr);

    let first = p.get("http://uk.test/one").await;
    assert_eq!(first.status, StatusCode::OK);
    // Goes over the kept-alive connection, which the origin closes under it unanswered.
    let second = p.get("http://uk.test/two").await;
    assert_eq!(second.status, StatusCode::OK, "{second:?}");
    assert_eq!(second.text(), "ok");

    assert_eq!(
        p.dials(),
        vec![sa(GB_IP, 80), sa(GB_IP, 80)],
        "one extra dial"
    );
    assert_eq!(origin.connections(), 2);
    assert_eq!(
        origin.requests(),
        vec![
            "GET /one HTTP/1.1",
            "GET /two HTTP/1.1",
            "GET /two HTTP/1.1"
        ],
        "the second request reached the stale connection, then the fresh one"
    );
    let recs = p.audit_barrier().await;
    assert_eq!(
        recs.len(),
        2,
        "one record per request, retry or not: {recs:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_partly_written_to_a_stale_connection_is_not_retried() {
    let p = spawn_proxy("").await;
    let origin = ScriptedOrigin::start(vec![
        Script::AnswerOneThenCut { body_bytes: 5 },
        Script::Answer,
    ])
    .await;
    p.route(GB_IP, 80, origin.addr);
    assert_eq!(p.get("http://uk.test/one").await.status, StatusCode::OK);

    // Head and half the body go out on the kept-alive connection; the origin takes them and
    // closes.
    let mut s = TcpStream::connect(p.addr).await.expect("connect");
    s.write_all(
        b"POST http://uk.test/submit HTTP/1.1\r\nHost: uk.test\r\nContent-Length: 10\r\n\r\nhello",
    )
    .await
    .expect("write");
    let resp = read_response(&mut s).await;

    assert_eq!(resp.status, StatusCode::BAD_GATEWAY, "{resp:?}");
    assert_eq!(p.dials(), vec![sa(GB_IP, 80)], "never dialled again");
    assert_eq!(origin.connections(), 1);
    assert_eq!(
        origin.requests(),
        vec!["GET /one HTTP/1.1", "POST /submit HTTP/1.1"],
        "the POST reached the origin once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_body_that_stalls_is_cut_after_body_idle_timeout() {
    let p = spawn_proxy(
        r#"
[limits]
body_idle_timeout = "200ms"
"#,
    )
    .await;
    let origin = ScriptedOrigin::start(vec![Script::StallMidBody {
        announced: 100,
        sent: 10,
    }])
    .await;
    p.route(GB_IP, 80, origin.addr);

    let mut s = TcpStream::connect(p.addr).await.expect("connect");
    s.write_all(&raw_get("http://uk.test/slow", "uk.test"))
        .await
        .expect("write");
    let got = read_until_closed(&mut s).await;
    let text = String::from_utf8_lossy(&got);

    assert!(text.starts_with("HTTP/1.1 200 "), "{text:?}");
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    assert_eq!(body, "x".repeat(10), "the ten bytes sent, then the cut");
    let recs = p.audit_barrier().await;
    assert_eq!(record_for(&recs, "uk.test").bytes_down, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_that_stalls_is_cut_after_body_idle_timeout() {
    let p = spawn_proxy(
        r#"
[limits]
body_idle_timeout = "200ms"
"#,
    )
    .await;
    let origin = ScriptedOrigin::start(vec![Script::Answer]).await;
    p.route(GB_IP, 80, origin.addr);

    let mut s = TcpStream::connect(p.addr).await.expect("connect");
    s.write_all(
        b"POST http://uk.test/upload HTTP/1.1\r\nHost: uk.test\r\nContent-Length: 100\r\n\r\nhello",
    )
    .await
    .expect("write");
    // Then nothing more: the proxy gives up on the body and closes the client connection.
    let got = read_until_closed(&mut s).await;
    let text = String::from_utf8_lossy(&got);
    assert!(!text.starts_with("HTTP/1.1 200 "), "{text:?}");
    assert_eq!(origin.requests(), vec!["POST /upload HTTP/1.1"]);
    let recs = p.audit_barrier().await;
    assert_eq!(record_for(&recs, "uk.test").bytes_up, 5);
}
