//! Sealing: every line the writer puts in a file or on stdout is chained
//! ([`crate::evidence::chain`]), begins with a `start` line, takes up its chain after a reopen
//! with a `continue` line and, with a signing key, carries signed checkpoints
//! ([`crate::evidence::line`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::evidence::SigningKey;
use crate::evidence::chain::{self, GENESIS, Link};
use crate::evidence::line::{self, Checkpoint, Continue, End, Start};

use super::batch::Batch;

pub use crate::evidence::line::{DEFAULT_CHECKPOINT_INTERVAL, DEFAULT_CHECKPOINT_RECORDS};

/// What the `start` line names: what the records of this process were decided under.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StartInfo {
    /// SHA-256 (hex) of the configuration text, or of the embedded default.
    pub config_digest: Option<String>,
    /// `data.versions` of the jurisdiction table.
    pub data_versions: String,
    /// The adequacy profile's name.
    pub profile: String,
    /// GeoIP database build date.
    pub db_version: String,
}

/// How the writer seals its lines. `Default`: unsigned, with the default checkpoint settings
/// (which only a signing writer uses).
#[derive(Debug, Clone)]
pub struct SealOptions {
    /// What the start line names.
    pub start: StartInfo,
    /// Sign checkpoints with this key (`audit.signing_key`).
    pub key: Option<Arc<SigningKey>>,
    /// A checkpoint after this many records (at least 1).
    pub checkpoint_records: u64,
    /// A checkpoint this long after the last one, if records were written since.
    pub checkpoint_interval: Duration,
}

impl Default for SealOptions {
    fn default() -> Self {
        SealOptions {
            start: StartInfo::default(),
            key: None,
            checkpoint_records: DEFAULT_CHECKPOINT_RECORDS,
            checkpoint_interval: DEFAULT_CHECKPOINT_INTERVAL,
        }
    }
}

/// The writer's chain: the last link and the next `seq`, and what is due to be signed.
pub(super) struct Sealer {
    opts: SealOptions,
    prev: Link,
    seq: u64,
    /// Records written since the last checkpoint.
    unsigned: u64,
    last_checkpoint: Instant,
}

impl Sealer {
    pub(super) fn new(opts: SealOptions) -> Sealer {
        Sealer {
            opts,
            prev: GENESIS,
            seq: 0,
            unsigned: 0,
            last_checkpoint: Instant::now(),
        }
    }

    fn key_id(&self) -> Option<&str> {
        self.opts.key.as_deref().map(SigningKey::id)
    }

    /// Seal `batch.buf[start..]` (one serialized object) as the next line.
    pub(super) fn seal(&mut self, batch: &mut Batch, start: usize, flow: bool) {
        self.prev = chain::seal(&mut batch.buf, start, &self.prev, self.seq);
        self.seq += 1;
        batch.push_end(flow);
        if flow {
            self.unsigned += 1;
        }
    }

    /// Serialize a special line and seal it.
    fn special(&mut self, batch: &mut Batch, line: &impl serde::Serialize) {
        let start = batch.buf.len();
        match serde_json::to_writer(&mut batch.buf, line) {
            Ok(()) => self.seal(batch, start, false),
            Err(e) => {
                batch.buf.truncate(start);
                tracing::error!(error = %e, "Audit seal line could not be serialized");
            }
        }
    }

    /// The first line of the process: a new chain.
    pub(super) fn start(&mut self, batch: &mut Batch) {
        let ts = crate::time::now_rfc3339();
        let s = self.opts.start.clone();
        let key_id = self.key_id().map(str::to_owned);
        let line = Start {
            ts: &ts,
            kind: line::START,
            version: env!("CARGO_PKG_VERSION"),
            config_digest: s.config_digest.as_deref(),
            data_versions: &s.data_versions,
            profile: &s.profile,
            db_version: &s.db_version,
            key_id: key_id.as_deref(),
        };
        self.special(batch, &line);
    }

    /// The first line of a reopened file: names the last line of the file before.
    pub(super) fn resume(&mut self, batch: &mut Batch) {
        let ts = crate::time::now_rfc3339();
        let prev = String::from_utf8_lossy(&self.prev).into_owned();
        let key_id = self.key_id().map(str::to_owned);
        let line = Continue {
            ts: &ts,
            kind: line::CONTINUE,
            prev_seq: self.seq.saturating_sub(1),
            prev_chain: &prev,
            key_id: key_id.as_deref(),
        };
        self.special(batch, &line);
    }

    /// A signed checkpoint over the last line (nothing without a key).
    pub(super) fn checkpoint(&mut self, batch: &mut Batch, end: End) {
        let Some(key) = self.opts.key.clone() else {
            return;
        };
        let ts = crate::time::now_rfc3339();
        let signed_seq = self.seq.saturating_sub(1);
        let sig = key.sign_checkpoint(signed_seq, &self.prev, end);
        let chain = String::from_utf8_lossy(&self.prev).into_owned();
        let line = Checkpoint {
            ts: &ts,
            kind: line::CHECKPOINT,
            key_id: key.id(),
            signed_seq,
            signed_chain: &chain,
            is_final: end == End::Final,
            rotation: end == End::Rotation,
            sig: &sig,
        };
        self.special(batch, &line);
        self.unsigned = 0;
        self.last_checkpoint = Instant::now();
    }

    /// When the next checkpoint is due by time: `Some` while records wait to be signed.
    pub(super) fn due(&self) -> Option<Instant> {
        (self.opts.key.is_some() && self.unsigned > 0)
            .then(|| self.last_checkpoint + self.opts.checkpoint_interval)
    }

    /// A checkpoint if `checkpoint_records` records were written since the last one (after
    /// each record).
    pub(super) fn after_record(&mut self, batch: &mut Batch) {
        if self.opts.key.is_some() && self.unsigned >= self.opts.checkpoint_records.max(1) {
            self.checkpoint(batch, End::None);
        }
    }

    /// A checkpoint if `checkpoint_interval` passed since the last one and records wait to be
    /// signed (whenever the writer is about to write its batch, or wakes up for it).
    pub(super) fn if_due(&mut self, batch: &mut Batch) {
        if self.due().is_some_and(|due| Instant::now() >= due) {
            self.checkpoint(batch, End::None);
        }
    }
}
