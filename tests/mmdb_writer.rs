//! Checks the test-only MMDB writer against the real `maxminddb` reader.

#[path = "support/mmdb.rs"]
mod mmdb;

use std::error::Error;
use std::net::IpAddr;

use maxminddb::{MaxMindDbError, Reader, path};
use mmdb::{
    MmdbBuilder, Value, flat_country, maxmind_country, maxmind_registered_only, neither_schema,
};
use serde_json::{Value as Json, json};

type Db = Reader<Vec<u8>>;
type TestResult = Result<(), Box<dyn Error>>;

/// Builds, opens and fully verifies a database.
fn open(builder: &MmdbBuilder) -> Result<Db, MaxMindDbError> {
    let reader = Reader::from_source(builder.build())?;
    reader.verify()?;
    Ok(reader)
}

/// Looks `ip` up and returns (network, decoded record).
fn get(db: &Db, ip: &str) -> Result<(String, Option<Json>), Box<dyn Error>> {
    let ip: IpAddr = ip.parse()?;
    let result = db.lookup(ip)?;
    let decoded = result.decode::<Json>()?;
    assert_eq!(result.has_data(), decoded.is_some(), "has_data for {ip}");
    Ok((result.network()?.to_string(), decoded))
}

/// Every network with data, in iteration order.
fn networks(db: &Db) -> Result<Vec<(String, Json)>, Box<dyn Error>> {
    let mut out = Vec::new();
    for item in db.networks(Default::default())? {
        let item = item?;
        let value = item.decode::<Json>()?.ok_or("network without data")?;
        out.push((item.network()?.to_string(), value));
    }
    Ok(out)
}

fn country_json(iso: &str) -> Json {
    json!({"country": {"iso_code": iso, "names": {"en": iso}}, "registered_country": {"iso_code": iso}})
}

fn flat_json(iso: &str) -> Json {
    json!({"country_code": iso})
}

fn str_val(s: &str) -> Value {
    Value::Str(s.to_string())
}

fn nets(list: &[(&str, Json)]) -> Vec<(String, Json)> {
    list.iter()
        .map(|(n, v)| (n.to_string(), v.clone()))
        .collect()
}

#[test]
fn maxmind_schema_in_ipv6_db_all_record_sizes() -> TestResult {
    for bits in [24, 28, 32] {
        let mut b = MmdbBuilder::new(6, "GeoIP2-Country").record_size(bits);
        b.insert_str("1.2.3.0/24", maxmind_country("DE"));
        b.insert_str("5.6.0.0/16", maxmind_registered_only("NL"));
        b.insert_str("9.9.9.0/24", neither_schema());
        b.insert_str("2001:db8::/32", maxmind_country("FR"));
        let db = open(&b)?;
        assert_eq!(db.metadata().record_size, bits);
        assert_eq!(db.metadata().ip_version, 6);

        assert_eq!(
            get(&db, "1.2.3.77")?,
            ("1.2.3.0/24".into(), Some(country_json("DE")))
        );
        let hit = db.lookup("1.2.3.77".parse()?)?;
        let iso: Option<String> = hit.decode_path(&path!["country", "iso_code"])?;
        assert_eq!(iso.as_deref(), Some("DE"));
        let name: Option<String> = hit.decode_path(&path!["country", "names", "en"])?;
        assert_eq!(name.as_deref(), Some("DE"));

        assert_eq!(
            get(&db, "5.6.200.1")?,
            (
                "5.6.0.0/16".into(),
                Some(json!({"registered_country": {"iso_code": "NL"}}))
            )
        );
        let reg = db.lookup("5.6.200.1".parse()?)?;
        let iso: Option<String> = reg.decode_path(&path!["country", "iso_code"])?;
        assert_eq!(iso, None);
        let iso: Option<String> = reg.decode_path(&path!["registered_country", "iso_code"])?;
        assert_eq!(iso.as_deref(), Some("NL"));

        assert_eq!(
            get(&db, "9.9.9.9")?,
            ("9.9.9.0/24".into(), Some(json!({"asn": 64500, "org": "x"})))
        );
        assert_eq!(
            get(&db, "2001:db8:abcd::1")?,
            ("2001:db8::/32".into(), Some(country_json("FR")))
        );
    }
    Ok(())
}

#[test]
fn flat_schema_in_ipv4_and_ipv6_dbs() -> TestResult {
    for ip_version in [4, 6] {
        for bits in [24, 28, 32] {
            let mut b = MmdbBuilder::new(ip_version, "ip-location-db").record_size(bits);
            b.insert_str("8.8.8.0/24", flat_country("US"));
            b.insert_str("1.1.1.0/24", flat_country("AU"));
            if ip_version == 6 {
                b.insert_str("2a00::/12", flat_country("EU"));
            }
            let db = open(&b)?;
            assert_eq!(db.metadata().ip_version, ip_version);
            assert_eq!(
                get(&db, "8.8.8.8")?,
                ("8.8.8.0/24".into(), Some(flat_json("US")))
            );
            assert_eq!(
                get(&db, "1.1.1.1")?,
                ("1.1.1.0/24".into(), Some(flat_json("AU")))
            );
            let cc: Option<String> = db
                .lookup("1.1.1.200".parse()?)?
                .decode_path(&path!["country_code"])?;
            assert_eq!(cc.as_deref(), Some("AU"));
            if ip_version == 6 {
                assert_eq!(
                    get(&db, "2a0f:1::1")?,
                    ("2a00::/12".into(), Some(flat_json("EU")))
                );
            }
        }
    }
    Ok(())
}

#[test]
fn more_specific_override_splits_ipv4_range() -> TestResult {
    let (a, bb, c) = (flat_json("AA"), flat_json("BB"), flat_json("CC"));
    let mut b = MmdbBuilder::new(4, "override");
    b.insert_str("10.0.0.0/8", flat_country("AA"));
    b.insert_str("10.1.0.0/16", flat_country("BB"));
    b.insert_str("10.1.2.0/24", flat_country("CC"));
    let db = open(&b)?;

    assert_eq!(
        get(&db, "10.1.2.3")?,
        ("10.1.2.0/24".into(), Some(c.clone()))
    );
    assert_eq!(
        get(&db, "10.1.3.3")?,
        ("10.1.3.0/24".into(), Some(bb.clone()))
    );
    assert_eq!(
        get(&db, "10.1.128.1")?,
        ("10.1.128.0/17".into(), Some(bb.clone()))
    );
    assert_eq!(
        get(&db, "10.0.0.1")?,
        ("10.0.0.0/16".into(), Some(a.clone()))
    );
    assert_eq!(
        get(&db, "10.200.0.1")?,
        ("10.128.0.0/9".into(), Some(a.clone()))
    );
    assert_eq!(get(&db, "11.0.0.1")?.1, None);

    let expected = nets(&[
        ("10.0.0.0/16", a.clone()),
        ("10.1.0.0/23", bb.clone()),
        ("10.1.2.0/24", c),
        ("10.1.3.0/24", bb.clone()),
        ("10.1.4.0/22", bb.clone()),
        ("10.1.8.0/21", bb.clone()),
        ("10.1.16.0/20", bb.clone()),
        ("10.1.32.0/19", bb.clone()),
        ("10.1.64.0/18", bb.clone()),
        ("10.1.128.0/17", bb),
        ("10.2.0.0/15", a.clone()),
        ("10.4.0.0/14", a.clone()),
        ("10.8.0.0/13", a.clone()),
        ("10.16.0.0/12", a.clone()),
        ("10.32.0.0/11", a.clone()),
        ("10.64.0.0/10", a.clone()),
        ("10.128.0.0/9", a),
    ]);
    assert_eq!(networks(&db)?, expected);
    Ok(())
}

#[test]
fn more_specific_override_splits_ipv6_range() -> TestResult {
    let mut b = MmdbBuilder::new(6, "override6");
    b.insert_str("2001:db8::/32", flat_country("XX"));
    b.insert_str("2001:db8:1::/48", flat_country("YY"));
    let db = open(&b)?;
    assert_eq!(
        get(&db, "2001:db8:1::5")?,
        ("2001:db8:1::/48".into(), Some(flat_json("YY")))
    );
    assert_eq!(
        get(&db, "2001:db8:2::1")?,
        ("2001:db8:2::/47".into(), Some(flat_json("XX")))
    );
    assert_eq!(
        get(&db, "2001:db8:ffff::1")?,
        ("2001:db8:8000::/33".into(), Some(flat_json("XX")))
    );
    assert_eq!(
        get(&db, "2001:db8::1")?,
        ("2001:db8::/48".into(), Some(flat_json("XX")))
    );
    Ok(())
}

#[test]
fn later_insert_wins_over_its_whole_range() -> TestResult {
    let mut b = MmdbBuilder::new(4, "replace");
    b.insert_str("10.1.0.0/16", flat_country("BB"));
    b.insert_str("10.0.0.0/8", flat_country("AA"));
    b.insert_str("20.0.0.0/8", flat_country("OLD"));
    b.insert_str("20.0.0.0/8", flat_country("NEW"));
    let db = open(&b)?;
    assert_eq!(
        get(&db, "10.1.2.3")?,
        ("10.0.0.0/8".into(), Some(flat_json("AA")))
    );
    assert_eq!(get(&db, "20.9.9.9")?.1, Some(flat_json("NEW")));
    // Nodes orphaned by the /8 replacement are not written.
    let mut reachable = MmdbBuilder::new(4, "x");
    reachable.insert_str("10.0.0.0/8", flat_country("AA"));
    reachable.insert_str("20.0.0.0/8", flat_country("NEW"));
    assert_eq!(
        db.metadata().node_count,
        open(&reachable)?.metadata().node_count
    );
    Ok(())
}

#[test]
fn gaps_have_no_data() -> TestResult {
    let mut b = MmdbBuilder::new(4, "gaps");
    b.insert_str("1.2.3.0/24", flat_country("DE"));
    let db = open(&b)?;
    assert_eq!(get(&db, "128.0.0.1")?, ("128.0.0.0/1".into(), None));
    assert_eq!(get(&db, "1.2.4.1")?, ("1.2.4.0/22".into(), None));
    assert!(!db.lookup("1.2.2.255".parse()?)?.has_data());
    assert!(db.lookup("1.2.3.0".parse()?)?.has_data());
    assert!(db.lookup("1.2.3.255".parse()?)?.has_data());

    let mut b = MmdbBuilder::new(6, "gaps6");
    b.insert_str("2001:db8::/32", flat_country("FR"));
    let db = open(&b)?;
    assert_eq!(get(&db, "2001:db9::1")?, ("2001:db9::/32".into(), None));
    assert_eq!(get(&db, "1.2.3.4")?.1, None);
    assert_eq!(networks(&db)?, nets(&[("2001:db8::/32", flat_json("FR"))]));
    Ok(())
}

#[test]
fn ipv4_in_ipv6_db_lives_at_ipv4_compatible_prefix_only() -> TestResult {
    let mut b = MmdbBuilder::new(6, "v4in6");
    b.insert_str("1.2.3.0/24", maxmind_country("DE"));
    b.insert(0xC0A8_0000, 16, true, flat_country("LAN"));
    let db = open(&b)?;
    assert_eq!(
        get(&db, "1.2.3.4")?,
        ("1.2.3.0/24".into(), Some(country_json("DE")))
    );
    assert_eq!(
        get(&db, "192.168.44.1")?,
        ("192.168.0.0/16".into(), Some(flat_json("LAN")))
    );
    // The same record, seen as an IPv6 lookup in ::/96.
    assert_eq!(
        get(&db, "::1.2.3.4")?,
        ("::102:300/120".into(), Some(country_json("DE")))
    );
    // No aliases are written.
    assert_eq!(get(&db, "::ffff:1.2.3.4")?.1, None);
    assert_eq!(get(&db, "2002:102:304::1")?.1, None);
    assert_eq!(
        networks(&db)?,
        nets(&[
            ("1.2.3.0/24", country_json("DE")),
            ("192.168.0.0/16", flat_json("LAN")),
        ])
    );
    Ok(())
}

#[test]
fn ipv4_db_lookups_and_ipv6_rejection() -> TestResult {
    let mut b = MmdbBuilder::new(4, "v4only").record_size(24);
    b.insert(0x0808_0800, 24, true, flat_country("US"));
    b.insert_str("203.0.113.0/25", neither_schema());
    let db = open(&b)?;
    assert_eq!(db.metadata().ip_version, 4);
    assert_eq!(
        get(&db, "8.8.8.8")?,
        ("8.8.8.0/24".into(), Some(flat_json("US")))
    );
    assert_eq!(
        get(&db, "203.0.113.127")?,
        (
            "203.0.113.0/25".into(),
            Some(json!({"asn": 64500, "org": "x"}))
        )
    );
    assert_eq!(get(&db, "203.0.113.128")?.1, None);
    assert!(db.lookup("2001:db8::1".parse()?).is_err());
    assert_eq!(
        networks(&db)?,
        nets(&[
            ("8.8.8.0/24", flat_json("US")),
            ("203.0.113.0/25", json!({"asn": 64500, "org": "x"})),
        ])
    );
    Ok(())
}

#[test]
fn mixed_ipv6_db_networks_iteration() -> TestResult {
    let mut b = MmdbBuilder::new(6, "mixed").record_size(32);
    b.insert_str("2001:db8::/32", maxmind_country("FR"));
    b.insert_str("5.6.0.0/16", maxmind_registered_only("NL"));
    b.insert_str("1.2.3.0/24", maxmind_country("DE"));
    b.insert_str("2a02:8000::/17", flat_country("GB"));
    let db = open(&b)?;
    assert_eq!(
        networks(&db)?,
        nets(&[
            ("1.2.3.0/24", country_json("DE")),
            (
                "5.6.0.0/16",
                json!({"registered_country": {"iso_code": "NL"}})
            ),
            ("2001:db8::/32", country_json("FR")),
            ("2a02:8000::/17", flat_json("GB")),
        ])
    );
    Ok(())
}

#[test]
fn metadata_round_trips() -> TestResult {
    let mut b = MmdbBuilder::new(6, "Residency-Test-DB").build_epoch(1_700_000_123);
    b.insert_str("1.2.3.0/24", flat_country("DE"));
    let db = open(&b)?;
    let meta = db.metadata();
    assert_eq!(meta.build_epoch, 1_700_000_123);
    assert_eq!(meta.database_type, "Residency-Test-DB");
    assert_eq!(meta.ip_version, 6);
    assert_eq!(meta.record_size, 28);
    assert_eq!(meta.binary_format_major_version, 2);
    assert_eq!(meta.binary_format_minor_version, 0);
    assert_eq!(meta.languages, vec!["en".to_string()]);
    assert!(!meta.description.is_empty());
    // 96 zero bits, then 1.2.3 = 24 bits: one node per bit above the record.
    assert_eq!(meta.node_count, 96 + 24);

    let mut b = MmdbBuilder::new(4, "defaults");
    b.insert_str("1.2.3.0/24", flat_country("DE"));
    let db = open(&b)?;
    assert_eq!(db.metadata().build_epoch, 1_780_000_000);
    assert_eq!(db.metadata().node_count, 24);
    Ok(())
}

#[test]
fn all_value_types_round_trip() -> TestResult {
    let sizes = [0usize, 1, 28, 29, 30, 284, 285, 286, 65_820, 65_821, 70_000];
    let mut pairs = vec![
        ("t".to_string(), Value::Bool(true)),
        ("f".to_string(), Value::Bool(false)),
        ("d".to_string(), Value::Double(1.5)),
        ("neg".to_string(), Value::Double(-0.25)),
        ("u32_0".to_string(), Value::U32(0)),
        ("u32_300".to_string(), Value::U32(300)),
        ("u32_max".to_string(), Value::U32(u32::MAX)),
        ("u64_0".to_string(), Value::U64(0)),
        ("u64_max".to_string(), Value::U64(u64::MAX)),
        ("unicode".to_string(), str_val("Zürich 東京")),
        (
            "arr".to_string(),
            Value::Array(vec![
                Value::U32(1),
                str_val("two"),
                Value::Array(vec![]),
                Value::Map(vec![]),
                Value::Bool(true),
            ]),
        ),
        (
            "long_arr".to_string(),
            Value::Array((0..300).map(Value::U32).collect()),
        ),
        (
            "big_map".to_string(),
            Value::Map((0..300).map(|i| (format!("k{i}"), Value::U64(i))).collect()),
        ),
    ];
    let mut expected = json!({
        "t": true, "f": false, "d": 1.5, "neg": -0.25,
        "u32_0": 0, "u32_300": 300, "u32_max": u32::MAX,
        "u64_0": 0, "u64_max": u64::MAX,
        "unicode": "Zürich 東京",
        "arr": [1, "two", [], {}, true],
        "long_arr": (0..300).collect::<Vec<u32>>(),
    });
    let mut big_map = serde_json::Map::new();
    for i in 0..300u64 {
        big_map.insert(format!("k{i}"), json!(i));
    }
    expected["big_map"] = Json::Object(big_map);
    for n in sizes {
        let s = "a".repeat(n);
        pairs.push((format!("s{n}"), Value::Str(s.clone())));
        expected[format!("s{n}")] = json!(s);
    }

    for bits in [24, 28, 32] {
        let mut b = MmdbBuilder::new(6, "types").record_size(bits);
        b.insert_str("2001:db8::/32", Value::Map(pairs.clone()));
        b.insert_str("1.0.0.0/8", Value::U64(7));
        b.insert_str("2.0.0.0/8", Value::Array(vec![Value::Double(2.5)]));
        let db = open(&b)?;
        assert_eq!(get(&db, "2001:db8::1")?.1, Some(expected.clone()));
        assert_eq!(get(&db, "1.1.1.1")?.1, Some(json!(7)));
        assert_eq!(get(&db, "2.2.2.2")?.1, Some(json!([2.5])));
    }
    Ok(())
}

#[test]
fn identical_values_are_stored_once() -> TestResult {
    let mut b = MmdbBuilder::new(4, "dedup");
    b.insert_str("1.0.0.0/24", flat_country("US"));
    b.insert_str("2.0.0.0/24", flat_country("US"));
    b.insert_str("3.0.0.0/24", flat_country("CA"));
    let db = open(&b)?;
    let offset = |ip: &str| -> Result<Option<usize>, Box<dyn Error>> {
        Ok(db.lookup(ip.parse()?)?.offset())
    };
    assert_eq!(offset("1.0.0.1")?, offset("2.0.0.1")?);
    assert_ne!(offset("1.0.0.1")?, offset("3.0.0.1")?);
    Ok(())
}

#[test]
fn prefix_zero_and_host_bits() -> TestResult {
    let mut b = MmdbBuilder::new(4, "zero");
    b.insert_str("0.0.0.0/0", flat_country("ZZ"));
    b.insert_str("10.9.8.7/8", flat_country("TEN"));
    let db = open(&b)?;
    assert_eq!(
        get(&db, "200.1.1.1")?,
        ("128.0.0.0/1".into(), Some(flat_json("ZZ")))
    );
    assert_eq!(
        get(&db, "10.250.0.1")?,
        ("10.0.0.0/8".into(), Some(flat_json("TEN")))
    );
    assert_eq!(get(&db, "11.0.0.1")?.1, Some(flat_json("ZZ")));
    Ok(())
}

/// A data section over 2^24 bytes forces pointers that use the high bits of
/// 28- and 32-bit records (the shared nibble for 28).
fn big_data_builder(bits: u16) -> MmdbBuilder {
    let mut b = MmdbBuilder::new(4, "big").record_size(bits);
    b.insert_str("1.0.0.0/8", Value::Str("x".repeat(16_800_000)));
    b.insert_str("2.0.0.0/8", flat_country("JP"));
    b
}

#[test]
fn large_pointers_with_28_and_32_bit_records() -> TestResult {
    for bits in [28, 32] {
        let db = open(&big_data_builder(bits))?;
        let hit = db.lookup("2.3.4.5".parse()?)?;
        assert!(hit.offset().ok_or("no data")? > 1 << 24);
        assert_eq!(get(&db, "2.3.4.5")?.1, Some(flat_json("JP")));
        let big: Option<String> = db.lookup("1.2.3.4".parse()?)?.decode()?;
        assert_eq!(big.map(|s| s.len()), Some(16_800_000));
    }
    Ok(())
}

#[test]
#[should_panic(expected = "does not fit in 24 bits")]
fn large_pointers_overflow_24_bit_records() {
    big_data_builder(24).build();
}

#[test]
#[should_panic(expected = "IPv6 network into an IPv4 database")]
fn ipv6_insert_into_ipv4_db_panics() {
    MmdbBuilder::new(4, "v4").insert_str("2001:db8::/32", flat_country("FR"));
}

#[test]
#[should_panic(expected = "bad prefix length")]
fn bad_cidr_panics() {
    MmdbBuilder::new(6, "v6").insert_str("1.2.3.0/33x", flat_country("FR"));
}
