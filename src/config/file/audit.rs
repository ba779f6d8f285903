//! `[audit]`: where records go, the queue and how long a request waits for space in it, and
//! the key and cadence of signed checkpoints.

use std::sync::Arc;
use std::time::Duration;

use super::raw::FileAudit;
use super::{Compiler, Res};
use crate::config::{AuditConfig, AuditOutput};
use crate::evidence::SigningKey;
use crate::evidence::line::{DEFAULT_CHECKPOINT_INTERVAL, DEFAULT_CHECKPOINT_RECORDS};

/// Default audit queue capacity.
pub const DEFAULT_AUDIT_QUEUE: usize = 10_000;
/// Largest accepted audit `queue`.
pub const MAX_AUDIT_QUEUE: usize = 10_000_000;
const DEFAULT_FULL_WAIT: Duration = Duration::from_millis(50);
/// Largest accepted `checkpoint_records`.
const MAX_CHECKPOINT_RECORDS: usize = 100_000_000;

impl Compiler<'_> {
    pub(super) fn audit(&self, raw: FileAudit) -> Res<AuditConfig> {
        let output = match &raw.output {
            None => AuditOutput::Stdout,
            Some(o) if o.get_ref() == "stdout" => AuditOutput::Stdout,
            Some(o) => AuditOutput::File(self.path(o, "audit.output")?),
        };
        let queue = self.int(
            raw.queue.as_ref(),
            "audit.queue",
            DEFAULT_AUDIT_QUEUE,
            1,
            MAX_AUDIT_QUEUE,
        )?;
        let full_wait =
            self.duration(raw.full_wait.as_ref(), "audit.full_wait", DEFAULT_FULL_WAIT)?;
        // The key is read now, so `check` and a start refuse a missing, unreadable or
        // non-Ed25519 key before any port is bound.
        let signing_key = match &raw.signing_key {
            None => None,
            Some(k) => {
                let path = self.path(k, "audit.signing_key")?;
                let key = SigningKey::load(&path)
                    .map_err(|e| self.bad(k, "audit.signing_key", e.to_string()))?;
                Some(Arc::new(key))
            }
        };
        let checkpoint_records = self.int(
            raw.checkpoint_records.as_ref(),
            "audit.checkpoint_records",
            DEFAULT_CHECKPOINT_RECORDS as usize,
            1,
            MAX_CHECKPOINT_RECORDS,
        )? as u64;
        let checkpoint_interval = self.duration(
            raw.checkpoint_interval.as_ref(),
            "audit.checkpoint_interval",
            DEFAULT_CHECKPOINT_INTERVAL,
        )?;
        if let Some(v) = &raw.checkpoint_interval
            && checkpoint_interval.is_zero()
        {
            return Err(self.bad(v, "audit.checkpoint_interval", "must be more than zero"));
        }
        Ok(AuditConfig {
            output,
            queue,
            full_wait,
            signing_key,
            checkpoint_records,
            checkpoint_interval,
        })
    }
}
