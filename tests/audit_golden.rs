//! The audit format, pinned: a record with every field set serialises, byte for byte, to the
//! committed line below, both as JSON and as the line the file writer appends (there followed
//! by `seq` and `chain`, after the writer's `start` line). A renamed key,
//! a reordered field or a changed spelling of a verdict, mode, intent, reason or side fails
//! here before it reaches anyone reading the log.

use std::time::Duration;

use residency_proxy::audit::{
    self, AuditAddr, AuditRecord, AuditTarget, ClosedBy, Intent, Outcome,
};
use residency_proxy::error::Side;
use residency_proxy::evidence::chain;
use residency_proxy::label::Label;
use residency_proxy::policy::{Mode, Reason, Verdict};

/// The committed line (without its newline).
const GOLDEN: &str = concat!(
    r#"{"ts":"2026-11-23T11:00:00.123Z","listener":"egress","client.addr":"[2001:db8::7]:40000","#,
    r#""intent":"connect","dest.host":"api.example.com","dest.port":443,"#,
    r#""dest.claimed":"api.example.com","dest.verified":true,"dest.addrs":["#,
    r#"{"ip":"::ffff:198.51.100.7","jurisdiction":"US","class":"not-adequate","source":"geoip","prefix":"198.51.100.0/24"},"#,
    r#"{"ip":"64:ff9b::cb00:7109","jurisdiction":"DE","class":"adequate","source":"rir","prefix":"203.0.113.0/24"}],"#,
    r#""dialed.ip":"64:ff9b::cb00:7109","decision":"deny","mode":"report","would_deny":true,"#,
    r#""reason":"not-adequate","rule":"eu-only","profile":"gdpr","db.version":"2026-11-01","#,
    r#""data.versions":"geoip=2026-11-01 aws=1761894521 azure=392 cloudflare=c0ffee","#,
    r#""bytes.up":10,"bytes.down":20,"duration_ms":12.5,"status":403,"error.side":"upstream","#,
    r#""error":"upstream api.example.com:443 failed: connection reset","closed_by":"reload"}"#
);

fn full() -> AuditRecord {
    AuditRecord {
        ts: "2026-11-23T11:00:00.123Z".into(),
        listener: "egress".into(),
        client_addr: Some("[2001:db8::7]:40000".parse().unwrap()),
        intent: Intent::Connect,
        dest_host: Some("api.example.com".into()),
        dest_port: Some(443),
        dest_claimed: Some("api.example.com".into()),
        dest_verified: Some(true),
        dest_addrs: vec![
            AuditAddr {
                // IPv4-mapped: decided on the IPv4 address inside.
                ip: "::ffff:198.51.100.7".parse().unwrap(),
                jurisdiction: "US".into(),
                class: "not-adequate".into(),
                source: "geoip".into(),
                prefix: "198.51.100.0/24".into(),
            },
            AuditAddr {
                // NAT64 (RFC 6052 well-known prefix) embedding 203.0.113.9.
                ip: "64:ff9b::203.0.113.9".parse().unwrap(),
                jurisdiction: "DE".into(),
                class: "adequate".into(),
                source: "rir".into(),
                prefix: "203.0.113.0/24".into(),
            },
        ],
        dialed_ip: Some("64:ff9b::203.0.113.9".parse().unwrap()),
        decision: Verdict::Deny,
        mode: Mode::Report,
        would_deny: true,
        reason: Reason::NotAdequate.into(),
        rule: Some("eu-only".into()),
        profile: "gdpr".into(),
        db_version: "2026-11-01".into(),
        data_versions: "geoip=2026-11-01 aws=1761894521 azure=392 cloudflare=c0ffee".into(),
        bytes_up: 10,
        bytes_down: 20,
        duration_ms: 12.5,
        status: Some(403),
        error_side: Some(Side::Upstream),
        error: Some("upstream api.example.com:443 failed: connection reset".into()),
        closed_by: Some(ClosedBy::Reload),
    }
}

#[test]
fn a_fully_populated_record_serialises_to_the_golden_line() {
    let got = serde_json::to_string(&full()).expect("serialise");
    assert_eq!(got, GOLDEN);
}

#[tokio::test]
async fn the_file_writer_appends_the_golden_line_sealed_after_its_start_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("audit.log");
    let (sink, writer) = audit::spawn(
        AuditTarget::File(path.clone()),
        4,
        Duration::from_millis(20),
    )
    .expect("spawn the writer");
    sink.record(full()).await;
    writer.shutdown().await.expect("flush");
    let text = std::fs::read_to_string(&path).expect("read the audit file");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(text.ends_with('\n'));

    // The start line: `ts`, then `kind` and the start keys in this order, then seq and chain.
    let start = lines[0];
    let (ts, rest) = start
        .strip_prefix(r#"{"ts":""#)
        .and_then(|s| s.split_once('"'))
        .expect("starts with ts");
    assert_eq!(ts.len(), "2026-11-23T11:00:00.123Z".len(), "{start}");
    let version = env!("CARGO_PKG_VERSION");
    let head = format!(
        r#","kind":"start","version":"{version}","config.digest":null,"data.versions":"","#
    ) + r#""profile":"","db.version":"","key.id":null,"seq":0,"chain":""#;
    assert!(rest.starts_with(&head), "{start}");
    let (canonical, link) = chain::split(start.as_bytes()).expect("sealed");
    assert_eq!(chain::expected(&chain::GENESIS, canonical), link);

    // The record: the golden line, then `seq` and `chain`, linked to the start line.
    let record = lines[1];
    let golden_head = &GOLDEN[..GOLDEN.len() - 1];
    let expected_head = format!(r#"{golden_head},"seq":1"#);
    let (canonical, carried) = chain::split(record.as_bytes()).expect("sealed");
    assert_eq!(std::str::from_utf8(canonical).unwrap(), expected_head);
    assert_eq!(chain::expected(&link, canonical), carried);
    assert_eq!(
        record,
        format!(
            r#"{expected_head},"chain":"{}"}}"#,
            String::from_utf8(carried.to_vec()).unwrap()
        )
    );
    // And it still reads back as the record (seq and chain are not record fields).
    let back: AuditRecord = serde_json::from_str(record).expect("deserialise");
    assert_eq!(back, full());
}

#[test]
fn the_golden_line_reads_back_as_the_record() {
    let back: AuditRecord = serde_json::from_str(GOLDEN).expect("deserialise");
    assert_eq!(back, full());
}

#[test]
fn every_label_of_a_record_round_trips_through_its_line() {
    let mut rec = full();
    let mut lines = std::collections::HashSet::new();
    for reason in Outcome::all() {
        rec.reason = reason;
        let line = serde_json::to_string(&rec).expect("serialise");
        let expected = format!(r#""reason":"{}","#, reason.as_str());
        assert!(line.contains(&expected), "{line}");
        assert_eq!(
            serde_json::from_str::<AuditRecord>(&line).ok(),
            Some(rec.clone())
        );
        assert!(
            lines.insert(line),
            "{reason:?} is written like another outcome"
        );
    }
    for intent in Intent::all() {
        rec.intent = intent;
        let line = serde_json::to_string(&rec).expect("serialise");
        assert_eq!(
            serde_json::from_str::<AuditRecord>(&line).ok(),
            Some(rec.clone())
        );
    }
    for side in Side::all().into_iter().map(Some).chain([None]) {
        rec.error_side = side;
        let line = serde_json::to_string(&rec).expect("serialise");
        assert_eq!(
            serde_json::from_str::<AuditRecord>(&line).ok(),
            Some(rec.clone())
        );
    }
    for (decision, mode) in Verdict::all().into_iter().zip(Mode::all()) {
        rec.decision = decision;
        rec.mode = mode;
        let line = serde_json::to_string(&rec).expect("serialise");
        assert_eq!(
            serde_json::from_str::<AuditRecord>(&line).ok(),
            Some(rec.clone())
        );
    }
}

#[test]
fn a_line_with_an_unknown_label_is_refused() {
    let bad = GOLDEN.replace(r#""reason":"not-adequate""#, r#""reason":"not adequate""#);
    assert_ne!(bad, GOLDEN);
    assert!(serde_json::from_str::<AuditRecord>(&bad).is_err());
}
