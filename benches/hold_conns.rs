//! Open N client connections or CONNECT tunnels and hold them: a load tool for
//! `benches/compare` (memory per connection), not a criterion bench.
//!
//! `MODE=request`: N connections to `ADDR`; on each, one keep-alive `GET URI` with
//! `Host: HOST_HEADER` and its whole `Content-Length` response, then the connection stays open and
//! idle. `MODE=tunnel`: N connections to the proxy `ADDR`, `CONNECT TARGET` on each, then one
//! keep-alive `GET URI` through the tunnel and its response, then the tunnel stays open and
//! idle. At most `OPEN_CONCURRENCY` are being opened at a time.
//!
//! When every connection is open (or failed) it prints
//! `READY open=… errors=… elapsed_s=…` and holds them for `HOLD_SECONDS` (default 60), then
//! closes them all and exits; the caller reads the server's memory meanwhile and may stop it
//! earlier. A connection closed by the server while held is counted and reported at the end:
//! `RESULT open=… errors=… closed_while_held=…`.
//!
//! Settings (environment or `KEY=VALUE` arguments): `MODE`, `ADDR`, `TARGET` (tunnel mode),
//! `HOST_HEADER` (the `Host` header; default `TARGET`, else `ADDR`), `URI` (default `/`), `N` (1000), `OPEN_CONCURRENCY`
//! (100), `HOLD_SECONDS` (60), `TIMEOUT_MS` (5000, limit for opening one).
//! Without `MODE`/`ADDR` (a plain `cargo bench`) it prints its usage and exits 0.

mod common;

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Errors, Failure, Settings, connect_tunnel, get_keepalive, io_fail};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

const USAGE: &str = "hold_conns: open N keep-alive connections or CONNECT tunnels and hold them

usage: hold_conns MODE=request ADDR=HOST:PORT [HOST_HEADER=name] [URI=/] [N=1000] ...
       hold_conns MODE=tunnel ADDR=PROXY:PORT TARGET=HOST:PORT [URI=/] [N=1000] ...
       common: [OPEN_CONCURRENCY=100] [HOLD_SECONDS=60] [TIMEOUT_MS=5000]
   (or the same as environment variables)

Each connection completes one GET (through the tunnel in tunnel mode), then stays idle. Prints
READY open=... once all are open, holds them for HOLD_SECONDS, closes them. With no MODE/ADDR
it prints this and exits 0 (so a plain `cargo bench` does not hang).";

#[derive(Clone)]
struct Job {
    tunnel: bool,
    addr: String,
    target: String,
    host: String,
    uri: String,
    timeout: Duration,
}

async fn open(job: &Job) -> Result<TcpStream, Failure> {
    let mut s = TcpStream::connect(&job.addr)
        .await
        .map_err(io_fail("tcp-connect"))?;
    let _ = s.set_nodelay(true);
    if job.tunnel {
        connect_tunnel(&mut s, &job.target).await?;
    }
    let mut buf = vec![0u8; 16 * 1024];
    get_keepalive(&mut s, &job.uri, &job.host, &mut buf).await?;
    Ok(s)
}

fn main() -> ExitCode {
    let cfg = Settings::load(&[
        "MODE",
        "ADDR",
        "TARGET",
        "HOST_HEADER",
        "URI",
        "N",
        "OPEN_CONCURRENCY",
        "HOLD_SECONDS",
        "TIMEOUT_MS",
    ]);
    let (Some(mode), Some(addr)) = (cfg.get("MODE"), cfg.get("ADDR")) else {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    };
    let setup = (|| -> Result<_, String> {
        let tunnel = match mode {
            "request" => false,
            "tunnel" => true,
            other => return Err(format!("MODE={other}: expected request or tunnel")),
        };
        let target = match (tunnel, cfg.get("TARGET")) {
            (true, None) => return Err("MODE=tunnel needs TARGET=HOST:PORT".into()),
            (_, t) => t.unwrap_or(addr).to_string(),
        };
        let host = cfg.get("HOST_HEADER").unwrap_or(&target).to_string();
        let job = Job {
            tunnel,
            addr: addr.to_string(),
            target,
            host,
            uri: cfg.text("URI", "/"),
            timeout: cfg.millis("TIMEOUT_MS", 5000)?,
        };
        let n = usize::try_from(cfg.num("N", 1000)?).map_err(|e| e.to_string())?;
        let par = usize::try_from(cfg.num("OPEN_CONCURRENCY", 100)?).map_err(|e| e.to_string())?;
        Ok((job, n, par, cfg.num("HOLD_SECONDS", 60)?))
    })();
    let (job, n, par, hold) = match setup {
        Ok(v) => v,
        Err(e) => {
            eprintln!("hold_conns: {e}\n\n{USAGE}");
            return ExitCode::from(64);
        }
    };
    let rt = match common::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hold_conns: {e}");
            return ExitCode::from(71);
        }
    };
    println!(
        "hold_conns: {mode} {n} to {} (URI {}), holding {hold} s",
        job.addr, job.uri
    );
    let (open_n, errors, closed) = rt.block_on(async {
        let start = Instant::now();
        let gate = Arc::new(Semaphore::new(par));
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let job = job.clone();
                let gate = gate.clone();
                tokio::spawn(async move {
                    let _permit = gate.acquire_owned().await;
                    match tokio::time::timeout(job.timeout, open(&job)).await {
                        Ok(r) => r,
                        Err(_) => Err(Failure(
                            "timeout",
                            format!("opening took over {:?}", job.timeout),
                        )),
                    }
                })
            })
            .collect();
        let mut conns = Vec::with_capacity(n);
        let mut errors = Errors::default();
        for t in tasks {
            match t.await {
                Ok(Ok(s)) => conns.push(s),
                Ok(Err(f)) => errors.add(f),
                Err(e) => errors.add(Failure("task-panic", e.to_string())),
            }
        }
        let open_n = conns.len();
        println!(
            "READY open={open_n} errors={} elapsed_s={:.2}",
            errors.total(),
            start.elapsed().as_secs_f64()
        );
        let _ = std::io::stdout().flush();
        // Hold: each connection waits for the server to close it (or send anything).
        let held: Vec<_> = conns
            .into_iter()
            .map(|mut s| {
                tokio::spawn(async move {
                    let mut b = [0u8; 1];
                    tokio::time::timeout(Duration::from_secs(hold), s.read(&mut b))
                        .await
                        .is_ok()
                })
            })
            .collect();
        let mut closed = 0u64;
        for h in held {
            if matches!(h.await, Ok(true)) {
                closed += 1;
            }
        }
        (open_n, errors, closed)
    });
    errors.print();
    println!(
        "RESULT open={open_n} errors={} closed_while_held={closed}",
        errors.total()
    );
    if open_n == 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
