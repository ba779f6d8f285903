//! The binary on the embedded defaults: cloud addresses placed by their provider's region,
//! anycast ranges `global`, `--no-cloud-ranges`, and `explain`'s line about `global`.

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_residency-proxy"))
}

fn lookup(args: &[&str]) -> Vec<serde_json::Value> {
    let o = bin()
        .arg("lookup")
        .args(args)
        .arg("--json")
        .output()
        .expect("run lookup");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

#[test]
fn lookup_places_cloud_addresses_by_their_providers_region() {
    let ips = [
        "15.129.62.1",
        "121.91.98.1",
        "84.13.128.1",
        "104.44.89.225",
        "104.255.58.238",
        "1.179.52.1",
        "2a06:98c0::1",
    ];
    let got = lookup(&ips);
    let want = [
        ("HK", "not-adequate", "cloud:aws:ap-east-1"),
        ("US", "conditional", "cloud:aws:us-east-1"),
        ("SA", "not-adequate", "cloud:oracle:me-riyadh-1"),
        ("GB", "home", "cloud:azure:uksouth"),
        ("GB", "home", "cloud:aws:eu-west-2"),
        ("global", "conditional", "cloud:aws:GLOBAL"),
        ("global", "conditional", "cloud:cloudflare"),
    ];
    assert_eq!(got.len(), want.len());
    for (g, (j, class, source)) in got.iter().zip(want) {
        assert_eq!(g["jurisdiction"], j, "{g}");
        assert_eq!(g["class"], class, "{g}");
        assert_eq!(g["source"], source, "{g}");
    }
    // Without the embedded cloud ranges, GeoIP decides again: no cloud source.
    for g in lookup(&["--no-cloud-ranges", "15.129.62.1", "1.179.52.1"]) {
        assert_eq!(g["source"], "geoip", "{g}");
        assert_ne!(g["jurisdiction"], "global", "{g}");
    }
}

#[test]
fn explain_says_why_a_global_range_has_no_country() {
    let o = bin()
        .args(["explain", "1.179.52.1"])
        .output()
        .expect("run explain");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("via cloud:aws:GLOBAL"), "{out}");
    assert!(
        out.contains(
            "anycast/edge range of AWS: the serving location cannot be known from the address"
        ),
        "{out}"
    );
    assert!(out.contains("verdict      deny"), "{out}");
}

#[test]
fn a_bad_cloud_key_is_refused_with_its_line() {
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/residency-proxy.toml"
    ))
    .expect("shipped config");
    let dir = tempfile::tempdir().expect("tmp");
    for (extra, want) in [
        ("cloud_dir = \"no-such-dir\"", "jurisdiction.cloud_dir"),
        ("cloud_ranges = \"yes\"", "expected a boolean"),
    ] {
        let text = shipped.replacen("aws_ranges = []", &format!("aws_ranges = []\n{extra}"), 1);
        let line = text.lines().position(|l| l == extra).expect("inserted") + 1;
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, &text).expect("write");
        let o = bin().arg("check").arg(&path).output().expect("run check");
        assert_eq!(o.status.code(), Some(64));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(&format!("bad.toml:{line}")), "{err}");
        assert!(err.contains(want), "{err}");
    }
    let good = dir.path().join("good.toml");
    std::fs::create_dir(dir.path().join("cloud")).expect("dir");
    std::fs::write(
        &good,
        shipped.replacen(
            "aws_ranges = []",
            "aws_ranges = []\ncloud_dir = \"cloud\"\ncloud_ranges = false",
            1,
        ),
    )
    .expect("write");
    let o = bin().arg("check").arg(&good).output().expect("run check");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
