use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|n| n.parse().unwrap()).collect()
}

/// Our trusted proxies: a private IPv4 range and an IPv6 range.
fn trusted() -> Vec<IpNet> {
    nets(&["10.0.0.0/8", "2001:db8:ffff::/48"])
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

fn all(map: &HeaderMap, name: &str) -> Vec<String> {
    map.get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

const LB: &str = "10.0.0.5";
const XFF: &str = "x-forwarded-for";
const FWD: &str = "forwarded";

/// (reason, peer, headers, expected client)
type Case = (
    &'static str,
    &'static str,
    Vec<(&'static str, &'static str)>,
    &'static str,
);

fn client_cases() -> Vec<Case> {
    vec![
        (
            "untrusted peer: spoofed X-Forwarded-For ignored",
            "198.51.100.23",
            vec![(XFF, "203.0.113.7")],
            "198.51.100.23",
        ),
        (
            "untrusted peer: spoofed Forwarded ignored",
            "198.51.100.23",
            vec![(FWD, "for=203.0.113.7")],
            "198.51.100.23",
        ),
        ("trusted peer without headers is the client", LB, vec![], LB),
        (
            "trusted peer's X-Forwarded-For believed",
            LB,
            vec![(XFF, "203.0.113.7")],
            "203.0.113.7",
        ),
        (
            "right-most untrusted wins over a client-supplied left part",
            LB,
            vec![(XFF, "192.0.2.66, 203.0.113.7")],
            "203.0.113.7",
        ),
        (
            "several trusted hops skipped",
            LB,
            vec![(XFF, "192.0.2.66, 203.0.113.7, 10.1.1.1, 10.2.2.2")],
            "203.0.113.7",
        ),
        (
            "several X-Forwarded-For fields form one list, in order",
            LB,
            vec![(XFF, "192.0.2.66, 203.0.113.7"), (XFF, "10.1.1.1")],
            "203.0.113.7",
        ),
        (
            "every hop trusted: the left-most hop",
            LB,
            vec![(XFF, "10.1.1.1, 10.2.2.2")],
            "10.1.1.1",
        ),
        (
            "garbage right-most entry stops the walk at the peer",
            LB,
            vec![(XFF, "203.0.113.7, not-an-ip")],
            LB,
        ),
        (
            "garbage behind trusted hops: the last trusted hop seen",
            LB,
            vec![(XFF, "203.0.113.7, 1.2.3.4.5, 10.2.2.2")],
            "10.2.2.2",
        ),
        (
            "garbage left of the client is never reached",
            LB,
            vec![(XFF, "<script>, 203.0.113.7")],
            "203.0.113.7",
        ),
        (
            "X-Forwarded-For 'unknown' stops the walk",
            LB,
            vec![(XFF, "203.0.113.7, unknown")],
            LB,
        ),
        (
            "X-Forwarded-For IPv4 with port",
            LB,
            vec![(XFF, "203.0.113.7:4711")],
            "203.0.113.7",
        ),
        (
            "X-Forwarded-For bracketed IPv6 with port",
            LB,
            vec![(XFF, "[2001:db8::7]:443")],
            "2001:db8::7",
        ),
        (
            "X-Forwarded-For bare and bracketed IPv6",
            LB,
            vec![(XFF, "2001:db8::7, [2001:db8:ffff::1]")],
            "2001:db8::7",
        ),
        (
            "empty list elements ignored",
            LB,
            vec![(XFF, " , 203.0.113.7,, ")],
            "203.0.113.7",
        ),
        (
            "an empty X-Forwarded-For leaves the peer",
            LB,
            vec![(XFF, "")],
            LB,
        ),
        (
            "X-Forwarded-For with a zone index is not an address",
            LB,
            vec![(XFF, "fe80::1%eth0")],
            LB,
        ),
        (
            "Forwarded for= believed from a trusted peer",
            LB,
            vec![(FWD, "for=203.0.113.7")],
            "203.0.113.7",
        ),
        (
            "Forwarded quoted IPv6 with port",
            LB,
            vec![(FWD, "for=\"[2001:db8:cafe::17]:4711\"")],
            "2001:db8:cafe::17",
        ),
        (
            "Forwarded quoted IPv4 with port, parameter name case-insensitive",
            LB,
            vec![(FWD, "For=\"203.0.113.7:47011\";proto=https")],
            "203.0.113.7",
        ),
        (
            "Forwarded for=unknown stops the walk",
            LB,
            vec![(FWD, "for=203.0.113.7, for=unknown")],
            LB,
        ),
        (
            "Forwarded for=unknown behind a trusted hop: that hop",
            LB,
            vec![(FWD, "for=unknown, for=10.2.2.2")],
            "10.2.2.2",
        ),
        (
            "Forwarded obfuscated identifier stops the walk",
            LB,
            vec![(FWD, "for=203.0.113.7, for=_hidden")],
            LB,
        ),
        (
            "Forwarded obfuscated port keeps the address",
            LB,
            vec![(FWD, "for=\"203.0.113.7:_port1\"")],
            "203.0.113.7",
        ),
        (
            "several Forwarded fields and comma-separated elements",
            LB,
            vec![
                (FWD, "for=192.0.2.66, for=203.0.113.7;proto=https"),
                (FWD, "for=10.1.1.1;by=10.0.0.1"),
            ],
            "203.0.113.7",
        ),
        (
            "whitespace around ; and , and empty elements tolerated",
            LB,
            vec![(FWD, " , for=203.0.113.7 ; proto=https ,, ")],
            "203.0.113.7",
        ),
        (
            "a comma inside a quoted string does not split elements",
            LB,
            vec![(FWD, "for=203.0.113.7;ext=\"a, for=10.9.9.9\"")],
            "203.0.113.7",
        ),
        (
            "escaped quote inside a quoted string",
            LB,
            vec![(FWD, "for=203.0.113.7;ext=\"a\\\"b, c\"")],
            "203.0.113.7",
        ),
        (
            "Forwarded IPv6 without brackets is malformed",
            LB,
            vec![(FWD, "for=\"2001:db8::7\"")],
            LB,
        ),
        (
            "Forwarded unquoted bracketed IPv6 is not a token: malformed",
            LB,
            vec![(FWD, "for=[2001:db8::7]")],
            LB,
        ),
        (
            "Forwarded element without for= stops the walk",
            LB,
            vec![(FWD, "for=203.0.113.7, proto=https;host=example.eu")],
            LB,
        ),
        (
            "Forwarded duplicate for= in one element is malformed",
            LB,
            vec![(FWD, "for=203.0.113.7;for=192.0.2.66")],
            LB,
        ),
        (
            "Forwarded unterminated quote swallows the rest: malformed",
            LB,
            vec![(FWD, "for=192.0.2.66, for=\"[2001:db8::1], for=10.2.2.2")],
            LB,
        ),
        (
            "Forwarded junk after a value is malformed",
            LB,
            vec![(FWD, "for=203.0.113.7 junk")],
            LB,
        ),
        (
            "Forwarded port too long is malformed",
            LB,
            vec![(FWD, "for=\"203.0.113.7:123456\"")],
            LB,
        ),
        (
            "trusted IPv6 peer",
            "2001:db8:ffff::2",
            vec![(FWD, "for=\"[2001:db8::7]\", for=\"[2001:db8:ffff::9]:80\"")],
            "2001:db8::7",
        ),
        (
            "IPv4-mapped peer (dual-stack socket) matches an IPv4 CIDR",
            "::ffff:10.0.0.5",
            vec![(XFF, "203.0.113.7")],
            "203.0.113.7",
        ),
        (
            "IPv4-mapped hop matches an IPv4 CIDR and is skipped",
            LB,
            vec![(XFF, "203.0.113.7, ::ffff:10.2.2.2")],
            "203.0.113.7",
        ),
    ]
}

/// Which header a case's list is in (cases use one kind each).
fn believed_by(pairs: &[(&str, &str)]) -> Option<ForwardedHeader> {
    pairs.first().map(|(name, _)| {
        if *name == FWD {
            ForwardedHeader::Forwarded
        } else {
            ForwardedHeader::XForwardedFor
        }
    })
}

/// The other header.
fn other(h: ForwardedHeader) -> ForwardedHeader {
    match h {
        ForwardedHeader::XForwardedFor => ForwardedHeader::Forwarded,
        ForwardedHeader::Forwarded => ForwardedHeader::XForwardedFor,
    }
}

const BOTH: [ForwardedHeader; 2] = [ForwardedHeader::XForwardedFor, ForwardedHeader::Forwarded];

#[test]
fn client_addr_walks_trusted_hops_of_the_believed_header_only() {
    let trusted = trusted();
    for (reason, peer, pairs, want) in client_cases() {
        let map = headers(&pairs);
        let Some(h) = believed_by(&pairs) else {
            for h in BOTH {
                assert_eq!(
                    client_addr(ip(peer), &map, &trusted, h),
                    ip(want),
                    "{reason}"
                );
            }
            continue;
        };
        assert_eq!(
            client_addr(ip(peer), &map, &trusted, h),
            ip(want),
            "{reason} ({h:?})"
        );
        assert_eq!(
            client_addr(ip(peer), &map, &trusted, other(h)),
            ip(peer),
            "{reason}: ignored when {:?} is believed",
            other(h)
        );
    }
}

#[test]
fn with_both_headers_only_the_believed_one_names_the_client() {
    let map = headers(&[(XFF, "192.0.2.66"), (FWD, "for=203.0.113.7")]);
    let got = |h| client_addr(ip(LB), &map, &trusted(), h);
    assert_eq!(got(ForwardedHeader::XForwardedFor), ip("192.0.2.66"));
    assert_eq!(got(ForwardedHeader::Forwarded), ip("203.0.113.7"));
    // A client's own Forwarded behind a proxy that only maintains X-Forwarded-For is not
    // believed, and the other way round.
    let map = headers(&[(FWD, "for=192.0.2.1"), (XFF, "203.0.113.7")]);
    assert_eq!(
        client_addr(ip(LB), &map, &trusted(), ForwardedHeader::XForwardedFor),
        ip("203.0.113.7")
    );
    let map = headers(&[(XFF, "192.0.2.1"), (FWD, "for=203.0.113.7")]);
    assert_eq!(
        client_addr(ip(LB), &map, &trusted(), ForwardedHeader::Forwarded),
        ip("203.0.113.7")
    );
}

#[test]
fn forwarded_header_spellings() {
    for h in BOTH {
        assert_eq!(ForwardedHeader::parse(h.as_str()), Some(h));
    }
    assert_eq!(ForwardedHeader::default(), ForwardedHeader::XForwardedFor);
    for bad in ["X-Forwarded-For", "xff", "x-real-ip", "", "forwarded "] {
        assert_eq!(ForwardedHeader::parse(bad), None, "{bad:?}");
    }
}

#[test]
fn client_addr_treats_non_ascii_values_as_malformed() {
    let mut map = HeaderMap::new();
    map.append(X_FORWARDED_FOR, HeaderValue::from_static("203.0.113.7"));
    map.append(
        X_FORWARDED_FOR,
        HeaderValue::from_bytes(b"\xff\xfe").unwrap(),
    );
    let xff = ForwardedHeader::XForwardedFor;
    assert_eq!(client_addr(ip(LB), &map, &trusted(), xff), ip(LB));
    let mut map = HeaderMap::new();
    map.append(
        FORWARDED,
        HeaderValue::from_bytes(b"for=\"_\xff\"").unwrap(),
    );
    map.append(FORWARDED, HeaderValue::from_static("for=10.2.2.2"));
    let fwd = ForwardedHeader::Forwarded;
    assert_eq!(client_addr(ip(LB), &map, &trusted(), fwd), ip("10.2.2.2"));
}

#[test]
fn no_trusted_proxies_means_never_believe() {
    let map = headers(&[(XFF, "203.0.113.7"), (FWD, "for=203.0.113.8")]);
    for h in BOTH {
        assert_eq!(client_addr(ip(LB), &map, &[], h), ip(LB), "{h:?}");
    }
}

#[test]
fn forwarded_parser_classifies_nodes() {
    let cases: Vec<(&str, &str, Vec<Node>)> = vec![
        (
            "RFC 7239 §4 examples",
            "for=\"_gazonk\", For=\"[2001:db8:cafe::17]:4711\", for=192.0.2.60;proto=http;by=203.0.113.43, for=192.0.2.43, for=198.51.100.17",
            vec![
                Node::Obfuscated,
                Node::Addr(ip("2001:db8:cafe::17")),
                Node::Addr(ip("192.0.2.60")),
                Node::Addr(ip("192.0.2.43")),
                Node::Addr(ip("198.51.100.17")),
            ],
        ),
        (
            "unknown in any case, with a port",
            "for=unknown, for=UNKNOWN, for=\"unknown:80\"",
            vec![Node::Unknown, Node::Unknown, Node::Unknown],
        ),
        (
            "element without for=, then an empty pair",
            "proto=https;host=example.eu, for=192.0.2.1;;proto=http",
            vec![Node::Missing, Node::Addr(ip("192.0.2.1"))],
        ),
        (
            "malformed element does not hide the next one",
            "for=, =x, for=192.0.2.1 x, for=192.0.2.2",
            vec![
                Node::Malformed,
                Node::Malformed,
                Node::Malformed,
                Node::Addr(ip("192.0.2.2")),
            ],
        ),
        (
            "bad obfuscated names and ports",
            "for=_, for=\"_a b\", for=\"192.0.2.1:\", for=\"[::1]x\", for=\"[::1\"",
            vec![Node::Malformed; 5],
        ),
        ("nothing but separators", " , ;, ", vec![]),
    ];
    for (reason, value, want) in cases {
        let mut got = Vec::new();
        parse_forwarded(value.as_bytes(), &mut got);
        assert_eq!(got, want, "{reason}");
    }
}

// Writing: `apply`.
mod apply;

#[test]
fn ip_text_spells_addresses_as_display_does() {
    for ip in [
        "0.0.0.0",
        "1.2.3.4",
        "10.0.100.255",
        "255.255.255.255",
        "192.0.2.9",
        "2001:db8::1",
        "::ffff:1.2.3.4",
    ] {
        let ip: IpAddr = ip.parse().expect("address");
        assert_eq!(ip_text(ip), ip.to_string());
    }
}
