//! `update-ranges` against a local HTTPS server serving fixture feeds (certificates made here):
//! a good feed is written; a truncated feed, a feed that shrank by 90 % and a server that never
//! answers are each refused with one line, and the file already there is kept. Also through a
//! local `CONNECT` proxy named by `HTTPS_PROXY`.

#[path = "support/feeds.rs"]
mod feeds;
#[path = "support/pki.rs"]
mod pki;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use feeds::{FeedServer, Reply, feed_server};

/// An AWS feed of `n` prefixes in eu-west-2.
fn aws_feed(n: usize) -> String {
    let prefixes: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"ip_prefix":"3.8.{i}.0/24","region":"eu-west-2","service":"EC2","network_border_group":"eu-west-2"}}"#
            )
        })
        .collect();
    format!(
        "{{\"syncToken\":\"17000000{n:02}\",\"createDate\":\"2026-11-01-00-00-00\",\n\"prefixes\":[\n{}\n],\n\"ipv6_prefixes\":[]}}\n",
        prefixes.join(",\n")
    )
}

/// `aws=URL` of `path` on the fixture server, for `--url`.
fn aws_url(server: &FeedServer, path: &str) -> String {
    format!("aws={}", server.https(path))
}

/// Run `update-ranges` for AWS from `path` into `out`, with `extra` arguments and environment.
async fn update(
    server: &FeedServer,
    path: &str,
    out: &Path,
    extra: &[&str],
    env: &[(&str, String)],
) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_residency-proxy"));
    cmd.args(["update-ranges", "--provider", "aws", "--min-prefixes", "5"])
        .arg("--out")
        .arg(out)
        .arg("--url")
        .arg(aws_url(server, path))
        .arg("--ca-file")
        .arg(&server.ca)
        .args(extra);
    for v in ["HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy"] {
        cmd.env_remove(v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::task::spawn_blocking(move || cmd.output().expect("run the binary"))
        .await
        .expect("join")
}

fn stderr_lines(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stderr)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The run was refused with exactly one line naming the reason, and the old file was kept.
fn assert_refused(o: &Output, reason: &str) {
    assert!(!o.status.success(), "refused runs exit non-zero");
    let lines = stderr_lines(o);
    assert_eq!(lines.len(), 1, "one clear line: {lines:?}");
    assert!(
        lines[0].starts_with("residency-proxy: update-ranges aws: refused: "),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].contains(reason),
        "{} (expected {reason})",
        lines[0]
    );
    assert!(
        lines[0].ends_with("aws.json"),
        "names the kept file: {}",
        lines[0]
    );
}

fn routes() -> HashMap<&'static str, Reply> {
    let full = aws_feed(50);
    HashMap::from([
        ("/full.json", Reply::Body(full.clone())),
        ("/small.json", Reply::Body(aws_feed(5))),
        ("/cut-http.json", Reply::CutShort(full.clone())),
        (
            "/cut-json.json",
            Reply::Body(full[..full.len() / 2].to_string()),
        ),
        ("/hang.json", Reply::Hang),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_feed_is_written_and_a_truncated_one_refused_keeping_the_old() {
    let server = feed_server(routes()).await;
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("cloud");
    let o = update(&server, "/full.json", &out, &[], &[]).await;
    assert!(o.status.success(), "{:?}", stderr_lines(&o));
    let written = std::fs::read_to_string(out.join("aws.json")).expect("written");
    assert_eq!(written, aws_feed(50));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("50 prefixes, version 1700000050"),
        "{stdout}"
    );

    let o = update(&server, "/cut-http.json", &out, &[], &[]).await;
    assert_refused(&o, "body cut short");
    let o = update(&server, "/cut-json.json", &out, &[], &[]).await;
    assert_refused(&o, "not an AWS ip-ranges.json document");
    assert_eq!(
        std::fs::read_to_string(out.join("aws.json")).expect("kept"),
        aws_feed(50),
        "the old data is kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_that_shrank_by_90_percent_is_refused_unless_forced() {
    let server = feed_server(routes()).await;
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().to_path_buf();
    assert!(
        update(&server, "/full.json", &out, &[], &[])
            .await
            .status
            .success()
    );
    let o = update(&server, "/small.json", &out, &[], &[]).await;
    assert_refused(&o, "shrink of 90%");
    assert_eq!(
        std::fs::read_to_string(out.join("aws.json")).expect("kept"),
        aws_feed(50)
    );
    let o = update(&server, "/small.json", &out, &["--force"], &[]).await;
    assert!(o.status.success(), "{:?}", stderr_lines(&o));
    assert_eq!(
        std::fs::read_to_string(out.join("aws.json")).expect("replaced"),
        aws_feed(5)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_times_out_and_the_old_file_is_kept() {
    let server = feed_server(routes()).await;
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().to_path_buf();
    assert!(
        update(&server, "/full.json", &out, &[], &[])
            .await
            .status
            .success()
    );
    // The server holds the request open forever: only the deadline can end the run.
    let o = update(&server, "/hang.json", &out, &["--timeout", "1"], &[]).await;
    assert_refused(&o, "no complete answer within");
    assert_eq!(
        std::fs::read_to_string(out.join("aws.json")).expect("kept"),
        aws_feed(50)
    );
}

/// A `CONNECT` proxy on loopback that counts the tunnels it opened.
async fn connect_proxy() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let tunnels = Arc::new(AtomicUsize::new(0));
    let seen = tunnels.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match client.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let text = String::from_utf8_lossy(&head).to_string();
                let mut words = text.split_whitespace();
                let (Some("CONNECT"), Some(target)) = (words.next(), words.next()) else {
                    return;
                };
                let port = target.rsplit_once(':').map_or("443", |(_, p)| p);
                let Ok(mut upstream) = TcpStream::connect(format!("127.0.0.1:{port}")).await else {
                    return;
                };
                seen.fetch_add(1, Ordering::SeqCst);
                let _ = client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await;
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    (port, tunnels)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feeds_are_fetched_through_https_proxy() {
    let server = feed_server(routes()).await;
    let (proxy_port, tunnels) = connect_proxy().await;
    let dir = tempfile::tempdir().expect("tmp");
    let proxy = format!("http://127.0.0.1:{proxy_port}");
    let o = update(
        &server,
        "/full.json",
        dir.path(),
        &[],
        &[("HTTPS_PROXY", proxy.clone())],
    )
    .await;
    assert!(o.status.success(), "{:?}", stderr_lines(&o));
    assert_eq!(
        tunnels.load(Ordering::SeqCst),
        1,
        "the download went through the proxy"
    );
    // NO_PROXY names the host: the proxy is bypassed.
    let o = update(
        &server,
        "/full.json",
        dir.path(),
        &[],
        &[("HTTPS_PROXY", proxy), ("NO_PROXY", "localhost".into())],
    )
    .await;
    assert!(o.status.success(), "{:?}", stderr_lines(&o));
    assert_eq!(tunnels.load(Ordering::SeqCst), 1, "bypassed");
}
