use super::*;

fn name(s: &str) -> Host {
    Host::Name(s.to_owned())
}

fn ip(s: &str) -> Host {
    Host::Ip(s.parse().unwrap())
}

#[test]
fn legacy_ipv4_literals_are_rejected() {
    let cases = [
        // single decimal number: inet_aton reads it as 127.0.0.1
        "2130706433",
        // octal first part
        "0177.0.0.1",
        // hex part plus short form
        "0x7f.1",
        // single hex number
        "0x7f000001",
        // upper-case hex prefix is the same thing
        "0X7F000001",
        // two-part short form: 127.0.0.1
        "127.1",
        // three-part short form: 127.0.0.1
        "127.0.1",
        // leading zero in an octet (octal in some parsers)
        "1.2.3.04",
        // all-zero octal-looking
        "00.0.0.0",
        // octet out of range
        "256.0.0.1",
        // too many parts
        "1.2.3.4.5",
        // a name whose last label is numeric can only be an IP, and this one is not
        "example.123",
        // bare "0x" counts as a number (WHATWG)
        "foo.0x",
        // legacy form with trailing dot
        "127.1.",
        // full-width digits map to "2130706433" under IDNA: still legacy
        "２１３０７０６４３３",
    ];
    for raw in cases {
        assert_eq!(
            normalize_host(raw),
            Err(DestinationError::LegacyIpLiteral(raw.to_owned())),
            "{raw}"
        );
    }
}

#[test]
fn hosts_are_normalised() {
    let cases = [
        // plain dotted quad
        ("127.0.0.1", ip("127.0.0.1")),
        // zeros are fine when not leading
        ("0.0.0.0", ip("0.0.0.0")),
        // max octets
        ("255.255.255.255", ip("255.255.255.255")),
        // trailing dot removed first, then it is a dotted quad
        ("127.0.0.1.", ip("127.0.0.1")),
        // full-width digits and dots are IDNA-mapped to an IPv4 literal, not a name
        ("１２７．０．０．１", ip("127.0.0.1")),
        // bracketed IPv6
        ("[::1]", ip("::1")),
        // bare IPv6 (caller already split the port)
        ("::1", ip("::1")),
        // IPv6 is canonicalised
        ("[2001:DB8:0:0::1]", ip("2001:db8::1")),
        // IPv4-mapped IPv6 stays IPv6
        ("[::ffff:127.0.0.1]", ip("::ffff:127.0.0.1")),
        // case folded
        ("Example.COM", name("example.com")),
        // one trailing dot removed
        ("example.com.", name("example.com")),
        // IDNA to punycode (and case folded)
        ("BÜcher.example", name("xn--bcher-kva.example")),
        // already-punycode is kept
        ("xn--bcher-kva.example", name("xn--bcher-kva.example")),
        // underscore tolerated
        ("_dmarc.example.com", name("_dmarc.example.com")),
        // single label
        ("localhost", name("localhost")),
        // numeric labels other than the last are fine
        ("123.example", name("123.example")),
        // "0x" followed by non-hex is a name
        ("0xzz.example", name("0xzz.example")),
        // soft hyphen is ignored by IDNA
        ("exa\u{AD}mple.com", name("example.com")),
        // 63-character label is the maximum
        (
            &*format!("{}.com", "a".repeat(63)),
            name(&format!("{}.com", "a".repeat(63))),
        ),
    ];
    for (raw, want) in cases {
        assert_eq!(normalize_host(raw), Ok(want), "{raw}");
    }
}

#[test]
fn bad_hosts_are_rejected() {
    use DestinationError::*;
    let long_name = format!("{}.com", vec!["a".repeat(60); 5].join("."));
    let cases: Vec<(String, DestinationError)> = vec![
        // nothing
        ("".into(), Empty),
        // just the root
        (".".into(), BadHostname(".".into())),
        // empty label
        ("a..b".into(), BadHostname("a..b".into())),
        // two trailing dots: only one is removed
        ("a..".into(), BadHostname("a..".into())),
        // leading dot
        (".a".into(), BadHostname(".a".into())),
        // space
        ("a b".into(), BadHostname("a b".into())),
        // path separator
        ("a/b".into(), BadHostname("a/b".into())),
        // userinfo smuggling
        (
            "user@example.com".into(),
            BadHostname("user@example.com".into()),
        ),
        // wildcard
        ("*.example.com".into(), BadHostname("*.example.com".into())),
        // percent-encoding is not decoded, so it is refused
        (
            "%31%32%37.0.0.1".into(),
            BadHostname("%31%32%37.0.0.1".into()),
        ),
        // leading hyphen
        ("-a.com".into(), BadHostname("-a.com".into())),
        // trailing hyphen
        ("a-.com".into(), BadHostname("a-.com".into())),
        // label over 63 characters
        (
            format!("{}.com", "a".repeat(64)),
            BadHostname(format!("{}.com", "a".repeat(64))),
        ),
        // invalid punycode
        ("xn--zz--.com".into(), BadHostname("xn--zz--.com".into())),
        // control character
        ("a\u{0}b".into(), BadHostname("a\u{0}b".into())),
        // name over 253 characters
        (long_name, TooLong),
        // absurdly long input is refused before any work
        ("a".repeat(MAX_INPUT_LEN + 1), TooLong),
        // zone id
        ("fe80::1%eth0".into(), ZoneId("fe80::1%eth0".into())),
        // zone id, bracketed and percent-encoded as in URLs
        ("[fe80::1%25eth0]".into(), ZoneId("[fe80::1%25eth0]".into())),
        // unterminated bracket
        ("[::1".into(), BadIpv6("[::1".into())),
        // IPv4 in brackets is not IPv6
        ("[127.0.0.1]".into(), BadIpv6("[127.0.0.1]".into())),
        // malformed IPv6
        ("[1:::2]".into(), BadIpv6("[1:::2]".into())),
        // empty brackets
        ("[]".into(), BadIpv6("[]".into())),
        // stray closing bracket
        ("a]".into(), BadHostname("a]".into())),
    ];
    for (raw, want) in cases {
        assert_eq!(normalize_host(&raw), Err(want), "{raw:?}");
    }
}

#[test]
fn authorities_parse() {
    let dest = |host: Host, port: u16| Destination { host, port };
    let cases = [
        // name and port
        ("example.com:443", None, dest(name("example.com"), 443)),
        // default port applies when there is none
        ("example.com", Some(80), dest(name("example.com"), 80)),
        // explicit port wins over the default
        (
            "example.com:8080",
            Some(80),
            dest(name("example.com"), 8080),
        ),
        // bracketed IPv6 with port
        ("[::1]:443", None, dest(ip("::1"), 443)),
        // bracketed IPv6 without port takes the default
        ("[2001:db8::1]", Some(443), dest(ip("2001:db8::1"), 443)),
        // IPv4 with port
        ("10.0.0.1:22", None, dest(ip("10.0.0.1"), 22)),
        // host normalisation applies
        (
            "BÜcher.Example.:443",
            None,
            dest(name("xn--bcher-kva.example"), 443),
        ),
        // highest port
        ("example.com:65535", None, dest(name("example.com"), 65535)),
        // leading zeros in the port are just decimal
        ("example.com:0443", None, dest(name("example.com"), 443)),
    ];
    for (raw, default, want) in cases {
        assert_eq!(parse_authority(raw, default), Ok(want), "{raw}");
    }
}

#[test]
fn bad_authorities_are_rejected() {
    use DestinationError::*;
    let cases = [
        // empty
        ("", Some(80), Empty),
        // port but no host
        (":80", None, Empty),
        // port zero
        ("example.com:0", None, BadPort("0".into())),
        // port above 65535
        ("example.com:65536", None, BadPort("65536".into())),
        // explicit sign (u16::from_str would accept this)
        ("example.com:+80", None, BadPort("+80".into())),
        // negative
        ("example.com:-80", None, BadPort("-80".into())),
        // empty port after the colon
        ("example.com:", Some(80), BadPort("".into())),
        // non-numeric
        ("example.com:http", None, BadPort("http".into())),
        // whitespace
        ("example.com: 80", None, BadPort(" 80".into())),
        // no port and no default
        ("example.com", None, MissingPort),
        // bracketed IPv6, no port, no default
        ("[::1]", None, MissingPort),
        // default port of zero is not a port
        ("example.com", Some(0), BadPort("0".into())),
        // unbracketed IPv6 in an authority
        ("::1:443", None, BadIpv6("::1:443".into())),
        // junk after the closing bracket
        ("[::1]443", None, BadIpv6("[::1]443".into())),
        // zone id inside the brackets
        (
            "[fe80::1%25eth0]:443",
            None,
            ZoneId("[fe80::1%25eth0]".into()),
        ),
        // legacy literal with a port
        ("2130706433:80", None, LegacyIpLiteral("2130706433".into())),
        // userinfo
        (
            "user@example.com:80",
            None,
            BadHostname("user@example.com".into()),
        ),
    ];
    for (raw, default, want) in cases {
        assert_eq!(parse_authority(raw, default), Err(want), "{raw:?}");
    }
}

#[test]
fn display_and_authority() {
    let cases = [
        // IPv6 host displays bare, authority brackets it
        (ip("::1"), 443, "::1", "[::1]:443"),
        // IPv4
        (ip("127.0.0.1"), 80, "127.0.0.1", "127.0.0.1:80"),
        // name
        (name("example.com"), 8443, "example.com", "example.com:8443"),
    ];
    for (host, port, shown, authority) in cases {
        assert_eq!(host.to_string(), shown);
        let dest = Destination { host, port };
        assert_eq!(dest.authority(), authority);
        assert_eq!(dest.to_string(), authority);
    }
}

#[test]
fn error_messages_are_short_and_escaped() {
    let err = normalize_host("a\nb").unwrap_err();
    let msg = err.to_string();
    assert!(!msg.contains('\n'), "{msg}");
    assert!(msg.len() < 200, "{msg}");
    assert_eq!(
        DestinationError::MissingPort.to_string(),
        "destination port is missing"
    );
}

#[tokio::test]
async fn static_resolver_hit_and_miss() {
    let a: IpAddr = "192.0.2.1".parse().unwrap();
    let b: IpAddr = "2001:db8::1".parse().unwrap();
    let mut r = StaticResolver::new();
    r.insert("example.com", vec![a, b])
        .insert("empty.example", vec![]);
    let cases = [
        // known name, answer order kept
        ("example.com", Ok(vec![a, b])),
        // lookup is case-insensitive and ignores a trailing dot
        ("Example.COM.", Ok(vec![a, b])),
        // unknown name
        (
            "nope.example",
            Err(ResolveError::NotFound("nope.example".into())),
        ),
        // a name with no addresses is not found
        (
            "empty.example",
            Err(ResolveError::NotFound("empty.example".into())),
        ),
    ];
    for (query, want) in cases {
        assert_eq!(r.resolve(query).await, want, "{query}");
    }
    // through the free function too
    assert_eq!(resolve(&r, &name("example.com")).await, Ok(vec![a, b]));
    assert_eq!(
        resolve(&r, &name("nope.example")).await,
        Err(ResolveError::NotFound("nope.example".into()))
    );
}

struct PanickingResolver;

impl Resolver for PanickingResolver {
    fn resolve<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, ResolveError>> {
        panic!("IP literal {name} must not reach the resolver")
    }
}

#[tokio::test]
async fn ip_literals_skip_dns() {
    let cases = [
        // IPv4 literal
        ip("192.0.2.7"),
        // IPv6 literal
        ip("2001:db8::7"),
    ];
    for host in cases {
        let Host::Ip(want) = host else { unreachable!() };
        assert_eq!(resolve(&PanickingResolver, &host).await, Ok(vec![want]));
    }
}

#[tokio::test]
async fn system_resolver_builds_without_network() {
    // Construction reads local configuration only; no lookup is made.
    let r = SystemResolver::new(Duration::from_secs(2));
    assert!(r.is_ok(), "{r:?}");
}

#[test]
fn net_errors_map() {
    let cases = [
        // transport timeout
        (NetError::Timeout, ResolveError::Timeout("h".into())),
        // anything else
        (
            NetError::Message("boom"),
            ResolveError::Failed {
                host: "h".into(),
                reason: "boom".into(),
            },
        ),
    ];
    for (err, want) in cases {
        assert_eq!(map_net_error("h", &err), want);
    }
}
