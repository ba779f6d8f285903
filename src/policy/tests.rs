//! Table-driven tests of the decision: defaults, rules, attestations, report mode, and several
//! addresses per destination.

use std::net::IpAddr;
use std::sync::Arc;

use super::*;
use crate::jurisdiction::{JurisdictionTable, Source, TableBuilder};

/// The test world (shared with `safety_tests`): a few countries, the special ranges, and the
/// 6to4 prefix itself as CN, so a 6to4 address has a relay answer of its own.
pub(super) fn world() -> JurisdictionTable {
    let mut b = TableBuilder::with_special_ranges();
    for (cidr, code) in [
        ("81.2.64.0/18", "GB"),
        ("2.0.0.0/8", "FR"),
        ("1.0.1.0/24", "CN"),
        ("8.8.0.0/16", "US"),
        ("200.0.0.0/8", "BR"),
        ("2002::/16", "CN"),
    ] {
        let j = Jurisdiction::from_code(code).expect("code");
        b.add(cidr.parse().expect("cidr"), j, Source::GeoIp, None)
            .expect("add");
    }
    b.build()
}

fn profile() -> Profile {
    Profile::load("uk-adequate").expect("built-in profile")
}

fn subject<'a>(host: &'a str, mode: Mode) -> Subject<'a> {
    Subject {
        listener: "egress",
        mode,
        client: "10.1.2.3".parse().expect("ip"),
        host,
        port: 443,
    }
}

fn decide(policy: &Policy, host: &str, mode: Mode, addrs: &[&str]) -> Decision {
    let t = world();
    let lookups: Vec<(IpAddr, crate::jurisdiction::Lookup)> = addrs
        .iter()
        .map(|a| {
            let ip: IpAddr = a.parse().expect("ip");
            (ip, t.lookup(ip))
        })
        .collect();
    policy.decide(&profile(), &subject(host, mode), &lookups)
}

pub(super) fn rule(id: &str, action: Action) -> Rule {
    Rule {
        id: Arc::from(id),
        listeners: vec![],
        clients: vec![],
        hosts: vec![],
        ports: vec![],
        classes: vec![],
        jurisdictions: vec![],
        destinations: vec![],
        action,
        mode: None,
    }
}

#[test]
fn defaults_follow_the_adequacy_classes() {
    let p = Policy::default();
    #[rustfmt::skip]
    let cases: &[(&str, Verdict, Reason, &str)] = &[
        ("81.2.69.142", Verdict::Allow, Reason::Home, "GB is home"),
        ("2.3.4.5", Verdict::Allow, Reason::Adequate, "FR is in the EEA"),
        ("1.0.1.1", Verdict::Deny, Reason::NotAdequate, "CN is not adequate"),
        ("200.1.1.1", Verdict::Deny, Reason::NotAdequate, "BR is EU-adequate only, not UK"),
        ("8.8.8.8", Verdict::Deny, Reason::NotAttested, "US is conditional: needs an attestation"),
        ("9.9.9.9", Verdict::Deny, Reason::UnknownJurisdiction, "no source knows it: fail closed"),
        ("169.254.169.254", Verdict::Deny, Reason::Metadata, "cloud metadata"),
        ("10.0.0.1", Verdict::Deny, Reason::Internal, "internal space not in internal_allowed"),
        ("192.0.2.1", Verdict::Deny, Reason::Reserved, "documentation space"),
        ("::ffff:1.0.1.1", Verdict::Deny, Reason::NotAdequate, "mapped IPv6 of a CN address"),
    ];
    for (addr, verdict, reason, why) in cases {
        let d = decide(&p, "example.test", Mode::Enforce, &[addr]);
        assert_eq!(d.verdict, *verdict, "{addr}: {why}");
        assert_eq!(d.reason, *reason, "{addr}: {why}");
        assert_eq!(
            d.vetted.len(),
            usize::from(*verdict == Verdict::Allow),
            "{addr}"
        );
    }
}

#[test]
fn only_allowed_addresses_are_vetted_in_resolver_order() {
    let p = Policy::default();
    let d = decide(
        &p,
        "mixed.test",
        Mode::Enforce,
        &["1.0.1.1", "81.2.69.142", "2.3.4.5"],
    );
    assert_eq!(d.verdict, Verdict::Allow);
    let dial: Vec<IpAddr> = d.vetted.iter().map(|v| v.addr().ip()).collect();
    assert_eq!(
        dial,
        vec![
            "81.2.69.142".parse::<IpAddr>().expect("ip"),
            "2.3.4.5".parse().expect("ip")
        ]
    );
    assert!(d.vetted.iter().all(|v| v.addr().port() == 443));
    assert_eq!(d.addrs.len(), 3, "every address is recorded");
    assert_eq!(d.addrs[0].verdict, Verdict::Deny);
    let d = decide(&p, "allcn.test", Mode::Enforce, &["1.0.1.1", "1.0.1.2"]);
    assert_eq!(d.verdict, Verdict::Deny);
    assert!(d.vetted.is_empty());
    assert_eq!(d.jurisdiction.map(|j| j.code()), Some("CN"));
}

#[test]
fn attestations_allow_conditional_hosts_only() {
    let p = Policy {
        attestations: vec![Attestation {
            host: HostPattern::parse("*.dpf.example").expect("pattern"),
            organisation: "Example Inc.".into(),
            basis: "UK Extension to the EU-US DPF".into(),
        }],
        ..Policy::default()
    };
    let d = decide(&p, "api.dpf.example", Mode::Enforce, &["8.8.8.8"]);
    assert_eq!((d.verdict, d.reason), (Verdict::Allow, Reason::Attested));
    let d = decide(&p, "dpf.example", Mode::Enforce, &["8.8.8.8"]);
    assert_eq!(
        d.reason,
        Reason::NotAttested,
        "*.suffix does not match the suffix itself"
    );
    let d = decide(&p, "api.dpf.example", Mode::Enforce, &["1.0.1.1"]);
    assert_eq!(
        d.reason,
        Reason::NotAdequate,
        "an attestation does not make CN adequate"
    );
}

#[test]
fn first_matching_rule_wins() {
    let mut deny = rule("deny-test-hosts", Action::Deny);
    deny.hosts = vec![HostPattern::parse("*.test").expect("pattern")];
    let mut allow = rule("allow-us", Action::Allow);
    allow.jurisdictions = vec![Jurisdiction::from_code("US").expect("US")];
    let p = Policy {
        rules: vec![deny.clone(), allow.clone()],
        ..Policy::default()
    };
    let d = decide(&p, "a.test", Mode::Enforce, &["8.8.8.8"]);
    assert_eq!(
        (d.verdict, d.rule.as_deref()),
        (Verdict::Deny, Some("deny-test-hosts"))
    );
    let d = decide(&p, "a.example", Mode::Enforce, &["8.8.8.8"]);
    assert_eq!(
        (d.verdict, d.rule.as_deref()),
        (Verdict::Allow, Some("allow-us"))
    );
    let p = Policy {
        rules: vec![allow, deny],
        ..Policy::default()
    };
    let d = decide(&p, "a.test", Mode::Enforce, &["8.8.8.8"]);
    assert_eq!(
        (d.verdict, d.rule.as_deref()),
        (Verdict::Allow, Some("allow-us"))
    );
    // No rule matches a GB address: the default applies and no rule is recorded.
    let d = decide(&p, "uk.example", Mode::Enforce, &["81.2.69.142"]);
    assert_eq!((d.reason, d.rule), (Reason::Home, None));
}

#[test]
fn rule_matchers_each_narrow_the_match() {
    let t = world();
    let ip: IpAddr = "8.8.8.8".parse().expect("ip");
    let l = t.lookup(ip);
    let base = Facts {
        listener: "egress",
        client: "10.1.2.3".parse().expect("ip"),
        host: "api.example.org",
        port: 443,
        ip,
        spelled: ip,
        class: Class::Conditional,
        jurisdiction: l.jurisdiction(),
    };
    let mut r = rule("r", Action::Allow);
    assert!(r.matches(&base), "empty matchers match anything");
    r.listeners = vec!["other".into()];
    assert!(!r.matches(&base), "listener");
    r.listeners = vec!["egress".into()];
    r.clients = vec!["10.1.0.0/16".parse().expect("cidr")];
    assert!(r.matches(&base));
    r.clients = vec!["10.2.0.0/16".parse().expect("cidr")];
    assert!(!r.matches(&base), "client CIDR");
    r.clients = vec![];
    r.ports = vec![80];
    assert!(!r.matches(&base), "port");
    r.ports = vec![443];
    r.classes = vec![Class::Adequate];
    assert!(!r.matches(&base), "class");
    r.classes = vec![Class::Conditional];
    r.destinations = vec!["8.8.0.0/16".parse().expect("cidr")];
    assert!(r.matches(&base));
    r.destinations = vec!["8.9.0.0/16".parse().expect("cidr")];
    assert!(!r.matches(&base), "destination CIDR");
}

#[test]
fn host_patterns_match_exact_names_and_proper_suffixes() {
    #[rustfmt::skip]
    let cases: &[(&str, &str, bool)] = &[
        ("example.org", "example.org", true),
        ("example.org", "www.example.org", false),
        ("*.example.org", "www.example.org", true),
        ("*.example.org", "a.b.example.org", true),
        ("*.example.org", "example.org", false),
        ("*.example.org", "badexample.org", false),
        ("*.EXAMPLE.org.", "www.example.org", true),
    ];
    for (pattern, host, want) in cases {
        let p = HostPattern::parse(pattern).expect("pattern");
        assert_eq!(p.matches(host), *want, "{pattern} vs {host}");
    }
    for bad in ["*", "", "*.", "a*.b", "a b", "*.*.x"] {
        assert_eq!(HostPattern::parse(bad), None, "{bad:?}");
    }
}

#[test]
fn report_mode_passes_jurisdiction_denies_but_not_safety_denies() {
    let p = Policy::default();
    let d = decide(&p, "cn.example", Mode::Report, &["1.0.1.1"]);
    assert_eq!(d.verdict, Verdict::Allow);
    assert!(d.would_deny);
    assert_eq!(d.reason, Reason::NotAdequate);
    assert_eq!(d.vetted.len(), 1);
    for addr in ["169.254.169.254", "10.0.0.1", "192.0.2.1"] {
        let d = decide(&p, "x.example", Mode::Report, &[addr]);
        assert_eq!(
            d.verdict,
            Verdict::Deny,
            "{addr} stays denied in report mode"
        );
        assert!(!d.would_deny);
    }
    // A rule can put a single flow in report mode on an enforcing listener.
    let mut r = rule("trial", Action::Deny);
    r.mode = Some(Mode::Report);
    r.hosts = vec![HostPattern::parse("uk.example").expect("pattern")];
    let p = Policy {
        rules: vec![r],
        ..Policy::default()
    };
    let d = decide(&p, "uk.example", Mode::Enforce, &["81.2.69.142"]);
    assert_eq!(
        (d.verdict, d.would_deny, d.mode),
        (Verdict::Allow, true, Mode::Report)
    );
}

#[test]
fn metadata_needs_a_rule_that_names_it() {
    let mut broad = rule("allow-internal", Action::Allow);
    broad.classes = vec![Class::Internal];
    let p = Policy {
        rules: vec![broad],
        ..Policy::default()
    };
    let d = decide(&p, "x", Mode::Enforce, &["169.254.169.254"]);
    assert_eq!(
        d.reason,
        Reason::Metadata,
        "a class-wide allow does not open metadata"
    );
    let d = decide(&p, "x", Mode::Enforce, &["10.0.0.1"]);
    assert_eq!(
        (d.verdict, d.reason),
        (Verdict::Deny, Reason::Internal),
        "nor does it open internal space: only a CIDR does"
    );
    let mut named = rule("allow-metadata", Action::Allow);
    named.jurisdictions = vec![Jurisdiction::METADATA];
    let p = Policy {
        rules: vec![named],
        ..Policy::default()
    };
    let d = decide(&p, "x", Mode::Enforce, &["169.254.169.254"]);
    assert_eq!((d.verdict, d.reason), (Verdict::Allow, Reason::RuleAllow));
}

#[test]
fn internal_and_unknown_defaults_are_configurable() {
    let p = Policy {
        internal_allowed: vec!["10.20.0.0/16".parse().expect("cidr")],
        unknown: Action::Allow,
        ..Policy::default()
    };
    let d = decide(&p, "x", Mode::Enforce, &["10.20.1.1"]);
    assert_eq!(d.reason, Reason::InternalAllowed);
    let d = decide(&p, "x", Mode::Enforce, &["10.21.1.1"]);
    assert_eq!(d.reason, Reason::Internal);
    let d = decide(&p, "x", Mode::Enforce, &["9.9.9.9"]);
    assert_eq!(
        (d.verdict, d.reason),
        (Verdict::Allow, Reason::UnknownAllowed)
    );
}

#[test]
fn profile_classes_come_from_data() {
    let p = profile();
    let class = |c: &str| p.class_of(Jurisdiction::from_code(c).expect("code"));
    #[rustfmt::skip]
    let cases: &[(&str, Class)] = &[
        ("GB", Class::Home), ("FR", Class::Adequate), ("GR", Class::Adequate),
        ("IS", Class::Adequate), ("LI", Class::Adequate), ("NO", Class::Adequate),
        ("AX", Class::Adequate), ("RE", Class::Adequate), ("GI", Class::Adequate),
        ("CH", Class::Adequate), ("IL", Class::Adequate), ("NZ", Class::Adequate),
        ("US", Class::Conditional), ("CA", Class::Conditional), ("JP", Class::Conditional),
        ("KR", Class::Conditional), ("BR", Class::NotAdequate), ("CN", Class::NotAdequate),
        ("GL", Class::NotAdequate), ("MC", Class::NotAdequate),
        ("internal", Class::Internal), ("metadata", Class::Internal), ("unknown", Class::Unknown),
    ];
    for (code, want) in cases {
        assert_eq!(class(code), *want, "{code}");
    }
    let only = Profile::load("uk-only").expect("uk-only");
    assert_eq!(
        only.class_of(Jurisdiction::from_code("GB").expect("GB")),
        Class::Home
    );
    assert_eq!(
        only.class_of(Jurisdiction::from_code("FR").expect("FR")),
        Class::NotAdequate
    );
    let us = p
        .entry(Jurisdiction::from_code("US").expect("US"))
        .expect("US entry");
    assert!(us.legal_basis.contains("2023/1028"), "{}", us.legal_basis);
    assert_eq!(us.in_force, "2023-10-12");
}

#[test]
fn bad_profiles_are_refused_with_line_and_reason() {
    let head = "[profile]\nname = \"t\"\nversion = \"1\"\ndescription = \"d\"\ndefault_class = \"not-adequate\"\n";
    let entry = |code: &str, class: &str| {
        format!(
            "\n[[jurisdiction]]\ncode = \"{code}\"\nclass = \"{class}\"\nscope = \"s\"\nlegal_basis = \"b\"\nin_force = \"2021-01-01\"\nsource = \"u\"\nlast_verified = \"2026-01-01\"\n"
        )
    };
    #[rustfmt::skip]
    let cases: Vec<(String, Option<usize>, &str)> = vec![
        (format!("{head}{}", entry("UK", "adequate")), Some(8), "unknown jurisdiction code 'UK'"),
        (format!("{head}{}", entry("gb", "home")), Some(8), "unknown jurisdiction code 'gb'"),
        (format!("{head}{}", entry("internal", "home")), Some(8), "unknown jurisdiction code"),
        (format!("{head}{}", entry("FR", "super")), Some(9), "unknown variant"),
        (format!("{head}{}{}", entry("FR", "adequate"), entry("FR", "home")), Some(17), "listed twice"),
        (format!("{head}{}", entry("FR", "internal")), Some(8), "class must be"),
        ("[profile]\nname = \"t\"\n".to_string(), Some(1), "missing field"),
    ];
    for (text, line, needle) in cases {
        let e = Profile::parse(&text, "p.toml").expect_err(needle);
        assert_eq!(e.line, line, "{needle}: {e}");
        assert!(e.to_string().contains(needle), "{e}");
        assert!(e.to_string().starts_with("p.toml"), "{e}");
    }
}
