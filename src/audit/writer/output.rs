//! The writer's output: stdout, an append-only file (reopened on request and after a failed
//! open) or memory, and the batch of serialized lines waiting to be written to it.

use std::fs::{File, OpenOptions};
use std::io::{self, Stdout, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

use super::{AuditRecord, AuditTarget, Overflow, Shared, emit_fallback_json};

/// Lines serialized but not yet written, each kept until its write has succeeded.
#[derive(Default)]
pub(super) struct Batch {
    pub(super) buf: Vec<u8>,
    /// End offset in `buf` of each line (after its newline).
    pub(super) ends: Vec<usize>,
}

impl Batch {
    /// The line ending at `ends[i]`, without its newline.
    pub(super) fn line(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.buf[start..self.ends[i].saturating_sub(1)]
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.ends.clear();
    }
}

/// Write all of `buf`, then flush. On failure, also returns how many bytes are known to
/// have been written (none are known after a failed flush).
pub(super) fn write_flush<W: Write>(w: &mut W, buf: &[u8]) -> Result<(), (usize, io::Error)> {
    let mut written = 0;
    while written < buf.len() {
        match w.write(&buf[written..]) {
            Ok(0) => {
                return Err((
                    written,
                    io::Error::new(io::ErrorKind::WriteZero, "the audit output took no bytes"),
                ));
            }
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err((written, e)),
        }
    }
    w.flush().map_err(|e| (0, e))
}

/// The writer's open output.
pub(super) enum Output {
    Stdout(Stdout),
    File {
        path: PathBuf,
        /// `None` after a failed reopen; the next write retries the open.
        file: Option<File>,
    },
    Memory(Arc<Mutex<Vec<AuditRecord>>>),
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().append(true).create(true).open(path)
}

impl Output {
    pub(super) fn open(target: AuditTarget) -> io::Result<Self> {
        Ok(match target {
            AuditTarget::Stdout => Output::Stdout(io::stdout()),
            AuditTarget::File(path) => {
                let file = open_append(&path).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("opening audit file {}: {e}", path.display()),
                    )
                })?;
                Output::File {
                    path,
                    file: Some(file),
                }
            }
            AuditTarget::Memory(records) => Output::Memory(records),
        })
    }

    /// Add one record to the batch (memory targets store it at once).
    pub(super) fn write(&mut self, rec: &AuditRecord, batch: &mut Batch, shared: &Shared) {
        if let Output::Memory(records) = self {
            records
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(rec.clone());
            shared.written.fetch_add(1, Ordering::Relaxed);
            return;
        }
        crate::audit::json::write_record(&mut batch.buf, rec);
        batch.buf.push(b'\n');
        batch.ends.push(batch.buf.len());
    }

    /// Write and flush the batch. Every record not known to be written (from the one the
    /// failure hit, or all of them after a failed flush or open) is emitted through the
    /// fallback and counted in `unwritten`; the batch is empty afterwards.
    pub(super) fn flush(&mut self, batch: &mut Batch, shared: &Shared) -> io::Result<()> {
        if batch.ends.is_empty() {
            return Ok(());
        }
        let result = match self {
            Output::Stdout(w) => write_flush(&mut w.lock(), &batch.buf),
            Output::File { path, file } => {
                if file.is_none() {
                    match open_append(path) {
                        Ok(f) => {
                            tracing::info!(path = %path.display(), "Audit file reopened");
                            *file = Some(f);
                        }
                        Err(e) => {
                            tracing::error!(
                                path = %path.display(),
                                error = %e,
                                "Audit file could not be opened"
                            );
                        }
                    }
                }
                match file {
                    Some(f) => write_flush(f, &batch.buf),
                    None => Err((0, io::Error::other("the audit file is not open"))),
                }
            }
            Output::Memory(_) => Ok(()),
        };
        let outcome = match result {
            Ok(()) => {
                shared
                    .written
                    .fetch_add(batch.ends.len() as u64, Ordering::Relaxed);
                Ok(())
            }
            Err((written, e)) => {
                let first_lost = batch.ends.partition_point(|&end| end <= written);
                shared
                    .written
                    .fetch_add(first_lost as u64, Ordering::Relaxed);
                let lost = batch.ends.len() - first_lost;
                shared.write_errors.fetch_add(1, Ordering::Relaxed);
                shared.unwritten.fetch_add(lost as u64, Ordering::Relaxed);
                tracing::error!(
                    error = %e,
                    records = lost,
                    "Audit write failed: the records go to the audit_overflow log"
                );
                for i in first_lost..batch.ends.len() {
                    emit_fallback_json(
                        &String::from_utf8_lossy(batch.line(i)),
                        Overflow::WriteFailed,
                    );
                }
                Err(e)
            }
        };
        batch.clear();
        outcome
    }

    /// Close and reopen the file (the batch has been flushed by the caller).
    pub(super) fn reopen(&mut self, shared: &Shared) {
        let Output::File { path, file } = self else {
            return;
        };
        drop(file.take());
        match open_append(path) {
            Ok(f) => {
                *file = Some(f);
                tracing::info!(path = %path.display(), "Audit file reopened");
            }
            Err(e) => {
                shared.write_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(path = %path.display(), error = %e, "Audit file reopen failed");
            }
        }
    }
}
