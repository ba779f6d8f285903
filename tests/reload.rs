//! A snapshot swap under load: requests that start after it decide on the new snapshot (its
//! policy and its listener settings, also on connections opened before it), requests and
//! tunnels already running finish on the one they loaded.

mod support;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::StatusCode;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_requests_decide_on_the_new_snapshot_and_open_ones_finish_on_theirs() {
    let p = spawn_proxy("").await;
    let origin = p.http_origin(GB_IP, 80).await;
    let echo = p.tcp_origin(GB_IP, 443).await;

    // Under the first snapshot: a response still streaming, a tunnel, and an idle keep-alive
    // client connection.
    let mut streaming = p.client().await;
    let resp = streaming
        .send_streaming(request("GET", "http://uk.test/gated", Vec::new()))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let first = tokio::time::timeout(WAIT, body.frame())
        .await
        .expect("the first chunk")
        .expect("a frame")
        .expect("data");
    assert_eq!(first.into_data().ok(), Some(Bytes::from_static(b"first;")));
    let (r, mut tunnel) = p.connect("uk.test:443").await;
    assert_eq!(r.status, StatusCode::OK);
    let mut idle = p.client().await;
    assert_eq!(
        idle.get("http://uk.test/before").await.status,
        StatusCode::OK
    );

    // The new snapshot: GB denied by a rule, and the listener takes port 80 only.
    p.swap_config(&config_text(
        "allowed_ports = [80]\n\n[[policy.rule]]\nid = \"no-gb\"\naction = \"deny\"\ndestinations = [\"127.0.0.2/32\"]\n",
    ));

    // New requests, on a new connection and on the connection opened before the swap.
    let r = p.get("http://uk.test/after").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert!(r.decision().contains("rule=no-gb"), "{}", r.decision());
    let r = idle.get("http://uk.test/after-idle").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    let r = idle.get("http://fr.test:443/").await;
    assert!(
        r.decision().contains("reason=port-not-allowed"),
        "the listener's settings come from the new snapshot too: {}",
        r.decision()
    );
    let (r, _) = p.connect("uk.test:443").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // What started before the swap finishes on the old snapshot.
    tunnel.write_all(b"ping").await.expect("write");
    let mut buf = [0u8; 4];
    tokio::time::timeout(WAIT, tunnel.read_exact(&mut buf))
        .await
        .expect("the old tunnel still echoes")
        .expect("read");
    assert_eq!(&buf, b"ping");
    drop(tunnel);
    origin.release();
    let rest = tokio::time::timeout(WAIT, body.collect())
        .await
        .expect("the rest arrives")
        .expect("read")
        .to_bytes();
    assert_eq!(rest, Bytes::from_static(b"second"));

    let recs = p
        .audit
        .wait_until(
            |r| {
                r.iter()
                    .filter(|r| r.dest_host.as_deref() == Some("uk.test"))
                    .count()
                    >= 6
            },
            "six uk.test records",
        )
        .await;
    let uk: Vec<_> = recs
        .iter()
        .filter(|r| r.dest_host.as_deref() == Some("uk.test"))
        .collect();
    let count = |decision: &str, reason: &str| {
        uk.iter()
            .filter(|r| r.decision == decision && r.reason == reason)
            .count()
    };
    assert_eq!(
        (
            count("allow", "home"),
            count("deny", "rule-deny"),
            count("deny", "port-not-allowed")
        ),
        (3, 2, 1),
        "streamed, tunnel, before: allowed on the old snapshot; after (x2): the new rule; \
         the new CONNECT: the new listener's ports: {uk:#?}"
    );
    assert_eq!(echo.connections(), 1, "the denied CONNECT dialled nothing");
    p.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_on_a_listener_the_new_snapshot_no_longer_has_is_refused_and_recorded() {
    let other = "\n[[listener]]\nname = \"other\"\nbind = \"127.0.0.1:0\"\n";
    let p = spawn_proxy_text(&format!("{}{other}", config_text(""))).await;
    let _origin = p.http_origin(GB_IP, 80).await;
    let mut c = KeepAliveClient::connect(p.listener_addr("other")).await;
    assert_eq!(c.get("http://uk.test/").await.status, StatusCode::OK);

    p.swap_config(&config_text(""));
    let r = c.get("http://uk.test/").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    assert_eq!(r.decision(), "error; reason=listener-not-configured");
    let recs = p.audit.wait_records(2).await;
    let last = recs.last().expect("a record");
    assert_eq!(
        (
            last.listener.as_str(),
            last.reason.to_string().as_str(),
            last.status
        ),
        ("other", "listener-not-configured", Some(503))
    );
    assert_eq!(p.dials().len(), 1, "only the first request dialled");
}
