//! `[audit]`: where records go, the queue and how long a request waits for space in it.

use std::time::Duration;

use super::raw::FileAudit;
use super::{Compiler, Res};
use crate::config::{AuditConfig, AuditOutput};

/// Default audit queue capacity.
pub const DEFAULT_AUDIT_QUEUE: usize = 10_000;
/// Largest accepted audit `queue`.
pub const MAX_AUDIT_QUEUE: usize = 10_000_000;
const DEFAULT_FULL_WAIT: Duration = Duration::from_millis(50);

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
        Ok(AuditConfig {
            output,
            queue,
            full_wait,
        })
    }
}
