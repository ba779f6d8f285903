//! The special lines of a sealed audit trail, their keys, and the signed checkpoint message.
//!
//! Each special line carries `kind` as its first key after `ts`; flow records have no `kind`.
//! All of them end, like every sealed line, with `seq` and `chain` ([`super::chain`]).
//!
//! - `start`: the first line a process writes. It begins a new chain: its previous link is
//!   [`GENESIS`](super::chain::GENESIS) and its `seq` is 0 (the first flow record is 1).
//!   It names the proxy `version`, `config.digest` (SHA-256 of the configuration text, or of
//!   the embedded default), `data.versions`, `profile`, `db.version` and `key.id` (SHA-256 of
//!   the signing key's raw public key, hex; `null` when the writer does not sign).
//! - `continue`: the first line of a file reopened after rotation. It names `prev.seq` and
//!   `prev.chain`, the last line of the file before, and links to it, so a rotated file
//!   verifies alone and a chain across files verifies in order. `seq` goes on counting.
//! - `checkpoint`: written only by a signing writer, every `checkpoint_records` records or
//!   `checkpoint_interval` (when records were written since the last one), before a rotation
//!   (`"rotation":true`) and at shutdown (`"final":true`). `sig` (128 hex) is the Ed25519
//!   signature of [`checkpoint_message`] over `signed.seq` and `signed.chain`, the line before
//!   it. A signed chain that does not end with a final checkpoint was truncated after its last
//!   checkpoint, or its process was killed.

use std::borrow::Cow;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::chain::Link;

/// Default `audit.checkpoint_records`: a checkpoint every this many records.
pub const DEFAULT_CHECKPOINT_RECORDS: u64 = 10_000;
/// Default `audit.checkpoint_interval`: a checkpoint this long after the last one, if records
/// were written since.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(60);

/// `kind` of a start line.
pub const START: &str = "start";
/// `kind` of the first line of a file reopened after rotation.
pub const CONTINUE: &str = "continue";
/// `kind` of a signed checkpoint.
pub const CHECKPOINT: &str = "checkpoint";

/// The first line a process writes; begins a chain.
#[derive(Debug, Serialize)]
pub struct Start<'a> {
    /// When the writer started (RFC 3339 UTC, milliseconds).
    pub ts: &'a str,
    /// Always [`START`].
    pub kind: &'static str,
    /// The proxy's version.
    pub version: &'a str,
    /// SHA-256 (hex) of the configuration text.
    #[serde(rename = "config.digest")]
    pub config_digest: Option<&'a str>,
    /// The version of every data source of the jurisdiction table.
    #[serde(rename = "data.versions")]
    pub data_versions: &'a str,
    /// The adequacy profile.
    pub profile: &'a str,
    /// GeoIP database build date.
    #[serde(rename = "db.version")]
    pub db_version: &'a str,
    /// The signing key's id, or `null` when unsigned.
    #[serde(rename = "key.id")]
    pub key_id: Option<&'a str>,
}

/// The first line of a file reopened after rotation; links to the last line of the file before.
#[derive(Debug, Serialize)]
pub struct Continue<'a> {
    /// When the file was reopened.
    pub ts: &'a str,
    /// Always [`CONTINUE`].
    pub kind: &'static str,
    /// `seq` of the last line of the file before.
    #[serde(rename = "prev.seq")]
    pub prev_seq: u64,
    /// `chain` of the last line of the file before.
    #[serde(rename = "prev.chain")]
    pub prev_chain: &'a str,
    /// The signing key's id, or `null` when unsigned (so the file verifies alone).
    #[serde(rename = "key.id")]
    pub key_id: Option<&'a str>,
}

/// A signed checkpoint over the line before it.
#[derive(Debug, Serialize)]
pub struct Checkpoint<'a> {
    /// When it was written.
    pub ts: &'a str,
    /// Always [`CHECKPOINT`].
    pub kind: &'static str,
    /// The signing key's id.
    #[serde(rename = "key.id")]
    pub key_id: &'a str,
    /// `seq` of the line signed (the line before this one).
    #[serde(rename = "signed.seq")]
    pub signed_seq: u64,
    /// `chain` of the line signed.
    #[serde(rename = "signed.chain")]
    pub signed_chain: &'a str,
    /// The last line of its chain: the writer shut down.
    #[serde(rename = "final")]
    pub is_final: bool,
    /// The last line of its file: the writer reopens its file next.
    pub rotation: bool,
    /// Ed25519 signature of [`checkpoint_message`], 128 hex characters.
    pub sig: &'a str,
}

/// What a verifier reads of any sealed line (unknown keys are skipped, duplicates refused).
#[derive(Debug, Deserialize)]
pub struct Fields<'a> {
    /// The line's time.
    #[serde(borrow)]
    pub ts: Option<Cow<'a, str>>,
    /// `start`, `continue`, `checkpoint`; absent on flow records.
    #[serde(borrow)]
    pub kind: Option<Cow<'a, str>>,
    /// The line's sequence number.
    pub seq: Option<u64>,
    /// Start, continue and checkpoint lines: the signing key's id.
    #[serde(rename = "key.id", borrow)]
    pub key_id: Option<Cow<'a, str>>,
    /// Continue lines.
    #[serde(rename = "prev.seq")]
    pub prev_seq: Option<u64>,
    /// Continue lines.
    #[serde(rename = "prev.chain", borrow)]
    pub prev_chain: Option<Cow<'a, str>>,
    /// Checkpoints.
    #[serde(rename = "signed.seq")]
    pub signed_seq: Option<u64>,
    /// Checkpoints.
    #[serde(rename = "signed.chain", borrow)]
    pub signed_chain: Option<Cow<'a, str>>,
    /// Checkpoints.
    #[serde(rename = "final")]
    pub is_final: Option<bool>,
    /// Checkpoints.
    pub rotation: Option<bool>,
    /// Checkpoints.
    #[serde(borrow)]
    pub sig: Option<Cow<'a, str>>,
}

/// Where a checkpoint stands in its chain; part of what it signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// More lines follow in this file.
    None,
    /// The last line of its file before a rotation.
    Rotation,
    /// The last line of its chain (shutdown).
    Final,
}

impl End {
    /// The spelling inside the signed message.
    pub fn as_str(self) -> &'static str {
        match self {
            End::None => "none",
            End::Rotation => "rotation",
            End::Final => "final",
        }
    }

    /// From a checkpoint's `final` and `rotation` keys.
    pub fn from_flags(is_final: bool, rotation: bool) -> End {
        match (is_final, rotation) {
            (true, _) => End::Final,
            (false, true) => End::Rotation,
            (false, false) => End::None,
        }
    }
}

/// The domain-separated message a checkpoint signs: the key's id, the seq and chain of the
/// line before the checkpoint, and where the checkpoint stands (so a mid-chain checkpoint
/// cannot be passed off as the final one).
pub fn checkpoint_message(key_id: &str, seq: u64, chain: &Link, end: End) -> Vec<u8> {
    let mut m = b"residency-proxy audit checkpoint v1\n".to_vec();
    m.extend_from_slice(format!("key.id={key_id}\nseq={seq}\nchain=").as_bytes());
    m.extend_from_slice(chain);
    m.extend_from_slice(format!("\nend={}\n", end.as_str()).as_bytes());
    m
}
