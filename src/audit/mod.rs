//! Audit stage: exactly one JSON line per request or tunnel.
//!
//! The audit log is the evidence information-governance staff read to learn where data
//! went, so this module is built around one rule: a record is never silently lost.
//!
//! - [`AuditRecord`] is the schema (this file). Its serialized keys are dotted names
//!   (`dest.host`, `bytes.up`, ...) that are also exported as constants in [`keys`], so
//!   tracing fields can use the very same names. Every key is always present; absent values
//!   are `null`.
//! - [`recorder`]: the exactly-once [`Recorder`](recorder::Recorder) a request holds, and the
//!   body wrapper that counts bytes.
//! - [`writer`]: the bounded queue, the writer thread, rotation and the fallback log; every
//!   line it writes to a file or stdout is sealed into a hash chain, with a `start` line,
//!   `continue` lines after rotation and, with a signing key, signed checkpoints (the format
//!   is [`crate::evidence`]'s). After its 25 keys, a record's line ends with `seq` and
//!   `chain`; memory targets keep the records themselves.
//! - `json`: the line itself, written by hand to the bytes serde_json would write.

mod json;
pub(crate) mod outcome;
pub(crate) mod recorder;
pub(crate) mod writer;

pub use outcome::{ClosedBy, Intent, Outcome, ProxyReason};

pub use crate::time::{format_rfc3339_millis, now_rfc3339};

pub use writer::{
    AuditSink, AuditTarget, AuditWriter, DEFAULT_CHECKPOINT_INTERVAL, DEFAULT_CHECKPOINT_RECORDS,
    RecordObserver, RecordToken, SealOptions, StartInfo, spawn, spawn_reopen_on_sigusr1,
    spawn_sealed,
};

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::Side;
use crate::policy::{Mode, Verdict};
use outcome::{as_label, as_optional_label};

/// The serialized key of every [`AuditRecord`] field, for reuse as tracing field names.
pub mod keys {
    /// Time the record was produced (RFC 3339 UTC, milliseconds).
    pub const TS: &str = "ts";
    /// Name of the listener that accepted the connection.
    pub const LISTENER: &str = "listener";
    /// Client socket address.
    pub const CLIENT_ADDR: &str = "client.addr";
    /// `forward`, `connect`, `reverse`, `transparent` or `unknown`.
    pub const INTENT: &str = "intent";
    /// Destination host name as requested.
    pub const DEST_HOST: &str = "dest.host";
    /// Destination port.
    pub const DEST_PORT: &str = "dest.port";
    /// Transparent connections: the name the client's first bytes claimed (TLS SNI or HTTP
    /// `Host`), as sent; `null` when none was seen and on other intents.
    pub const DEST_CLAIMED: &str = "dest.claimed";
    /// Transparent connections: whether the claimed name resolved to the original destination
    /// and so was used as `dest.host` for rules and attestations; `null` on other intents.
    pub const DEST_VERIFIED: &str = "dest.verified";
    /// Every resolved address of the destination with its jurisdiction.
    pub const DEST_ADDRS: &str = "dest.addrs";
    /// The address actually dialed, if any.
    pub const DIALED_IP: &str = "dialed.ip";
    /// `allow` or `deny`.
    pub const DECISION: &str = "decision";
    /// `enforce` or `report`.
    pub const MODE: &str = "mode";
    /// True when enforce mode would have denied this flow.
    pub const WOULD_DENY: &str = "would_deny";
    /// Why the flow came out as it did (a closed set: [`Outcome`]).
    pub const REASON: &str = "reason";
    /// Policy rule that produced the decision.
    pub const RULE: &str = "rule";
    /// Active adequacy profile.
    pub const PROFILE: &str = "profile";
    /// GeoIP database build date.
    pub const DB_VERSION: &str = "db.version";
    /// The version of every data source of the jurisdiction table, space-separated
    /// `source=version` pairs (`geoip=2026-06-01 aws=1761894521 azure=392 …`).
    pub const DATA_VERSIONS: &str = "data.versions";
    /// Bytes sent from client to destination.
    pub const BYTES_UP: &str = "bytes.up";
    /// Bytes sent from destination to client.
    pub const BYTES_DOWN: &str = "bytes.down";
    /// Wall-clock duration of the request or tunnel, in milliseconds.
    pub const DURATION_MS: &str = "duration_ms";
    /// HTTP status returned to the client, if any.
    pub const STATUS: &str = "status";
    /// `downstream`, `upstream` or `internal`.
    pub const ERROR_SIDE: &str = "error.side";
    /// Error message, if the request failed.
    pub const ERROR: &str = "error";
    /// `reload` when the proxy closed an allowed tunnel because a reloaded policy denies it.
    pub const CLOSED_BY: &str = "closed_by";

    /// Every key, in serialization order.
    pub const ALL: [&str; 25] = [
        TS,
        LISTENER,
        CLIENT_ADDR,
        INTENT,
        DEST_HOST,
        DEST_PORT,
        DEST_CLAIMED,
        DEST_VERIFIED,
        DEST_ADDRS,
        DIALED_IP,
        DECISION,
        MODE,
        WOULD_DENY,
        REASON,
        RULE,
        PROFILE,
        DB_VERSION,
        DATA_VERSIONS,
        BYTES_UP,
        BYTES_DOWN,
        DURATION_MS,
        STATUS,
        ERROR_SIDE,
        ERROR,
        CLOSED_BY,
    ];
}

/// One resolved address of the destination, with where it is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditAddr {
    /// The resolved address.
    pub ip: IpAddr,
    /// Jurisdiction code the address maps to. The three names are the table's own (borrowed,
    /// not copied, for every record written), or read back from a trail.
    pub jurisdiction: Cow<'static, str>,
    /// Jurisdiction class (for example adequate / non-adequate / unknown).
    pub class: Cow<'static, str>,
    /// Which data source produced the mapping.
    pub source: Cow<'static, str>,
    /// The matching prefix, in CIDR notation.
    pub prefix: String,
}

/// The audit record: one per request or tunnel. Keys are listed in [`keys`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct AuditRecord {
    /// RFC 3339 UTC timestamp with milliseconds; see [`now_rfc3339`].
    #[serde(rename = "ts")]
    pub ts: String,
    /// Name of the listener that accepted the connection.
    #[serde(rename = "listener")]
    pub listener: String,
    /// Client socket address.
    #[serde(rename = "client.addr")]
    pub client_addr: Option<SocketAddr>,
    /// `forward`, `connect`, `reverse`, `transparent` or `unknown`.
    #[serde(rename = "intent", with = "as_label")]
    pub intent: Intent,
    /// Destination host name as requested.
    #[serde(rename = "dest.host")]
    pub dest_host: Option<String>,
    /// Destination port.
    #[serde(rename = "dest.port")]
    pub dest_port: Option<u16>,
    /// Transparent connections: the TLS SNI or HTTP `Host` the client sent.
    #[serde(rename = "dest.claimed")]
    pub dest_claimed: Option<String>,
    /// Transparent connections: whether `dest.claimed` was verified and decided on.
    #[serde(rename = "dest.verified")]
    pub dest_verified: Option<bool>,
    /// Every resolved address of the destination with its jurisdiction.
    #[serde(rename = "dest.addrs")]
    pub dest_addrs: Vec<AuditAddr>,
    /// The address actually dialed, if any.
    #[serde(rename = "dialed.ip")]
    pub dialed_ip: Option<IpAddr>,
    /// `allow` or `deny`.
    #[serde(rename = "decision", with = "as_label")]
    pub decision: Verdict,
    /// `enforce` or `report`.
    #[serde(rename = "mode", with = "as_label")]
    pub mode: Mode,
    /// True when enforce mode would have denied this flow.
    #[serde(rename = "would_deny")]
    pub would_deny: bool,
    /// Why the flow came out as it did: the policy's reason or the proxy's own outcome.
    #[serde(rename = "reason", with = "as_label")]
    pub reason: Outcome,
    /// Policy rule that produced the decision.
    #[serde(rename = "rule")]
    pub rule: Option<String>,
    /// Active adequacy profile.
    #[serde(rename = "profile")]
    pub profile: Arc<str>,
    /// GeoIP database build date.
    #[serde(rename = "db.version")]
    pub db_version: Arc<str>,
    /// The version of every data source of the jurisdiction table (see [`keys::DATA_VERSIONS`]).
    #[serde(rename = "data.versions")]
    pub data_versions: Arc<str>,
    /// Bytes sent from client to destination.
    #[serde(rename = "bytes.up")]
    pub bytes_up: u64,
    /// Bytes sent from destination to client.
    #[serde(rename = "bytes.down")]
    pub bytes_down: u64,
    /// Wall-clock duration in milliseconds.
    #[serde(rename = "duration_ms")]
    pub duration_ms: f64,
    /// HTTP status returned to the client, if any.
    #[serde(rename = "status")]
    pub status: Option<u16>,
    /// `downstream`, `upstream` or `internal`.
    #[serde(rename = "error.side", with = "as_optional_label")]
    pub error_side: Option<Side>,
    /// Error message, if the request failed.
    #[serde(rename = "error")]
    pub error: Option<String>,
    /// What closed an allowed flow on purpose (`reload`), if anything did.
    #[serde(rename = "closed_by", with = "as_optional_label", default)]
    pub closed_by: Option<ClosedBy>,
}
