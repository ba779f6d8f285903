//! The report's numbers, as one serialisable value: the `--json` schema, and what the
//! terminal and HTML forms render. Every list is sorted (largest first, ties by name), so the
//! same log gives the same report.

use std::collections::BTreeMap;

use serde::Serialize;

use super::ChainStatus;
use super::aggregate::{Aggregator, Basis, Position, Tally};
use super::topn::{Capped, Hitter, OTHER};
use super::when::{self, DAY_MS, HOUR_MS};

/// The schema name and version of the JSON form; bumped on any incompatible change.
pub const SCHEMA: &str = "residency-proxy.report/1";

/// A residency report. Serialised as the `--json` form (documented in the README).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Always [`SCHEMA`].
    pub schema: &'static str,
    /// Whether the chain of the files read was verified.
    pub chain: ChainStatus,
    /// The period asked for and the one seen.
    pub period: Period,
    /// What was read.
    pub input: Input,
    /// One sentence: where the bytes went.
    pub headline: String,
    /// Flow and byte totals.
    pub totals: Totals,
    /// The parts of the headline: the bytes of allowed flows by the footing they went on.
    pub shares: Vec<Share>,
    /// Flows and bytes by jurisdiction of the dialed address (and its class).
    pub by_jurisdiction: Vec<PlaceRow>,
    /// Flows and bytes by class.
    pub by_class: Vec<ClassRow>,
    /// Denied flows.
    pub denied: Denied,
    /// Report-mode flows that enforcement would deny.
    pub would_deny: WouldDeny,
    /// Flows and bytes over time, by class.
    pub over_time: OverTime,
    /// The versions of the proxy and its data the records name.
    pub versions: Versions,
}

/// The period of a report.
#[derive(Debug, Clone, Serialize)]
pub struct Period {
    /// `--since` as given (inclusive), or null.
    pub since: Option<String>,
    /// `--until` as given (exclusive), or null.
    pub until: Option<String>,
    /// Time of the earliest flow counted (RFC 3339, seconds), or null.
    pub first: Option<String>,
    /// Time of the latest flow counted, or null.
    pub last: Option<String>,
}

/// What the report read.
#[derive(Debug, Clone, Serialize)]
pub struct Input {
    /// Every line, blank ones included.
    pub lines: u64,
    /// Flow records counted (inside the period).
    pub flows: u64,
    /// Special lines inside the period, by `kind` (`start`, `continue`, `checkpoint`, …).
    pub special: BTreeMap<String, u64>,
    /// Records outside `--since`/`--until`.
    pub filtered_out: u64,
    /// Empty lines.
    pub blank: u64,
    /// Lines that are not audit records.
    pub unparseable: u64,
    /// Where the first unparseable line is.
    pub first_unparseable: Option<Position>,
}

/// Totals over the flows counted.
#[derive(Debug, Clone, Serialize)]
pub struct Totals {
    /// Flows.
    pub flows: u64,
    /// Flows allowed (report-mode passes included).
    pub allowed: u64,
    /// Flows denied.
    pub denied: u64,
    /// Allowed flows that enforcement would have denied (report mode).
    pub would_deny: u64,
    /// Bytes client → destination.
    pub bytes_up: u64,
    /// Bytes destination → client.
    pub bytes_down: u64,
    /// Both.
    pub bytes: u64,
}

/// A footing on which bytes went somewhere.
#[derive(Debug, Clone, Serialize)]
pub struct Share {
    /// `home`, `adequate`, `attested`, `rule-allow`, `internal-allowed`, `unknown-allowed`,
    /// `report-mode` (allowed only because of report mode), `other-allow`, `denied`.
    pub basis: &'static str,
    /// Flows.
    pub flows: u64,
    /// Bytes (up and down).
    pub bytes: u64,
    /// Percentage of all bytes.
    pub percent: f64,
    /// Jurisdictions, by bytes.
    pub jurisdictions: Vec<Named>,
    /// `attested`: the hosts; `rule-allow`: the rule ids; by bytes (at most `top`).
    pub detail: Vec<Named>,
}

/// A name and a number of bytes.
#[derive(Debug, Clone, Serialize)]
pub struct Named {
    /// The name.
    pub name: String,
    /// Bytes.
    pub bytes: u64,
}

/// A row of flows by jurisdiction.
#[derive(Debug, Clone, Serialize)]
pub struct PlaceRow {
    /// Jurisdiction of the dialed address (of the first resolved one for a flow never dialed;
    /// `none` without any; `other` collects jurisdictions past the table's cap).
    pub jurisdiction: String,
    /// Its class under the record's profile.
    pub class: String,
    /// Flows.
    pub flows: u64,
    /// Bytes client → destination.
    pub bytes_up: u64,
    /// Bytes destination → client.
    pub bytes_down: u64,
    /// Both.
    pub bytes: u64,
    /// Percentage of all bytes.
    pub percent: f64,
    /// Flows denied.
    pub denied: u64,
    /// Report-mode flows enforcement would deny.
    pub would_deny: u64,
}

/// A row of flows by class.
#[derive(Debug, Clone, Serialize)]
pub struct ClassRow {
    /// The class (`home`, `adequate`, `conditional`, `not-adequate`, `internal`, `unknown`,
    /// `none`).
    pub class: String,
    /// Flows.
    pub flows: u64,
    /// Bytes.
    pub bytes: u64,
    /// Percentage of all bytes.
    pub percent: f64,
}

/// A name and a count of flows.
#[derive(Debug, Clone, Serialize)]
pub struct Count {
    /// The name.
    pub name: String,
    /// Flows.
    pub flows: u64,
}

/// Denied flows.
#[derive(Debug, Clone, Serialize)]
pub struct Denied {
    /// Flows denied.
    pub flows: u64,
    /// By reason.
    pub by_reason: Vec<Count>,
    /// By jurisdiction.
    pub by_jurisdiction: Vec<Count>,
    /// The most denied destinations.
    pub top_destinations: Vec<DeniedHost>,
    /// The clients that tried: networks (IPv4 /24, IPv6 /48), or addresses with `--clients`.
    pub clients: Vec<Client>,
    /// `networks` or `addresses`.
    pub clients_are: &'static str,
    /// True when a top list is an estimate (more distinct names than it keeps counters
    /// for): each count is then an upper bound, off by at most its `error`.
    pub approximate: bool,
}

/// A denied destination.
#[derive(Debug, Clone, Serialize)]
pub struct DeniedHost {
    /// Host name as requested (the address when there was none).
    pub host: String,
    /// Jurisdiction of its latest denied flow.
    pub jurisdiction: String,
    /// Denied flows (an upper bound when `error` > 0).
    pub flows: u64,
    /// How much of `flows` may belong to other hosts (0: exact).
    pub error: u64,
}

/// A client that tried a denied destination.
#[derive(Debug, Clone, Serialize)]
pub struct Client {
    /// Network or address.
    pub client: String,
    /// Denied flows.
    pub flows: u64,
    /// As in [`DeniedHost::error`].
    pub error: u64,
}

/// Report-mode flows enforcement would deny, grouped.
#[derive(Debug, Clone, Serialize)]
pub struct WouldDeny {
    /// Flows.
    pub flows: u64,
    /// Their bytes.
    pub bytes: u64,
    /// By host, jurisdiction, reason and rule; most flows first.
    pub groups: Vec<WouldGroup>,
    /// As in [`Denied::approximate`].
    pub approximate: bool,
}

/// One group of would-deny flows: something enforcement would break.
#[derive(Debug, Clone, Serialize)]
pub struct WouldGroup {
    /// Host.
    pub host: String,
    /// Jurisdiction.
    pub jurisdiction: String,
    /// The reason enforcement would give.
    pub reason: String,
    /// Rule id, or empty.
    pub rule: String,
    /// Flows.
    pub flows: u64,
    /// Bytes.
    pub bytes: u64,
    /// As in [`DeniedHost::error`].
    pub error: u64,
}

/// Flows and bytes over time, by class.
#[derive(Debug, Clone, Serialize)]
pub struct OverTime {
    /// `hour`, `day`, or `N days` when the span needs wider buckets.
    pub bucket: String,
    /// Bucket width in seconds.
    pub bucket_seconds: i64,
    /// The classes, in the order of each bucket's `flows` and `bytes`.
    pub classes: Vec<String>,
    /// Every bucket from the first flow's to the last's, empty ones included.
    pub buckets: Vec<Bucket>,
}

/// One time bucket.
#[derive(Debug, Clone, Serialize)]
pub struct Bucket {
    /// Start (RFC 3339, UTC).
    pub start: String,
    /// Flows per class (in [`OverTime::classes`] order).
    pub flows: Vec<u64>,
    /// Bytes per class.
    pub bytes: Vec<u64>,
}

/// The versions the records name.
#[derive(Debug, Clone, Serialize)]
pub struct Versions {
    /// Proxy versions (from `start` lines).
    pub proxy: Vec<Seen>,
    /// Adequacy profiles.
    pub profile: Vec<Seen>,
    /// GeoIP database build dates (`db.version`).
    pub geoip: Vec<Seen>,
    /// Data source versions (`data.versions`: GeoIP and cloud ranges).
    pub data: Vec<Seen>,
}

/// A version and on how many lines it was seen.
#[derive(Debug, Clone, Serialize)]
pub struct Seen {
    /// The value.
    pub value: String,
    /// Lines naming it.
    pub lines: u64,
}

/// Percentage of `part` in `whole` (0 for an empty whole).
pub(crate) fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

fn sorted_counts(c: Capped<u64>, top: Option<usize>) -> Vec<Count> {
    let mut v: Vec<Count> = c
        .into_vec()
        .into_iter()
        .map(|(name, flows)| Count { name, flows })
        .collect();
    v.sort_by(|a, b| b.flows.cmp(&a.flows).then_with(|| a.name.cmp(&b.name)));
    if let Some(n) = top {
        v.truncate(n);
    }
    v
}

fn seen(c: Capped<u64>) -> Vec<Seen> {
    sorted_counts(c, None)
        .into_iter()
        .map(|c| Seen {
            value: c.name,
            lines: c.flows,
        })
        .collect()
}

fn named<K: Into<String>>(v: impl IntoIterator<Item = (K, u64)>, top: usize) -> Vec<Named> {
    let mut v: Vec<Named> = v
        .into_iter()
        .map(|(k, bytes)| Named {
            name: k.into(),
            bytes,
        })
        .collect();
    v.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.name.cmp(&b.name)));
    v.truncate(top);
    v
}

/// Build the report from a finished aggregator.
pub(crate) fn build(a: Aggregator, chain: ChainStatus) -> Report {
    let top = a.opts.top.max(1);
    let bytes = a.total.bytes();
    let shares: Vec<Share> = {
        let mut basis = a.basis;
        Basis::ALL
            .iter()
            .filter_map(|b| basis.remove(b).map(|t| (*b, t)))
            .map(|(b, t)| Share {
                basis: b.as_str(),
                flows: t.tally.flows,
                bytes: t.tally.bytes(),
                percent: percent(t.tally.bytes(), bytes),
                jurisdictions: named(t.places.into_vec(), usize::MAX),
                detail: named(t.detail.top(top).into_iter().map(|h| (h.key, h.value)), top),
            })
            .collect()
    };
    let mut by_jurisdiction: Vec<PlaceRow> = a
        .places
        .into_vec()
        .into_iter()
        .map(|(key, p)| {
            let (j, c) = key.split_once('\u{0}').unwrap_or((OTHER, OTHER));
            PlaceRow {
                jurisdiction: j.to_owned(),
                class: c.to_owned(),
                flows: p.tally.flows,
                bytes_up: p.tally.up,
                bytes_down: p.tally.down,
                bytes: p.tally.bytes(),
                percent: percent(p.tally.bytes(), bytes),
                denied: p.denied,
                would_deny: p.would_deny,
            }
        })
        .collect();
    by_jurisdiction.sort_by(|x, y| {
        (y.bytes, y.flows)
            .cmp(&(x.bytes, x.flows))
            .then_with(|| (&x.jurisdiction, &x.class).cmp(&(&y.jurisdiction, &y.class)))
    });
    let mut by_class: Vec<ClassRow> = a
        .classes
        .into_vec()
        .into_iter()
        .map(|(class, t)| ClassRow {
            class,
            flows: t.flows,
            bytes: t.bytes(),
            percent: percent(t.bytes(), bytes),
        })
        .collect();
    by_class.sort_by(|x, y| {
        (y.bytes, y.flows)
            .cmp(&(x.bytes, x.flows))
            .then_with(|| x.class.cmp(&y.class))
    });
    let approximate = a.denied_hosts.approximate() || a.denied_clients.approximate();
    let denied = Denied {
        flows: a.denied,
        by_reason: sorted_counts(a.denied_reasons, None),
        by_jurisdiction: sorted_counts(a.denied_places, None),
        top_destinations: a
            .denied_hosts
            .top(top)
            .into_iter()
            .map(|h: Hitter<String, String>| DeniedHost {
                host: h.key,
                jurisdiction: h.value,
                flows: h.count,
                error: h.error,
            })
            .collect(),
        clients: a
            .denied_clients
            .top(top)
            .into_iter()
            .map(|h| Client {
                client: h.key,
                flows: h.count,
                error: h.error,
            })
            .collect(),
        clients_are: if a.opts.clients {
            "addresses"
        } else {
            "networks"
        },
        approximate,
    };
    let would_deny = WouldDeny {
        flows: a.would_deny.flows,
        bytes: a.would_deny.bytes(),
        approximate: a.would.approximate(),
        groups: a
            .would
            .top(top)
            .into_iter()
            .map(|h| WouldGroup {
                host: h.key.host,
                jurisdiction: h.key.jurisdiction,
                reason: h.key.reason,
                rule: h.key.rule,
                flows: h.count,
                bytes: h.value,
                error: h.error,
            })
            .collect(),
    };
    let over_time = over_time(a.bucket_ms, a.buckets, &by_class);
    let mut report = Report {
        schema: SCHEMA,
        chain,
        period: Period {
            since: a.opts.since.map(|b| b.text),
            until: a.opts.until.map(|b| b.text),
            first: a.first_ms.map(|m| when::format_millis(m, true)),
            last: a.last_ms.map(|m| when::format_millis(m, true)),
        },
        input: Input {
            lines: a.lines,
            flows: a.total.flows,
            special: a.special,
            filtered_out: a.filtered_out,
            blank: a.blank,
            unparseable: a.unparseable,
            first_unparseable: a.first_unparseable,
        },
        headline: String::new(),
        totals: Totals {
            flows: a.total.flows,
            allowed: a.allowed,
            denied: a.denied,
            would_deny: a.would_deny.flows,
            bytes_up: a.total.up,
            bytes_down: a.total.down,
            bytes,
        },
        shares,
        by_jurisdiction,
        by_class,
        denied,
        would_deny,
        over_time,
        versions: Versions {
            proxy: seen(a.proxy_versions),
            profile: seen(a.profiles),
            geoip: seen(a.db_versions),
            data: seen(a.data_versions),
        },
    };
    report.headline = super::headline::sentence(&report);
    report
}

fn over_time(
    width: i64,
    buckets: BTreeMap<i64, BTreeMap<String, Tally>>,
    by_class: &[ClassRow],
) -> OverTime {
    let classes: Vec<String> = by_class.iter().map(|c| c.class.clone()).collect();
    let bucket = match width {
        HOUR_MS => "hour".to_owned(),
        DAY_MS => "day".to_owned(),
        w => format!("{} days", w / DAY_MS),
    };
    let mut out = Vec::new();
    if let (Some((&first, _)), Some((&last, _))) =
        (buckets.first_key_value(), buckets.last_key_value())
    {
        let mut t = first;
        while t <= last {
            let row = buckets.get(&t);
            let pick = |f: &dyn Fn(&Tally) -> u64| -> Vec<u64> {
                classes
                    .iter()
                    .map(|c| row.and_then(|r| r.get(c)).map_or(0, f))
                    .collect()
            };
            out.push(Bucket {
                start: when::format_millis(t, false),
                flows: pick(&|t| t.flows),
                bytes: pick(&|t| t.bytes()),
            });
            t += width;
        }
    }
    OverTime {
        bucket,
        bucket_seconds: width / 1000,
        classes,
        buckets: out,
    }
}
