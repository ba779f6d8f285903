//! Stage 6: the audit record of one request or tunnel, emitted exactly once.
//!
//! A [`Recorder`] is created when a request arrives and travels with it: into the response
//! body of a forwarded request, into the task of a tunnel. Whatever happens (a deny, an error,
//! a client that hangs up mid-body), the record is emitted once, when the recorder is finished
//! or dropped, with the byte counts and duration at that moment.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use crate::audit::{AuditAddr, AuditRecord, AuditSink};
use crate::error::ProxyError;
use crate::policy::{Decision, Profile};

/// Byte counters shared between body wrappers and the recorder.
#[derive(Debug, Default)]
pub struct Bytes2 {
    /// Client → destination.
    pub up: AtomicU64,
    /// Destination → client.
    pub down: AtomicU64,
}

/// Builds one [`AuditRecord`] and emits it once.
pub struct Recorder {
    rec: Option<AuditRecord>,
    sink: AuditSink,
    started: Instant,
    /// Byte counters for bodies and tunnels.
    pub bytes: Arc<Bytes2>,
    /// Values released after the record is emitted (e.g. the connection's busy marker).
    held: Vec<Box<dyn std::any::Any + Send + Sync>>,
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
            rec: Some(base),
            sink,
            started: Instant::now(),
            bytes: Arc::new(Bytes2::default()),
            held: Vec::new(),
        }
    }

    /// Keep `value` alive until the record is emitted.
    pub fn hold<T: Send + Sync + 'static>(&mut self, value: T) {
        self.held.push(Box::new(value));
    }

    /// Mutable access to the record being built.
    pub fn rec(&mut self) -> &mut AuditRecord {
        self.rec.get_or_insert_with(AuditRecord::default)
    }

    /// Fill in the decision: every address with where it is, the verdict, mode and rule.
    pub fn decision(&mut self, d: &Decision, profile: &Profile) {
        let r = self.rec();
        r.dest_addrs = d
            .addrs
            .iter()
            .map(|a| AuditAddr {
                ip: a.ip,
                jurisdiction: a.decided_by.jurisdiction.code().to_string(),
                class: a.class.as_str().to_string(),
                source: a.decided_by.source.as_str().to_string(),
                prefix: a.decided_by.prefix.to_string(),
            })
            .collect();
        r.decision = d.verdict.as_str().to_string();
        r.mode = d.mode.as_str().to_string();
        r.would_deny = d.would_deny;
        r.reason = d.reason.as_str().to_string();
        r.rule = d.rule.as_deref().map(str::to_string);
        r.profile = profile.name.clone();
    }

    /// Record a failure.
    pub fn error(&mut self, e: &ProxyError) {
        let r = self.rec();
        r.status = Some(e.status().as_u16());
        r.error_side = Some(e.side().as_str().to_string());
        r.error = Some(e.to_string());
    }

    /// Emit now (idempotent; dropping emits too).
    pub fn finish(&mut self) {
        let Some(mut rec) = self.rec.take() else {
            return;
        };
        let _released = std::mem::take(&mut self.held);
        rec.bytes_up = self.bytes.up.load(Ordering::Relaxed);
        rec.bytes_down = self.bytes.down.load(Ordering::Relaxed);
        rec.duration_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        let sink = self.sink.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn(async move { sink.record(rec).await });
            }
            Err(_) => tracing::error!(
                target: "audit_overflow",
                record = %serde_json::to_string(&rec).unwrap_or_default(),
                "Audit record emitted outside the runtime"
            ),
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        // Dropped without `finish`: the request or response was abandoned (usually the client
        // went away). Say so, so an aborted flow is never mistaken for a completed one.
        if let Some(r) = self.rec.as_mut()
            && r.error.is_none()
        {
            r.error_side = Some("downstream".into());
            r.error = Some(match r.status {
                None => "client closed the connection before the response".into(),
                Some(_) => "response not completed (client closed the connection)".into(),
            });
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
/// emitted when the body is finished or dropped.
pub struct Counted<B> {
    inner: B,
    bytes: Arc<Bytes2>,
    dir: Direction,
    recorder: Option<Recorder>,
}

impl<B> Counted<B> {
    /// Wrap `inner`.
    pub fn new(inner: B, bytes: Arc<Bytes2>, dir: Direction, recorder: Option<Recorder>) -> Self {
        Counted {
            inner,
            bytes,
            dir,
            recorder,
        }
    }
}

impl<B> Body for Counted<B>
where
    B: Body<Data = Bytes> + Unpin,
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
                if this.inner.is_end_stream()
                    && let Some(mut rec) = this.recorder.take()
                {
                    rec.finish();
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => {
                if let Some(mut rec) = this.recorder.take() {
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
