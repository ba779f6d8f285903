//! The audit writer: a bounded queue, a writer thread, rotation and the fallback log.
//!
//! - [`AuditRecord`] is the schema. Its serialized keys are dotted names (`dest.host`,
//!   `bytes.up`, ...) that are also exported as constants in [`keys`], so tracing fields
//!   can use the very same names. Every key is always present; absent values are `null`.
//! - [`spawn`] opens the target *before* the proxy binds any port (an unwritable audit
//!   file is a startup error) and starts a dedicated writer thread fed by a bounded queue.
//! - [`AuditSink`] is the cheap, cloneable handle request tasks use. [`AuditSink::record`]
//!   never blocks forever: when the queue stays full for longer than `full_wait`, or the
//!   writer has stopped, the record is counted in [`AuditSink::dropped`] and emitted in
//!   full through `tracing` with target `audit_overflow`, so it still reaches some log.
//! - [`AuditSink::reopen`] (wired to `SIGUSR1` by [`spawn_reopen_on_sigusr1`]) makes the
//!   writer flush, close and reopen its file, for external log rotation.
//! - Every record being built holds a [`RecordToken`] from [`AuditSink::track`] until it is
//!   queued (or has taken the fallback); [`AuditSink::settled`] waits for all of them, so a
//!   shutdown can know that every flow's record has reached the writer.
//! - [`AuditWriter::shutdown`] closes the queue and waits until every queued record has
//!   been written and flushed.
//!
//! The writer runs on its own OS thread because file and stdout writes are blocking; the
//! async side only ever touches the queue. Lines are batched and written whenever the
//! queue is momentarily empty (or the batch reaches 64 KiB), so they appear promptly
//! without a syscall per record under load. The writer keeps each batched line until its
//! write has succeeded: when a write or flush fails, every record of the batch not known
//! to be written is emitted through the `audit_overflow` fallback and counted in
//! [`AuditSink::unwritten`] (the error itself in [`AuditSink::write_errors`]); the writer
//! never panics on I/O.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::sync::{mpsc, oneshot};
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;

use super::AuditRecord;
use crate::evidence::line::End;

mod batch;
mod output;
mod seal;
use batch::Batch;
use output::Output;
use seal::Sealer;
pub use seal::{DEFAULT_CHECKPOINT_INTERVAL, DEFAULT_CHECKPOINT_RECORDS, SealOptions, StartInfo};

/// Where audit lines go.
#[derive(Debug, Clone)]
pub enum AuditTarget {
    /// One JSON line per record on standard output.
    Stdout,
    /// One JSON line per record appended to this file (created if missing).
    File(PathBuf),
    /// Records collected in memory, for tests that assert on records.
    Memory(Arc<Mutex<Vec<AuditRecord>>>),
}

/// Messages from the async side to the writer thread.
enum Msg {
    Record(Box<AuditRecord>),
    Reopen,
    Shutdown,
}

/// State shared by every sink clone and the writer thread.
struct Shared {
    dropped: AtomicU64,
    write_errors: AtomicU64,
    unwritten: AtomicU64,
    /// Records written to the audit output.
    written: AtomicU64,
    /// Set when a reopen could not be queued in-band because the queue was full.
    reopen_pending: AtomicBool,
    /// Set once a shutdown has cut the flows still open at its drain deadline.
    drain_cut: AtomicBool,
}

/// Cloneable handle used by request tasks to queue audit records.
#[derive(Clone)]
pub struct AuditSink {
    tx: mpsc::Sender<Msg>,
    shared: Arc<Shared>,
    full_wait: Duration,
    reopenable: bool,
    /// Records not yet handed to the writer: one token per record being built, one task per
    /// record waiting for queue space.
    in_flight: TaskTracker,
    /// Sees every record as it is emitted (the metrics), shared by every clone.
    observer: Arc<ArcSwapOption<ObserverSlot>>,
}

/// Sees every audit record as it is emitted, before it is queued: the metrics count flows
/// from the very records the audit trail holds.
pub trait RecordObserver: Send + Sync {
    /// One record, about to be queued.
    fn observe(&self, rec: &AuditRecord);
}

/// An installed [`RecordObserver`].
struct ObserverSlot(Arc<dyn RecordObserver>);

/// Held by a record that is being built; dropped once the record is queued or has taken the
/// fallback. [`AuditSink::settled`] waits until none is left.
#[derive(Debug)]
pub struct RecordToken(#[allow(dead_code)] TaskTrackerToken);

impl std::fmt::Debug for AuditSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditSink")
            .field("full_wait", &self.full_wait)
            .field("dropped", &self.dropped())
            .field("write_errors", &self.write_errors())
            .field("unwritten", &self.unwritten())
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

impl AuditSink {
    /// Queue a record. Never blocks forever.
    ///
    /// Tries the queue without waiting; if it is full, waits at most `full_wait` for
    /// space. If there is still no space, or the writer has stopped, the record is
    /// counted in [`dropped`](Self::dropped) and emitted as JSON through
    /// `tracing::error!(target: "audit_overflow", record = ...)` so it is not lost silently.
    pub async fn record(&self, rec: AuditRecord) {
        self.observe(&rec);
        let msg = Msg::Record(Box::new(rec));
        let msg = match self.tx.try_send(msg) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Closed(msg)) => {
                self.overflow(msg, Overflow::WriterStopped);
                return;
            }
            Err(mpsc::error::TrySendError::Full(msg)) => msg,
        };
        // `reserve` (not `send`) so the record is still ours if the wait times out.
        match tokio::time::timeout(self.full_wait, self.tx.reserve()).await {
            Ok(Ok(permit)) => permit.send(msg),
            Ok(Err(_closed)) => self.overflow(msg, Overflow::WriterStopped),
            Err(_elapsed) => self.overflow(msg, Overflow::QueueFull),
        }
    }

    /// Queue a record without waiting (for synchronous callers such as a record emitted on
    /// drop). If the queue is full, a task tracked by [`settled`](Self::settled) waits for
    /// space as [`record`](Self::record) does; outside a Tokio runtime the record takes the
    /// fallback at once. Boxed, as the queue carries it.
    pub fn emit(&self, rec: Box<AuditRecord>) {
        self.observe(&rec);
        let msg = Msg::Record(rec);
        match self.tx.try_send(msg) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Closed(msg)) => {
                self.overflow(msg, Overflow::WriterStopped);
            }
            Err(mpsc::error::TrySendError::Full(msg)) => {
                match tokio::runtime::Handle::try_current() {
                    Ok(handle) => {
                        let mut handover = Handover {
                            sink: self.clone(),
                            msg: Some(msg),
                        };
                        self.in_flight.spawn_on(
                            async move {
                                let sink = handover.sink.clone();
                                match tokio::time::timeout(sink.full_wait, sink.tx.reserve()).await
                                {
                                    Ok(Ok(permit)) => {
                                        if let Some(msg) = handover.msg.take() {
                                            permit.send(msg);
                                        }
                                    }
                                    // The writer stopped: the handover's drop takes the fallback.
                                    Ok(Err(_closed)) => {}
                                    Err(_elapsed) => {
                                        if let Some(msg) = handover.msg.take() {
                                            sink.overflow(msg, Overflow::QueueFull);
                                        }
                                    }
                                }
                            },
                            &handle,
                        );
                    }
                    Err(_) => self.overflow(msg, Overflow::QueueFull),
                }
            }
        }
    }

    /// Let `observer` see every record emitted from now on, through any clone of this sink
    /// (replacing the one installed before, if any).
    pub fn set_observer(&self, observer: Arc<dyn RecordObserver>) {
        self.observer.store(Some(Arc::new(ObserverSlot(observer))));
    }

    fn observe(&self, rec: &AuditRecord) {
        if let Some(slot) = self.observer.load().as_ref() {
            slot.0.observe(rec);
        }
    }

    /// A token for a record about to be built: [`settled`](Self::settled) waits until it is
    /// dropped. Drop it after the record has been passed to [`emit`](Self::emit).
    pub fn track(&self) -> RecordToken {
        RecordToken(self.in_flight.token())
    }

    /// Wait until every tracked record has been queued or has taken the fallback: no
    /// [`RecordToken`] is left and no record is waiting for queue space. Records tracked
    /// after this call are waited for too, and so are those of every proxy sharing this sink
    /// (its clones share one count).
    pub async fn settled(&self) {
        self.in_flight.close();
        self.in_flight.wait().await;
    }

    /// Records tracked and not yet queued (being built, or waiting for queue space).
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Note that a shutdown has cut the flows still open at its drain deadline: a record
    /// dropped unfinished from now on says so instead of blaming the client.
    pub fn note_drain_cut(&self) {
        self.shared.drain_cut.store(true, Ordering::Release);
    }

    /// Whether [`note_drain_cut`](Self::note_drain_cut) was called.
    pub fn drain_cut(&self) -> bool {
        self.shared.drain_cut.load(Ordering::Acquire)
    }

    fn overflow(&self, msg: Msg, why: Overflow) {
        self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        if let Msg::Record(rec) = msg {
            emit_fallback(&rec, why);
        }
    }

    /// Number of records that could not be queued (queue full past `full_wait`, or
    /// writer stopped). Each was emitted through the `audit_overflow` tracing target.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Number of I/O errors the writer hit (write, flush, or reopen failures).
    pub fn write_errors(&self) -> u64 {
        self.shared.write_errors.load(Ordering::Relaxed)
    }

    /// Number of records the writer took but could not write (a write, flush or open
    /// failed before the record was known to be written). Each was emitted through the
    /// `audit_overflow` tracing target.
    pub fn unwritten(&self) -> u64 {
        self.shared.unwritten.load(Ordering::Relaxed)
    }

    /// Number of records written to the audit output (and flushed).
    pub fn written(&self) -> u64 {
        self.shared.written.load(Ordering::Relaxed)
    }

    /// Ask the writer to reopen its file (log rotation, SIGUSR1). No-op for stdout/memory.
    ///
    /// Records queued before this call are written to the old file. If the queue is full,
    /// the reopen happens before the next record the writer takes instead.
    pub fn reopen(&self) {
        if !self.reopenable {
            return;
        }
        match self.tx.try_send(Msg::Reopen) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.shared.reopen_pending.store(true, Ordering::Release);
            }
        }
    }
}

/// A record on its way into a full queue. If it is dropped before it gets there (the writer
/// stopped, or the task was dropped unrun by a runtime shutting down), it takes the fallback.
struct Handover {
    sink: AuditSink,
    msg: Option<Msg>,
}

impl Drop for Handover {
    fn drop(&mut self) {
        if let Some(msg) = self.msg.take() {
            self.sink.overflow(msg, Overflow::WriterStopped);
        }
    }
}

#[derive(Clone, Copy)]
enum Overflow {
    QueueFull,
    WriterStopped,
    WriteFailed,
}

/// Last-resort output for a record the writer could not take or could not write.
fn emit_fallback(rec: &AuditRecord, why: Overflow) {
    let json =
        serde_json::to_string(rec).unwrap_or_else(|e| format!("{rec:?} (unserializable: {e})"));
    emit_fallback_json(&json, why);
}

/// [`emit_fallback`] for a record already serialized.
fn emit_fallback_json(json: &str, why: Overflow) {
    match why {
        Overflow::QueueFull => {
            tracing::error!(target: "audit_overflow", record = %json, "Audit queue full");
        }
        Overflow::WriterStopped => {
            tracing::error!(target: "audit_overflow", record = %json, "Audit writer stopped");
        }
        Overflow::WriteFailed => {
            tracing::error!(target: "audit_overflow", record = %json, "Audit write failed");
        }
    }
}

/// Owner of the writer thread; call [`shutdown`](Self::shutdown) to drain it.
///
/// Dropping it without `shutdown` leaves the writer running until every
/// [`AuditSink`] clone is dropped, after which it flushes and exits on its own.
#[derive(Debug)]
pub struct AuditWriter {
    tx: mpsc::Sender<Msg>,
    done: oneshot::Receiver<io::Result<()>>,
    thread: std::thread::JoinHandle<()>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Msg::Record(_) => "Record",
            Msg::Reopen => "Reopen",
            Msg::Shutdown => "Shutdown",
        })
    }
}

impl AuditWriter {
    /// Close the queue and wait until every queued record is written and flushed.
    ///
    /// Records offered after this point take the `audit_overflow` fallback. Returns the
    /// error of the final flush, if any (earlier errors are in
    /// [`AuditSink::write_errors`]), or an error if the writer thread panicked.
    pub async fn shutdown(self) -> io::Result<()> {
        let AuditWriter { tx, done, thread } = self;
        // In-band marker: everything queued before it is written first. An error means
        // the writer is already gone, which `done` reports below.
        let _ = tx.send(Msg::Shutdown).await;
        drop(tx);
        let result = done
            .await
            .unwrap_or_else(|_| Err(io::Error::other("audit writer thread panicked")));
        // The thread has finished its work; reap it without blocking the runtime.
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        result
    }
}

/// Open the target and spawn the writer with a bounded queue of `capacity` records
/// (at least 1), sealing unsigned with an empty start line ([`SealOptions::default`]).
///
/// Files are opened in append mode and created if missing; an open error is returned
/// now, before the proxy binds any port. `full_wait` is how long
/// [`AuditSink::record`] waits for queue space before falling back (e.g. 50 ms).
pub fn spawn(
    target: AuditTarget,
    capacity: usize,
    full_wait: Duration,
) -> io::Result<(AuditSink, AuditWriter)> {
    spawn_sealed(target, capacity, full_wait, SealOptions::default())
}

/// [`spawn`] with the start line's contents and, optionally, a key to sign checkpoints with.
pub fn spawn_sealed(
    target: AuditTarget,
    capacity: usize,
    full_wait: Duration,
    seal: SealOptions,
) -> io::Result<(AuditSink, AuditWriter)> {
    spawn_inner(target, capacity, full_wait, seal, None)
}

/// `spawn` with an optional gate: the writer takes nothing from the queue until the
/// gate's sender sends or is dropped. Tests use it to hold the writer deterministically.
fn spawn_inner(
    target: AuditTarget,
    capacity: usize,
    full_wait: Duration,
    seal: SealOptions,
    gate: Option<std::sync::mpsc::Receiver<()>>,
) -> io::Result<(AuditSink, AuditWriter)> {
    let reopenable = matches!(target, AuditTarget::File(_));
    let out = Output::open(target)?;
    let shared = Arc::new(Shared {
        dropped: AtomicU64::new(0),
        write_errors: AtomicU64::new(0),
        unwritten: AtomicU64::new(0),
        written: AtomicU64::new(0),
        reopen_pending: AtomicBool::new(false),
        drain_cut: AtomicBool::new(false),
    });
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let (done_tx, done_rx) = oneshot::channel();
    let thread_shared = Arc::clone(&shared);
    // The writer's own log lines (and the fallback of records it cannot write) go to the
    // subscriber of whoever started it, not only to the global one.
    let dispatch = tracing::dispatcher::get_default(Clone::clone);
    let thread = std::thread::Builder::new()
        .name("audit-writer".into())
        .spawn(move || {
            let _log = tracing::dispatcher::set_default(&dispatch);
            if let Some(gate) = gate {
                let _ = gate.recv();
            }
            let result = writer_loop(rx, out, &thread_shared, Sealer::new(seal));
            let _ = done_tx.send(result);
        })?;
    let sink = AuditSink {
        tx: tx.clone(),
        shared,
        full_wait,
        reopenable,
        in_flight: TaskTracker::new(),
        observer: Arc::new(ArcSwapOption::empty()),
    };
    Ok((
        sink,
        AuditWriter {
            tx,
            done: done_rx,
            thread,
        },
    ))
}

/// A batch is written once it holds this many bytes, even if more records are queued.
const BATCH_BYTES: usize = 64 * 1024;

/// Runs on the writer thread until the queue is closed and drained.
///
/// A sealed output begins with the start line; a reopen is preceded by a rotation checkpoint
/// (signing writers) and followed by a continue line; the last line is the final checkpoint.
fn writer_loop(
    mut rx: mpsc::Receiver<Msg>,
    mut out: Output,
    shared: &Shared,
    mut sealer: Sealer,
) -> io::Result<()> {
    let mut batch = Batch::default();
    let sealed = out.sealed();
    if sealed {
        sealer.start(&mut batch);
    }
    loop {
        let msg = match next_msg(&mut rx, sealer.due()) {
            Next::Msg(msg) => msg,
            Next::Due => {
                sealer.if_due(&mut batch);
                let _ = out.flush(&mut batch, shared);
                continue;
            }
            Next::Closed => break,
        };
        match msg {
            Msg::Record(rec) => {
                if shared.reopen_pending.swap(false, Ordering::AcqRel) {
                    rotate(&mut out, &mut batch, shared, &mut sealer);
                }
                out.write(&rec, &mut batch, shared, &mut sealer);
                if sealed {
                    sealer.after_record(&mut batch);
                }
            }
            Msg::Reopen => {
                shared.reopen_pending.store(false, Ordering::Release);
                rotate(&mut out, &mut batch, shared, &mut sealer);
            }
            // Refuse new records; `blocking_recv` still yields everything already queued.
            Msg::Shutdown => rx.close(),
        }
        if rx.is_empty() || batch.buf.len() >= BATCH_BYTES {
            if sealed {
                sealer.if_due(&mut batch);
            }
            // Errors are logged, counted and the records sent to the fallback inside.
            let _ = out.flush(&mut batch, shared);
        }
    }
    if sealed {
        sealer.checkpoint(&mut batch, End::Final);
    }
    out.flush(&mut batch, shared)
}

/// Reopen the file: records queued before the reopen go to the old file, which ends with a
/// rotation checkpoint; the new one begins with a continue line.
fn rotate(out: &mut Output, batch: &mut Batch, shared: &Shared, sealer: &mut Sealer) {
    if !matches!(out, Output::File { .. }) {
        return;
    }
    sealer.checkpoint(batch, End::Rotation);
    let _ = out.flush(batch, shared);
    out.reopen(shared);
    sealer.resume(batch);
}

/// While records keep arriving, the writer naps this long between drains instead of parking
/// on the queue: a parked writer must be woken by the request task that queues the next
/// record (a futex wake and a context switch per record on a busy proxy), a napping one
/// takes everything queued meanwhile in one batch.
const NAP: Duration = Duration::from_millis(2);

/// Empty naps in a row after which the writer parks on the queue again (an idle proxy does
/// not wake its writer hundreds of times a second).
const NAPS_BEFORE_PARK: u32 = 4;

/// The longest nap while records wait for a checkpoint that is due by time: the writer
/// cannot park then, or it would sleep past the checkpoint.
const DUE_NAP: Duration = Duration::from_millis(20);

/// What the writer does next.
enum Next {
    Msg(Msg),
    /// A checkpoint is due by time.
    Due,
    /// The queue is closed and empty.
    Closed,
}

/// The next message: at once if one is queued, else after naps of [`NAP`] while the proxy
/// is busy, else by parking until one arrives. While a checkpoint will be due (`due`), the
/// writer keeps napping instead of parking, and returns [`Next::Due`] once it is.
fn next_msg(rx: &mut mpsc::Receiver<Msg>, due: Option<std::time::Instant>) -> Next {
    for _ in 0..NAPS_BEFORE_PARK {
        match rx.try_recv() {
            Ok(msg) => return Next::Msg(msg),
            Err(mpsc::error::TryRecvError::Disconnected) => return Next::Closed,
            Err(mpsc::error::TryRecvError::Empty) => std::thread::sleep(NAP),
        }
    }
    let Some(due) = due else {
        return rx.blocking_recv().map_or(Next::Closed, Next::Msg);
    };
    loop {
        match rx.try_recv() {
            Ok(msg) => return Next::Msg(msg),
            Err(mpsc::error::TryRecvError::Disconnected) => return Next::Closed,
            Err(mpsc::error::TryRecvError::Empty) => {}
        }
        let now = std::time::Instant::now();
        if now >= due {
            return Next::Due;
        }
        std::thread::sleep((due - now).min(DUE_NAP));
    }
}

/// Install a SIGUSR1 handler task that calls `sink.reopen()` (unix only).
///
/// Must be called from within a Tokio runtime. The handler is installed before this
/// returns, so a SIGUSR1 sent afterwards no longer has its default (terminating) effect.
#[cfg(unix)]
pub fn spawn_reopen_on_sigusr1(sink: AuditSink) -> io::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut usr1 = signal(SignalKind::user_defined1())?;
    Ok(tokio::spawn(async move {
        while usr1.recv().await.is_some() {
            tracing::info!("SIGUSR1: reopening audit file");
            sink.reopen();
        }
    }))
}

/// Install a SIGUSR1 handler task that calls `sink.reopen()` (unix only; always an
/// `Unsupported` error on this platform).
#[cfg(not(unix))]
pub fn spawn_reopen_on_sigusr1(_sink: AuditSink) -> io::Result<tokio::task::JoinHandle<()>> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "SIGUSR1 is only available on unix",
    ))
}

#[cfg(test)]
mod tests;
