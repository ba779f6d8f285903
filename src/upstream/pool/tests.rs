use super::*;
use crate::upstream::idle::tests::{addr, conn};

fn pool(tls: bool, server_name: Option<&str>) -> Arc<PoolState> {
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    PoolState::new(PoolConfig {
        name: "p".into(),
        members: vec![
            crate::config::reverse::Member {
                host: Host::Name("a.test".into()),
                port: 443,
            },
            crate::config::reverse::Member {
                host: Host::Name("b.test".into()),
                port: 443,
            },
        ],
        balance: Balance::RoundRobin,
        eject_after: 5,
        eject_for: Duration::from_secs(30),
        tls: tls.then(|| crate::config::reverse::UpstreamTls {
            client: Arc::new(client),
            server_name: server_name.map(str::to_string),
        }),
        health_check: None,
    })
}

#[tokio::test(start_paused = true)]
async fn two_tls_members_on_one_address_never_share_a_connection() {
    let p = pool(true, None);
    let (a, b) = (&p.cfg.members[0].host, &p.cfg.members[1].host);
    assert_eq!(p.server_name(a).as_deref(), Some("a.test"));
    assert_eq!(p.server_name(b).as_deref(), Some("b.test"));
    // a.test's connection, as `connect` opens it, back in the idle set after its response.
    let name = p.server_name(a);
    let (c, _far) = conn(name.as_deref()).await;
    p.idle().checkin(addr(443), c);
    // b.test resolves to the same address: it must dial its own (and verify b.test).
    assert!(
        p.idle()
            .take(addr(443), p.server_name(b).as_deref())
            .is_none()
    );
    assert!(
        p.idle()
            .take(addr(443), p.server_name(a).as_deref())
            .is_some()
    );
}

#[tokio::test(start_paused = true)]
async fn members_sharing_a_configured_server_name_or_plain_http_may_share() {
    for p in [pool(true, Some("upstream.test")), pool(false, None)] {
        let (a, b) = (&p.cfg.members[0].host, &p.cfg.members[1].host);
        assert_eq!(p.server_name(a), p.server_name(b));
        let (c, _far) = conn(p.server_name(a).as_deref()).await;
        p.idle().checkin(addr(443), c);
        assert!(
            p.idle()
                .take(addr(443), p.server_name(b).as_deref())
                .is_some()
        );
    }
}
