//! Cloud ranges: every feed format from small fixtures, the region tables against the embedded
//! data, precedence, Local Zones and the `global` jurisdiction.

use super::*;
use crate::jurisdiction::{JurisdictionTable, Source};

fn net(s: &str) -> IpNet {
    s.parse().expect("fixture CIDR")
}

fn code(c: &str) -> Jurisdiction {
    Jurisdiction::from_code(c).expect("fixture code")
}

const AWS: &str = r#"{"syncToken":"1761894521","createDate":"2025-10-31-07-08-41",
 "prefixes":[
  {"ip_prefix":"3.8.0.0/14","region":"eu-west-2","service":"EC2","network_border_group":"eu-west-2"},
  {"ip_prefix":"15.220.0.0/19","region":"us-east-1","service":"EC2","network_border_group":"us-east-1-bue-1"},
  {"ip_prefix":"15.220.32.0/19","region":"us-east-1","service":"EC2","network_border_group":"us-east-1-xyz-9"},
  {"ip_prefix":"1.179.52.0/22","region":"GLOBAL","service":"ROUTE53","network_border_group":"GLOBAL"}],
 "ipv6_prefixes":[
  {"ipv6_prefix":"2a05:d01c::/36","region":"eu-west-2","service":"EC2","network_border_group":"eu-west-2"}]}"#;

const AZURE: &str = r#"{"changeNumber":412,"cloud":"Public","values":[
 {"name":"AzureCloud","id":"AzureCloud","properties":{"changeNumber":9,"region":"","regionId":0,
   "platform":"Azure","systemService":"","addressPrefixes":["104.44.88.0/21","20.0.0.0/24"],"networkFeatures":null}},
 {"name":"AzureCloud.uksouth","id":"AzureCloud.uksouth","properties":{"changeNumber":3,"region":"uksouth",
   "regionId":27,"platform":"Azure","systemService":"","addressPrefixes":["104.44.89.224/27","2603:1020:700::/48"]}},
 {"name":"AzureFrontDoor.Frontend","id":"AzureFrontDoor.Frontend","properties":{"changeNumber":1,"region":"",
   "platform":"Azure","systemService":"AzureFrontDoor","addressPrefixes":["13.107.246.0/24","104.44.89.224/28"]}},
 {"name":"AzureCloud.westeurope","id":"AzureCloud.westeurope","properties":{"region":"westeurope",
   "addressPrefixes":["20.0.0.0/25","20.0.0.128/25"]}}]}"#;

const GCP: &str = r#"{"syncToken":"1761000000000","creationTime":"2025-10-20T22:40:00",
 "prefixes":[{"ipv4Prefix":"34.35.0.0/16","service":"Google Cloud","scope":"africa-south1"},
  {"ipv4Prefix":"34.54.0.0/16","service":"Google Cloud","scope":"global"},
  {"ipv6Prefix":"2600:1900:8000::/44","service":"Google Cloud","scope":"europe-west2"}]}"#;

const ORACLE: &str = r#"{"last_updated_timestamp":"2026-10-01T10:00:00.000000","regions":[
 {"region":"me-riyadh-1","cidrs":[{"cidr":"84.13.128.0/18","tags":["OCI"]}]},
 {"region":"eu-jovanovac-1","cidrs":[{"cidr":"158.178.160.0/20","tags":["OCI"]},{"cidr":"2603:c028::/32","tags":["OCI"]}]}]}"#;

const GEOFEED: &str = "# DigitalOcean geofeed\n\
5.101.96.0/21,NL,NL-NH,Amsterdam,1098 XH\n\
2a03:b0c0:2::/48,GB,GB-SLG,London,\n\
45.55.0.0/19,US,,,\n";

const CLOUDFLARE: &str = r#"{"result":{"ipv4_cidrs":["104.16.0.0/13","172.64.0.0/13"],
 "ipv6_cidrs":["2a06:98c0::/29"],"etag":"38f79d050aa027e3be3865e495dcc9bc"},
 "success":true,"errors":[],"messages":[]}"#;

fn feed(p: Provider, text: &str) -> Feed {
    parse_feed(p, text, "fixture").expect("fixture feed parses")
}

fn table_of(feeds: &[(Provider, &str)]) -> JurisdictionTable {
    let mut b = TableBuilder::new();
    for (p, text) in feeds {
        add_feed(
            &feed(*p, text),
            &p.regions().expect("table"),
            "fixture",
            &mut b,
        );
    }
    b.build()
}

fn answer(t: &JurisdictionTable, ip: &str) -> (String, &'static str) {
    let l = t.lookup(ip.parse().expect("ip"));
    (l.jurisdiction().code().to_string(), l.source_name())
}

#[test]
fn every_format_parses_with_its_version_token() {
    let cases = [
        (Provider::Aws, AWS, 5, "1761894521"),
        (Provider::Azure, AZURE, 8, "412"),
        (Provider::Gcp, GCP, 3, "1761000000000"),
        (Provider::Oracle, ORACLE, 3, "2026-10-01T10:00:00.000000"),
        (Provider::DigitalOcean, GEOFEED, 3, ""),
        (
            Provider::Cloudflare,
            CLOUDFLARE,
            3,
            "38f79d050aa027e3be3865e495dcc9bc",
        ),
    ];
    for (p, text, n, version) in cases {
        let f = feed(p, text);
        assert_eq!(f.provider, p);
        assert_eq!(f.ranges.len(), n, "{p:?}");
        if version.is_empty() {
            assert!(f.version.starts_with("fnv1a64:"), "{p:?}: {}", f.version);
        } else {
            assert_eq!(f.version, version, "{p:?}");
        }
    }
    let geo = feed(Provider::DigitalOcean, GEOFEED);
    assert_eq!(
        geo.ranges[2].region.as_deref(),
        Some("US"),
        "no subdivision: the country"
    );
    assert_eq!(feed(Provider::Aws, AWS).date, Some(1_761_894_521));
}

#[test]
fn every_format_refuses_a_truncated_or_foreign_document() {
    for (p, text) in [
        (Provider::Aws, AWS),
        (Provider::Azure, AZURE),
        (Provider::Gcp, GCP),
        (Provider::Oracle, ORACLE),
        (Provider::Cloudflare, CLOUDFLARE),
    ] {
        let cut = &text[..text.len() / 2];
        let e = parse_feed(p, cut, "cut.json").expect_err("truncated");
        assert!(e.to_string().starts_with("cut.json:"), "{e}");
        assert!(
            parse_feed(p, "{}", "x.json").is_err(),
            "{p:?}: empty object"
        );
        assert!(parse_feed(p, GEOFEED, "x.json").is_err(), "{p:?}: a CSV");
    }
    assert!(parse_feed(Provider::DigitalOcean, "", "g.csv").is_err());
    let e = parse_feed(Provider::DigitalOcean, "5.101.96.0/33,NL,,,\n", "g.csv").expect_err("bad");
    assert_eq!(e.line, Some(1));
}

#[test]
fn ranges_are_placed_by_the_providers_region() {
    let t = table_of(&[
        (Provider::Aws, AWS),
        (Provider::Azure, AZURE),
        (Provider::Gcp, GCP),
        (Provider::Oracle, ORACLE),
        (Provider::DigitalOcean, GEOFEED),
        (Provider::Cloudflare, CLOUDFLARE),
    ]);
    let cases = [
        ("3.8.1.1", "GB", "cloud:aws:eu-west-2"),
        ("2a05:d01c::1", "GB", "cloud:aws:eu-west-2"),
        ("104.44.89.225", "GB", "cloud:azure:uksouth"),
        ("2603:1020:700::1", "GB", "cloud:azure:uksouth"),
        ("20.0.0.1", "NL", "cloud:azure:westeurope"),
        ("34.35.1.1", "ZA", "cloud:gcp:africa-south1"),
        ("2600:1900:8000::1", "GB", "cloud:gcp:europe-west2"),
        ("84.13.128.1", "SA", "cloud:oracle:me-riyadh-1"),
        ("158.178.160.1", "RS", "cloud:oracle:eu-jovanovac-1"),
        ("5.101.96.1", "NL", "cloud:digitalocean:NL-NH"),
        ("2a03:b0c0:2::1", "GB", "cloud:digitalocean:GB-SLG"),
        ("45.55.1.1", "US", "cloud:digitalocean:US"),
    ];
    for (ip, j, src) in cases {
        assert_eq!(answer(&t, ip), (j.to_string(), src), "{ip}");
    }
}

#[test]
fn regionless_and_anycast_ranges_are_global() {
    let t = table_of(&[
        (Provider::Aws, AWS),
        (Provider::Azure, AZURE),
        (Provider::Gcp, GCP),
        (Provider::Cloudflare, CLOUDFLARE),
    ]);
    let cases = [
        ("1.179.52.1", "cloud:aws:GLOBAL"),
        ("34.54.1.1", "cloud:gcp:global"),
        ("104.44.88.1", "cloud:azure"),
        ("13.107.246.1", "cloud:azure"),
        ("104.16.0.1", "cloud:cloudflare"),
        ("2a06:98c0::1", "cloud:cloudflare"),
    ];
    for (ip, src) in cases {
        assert_eq!(answer(&t, ip), ("global".to_string(), src), "{ip}");
    }
}

#[test]
fn a_regionless_azure_range_that_a_regional_tag_holds_is_not_global() {
    let mut f = feed(Provider::Azure, AZURE);
    f.normalise();
    let regionless: Vec<String> = f
        .ranges
        .iter()
        .filter(|r| r.region.is_none())
        .map(|r| r.net.to_string())
        .collect();
    // 104.44.89.224/28 (Front Door) lies inside uksouth's /27; 20.0.0.0/24 is covered by the two
    // westeurope /25s together. The AzureCloud /21 covers more than uksouth's /27: it stays.
    assert_eq!(regionless, vec!["13.107.246.0/24", "104.44.88.0/21"]);
    let t = table_of(&[(Provider::Azure, AZURE)]);
    assert_eq!(answer(&t, "104.44.89.230").1, "cloud:azure:uksouth");
    assert_eq!(answer(&t, "20.0.0.200").1, "cloud:azure:westeurope");
}

#[test]
fn local_zones_are_placed_by_border_group_and_unlisted_ones_are_unknown() {
    let t = table_of(&[(Provider::Aws, AWS)]);
    assert_eq!(
        answer(&t, "15.220.1.1"),
        ("AR".to_string(), "cloud:aws:us-east-1-bue-1"),
        "Buenos Aires Local Zone, not its parent us-east-1"
    );
    assert_eq!(
        answer(&t, "15.220.33.1"),
        ("unknown".to_string(), "cloud:aws:us-east-1-xyz-9"),
        "an unlisted zone is unknown, never the parent region's country"
    );
    let mut b = TableBuilder::new();
    let info = add_feed(
        &feed(Provider::Aws, AWS),
        &Provider::Aws.regions().expect("table"),
        "fixture",
        &mut b,
    );
    assert_eq!(info.unmapped_regions, vec!["us-east-1-xyz-9".to_string()]);
    assert_eq!(info.prefixes, 5);
}

#[test]
fn precedence_override_then_cloud_then_geoip_and_global_never_takes_a_country() {
    let mut b = TableBuilder::with_special_ranges();
    for (cidr, c) in [
        ("3.8.0.0/16", "US"),
        ("1.179.52.0/24", "GB"),
        ("2a06:98c0::/32", "GB"),
        ("10.0.0.0/8", "GB"),
    ] {
        b.add(net(cidr), code(c), Source::GeoIp, None).expect("geo");
    }
    b.add(
        net("3.8.7.0/24"),
        code("FR"),
        Source::Override,
        Some("partner"),
    )
    .expect("override");
    for (p, text) in [(Provider::Aws, AWS), (Provider::Cloudflare, CLOUDFLARE)] {
        add_feed(
            &feed(p, text),
            &p.regions().expect("table"),
            "fixture",
            &mut b,
        );
    }
    let extra = Feed {
        provider: Provider::Aws,
        version: "t".into(),
        date: None,
        ranges: vec![CloudRange {
            net: net("10.1.0.0/16"),
            region: Some("eu-west-2".into()),
        }],
    };
    add_feed(
        &extra,
        &Provider::Aws.regions().expect("table"),
        "fixture",
        &mut b,
    );
    let t = b.build();
    assert_eq!(answer(&t, "3.8.7.1"), ("FR".to_string(), "override"));
    assert_eq!(
        answer(&t, "3.8.8.1"),
        ("GB".to_string(), "cloud:aws:eu-west-2")
    );
    // GeoIP's more specific /24 and /32 never give a global range a country.
    assert_eq!(
        answer(&t, "1.179.52.1"),
        ("global".to_string(), "cloud:aws:GLOBAL")
    );
    assert_eq!(
        answer(&t, "2a06:98c0::1"),
        ("global".to_string(), "cloud:cloudflare")
    );
    assert_eq!(answer(&t, "10.1.0.1"), ("internal".to_string(), "special"));
}

/// The region tables cover every region of the embedded data: a region added to the snapshot
/// without a table entry fails here (and would be `unknown` at run time).
#[test]
fn region_tables_cover_every_region_of_the_embedded_data() {
    let feeds = embedded().expect("the embedded snapshot parses");
    let mut missing = Vec::new();
    let mut seen: HashSet<Provider> = HashSet::new();
    for f in &feeds {
        seen.insert(f.provider);
        let regions = f.provider.regions().expect("shipped table parses");
        let names: HashSet<&str> = f
            .ranges
            .iter()
            .filter_map(|r| r.region.as_deref())
            .collect();
        for n in names {
            if !regions.contains(n) {
                missing.push(format!("{}:{n}", f.provider.name()));
            }
        }
    }
    missing.sort();
    assert!(
        missing.is_empty(),
        "regions without a table entry: {missing:?}"
    );
    assert_eq!(
        seen.len(),
        Provider::ALL.len(),
        "every provider has an embedded section"
    );
}

#[test]
fn embedded_snapshot_holds_the_bar_addresses() {
    let mut b = TableBuilder::with_special_ranges();
    let infos = load(true, None, &mut b).expect("embedded");
    assert_eq!(infos.len(), Provider::ALL.len());
    assert!(
        infos.iter().all(|i| i.unmapped_regions.is_empty()),
        "{infos:?}"
    );
    let t = b.build();
    for (ip, j, src) in [
        ("15.129.62.1", "HK", "cloud:aws:ap-east-1"),
        ("121.91.98.1", "US", "cloud:aws:us-east-1"),
        ("84.13.128.1", "SA", "cloud:oracle:me-riyadh-1"),
        ("104.44.89.225", "GB", "cloud:azure:uksouth"),
        ("104.255.58.238", "GB", "cloud:aws:eu-west-2"),
        ("1.179.52.1", "global", "cloud:aws:GLOBAL"),
        ("2a06:98c0::1", "global", "cloud:cloudflare"),
    ] {
        assert_eq!(answer(&t, ip), (j.to_string(), src), "{ip}");
    }
    let mut off = TableBuilder::with_special_ranges();
    assert!(load(false, None, &mut off).expect("off").is_empty());
}

#[test]
fn a_cloud_dir_file_replaces_that_providers_embedded_section() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("aws.json"), AWS).expect("write");
    let mut b = TableBuilder::with_special_ranges();
    let infos = load(true, Some(dir.path()), &mut b).expect("load");
    let aws: Vec<&CloudInfo> = infos
        .iter()
        .filter(|i| i.provider == Provider::Aws)
        .collect();
    assert_eq!(aws.len(), 1);
    assert_eq!(aws[0].version, "1761894521");
    assert!(aws[0].origin.ends_with("aws.json"), "{}", aws[0].origin);
    let t = b.build();
    // AWS now comes from the file only: an embedded-only AWS range falls to the other sources.
    assert_eq!(answer(&t, "15.220.1.1").1, "cloud:aws:us-east-1-bue-1");
    assert_ne!(answer(&t, "15.129.62.1").1, "cloud:aws:ap-east-1");
    // Other providers keep their embedded data.
    assert_eq!(answer(&t, "84.13.128.1").1, "cloud:oracle:me-riyadh-1");
    std::fs::write(dir.path().join("gcp.json"), "{").expect("write");
    let mut b = TableBuilder::new();
    let e = load(true, Some(dir.path()), &mut b).expect_err("broken file refused");
    assert!(e.to_string().contains("gcp.json"), "{e}");
}

#[test]
fn validation_refuses_small_and_shrunk_feeds_unless_forced() {
    let v = Validation {
        min_prefixes: Some(3),
        ..Validation::default()
    };
    assert!(validate(Provider::Aws, AWS, "u", None, &v).is_ok());
    let small = Validation {
        min_prefixes: Some(6),
        ..v
    };
    assert!(matches!(
        validate(Provider::Aws, AWS, "u", None, &small),
        Err(RefusedFeed::TooSmall { got: 5, min: 6 })
    ));
    let mut big = feed(Provider::Aws, AWS);
    big.ranges = big.ranges.iter().cycle().take(50).cloned().collect();
    let e = validate(Provider::Aws, AWS, "u", Some(&big), &v).expect_err("90% shrink");
    assert!(e.to_string().contains("shrink of 90%"), "{e}");
    let forced = Validation { force: true, ..v };
    assert!(validate(Provider::Aws, AWS, "u", Some(&big), &forced).is_ok());
}

#[test]
fn snapshot_format_errors_name_the_line() {
    let e = parse_snapshot("1.2.3.0/24\n", "s.txt").expect_err("no section");
    assert_eq!(e.line, Some(1));
    let e = parse_snapshot("@nope v 2026-01-01\n", "s.txt").expect_err("provider");
    assert!(e.reason.contains("unknown provider"), "{e}");
    let f = parse_snapshot(
        "@aws v 2026-10-26\n=-\n1.2.3.0/24\n=eu-west-2\n3.8.0.0/14\n",
        "s",
    )
    .expect("ok");
    assert_eq!(f[0].date, parse_date("2026-10-26"));
    assert_eq!(parse_date("1970-01-02"), Some(86_400));
    assert_eq!(f[0].ranges[0].region, None);
    assert_eq!(f[0].ranges[1].region.as_deref(), Some("eu-west-2"));
}

#[test]
fn atomic_write_replaces_the_whole_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("aws.json");
    write_atomically(&path, b"old").expect("write");
    write_atomically(&path, b"new data").expect("replace");
    assert_eq!(std::fs::read(&path).expect("read"), b"new data");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left.len(), 1, "no temporary file left: {left:?}");
}
