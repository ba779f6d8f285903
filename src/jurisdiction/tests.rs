//! Table-driven tests of the jurisdiction table: special ranges at their edges, embedded IPv4,
//! source precedence, and both GeoIP schemas from fixture databases built here.

use super::geoip::{GeoIpDb, GeoIpError, Schema};
use super::sources::{self, RegionTable};
use super::*;

#[path = "../../tests/support/mmdb.rs"]
mod mmdb;

fn net(s: &str) -> IpNet {
    s.parse().expect("fixture CIDR")
}

fn j(code: &str) -> Jurisdiction {
    Jurisdiction::from_code(code).expect("fixture code")
}

/// A small world: GeoIP that is wrong in the places real GeoIP is wrong, plus a cloud range
/// and an override.
fn world() -> JurisdictionTable {
    let mut b = TableBuilder::with_special_ranges();
    let geo = [
        ("0.0.0.0/0", "AU"),      // a /0: everything not covered by a longer prefix
        ("81.2.64.0/18", "GB"),   // home
        ("8.8.0.0/17", "US"),     // conditional
        ("10.0.0.0/8", "CN"),     // GeoIP claiming private space: special must win
        ("52.56.0.0/16", "US"),   // GeoIP misplacing an AWS London range
        ("1.2.3.4/32", "JP"),     // a /32
        ("::/0", "NZ"),           // IPv6 /0
        ("2a00::/12", "DE"),      // RIPE space
        ("2a00:1450::/32", "IE"), // more specific inside it
        ("2a00:1450:4009::1/128", "GB"), // a /128
        ("2002::/16", "US"),      // what DB-IP says of 6to4 space
    ];
    for (cidr, code) in geo {
        b.add(net(cidr), j(code), Source::GeoIp, None)
            .expect("geo fixture");
    }
    let regions = RegionTable::parse(
        "[regions]\n\"eu-west-2\" = \"GB\"\n\"eu-west-1\" = \"IE\"\n\"GLOBAL\" = \"global\"\n",
        "regions.toml",
    )
    .expect("regions");
    let aws = r#"{"prefixes":[
        {"ip_prefix":"52.56.0.0/16","region":"eu-west-2","service":"AMAZON","network_border_group":"eu-west-2"},
        {"ip_prefix":"52.56.128.0/17","region":"GLOBAL","service":"CLOUDFRONT","network_border_group":"GLOBAL"}],
        "ipv6_prefixes":[{"ipv6_prefix":"2a05:d000::/25","region":"eu-west-1","service":"AMAZON"}]}"#;
    let cloud = sources::parse_aws_ranges(aws, "ip-ranges.json", &regions).expect("aws");
    sources::add_cloud(&cloud, &regions, &mut b);
    let ov =
        "cidr,jurisdiction,label\n52.56.7.0/24, FR, partner in Paris\n10.9.0.0/16, GB, our DC\n";
    let ov = sources::parse_overrides_csv(ov, "overrides.csv").expect("overrides");
    sources::add_overrides(&ov, &mut b, "overrides.csv").expect("add");
    b.build()
}

#[test]
fn addresses_classify_as_expected() {
    let t = world();
    #[rustfmt::skip]
    let cases: &[(&str, &str, Source, &str, &str)] = &[
        // address, jurisdiction, source, matched prefix, reason
        ("9.255.255.255", "AU", Source::GeoIp, "0.0.0.0/0", "just below 10/8 (RFC 1918): the /0"),
        ("10.0.0.0", "internal", Source::Special, "10.0.0.0/8", "first of 10/8 beats GeoIP's CN"),
        ("10.255.255.255", "internal", Source::Special, "10.0.0.0/8", "last of 10/8"),
        ("11.0.0.0", "AU", Source::GeoIp, "0.0.0.0/0", "just above 10/8"),
        ("10.9.1.1", "internal", Source::Special, "10.0.0.0/8", "special outranks an operator override"),
        ("172.15.255.255", "AU", Source::GeoIp, "0.0.0.0/0", "just below 172.16/12"),
        ("172.16.0.0", "internal", Source::Special, "172.16.0.0/12", "first of 172.16/12"),
        ("172.31.255.255", "internal", Source::Special, "172.16.0.0/12", "last of 172.16/12"),
        ("172.32.0.0", "AU", Source::GeoIp, "0.0.0.0/0", "just above 172.16/12"),
        ("192.167.255.255", "AU", Source::GeoIp, "0.0.0.0/0", "just below 192.168/16"),
        ("192.168.0.0", "internal", Source::Special, "192.168.0.0/16", "RFC 1918"),
        ("192.169.0.0", "AU", Source::GeoIp, "0.0.0.0/0", "just above 192.168/16"),
        ("100.63.255.255", "AU", Source::GeoIp, "0.0.0.0/0", "just below CGNAT"),
        ("100.64.0.0", "internal", Source::Special, "100.64.0.0/10", "CGNAT (RFC 6598)"),
        ("100.127.255.255", "internal", Source::Special, "100.64.0.0/10", "last of CGNAT"),
        ("100.128.0.0", "AU", Source::GeoIp, "0.0.0.0/0", "just above CGNAT"),
        ("100.100.100.200", "metadata", Source::Special, "100.100.100.200/32", "Alibaba metadata inside CGNAT"),
        ("127.0.0.1", "internal", Source::Special, "127.0.0.0/8", "loopback"),
        ("169.254.169.253", "internal", Source::Special, "169.254.0.0/16", "link-local, below metadata"),
        ("169.254.169.254", "metadata", Source::Special, "169.254.169.254/32", "cloud metadata"),
        ("169.254.169.255", "internal", Source::Special, "169.254.0.0/16", "link-local, above metadata"),
        ("192.0.0.255", "reserved", Source::Special, "192.0.0.0/24", "IETF protocol assignments"),
        ("192.0.1.0", "AU", Source::GeoIp, "0.0.0.0/0", "between 192.0.0/24 and TEST-NET-1"),
        ("192.0.2.1", "reserved", Source::Special, "192.0.2.0/24", "TEST-NET-1 (RFC 5737)"),
        ("198.17.255.255", "AU", Source::GeoIp, "0.0.0.0/0", "just below benchmarking"),
        ("198.18.0.0", "reserved", Source::Special, "198.18.0.0/15", "benchmarking (RFC 2544)"),
        ("198.19.255.255", "reserved", Source::Special, "198.18.0.0/15", "last of benchmarking"),
        ("198.20.0.0", "AU", Source::GeoIp, "0.0.0.0/0", "just above benchmarking"),
        ("223.255.255.255", "AU", Source::GeoIp, "0.0.0.0/0", "just below multicast"),
        ("224.0.0.1", "reserved", Source::Special, "224.0.0.0/4", "multicast"),
        ("240.0.0.1", "reserved", Source::Special, "240.0.0.0/4", "reserved class E"),
        ("255.255.255.255", "reserved", Source::Special, "255.255.255.255/32", "broadcast"),
        ("0.0.0.0", "reserved", Source::Special, "0.0.0.0/32", "unspecified"),
        ("81.2.69.142", "GB", Source::GeoIp, "81.2.64.0/18", "home, from GeoIP"),
        ("1.2.3.4", "JP", Source::GeoIp, "1.2.3.4/32", "a /32"),
        ("1.2.3.5", "AU", Source::GeoIp, "0.0.0.0/0", "just after the /32"),
        ("52.56.1.1", "GB", Source::Cloud, "52.56.0.0/16", "cloud beats GeoIP's misplacement"),
        ("52.56.7.7", "FR", Source::Override, "52.56.7.0/24", "override beats cloud"),
        ("52.56.200.1", "global", Source::Cloud, "52.56.128.0/17", "GLOBAL edge range: global, GeoIP's US never overrides it"),
        // IPv6
        ("::", "reserved", Source::Special, "::/128", "unspecified"),
        ("::1", "internal", Source::Special, "::1/128", "loopback"),
        ("::2", "reserved", Source::Special, "0.0.0.0/8", "IPv4-compatible ::0.0.0.2"),
        ("fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "NZ", Source::GeoIp, "::/0", "just below ULA"),
        ("fc00::", "internal", Source::Special, "fc00::/7", "ULA (RFC 4193)"),
        ("fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "internal", Source::Special, "fc00::/7", "last of ULA"),
        ("fd00:ec2::254", "metadata", Source::Special, "fd00:ec2::254/128", "AWS metadata over IPv6"),
        ("fd00:ec2::253", "internal", Source::Special, "fc00::/7", "next to the metadata /128"),
        ("fe80::1", "internal", Source::Special, "fe80::/10", "link-local"),
        ("fec0::", "NZ", Source::GeoIp, "::/0", "just above link-local"),
        ("ff02::1", "reserved", Source::Special, "ff00::/8", "multicast"),
        ("2001:db8::1", "reserved", Source::Special, "2001:db8::/32", "documentation"),
        ("2001:db9::", "NZ", Source::GeoIp, "::/0", "just above documentation"),
        ("2a00:1::", "DE", Source::GeoIp, "2a00::/12", "RIPE space"),
        ("2a00:1450:4009::1", "GB", Source::GeoIp, "2a00:1450:4009::1/128", "a /128 wins"),
        ("2a00:1450:4009::2", "IE", Source::GeoIp, "2a00:1450::/32", "next to the /128"),
        ("2a05:d000::1", "IE", Source::Cloud, "2a05:d000::/25", "IPv6 cloud range"),
        ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "reserved", Source::Special, "ff00::/8", "last IPv6 address, in multicast"),
    ];
    for (addr, want, source, prefix, why) in cases {
        let ip: IpAddr = addr.parse().expect("fixture address");
        let l = t.lookup(ip);
        assert_eq!(l.jurisdiction().code(), *want, "{addr}: {why}");
        assert_eq!(l.source(), *source, "{addr}: {why}");
        assert_eq!(l.prefix().to_string(), *prefix, "{addr}: {why}");
    }
}

#[test]
fn embedded_ipv4_is_classified_by_the_ipv4_inside() {
    let t = world();
    #[rustfmt::skip]
    let cases: &[(&str, &str, Option<Embedding>, &str)] = &[
        ("::ffff:81.2.69.142", "GB", Some(Embedding::Mapped), "IPv4-mapped (RFC 4291 2.5.5.2)"),
        ("::ffff:10.0.0.1", "internal", Some(Embedding::Mapped), "mapped private address stays private"),
        ("::ffff:169.254.169.254", "metadata", Some(Embedding::Mapped), "mapped metadata address"),
        ("::ffff:0.0.0.0", "reserved", Some(Embedding::Mapped), "mapped unspecified"),
        ("64:ff9b::808:808", "US", Some(Embedding::Nat64), "NAT64 well-known prefix (RFC 6052)"),
        ("64:ff9b::a00:1", "internal", Some(Embedding::Nat64), "NAT64 of a private address"),
        ("64:ff9b:1::1", "internal", None, "local-use NAT64 prefix (RFC 8215) is not embedded"),
        ("::81.2.69.142", "GB", Some(Embedding::Compatible), "IPv4-compatible (deprecated)"),
        ("2002:5102:458e::1", "GB", Some(Embedding::SixToFour), "6to4 (RFC 3056) router 81.2.69.142"),
    ];
    for (addr, want, emb, why) in cases {
        let l = t.lookup(addr.parse().expect("fixture"));
        assert_eq!(l.jurisdiction().code(), *want, "{addr}: {why}");
        assert_eq!(l.embedded(), *emb, "{addr}: {why}");
    }
}

#[test]
fn six_to_four_and_teredo_take_the_stricter_answer() {
    let t = world();
    let profile = crate::policy::Profile::load("uk-adequate").expect("profile");
    // 6to4 to a GB router, but the table puts 2002::/16 itself in the US: conditional wins.
    let l = t.lookup("2002:5102:458e::1".parse().expect("fixture"));
    assert_eq!(l.jurisdiction().code(), "GB");
    assert_eq!(l.relay().map(|r| r.jurisdiction.code()), Some("US"));
    assert_eq!(profile.classify(&l).0, crate::policy::Class::Conditional);
    // Teredo (RFC 4380): server 81.2.69.142 (GB); client 1.2.3.4 (JP) stored inverted.
    let client = !u32::from(std::net::Ipv4Addr::new(1, 2, 3, 4));
    let server = u32::from(std::net::Ipv4Addr::new(81, 2, 69, 142));
    let addr =
        Ipv6Addr::from((0x2001_0000u128 << 96) | u128::from(server) << 64 | u128::from(client));
    let l = t.lookup(IpAddr::V6(addr));
    assert_eq!(l.embedded(), Some(Embedding::Teredo));
    assert_eq!(
        l.jurisdiction().code(),
        "JP",
        "client address decides the primary answer"
    );
    assert_eq!(l.relay().map(|r| r.jurisdiction.code()), Some("GB"));
    assert_eq!(profile.classify(&l).0, crate::policy::Class::Conditional);
}

#[test]
fn mapped_prefix_never_widens_to_all_of_ipv4() {
    // smokescreen PR #289: ::ffff:0:0/96 must not become 0.0.0.0/0.
    let mut b = TableBuilder::new();
    assert!(matches!(
        b.add(net("::ffff:0:0/96"), j("CN"), Source::Override, None),
        Err(TableError::MappedPrefix(_))
    ));
    assert!(sources::parse_overrides_csv("::ffff:0:0/96, CN, x\n", "o.csv").is_err());
    // An IPv6 /0 covers ::ffff:0:0/96 as IPv6 space only: IPv4 (and mapped) lookups ignore it.
    b.add(net("::/0"), j("CN"), Source::Override, None)
        .expect("v6 /0");
    b.add(net("8.8.0.0/16"), j("US"), Source::GeoIp, None)
        .expect("v4");
    let t = b.build();
    assert_eq!(
        t.lookup("8.8.8.8".parse().expect("ip"))
            .jurisdiction()
            .code(),
        "US"
    );
    assert_eq!(
        t.lookup("::ffff:8.8.8.8".parse().expect("ip"))
            .jurisdiction()
            .code(),
        "US"
    );
    assert_eq!(
        t.lookup("9.9.9.9".parse().expect("ip")).jurisdiction(),
        Jurisdiction::UNKNOWN
    );
    assert_eq!(
        t.lookup("2001:4860::1".parse().expect("ip"))
            .jurisdiction()
            .code(),
        "CN"
    );
}

#[test]
fn empty_table_is_unknown_everywhere() {
    let t = TableBuilder::new().build();
    for a in [
        "0.0.0.0",
        "8.8.8.8",
        "255.255.255.255",
        "::",
        "2001:4860::1",
        "ffff::1",
    ] {
        let l = t.lookup(a.parse().expect("ip"));
        assert_eq!(l.jurisdiction(), Jurisdiction::UNKNOWN, "{a}");
        assert_eq!(l.source(), Source::None, "{a}");
    }
}

#[test]
fn jurisdiction_codes_round_trip() {
    for code in [
        "GB", "gb", "US", "XK", "internal", "metadata", "reserved", "unknown",
    ] {
        let j = Jurisdiction::from_code(code).expect(code);
        assert!(j.index() < Jurisdiction::COUNT);
        assert!(j.code().eq_ignore_ascii_case(code));
    }
    for bad in ["UK", "EL", "", "G", "GBR", "ZZ", "intern"] {
        assert_eq!(Jurisdiction::from_code(bad), None, "{bad}");
    }
}

#[test]
fn labels_are_kept_for_special_override_and_cloud() {
    let t = world();
    let label = |a: &str| {
        t.label(&t.lookup(a.parse().expect("ip")).hit())
            .map(String::from)
    };
    assert_eq!(
        label("100.64.1.1").as_deref(),
        Some("shared address space, CGNAT (RFC 6598)")
    );
    assert_eq!(label("52.56.7.7").as_deref(), Some("partner in Paris"));
    assert_eq!(
        label("52.56.1.1"),
        None,
        "a cloud range is named by its source"
    );
    let source = |a: &str| t.lookup(a.parse().expect("ip")).source_name();
    assert_eq!(source("52.56.1.1"), "cloud:aws:eu-west-2");
    assert_eq!(source("52.56.200.1"), "cloud:aws:GLOBAL");
    assert_eq!(source("81.2.69.142"), "geoip");
    assert_eq!(label("81.2.69.142"), None);
}

// === Sources: bad input ===

#[test]
fn bad_override_lines_name_file_line_and_reason() {
    #[rustfmt::skip]
    let cases: &[(&str, usize, &str)] = &[
        ("10.0.0.0/33, GB, x", 1, "invalid CIDR"),
        ("# c\n\n10.0.0.1/8, GB, x", 3, "host bits set"),
        ("10.0.0.0/8, UK, x", 1, "unknown jurisdiction 'UK'"),
        ("192.0.2.0/24", 1, "expected 'cidr, jurisdiction, label'"),
        ("ok.example, GB, x", 1, "invalid CIDR"),
    ];
    for (text, line, reason) in cases {
        let e = sources::parse_overrides_csv(text, "o.csv").expect_err(text);
        assert_eq!(e.line, Some(*line), "{text}");
        assert!(e.reason.contains(reason), "{text}: {}", e.reason);
        assert!(e.to_string().starts_with(&format!("o.csv:{line}: ")), "{e}");
    }
    let toml = "version = 1\n[[override]]\ncidr = \"10.0.0.0/8\"\njurisdiction = \"GB\"\n\n[[override]]\ncidr = \"10.0.0.0/8\"\njurisdiction = \"XX\"\n";
    let e = sources::parse_overrides_toml(toml, "o.toml").expect_err("bad code");
    assert_eq!(e.line, Some(8));
    let e = sources::parse_overrides_toml("[[override]]\ncidr = 5\n", "o.toml").expect_err("type");
    assert_eq!(e.line, Some(2));
    let ok = sources::parse_overrides_toml(
        "version = 1\n[[override]]\ncidr = \"2001:db8::/48\"\njurisdiction = \"FR\"\nlabel = \"lab\"\n",
        "o.toml",
    )
    .expect("valid toml");
    assert_eq!(ok[0].jurisdiction.code(), "FR");
    assert_eq!(ok[0].line, 3);
}

#[test]
fn aws_ranges_map_regions_and_local_zones() {
    let regions = RegionTable::aws().expect("shipped table parses");
    assert_eq!(regions.get("eu-west-2").code(), "GB");
    assert_eq!(regions.get("eu-west-1").code(), "IE");
    assert_eq!(regions.get("eu-central-1").code(), "DE");
    assert_eq!(regions.get("eu-south-1").code(), "IT");
    assert_eq!(regions.get("eu-north-1").code(), "SE");
    assert_eq!(regions.get("eu-west-3").code(), "FR");
    assert_eq!(regions.get("us-east-1").code(), "US");
    assert_eq!(regions.get("GLOBAL"), Jurisdiction::GLOBAL);
    let doc = r#"{"syncToken":"1","createDate":"2026-11-01-00-00-00","prefixes":[
        {"ip_prefix":"15.220.0.0/19","region":"us-east-1","service":"EC2","network_border_group":"us-east-1-bue-1"},
        {"ip_prefix":"3.8.0.0/14","region":"eu-west-2","service":"EC2","network_border_group":"eu-west-2"},
        {"ip_prefix":"1.2.3.0/24","region":"xx-new-1","service":"EC2","network_border_group":"xx-new-1"}],
        "ipv6_prefixes":[{"ipv6_prefix":"2a05:d01c::/36","region":"eu-west-2","service":"EC2","network_border_group":"eu-west-2"}]}"#;
    let e = sources::parse_aws_ranges(doc, "r.json", &regions).expect("parses");
    let by = |p: &str| {
        e.iter()
            .find(|x| x.net == net(p))
            .map(|x| x.jurisdiction.code())
    };
    assert_eq!(
        by("15.220.0.0/19"),
        Some("AR"),
        "Local Zone in Buenos Aires is not us-east-1"
    );
    assert_eq!(by("3.8.0.0/14"), Some("GB"));
    assert_eq!(by("2a05:d01c::/36"), Some("GB"));
    let mut b = TableBuilder::new();
    let s = sources::add_cloud(&e, &regions, &mut b);
    assert_eq!(s.prefixes, 4);
    assert_eq!(s.unmapped_regions, vec!["xx-new-1".to_string()]);
    let bad = r#"{"prefixes":[{"ip_prefix":"3.8.0.0/33","region":"eu-west-2"}]}"#;
    let err = sources::parse_aws_ranges(bad, "r.json", &regions).expect_err("bad prefix");
    assert!(err.to_string().contains("prefixes[0].ip_prefix"), "{err}");
    let err =
        sources::parse_aws_ranges("{\n\"prefixes\": 5}", "r.json", &regions).expect_err("bad doc");
    assert_eq!(err.line, Some(2));
}

// === GeoIP: both schemas, from fixture databases ===

fn fixture(schema: Schema, ip_version: u16) -> Vec<u8> {
    let rec = |c: &str| match schema {
        Schema::MaxMind => mmdb::maxmind_country(c),
        Schema::Flat => mmdb::flat_country(c),
    };
    let mut w = mmdb::MmdbBuilder::new(ip_version, "Test-Country").build_epoch(1_780_272_000);
    w.insert_str("81.2.64.0/18", rec("GB"));
    w.insert_str("8.8.8.0/24", rec("US"));
    w.insert_str("5.5.5.0/24", mmdb::maxmind_registered_only("RU"));
    w.insert_str("6.6.6.0/24", rec("ZZ"));
    if ip_version == 6 {
        w.insert_str("2a00:1450::/32", rec("IE"));
    }
    w.build()
}

#[test]
fn both_geoip_schemas_load() {
    for (schema, v) in [
        (Schema::MaxMind, 6),
        (Schema::Flat, 6),
        (Schema::MaxMind, 4),
        (Schema::Flat, 4),
    ] {
        let db = GeoIpDb::from_bytes(fixture(schema, v), "fixture.mmdb").expect("loads");
        assert_eq!(db.schema(), schema);
        let mut b = TableBuilder::with_special_ranges();
        let info = db.add_to(&mut b).expect("merges");
        assert_eq!(info.build_date(), "2026-06-01");
        let t = b.build();
        let code = |a: &str| t.lookup(a.parse().expect("ip")).jurisdiction().code();
        assert_eq!(code("81.2.69.142"), "GB", "{schema:?} v{v}");
        assert_eq!(code("8.8.8.8"), "US");
        assert_eq!(code("8.8.9.1"), "unknown", "gap in the database");
        assert_eq!(code("6.6.6.6"), "unknown", "non-ISO code ZZ");
        assert_eq!(info.unknown_codes, 1);
        if v == 6 {
            assert_eq!(code("2a00:1450::1"), "IE");
        }
    }
}

#[test]
fn registered_country_is_not_taken_as_the_country() {
    let db = GeoIpDb::from_bytes(fixture(Schema::MaxMind, 6), "f.mmdb").expect("loads");
    let mut b = TableBuilder::new();
    let info = db.add_to(&mut b).expect("merges");
    assert_eq!(info.without_country, 1);
    let t = b.build();
    assert_eq!(
        t.lookup("5.5.5.5".parse().expect("ip")).jurisdiction(),
        Jurisdiction::UNKNOWN
    );
}

#[test]
fn bad_geoip_files_are_refused_with_a_reason() {
    let good = fixture(Schema::Flat, 6);
    let truncated = good[..good.len() / 2].to_vec();
    assert!(matches!(
        GeoIpDb::from_bytes(truncated, "t.mmdb"),
        Err(GeoIpError::NotMmdb { .. }) | Err(GeoIpError::Corrupt { .. })
    ));
    assert!(matches!(
        GeoIpDb::from_bytes(b"this is not a database".to_vec(), "x.mmdb"),
        Err(GeoIpError::NotMmdb { .. })
    ));
    assert!(matches!(
        GeoIpDb::from_bytes(Vec::new(), "empty.mmdb"),
        Err(GeoIpError::NotMmdb { .. })
    ));
    let mut w = mmdb::MmdbBuilder::new(6, "ASN");
    w.insert_str("8.8.8.0/24", mmdb::neither_schema());
    w.insert_str("1.1.1.0/24", mmdb::neither_schema());
    let e = GeoIpDb::from_bytes(w.build(), "asn.mmdb").expect_err("no schema");
    assert!(matches!(e, GeoIpError::NoSchema { .. }));
    assert!(e.to_string().starts_with("asn.mmdb: "), "{e}");
    let e = GeoIpDb::open(std::path::Path::new("does-not-exist.mmdb")).expect_err("missing");
    assert!(e.to_string().contains("does-not-exist.mmdb"), "{e}");
}

#[test]
fn truncation_anywhere_never_panics() {
    let good = fixture(Schema::MaxMind, 6);
    for cut in (0..good.len()).step_by(7) {
        if let Ok(db) = GeoIpDb::from_bytes(good[..cut].to_vec(), "cut.mmdb") {
            let mut b = TableBuilder::new();
            let _ = db.add_to(&mut b);
        }
    }
}

#[test]
fn a_lookup_stays_compact() {
    // The answer is built on every connection's path: the address plus packed values. A field
    // that makes it grow (an eagerly decoded prefix, a relay `Hit`) belongs in an accessor.
    assert_eq!(std::mem::size_of::<Lookup>(), 28);
}

proptest::proptest! {
    /// The piecewise conversion the IPv6 lookup uses is the plain big-endian one.
    #[test]
    fn v6_bits_is_the_big_endian_address(x in proptest::prelude::any::<u128>()) {
        proptest::prop_assert_eq!(v6_bits(Ipv6Addr::from(x)), x);
    }

    /// A lookup through an `IpAddr` read from a slice (family known only at run time, the
    /// proxy's call) answers as one whose family the compiler knows.
    #[test]
    fn runtime_family_lookups_match_typed_ones(
        xs in proptest::collection::vec(proptest::prelude::any::<u128>(), 1..64)
    ) {
        let t = world();
        // The top bit picks the family, so IPv4 addresses take any low 32 bits.
        let addrs: Vec<IpAddr> = xs
            .iter()
            .map(|&x| {
                if x >> 127 == 0 {
                    IpAddr::V6(Ipv6Addr::from(x))
                } else {
                    IpAddr::V4(Ipv4Addr::from(x as u32))
                }
            })
            .collect();
        for ip in &addrs {
            // Each arm calls `lookup` with a family the compiler knows.
            let typed = match *ip {
                IpAddr::V4(a) => t.lookup(IpAddr::V4(a)),
                IpAddr::V6(a) => t.lookup(IpAddr::V6(a)),
            };
            let l = t.lookup(*ip);
            proptest::prop_assert_eq!(l.classified(), typed.classified());
            proptest::prop_assert_eq!(l.jurisdiction(), typed.jurisdiction());
            proptest::prop_assert_eq!(l.source(), typed.source());
            proptest::prop_assert_eq!(l.prefix(), typed.prefix());
        }
    }
}
