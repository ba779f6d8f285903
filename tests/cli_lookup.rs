//! The `lookup` command on the embedded database, and its refusals of bad input.

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_residency-proxy"))
}

fn lines(out: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

#[test]
fn lookup_bar_addresses_on_the_embedded_database() {
    let out = bin()
        .args([
            "lookup",
            "8.8.8.8",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "169.254.169.254",
            "100.64.1.1",
            "81.2.69.142",
            "--json",
        ])
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Vec<(String, String, String)> = lines(&out.stdout)
        .iter()
        .map(|v| {
            for key in ["address", "jurisdiction", "class", "source", "prefix"] {
                assert!(v.get(key).is_some(), "missing {key} in {v}");
            }
            (
                v["jurisdiction"].as_str().unwrap_or_default().to_string(),
                v["class"].as_str().unwrap_or_default().to_string(),
                v["source"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let want = [
        ("US", "conditional", "geoip"),
        ("US", "conditional", "geoip"),
        ("US", "conditional", "geoip"),
        ("metadata", "internal", "special"),
        ("internal", "internal", "special"),
        ("GB", "home", "geoip"),
    ];
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert_eq!((g.0.as_str(), g.1.as_str(), g.2.as_str()), w);
    }
}

#[test]
fn uk_only_profile_makes_the_eea_not_adequate() {
    let out = bin()
        .args(["lookup", "81.2.69.142", "--json", "--profile", "uk-only"])
        .output()
        .expect("runs");
    assert_eq!(lines(&out.stdout)[0]["class"], "home");
    let out = bin()
        .args(["lookup", "::ffff:8.8.8.8", "--json", "--profile", "uk-only"])
        .output()
        .expect("runs");
    assert_eq!(lines(&out.stdout)[0]["class"], "not-adequate");
}

#[test]
fn version_shows_attribution_and_build_date() {
    let out = bin().arg("--version").output().expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("IP Geolocation by DB-IP (https://db-ip.com), CC BY 4.0"),
        "{text}"
    );
    assert!(text.contains("built 2026-06-01"), "{text}");
}

/// Run with bad input: exit 64 and one clear line on stderr naming the file.
fn refused(args: &[&str], needle: &str) {
    let out = bin().args(args).output().expect("runs");
    assert_eq!(out.status.code(), Some(64), "{args:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains(needle), "{err} should contain {needle}");
    assert!(out.stdout.is_empty());
}

#[test]
fn bad_data_files_exit_64_with_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = |name: &str, body: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, body).expect("write");
        p.to_string_lossy().into_owned()
    };
    let junk = path("junk.mmdb", b"not a maxmind database at all");
    refused(
        &["lookup", "1.1.1.1", "--geoip", &junk],
        "junk.mmdb: not a usable MaxMind DB",
    );
    let half = &residency_proxy::jurisdiction::geoip::EMBEDDED[..1_000_000];
    let trunc = path("trunc.mmdb", half);
    refused(&["lookup", "1.1.1.1", "--geoip", &trunc], "trunc.mmdb");
    let ov = path(
        "o.csv",
        b"# ours\n10.1.0.0/16, GB, dc\n10.2.0.0/16, UK, typo\n",
    );
    refused(
        &["lookup", "1.1.1.1", "--overrides", &ov],
        "o.csv:3: unknown jurisdiction 'UK'",
    );
    let prof = path(
        "p.toml",
        b"[profile]\nname = \"x\"\nversion = \"1\"\ndescription = \"d\"\ndefault_class = \"not-adequate\"\n\n[[jurisdiction]]\ncode = \"EL\"\nclass = \"adequate\"\nscope = \"full\"\nlegal_basis = \"b\"\nin_force = \"2021-01-01\"\nsource = \"s\"\nlast_verified = \"2026-01-01\"\n",
    );
    refused(
        &["lookup", "1.1.1.1", "--profile", &prof],
        "p.toml:8: unknown jurisdiction code 'EL'",
    );
    refused(
        &["lookup", "1.1.1.1", "--profile", "no-such"],
        "no such profile",
    );
}
