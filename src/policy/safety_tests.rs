//! The safety layer under operator configurations: report mode, deny rules of every matcher
//! kind, allow rules by host, IPv6 spellings of IPv4 rules, and 6to4/Teredo halves. Each row
//! names the reason it must come out with.

use super::tests::{rule, world};
use super::*;
use std::net::IpAddr;

fn policy(rules: Vec<Rule>) -> Policy {
    Policy {
        rules,
        ..Policy::default()
    }
}

fn net(s: &str) -> IpNet {
    s.parse().expect("cidr")
}

struct Ask<'a> {
    listener: &'a str,
    mode: Mode,
    host: &'a str,
    port: u16,
}

const EGRESS: Ask<'static> = Ask {
    listener: "egress",
    mode: Mode::Enforce,
    host: "x.example",
    port: 443,
};

fn decide(p: &Policy, ask: &Ask<'_>, addr: &str) -> Decision {
    let t = world();
    let ip: IpAddr = addr.parse().expect("ip");
    let profile = Profile::load("uk-adequate").expect("built-in profile");
    let subject = Subject {
        listener: ask.listener,
        mode: ask.mode,
        client: "10.9.9.9".parse().expect("ip"),
        host: ask.host,
        port: ask.port,
    };
    p.decide(&profile, &subject, &[(ip, t.lookup(ip))])
}

/// A safety deny: refused, enforced in any mode, nothing to dial, no rule credited.
#[track_caller]
fn assert_safety_deny(d: &Decision, reason: Reason, what: &str) {
    assert_eq!(d.verdict, Verdict::Deny, "{what}: verdict");
    assert!(!d.would_deny, "{what}: report mode must not relax it");
    assert_eq!(d.reason, reason, "{what}: reason");
    assert!(d.vetted.is_empty(), "{what}: nothing may be dialled");
}

/// The three configurations of the issue table, each row with its reason.
#[test]
fn operator_configurations_keep_safety_space_shut() {
    // report-mode listener + {action = "deny", ports = [80]}
    let mut port80 = rule("no-plain-http", Action::Deny);
    port80.ports = vec![80];
    let report80 = Ask {
        mode: Mode::Report,
        port: 80,
        ..EGRESS
    };
    for (addr, reason) in [
        ("169.254.169.254", Reason::Metadata),
        ("fd00:ec2::254", Reason::Metadata),
        ("127.0.0.1", Reason::Internal),
        ("10.1.2.3", Reason::Internal),
        ("0.0.0.0", Reason::Reserved),
        ("203.0.113.9", Reason::Reserved),
    ] {
        let d = decide(&policy(vec![port80.clone()]), &report80, addr);
        assert_safety_deny(&d, reason, &format!("report + deny port 80: {addr}"));
        assert_eq!(
            d.rule, None,
            "{addr}: the safety layer decided, not the rule"
        );
    }

    // {action = "deny", destinations = ["81.2.69.0/24"]}: every IPv6 spelling of the network
    let mut gb = rule("no-81-2-69", Action::Deny);
    gb.destinations = vec![net("81.2.69.0/24")];
    for addr in [
        "81.2.69.142",
        "::ffff:81.2.69.142",
        "64:ff9b::5102:458e",
        "::5102:458e",
    ] {
        let d = decide(&policy(vec![gb.clone()]), &EGRESS, addr);
        assert_eq!(
            (d.verdict, d.reason, d.rule.as_deref()),
            (Verdict::Deny, Reason::RuleDeny, Some("no-81-2-69")),
            "{addr}"
        );
    }
    // ...and the same network's neighbour is still home
    let d = decide(&policy(vec![gb]), &EGRESS, "::ffff:81.2.70.1");
    assert_eq!((d.verdict, d.reason), (Verdict::Allow, Reason::Home));

    // {action = "allow", hosts = ["*.nhs.uk"]}: a name under it resolving to closed space
    let mut nhs = rule("nhs", Action::Allow);
    nhs.hosts = vec![HostPattern::parse("*.nhs.uk").expect("pattern")];
    let ask = Ask {
        host: "evil.nhs.uk",
        ..EGRESS
    };
    for (addr, reason) in [
        ("127.0.0.1", Reason::Internal),
        ("0.0.0.0", Reason::Reserved),
        ("10.0.0.5", Reason::Internal),
        ("::1", Reason::Internal),
        ("::ffff:127.0.0.1", Reason::Internal),
        ("169.254.169.254", Reason::Metadata),
        ("168.63.129.16", Reason::Metadata),
    ] {
        let d = decide(&policy(vec![nhs.clone()]), &ask, addr);
        assert_safety_deny(&d, reason, &format!("allow *.nhs.uk: {addr}"));
    }
    // the rule still allows the public addresses it was written for
    let d = decide(&policy(vec![nhs]), &ask, "8.8.8.8");
    assert_eq!((d.verdict, d.reason), (Verdict::Allow, Reason::RuleAllow));
}

/// Report mode with a deny rule of every matcher kind: never "would deny" on safety space.
#[test]
fn report_mode_deny_rules_of_every_matcher_kind_stay_enforced_on_safety_space() {
    let kinds: Vec<(&str, Rule)> = {
        let mut v = Vec::new();
        let base = rule("r", Action::Deny);
        v.push(("empty", base.clone()));
        v.push((
            "listeners",
            Rule {
                listeners: vec!["egress".into()],
                ..base.clone()
            },
        ));
        v.push((
            "clients",
            Rule {
                clients: vec![net("10.0.0.0/8")],
                ..base.clone()
            },
        ));
        v.push((
            "hosts",
            Rule {
                hosts: vec![HostPattern::parse("x.example").expect("pattern")],
                ..base.clone()
            },
        ));
        v.push((
            "ports",
            Rule {
                ports: vec![443],
                ..base.clone()
            },
        ));
        v.push((
            "classes",
            Rule {
                classes: vec![Class::Internal],
                ..base.clone()
            },
        ));
        v.push((
            "jurisdictions",
            Rule {
                jurisdictions: vec![
                    Jurisdiction::METADATA,
                    Jurisdiction::INTERNAL,
                    Jurisdiction::RESERVED,
                ],
                ..base.clone()
            },
        ));
        v.push((
            "destinations",
            Rule {
                destinations: vec![net("0.0.0.0/0"), net("::/0")],
                ..base.clone()
            },
        ));
        v.push((
            "report-mode rule",
            Rule {
                mode: Some(Mode::Report),
                ..base
            },
        ));
        v
    };
    let report = Ask {
        mode: Mode::Report,
        ..EGRESS
    };
    for (kind, r) in &kinds {
        for (addr, reason) in [
            ("169.254.169.254", Reason::Metadata),
            ("169.254.170.2", Reason::Metadata),
            ("169.254.170.23", Reason::Metadata),
            ("fd00:ec2::23", Reason::Metadata),
            ("100.100.100.200", Reason::Metadata),
            ("10.1.2.3", Reason::Internal),
            ("127.0.0.1", Reason::Internal),
            ("fd12::1", Reason::Internal),
            ("192.0.2.1", Reason::Reserved),
            ("255.255.255.255", Reason::Reserved),
            ("224.0.0.1", Reason::Reserved),
            ("240.1.2.3", Reason::Reserved),
            ("198.18.0.1", Reason::Reserved),
            ("::", Reason::Reserved),
        ] {
            for ask in [&report, &EGRESS] {
                let d = decide(&policy(vec![r.clone()]), ask, addr);
                assert_safety_deny(&d, reason, &format!("deny rule by {kind}: {addr}"));
            }
        }
    }
}

/// What opens safety space, and what never does.
#[test]
fn only_configuration_naming_the_address_space_opens_it() {
    let allow = |f: &dyn Fn(&mut Rule)| {
        let mut r = rule("open", Action::Allow);
        f(&mut r);
        policy(vec![r])
    };
    #[rustfmt::skip]
    let cases: Vec<(&str, Policy, &str, Option<Reason>)> = vec![
        // (what, policy, address, None = allowed by the rule, Some = denied with that reason)
        ("CIDR inside private space", allow(&|r| r.destinations = vec![net("10.0.0.0/8")]), "10.1.2.3", None),
        ("narrower CIDR", allow(&|r| r.destinations = vec![net("10.1.0.0/16")]), "10.1.2.3", None),
        ("CIDR, mapped spelling", allow(&|r| r.destinations = vec![net("10.0.0.0/8")]), "::ffff:10.1.2.3", None),
        ("CIDR wider than the special range", allow(&|r| r.destinations = vec![net("0.0.0.0/0")]), "10.1.2.3", Some(Reason::Internal)),
        ("0.0.0.0/1 + 128.0.0.0/1", allow(&|r| r.destinations = vec![net("0.0.0.0/1"), net("128.0.0.0/1")]), "127.0.0.1", Some(Reason::Internal)),
        ("::/0", allow(&|r| r.destinations = vec![net("::/0")]), "::1", Some(Reason::Internal)),
        ("link-local CIDR, link-local address", allow(&|r| r.destinations = vec![net("169.254.0.0/16")]), "169.254.1.1", None),
        ("link-local CIDR, metadata inside it", allow(&|r| r.destinations = vec![net("169.254.0.0/16")]), "169.254.169.254", Some(Reason::Metadata)),
        ("metadata /32", allow(&|r| r.destinations = vec![net("169.254.169.254/32")]), "169.254.169.254", None),
        ("jurisdiction metadata", allow(&|r| r.jurisdictions = vec![Jurisdiction::METADATA]), "fd00:ec2::254", None),
        ("jurisdiction reserved", allow(&|r| r.jurisdictions = vec![Jurisdiction::RESERVED]), "192.0.2.1", None),
        ("documentation CIDR", allow(&|r| r.destinations = vec![net("192.0.2.0/24")]), "192.0.2.1", None),
        ("jurisdiction internal is not a CIDR", allow(&|r| r.jurisdictions = vec![Jurisdiction::INTERNAL]), "10.1.2.3", Some(Reason::Internal)),
        ("class internal", allow(&|r| r.classes = vec![Class::Internal]), "10.1.2.3", Some(Reason::Internal)),
        ("host exact", allow(&|r| r.hosts = vec![HostPattern::parse("x.example").expect("p")]), "10.1.2.3", Some(Reason::Internal)),
        ("port", allow(&|r| r.ports = vec![443]), "127.0.0.1", Some(Reason::Internal)),
        ("client", allow(&|r| r.clients = vec![net("10.0.0.0/8")]), "10.1.2.3", Some(Reason::Internal)),
        ("metadata jurisdiction does not open reserved", allow(&|r| r.jurisdictions = vec![Jurisdiction::METADATA]), "192.0.2.1", Some(Reason::Reserved)),
        ("rule for another listener", allow(&|r| { r.destinations = vec![net("10.0.0.0/8")]; r.listeners = vec!["inbound".into()]; }), "10.1.2.3", Some(Reason::Internal)),
    ];
    for (what, p, addr, want) in cases {
        let d = decide(&p, &EGRESS, addr);
        match want {
            None => assert_eq!(
                (d.verdict, d.reason, d.rule.as_deref()),
                (Verdict::Allow, Reason::RuleAllow, Some("open")),
                "{what}: {addr}"
            ),
            Some(reason) => assert_safety_deny(&d, reason, what),
        }
    }
}

/// The Gateway VPC: the inbound listener reaches its pool in the private VPC, egress never does.
#[test]
fn a_listener_scoped_cidr_rule_opens_private_space_for_that_listener_only() {
    let mut pool = rule("inbound-pool", Action::Allow);
    pool.listeners = vec!["inbound".into()];
    pool.destinations = vec![net("10.0.0.0/8")];
    let p = policy(vec![pool]);
    let inbound = Ask {
        listener: "inbound",
        ..EGRESS
    };
    let d = decide(&p, &inbound, "10.20.0.5");
    assert_eq!((d.verdict, d.reason), (Verdict::Allow, Reason::RuleAllow));
    assert_eq!(d.vetted.len(), 1);
    assert_safety_deny(
        &decide(&p, &EGRESS, "10.20.0.5"),
        Reason::Internal,
        "egress",
    );
    assert_safety_deny(
        &decide(&p, &inbound, "169.254.169.254"),
        Reason::Metadata,
        "metadata for inbound",
    );

    // internal_allowed opens internal space for every listener, and only internal space.
    let p = Policy {
        internal_allowed: vec![net("10.0.0.0/8"), net("169.254.0.0/16")],
        ..Policy::default()
    };
    let d = decide(&p, &EGRESS, "10.20.0.5");
    assert_eq!(
        (d.verdict, d.reason),
        (Verdict::Allow, Reason::InternalAllowed)
    );
    assert_safety_deny(
        &decide(&p, &EGRESS, "169.254.169.254"),
        Reason::Metadata,
        "internal_allowed never opens metadata",
    );

    // In opened space the rules apply as anywhere: a deny rule first still denies, and in
    // report mode it reports (the operator opened the space).
    let mut deny = rule("no-db", Action::Deny);
    deny.destinations = vec![net("10.20.0.0/16")];
    let p = Policy {
        rules: vec![deny],
        internal_allowed: vec![net("10.0.0.0/8")],
        ..Policy::default()
    };
    let d = decide(&p, &EGRESS, "10.20.0.5");
    assert_eq!((d.verdict, d.reason), (Verdict::Deny, Reason::RuleDeny));
    let report = Ask {
        mode: Mode::Report,
        ..EGRESS
    };
    let d = decide(&p, &report, "10.20.0.5");
    assert_eq!((d.verdict, d.would_deny), (Verdict::Allow, true));
}

/// IPv4 allow rules hold for the IPv6 spellings too (they see the address the table classified).
#[test]
fn ipv4_rules_see_mapped_nat64_and_compatible_spellings() {
    let mut us = rule("partner-us", Action::Allow);
    us.destinations = vec![net("8.8.0.0/16")];
    let p = policy(vec![us]);
    for addr in ["8.8.8.8", "::ffff:8.8.8.8", "64:ff9b::808:808", "::808:808"] {
        let d = decide(&p, &EGRESS, addr);
        assert_eq!(
            (d.verdict, d.reason),
            (Verdict::Allow, Reason::RuleAllow),
            "{addr}"
        );
        assert_eq!(d.vetted.len(), 1);
        assert_eq!(
            d.vetted[0].addr().ip().to_string(),
            addr,
            "dials the resolved spelling"
        );
    }
    // An IPv6 deny rule on the translation prefix still holds for what is inside it.
    let mut nat64 = rule("no-nat64", Action::Deny);
    nat64.destinations = vec![net("64:ff9b::/96")];
    let d = decide(&policy(vec![nat64]), &EGRESS, "64:ff9b::5102:458e");
    assert_eq!((d.verdict, d.reason), (Verdict::Deny, Reason::RuleDeny));
}

/// 6to4 and Teredo: a safety half decides, ahead of not-adequate or unknown, in any mode.
#[test]
fn a_metadata_or_internal_half_decides_a_combined_address() {
    let report = Ask {
        mode: Mode::Report,
        ..EGRESS
    };
    for (what, addr, reason) in [
        // 6to4 router 169.254.169.254; the 6to4 address itself is CN in this table
        (
            "6to4, metadata router",
            "2002:a9fe:a9fe::1",
            Reason::Metadata,
        ),
        ("6to4, loopback router", "2002:7f00:1::1", Reason::Internal),
        // Teredo server 169.254.169.254, client 1.0.1.1 (CN, obfuscated)
        (
            "Teredo, metadata server",
            "2001:0:a9fe:a9fe::feff:fefe",
            Reason::Metadata,
        ),
        // Teredo server 1.0.1.1 (CN), client 169.254.169.254
        (
            "Teredo, metadata client",
            "2001:0:100:101::5601:5601",
            Reason::Metadata,
        ),
        // Teredo server 10.0.0.1, client 192.0.2.1: reserved over internal
        (
            "Teredo, internal and reserved",
            "2001:0:a00:1::3fff:fdfe",
            Reason::Reserved,
        ),
    ] {
        for ask in [&EGRESS, &report] {
            let d = decide(&Policy::default(), ask, addr);
            assert_safety_deny(&d, reason, what);
            assert!(
                d.jurisdiction.is_some_and(|j| j.is_safety()),
                "{what}: the record names the safety jurisdiction"
            );
        }
    }
    // The profile's own classification agrees (the CLI `lookup` and the record use it).
    let t = world();
    let profile = Profile::load("uk-adequate").expect("profile");
    let ip: IpAddr = "2002:a9fe:a9fe::1".parse().expect("ip");
    let (class, hit) = profile.classify(&t.lookup(ip));
    assert_eq!(
        (class, hit.jurisdiction),
        (Class::Internal, Jurisdiction::METADATA)
    );

    // Opening the metadata half is not enough when the other half is not adequate.
    let mut open = rule("open-md", Action::Allow);
    open.destinations = vec![net("169.254.169.254/32")];
    let d = decide(&policy(vec![open]), &EGRESS, "2002:a9fe:a9fe::1");
    assert_eq!((d.verdict, d.reason), (Verdict::Deny, Reason::NotAdequate));
}
