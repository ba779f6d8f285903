//! Stage 5 of the pipeline: may this client send data there?
//!
//! Pure: no I/O, no async, no logging. [`Policy::decide`] takes the subject (listener, client,
//! host, port) and the lookup of every resolved address, and returns a [`Decision`]. A deny is a
//! decision, not an error. Only an allowed decision yields [`VettedAddr`]s, the one type the
//! upstream connector accepts, so "dial only what was vetted" is checked by the compiler.
//!
//! Per address, in this order (see [`Policy::decide_hit`]):
//! 1. the safety layer: `metadata`, `reserved` and `internal` space is denied, always enforced
//!    (report mode never relaxes it), unless configuration opens that space by naming it:
//!    `internal_allowed` or an allow rule whose destination CIDRs cover the address (and lie in
//!    the special range) for internal space; an allow rule whose destination CIDRs or
//!    jurisdictions name it for `metadata` and `reserved`;
//! 2. the rules, in order, first match wins;
//! 3. the defaults: `home` and `adequate` allowed; `conditional` allowed only for a host on the
//!    attestation list; `not-adequate` denied; `unknown` denied unless configured otherwise.
//!
//! Rules compare the address the table classified (the IPv4 address inside an IPv4-mapped,
//! NAT64 or IPv4-compatible address), so an IPv4 rule holds for every IPv6 spelling of it. A
//! 6to4 or Teredo address is decided on each of its two answers, and the worse outcome wins.

pub mod profile;
pub(crate) mod rules;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;

use crate::jurisdiction::{Hit, Jurisdiction, Lookup};
use crate::label::{Label, label_traits, labels};
pub use profile::{Class, Profile};
pub use rules::{Action, Attestation, Facts, HostPattern, Mode, Rule};

labels! {
    /// Why a decision came out as it did: a closed set, used in audit records and metric labels.
    pub enum Reason {
        /// Home jurisdiction.
        Home => "home",
        /// Adequate jurisdiction.
        Adequate => "adequate",
        /// Conditional jurisdiction, host on the attestation list.
        Attested => "attested",
        /// Internal address inside `internal_allowed`.
        InternalAllowed => "internal-allowed",
        /// Unknown jurisdiction allowed by `unknown = "allow"`.
        UnknownAllowed => "unknown-allowed",
        /// A rule allowed it.
        RuleAllow => "rule-allow",
        /// A rule denied it.
        RuleDeny => "rule-deny",
        /// Jurisdiction not adequate.
        NotAdequate => "not-adequate",
        /// Conditional jurisdiction, host not attested.
        NotAttested => "conditional-not-attested",
        /// No source could place the address.
        UnknownJurisdiction => "unknown-jurisdiction",
        /// Cloud metadata endpoint.
        Metadata => "metadata",
        /// Reserved, documentation, multicast or similar space.
        Reserved => "reserved",
        /// Internal address outside `internal_allowed`.
        Internal => "internal-not-allowed",
        /// The client is not in the listener's allowed CIDRs.
        ClientNotAllowed => "client-not-allowed",
        /// The destination port is not in the listener's allowed ports.
        PortNotAllowed => "port-not-allowed",
        /// The destination name did not resolve.
        ResolveFailed => "resolve-failed",
    }
}

impl Reason {
    /// Safety denies stay enforced in report mode: they guard against SSRF and open-proxy use,
    /// not against a jurisdiction.
    pub fn always_enforced(self) -> bool {
        matches!(
            self,
            Reason::Metadata
                | Reason::Reserved
                | Reason::Internal
                | Reason::ClientNotAllowed
                | Reason::PortNotAllowed
        )
    }

    /// Whether this is the reason of an allow (the default or rule that let the flow through).
    /// A report-mode pass keeps the reason of the deny it would have been.
    pub fn allows(self) -> bool {
        match self {
            Reason::Home
            | Reason::Adequate
            | Reason::Attested
            | Reason::InternalAllowed
            | Reason::UnknownAllowed
            | Reason::RuleAllow => true,
            Reason::RuleDeny
            | Reason::NotAdequate
            | Reason::NotAttested
            | Reason::UnknownJurisdiction
            | Reason::Metadata
            | Reason::Reserved
            | Reason::Internal
            | Reason::ClientNotAllowed
            | Reason::PortNotAllowed
            | Reason::ResolveFailed => false,
        }
    }
}

labels! {
    /// Allow or deny. A flow is denied until something allows it, so that is the default.
    #[derive(Default)]
    pub enum Verdict {
        /// The flow may go.
        Allow => "allow",
        /// The flow is refused.
        #[default]
        Deny => "deny",
    }
}

// `Mode` is declared with the rules (configuration parses it); as a label it is one more set.
impl Label for Mode {
    fn all() -> Vec<Self> {
        // A new mode does not compile until it is listed here.
        let _every_mode = |m: Mode| match m {
            Mode::Enforce | Mode::Report => (),
        };
        vec![Mode::Enforce, Mode::Report]
    }

    fn as_str(self) -> &'static str {
        Mode::as_str(self)
    }
}

label_traits!(Mode);

/// An address that passed policy. Only this module can make one; the connector takes nothing
/// else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VettedAddr(SocketAddr);

impl VettedAddr {
    /// The socket address to dial.
    pub fn addr(&self) -> SocketAddr {
        self.0
    }

    /// An address taken as vetted, for unit tests of what consumes them.
    #[cfg(test)]
    pub(crate) fn for_test(addr: SocketAddr) -> VettedAddr {
        VettedAddr(addr)
    }
}

/// Who asks for what.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// Listener name.
    pub listener: &'a str,
    /// Listener mode.
    pub mode: Mode,
    /// Client address.
    pub client: IpAddr,
    /// Normalised destination host (name or IP literal text).
    pub host: &'a str,
    /// Destination port.
    pub port: u16,
}

/// The decision for one resolved address.
#[derive(Debug, Clone)]
pub struct AddrDecision {
    /// The address.
    pub ip: IpAddr,
    /// Where it is.
    pub lookup: Lookup,
    /// Its class under the profile (for 6to4/Teredo, the stricter answer).
    pub class: Class,
    /// The answer that decided the class.
    pub decided_by: Hit,
    /// Allowed for dialling (after report mode).
    pub verdict: Verdict,
    /// The verdict before report mode was applied.
    pub would_deny: bool,
    /// Why.
    pub reason: Reason,
    /// Rule id, when a rule matched.
    pub rule: Option<Arc<str>>,
    /// Mode that applied.
    pub mode: Mode,
    /// Attesting organisation, for `attested`.
    pub attestation: Option<usize>,
}

/// The decision for a request or tunnel.
#[derive(Debug, Clone)]
pub struct Decision {
    /// Allow if at least one address may be dialled.
    pub verdict: Verdict,
    /// Mode of the deciding address.
    pub mode: Mode,
    /// Some address was denied but passed because of report mode.
    pub would_deny: bool,
    /// Reason of the deciding address (the first allowed one, else the first denied one).
    pub reason: Reason,
    /// Rule of the deciding address.
    pub rule: Option<Arc<str>>,
    /// Jurisdiction of the deciding address.
    pub jurisdiction: Option<Jurisdiction>,
    /// Every address, in resolver order.
    pub addrs: Vec<AddrDecision>,
    /// The addresses that may be dialled, in order.
    pub vetted: Vec<VettedAddr>,
}

impl Decision {
    /// A decision made before any address was looked up (client, port, resolution).
    pub fn early(reason: Reason, mode: Mode) -> Decision {
        Decision {
            verdict: Verdict::Deny,
            mode,
            would_deny: false,
            reason,
            rule: None,
            jurisdiction: None,
            addrs: Vec::new(),
            vetted: Vec::new(),
        }
    }
}

/// The compiled policy.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Ordered rules.
    pub rules: Vec<Rule>,
    /// Conditional-country recipients.
    pub attestations: Vec<Attestation>,
    /// Internal CIDRs that may be reached.
    pub internal_allowed: Vec<IpNet>,
    /// Default action for an `unknown` jurisdiction (deny: fail closed).
    pub unknown: Action,
}

impl Policy {
    /// Decide for every address of the destination.
    pub fn decide(
        &self,
        profile: &Profile,
        subject: &Subject<'_>,
        lookups: &[(IpAddr, Lookup)],
    ) -> Decision {
        let addrs: Vec<AddrDecision> = lookups
            .iter()
            .map(|(ip, l)| self.decide_addr(profile, subject, *ip, l))
            .collect();
        // Addresses that truly passed come first; report-mode passes (would_deny) after them,
        // each group in resolver order.
        let vetted: Vec<VettedAddr> = addrs
            .iter()
            .filter(|a| a.verdict == Verdict::Allow && !a.would_deny)
            .chain(
                addrs
                    .iter()
                    .filter(|a| a.verdict == Verdict::Allow && a.would_deny),
            )
            .map(|a| VettedAddr(SocketAddr::new(a.ip, subject.port)))
            .collect();
        let deciding = addrs
            .iter()
            .find(|a| a.verdict == Verdict::Allow)
            .or_else(|| addrs.first());
        let Some(d) = deciding else {
            return Decision::early(Reason::ResolveFailed, subject.mode);
        };
        Decision {
            verdict: if vetted.is_empty() {
                Verdict::Deny
            } else {
                Verdict::Allow
            },
            mode: d.mode,
            would_deny: addrs.iter().any(|a| a.would_deny),
            reason: d.reason,
            rule: d.rule.clone(),
            jurisdiction: Some(d.decided_by.jurisdiction),
            vetted,
            addrs,
        }
    }

    /// Decide for one address: every answer it carries (the primary one and, for 6to4 and
    /// Teredo, the relay) is decided on its own, and the worst outcome decides the address (an
    /// enforced deny over a report-mode pass over an allow; between equals, a safety
    /// jurisdiction, then the stricter class).
    fn decide_addr(
        &self,
        profile: &Profile,
        s: &Subject<'_>,
        ip: IpAddr,
        lookup: &Lookup,
    ) -> AddrDecision {
        let primary = lookup.hit();
        let mut d = self.decide_hit(profile, s, ip, lookup, primary);
        if let Some(relay) = lookup.relay() {
            let r = self.decide_hit(profile, s, ip, lookup, relay);
            let worse = r.severity().cmp(&d.severity()).then_with(|| {
                if Profile::decides_over((r.class, &r.decided_by), (d.class, &d.decided_by)) {
                    std::cmp::Ordering::Greater
                } else {
                    std::cmp::Ordering::Less
                }
            });
            if worse == std::cmp::Ordering::Greater {
                d = r;
            }
        }
        d
    }

    /// Decide for one answer about `ip`.
    ///
    /// 1. The safety layer: an answer in `metadata`, `reserved` or `internal` space is denied,
    ///    always enforced, unless configuration opens that space by naming it
    ///    (`internal_allowed` for internal space; an allow rule that matches and
    ///    [opens](Rule::opens) it).
    /// 2. The rules, first match wins (in unopened-by-`internal_allowed` safety space, only
    ///    deny rules and the allow rules that open it take part).
    /// 3. The defaults of the answer's class.
    fn decide_hit(
        &self,
        profile: &Profile,
        s: &Subject<'_>,
        ip: IpAddr,
        lookup: &Lookup,
        hit: Hit,
    ) -> AddrDecision {
        let class = profile.class_of(hit.jurisdiction);
        let j = hit.jurisdiction;
        let facts = Facts {
            listener: s.listener,
            client: s.client,
            host: s.host,
            port: s.port,
            ip: hit.addr,
            spelled: ip,
            class,
            jurisdiction: j,
        };
        let safety = j.is_safety();
        let opened_for_all = j == Jurisdiction::INTERNAL
            && self.internal_allowed.iter().any(|n| n.contains(&hit.addr));
        let opened_by_rule = || {
            self.rules
                .iter()
                .any(|r| r.opens(&hit) && r.matches(&facts))
        };
        let mut out = AddrDecision {
            ip,
            lookup: *lookup,
            class,
            decided_by: hit,
            verdict: Verdict::Deny,
            would_deny: false,
            reason: Reason::Internal,
            rule: None,
            mode: s.mode,
            attestation: None,
        };
        if safety && !opened_for_all && !opened_by_rule() {
            // Closed safety space: whatever a rule says, and in any mode.
            out.reason = safety_reason(j);
            return out;
        }
        let matched = self.rules.iter().find(|r| {
            r.matches(&facts)
                && (!safety || opened_for_all || r.action == Action::Deny || r.opens(&hit))
        });
        let (action, reason) = if let Some(r) = matched {
            out.mode = r.mode.unwrap_or(s.mode);
            out.rule = Some(r.id.clone());
            match r.action {
                Action::Allow => (Action::Allow, Reason::RuleAllow),
                Action::Deny => (Action::Deny, Reason::RuleDeny),
            }
        } else {
            match class {
                Class::Home => (Action::Allow, Reason::Home),
                Class::Adequate => (Action::Allow, Reason::Adequate),
                Class::Conditional => {
                    out.attestation = self
                        .attestations
                        .iter()
                        .position(|a| a.host.matches(s.host));
                    if out.attestation.is_some() {
                        (Action::Allow, Reason::Attested)
                    } else {
                        (Action::Deny, Reason::NotAttested)
                    }
                }
                Class::NotAdequate => (Action::Deny, Reason::NotAdequate),
                Class::Unknown => match self.unknown {
                    Action::Allow => (Action::Allow, Reason::UnknownAllowed),
                    Action::Deny => (Action::Deny, Reason::UnknownJurisdiction),
                },
                // Reached only when `internal_allowed` opened the space and no rule matched;
                // a safety answer that is not internal space cannot get here (its opening rule
                // matches).
                Class::Internal if opened_for_all => (Action::Allow, Reason::InternalAllowed),
                Class::Internal => (Action::Deny, safety_reason(j)),
            }
        };
        let denied = action == Action::Deny;
        let reported = denied && out.mode == Mode::Report && !reason.always_enforced();
        out.verdict = if denied && !reported {
            Verdict::Deny
        } else {
            Verdict::Allow
        };
        out.would_deny = reported;
        out.reason = reason;
        out
    }
}

/// The reason a closed safety jurisdiction gives.
fn safety_reason(j: Jurisdiction) -> Reason {
    match j {
        Jurisdiction::METADATA => Reason::Metadata,
        Jurisdiction::RESERVED => Reason::Reserved,
        _ => Reason::Internal,
    }
}

impl AddrDecision {
    /// How bad the outcome is: an enforced deny (2), a report-mode pass (1), an allow (0).
    fn severity(&self) -> u8 {
        match (self.verdict, self.would_deny) {
            (Verdict::Deny, _) => 2,
            (Verdict::Allow, true) => 1,
            (Verdict::Allow, false) => 0,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;

#[cfg(test)]
mod safety_tests;
