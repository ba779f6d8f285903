//! The residency report on a fixture log built here, every number counted by hand: totals,
//! the headline, denials, report-mode passes, the over-time series, versions; `--since` and
//! `--until`; a corrupt line; the three forms (terminal within 100 columns, JSON, HTML that
//! parses, holds one SVG per chart and names nothing outside itself); the command itself.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::process::Command;

use residency_proxy::audit::{AuditAddr, AuditRecord, Intent};
use residency_proxy::policy::{Mode, Reason, Verdict};
use residency_proxy::report::{self, Aggregator, Bound, ChainStatus, Options, Report};
use serde_json::Value;

/// One resolved address.
fn addr(ip: &str, jurisdiction: &str, class: &str) -> AuditAddr {
    AuditAddr {
        ip: ip.parse().unwrap(),
        jurisdiction: jurisdiction.to_owned().into(),
        class: class.to_owned().into(),
        source: "geoip".into(),
        prefix: format!("{ip}/32"),
    }
}

/// A flow record; `dialed` is an index into `addrs`.
#[allow(clippy::too_many_arguments)]
fn flow(
    ts: &str,
    client: &str,
    host: &str,
    addrs: Vec<AuditAddr>,
    dialed: Option<usize>,
    decision: Verdict,
    reason: Reason,
    (up, down): (u64, u64),
) -> AuditRecord {
    let dialed_ip: Option<IpAddr> = dialed.map(|i| addrs[i].ip);
    AuditRecord {
        ts: ts.into(),
        listener: "egress".into(),
        client_addr: Some(client.parse::<SocketAddr>().unwrap()),
        intent: Intent::Connect,
        dest_host: Some(host.into()),
        dest_port: Some(443),
        dest_addrs: addrs,
        dialed_ip,
        decision,
        mode: Mode::Enforce,
        reason: reason.into(),
        profile: "uk-adequate".into(),
        db_version: "2026-06-01".into(),
        data_versions: "geoip=2026-06-01 aws=1761894521".into(),
        bytes_up: up,
        bytes_down: down,
        status: Some(200),
        ..AuditRecord::default()
    }
}

/// The fixture's lines. On 2026-11-23, nine flows:
///
/// | # | time  | destination              | outcome                      | bytes |
/// |---|-------|--------------------------|------------------------------|-------|
/// | 1 | 10:00 | GB home                  | allow                        | 1000  |
/// | 2 | 11:30 | GB home                  | allow                        | 1000  |
/// | 3 | 12:00 | IE adequate (US listed first, not dialed) | allow       | 50    |
/// | 4 | 12:10 | US conditional           | allow, attested              | 10    |
/// | 5 | 13:00 | CN, upload.example.cn    | deny not-adequate            | 0     |
/// | 6 | 13:05 | CN, upload.example.cn    | deny not-adequate            | 0     |
/// | 7 | 13:10 | metadata                 | deny metadata (IPv6 client)  | 0     |
/// | 8 | 14:00 | nx.example, no address   | deny resolve-failed          | 0     |
/// | 9 | 14:30 | RU, report mode          | allow, would deny (eu-only)  | 40    |
///
/// and one on 2026-11-22 (GB home, 5000 bytes); a `start`, a `continue` and a `checkpoint`
/// line; a blank line; one corrupt line (line 8). Every flow ends with `seq` and `chain`.
fn fixture() -> Vec<String> {
    use Reason::*;
    use Verdict::{Allow, Deny};
    let gb = || vec![addr("81.2.69.142", "GB", "home")];
    let mut would = flow(
        "2026-11-23T14:30:00.000Z",
        "10.0.0.3:4000",
        "mirror.example.ru",
        vec![addr("192.0.2.44", "RU", "not-adequate")],
        Some(0),
        Allow,
        NotAdequate,
        (20, 20),
    );
    would.mode = Mode::Report;
    would.would_deny = true;
    would.rule = Some("eu-only".into());
    let records = vec![
        flow(
            "2026-11-22T23:00:00.000Z",
            "10.0.0.1:4000",
            "old.nhs.uk",
            gb(),
            Some(0),
            Allow,
            Home,
            (1000, 4000),
        ),
        flow(
            "2026-11-23T10:00:00.000Z",
            "10.0.0.1:4000",
            "digital.nhs.uk",
            gb(),
            Some(0),
            Allow,
            Home,
            (100, 900),
        ),
        flow(
            "2026-11-23T11:30:00.000Z",
            "10.0.0.2:4000",
            "digital.nhs.uk",
            gb(),
            Some(0),
            Allow,
            Home,
            (50, 950),
        ),
        flow(
            "2026-11-23T12:00:00.000Z",
            "10.0.0.2:4000",
            "backup.example.ie",
            vec![
                addr("198.51.100.7", "US", "conditional"),
                addr("52.95.240.1", "IE", "adequate"),
            ],
            Some(1),
            Allow,
            Adequate,
            (10, 40),
        ),
        flow(
            "2026-11-23T12:10:00.000Z",
            "10.0.0.2:4000",
            "api.pay.example",
            vec![addr("34.102.0.5", "US", "conditional")],
            Some(0),
            Allow,
            Attested,
            (5, 5),
        ),
        flow(
            "2026-11-23T13:00:00.000Z",
            "10.0.1.7:4000",
            "upload.example.cn",
            vec![addr("203.0.113.9", "CN", "not-adequate")],
            None,
            Deny,
            NotAdequate,
            (0, 0),
        ),
        flow(
            "2026-11-23T13:05:00.000Z",
            "10.0.1.8:4000",
            "upload.example.cn",
            vec![addr("203.0.113.9", "CN", "not-adequate")],
            None,
            Deny,
            NotAdequate,
            (0, 0),
        ),
        flow(
            "2026-11-23T13:10:00.000Z",
            "[2001:db8:1:2::5]:4000",
            "169.254.169.254",
            vec![addr("169.254.169.254", "metadata", "internal")],
            None,
            Deny,
            Metadata,
            (0, 0),
        ),
        flow(
            "2026-11-23T14:00:00.000Z",
            "10.0.0.9:4000",
            "nx.example",
            vec![],
            None,
            Deny,
            ResolveFailed,
            (0, 0),
        ),
        would,
    ];
    let mut lines: Vec<String> = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut l = serde_json::to_string(r).unwrap();
            l.pop();
            format!(r#"{l},"seq":{},"chain":"{:064x}"}}"#, i + 10, i)
        })
        .collect();
    lines.insert(
        0,
        concat!(
            r#"{"kind":"start","ts":"2026-11-23T09:00:00.000Z","version":"0.1.0","#,
            r#""config.digest":"sha256:00","data.versions":"geoip=2026-06-01 aws=1761894521","#,
            r#""profile":"uk-adequate","db.version":"2026-06-01","key.id":null,"seq":1,"chain":"00"}"#
        )
        .to_owned(),
    );
    lines.insert(1, r#"{"kind":"continue","ts":"2026-11-23T09:00:01.000Z","prev.seq":9,"prev.chain":"ab","seq":2,"chain":"01"}"#.to_owned());
    lines.insert(5, String::new());
    lines.insert(
        7,
        r#"{"ts":"2026-11-23T15:00:00.000Z","listener":"#.to_owned(),
    );
    lines.push(r#"{"kind":"checkpoint","ts":"2026-11-23T15:00:00.000Z","seq":20,"chain":"02","signature":"00"}"#.to_owned());
    lines
}

fn run(opts: Options) -> Report {
    let mut a = Aggregator::new(opts);
    a.file("audit.log");
    for l in fixture() {
        a.line(format!("{l}\n").as_bytes());
    }
    a.finish(ChainStatus::NotChecked)
}

fn on_the_23rd() -> Options {
    Options {
        since: Some(Bound::parse("2026-11-23").unwrap()),
        ..Options::default()
    }
}

fn json(r: &Report) -> Value {
    serde_json::from_str(&report::json(r).unwrap()).unwrap()
}

#[test]
fn report_totals_match_the_hand_count() {
    let j = json(&run(on_the_23rd()));
    assert_eq!(j["schema"], "residency-proxy.report/1");
    assert_eq!(j["chain"]["status"], "not-checked");
    assert_eq!(
        j["totals"],
        serde_json::json!({"flows": 9, "allowed": 5, "denied": 4, "would_deny": 1,
            "bytes_up": 185, "bytes_down": 1915, "bytes": 2100})
    );
    assert_eq!(
        j["headline"],
        "95.2 % of bytes stayed in GB; 2.4 % went to IE (adequate); 0.5 % went to US under \
         attestation (hosts api.pay.example); 1.9 % went to RU only because of report mode \
         (enforcement would deny)."
    );
    let rows: Vec<(String, String, u64, u64, u64, u64)> = j["by_jurisdiction"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["jurisdiction"].as_str().unwrap().to_owned(),
                r["class"].as_str().unwrap().to_owned(),
                r["flows"].as_u64().unwrap(),
                r["bytes"].as_u64().unwrap(),
                r["denied"].as_u64().unwrap(),
                r["would_deny"].as_u64().unwrap(),
            )
        })
        .collect();
    let s = |x: &str| x.to_owned();
    assert_eq!(
        rows,
        [
            (s("GB"), s("home"), 2, 2000, 0, 0),
            (s("IE"), s("adequate"), 1, 50, 0, 0),
            (s("RU"), s("not-adequate"), 1, 40, 0, 1),
            (s("US"), s("conditional"), 1, 10, 0, 0),
            (s("CN"), s("not-adequate"), 2, 0, 2, 0),
            (s("metadata"), s("internal"), 1, 0, 1, 0),
            (s("none"), s("none"), 1, 0, 1, 0),
        ]
    );
    let classes: Vec<(&str, u64, u64)> = j["by_class"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["class"].as_str().unwrap(),
                c["flows"].as_u64().unwrap(),
                c["bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        classes,
        [
            ("home", 2, 2000),
            ("adequate", 1, 50),
            ("not-adequate", 3, 40),
            ("conditional", 1, 10),
            ("internal", 1, 0),
            ("none", 1, 0)
        ]
    );
    let d = &j["denied"];
    assert_eq!(d["flows"], 4);
    assert_eq!(
        d["by_reason"],
        serde_json::json!([{"name": "not-adequate", "flows": 2}, {"name": "metadata", "flows": 1},
            {"name": "resolve-failed", "flows": 1}])
    );
    assert_eq!(
        d["by_jurisdiction"],
        serde_json::json!([{"name": "CN", "flows": 2}, {"name": "metadata", "flows": 1},
            {"name": "none", "flows": 1}])
    );
    assert_eq!(
        d["top_destinations"],
        serde_json::json!([
            {"host": "upload.example.cn", "jurisdiction": "CN", "flows": 2, "error": 0},
            {"host": "169.254.169.254", "jurisdiction": "metadata", "flows": 1, "error": 0},
            {"host": "nx.example", "jurisdiction": "none", "flows": 1, "error": 0}])
    );
    assert_eq!(
        d["clients"],
        serde_json::json!([
            {"client": "10.0.1.0/24", "flows": 2, "error": 0},
            {"client": "10.0.0.0/24", "flows": 1, "error": 0},
            {"client": "2001:db8:1::/48", "flows": 1, "error": 0}])
    );
    assert_eq!(d["clients_are"], "networks");
    assert_eq!(d["approximate"], false);
    assert_eq!(
        j["would_deny"],
        serde_json::json!({"flows": 1, "bytes": 40, "approximate": false, "groups": [
            {"host": "mirror.example.ru", "jurisdiction": "RU", "reason": "not-adequate",
             "rule": "eu-only", "flows": 1, "bytes": 40, "error": 0}]})
    );
    let t = &j["over_time"];
    assert_eq!(t["bucket"], "hour");
    let starts: Vec<&str> = t["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["start"].as_str().unwrap())
        .collect();
    assert_eq!(
        starts,
        [
            "2026-11-23T10:00Z",
            "2026-11-23T11:00Z",
            "2026-11-23T12:00Z",
            "2026-11-23T13:00Z",
            "2026-11-23T14:00Z"
        ]
    );
    let flows_per_hour: Vec<u64> = t["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            b["flows"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_u64().unwrap())
                .sum()
        })
        .collect();
    assert_eq!(flows_per_hour, [1, 1, 2, 3, 2]);
    assert_eq!(
        j["versions"],
        serde_json::json!({
            "proxy": [{"value": "0.1.0", "lines": 1}],
            "profile": [{"value": "uk-adequate", "lines": 10}],
            "geoip": [{"value": "2026-06-01", "lines": 10}],
            "data": [{"value": "geoip=2026-06-01 aws=1761894521", "lines": 10}]})
    );
    assert_eq!(
        j["input"],
        serde_json::json!({"lines": 15, "flows": 9, "special": {"checkpoint": 1, "continue": 1, "start": 1},
            "filtered_out": 1, "blank": 1, "unparseable": 1,
            "first_unparseable": {"file": "audit.log", "line": 8,
                "error": j["input"]["first_unparseable"]["error"].clone()}})
    );
    assert_eq!(j["period"]["first"], "2026-11-23T10:00:00Z");
    assert_eq!(j["period"]["last"], "2026-11-23T14:30:00Z");
}

#[test]
fn since_and_until_count_only_the_records_inside() {
    let all = run(Options::default());
    assert_eq!(
        (all.totals.flows, all.totals.bytes, all.input.filtered_out),
        (10, 7100, 0)
    );
    assert!(
        all.headline.starts_with("98.6 % of bytes stayed in GB;"),
        "{}",
        all.headline
    );
    // Until is exclusive: the CN deny at 13:00 is out.
    let morning = run(Options {
        until: Some(Bound::parse("2026-11-23T13:00:00Z").unwrap()),
        ..Options::default()
    });
    assert_eq!((morning.totals.flows, morning.totals.denied), (5, 0));
    // Special lines after the bound are left out too.
    assert_eq!(morning.input.special.get("checkpoint"), None);
    let window = run(Options {
        since: Some(Bound::parse("2026-11-23T13:00:00+00:00").unwrap()),
        until: Some(Bound::parse("2026-11-23T15:00:00.000+01:00").unwrap()),
        ..Options::default()
    });
    assert_eq!((window.totals.flows, window.totals.denied), (3, 3));
    assert_eq!(
        window.period.since.as_deref(),
        Some("2026-11-23T13:00:00+00:00")
    );
    assert!(Bound::parse("next tuesday").is_err());
}

#[test]
fn a_corrupt_line_is_counted_and_its_position_kept() {
    let r = run(on_the_23rd());
    assert_eq!(r.input.unparseable, 1);
    let p = r.input.first_unparseable.clone().unwrap();
    assert_eq!((p.file.as_str(), p.line), ("audit.log", 8));
    assert!(!p.error.is_empty());
    let mut a = Aggregator::new(Options::default());
    for junk in [
        &b"\xff\xfe"[..],
        b"null",
        b"{}",
        br#"{"kind":7}"#,
        b"x".repeat(10_000).as_slice(),
    ] {
        a.line(junk);
    }
    let r = a.finish(ChainStatus::NotChecked);
    assert_eq!((r.input.unparseable, r.input.flows), (5, 0));
    assert_eq!(r.headline, "No flows were recorded in this period.");
}

#[test]
fn clients_are_named_by_address_only_when_asked() {
    let r = run(Options {
        clients: true,
        ..on_the_23rd()
    });
    let clients: Vec<&str> = r.denied.clients.iter().map(|c| c.client.as_str()).collect();
    assert_eq!(
        clients,
        ["10.0.0.9", "10.0.1.7", "10.0.1.8", "2001:db8:1:2::5"]
    );
    assert_eq!(r.denied.clients_are, "addresses");
}

#[test]
fn terminal_form_fits_100_columns_and_carries_the_numbers() {
    let text = report::terminal(&run(on_the_23rd()));
    for l in text.lines() {
        assert!(
            l.chars().count() <= 100,
            "{} columns: {l}",
            l.chars().count()
        );
    }
    assert!(!text.contains('\u{1b}'), "no colour codes");
    // Phrases may wrap.
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        text.lines()
            .nth(1)
            .unwrap()
            .starts_with("Chain: not checked")
    );
    for want in [
        "95.2 % of bytes stayed in GB",
        "9 flows: 5 allowed (1 only because of report mode), 4 denied; 2.10 kB (185 B up, 1.92 kB down).",
        "Denied: 4 flows",
        "upload.example.cn",
        "10.0.1.0/24",
        "mirror.example.ru",
        "Flows over time (per hour), by class",
        "2026-11-23T13:00Z",
        "Profile: uk-adequate (10 lines)",
        "1 unparseable (first: audit.log line 8:",
    ] {
        assert!(flat.contains(want), "missing {want:?} in\n{text}");
    }
    let broken = run(on_the_23rd());
    let broken = Report {
        chain: ChainStatus::Broken {
            text: "line 7 was edited".into(),
        },
        ..broken
    };
    assert!(report::terminal(&broken).contains("Chain: BROKEN: line 7 was edited"));
}

#[test]
fn html_is_one_self_contained_page_with_one_svg_per_chart() {
    let page = report::html(&run(on_the_23rd())).unwrap();
    let doc = scraper::Html::parse_document(&page);
    assert!(doc.errors.is_empty(), "HTML parse errors: {:?}", doc.errors);
    let sel = |s: &str| scraper::Selector::parse(s).unwrap();
    let figures: Vec<_> = doc.select(&sel("figure")).collect();
    assert_eq!(
        figures.len(),
        4,
        "bytes by jurisdiction, flows and bytes over time, denied"
    );
    for f in &figures {
        assert_eq!(f.select(&sel("svg")).count(), 1);
        assert_eq!(f.inner_html().matches("<svg").count(), 1);
    }
    assert_eq!(page.matches("<svg").count(), 4);
    for outside in [
        "http:", "https:", "src=", "<link", "<script", "url(", "@import",
    ] {
        assert!(!page.contains(outside), "the page names {outside}");
    }
    let text: String = doc.root_element().text().collect();
    for want in [
        "Audit chain: not checked",
        "95.2 % of bytes stayed in GB",
        "upload.example.cn",
        "eu-only",
        "@media print",
    ] {
        assert!(
            text.contains(want) || page.contains(want),
            "missing {want:?}"
        );
    }
    // Chart text is SVG text, and the denied chart names its reasons.
    let denied_chart = figures[3].inner_html();
    assert!(denied_chart.contains("<text") && denied_chart.contains("resolve-failed"));
    // Names from the log are escaped.
    let mut a = Aggregator::new(Options::default());
    let mut evil = flow(
        "2026-11-23T10:00:00.000Z",
        "10.0.0.1:1",
        "<script>x</script>",
        vec![],
        None,
        Verdict::Deny,
        Reason::ResolveFailed,
        (0, 0),
    );
    evil.rule = None;
    a.line(serde_json::to_string(&evil).unwrap().as_bytes());
    let page = report::html(&a.finish(ChainStatus::NotChecked)).unwrap();
    assert!(!page.contains("<script>") && page.contains("&lt;script&gt;"));
}

#[test]
fn an_empty_log_still_renders_every_form() {
    let r = Aggregator::new(Options::default()).finish(ChainStatus::NotChecked);
    assert_eq!(report::html(&r).unwrap().matches("<svg").count(), 4);
    assert!(report::terminal(&r).contains("No flows were recorded"));
    assert_eq!(json(&r)["totals"]["flows"], 0);
}

#[test]
fn the_report_command_reads_files_and_prints_json() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let mut f = std::fs::File::create(&log).unwrap();
    for l in fixture() {
        writeln!(f, "{l}").unwrap();
    }
    drop(f);
    let html = dir.path().join("report.html");
    let out = Command::new(env!("CARGO_BIN_EXE_residency-proxy"))
        .args(["report", "--json", "--since", "2026-11-23", "--html"])
        .arg(&html)
        .arg(&log)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["totals"]["bytes"], 2100);
    assert_eq!(j["input"]["first_unparseable"]["line"], 8);
    assert!(std::fs::read_to_string(&html).unwrap().contains("<svg"));

    let out = Command::new(env!("CARGO_BIN_EXE_residency-proxy"))
        .args(["report", "--since", "soon"])
        .arg(&log)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a time"));
    let out = Command::new(env!("CARGO_BIN_EXE_residency-proxy"))
        .args(["report"])
        .arg(dir.path().join("missing.log"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}
