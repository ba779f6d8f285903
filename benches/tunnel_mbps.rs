//! Bulk throughput through one CONNECT tunnel: a load tool for `benches/compare`, not a
//! criterion bench.
//!
//! Opens one TCP connection to `PROXY`, sends `CONNECT TARGET`, then for `SECONDS` fetches
//! `GET URI` (keep-alive, HTTP/1.1, `Content-Length` responses) through the tunnel, one
//! response after the other, reading every body byte. `PROXY=direct` connects to `TARGET`
//! itself (the same loop without a proxy: the baseline). Reports body bytes per second,
//! MB = 10^6 bytes.
//!
//! Settings (environment or `KEY=VALUE` arguments): `PROXY`, `TARGET`, `URI` (default `/`),
//! `SECONDS` (10), `TIMEOUT_MS` (5000, limit for one response), `BUF_KIB` (256, read size).
//! Without `PROXY`/`TARGET` (a plain `cargo bench`) it prints its usage and exits 0.
//! Last line: `RESULT mb_per_s=… bytes=… responses=… errors=… elapsed_s=…`.

mod common;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use common::{Errors, Failure, Settings, connect_tunnel, get_keepalive, io_fail};
use tokio::net::TcpStream;

const USAGE: &str = "tunnel_mbps: MB/s through one CONNECT tunnel (or one direct connection)

usage: tunnel_mbps PROXY=HOST:PORT|direct TARGET=HOST:PORT [URI=/] [SECONDS=10]
                   [TIMEOUT_MS=5000] [BUF_KIB=256]
   (or the same as environment variables)

Opens one connection to PROXY, CONNECT TARGET, then repeats GET URI (keep-alive) through the
tunnel for SECONDS, reading every body byte. PROXY=direct: one connection to TARGET, no proxy.
With no PROXY/TARGET it prints this and exits 0 (so a plain `cargo bench` does not hang).";

struct Run {
    bytes: u64,
    responses: u64,
    errors: Errors,
    elapsed: Duration,
}

async fn run(
    proxy: &str,
    target: &str,
    path: &str,
    seconds: u64,
    timeout: Duration,
    buf_kib: usize,
) -> Result<Run, Failure> {
    let addr = if proxy == "direct" { target } else { proxy };
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(io_fail("proxy-connect"))?;
    let _ = s.set_nodelay(true);
    if proxy != "direct" {
        connect_tunnel(&mut s, target).await?;
    }
    let mut buf = vec![0u8; buf_kib * 1024];
    let mut out = Run {
        bytes: 0,
        responses: 0,
        errors: Errors::default(),
        elapsed: Duration::ZERO,
    };
    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    while Instant::now() < end {
        match tokio::time::timeout(timeout, get_keepalive(&mut s, path, target, &mut buf)).await {
            Ok(Ok(n)) => {
                out.bytes += n;
                out.responses += 1;
            }
            Ok(Err(f)) => {
                // The connection's state is unknown after a failure: stop here.
                out.errors.add(f);
                break;
            }
            Err(_) => {
                out.errors.add(Failure(
                    "timeout",
                    format!("response took over {timeout:?}"),
                ));
                break;
            }
        }
    }
    out.elapsed = start.elapsed();
    Ok(out)
}

fn main() -> ExitCode {
    let cfg = Settings::load(&["PROXY", "TARGET", "URI", "SECONDS", "TIMEOUT_MS", "BUF_KIB"]);
    let (Some(proxy), Some(target)) = (cfg.get("PROXY"), cfg.get("TARGET")) else {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    };
    let path = cfg.text("URI", "/");
    let parsed = (|| -> Result<_, String> {
        Ok((
            cfg.num("SECONDS", 10)?,
            cfg.millis("TIMEOUT_MS", 5000)?,
            usize::try_from(cfg.num("BUF_KIB", 256)?).map_err(|e| e.to_string())?,
        ))
    })();
    let (seconds, timeout, buf_kib) = match parsed {
        Ok(v) => v,
        Err(e) => {
            eprintln!("tunnel_mbps: {e}\n\n{USAGE}");
            return ExitCode::from(64);
        }
    };
    let rt = match common::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tunnel_mbps: {e}");
            return ExitCode::from(71);
        }
    };
    println!("tunnel_mbps: proxy {proxy} target {target} path {path} for {seconds} s");
    let r = match rt.block_on(run(proxy, target, &path, seconds, timeout, buf_kib)) {
        Ok(r) => r,
        Err(Failure(kind, detail)) => {
            println!("  setup failed       {kind}: {detail}");
            println!(
                "RESULT mb_per_s=0 bytes=0 responses=0 errors=1 elapsed_s=0 first_error={kind}"
            );
            return ExitCode::FAILURE;
        }
    };
    let secs = r.elapsed.as_secs_f64();
    let mbps = r.bytes as f64 / 1e6 / secs;
    println!("  responses          {} in {secs:.2} s", r.responses);
    println!("  body bytes         {}", r.bytes);
    println!("  MB/s               {mbps:.1}");
    r.errors.print();
    println!(
        "RESULT mb_per_s={mbps:.1} bytes={} responses={} errors={} elapsed_s={secs:.2}",
        r.bytes,
        r.responses,
        r.errors.total()
    );
    if r.responses == 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
