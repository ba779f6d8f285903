//! Operations end to end: the admin listener (metrics scraped over HTTP and parsed with a
//! Prometheus text-format parser, health, readiness during drain, explain), and hot reload
//! (a changed rule changes the next decision, a broken configuration keeps the old one and
//! counts an error, listeners added and removed, open tunnels re-decided, and twenty reloads
//! under forward, CONNECT and reverse load losing no request and no record).

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper::StatusCode;
use residency_proxy::audit::ClosedBy;
use residency_proxy::metrics::names;
use support::custom::{admin_request, world_loader};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The scrape at `admin`, parsed.
async fn scrape(admin: std::net::SocketAddr) -> prometheus_parse::Scrape {
    let (status, body) = admin_request(admin, "GET", "/metrics").await;
    assert_eq!(status, 200, "{body}");
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
        .unwrap_or_else(|e| panic!("the exposition parses: {e}\n{body}"))
}

/// The value of the sample `name` whose labels include every `(key, value)` of `labels`
/// (summed over the others), or 0 when there is none.
fn value(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    s.samples
        .iter()
        .filter(|x| x.metric == name)
        .filter(|x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match &x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
            prometheus_parse::Value::Summary(_) => 0.0,
        })
        .sum()
}

/// Write `text` as the configuration file in `dir` and return its path.
fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("proxy.toml");
    std::fs::write(&path, text).expect("write the configuration");
    path
}

const DENY_GB: &str =
    "\n[[policy.rule]]\nid = \"no-gb\"\naction = \"deny\"\ndestinations = [\"127.0.0.2/32\"]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_scraped_parsed_and_move_with_requests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = config_text("");
    let p = spawn_proxy_text(&text).await;
    let (admin, _) = p.admin(world_loader(write_config(dir.path(), &text))).await;
    let _origin = p.http_origin(GB_IP, 80).await;
    let echo = p.tcp_origin(GB_IP, 443).await;

    let before = scrape(admin).await;
    assert_eq!(
        value(
            &before,
            names::ACTIVE_CONNECTIONS,
            &[("listener", "egress")]
        ),
        0.0,
        "a configured listener's gauges are there before any traffic"
    );
    assert_eq!(p.get("http://uk.test/").await.status, StatusCode::OK);
    assert_eq!(p.get("http://cn.test/").await.status, StatusCode::FORBIDDEN);
    let (r, mut tunnel) = p.connect("uk.test:443").await;
    assert_eq!(r.status, StatusCode::OK);
    tunnel.write_all(b"ping").await.expect("write");
    let mut buf = [0u8; 4];
    tunnel.read_exact(&mut buf).await.expect("echo");
    let during = scrape(admin).await;
    assert_eq!(
        value(&during, names::OPEN_TUNNELS, &[("listener", "egress")]),
        1.0
    );
    drop(tunnel);
    // A record is counted as it is emitted: once the tunnel's is in the log, it is counted.
    let _ = p
        .audit
        .wait_until(
            |r| {
                r.iter()
                    .any(|x| x.intent == residency_proxy::audit::Intent::Connect)
            },
            "the tunnel's record",
        )
        .await;
    let _ = echo;

    let s = scrape(admin).await;
    let allow_gb = [
        ("listener", "egress"),
        ("decision", "allow"),
        ("class", "home"),
        ("jurisdiction", "GB"),
    ];
    // The GET and the tunnel.
    assert_eq!(value(&s, names::DECISIONS, &allow_gb), 2.0);
    assert_eq!(
        value(
            &s,
            names::DECISIONS,
            &[
                ("decision", "deny"),
                ("reason", "not-adequate"),
                ("jurisdiction", "other"),
                ("class", "not-adequate"),
            ],
        ),
        1.0,
        "CN is no entry of the profile: its label is bounded to `other`"
    );
    assert!(
        !s.samples
            .iter()
            .any(|x| x.labels.values().any(|v| v.contains(".test"))),
        "no host name is ever a label"
    );
    assert_eq!(
        value(
            &s,
            names::REQUESTS,
            &[("intent", "forward"), ("status_class", "4xx")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &s,
            names::REQUESTS,
            &[("intent", "connect"), ("status_class", "2xx")]
        ),
        1.0
    );
    assert_eq!(value(&s, names::TUNNEL_BYTES, &[("direction", "up")]), 4.0);
    assert!(value(&s, names::BODY_BYTES, &[("direction", "down")]) > 0.0);
    assert_eq!(
        value(&s, "residency_proxy_upstream_connect_seconds_count", &[]),
        2.0,
        "one connect each for the GET and the tunnel"
    );
    assert!(value(&s, "residency_proxy_dns_resolve_seconds_count", &[]) >= 3.0);
    assert_eq!(
        value(
            &s,
            "residency_proxy_request_duration_seconds_count",
            &[("intent", "connect")]
        ),
        1.0
    );
    assert_eq!(
        value(&s, names::OPEN_TUNNELS, &[("listener", "egress")]),
        0.0
    );
    assert!(value(&s, names::AUDIT_WRITTEN, &[]) >= 3.0);
    assert_eq!(value(&s, names::AUDIT_OVERFLOWED, &[]), 0.0);
    assert_eq!(
        value(&s, names::BUILD_INFO, &[("profile", "uk-adequate")]),
        1.0
    );
    assert!(value(&s, names::DATA_SOURCE_AGE, &[("source", "profile")]) > 0.0);

    // One more denied request moves its counter by exactly one.
    assert_eq!(p.get("http://cn.test/").await.status, StatusCode::FORBIDDEN);
    let _ = p.audit_barrier().await;
    let after = scrape(admin).await;
    let deny_cn = [("decision", "deny"), ("jurisdiction", "other")];
    assert_eq!(
        value(&after, names::DECISIONS, &deny_cn) - value(&s, names::DECISIONS, &deny_cn),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_errors_of_the_admin_listener() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = config_text("");
    let mut p = spawn_proxy_text(&text).await;
    let (admin, _) = p.admin(world_loader(write_config(dir.path(), &text))).await;
    assert_eq!(admin_request(admin, "GET", "/healthz").await.0, 200);
    assert_eq!(admin_request(admin, "GET", "/readyz").await.0, 200);
    assert_eq!(admin_request(admin, "GET", "/nope").await.0, 404);
    assert_eq!(admin_request(admin, "POST", "/metrics").await.0, 405);
    assert_eq!(admin_request(admin, "GET", "/-/reload").await.0, 405);

    // An open tunnel holds the drain open: readiness goes 503 while the proxy drains, and
    // health stays 200.
    let _echo = p.tcp_origin(GB_IP, 443).await;
    let (r, tunnel) = p.connect("uk.test:443").await;
    assert_eq!(r.status, StatusCode::OK);
    let handle = p.take_handle();
    let drain = tokio::spawn(handle.shutdown(WAIT));
    let mut waited = 0;
    loop {
        let (status, body) = admin_request(admin, "GET", "/readyz").await;
        if status == 503 {
            assert_eq!(body, "draining\n");
            break;
        }
        waited += 1;
        assert!(waited < 1000, "readiness never went 503 during the drain");
        tokio::task::yield_now().await;
    }
    assert_eq!(admin_request(admin, "GET", "/healthz").await.0, 200);
    drop(tunnel);
    assert!(drain.await.expect("the drain task"), "drained in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_over_http_decides_like_the_live_path_and_never_connects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = config_text("");
    let p = spawn_proxy_text(&text).await;
    let (admin, _) = p.admin(world_loader(write_config(dir.path(), &text))).await;
    let (status, body) = admin_request(admin, "GET", "/v1/explain?host=mixed.test&port=443").await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    // Every address is decided; only the adequate one would be dialled.
    assert_eq!(v["decision"], "allow", "{v}");
    assert_eq!(v["destination"], "mixed.test:443");
    let addrs = v["addresses"].as_array().expect("addresses");
    assert_eq!(addrs.len(), 2, "{v}");
    assert_eq!(addrs[0]["jurisdiction"], "CN");
    assert_eq!(addrs[0]["verdict"], "deny");
    assert_eq!(addrs[1]["jurisdiction"], "GB");
    assert_eq!(v["would_dial"], serde_json::json!(["127.0.0.2:443"]));
    let (status, body) = admin_request(admin, "GET", "/v1/explain?host=cn.test&port=80").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["decision"], "deny", "{v}");
    assert_eq!(v["reason"], "not-adequate", "{v}");
    assert_eq!(v["would_dial"], serde_json::json!([]));
    let (status, _) = admin_request(admin, "GET", "/v1/explain?host=uk.test&client=nope").await;
    assert_eq!(status, 400);
    let (status, body) =
        admin_request(admin, "GET", "/v1/explain?host=uk.test&listener=missing").await;
    assert_eq!(status, 400);
    assert!(body.contains("no listener named 'missing'"), "{body}");
    assert!(
        p.dials().is_empty(),
        "explain never connects: {:?}",
        p.dials()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_changes_the_next_decision_and_a_broken_file_keeps_the_old_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = config_text("");
    let path = write_config(dir.path(), &text);
    let p = spawn_proxy_text(&text).await;
    let (admin, _) = p.admin(world_loader(path.clone())).await;
    let _origin = p.http_origin(GB_IP, 80).await;
    assert_eq!(p.get("http://uk.test/").await.status, StatusCode::OK);

    // A keep-alive connection opened before the reload: its next request decides on the new
    // configuration.
    let mut kept = p.client().await;
    assert_eq!(kept.get("http://uk.test/").await.status, StatusCode::OK);
    std::fs::write(&path, config_text(DENY_GB)).expect("write");
    let (status, body) = admin_request(admin, "POST", "/-/reload").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"result\":\"success\""), "{body}");
    let r = kept.get("http://uk.test/").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.decision().contains("rule=no-gb"), "{}", r.decision());

    // A broken file: refused with file, line and reason; the running configuration serves on.
    std::fs::write(&path, config_text("allowed_clients = [\"nonsense\"]\n")).expect("write");
    let (status, body) = admin_request(admin, "POST", "/-/reload").await;
    assert_eq!(status, 500, "{body}");
    assert!(
        body.contains("proxy.toml:"),
        "names the file and line: {body}"
    );
    assert!(body.contains("allowed_clients"), "{body}");
    let r = p.get("http://uk.test/").await;
    assert!(r.decision().contains("rule=no-gb"), "{}", r.decision());
    assert_eq!(admin_request(admin, "GET", "/readyz").await.0, 200);

    let s = scrape(admin).await;
    assert_eq!(value(&s, names::RELOADS, &[("result", "success")]), 1.0);
    assert_eq!(value(&s, names::RELOADS, &[("result", "error")]), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_are_added_removed_and_a_failed_bind_changes_nothing() {
    let text = config_text("");
    let p = spawn_proxy_text(&text).await;
    let h = p.handle();
    let second =
        "\n[[listener]]\nname = \"second\"\nbind = \"127.0.0.1:0\"\nallowed_ports = [80]\n";
    let with_second = residency_proxy::config::Config::parse(
        &(text.clone() + second),
        "test.toml",
        Path::new("."),
    )
    .expect("config");
    let applied = h
        .apply(residency_proxy::server::Snapshot::new(
            with_second,
            world_table(),
        ))
        .expect("the reload applies");
    assert_eq!(applied.added, vec!["second".to_string()]);
    let second_addr = h.addr("second").expect("the new listener is bound");
    let _origin = p.http_origin(GB_IP, 80).await;
    let mut c = KeepAliveClient::connect(second_addr).await;
    assert_eq!(c.get("http://uk.test/").await.status, StatusCode::OK);
    assert_eq!(
        h.addr("egress"),
        Some(p.addr),
        "a kept listener keeps its socket"
    );

    // A bind that fails (the address is taken) refuses the whole reload.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let clash = format!(
        "\n[[listener]]\nname = \"third\"\nbind = \"{}\"\nallowed_ports = [80]\n",
        taken.local_addr().expect("addr")
    );
    let with_clash = residency_proxy::config::Config::parse(
        &(text.clone() + &clash),
        "test.toml",
        Path::new("."),
    )
    .expect("config");
    let err = h
        .apply(residency_proxy::server::Snapshot::new(
            with_clash,
            world_table(),
        ))
        .expect_err("the reload is refused");
    assert!(err.contains("listener third"), "{err}");
    assert!(h.addr("second").is_some(), "nothing changed");
    assert!(h.addr("third").is_none());

    // Removing `second` stops it accepting; its open connection's next request is refused as
    // a listener no longer configured.
    let base =
        residency_proxy::config::Config::parse(&text, "test.toml", Path::new(".")).expect("config");
    let applied = h
        .apply(residency_proxy::server::Snapshot::new(base, world_table()))
        .expect("the reload applies");
    assert_eq!(applied.removed, vec!["second".to_string()]);
    assert!(h.addr("second").is_none());
    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(second_addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(refused, "the removed listener's socket is closed");
    let r = c.get("http://uk.test/").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_the_reloaded_policy_denies_is_closed_and_its_record_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = config_text("");
    let path = write_config(dir.path(), &text);
    let p = spawn_proxy_text(&text).await;
    let (admin, _) = p.admin(world_loader(path.clone())).await;
    let _gb = p.tcp_origin(GB_IP, 443).await;
    let _fr = p.tcp_origin(FR_IP, 443).await;
    let (r, mut denied) = p.connect("uk.test:443").await;
    assert_eq!(r.status, StatusCode::OK);
    let (r, mut kept) = p.connect("fr.test:443").await;
    assert_eq!(r.status, StatusCode::OK);

    std::fs::write(&path, config_text(DENY_GB)).expect("write");
    let (status, body) = admin_request(admin, "POST", "/-/reload").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"tunnels_closed\":1"), "{body}");

    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(WAIT, denied.read(&mut buf))
        .await
        .expect("the denied tunnel is closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0, "the denied tunnel reads EOF");
    kept.write_all(b"ping").await.expect("write");
    let mut four = [0u8; 4];
    kept.read_exact(&mut four)
        .await
        .expect("the FR tunnel still echoes");
    assert_eq!(&four, b"ping");

    let records = p
        .audit
        .wait_until(
            |r| r.iter().any(|x| x.closed_by.is_some()),
            "the closed tunnel's record",
        )
        .await;
    let closed: Vec<_> = records.iter().filter(|r| r.closed_by.is_some()).collect();
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].closed_by, Some(ClosedBy::Reload));
    assert_eq!(closed[0].dest_host.as_deref(), Some("uk.test"));
    assert_eq!(closed[0].rule.as_deref(), Some("no-gb"));
    let s = scrape(admin).await;
    assert_eq!(value(&s, names::TUNNELS_CLOSED_BY_RELOAD, &[]), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_reloads_under_load_lose_no_request_and_no_record() {
    const WORKERS: usize = 3;
    const ROUNDS: usize = 30;
    let dir = tempfile::tempdir().expect("tempdir");
    let reverse = "\n[[listener]]\nname = \"web\"\nkind = \"reverse\"\nbind = \"127.0.0.1:0\"\ndefault_pool = \"app\"\n\n[[pool]]\nname = \"app\"\nmembers = [\"uk.test:8080\"]\n";
    // Two configurations that differ in a rule no request of the load meets.
    let a = config_text("") + reverse;
    let b = config_text(
        "\n[[policy.rule]]\nid = \"unused\"\naction = \"deny\"\ndestinations = [\"127.0.0.9/32\"]\n",
    ) + reverse;
    let path = write_config(dir.path(), &a);
    let p = Arc::new(spawn_proxy_text(&a).await);
    let (_admin, reload) = p.admin(world_loader(path.clone())).await;
    let _origin = p.http_origin(GB_IP, 80).await;
    let _app = p.http_origin(GB_IP, 8080).await;
    let _echo = p.tcp_origin(GB_IP, 443).await;
    let web = p.listener_addr("web");

    let mut tasks = Vec::new();
    for w in 0..WORKERS {
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            let mut sent = 0usize;
            let mut fwd = p.client().await;
            let mut rev = KeepAliveClient::connect(web).await;
            for i in 0..ROUNDS {
                let r = fwd.get(&format!("http://uk.test/w{w}/{i}")).await;
                assert_eq!(r.status, StatusCode::OK, "forward {w}/{i}");
                let r = rev.get(&format!("http://app.test/w{w}/{i}")).await;
                assert_eq!(r.status, StatusCode::OK, "reverse {w}/{i}: {}", r.text());
                let (r, mut t) = p.connect("uk.test:443").await;
                assert_eq!(r.status, StatusCode::OK, "connect {w}/{i}");
                t.write_all(b"x").await.expect("write");
                let mut one = [0u8; 1];
                t.read_exact(&mut one).await.expect("echo");
                sent += 3;
                tokio::task::yield_now().await;
            }
            sent
        }));
    }
    let mut results: HashMap<&str, usize> = HashMap::new();
    for i in 0..20 {
        std::fs::write(&path, if i % 2 == 0 { &b } else { &a }).expect("write");
        let applied = reload.run("test").await.expect("every reload succeeds");
        assert!(applied.added.is_empty() && applied.removed.is_empty());
        *results.entry("ok").or_default() += 1;
        tokio::task::yield_now().await;
    }
    let mut sent = 0;
    for t in tasks {
        sent += t.await.expect("a load task");
    }
    assert_eq!(results.get("ok"), Some(&20));
    assert_eq!(sent, WORKERS * ROUNDS * 3);
    // Tunnel records are emitted as their tunnels end, after the clients have moved on.
    let records = p.audit.wait_records(sent).await;
    assert_eq!(records.len(), sent, "one record per request and tunnel");
    assert!(
        records
            .iter()
            .all(|r| r.error.is_none() || r.intent == residency_proxy::audit::Intent::Connect),
        "no request failed"
    );
}
