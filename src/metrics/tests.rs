use super::*;
use crate::audit::AuditAddr;

fn record(jurisdiction: &str, class: &str) -> AuditRecord {
    AuditRecord {
        listener: "egress".into(),
        intent: Intent::Connect,
        dest_addrs: vec![AuditAddr {
            ip: "192.0.2.1".parse().expect("ip"),
            jurisdiction: jurisdiction.to_owned().into(),
            class: class.to_owned().into(),
            source: "geoip".into(),
            prefix: "192.0.2.0/24".into(),
        }],
        status: Some(200),
        bytes_up: 10,
        bytes_down: 20,
        ..AuditRecord::default()
    }
}

#[test]
fn a_country_outside_the_profile_is_labelled_other() {
    let m = Metrics::new();
    let profile = Profile::load("uk-adequate").expect("profile");
    m.set_profile(&profile);
    m.observe(&record("GB", "home"));
    m.observe(&record("ZZ", "unknown"));
    m.observe(&record("metadata", "internal"));
    let text = m.render(&DataState::default(), AuditCounts::default());
    assert!(text.contains("jurisdiction=\"GB\""), "{text}");
    assert!(text.contains("jurisdiction=\"other\""), "{text}");
    assert!(text.contains("jurisdiction=\"metadata\""), "{text}");
    assert!(!text.contains("jurisdiction=\"ZZ\""), "{text}");
    assert!(text.contains("residency_proxy_tunnel_bytes_total{direction=\"down\"} 60"));
}

#[test]
fn audit_counters_follow_the_writer_and_never_go_back() {
    let m = Metrics::new();
    let counts = |written| AuditCounts {
        written,
        overflowed: 1,
        dropped: 0,
    };
    let _ = m.render(&DataState::default(), counts(5));
    let text = m.render(&DataState::default(), counts(7));
    assert!(
        text.contains("residency_proxy_audit_records_written_total 7"),
        "{text}"
    );
    assert!(text.contains("residency_proxy_audit_records_overflowed_total 1"));
}

#[test]
fn every_flow_is_counted_under_its_own_labels_however_many_label_sets_alternate() {
    // More label sets than the kept handles, seen in an order that keeps replacing them:
    // each is counted exactly as many times as it was observed.
    let m = Metrics::new();
    let sets = 3 * FLOW_CACHE;
    for round in 0..4 {
        for i in 0..sets {
            if (i + round) % 3 == 0 {
                continue;
            }
            let mut rec = record("GB", "home");
            rec.listener = format!("l{i}");
            rec.status = Some(if i % 2 == 0 { 200 } else { 404 });
            m.observe(&rec);
        }
    }
    let text = m.render(&DataState::default(), AuditCounts::default());
    for i in 0..sets {
        let times = (0..4).filter(|round| (i + round) % 3 != 0).count();
        let class = if i % 2 == 0 { "2xx" } else { "4xx" };
        let requests = format!(
            "residency_proxy_requests_total{{intent=\"connect\",listener=\"l{i}\",status_class=\"{class}\"}} {times}"
        );
        assert!(text.contains(&requests), "{requests}\n{text}");
        let durations = format!(
            "residency_proxy_request_duration_seconds_count{{intent=\"connect\",listener=\"l{i}\"}} {times}"
        );
        assert!(text.contains(&durations), "{durations}");
    }
    let decisions: u64 = text
        .lines()
        .filter(|l| l.starts_with("residency_proxy_decisions_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    let observed = (0..4)
        .map(|round| (0..sets).filter(|i| (i + round) % 3 != 0).count() as u64)
        .sum::<u64>();
    assert_eq!(decisions, observed);
}

#[test]
fn status_classes() {
    assert_eq!(status_class(Some(204)), "2xx");
    assert_eq!(status_class(Some(403)), "4xx");
    assert_eq!(status_class(None), "none");
    assert_eq!(status_class(Some(99)), "none");
}
