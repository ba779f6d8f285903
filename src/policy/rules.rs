//! The rule model: ordered rules, first match wins, each with an id for the audit record.

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use super::Class;
use crate::jurisdiction::{Hit, Jurisdiction};

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Action {
    /// Let the flow through.
    Allow,
    /// Refuse it (the default: fail closed).
    #[default]
    Deny,
}

impl Action {
    /// Label for config, logs and audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
        }
    }
}

/// Whether a deny is enforced or only recorded (`would_deny`) while the flow passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Denies are enforced.
    #[default]
    Enforce,
    /// Denies are recorded as `would_deny` and the flow passes (shadow mode for rolling out
    /// rules). Safety denies (metadata, reserved, internal space, client and port checks) are
    /// enforced in report mode too.
    Report,
}

impl Mode {
    /// Label for config, logs and audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Report => "report",
        }
    }
}

/// A destination host pattern: an exact name, or `*.suffix` (any name below `suffix`, not
/// `suffix` itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// Exactly this normalised name (or IP literal text).
    Exact(String),
    /// Any name ending in `.suffix`.
    Suffix(String),
}

impl HostPattern {
    /// Parse `name` or `*.suffix` (lower-cased, one trailing dot removed). `None` if malformed.
    pub fn parse(text: &str) -> Option<HostPattern> {
        let t = text.trim().trim_end_matches('.').to_ascii_lowercase();
        if let Some(suffix) = t.strip_prefix("*.") {
            let ok = !suffix.is_empty() && !suffix.contains('*') && !suffix.starts_with('.');
            return ok.then(|| HostPattern::Suffix(suffix.to_string()));
        }
        let ok = !t.is_empty() && !t.contains('*') && !t.contains(' ') && !t.contains('/');
        ok.then_some(HostPattern::Exact(t))
    }

    /// Does the normalised host `host` match?
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h == host,
            HostPattern::Suffix(s) => {
                host.len() > s.len() + 1
                    && host.ends_with(s.as_str())
                    && host.as_bytes().get(host.len() - s.len() - 1) == Some(&b'.')
            }
        }
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Suffix(s) => write!(f, "*.{s}"),
        }
    }
}

/// One policy rule. Empty matcher lists match anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Id recorded in the audit record.
    pub id: Arc<str>,
    /// Listener names.
    pub listeners: Vec<String>,
    /// Client CIDRs.
    pub clients: Vec<IpNet>,
    /// Destination host patterns.
    pub hosts: Vec<HostPattern>,
    /// Destination ports.
    pub ports: Vec<u16>,
    /// Jurisdiction classes under the active profile.
    pub classes: Vec<Class>,
    /// Jurisdictions (ISO codes or `internal`, `metadata`, `reserved`, `unknown`).
    pub jurisdictions: Vec<Jurisdiction>,
    /// Destination address CIDRs.
    pub destinations: Vec<IpNet>,
    /// What to do on a match.
    pub action: Action,
    /// Overrides the listener's mode when set.
    pub mode: Option<Mode>,
}

/// Everything a rule can match on, for one answer about one resolved address.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// Listener name.
    pub listener: &'a str,
    /// Client address.
    pub client: IpAddr,
    /// Normalised destination host.
    pub host: &'a str,
    /// Destination port.
    pub port: u16,
    /// The address the table classified: the resolved address, or the IPv4 address embedded
    /// in it (IPv4-mapped, NAT64, IPv4-compatible, 6to4, Teredo), or a relay (the 6to4 address,
    /// the Teredo server). Destination CIDRs are compared with this address, so an IPv4 rule
    /// holds for every IPv6 spelling of it.
    pub ip: IpAddr,
    /// The address as resolved (differs from `ip` for the IPv6 spellings above). A deny rule's
    /// destination CIDRs also match it.
    pub spelled: IpAddr,
    /// Its class.
    pub class: Class,
    /// Its jurisdiction.
    pub jurisdiction: Jurisdiction,
}

impl Rule {
    /// Do all of this rule's matchers match?
    pub fn matches(&self, f: &Facts<'_>) -> bool {
        fn any<T>(list: &[T], pred: impl Fn(&T) -> bool) -> bool {
            list.is_empty() || list.iter().any(pred)
        }
        let deny = self.action == Action::Deny;
        any(&self.listeners, |l| l == f.listener)
            && any(&self.clients, |n| n.contains(&f.client))
            && any(&self.hosts, |h| h.matches(f.host))
            && any(&self.ports, |p| *p == f.port)
            && any(&self.classes, |c| *c == f.class)
            && any(&self.jurisdictions, |j| *j == f.jurisdiction)
            && any(&self.destinations, |n| {
                n.contains(&f.ip) || (deny && n.contains(&f.spelled))
            })
    }

    /// Does this allow rule open the safety space of `hit` (a `metadata`, `reserved` or
    /// `internal` answer)? Only configuration that names the address space does: a destination
    /// CIDR that covers the address and lies inside the special range the table matched (so
    /// `10.0.0.0/8` opens private space but `0.0.0.0/0` does not, and `169.254.0.0/16` opens
    /// link-local space but not the metadata endpoint inside it), or, for `metadata` and
    /// `reserved`, the jurisdiction by name. A host pattern, port, class or client alone never
    /// opens it.
    pub fn opens(&self, hit: &Hit) -> bool {
        if self.action != Action::Allow {
            return false;
        }
        let by_cidr = self
            .destinations
            .iter()
            .any(|n| n.contains(&hit.addr) && n.prefix_len() >= hit.prefix.prefix_len());
        let by_name = hit.jurisdiction != Jurisdiction::INTERNAL
            && self.jurisdictions.contains(&hit.jurisdiction);
        by_cidr || by_name
    }
}

/// A conditional-country recipient the organisation has checked: hosts matching `host` may
/// receive data in a `conditional` jurisdiction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attestation {
    /// Host pattern.
    pub host: HostPattern,
    /// The recipient organisation.
    pub organisation: String,
    /// The legal basis (e.g. UK Extension to the EU-US DPF, with the list entry checked).
    pub basis: String,
}
