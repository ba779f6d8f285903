//! The report's numbers, as one serialisable value: the `--json` schema, and what the
//! terminal and HTML forms render. Every list is sorted (largest first, ties by name), so the
//! same log gives the same report.

use std::collections::BTreeMap;

use serde::Serialize;

use super::ChainStatus;

/// The schema name and version of the JSON form; bumped on any incompatible change.
pub const SCHEMA: &str = "residency-proxy.report/1";

/// Where the first unparseable line was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Position {
    /// The file, as named by [`Aggregator::file`](super::Aggregator::file) (empty if never
    /// named).
    pub file: String,
    /// 1-based line number in that file.
    pub line: u64,
    /// What was wrong with it.
    pub error: String,
}

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
