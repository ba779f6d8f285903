//! Writing: what `apply` sends upstream for trusted and untrusted peers.

use super::*;

const X: ForwardedHeader = ForwardedHeader::XForwardedFor;
const F: ForwardedHeader = ForwardedHeader::Forwarded;

/// Every forwarding header a client or proxy could send.
fn all_forwarding_headers() -> HeaderMap {
    headers(&[
        (XFF, "1.1.1.1"),
        (XFF, "2.2.2.2"),
        ("x-forwarded-proto", "http"),
        ("x-forwarded-host", "evil.example"),
        (FWD, "for=1.1.1.1;proto=http"),
    ])
}

#[test]
fn apply_strips_and_replaces_an_untrusted_peers_headers() {
    let mut map = all_forwarding_headers();
    let peer = ip("198.51.100.23");
    apply(
        &mut map,
        peer,
        "https",
        Some("api.example.eu"),
        &trusted(),
        X,
    );
    assert_eq!(all(&map, XFF), ["198.51.100.23"]);
    assert_eq!(all(&map, "x-forwarded-proto"), ["https"]);
    assert_eq!(all(&map, "x-forwarded-host"), ["api.example.eu"]);
    assert!(all(&map, FWD).is_empty(), "Forwarded is not written");

    let mut map = all_forwarding_headers();
    apply(
        &mut map,
        peer,
        "https",
        Some("api.example.eu"),
        &trusted(),
        F,
    );
    assert_eq!(
        all(&map, FWD),
        ["for=198.51.100.23;proto=https;host=api.example.eu"]
    );
    for name in [XFF, "x-forwarded-proto", "x-forwarded-host"] {
        assert!(all(&map, name).is_empty(), "{name} is not written");
    }
}

#[test]
fn apply_removes_a_trusted_peers_header_that_is_not_believed() {
    let mut map = all_forwarding_headers();
    apply(
        &mut map,
        ip(LB),
        "https",
        Some("api.example.eu"),
        &trusted(),
        X,
    );
    assert_eq!(all(&map, XFF), ["1.1.1.1, 2.2.2.2, 10.0.0.5"]);
    assert_eq!(all(&map, "x-forwarded-proto"), ["http"]);
    assert_eq!(all(&map, "x-forwarded-host"), ["evil.example"]);
    assert!(all(&map, FWD).is_empty(), "{map:?}");

    let mut map = all_forwarding_headers();
    apply(
        &mut map,
        ip(LB),
        "https",
        Some("api.example.eu"),
        &trusted(),
        F,
    );
    assert_eq!(
        all(&map, FWD),
        ["for=1.1.1.1;proto=http, for=10.0.0.5;proto=https;host=api.example.eu"]
    );
    for name in [XFF, "x-forwarded-proto", "x-forwarded-host"] {
        assert!(all(&map, name).is_empty(), "{name}: {map:?}");
    }
}

#[test]
fn apply_quotes_and_brackets_an_ipv6_peer_and_quotes_a_host_with_port() {
    let peer = ip("2001:db8::23");
    let mut map = headers(&[(XFF, "1.1.1.1")]);
    apply(
        &mut map,
        peer,
        "https",
        Some("api.example.eu:8443"),
        &trusted(),
        X,
    );
    assert_eq!(all(&map, XFF), ["2001:db8::23"]);
    assert_eq!(all(&map, "x-forwarded-host"), ["api.example.eu:8443"]);

    let mut map = headers(&[(FWD, "for=1.1.1.1")]);
    apply(
        &mut map,
        peer,
        "https",
        Some("api.example.eu:8443"),
        &trusted(),
        F,
    );
    assert_eq!(
        all(&map, FWD),
        ["for=\"[2001:db8::23]\";proto=https;host=\"api.example.eu:8443\""]
    );
}

#[test]
fn apply_without_host_or_with_an_unsendable_host() {
    let peer = ip("198.51.100.23");
    for host in [None, Some("bad\nhost")] {
        let mut map = HeaderMap::new();
        apply(&mut map, peer, "http", host, &trusted(), F);
        assert_eq!(all(&map, FWD), ["for=198.51.100.23;proto=http"], "{host:?}");
        let mut map = HeaderMap::new();
        apply(&mut map, peer, "http", host, &trusted(), X);
        assert!(map.get(&X_FORWARDED_HOST).is_none(), "{host:?}");
        assert_eq!(all(&map, "x-forwarded-proto"), ["http"]);
    }

    let mut map = HeaderMap::new();
    apply(&mut map, peer, "http", Some("we\"ird\\"), &trusted(), F);
    assert_eq!(
        all(&map, FWD),
        ["for=198.51.100.23;proto=http;host=\"we\\\"ird\\\\\""]
    );
}

#[test]
fn apply_appends_to_a_trusted_peers_chain() {
    let mut map = headers(&[
        (XFF, "203.0.113.7"),
        (XFF, "10.1.1.1"),
        ("x-forwarded-proto", "http"),
        ("x-forwarded-host", "front.example.eu"),
    ]);
    apply(
        &mut map,
        ip(LB),
        "https",
        Some("api.example.eu"),
        &trusted(),
        X,
    );
    assert_eq!(all(&map, XFF), ["203.0.113.7, 10.1.1.1, 10.0.0.5"]);
    // Kept: the first proxy saw the client's scheme and host.
    assert_eq!(all(&map, "x-forwarded-proto"), ["http"]);
    assert_eq!(all(&map, "x-forwarded-host"), ["front.example.eu"]);

    let mut map = headers(&[(FWD, "for=203.0.113.7;proto=http"), (FWD, "for=10.1.1.1")]);
    apply(
        &mut map,
        ip(LB),
        "https",
        Some("api.example.eu"),
        &trusted(),
        F,
    );
    assert_eq!(
        all(&map, FWD),
        ["for=203.0.113.7;proto=http, for=10.1.1.1, for=10.0.0.5;proto=https;host=api.example.eu"]
    );
}

#[test]
fn apply_sets_proto_and_host_for_a_trusted_peer_that_sent_none() {
    let peer = ip("2001:db8:ffff::2");
    let mut map = HeaderMap::new();
    apply(
        &mut map,
        peer,
        "https",
        Some("api.example.eu"),
        &trusted(),
        X,
    );
    assert_eq!(all(&map, XFF), ["2001:db8:ffff::2"]);
    assert_eq!(all(&map, "x-forwarded-proto"), ["https"]);
    assert_eq!(all(&map, "x-forwarded-host"), ["api.example.eu"]);

    let mut map = HeaderMap::new();
    apply(
        &mut map,
        peer,
        "https",
        Some("api.example.eu"),
        &trusted(),
        F,
    );
    assert_eq!(
        all(&map, FWD),
        ["for=\"[2001:db8:ffff::2]\";proto=https;host=api.example.eu"]
    );
}

#[test]
fn apply_does_not_let_an_open_quote_swallow_our_element() {
    let mut map = headers(&[
        (FWD, "for=192.0.2.66, for=\"[2001:db8::1]"),
        (FWD, "for=203.0.113.7;ext=\"a\\\"b\""),
    ]);
    apply(&mut map, ip(LB), "https", None, &trusted(), F);
    assert_eq!(
        all(&map, FWD),
        ["for=unknown, for=203.0.113.7;ext=\"a\\\"b\", for=10.0.0.5;proto=https"]
    );
    let mut hops = Vec::new();
    parse_forwarded(all(&map, FWD)[0].as_bytes(), &mut hops);
    assert_eq!(
        hops,
        [
            Node::Unknown,
            Node::Addr(ip("203.0.113.7")),
            Node::Addr(ip(LB))
        ]
    );
}

/// An upstream that trusts us (and our trusted proxies) and reads the header we believe
/// must reach the client we reached, whichever headers came in.
#[test]
fn apply_output_yields_the_same_client_downstream() {
    let ours = trusted();
    let mut theirs = ours.clone();
    theirs.extend(nets(&["192.168.50.1/32"]));
    let us = ip("192.168.50.1");
    let mut cases = client_cases();
    cases.push((
        "both headers",
        LB,
        vec![(XFF, "192.0.2.66"), (FWD, "for=203.0.113.7")],
        "-",
    ));
    for (reason, peer, pairs, _) in cases {
        for h in BOTH {
            let want = client_addr(ip(peer), &headers(&pairs), &ours, h);
            let mut map = headers(&pairs);
            apply(
                &mut map,
                ip(peer),
                "https",
                Some("api.example.eu"),
                &ours,
                h,
            );
            assert_eq!(client_addr(us, &map, &theirs, h), want, "{reason} ({h:?})");
            assert_eq!(
                client_addr(us, &map, &theirs, other(h)),
                us,
                "{reason}: nothing of {:?} left ({h:?})",
                other(h)
            );
        }
    }
}

#[test]
fn an_address_written_in_place_is_the_text_of_the_address() {
    for text in [
        "0.0.0.0",
        "9.8.7.6",
        "255.255.255.255",
        "::",
        "::ffff:192.0.2.1",
        "2001:db8::23",
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    ] {
        let mut buf = [0u8; 39];
        let peer = ip(text);
        assert_eq!(ip_bytes(peer, &mut buf), Some(text.as_bytes()), "{text}");
        assert_eq!(ip_text(peer), text);
    }
}
