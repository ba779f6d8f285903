//! Stage 6: the audit record of one request or tunnel, emitted exactly once.
//!
//! A [`Recorder`] is created when a request arrives and travels with it: into the response
//! body of a forwarded request, into the task of a tunnel. Whatever happens (a deny, an error,
//! a client that hangs up mid-body), the record is emitted once, when the recorder is finished
//! or dropped, with the byte counts and duration at that moment.
//!
//! Each recorder holds a [`RecordToken`] of its sink from creation until its record is queued,
//! so a shutdown can wait for the record of every flow ([`AuditSink::settled`]), including
//! flows cut at the drain deadline: those are dropped unfinished and say so.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use crate::audit::{AuditAddr, AuditRecord, AuditSink, RecordToken};
use crate::error::{ProxyError, Side};
use crate::policy::{Decision, Profile};

/// Byte counters shared between body wrappers and the recorder.
#[derive(Debug, Default)]
pub struct Bytes2 {
    /// Client → destination.
    pub up: AtomicU64,
    /// Destination → client.
    pub down: AtomicU64,
}

/// Something a flow keeps in use until its record is emitted (a connection's busy mark, a
/// pool member's in-flight count). Shared by `Arc`, so holding it allocates nothing.
pub trait Release: Send + Sync {
    /// The record is emitted (or its flow dropped): give back the use `tag` names.
    fn release(&self, tag: usize);
}

/// One use a flow holds, given back (once) when it drops.
pub struct Held {
    by: Arc<dyn Release>,
    tag: usize,
}

impl Held {
    /// A use of `by`, named `tag`, held until the value drops.
    pub fn new(by: Arc<dyn Release>, tag: usize) -> Held {
        Held { by, tag }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.by.release(self.tag);
    }
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("tag", &self.tag)
            .finish_non_exhaustive()
    }
}

/// Builds one [`AuditRecord`] and emits it once.
pub struct Recorder {
    /// Boxed: the recorder moves with its request (into the response body), and the record
    /// goes to the writer boxed.
    rec: Option<Box<AuditRecord>>,
    sink: AuditSink,
    started: Instant,
    /// Byte counters for bodies and tunnels.
    pub bytes: Arc<Bytes2>,
    /// Uses given back once the record is emitted (the connection's busy mark, the pool
    /// member's in-flight count): two in place, any more beside them.
    held: [Option<Held>; 2],
    more_held: Vec<Held>,
    /// Keeps [`AuditSink::settled`] waiting until the record is queued.
    token: Option<RecordToken>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("rec", &self.rec)
            .finish_non_exhaustive()
    }
}

impl Recorder {
    /// Start a record.
    pub fn new(sink: AuditSink, base: AuditRecord) -> Recorder {
        Recorder {
            rec: Some(Box::new(base)),
            token: Some(sink.track()),
            sink,
            started: Instant::now(),
            bytes: Arc::new(Bytes2::default()),
            held: [None, None],
            more_held: Vec::new(),
        }
    }

    /// Keep `use_` until the record is emitted.
    pub fn hold(&mut self, use_: Held) {
        match self.held.iter_mut().find(|h| h.is_none()) {
            Some(slot) => *slot = Some(use_),
            None => self.more_held.push(use_),
        }
    }

    /// Mutable access to the record being built.
    pub fn rec(&mut self) -> &mut AuditRecord {
        self.rec.get_or_insert_with(Box::default)
    }

    /// Fill in the decision: every address with where it is, the verdict, mode and rule.
    pub fn decision(&mut self, d: &Decision, profile: &Profile) {
        let r = self.rec();
        r.dest_addrs = d
            .addrs
            .iter()
            .map(|a| AuditAddr {
                ip: a.ip,
                jurisdiction: a.decided_by.jurisdiction.code().into(),
                class: a.class.as_str().into(),
                source: a.decided_by.source_name().into(),
                prefix: prefix_text(&a.decided_by.prefix),
            })
            .collect();
        r.decision = d.verdict;
        r.mode = d.mode;
        r.would_deny = d.would_deny;
        r.reason = d.reason.into();
        r.rule = d.rule.as_deref().map(str::to_string);
        r.profile = profile.name.clone();
    }

    /// Record a failure.
    pub fn error(&mut self, e: &ProxyError) {
        let r = self.rec();
        r.status = Some(e.status().as_u16());
        r.error_side = Some(e.side());
        r.error = Some(e.to_string());
    }

    /// Emit now (idempotent; dropping emits too).
    pub fn finish(&mut self) {
        let Some(mut rec) = self.rec.take() else {
            return;
        };
        let _released = (
            std::mem::take(&mut self.held),
            std::mem::take(&mut self.more_held),
        );
        rec.bytes_up = self.bytes.up.load(Ordering::Relaxed);
        rec.bytes_down = self.bytes.down.load(Ordering::Relaxed);
        rec.duration_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        // Queued now, or handed to a task the sink tracks: only then is the token released.
        self.sink.emit(rec);
        self.token = None;
    }
}

/// `net` in CIDR notation, as `Display` spells it; IPv4 (the common case) without `fmt`.
fn prefix_text(net: &ipnet::IpNet) -> String {
    match net {
        ipnet::IpNet::V4(v4) => {
            let mut out = String::with_capacity(18);
            let mut digits = itoa::Buffer::new();
            for (i, octet) in v4.addr().octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                out.push_str(digits.format(octet));
            }
            out.push('/');
            out.push_str(digits.format(v4.prefix_len()));
            out
        }
        ipnet::IpNet::V6(_) => net.to_string(),
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        // Dropped without `finish`: the request or response was abandoned (usually the client
        // went away). Say so, so an aborted flow is never mistaken for a completed one.
        let cut = self.sink.drain_cut();
        if let Some(r) = self.rec.as_mut()
            && r.error.is_none()
        {
            if cut {
                // Shutdown cut the flow at its drain deadline: the proxy ended it, not the client.
                r.error_side = Some(Side::Internal);
                r.error = Some("cut at shutdown: the drain time ran out".into());
            } else {
                r.error_side = Some(Side::Downstream);
                r.error = Some(match r.status {
                    None => "client closed the connection before the response".into(),
                    Some(_) => "response not completed (client closed the connection)".into(),
                });
            }
        }
        self.finish();
    }
}

/// Which counter a [`Counted`] body adds to.
#[derive(Debug, Clone, Copy)]
pub enum Direction {
    /// Client → destination.
    Up,
    /// Destination → client.
    Down,
}

/// A body that counts its data bytes and, optionally, owns the recorder so the record is
/// emitted when the body is finished or dropped, and a value released when the body ends (for
/// example the guard that holds a client's reads to the body idle timeout while a request
/// body is being relayed).
pub struct Counted<B> {
    inner: B,
    bytes: Arc<Bytes2>,
    dir: Direction,
    recorder: Option<Recorder>,
    held: Option<Box<dyn Send + Sync>>,
}

impl<B> Counted<B> {
    /// Wrap `inner`.
    pub fn new(inner: B, bytes: Arc<Bytes2>, dir: Direction, recorder: Option<Recorder>) -> Self {
        Counted {
            inner,
            bytes,
            dir,
            recorder,
            held: None,
        }
    }

    /// Hold `value` until the body ends (its last frame, an error, or drop).
    pub fn holding<T: Send + Sync + 'static>(mut self, value: Option<T>) -> Self {
        self.held = value.map(|v| Box::new(v) as Box<dyn Send + Sync>);
        self
    }
}

impl<B> Body for Counted<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    let c = match this.dir {
                        Direction::Up => &this.bytes.up,
                        Direction::Down => &this.bytes.down,
                    };
                    c.fetch_add(d.len() as u64, Ordering::Relaxed);
                }
                // hyper stops polling a body that reports its end (e.g. Content-Length reached),
                // so the last data frame can be the end: finish there too.
                if this.inner.is_end_stream() {
                    this.held = None;
                    if let Some(mut rec) = this.recorder.take() {
                        rec.finish();
                    }
                }
            }
            Poll::Ready(None) => {
                this.held = None;
                if let Some(mut rec) = this.recorder.take() {
                    rec.finish();
                }
            }
            Poll::Ready(Some(Err(e))) => {
                this.held = None;
                // The body broke off: the record says where, never a clean finish.
                if let Some(mut rec) = this.recorder.take() {
                    let r = rec.rec();
                    let (side, what) = match this.dir {
                        Direction::Up => (Side::Downstream, "request body from the client"),
                        Direction::Down => (Side::Upstream, "response body from the upstream"),
                    };
                    r.error_side = Some(side);
                    r.error = Some(format!("{what} failed: {e}"));
                    rec.finish();
                }
            }
            Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// For an error that ended a client connection: `None` if hyper answered nothing because the
/// request was not malformed (I/O, timeouts), else `Some(status hyper wrote)`: 431 for a head
/// over the limit, 414 for a URI over hyper's limit, 400 for other parse errors, and `None`
/// inside for an HTTP/2 preface on an HTTP/1.1-only connection (hyper closes without a
/// response). Mirrors hyper's HTTP/1.1 server `on_error`.
pub fn hyper_refusal(e: &hyper::Error) -> Option<Option<hyper::StatusCode>> {
    use hyper::StatusCode;
    if e.is_parse_version_h2() {
        return Some(None);
    }
    if e.is_parse_too_large() {
        // hyper 1.x folds "URI too long" (answered 414) into `is_parse_too_large`; only its
        // message tells the two apart.
        let status = if e.to_string().contains("URI too long") {
            StatusCode::URI_TOO_LONG
        } else {
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        };
        return Some(Some(status));
    }
    e.is_parse().then_some(Some(StatusCode::BAD_REQUEST))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{self, AuditTarget};
    use http_body_util::BodyExt;
    use std::sync::Mutex;
    use std::time::Duration;

    #[test]
    fn prefixes_are_spelled_as_display_spells_them() {
        for text in [
            "0.0.0.0/0",
            "127.0.0.0/8",
            "81.2.69.0/24",
            "255.255.255.255/32",
            "2001:db8::/32",
            "::ffff:81.2.69.0/120",
        ] {
            let net: ipnet::IpNet = text.parse().expect("a prefix");
            assert_eq!(prefix_text(&net), net.to_string());
            assert_eq!(prefix_text(&net), text);
        }
    }

    /// A body yielding `frames` data frames, then the error if `fail`, else its end.
    struct Scripted {
        frames: Vec<Bytes>,
        fail: bool,
    }

    impl Body for Scripted {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            if !self.frames.is_empty() {
                let f = self.frames.remove(0);
                return Poll::Ready(Some(Ok(Frame::data(f))));
            }
            if std::mem::take(&mut self.fail) {
                return Poll::Ready(Some(Err(std::io::Error::other("connection reset"))));
            }
            Poll::Ready(None)
        }
    }

    async fn drain_body(fail: bool) -> AuditRecord {
        let records = Arc::new(Mutex::new(Vec::new()));
        let (sink, writer) = audit::spawn(
            AuditTarget::Memory(records.clone()),
            8,
            Duration::from_secs(1),
        )
        .unwrap();
        let rec = Recorder::new(sink.clone(), AuditRecord::default());
        let bytes = rec.bytes.clone();
        let inner = Scripted {
            frames: vec![Bytes::from_static(b"abc")],
            fail,
        };
        let body = Counted::new(inner, bytes, Direction::Down, Some(rec));
        let _ = body.collect().await;
        sink.settled().await;
        writer.shutdown().await.unwrap();
        let got = records.lock().unwrap().clone();
        assert_eq!(got.len(), 1, "{got:?}");
        got[0].clone()
    }

    #[tokio::test]
    async fn a_response_body_that_breaks_off_is_recorded_as_an_upstream_error() {
        let r = drain_body(true).await;
        assert_eq!(r.bytes_down, 3);
        assert_eq!(r.error_side.as_deref(), Some("upstream"));
        let e = r.error.unwrap_or_default();
        assert!(
            e.contains("response body") && e.contains("connection reset"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_response_body_that_ends_is_a_clean_finish() {
        let r = drain_body(false).await;
        assert_eq!(r.bytes_down, 3);
        assert_eq!(r.error_side, None);
        assert_eq!(r.error, None);
    }

    #[test]
    fn a_record_finished_outside_a_runtime_with_a_full_queue_takes_the_fallback() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let records = Arc::new(Mutex::new(Vec::new()));
        let (sink, writer) = rt
            .block_on(async {
                audit::spawn(
                    AuditTarget::Memory(records.clone()),
                    1,
                    Duration::from_secs(1),
                )
            })
            .unwrap();
        // Outside the runtime: the first record is queued, the rest cannot wait for space.
        for _ in 0..50 {
            Recorder::new(sink.clone(), AuditRecord::default()).finish();
        }
        assert_eq!(sink.in_flight(), 0);
        rt.block_on(writer.shutdown()).unwrap();
        let written = records.lock().unwrap().len() as u64;
        assert_eq!(
            written + sink.dropped(),
            50,
            "every record is written or counted"
        );
    }
}
