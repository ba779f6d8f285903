use super::output::write_flush;
use super::*;
use crate::audit::{AuditAddr, Intent, keys, now_rfc3339};
use crate::error::Side;
use crate::policy::{Mode, Reason, Verdict};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;

const WAIT: Duration = Duration::from_millis(20);

fn rec(n: u64) -> AuditRecord {
    AuditRecord {
        ts: now_rfc3339(),
        listener: format!("l{n}"),
        intent: Intent::Forward,
        decision: Verdict::Allow,
        mode: Mode::Enforce,
        bytes_up: n,
        ..AuditRecord::default()
    }
}

fn memory() -> (AuditTarget, Arc<Mutex<Vec<AuditRecord>>>) {
    let records = Arc::new(Mutex::new(Vec::new()));
    (AuditTarget::Memory(Arc::clone(&records)), records)
}

/// The flow records of a file (its start, continue and checkpoint lines left out).
fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("kind").is_none())
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
        intent: Intent::Connect,
        dest_host: Some("example.com".into()),
        dest_port: Some(443),
        dest_claimed: Some("example.com".into()),
        dest_verified: Some(true),
        dest_addrs: vec![AuditAddr {
            ip: "2001:db8::1".parse().unwrap(),
            jurisdiction: "DE".into(),
            class: "adequate".into(),
            source: "geoip".into(),
            prefix: "2001:db8::/32".into(),
        }],
        dialed_ip: Some("2001:db8::1".parse().unwrap()),
        decision: Verdict::Deny,
        mode: Mode::Report,
        would_deny: true,
        reason: Reason::NotAdequate.into(),
        rule: Some("eu-only".into()),
        profile: "gdpr".into(),
        db_version: "2026-11-01".into(),
        data_versions: "geoip=2026-11-01 aws=1761894521".into(),
        bytes_up: 10,
        bytes_down: 20,
        duration_ms: 1.5,
        status: Some(403),
        error_side: Some(Side::Upstream),
        error: Some("reset".into()),
        closed_by: Some(crate::audit::ClosedBy::Reload),
    };
    for r in [full, AuditRecord::default()] {
        let v = serde_json::to_value(&r).unwrap();
        let got: BTreeSet<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let want: BTreeSet<&str> = keys::ALL.into_iter().collect();
        assert_eq!(got, want);
        assert_eq!(keys::ALL.len(), 25);
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
    let (sink, writer) = spawn_inner(
        AuditTarget::File(path.clone()),
        1,
        WAIT,
        SealOptions::default(),
        Some(held),
    )
    .unwrap();
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
    let (sink, writer) = spawn_inner(target, 1, WAIT, SealOptions::default(), Some(held)).unwrap();
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
    let (sink, writer) = spawn_inner(
        target,
        0,
        Duration::ZERO,
        SealOptions::default(),
        Some(held),
    )
    .unwrap();
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
    let (sink, writer) = spawn_inner(
        AuditTarget::File(path.clone()),
        500,
        WAIT,
        SealOptions::default(),
        Some(held),
    )
    .unwrap();
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
    use crate::audit::recorder::Recorder;
    let (target, records) = memory();
    let (gate, held) = std::sync::mpsc::channel();
    // Queue of one, writer held, and a wait for space far longer than the test.
    let (sink, writer) = spawn_inner(
        target,
        1,
        Duration::from_secs(3600),
        SealOptions::default(),
        Some(held),
    )
    .unwrap();
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
        .block_on(async {
            spawn_inner(
                target,
                1,
                Duration::from_secs(3600),
                SealOptions::default(),
                Some(held),
            )
        })
        .unwrap();
    rt.block_on(async {
        sink.emit(Box::new(rec(1))); // fills the queue
        sink.emit(Box::new(rec(2))); // handed to a task that never gets to run
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
    use crate::audit::recorder::Recorder;
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
