//! The aggregator: fed one audit line at a time, it keeps only bounded counters (see
//! [`topn`](super::topn)) and turns them into a [`Report`] at the end.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;

use super::Options;
use super::summary::Position;
use super::topn::{Capped, TopN};
use super::when::{self, DAY_MS, HOUR_MS};
use crate::audit::AuditRecord;
use crate::policy::{Reason, Verdict};

/// Distinct jurisdictions (per class) kept before the `other` bucket.
const JURISDICTIONS: usize = 512;
/// Distinct classes kept before `other` (a profile has six).
const CLASSES: usize = 16;
/// Distinct reasons kept (a closed set of about thirty).
const REASONS: usize = 64;
/// Distinct values of each version field kept.
const VERSIONS: usize = 32;
/// Counters of each heavy-hitters table (hosts, clients, would-deny groups).
const HITTERS: usize = 2048;
/// Buckets of the over-time series before they are made wider.
const MAX_BUCKETS: usize = 2048;

/// Flows and bytes, the pair most tables count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    pub(crate) flows: u64,
    pub(crate) up: u64,
    pub(crate) down: u64,
}

impl Tally {
    fn add(&mut self, up: u64, down: u64) {
        self.flows += 1;
        self.up = self.up.saturating_add(up);
        self.down = self.down.saturating_add(down);
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.up.saturating_add(self.down)
    }
}

/// A row of flows by jurisdiction.
#[derive(Debug, Clone, Default)]
pub(crate) struct PlaceTally {
    pub(crate) tally: Tally,
    pub(crate) denied: u64,
    pub(crate) would_deny: u64,
}

/// On what footing the bytes of an allowed flow went where they went: the parts of the
/// headline sentence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Basis {
    Home,
    Adequate,
    Attested,
    RuleAllow,
    Internal,
    UnknownAllowed,
    ReportMode,
    OtherAllow,
    Denied,
}

impl Basis {
    pub(crate) const ALL: [Basis; 9] = [
        Basis::Home,
        Basis::Adequate,
        Basis::Attested,
        Basis::RuleAllow,
        Basis::Internal,
        Basis::UnknownAllowed,
        Basis::ReportMode,
        Basis::OtherAllow,
        Basis::Denied,
    ];

    fn of(r: &AuditRecord) -> Basis {
        use crate::audit::Outcome::Policy;
        if r.decision == Verdict::Deny {
            return Basis::Denied;
        }
        if r.would_deny {
            return Basis::ReportMode;
        }
        match r.reason {
            Policy(Reason::Home) => Basis::Home,
            Policy(Reason::Adequate) => Basis::Adequate,
            Policy(Reason::Attested) => Basis::Attested,
            Policy(Reason::RuleAllow) => Basis::RuleAllow,
            Policy(Reason::InternalAllowed) => Basis::Internal,
            Policy(Reason::UnknownAllowed) => Basis::UnknownAllowed,
            _ => Basis::OtherAllow,
        }
    }

    /// Its spelling in the JSON form.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Basis::Home => "home",
            Basis::Adequate => "adequate",
            Basis::Attested => "attested",
            Basis::RuleAllow => "rule-allow",
            Basis::Internal => "internal-allowed",
            Basis::UnknownAllowed => "unknown-allowed",
            Basis::ReportMode => "report-mode",
            Basis::OtherAllow => "other-allow",
            Basis::Denied => "denied",
        }
    }
}

/// The bytes of one [`Basis`], by jurisdiction, with the hosts or rules behind it.
#[derive(Debug, Clone)]
pub(crate) struct BasisTally {
    pub(crate) tally: Tally,
    pub(crate) places: Capped<u64>,
    /// Hosts (attested) or rule ids (rule-allow): flows counted, bytes as the value.
    pub(crate) detail: TopN<String, u64>,
}

impl Default for BasisTally {
    fn default() -> Self {
        BasisTally {
            tally: Tally::default(),
            places: Capped::new(JURISDICTIONS),
            detail: TopN::new(64),
        }
    }
}

/// A would-deny group: what enforcement would break.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct WouldKey {
    pub(crate) host: String,
    pub(crate) jurisdiction: String,
    pub(crate) reason: String,
    pub(crate) rule: String,
}

/// The state of a report being built. Feed it with [`line`](Aggregator::line), then
/// [`finish`](Aggregator::finish).
#[derive(Debug)]
pub struct Aggregator {
    pub(crate) opts: Options,
    pub(crate) file: String,
    pub(crate) file_line: u64,
    pub(crate) lines: u64,
    pub(crate) blank: u64,
    pub(crate) filtered_out: u64,
    pub(crate) unparseable: u64,
    pub(crate) first_unparseable: Option<Position>,
    pub(crate) special: BTreeMap<String, u64>,
    pub(crate) first_ms: Option<i64>,
    pub(crate) last_ms: Option<i64>,
    pub(crate) total: Tally,
    pub(crate) allowed: u64,
    pub(crate) denied: u64,
    pub(crate) would_deny: Tally,
    pub(crate) places: Capped<PlaceTally>,
    pub(crate) classes: Capped<Tally>,
    pub(crate) basis: BTreeMap<Basis, BasisTally>,
    pub(crate) denied_reasons: Capped<u64>,
    pub(crate) denied_places: Capped<u64>,
    pub(crate) denied_hosts: TopN<String, String>,
    pub(crate) denied_clients: TopN<String, ()>,
    pub(crate) would: TopN<WouldKey, u64>,
    /// Bucket width and bucket start → class → flows and bytes.
    pub(crate) bucket_ms: i64,
    pub(crate) buckets: BTreeMap<i64, BTreeMap<String, Tally>>,
    pub(crate) proxy_versions: Capped<u64>,
    pub(crate) profiles: Capped<u64>,
    pub(crate) db_versions: Capped<u64>,
    pub(crate) data_versions: Capped<u64>,
}

/// A special (non-flow) line: only what the report reads of it.
#[derive(Debug, Deserialize)]
struct Special {
    kind: String,
    #[serde(default)]
    ts: Option<String>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    profile: Option<String>,
    #[serde(default, rename = "db.version")]
    db_version: Option<String>,
    #[serde(default, rename = "data.versions")]
    data_versions: Option<String>,
}

impl Aggregator {
    /// A new, empty report with these options.
    pub fn new(opts: Options) -> Aggregator {
        Aggregator {
            opts,
            file: String::new(),
            file_line: 0,
            lines: 0,
            blank: 0,
            filtered_out: 0,
            unparseable: 0,
            first_unparseable: None,
            special: BTreeMap::new(),
            first_ms: None,
            last_ms: None,
            total: Tally::default(),
            allowed: 0,
            denied: 0,
            would_deny: Tally::default(),
            places: Capped::new(JURISDICTIONS),
            classes: Capped::new(CLASSES),
            basis: BTreeMap::new(),
            denied_reasons: Capped::new(REASONS),
            denied_places: Capped::new(JURISDICTIONS),
            denied_hosts: TopN::new(HITTERS),
            denied_clients: TopN::new(HITTERS),
            would: TopN::new(HITTERS),
            bucket_ms: HOUR_MS,
            buckets: BTreeMap::new(),
            proxy_versions: Capped::new(VERSIONS),
            profiles: Capped::new(VERSIONS),
            db_versions: Capped::new(VERSIONS),
            data_versions: Capped::new(VERSIONS),
        }
    }

    /// The lines that follow come from the file `name` (numbering restarts at 1); used only
    /// to say where an unparseable line is.
    pub fn file(&mut self, name: &str) {
        name.clone_into(&mut self.file);
        self.file_line = 0;
    }

    /// Read one line of an audit log (with or without its line ending). Never fails: a line
    /// that is not a record is counted, and the first one's position kept.
    pub fn line(&mut self, bytes: &[u8]) {
        self.lines += 1;
        self.file_line += 1;
        let bytes = bytes.trim_ascii();
        if bytes.is_empty() {
            self.blank += 1;
            return;
        }
        // A special line names its kind; a flow record never has that key. Compact JSON
        // spells the key exactly so, and inside a string value the quotes would be escaped.
        let flow_err = if contains(bytes, br#""kind":"#) {
            match serde_json::from_slice::<Special>(bytes) {
                Ok(s) => return self.special(s),
                Err(e) => e,
            }
        } else {
            match serde_json::from_slice::<AuditRecord>(bytes) {
                Ok(r) => return self.record(&r),
                Err(e) => match serde_json::from_slice::<Special>(bytes) {
                    Ok(s) => return self.special(s),
                    Err(_) => e,
                },
            }
        };
        self.bad(flow_err.to_string());
    }

    fn bad(&mut self, error: String) {
        self.unparseable += 1;
        if self.first_unparseable.is_none() {
            self.first_unparseable = Some(Position {
                file: self.file.clone(),
                line: self.file_line,
                error,
            });
        }
    }

    /// Whether a record stamped `ms` is inside `--since`/`--until`.
    fn in_period(&self, ms: i64) -> bool {
        self.opts.since.as_ref().is_none_or(|b| ms >= b.millis)
            && self.opts.until.as_ref().is_none_or(|b| ms < b.millis)
    }

    fn special(&mut self, s: Special) {
        if let Some(ts) = &s.ts {
            match when::parse_millis(ts) {
                Some(ms) if !self.in_period(ms) => {
                    self.filtered_out += 1;
                    return;
                }
                Some(_) => (),
                None => return self.bad(format!("bad ts {ts:?}")),
            }
        }
        *self.special.entry(s.kind.clone()).or_default() += 1;
        if s.kind == "start" {
            for (map, v) in [
                (&mut self.proxy_versions, &s.version),
                (&mut self.profiles, &s.profile),
                (&mut self.db_versions, &s.db_version),
                (&mut self.data_versions, &s.data_versions),
            ] {
                if let Some(v) = v {
                    *map.entry(v) += 1;
                }
            }
        }
    }

    fn record(&mut self, r: &AuditRecord) {
        let Some(ms) = when::parse_millis(&r.ts) else {
            return self.bad(format!("bad ts {:?}", r.ts));
        };
        if !self.in_period(ms) {
            self.filtered_out += 1;
            return;
        }
        self.first_ms = Some(self.first_ms.map_or(ms, |f| f.min(ms)));
        self.last_ms = Some(self.last_ms.map_or(ms, |l| l.max(ms)));
        let (up, down) = (r.bytes_up, r.bytes_down);
        self.total.add(up, down);
        let (place, class) = place_of(r);
        let class = if self.classes.admits(class) {
            class
        } else {
            super::topn::OTHER
        };
        self.classes.entry(class).add(up, down);
        let row = self.places.entry(&format!("{place}\u{0}{class}"));
        row.tally.add(up, down);
        let denied = r.decision == Verdict::Deny;
        let would = !denied && r.would_deny;
        row.denied += u64::from(denied);
        row.would_deny += u64::from(would);

        let basis = Basis::of(r);
        let b = self.basis.entry(basis).or_default();
        b.tally.add(up, down);
        *b.places.entry(place) += up.saturating_add(down);
        match basis {
            Basis::Attested => *b.detail.add(host_of(r)) += up.saturating_add(down),
            Basis::RuleAllow => {
                *b.detail.add(r.rule.clone().unwrap_or_default()) += up.saturating_add(down);
            }
            _ => (),
        }

        if denied {
            self.denied += 1;
            *self.denied_reasons.entry(r.reason.as_str()) += 1;
            *self.denied_places.entry(place) += 1;
            place.clone_into(self.denied_hosts.add(host_of(r)));
            self.denied_clients
                .add(client_key(r.client_addr, self.opts.clients));
        } else {
            self.allowed += 1;
        }
        if would {
            self.would_deny.add(up, down);
            let key = WouldKey {
                host: host_of(r),
                jurisdiction: place.to_owned(),
                reason: r.reason.as_str().to_owned(),
                rule: r.rule.clone().unwrap_or_default(),
            };
            *self.would.add(key) += up.saturating_add(down);
        }

        let start = ms.div_euclid(self.bucket_ms) * self.bucket_ms;
        self.buckets
            .entry(start)
            .or_default()
            .entry(class.to_owned())
            .or_default()
            .add(up, down);
        if self.buckets.len() > MAX_BUCKETS {
            self.widen(self.bucket_ms * if self.bucket_ms < DAY_MS { 24 } else { 2 });
        }

        for (map, v) in [
            (&mut self.profiles, &*r.profile),
            (&mut self.db_versions, &*r.db_version),
            (&mut self.data_versions, &*r.data_versions),
        ] {
            if !v.is_empty() {
                *map.entry(v) += 1;
            }
        }
    }

    /// Re-bucket the series at width `ms`.
    pub(crate) fn widen(&mut self, ms: i64) {
        let old = std::mem::take(&mut self.buckets);
        self.bucket_ms = ms;
        for (start, classes) in old {
            let into = self.buckets.entry(start.div_euclid(ms) * ms).or_default();
            for (class, t) in classes {
                let e = into.entry(class).or_default();
                e.flows += t.flows;
                e.up = e.up.saturating_add(t.up);
                e.down = e.down.saturating_add(t.down);
            }
        }
    }
}

/// Whether `needle` occurs in `hay`.
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The jurisdiction and class of a flow: those of the dialed address, else of the first
/// resolved address (the one a deny was decided on), else `none`.
pub(crate) fn place_of(r: &AuditRecord) -> (&str, &str) {
    let addr = r
        .dialed_ip
        .and_then(|ip| r.dest_addrs.iter().find(|a| a.ip == ip))
        .or_else(|| r.dest_addrs.first());
    addr.map_or(("none", "none"), |a| (&*a.jurisdiction, &*a.class))
}

/// The destination host of a flow as the report names it.
fn host_of(r: &AuditRecord) -> String {
    match (&r.dest_host, r.dialed_ip) {
        (Some(h), _) if !h.is_empty() => h.clone(),
        (_, Some(ip)) => ip.to_string(),
        _ => "(none)".to_owned(),
    }
}

/// The client of a flow: its network (IPv4 /24, IPv6 /48), or its address with `full`.
pub(crate) fn client_key(addr: Option<SocketAddr>, full: bool) -> String {
    let Some(addr) = addr else {
        return "(none)".to_owned();
    };
    let ip = match addr.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    if full {
        return ip.to_string();
    }
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let net = std::net::Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0);
            format!("{net}/48")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_networks_unless_asked() {
        let v4: SocketAddr = "10.1.2.3:5000".parse().unwrap();
        let v6: SocketAddr = "[2001:db8:aa:bb::1]:5000".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:10.1.2.3]:5000".parse().unwrap();
        assert_eq!(client_key(Some(v4), false), "10.1.2.0/24");
        assert_eq!(client_key(Some(mapped), false), "10.1.2.0/24");
        assert_eq!(client_key(Some(v6), false), "2001:db8:aa::/48");
        assert_eq!(client_key(Some(v4), true), "10.1.2.3");
        assert_eq!(client_key(None, false), "(none)");
    }

    #[test]
    fn a_line_that_is_not_a_record_is_counted_with_its_position() {
        let mut a = Aggregator::new(Options::default());
        a.file("one.log");
        a.line(b"");
        a.line(b"{not json");
        a.line(br#"{"kind":"checkpoint","seq":3}"#);
        a.line(b"[1,2]");
        assert_eq!((a.lines, a.blank, a.unparseable), (4, 1, 2));
        let first = a.first_unparseable.clone().expect("position");
        assert_eq!((first.file.as_str(), first.line), ("one.log", 2));
        assert_eq!(a.special.get("checkpoint"), Some(&1));
    }
}
