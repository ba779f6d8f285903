//! Shared pieces of the load tools behind `benches/compare` (`tunnel_mbps`, `tls_handshake`,
//! `hold_conns`): `KEY=VALUE` settings, a current-thread runtime, and just enough HTTP/1.1
//! client to send a request and read a `Content-Length` response on a kept-alive connection.
//!
//! Each tool includes this file with `mod common;` and uses part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::env;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response header section accepted.
pub const MAX_HEAD: usize = 64 * 1024;

/// Settings from the environment and from `KEY=VALUE` arguments (arguments win). Bare flags
/// such as the `--bench` that `cargo bench` passes are ignored.
pub struct Settings {
    kv: BTreeMap<String, String>,
}

impl Settings {
    pub fn load(keys: &[&str]) -> Settings {
        let mut kv = BTreeMap::new();
        for key in keys {
            if let Ok(v) = env::var(key) {
                kv.insert((*key).to_string(), v);
            }
        }
        for arg in env::args().skip(1) {
            if let Some((k, v)) = arg.split_once('=') {
                let k = k.trim_start_matches('-').to_ascii_uppercase();
                kv.insert(k, v.to_string());
            }
        }
        Settings { kv }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.kv
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub fn text(&self, key: &str, default: &str) -> String {
        self.get(key).unwrap_or(default).to_string()
    }

    /// A whole number greater than 0.
    pub fn num(&self, key: &str, default: u64) -> Result<u64, String> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{key}={v}: expected a whole number greater than 0")),
        }
    }

    pub fn millis(&self, key: &str, default: u64) -> Result<Duration, String> {
        Ok(Duration::from_millis(self.num(key, default)?))
    }
}

/// A current-thread runtime: `taskset -c N` then pins the whole tool.
pub fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

/// Why one operation failed: a kind (counted) and a detail (the first one is printed).
#[derive(Debug)]
pub struct Failure(pub &'static str, pub String);

pub fn io_fail(kind: &'static str) -> impl Fn(std::io::Error) -> Failure {
    move |e| Failure(kind, e.to_string())
}

/// Read until the end of a header section; returns (head, bytes read past it).
pub async fn read_head<S: AsyncRead + Unpin>(
    s: &mut S,
    kind: &'static str,
) -> Result<(String, Vec<u8>), Failure> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await.map_err(io_fail(kind))?;
        if n == 0 {
            return Err(Failure(
                kind,
                format!("EOF after {} bytes, before the header end", buf.len()),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok((String::from_utf8_lossy(&buf).into_owned(), rest));
        }
        if buf.len() > MAX_HEAD {
            return Err(Failure(kind, "header section too large".into()));
        }
    }
}

pub fn status_of(head: &str) -> Option<u16> {
    let mut parts = head.lines().next()?.split_whitespace();
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

pub fn content_length(head: &str) -> Option<u64> {
    header(head, "content-length")?.parse().ok()
}

/// Send `CONNECT target` on `s` and read the proxy's 200 (nothing may follow it).
pub async fn connect_tunnel(s: &mut TcpStream, target: &str) -> Result<(), Failure> {
    let req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    s.write_all(req.as_bytes())
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

/// Send one keep-alive `GET uri` with `Host: host`, read the whole `Content-Length` response
/// (status must be 2xx) into the void; returns the body length. `buf` is scratch space.
pub async fn get_keepalive<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    uri: &str,
    host: &str,
    buf: &mut [u8],
) -> Result<u64, Failure> {
    let req = format!("GET {uri} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: compare-bench\r\n\r\n");
    s.write_all(req.as_bytes())
        .await
        .map_err(io_fail("request-write"))?;
    let (head, early) = read_head(s, "response-read").await?;
    match status_of(&head) {
        Some(code) if (200..300).contains(&code) => {}
        Some(code) => return Err(Failure("response-status", format!("{code}"))),
        None => return Err(Failure("response-status", format!("unparsable: {head:?}"))),
    }
    let Some(len) = content_length(&head) else {
        return Err(Failure(
            "response-framing",
            "no Content-Length (chunked or close-delimited responses are not supported)".into(),
        ));
    };
    let mut got = early.len() as u64;
    if got > len {
        return Err(Failure(
            "response-framing",
            format!("{got} bytes after a head announcing {len}"),
        ));
    }
    while got < len {
        let want = usize::try_from(len - got)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = s
            .read(&mut buf[..want])
            .await
            .map_err(io_fail("response-read"))?;
        if n == 0 {
            return Err(Failure(
                "response-read",
                format!("EOF after {got} of {len} body bytes"),
            ));
        }
        got += n as u64;
    }
    Ok(len)
}

/// Nearest-rank percentile of sorted microsecond samples, in milliseconds.
pub fn percentile_ms(sorted_us: &[u64], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted_us.len() as f64).ceil() as usize;
    sorted_us[rank.clamp(1, sorted_us.len()) - 1] as f64 / 1000.0
}

/// Error counts by kind, and the first detail seen.
#[derive(Debug, Default)]
pub struct Errors {
    pub by_kind: BTreeMap<String, u64>,
    pub first: Option<String>,
}

impl Errors {
    pub fn add(&mut self, f: Failure) {
        *self.by_kind.entry(f.0.to_string()).or_default() += 1;
        if self.first.is_none() {
            self.first = Some(format!("{}: {}", f.0, f.1));
        }
    }

    pub fn merge(&mut self, other: Errors) {
        for (k, v) in other.by_kind {
            *self.by_kind.entry(k).or_default() += v;
        }
        if self.first.is_none() {
            self.first = other.first;
        }
    }

    pub fn total(&self) -> u64 {
        self.by_kind.values().sum()
    }

    pub fn print(&self) {
        println!("  errors             {}", self.total());
        for (k, v) in &self.by_kind {
            println!("    {k:<18} {v}");
        }
        if let Some(first) = &self.first {
            println!("  first error        {first}");
        }
    }
}
