//! Audit stage: exactly one JSON line per request or tunnel.
//!
//! The audit log is the evidence information-governance staff read to learn where data
//! went, so this module is built around one rule: a record is never silently lost.
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

use std::fs::{File, OpenOptions};
use std::io::{self, Stdout, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;

/// The serialized key of every [`AuditRecord`] field, for reuse as tracing field names.
pub mod keys {
    /// Time the record was produced (RFC 3339 UTC, milliseconds).
    pub const TS: &str = "ts";
    /// Name of the listener that accepted the connection.
    pub const LISTENER: &str = "listener";
    /// Client socket address.
    pub const CLIENT_ADDR: &str = "client.addr";
    /// `forward`, `connect` or `reverse`.
    pub const INTENT: &str = "intent";
    /// Destination host name as requested.
    pub const DEST_HOST: &str = "dest.host";
    /// Destination port.
    pub const DEST_PORT: &str = "dest.port";
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
    /// Human-readable reason for the decision.
    pub const REASON: &str = "reason";
    /// Policy rule that produced the decision.
    pub const RULE: &str = "rule";
    /// Active adequacy profile.
    pub const PROFILE: &str = "profile";
    /// GeoIP database build date.
    pub const DB_VERSION: &str = "db.version";
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

    /// Every key, in serialization order.
    pub const ALL: [&str; 21] = [
        TS,
        LISTENER,
        CLIENT_ADDR,
        INTENT,
        DEST_HOST,
        DEST_PORT,
        DEST_ADDRS,
        DIALED_IP,
        DECISION,
        MODE,
        WOULD_DENY,
        REASON,
        RULE,
        PROFILE,
        DB_VERSION,
        BYTES_UP,
        BYTES_DOWN,
        DURATION_MS,
        STATUS,
        ERROR_SIDE,
        ERROR,
    ];
}

/// One resolved address of the destination, with where it is.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AuditAddr {
    /// The resolved address.
    pub ip: IpAddr,
    /// Jurisdiction code the address maps to.
    pub jurisdiction: String,
    /// Jurisdiction class (for example adequate / non-adequate / unknown).
    pub class: String,
    /// Which data source produced the mapping.
    pub source: String,
    /// The matching prefix, in CIDR notation.
    pub prefix: String,
}

/// The audit record: one per request or tunnel. Keys are listed in [`keys`].
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
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
    /// `forward`, `connect` or `reverse`.
    #[serde(rename = "intent")]
    pub intent: String,
    /// Destination host name as requested.
    #[serde(rename = "dest.host")]
    pub dest_host: Option<String>,
    /// Destination port.
    #[serde(rename = "dest.port")]
    pub dest_port: Option<u16>,
    /// Every resolved address of the destination with its jurisdiction.
    #[serde(rename = "dest.addrs")]
    pub dest_addrs: Vec<AuditAddr>,
    /// The address actually dialed, if any.
    #[serde(rename = "dialed.ip")]
    pub dialed_ip: Option<IpAddr>,
    /// `allow` or `deny`.
    #[serde(rename = "decision")]
    pub decision: String,
    /// `enforce` or `report`.
    #[serde(rename = "mode")]
    pub mode: String,
    /// True when enforce mode would have denied this flow.
    #[serde(rename = "would_deny")]
    pub would_deny: bool,
    /// Human-readable reason for the decision.
    #[serde(rename = "reason")]
    pub reason: String,
    /// Policy rule that produced the decision.
    #[serde(rename = "rule")]
    pub rule: Option<String>,
    /// Active adequacy profile.
    #[serde(rename = "profile")]
    pub profile: String,
    /// GeoIP database build date.
    #[serde(rename = "db.version")]
    pub db_version: String,
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
    #[serde(rename = "error.side")]
    pub error_side: Option<String>,
    /// Error message, if the request failed.
    #[serde(rename = "error")]
    pub error: Option<String>,
}

/// The current time as RFC 3339 UTC with milliseconds, e.g. `2026-11-23T11:00:00.123Z`.
pub fn now_rfc3339() -> String {
    format_rfc3339_millis(SystemTime::now())
}

/// Format `t` as RFC 3339 UTC with milliseconds (`YYYY-MM-DDTHH:MM:SS.mmmZ`).
///
/// Times before 1970 are handled; the millisecond part is truncated, not rounded.
pub fn format_rfc3339_millis(t: SystemTime) -> String {
    let millis: i64 = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        // Before the epoch: floor towards the past so the millisecond field stays positive.
        Err(e) => {
            let d = e.duration();
            let whole = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
            let has_fraction = d.as_nanos() % 1_000_000 != 0;
            -whole - i64::from(has_fraction)
        }
    };
    let days = millis.div_euclid(86_400_000);
    let ms_of_day = millis.rem_euclid(86_400_000);
    let (year, month, day) = civil_from_days(days);
    let secs = ms_of_day / 1000;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        ms_of_day % 1000
    )
}

/// Days since 1970-01-01 to proleptic Gregorian (year, month, day).
/// Howard Hinnant's `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March-based
    let d = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    (if m <= 2 { y + 1 } else { y }, m, d)
}

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
}

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
    /// fallback at once.
    pub fn emit(&self, rec: AuditRecord) {
        let msg = Msg::Record(Box::new(rec));
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
/// (at least 1).
///
/// Files are opened in append mode and created if missing; an open error is returned
/// now, before the proxy binds any port. `full_wait` is how long
/// [`AuditSink::record`] waits for queue space before falling back (e.g. 50 ms).
pub fn spawn(
    target: AuditTarget,
    capacity: usize,
    full_wait: Duration,
) -> io::Result<(AuditSink, AuditWriter)> {
    spawn_inner(target, capacity, full_wait, None)
}

/// `spawn` with an optional gate: the writer takes nothing from the queue until the
/// gate's sender sends or is dropped. Tests use it to hold the writer deterministically.
fn spawn_inner(
    target: AuditTarget,
    capacity: usize,
    full_wait: Duration,
    gate: Option<std::sync::mpsc::Receiver<()>>,
) -> io::Result<(AuditSink, AuditWriter)> {
    let reopenable = matches!(target, AuditTarget::File(_));
    let out = Output::open(target)?;
    let shared = Arc::new(Shared {
        dropped: AtomicU64::new(0),
        write_errors: AtomicU64::new(0),
        unwritten: AtomicU64::new(0),
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
            let result = writer_loop(rx, out, &thread_shared);
            let _ = done_tx.send(result);
        })?;
    let sink = AuditSink {
        tx: tx.clone(),
        shared,
        full_wait,
        reopenable,
        in_flight: TaskTracker::new(),
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
fn writer_loop(mut rx: mpsc::Receiver<Msg>, mut out: Output, shared: &Shared) -> io::Result<()> {
    let mut batch = Batch::default();
    while let Some(msg) = rx.blocking_recv() {
        match msg {
            Msg::Record(rec) => {
                if shared.reopen_pending.swap(false, Ordering::AcqRel) {
                    let _ = out.flush(&mut batch, shared);
                    out.reopen(shared);
                }
                out.write(&rec, &mut batch, shared);
            }
            Msg::Reopen => {
                shared.reopen_pending.store(false, Ordering::Release);
                // Records queued before the reopen go to the old file.
                let _ = out.flush(&mut batch, shared);
                out.reopen(shared);
            }
            // Refuse new records; `blocking_recv` still yields everything already queued.
            Msg::Shutdown => rx.close(),
        }
        if rx.is_empty() || batch.buf.len() >= BATCH_BYTES {
            // Errors are logged, counted and the records sent to the fallback inside.
            let _ = out.flush(&mut batch, shared);
        }
    }
    out.flush(&mut batch, shared)
}

/// Lines serialized but not yet written, each kept until its write has succeeded.
#[derive(Default)]
struct Batch {
    buf: Vec<u8>,
    /// End offset in `buf` of each line (after its newline).
    ends: Vec<usize>,
}

impl Batch {
    /// The line ending at `ends[i]`, without its newline.
    fn line(&self, i: usize) -> &[u8] {
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
fn write_flush<W: Write>(w: &mut W, buf: &[u8]) -> Result<(), (usize, io::Error)> {
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
enum Output {
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
    fn open(target: AuditTarget) -> io::Result<Self> {
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
    fn write(&mut self, rec: &AuditRecord, batch: &mut Batch, shared: &Shared) {
        if let Output::Memory(records) = self {
            records
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(rec.clone());
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
        batch.buf.push(b'\n');
        batch.ends.push(batch.buf.len());
    }

    /// Write and flush the batch. Every record not known to be written (from the one the
    /// failure hit, or all of them after a failed flush or open) is emitted through the
    /// fallback and counted in `unwritten`; the batch is empty afterwards.
    fn flush(&mut self, batch: &mut Batch, shared: &Shared) -> io::Result<()> {
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
            Ok(()) => Ok(()),
            Err((written, e)) => {
                let first_lost = batch.ends.partition_point(|&end| end <= written);
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
    fn reopen(&mut self, shared: &Shared) {
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
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    const WAIT: Duration = Duration::from_millis(20);

    fn rec(n: u64) -> AuditRecord {
        AuditRecord {
            ts: now_rfc3339(),
            listener: format!("l{n}"),
            intent: "forward".into(),
            decision: "allow".into(),
            mode: "enforce".into(),
            bytes_up: n,
            ..AuditRecord::default()
        }
    }

    fn memory() -> (AuditTarget, Arc<Mutex<Vec<AuditRecord>>>) {
        let records = Arc::new(Mutex::new(Vec::new()));
        (AuditTarget::Memory(Arc::clone(&records)), records)
    }

    fn lines(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn listeners(values: &[serde_json::Value]) -> Vec<String> {
        values
            .iter()
            .map(|v| v["listener"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn serialized_keys_are_exactly_the_dotted_names() {
        let full = AuditRecord {
            ts: "2026-11-23T11:00:00.123Z".into(),
            listener: "main".into(),
            client_addr: Some("192.0.2.1:40000".parse().unwrap()),
            intent: "connect".into(),
            dest_host: Some("example.com".into()),
            dest_port: Some(443),
            dest_addrs: vec![AuditAddr {
                ip: "2001:db8::1".parse().unwrap(),
                jurisdiction: "DE".into(),
                class: "adequate".into(),
                source: "geoip".into(),
                prefix: "2001:db8::/32".into(),
            }],
            dialed_ip: Some("2001:db8::1".parse().unwrap()),
            decision: "deny".into(),
            mode: "report".into(),
            would_deny: true,
            reason: "jurisdiction US not in profile".into(),
            rule: Some("eu-only".into()),
            profile: "gdpr".into(),
            db_version: "2026-11-01".into(),
            bytes_up: 10,
            bytes_down: 20,
            duration_ms: 1.5,
            status: Some(403),
            error_side: Some("upstream".into()),
            error: Some("reset".into()),
        };
        for r in [full, AuditRecord::default()] {
            let v = serde_json::to_value(&r).unwrap();
            let got: BTreeSet<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
            let want: BTreeSet<&str> = keys::ALL.into_iter().collect();
            assert_eq!(got, want);
            assert_eq!(keys::ALL.len(), 21);
        }

        let v = serde_json::to_value(AuditRecord {
            client_addr: Some("192.0.2.1:40000".parse().unwrap()),
            dest_addrs: vec![AuditAddr {
                ip: "198.51.100.7".parse().unwrap(),
                jurisdiction: "US".into(),
                class: "non-adequate".into(),
                source: "geoip".into(),
                prefix: "198.51.100.0/24".into(),
            }],
            ..AuditRecord::default()
        })
        .unwrap();
        assert_eq!(v[keys::CLIENT_ADDR], "192.0.2.1:40000");
        assert_eq!(v[keys::DIALED_IP], serde_json::Value::Null);
        let addr = &v[keys::DEST_ADDRS][0];
        let addr_keys: BTreeSet<&str> = addr
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            addr_keys,
            ["class", "ip", "jurisdiction", "prefix", "source"]
                .into_iter()
                .collect()
        );
        assert_eq!(addr["ip"], "198.51.100.7");
    }

    #[test]
    fn ts_format() {
        let at = |ms: i64| {
            let t = if ms >= 0 {
                UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs())
            } else {
                UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
            };
            format_rfc3339_millis(t)
        };
        assert_eq!(at(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(1_795_431_600_123), "2026-11-23T11:00:00.123Z");
        assert_eq!(at(951_868_799_999), "2000-02-29T23:59:59.999Z");
        assert_eq!(at(951_868_800_000), "2000-03-01T00:00:00.000Z");
        assert_eq!(at(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(at(-2_208_988_800_000), "1900-01-01T00:00:00.000Z");
        // Sub-millisecond parts are truncated.
        assert_eq!(
            format_rfc3339_millis(UNIX_EPOCH + Duration::from_nanos(1_999_999)),
            "1970-01-01T00:00:00.001Z"
        );

        let now = now_rfc3339();
        let b = now.as_bytes();
        assert_eq!(b.len(), 24, "{now}");
        for (i, c) in b.iter().enumerate() {
            match i {
                4 | 7 => assert_eq!(*c, b'-', "{now}"),
                10 => assert_eq!(*c, b'T', "{now}"),
                13 | 16 => assert_eq!(*c, b':', "{now}"),
                19 => assert_eq!(*c, b'.', "{now}"),
                23 => assert_eq!(*c, b'Z', "{now}"),
                _ => assert!(c.is_ascii_digit(), "{now}"),
            }
        }
    }

    #[tokio::test]
    async fn memory_target_collects_records_in_order() {
        let (target, records) = memory();
        let (sink, writer) = spawn(target, 16, WAIT).unwrap();
        for n in 0..5 {
            sink.clone().record(rec(n)).await;
        }
        sink.reopen(); // no-op for memory
        writer.shutdown().await.unwrap();
        let got = records.lock().unwrap().clone();
        assert_eq!(
            got.iter().map(|r| r.bytes_up).collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 4]
        );
        assert_eq!(sink.dropped(), 0);
    }

    #[tokio::test]
    async fn file_target_writes_one_line_per_record_and_appends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        std::fs::write(&path, "{\"listener\":\"existing\"}\n").unwrap();
        let (sink, writer) = spawn(AuditTarget::File(path.clone()), 8, WAIT).unwrap();
        for n in 0..100 {
            sink.record(rec(n)).await;
        }
        writer.shutdown().await.unwrap();
        let values = lines(&path);
        assert_eq!(values.len(), 101);
        assert_eq!(values[0]["listener"], "existing");
        for (n, v) in values[1..].iter().enumerate() {
            assert_eq!(v["listener"], format!("l{n}"));
            assert_eq!(v[keys::BYTES_UP], n as u64);
        }
        assert_eq!(sink.dropped(), 0);
        assert_eq!(sink.write_errors(), 0);
    }

    #[test]
    fn spawn_fails_now_when_file_cannot_be_opened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join("audit.log");
        let err = spawn(AuditTarget::File(path), 8, WAIT).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("audit.log"), "{err}");
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn reopen_after_rename_writes_to_fresh_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let rotated = dir.path().join("audit.log.1");
        let (sink, writer) = spawn(AuditTarget::File(path.clone()), 64, WAIT).unwrap();
        sink.record(rec(1)).await;
        sink.record(rec(2)).await;
        // Simulated logrotate: rename, then signal. Records queued before `reopen` go to
        // the handle the writer already holds, i.e. the renamed file, whenever written.
        std::fs::rename(&path, &rotated).unwrap();
        sink.reopen();
        sink.record(rec(3)).await;
        sink.record(rec(4)).await;
        writer.shutdown().await.unwrap();
        assert_eq!(listeners(&lines(&rotated)), ["l1", "l2"]);
        assert_eq!(listeners(&lines(&path)), ["l3", "l4"]);
        assert_eq!(sink.write_errors(), 0);
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn reopen_with_full_queue_happens_before_next_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let rotated = dir.path().join("audit.log.1");
        let (gate, held) = std::sync::mpsc::channel();
        let (sink, writer) =
            spawn_inner(AuditTarget::File(path.clone()), 1, WAIT, Some(held)).unwrap();
        sink.record(rec(1)).await; // fills the queue; the writer is held
        std::fs::rename(&path, &rotated).unwrap();
        sink.reopen(); // cannot be queued: falls back to the pending flag
        drop(gate);
        writer.shutdown().await.unwrap();
        assert!(lines(&rotated).is_empty());
        assert_eq!(listeners(&lines(&path)), ["l1"]);
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn failed_reopen_is_counted_and_never_panics() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("logs");
        std::fs::create_dir(&sub).unwrap();
        let path = sub.join("audit.log");
        let (sink, writer) = spawn(AuditTarget::File(path.clone()), 8, WAIT).unwrap();
        sink.record(rec(1)).await;
        std::fs::remove_dir_all(&sub).unwrap();
        sink.reopen(); // directory gone: the open fails
        sink.record(rec(2)).await; // retries the open, fails, takes the fallback
        writer.shutdown().await.unwrap();
        assert_eq!(sink.write_errors(), 2);
        assert_eq!(sink.dropped(), 0);
    }

    #[tokio::test]
    async fn full_queue_counts_drops_and_record_returns() {
        let (target, records) = memory();
        let (gate, held) = std::sync::mpsc::channel();
        let (sink, writer) = spawn_inner(target, 1, WAIT, Some(held)).unwrap();
        // The writer is held before it takes anything, so the queue holds exactly one.
        sink.record(rec(1)).await;
        sink.record(rec(2)).await; // waits `full_wait`, then falls back
        sink.record(rec(3)).await;
        assert_eq!(sink.dropped(), 2);
        gate.send(()).unwrap();
        writer.shutdown().await.unwrap();
        let got = records.lock().unwrap().clone();
        assert_eq!(got.iter().map(|r| r.bytes_up).collect::<Vec<_>>(), vec![1]);
        assert_eq!(sink.dropped(), 2);
    }

    #[tokio::test]
    async fn zero_wait_and_zero_capacity_are_safe() {
        let (target, records) = memory();
        let (gate, held) = std::sync::mpsc::channel();
        let (sink, writer) = spawn_inner(target, 0, Duration::ZERO, Some(held)).unwrap();
        sink.record(rec(1)).await;
        sink.record(rec(2)).await;
        assert_eq!(sink.dropped(), 1);
        drop(gate);
        writer.shutdown().await.unwrap();
        assert_eq!(records.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn shutdown_drains_every_queued_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let (gate, held) = std::sync::mpsc::channel();
        let (sink, writer) =
            spawn_inner(AuditTarget::File(path.clone()), 500, WAIT, Some(held)).unwrap();
        for n in 0..400 {
            sink.record(rec(n)).await;
        }
        assert_eq!(sink.dropped(), 0);
        // Nothing has been written yet; release the writer and shut down at once.
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        drop(gate);
        writer.shutdown().await.unwrap();
        let values = lines(&path);
        assert_eq!(values.len(), 400);
        assert_eq!(
            listeners(&values),
            (0..400).map(|n| format!("l{n}")).collect::<Vec<_>>()
        );
    }

    #[tokio::test]
    async fn record_after_shutdown_takes_fallback() {
        let (target, records) = memory();
        let (sink, writer) = spawn(target, 4, WAIT).unwrap();
        sink.record(rec(1)).await;
        writer.shutdown().await.unwrap();
        sink.record(rec(2)).await; // writer gone: returns, counted, logged
        sink.reopen(); // harmless
        assert_eq!(sink.dropped(), 1);
        assert_eq!(records.lock().unwrap().len(), 1);
    }

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn fallback_emits_full_record_on_audit_overflow_target() {
        let capture = Capture::default();
        let writer_capture = capture.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(move || writer_capture.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);

        let (target, _records) = memory();
        let (sink, writer) = spawn(target, 4, WAIT).unwrap();
        writer.shutdown().await.unwrap();
        sink.record(rec(7)).await; // writer gone: synchronous fallback on this thread

        let out = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
        let event: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
        assert_eq!(event["target"], "audit_overflow");
        assert_eq!(event["level"], "ERROR");
        let record: serde_json::Value =
            serde_json::from_str(event["fields"]["record"].as_str().unwrap()).unwrap();
        assert_eq!(record[keys::LISTENER], "l7");
        assert_eq!(record[keys::BYTES_UP], 7);
    }

    /// Capture what the tracing subscriber set by the returned guard writes (JSON lines).
    fn capture_log() -> (Capture, tracing::subscriber::DefaultGuard) {
        let capture = Capture::default();
        let writer_capture = capture.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(move || writer_capture.clone())
            .finish();
        (capture, tracing::subscriber::set_default(subscriber))
    }

    /// The `listener` of every record the fallback emitted, from a captured JSON log.
    fn fallback_listeners(capture: &Capture) -> Vec<String> {
        let out = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
        out.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|e| e["target"] == "audit_overflow")
            .map(|e| {
                let rec: serde_json::Value =
                    serde_json::from_str(e["fields"]["record"].as_str().unwrap()).unwrap();
                rec[keys::LISTENER].as_str().unwrap().to_owned()
            })
            .collect()
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn records_that_cannot_be_written_go_to_the_fallback_and_are_counted() {
        let (capture, _guard) = capture_log();
        // Every write to /dev/full fails with ENOSPC.
        let (sink, writer) = spawn(AuditTarget::File("/dev/full".into()), 64, WAIT).unwrap();
        for n in 0..5 {
            sink.record(rec(n)).await;
        }
        // The final flush may or may not be the one that failed; the counters tell.
        let _ = writer.shutdown().await;
        assert_eq!(sink.unwritten(), 5);
        assert!(sink.write_errors() >= 1);
        assert_eq!(sink.dropped(), 0);
        let mut got = fallback_listeners(&capture);
        got.sort();
        assert_eq!(got, ["l0", "l1", "l2", "l3", "l4"], "each record once");
    }

    /// Takes `limit` bytes, then fails every write.
    struct Limited {
        taken: Vec<u8>,
        limit: usize,
    }

    impl Write for Limited {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let room = self.limit - self.taken.len();
            if room == 0 {
                return Err(io::Error::other("disk full"));
            }
            let n = buf.len().min(room);
            self.taken.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_write_cut_mid_batch_loses_only_the_records_not_fully_written() {
        let mut batch = Batch::default();
        for line in [&b"{\"a\":1}"[..], b"{\"b\":2}", b"{\"c\":3}"] {
            batch.buf.extend_from_slice(line);
            batch.buf.push(b'\n');
            batch.ends.push(batch.buf.len());
        }
        // The first line and half of the second get through.
        let mut w = Limited {
            taken: Vec::new(),
            limit: 12,
        };
        let (written, _) = write_flush(&mut w, &batch.buf).unwrap_err();
        assert_eq!(written, 12);
        let first_lost = batch.ends.partition_point(|&end| end <= written);
        assert_eq!(first_lost, 1);
        assert_eq!(batch.line(1), b"{\"b\":2}");
        assert_eq!(batch.line(2), b"{\"c\":3}");
    }

    /// Poll `fut` once: is it still pending?
    async fn pending<F: std::future::Future>(fut: std::pin::Pin<&mut F>) -> bool {
        let mut fut = fut;
        std::future::poll_fn(|cx| std::task::Poll::Ready(fut.as_mut().poll(cx).is_pending())).await
    }

    #[tokio::test]
    async fn settled_waits_for_every_recorder_and_for_records_waiting_for_space() {
        use crate::record::Recorder;
        let (target, records) = memory();
        let (gate, held) = std::sync::mpsc::channel();
        // Queue of one, writer held, and a wait for space far longer than the test.
        let (sink, writer) = spawn_inner(target, 1, Duration::from_secs(3600), Some(held)).unwrap();
        let mut first = Recorder::new(sink.clone(), rec(1));
        let second = Recorder::new(sink.clone(), rec(2));
        assert_eq!(sink.in_flight(), 2);
        first.finish(); // fills the queue
        drop(second); // no space: handed to a tracked task
        assert_eq!(sink.in_flight(), 1, "the second waits for queue space");
        {
            let settled = sink.settled();
            tokio::pin!(settled);
            assert!(
                pending(settled.as_mut()).await,
                "a record is not queued yet"
            );
            gate.send(()).unwrap(); // the writer takes the first; the second gets its place
            settled.await;
        }
        assert_eq!(sink.in_flight(), 0);
        writer.shutdown().await.unwrap();
        let got = records.lock().unwrap().clone();
        let names: Vec<&str> = got.iter().map(|r| r.listener.as_str()).collect();
        assert_eq!(names, ["l1", "l2"]);
        assert_eq!(sink.dropped(), 0);
        // Dropped unfinished before any shutdown cut: the client is blamed.
        assert_eq!(got[1].error_side.as_deref(), Some("downstream"));
    }

    #[test]
    fn a_record_whose_handover_task_never_runs_takes_the_fallback() {
        let (target, records) = memory();
        let (gate, held) = std::sync::mpsc::channel();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let (sink, writer) = rt
            .block_on(async { spawn_inner(target, 1, Duration::from_secs(3600), Some(held)) })
            .unwrap();
        rt.block_on(async {
            sink.emit(rec(1)); // fills the queue
            sink.emit(rec(2)); // handed to a task that never gets to run
        });
        assert_eq!(sink.in_flight(), 1);
        drop(rt); // drops the unrun task
        assert_eq!(sink.in_flight(), 0);
        assert_eq!(sink.dropped(), 1, "counted and logged, not lost silently");
        drop(gate);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(writer.shutdown()).unwrap();
        assert_eq!(records.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_recorder_dropped_after_a_drain_cut_says_the_proxy_cut_it() {
        use crate::record::Recorder;
        let (target, records) = memory();
        let (sink, writer) = spawn(target, 4, WAIT).unwrap();
        let open = Recorder::new(sink.clone(), rec(1));
        sink.note_drain_cut();
        drop(open);
        sink.settled().await;
        writer.shutdown().await.unwrap();
        let got = records.lock().unwrap().clone();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].error_side.as_deref(), Some("internal"));
        assert!(
            got[0].error.as_deref().unwrap().contains("drain time"),
            "{got:?}"
        );
    }

    #[tokio::test]
    async fn concurrent_producers_lose_nothing_when_writer_keeps_up() {
        let (target, records) = memory();
        let (sink, writer) = spawn(target, 1024, Duration::from_secs(5)).unwrap();
        let mut tasks = Vec::new();
        for t in 0..8u64 {
            let sink = sink.clone();
            tasks.push(tokio::spawn(async move {
                for n in 0..100 {
                    sink.record(rec(t * 1000 + n)).await;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        writer.shutdown().await.unwrap();
        assert_eq!(records.lock().unwrap().len(), 800);
        assert_eq!(sink.dropped(), 0);
    }
}
