//! A raw TCP origin whose connections follow scripts, for what a well-behaved HTTP server
//! never does on cue: close a kept-alive connection as a request arrives, or stall mid-body.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What one accepted connection does.
#[derive(Debug, Clone, Copy)]
pub enum Script {
    /// Answer every request `200 ok` with keep-alive, until the peer closes.
    Answer,
    /// Answer one request, then read the next request's head and `body_bytes` of its body,
    /// and close without a word: a kept-alive connection gone stale under its next request.
    AnswerOneThenCut {
        /// Body bytes to receive before closing.
        body_bytes: usize,
    },
    /// Read a request, send a head announcing `announced` body bytes and `sent` of them,
    /// then stall with the connection open.
    StallMidBody {
        /// The Content-Length sent.
        announced: usize,
        /// Body bytes actually sent.
        sent: usize,
    },
}

/// The origin: connection `i` follows `scripts[i]` (the last script for any later one).
pub struct ScriptedOrigin {
    /// Where it listens.
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    heads: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl ScriptedOrigin {
    /// Listen on loopback.
    pub async fn start(scripts: Vec<Script>) -> ScriptedOrigin {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (acc, hs) = (accepted.clone(), heads.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else { return };
                let i = acc.fetch_add(1, Ordering::SeqCst);
                let script = scripts
                    .get(i)
                    .or(scripts.last())
                    .copied()
                    .unwrap_or(Script::Answer);
                tokio::spawn(run(s, script, hs.clone()));
            }
        });
        ScriptedOrigin {
            addr,
            accepted,
            heads,
            task,
        }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Request lines received so far (`GET /one HTTP/1.1`), on every connection.
    pub fn requests(&self) -> Vec<String> {
        self.heads.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for ScriptedOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Read one request head (and return it with the bytes read past it), or `None` at EOF.
async fn read_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            buf.drain(..end + 4);
            return Some(head);
        }
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn content_length(head: &str) -> usize {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Read until `buf` holds `n` bytes (false at EOF first).
async fn fill(s: &mut TcpStream, buf: &mut Vec<u8>, n: usize) -> bool {
    while buf.len() < n {
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
        }
    }
    true
}

async fn request(s: &mut TcpStream, buf: &mut Vec<u8>, log: &Mutex<Vec<String>>) -> bool {
    let Some(head) = read_head(s, buf).await else {
        return false;
    };
    let len = content_length(&head);
    log.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(head.lines().next().unwrap_or("").to_string());
    if !fill(s, buf, len).await {
        return false;
    }
    buf.drain(..len);
    true
}

async fn answer(s: &mut TcpStream) -> bool {
    s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        .await
        .is_ok()
}

async fn run(mut s: TcpStream, script: Script, log: Arc<Mutex<Vec<String>>>) {
    let mut buf = Vec::new();
    match script {
        Script::Answer => {
            while request(&mut s, &mut buf, &log).await {
                if !answer(&mut s).await {
                    return;
                }
            }
        }
        Script::AnswerOneThenCut { body_bytes } => {
            if !request(&mut s, &mut buf, &log).await || !answer(&mut s).await {
                return;
            }
            let Some(head) = read_head(&mut s, &mut buf).await else {
                return;
            };
            log.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(head.lines().next().unwrap_or("").to_string());
            fill(&mut s, &mut buf, body_bytes).await;
            // Closed with the request unanswered.
        }
        Script::StallMidBody { announced, sent } => {
            if !request(&mut s, &mut buf, &log).await {
                return;
            }
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {announced}\r\n\r\n");
            let _ = s.write_all(head.as_bytes()).await;
            let _ = s.write_all(&vec![b'x'; sent]).await;
            // Keep the connection open, silent, until the peer goes.
            let mut sink = [0u8; 1024];
            while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
        }
    }
}
