//! CONNECT tunnel rate: a small load tool for `benches/compare/run.sh`, not a criterion bench.
//!
//! `CONCURRENCY` loops run for `SECONDS`; each iteration opens a new TCP connection to the proxy,
//! sends `CONNECT TARGET HTTP/1.1`, reads the proxy's `200`, sends one `GET / HTTP/1.1` with
//! `Connection: close` through the tunnel, reads the whole response (to EOF, checking the
//! status and the `Content-Length`) and closes. A tunnel counts as completed only when all of
//! that succeeded; anything else is an error, counted by kind. The latency of one tunnel is
//! from the start of the TCP connect to the end of the response.
//!
//! Settings come from the environment or from `KEY=VALUE` arguments (arguments win):
//! `PROXY=127.0.0.1:3128 TARGET=127.0.0.1:8080 CONCURRENCY=50 SECONDS=10`, and optionally
//! `TIMEOUT_MS=5000` (limit for one whole tunnel). `PROXY=direct` connects to `TARGET` itself
//! and skips the CONNECT: the same loop over plain TCP, the baseline. Without `PROXY` and `TARGET` (as under a
//! plain `cargo bench`) it prints its usage and exits 0.
//!
//! It runs on one thread (a current-thread tokio runtime), so `taskset -c N` pins all of it.
//! The last output line is machine-readable:
//! `RESULT tunnels_per_s=… p50_ms=… p99_ms=… completed=… errors=… elapsed_s=…`.

mod common;

use std::collections::BTreeMap;
use std::env;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::{Failure, content_length, io_fail, percentile_ms, read_head, status_of};

const USAGE: &str = "connect_rate: CONNECT tunnels/s through a forward proxy

usage: PROXY=HOST:PORT|direct TARGET=HOST:PORT [CONCURRENCY=50] [SECONDS=10] [TIMEOUT_MS=5000] connect_rate
   or: connect_rate PROXY=HOST:PORT TARGET=HOST:PORT [CONCURRENCY=N] [SECONDS=N] [TIMEOUT_MS=N]

Each of CONCURRENCY loops repeats for SECONDS: connect to PROXY, CONNECT TARGET, read the 200,
GET / with Connection: close through the tunnel, read the full response, close.
PROXY=direct: the same without a proxy (connect to TARGET, GET, close).
Prints tunnels/s, p50/p99 latency and error counts. With no PROXY/TARGET it prints this and
exits 0 (so a plain `cargo bench` does not hang).";

/// Largest response header section accepted, from the proxy or the origin.
/// Largest origin response accepted (the harness serves about 1 KiB).
const MAX_RESPONSE: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone)]
struct Settings {
    proxy: String,
    target: String,
    concurrency: usize,
    seconds: u64,
    timeout: Duration,
}

fn settings() -> Result<Option<Settings>, String> {
    let mut kv: BTreeMap<String, String> = BTreeMap::new();
    for key in ["PROXY", "TARGET", "CONCURRENCY", "SECONDS", "TIMEOUT_MS"] {
        if let Ok(v) = env::var(key) {
            kv.insert(key.to_string(), v);
        }
    }
    // `cargo bench` passes `--bench`; bare flags like it are ignored.
    for arg in env::args().skip(1) {
        if let Some((k, v)) = arg.split_once('=') {
            let k = k.trim_start_matches('-').to_ascii_uppercase();
            kv.insert(k, v.to_string());
        }
    }
    let (Some(proxy), Some(target)) = (kv.get("PROXY"), kv.get("TARGET")) else {
        return Ok(None);
    };
    let num = |key: &str, default: u64| -> Result<u64, String> {
        match kv.get(key) {
            None => Ok(default),
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{key}={v}: expected a whole number greater than 0")),
        }
    };
    Ok(Some(Settings {
        proxy: proxy.clone(),
        target: target.clone(),
        concurrency: usize::try_from(num("CONCURRENCY", 50)?).map_err(|e| e.to_string())?,
        seconds: num("SECONDS", 10)?,
        timeout: Duration::from_millis(num("TIMEOUT_MS", 5000)?),
    }))
}

/// What one loop saw.
#[derive(Debug, Default)]
struct LoopStats {
    latencies_us: Vec<u64>,
    errors: BTreeMap<String, u64>,
    first_error: Option<String>,
}

impl LoopStats {
    fn error(&mut self, kind: &str, detail: String) {
        *self.errors.entry(kind.to_string()).or_default() += 1;
        if self.first_error.is_none() {
            self.first_error = Some(format!("{kind}: {detail}"));
        }
    }
}

/// One tunnel, start to finish.
async fn one_tunnel(proxy: &str, target: &str) -> Result<(), Failure> {
    let direct = proxy == "direct";
    let mut s = TcpStream::connect(if direct { target } else { proxy })
        .await
        .map_err(io_fail("proxy-connect"))?;
    let _ = s.set_nodelay(true);
    if !direct {
        connect_through(&mut s, target).await?;
    }
    get_through(&mut s, target).await
}

/// `CONNECT target` and the proxy's 200.
async fn connect_through(s: &mut TcpStream, target: &str) -> Result<(), Failure> {
    let connect = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    s.write_all(connect.as_bytes())
        .await
        .map_err(io_fail("connect-write"))?;
    let (head, early) = read_head(s, "connect-read").await?;
    match status_of(&head) {
        Some(200) => {}
        Some(code) => return Err(Failure("connect-status", format!("{code}: {head:?}"))),
        None => return Err(Failure("connect-status", format!("unparsable: {head:?}"))),
    }
    if !early.is_empty() {
        return Err(Failure(
            "connect-read",
            format!("{} unexpected bytes after the 200", early.len()),
        ));
    }
    Ok(())
}

/// `GET /` with `Connection: close`, the whole response read and checked.
async fn get_through(s: &mut TcpStream, target: &str) -> Result<(), Failure> {
    let get = format!(
        "GET / HTTP/1.1\r\nHost: {target}\r\nUser-Agent: connect_rate\r\nConnection: close\r\n\r\n"
    );
    s.write_all(get.as_bytes())
        .await
        .map_err(io_fail("tunnel-write"))?;
    let (head, mut body) = read_head(s, "tunnel-read").await?;
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = s.read(&mut chunk).await.map_err(io_fail("tunnel-read"))?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
        if body.len() > MAX_RESPONSE {
            return Err(Failure("tunnel-read", "response too large".into()));
        }
    }
    match status_of(&head) {
        Some(code) if (200..300).contains(&code) => {}
        Some(code) => return Err(Failure("origin-status", format!("{code}"))),
        None => return Err(Failure("origin-status", format!("unparsable: {head:?}"))),
    }
    if let Some(len) = content_length(&head)
        && len != body.len() as u64
    {
        return Err(Failure(
            "origin-body",
            format!("Content-Length {len}, got {} bytes", body.len()),
        ));
    }
    Ok(())
}

async fn run_loop(cfg: Settings, end: Instant) -> LoopStats {
    let mut stats = LoopStats::default();
    while Instant::now() < end {
        let start = Instant::now();
        match tokio::time::timeout(cfg.timeout, one_tunnel(&cfg.proxy, &cfg.target)).await {
            Ok(Ok(())) => stats
                .latencies_us
                .push(u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX)),
            Ok(Err(Failure(kind, detail))) => {
                stats.error(kind, detail);
                // A refused or failing proxy would otherwise make this a busy loop.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(_) => stats.error("timeout", format!("tunnel took over {:?}", cfg.timeout)),
        }
    }
    stats
}

fn main() -> ExitCode {
    let cfg = match settings() {
        Ok(Some(c)) => c,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("connect_rate: {e}\n\n{USAGE}");
            return ExitCode::from(64);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("connect_rate: cannot start the runtime: {e}");
            return ExitCode::from(71);
        }
    };
    println!(
        "connect_rate: proxy {} target {} concurrency {} for {} s (per-tunnel limit {:?})",
        cfg.proxy, cfg.target, cfg.concurrency, cfg.seconds, cfg.timeout
    );
    let (all, elapsed) = runtime.block_on(async {
        let start = Instant::now();
        let end = start + Duration::from_secs(cfg.seconds);
        let tasks: Vec<_> = (0..cfg.concurrency)
            .map(|_| tokio::spawn(run_loop(cfg.clone(), end)))
            .collect();
        let mut all = Vec::with_capacity(tasks.len());
        for t in tasks {
            match t.await {
                Ok(s) => all.push(s),
                Err(e) => {
                    let mut s = LoopStats::default();
                    s.error("task-panic", e.to_string());
                    all.push(s);
                }
            }
        }
        (all, start.elapsed())
    });

    let mut lat: Vec<u64> = all
        .iter()
        .flat_map(|s| s.latencies_us.iter().copied())
        .collect();
    lat.sort_unstable();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for s in &all {
        for (k, v) in &s.errors {
            *errors.entry(k.clone()).or_default() += v;
        }
    }
    let error_total: u64 = errors.values().sum();
    let completed = lat.len();
    let secs = elapsed.as_secs_f64();
    let rate = completed as f64 / secs;
    let (p50, p99) = (percentile_ms(&lat, 50.0), percentile_ms(&lat, 99.0));
    let max = lat.last().map_or(f64::NAN, |m| *m as f64 / 1000.0);

    println!("  completed tunnels  {completed} in {secs:.2} s");
    println!("  tunnels/s          {rate:.1}");
    println!("  latency p50        {p50:.3} ms");
    println!("  latency p99        {p99:.3} ms");
    println!("  latency max        {max:.3} ms");
    println!("  errors             {error_total}");
    for (k, v) in &errors {
        println!("    {k:<18} {v}");
    }
    if let Some(first) = all.iter().find_map(|s| s.first_error.as_ref()) {
        println!("  first error        {first}");
    }
    println!(
        "RESULT tunnels_per_s={rate:.1} p50_ms={p50:.3} p99_ms={p99:.3} completed={completed} errors={error_total} elapsed_s={secs:.2}"
    );
    if completed == 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
