//! Audit write throughput: how many records a second the writer thread seals and writes to a
//! file, and what each costs in CPU, unsigned (every line hash-chained) and signed (chained,
//! with a signed checkpoint every `CHECKPOINT` records). Also splits one line's cost into
//! serialization and the SHA-256 of its link, measured alone.
//!
//! ```text
//! cargo bench --bench audit_write -- RECORDS=1000000 MODE=both [OUT=/path/audit.log]
//! ```
//!
//! Records are realistic (one resolved address, data versions, client address) and pushed
//! through `audit::spawn` with the default queue (10,000) from one task, as request tasks do.
//! CPU is the whole process's (the producing task and the writer thread) from `getrusage`.
//! With `OUT`, the last run's log is kept there (for `residency-proxy verify`).

#[path = "common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use residency_proxy::audit::{self, AuditAddr, AuditRecord, AuditTarget, Intent, SealOptions};
use residency_proxy::evidence::SigningKey;
use residency_proxy::evidence::chain;
use residency_proxy::policy::{Mode, Reason, Verdict};

const QUEUE: usize = 10_000;
const FULL_WAIT: Duration = Duration::from_millis(50);

fn record(n: u64) -> AuditRecord {
    AuditRecord {
        ts: audit::now_rfc3339(),
        listener: "egress".into(),
        client_addr: Some(
            format!(
                "10.1.{}.{}:{}",
                (n >> 8) & 0xff,
                n & 0xff,
                40000 + n % 20000
            )
            .parse()
            .unwrap_or_else(|_| "10.0.0.1:40000".parse().unwrap()),
        ),
        intent: Intent::Connect,
        dest_host: Some(format!("api{}.example.co.uk", n % 100)),
        dest_port: Some(443),
        dest_addrs: vec![AuditAddr {
            ip: "203.0.113.9"
                .parse()
                .unwrap_or(std::net::Ipv4Addr::LOCALHOST.into()),
            jurisdiction: "GB".into(),
            class: "home".into(),
            source: "geoip".into(),
            prefix: "203.0.113.0/24".into(),
        }],
        dialed_ip: "203.0.113.9".parse().ok(),
        decision: Verdict::Allow,
        mode: Mode::Enforce,
        reason: Reason::Home.into(),
        rule: Some("default".into()),
        profile: "uk-adequate".into(),
        db_version: "2026-11-01".into(),
        data_versions: "geoip=2026-11-01 aws=1761894521 azure=392 gcp=2026-11-20".into(),
        bytes_up: 1200 + n % 977,
        bytes_down: 48_000 + n % 7919,
        duration_ms: 12.5,
        status: Some(200),
        ..AuditRecord::default()
    }
}

/// User plus system CPU of this process so far.
fn cpu() -> Duration {
    let mut u = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: getrusage fills the struct it is given.
    let r = unsafe { libc::getrusage(libc::RUSAGE_SELF, u.as_mut_ptr()) };
    if r != 0 {
        return Duration::ZERO;
    }
    // SAFETY: initialised by the successful call above.
    let u = unsafe { u.assume_init() };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

struct Run {
    secs: f64,
    cpu: Duration,
    bytes: u64,
}

fn run(path: &Path, records: u64, seal: SealOptions) -> Result<Run, String> {
    let _ = std::fs::remove_file(path);
    let rt = common::runtime()?;
    let (cpu0, t0) = (cpu(), Instant::now());
    rt.block_on(async {
        let (sink, writer) =
            audit::spawn_sealed(AuditTarget::File(path.into()), QUEUE, FULL_WAIT, seal)
                .map_err(|e| e.to_string())?;
        for n in 0..records {
            sink.record(record(n)).await;
        }
        writer.shutdown().await.map_err(|e| e.to_string())?;
        if sink.dropped() + sink.unwritten() > 0 {
            return Err(format!(
                "{} records overflowed",
                sink.dropped() + sink.unwritten()
            ));
        }
        Ok::<_, String>(())
    })?;
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu() - cpu0;
    let bytes = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    Ok(Run { secs, cpu, bytes })
}

fn print(name: &str, records: u64, r: &Run) {
    println!(
        "{name:<12} {records:>9} records  {:>7.2} s  {:>10.0} records/s  {:>6.2} CPU-µs/record  {:>6.1} MB",
        r.secs,
        records as f64 / r.secs,
        r.cpu.as_secs_f64() * 1e6 / records as f64,
        r.bytes as f64 / 1e6
    );
}

/// One line's serialization, and its link's SHA-256, each timed alone over `n` lines.
fn split_costs(n: u64) {
    let recs: Vec<AuditRecord> = (0..1000).map(record).collect();
    let mut buf = Vec::with_capacity(1024);
    let t = Instant::now();
    let mut len = 0;
    for i in 0..n {
        buf.clear();
        let _ = serde_json::to_writer(&mut buf, &recs[(i % 1000) as usize]);
        len += buf.len();
    }
    let ser = t.elapsed().as_secs_f64() * 1e9 / n as f64;
    let line = buf.clone();
    let mut prev = chain::GENESIS;
    let t = Instant::now();
    for _ in 0..n {
        prev = chain::link(&prev, &line, b"}");
    }
    let sha = t.elapsed().as_secs_f64() * 1e9 / n as f64;
    std::hint::black_box((len, prev));
    println!(
        "per line ({} bytes): serialize {ser:.0} ns, SHA-256 link {sha:.0} ns ({:.0} % of serialize)",
        line.len(),
        sha / ser * 100.0
    );
}

fn main() -> Result<(), String> {
    let s = common::Settings::load(&["RECORDS", "MODE", "OUT", "CHECKPOINT"]);
    let records = s.num("RECORDS", 1_000_000)?;
    let every = s.num("CHECKPOINT", 10_000)?;
    let mode = s.text("MODE", "both");
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let out: PathBuf = s
        .get("OUT")
        .map_or_else(|| dir.path().join("audit.log"), PathBuf::from);
    split_costs(200_000);
    if matches!(mode.as_str(), "chain" | "both") {
        let r = run(&out, records, SealOptions::default())?;
        print("chain", records, &r);
    }
    if matches!(mode.as_str(), "sign" | "both") {
        let key = Arc::new(SigningKey::generate().map_err(|e| e.to_string())?);
        if let Some(dir) = out.parent() {
            let public = key.public().to_pem().map_err(|e| e.to_string())?;
            let _ = std::fs::write(dir.join("audit_write.pub"), public);
        }
        let seal = SealOptions {
            key: Some(key),
            checkpoint_records: every,
            ..SealOptions::default()
        };
        let r = run(&out, records, seal)?;
        print("chain+sign", records, &r);
    }
    Ok(())
}
