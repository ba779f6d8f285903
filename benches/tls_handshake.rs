//! Full TLS handshakes per second: a load tool for `benches/compare`, not a criterion bench.
//!
//! `CONCURRENCY` loops run for `SECONDS`; each iteration opens a new TCP connection to `ADDR`,
//! does a full TLS handshake (rustls on ring, session resumption disabled: no session cache,
//! no tickets, so every handshake is a full one; a resumed handshake is counted as an error),
//! sends one `GET URI` with `Connection: close`, reads the whole response (status checked)
//! and closes. ALPN offers only `http/1.1`.
//!
//! Settings (environment or `KEY=VALUE` arguments): `ADDR` (host:port), `SNI` (server name,
//! default `bench.test`), `CA` (PEM file of the CA to verify the server against; without it
//! the server's certificate and signatures are accepted unchecked, which keeps the client's
//! cost per handshake low: the server's work is the same either way), `URI` (`/`),
//! `CONCURRENCY` (20), `SECONDS` (10), `TIMEOUT_MS` (5000, limit for one connection).
//! Without `ADDR` (a plain `cargo bench`) it prints its usage and exits 0.
//! Last line: `RESULT handshakes_per_s=… p50_ms=… p99_ms=… completed=… errors=… elapsed_s=…`.

mod common;

use std::io::BufReader;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Errors, Failure, Settings, io_fail, percentile_ms, read_head, status_of};
use rustls::client::Resumption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, HandshakeKind, RootCertStore, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const USAGE: &str = "tls_handshake: full TLS handshakes/s (no resumption)

usage: tls_handshake ADDR=HOST:PORT [SNI=bench.test] [CA=ca.pem] [URI=/] [CONCURRENCY=20]
                     [SECONDS=10] [TIMEOUT_MS=5000]
   (or the same as environment variables)

Each of CONCURRENCY loops repeats for SECONDS: TCP connect, full TLS handshake (resumption
disabled), GET URI with Connection: close, read the response, close. Without CA the server
certificate is not verified. With no ADDR it prints this and exits 0 (so a plain `cargo bench`
does not hang).";

/// Accepts any certificate and signature: the benchmark measures the server's cost.
#[derive(Debug)]
struct NoVerify(Vec<SignatureScheme>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.clone()
    }
}

fn client_config(ca: Option<&str>) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?;
    let mut config = match ca {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| format!("CA={path}: {e}"))?;
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_reader_iter(&mut BufReader::new(&pem[..])) {
                let cert = cert.map_err(|e| format!("CA={path}: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("CA={path}: certificate refused: {e}"))?;
            }
            if roots.is_empty() {
                return Err(format!("CA={path}: no certificate in the file"));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(schemes(&provider))))
            .with_no_client_auth(),
    };
    config.resumption = Resumption::disabled();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn schemes(provider: &CryptoProvider) -> Vec<SignatureScheme> {
    provider
        .signature_verification_algorithms
        .supported_schemes()
}

#[derive(Clone)]
struct Job {
    addr: String,
    sni: ServerName<'static>,
    host: String,
    path: String,
    connector: TlsConnector,
    timeout: Duration,
}

/// One connection: connect, handshake, GET, read to EOF. Returns a description of the
/// negotiated parameters.
async fn one(job: &Job) -> Result<String, Failure> {
    let tcp = TcpStream::connect(&job.addr)
        .await
        .map_err(io_fail("tcp-connect"))?;
    let _ = tcp.set_nodelay(true);
    let mut tls = job
        .connector
        .connect(job.sni.clone(), tcp)
        .await
        .map_err(io_fail("handshake"))?;
    let (_, conn) = tls.get_ref();
    if conn.handshake_kind() == Some(HandshakeKind::Resumed) {
        return Err(Failure("resumed", "a resumed handshake".into()));
    }
    let params = format!(
        "{:?} {:?} {:?}",
        conn.protocol_version(),
        conn.negotiated_cipher_suite().map(|s| s.suite()),
        conn.negotiated_key_exchange_group().map(|g| g.name()),
    );
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: tls_handshake\r\nConnection: close\r\n\r\n",
        job.path, job.host
    );
    tls.write_all(req.as_bytes())
        .await
        .map_err(io_fail("request-write"))?;
    let (head, _) = read_head(&mut tls, "response-read").await?;
    match status_of(&head) {
        Some(code) if (200..300).contains(&code) => {}
        Some(code) => return Err(Failure("response-status", format!("{code}"))),
        None => return Err(Failure("response-status", format!("unparsable: {head:?}"))),
    }
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match tls.read(&mut chunk).await {
            Ok(0) => break,
            Ok(_) => {}
            // Some servers close without close_notify after `Connection: close`.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(Failure("response-read", e.to_string())),
        }
    }
    Ok(params)
}

#[derive(Default)]
struct LoopStats {
    latencies_us: Vec<u64>,
    errors: Errors,
    params: Option<String>,
}

async fn run_loop(job: Job, end: Instant) -> LoopStats {
    let mut stats = LoopStats::default();
    while Instant::now() < end {
        let start = Instant::now();
        match tokio::time::timeout(job.timeout, one(&job)).await {
            Ok(Ok(params)) => {
                stats
                    .latencies_us
                    .push(u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX));
                if stats.params.is_none() {
                    stats.params = Some(params);
                }
            }
            Ok(Err(f)) => {
                stats.errors.add(f);
                // A refusing server would otherwise make this a busy loop.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(_) => stats.errors.add(Failure(
                "timeout",
                format!("connection took over {:?}", job.timeout),
            )),
        }
    }
    stats
}

fn main() -> ExitCode {
    let cfg = Settings::load(&[
        "ADDR",
        "SNI",
        "CA",
        "URI",
        "CONCURRENCY",
        "SECONDS",
        "TIMEOUT_MS",
    ]);
    let Some(addr) = cfg.get("ADDR") else {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    };
    let setup = (|| -> Result<_, String> {
        let sni_text = cfg.text("SNI", "bench.test");
        let sni =
            ServerName::try_from(sni_text.clone()).map_err(|e| format!("SNI={sni_text}: {e}"))?;
        let config = client_config(cfg.get("CA"))?;
        let job = Job {
            addr: addr.to_string(),
            sni,
            host: sni_text,
            path: cfg.text("URI", "/"),
            connector: TlsConnector::from(Arc::new(config)),
            timeout: cfg.millis("TIMEOUT_MS", 5000)?,
        };
        let concurrency =
            usize::try_from(cfg.num("CONCURRENCY", 20)?).map_err(|e| e.to_string())?;
        Ok((job, concurrency, cfg.num("SECONDS", 10)?))
    })();
    let (job, concurrency, seconds) = match setup {
        Ok(v) => v,
        Err(e) => {
            eprintln!("tls_handshake: {e}\n\n{USAGE}");
            return ExitCode::from(64);
        }
    };
    let rt = match common::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tls_handshake: {e}");
            return ExitCode::from(71);
        }
    };
    println!(
        "tls_handshake: {addr} SNI {} concurrency {concurrency} for {seconds} s, verify {}",
        job.host,
        if cfg.get("CA").is_some() { "on" } else { "off" }
    );
    let (all, elapsed) = rt.block_on(async {
        let start = Instant::now();
        let end = start + Duration::from_secs(seconds);
        let tasks: Vec<_> = (0..concurrency)
            .map(|_| tokio::spawn(run_loop(job.clone(), end)))
            .collect();
        let mut all = Vec::with_capacity(tasks.len());
        for t in tasks {
            match t.await {
                Ok(s) => all.push(s),
                Err(e) => {
                    let mut s = LoopStats::default();
                    s.errors.add(Failure("task-panic", e.to_string()));
                    all.push(s);
                }
            }
        }
        (all, start.elapsed())
    });
    let params = all.iter().find_map(|s| s.params.clone());
    let mut lat: Vec<u64> = Vec::new();
    let mut errors = Errors::default();
    for s in all {
        lat.extend(s.latencies_us);
        errors.merge(s.errors);
    }
    lat.sort_unstable();
    let secs = elapsed.as_secs_f64();
    let completed = lat.len();
    let rate = completed as f64 / secs;
    let (p50, p99) = (percentile_ms(&lat, 50.0), percentile_ms(&lat, 99.0));
    println!("  negotiated         {}", params.as_deref().unwrap_or("-"));
    println!("  completed          {completed} in {secs:.2} s");
    println!("  handshakes/s       {rate:.1}");
    println!("  latency p50        {p50:.3} ms");
    println!("  latency p99        {p99:.3} ms");
    errors.print();
    println!(
        "RESULT handshakes_per_s={rate:.1} p50_ms={p50:.3} p99_ms={p99:.3} completed={completed} errors={} elapsed_s={secs:.2}",
        errors.total()
    );
    if completed == 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
