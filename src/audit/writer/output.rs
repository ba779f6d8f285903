//! The writer's output: stdout, an append-only file (reopened on request and after a failed
//! open) or memory, and the batch of serialized lines waiting to be written to it.

use std::fs::{File, OpenOptions};
use std::io::{self, Stdout, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

use super::batch::Batch;
use super::seal::Sealer;
use super::{AuditRecord, AuditTarget, Overflow, Shared, emit_fallback, emit_fallback_json};

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

    /// Whether lines written here are sealed (files and stdout; memory keeps records).
    pub(super) fn sealed(&self) -> bool {
        !matches!(self, Output::Memory(_))
    }

    /// Add one record to the batch, sealed as the next line of the chain (memory targets
    /// store it at once, unsealed).
    pub(super) fn write(
        &mut self,
        rec: &AuditRecord,
        batch: &mut Batch,
        shared: &Shared,
        sealer: &mut Sealer,
    ) {
        if let Output::Memory(records) = self {
            records
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(rec.clone());
            shared.written.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let start = batch.buf.len();
        if let Err(e) = serde_json::to_writer(&mut batch.buf, rec) {
            batch.buf.truncate(start);
            shared.write_errors.fetch_add(1, Ordering::Relaxed);
            shared.unwritten.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "Audit record could not be serialized");
            emit_fallback(rec, Overflow::WriteFailed);
            return;
        }
        sealer.seal(batch, start, true);
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
                shared.written.fetch_add(batch.flows(0), Ordering::Relaxed);
                Ok(())
            }
            Err((written, e)) => {
                let first_lost = batch.ends.partition_point(|&end| end <= written);
                let lost = batch.flows(first_lost);
                shared
                    .written
                    .fetch_add(batch.flows(0).saturating_sub(lost), Ordering::Relaxed);
                shared.write_errors.fetch_add(1, Ordering::Relaxed);
                shared.unwritten.fetch_add(lost, Ordering::Relaxed);
                tracing::error!(
                    error = %e,
                    records = lost,
                    "Audit write failed: the records go to the audit_overflow log"
                );
                // Seal lines carry no flow: a gap they leave shows as a break in `verify`.
                for i in (first_lost..batch.ends.len()).filter(|&i| batch.flow[i]) {
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
