#![allow(dead_code)] // not every test file uses every helper
//! A local HTTPS server for fixture provider feeds, with a test CA made at run time (from
//! `pki.rs`, which the including test file declares as `mod pki`): what `update-ranges` and the
//! background refresh download in tests instead of the providers' own addresses.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use residency_proxy::tls as ptls;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::pki::Pki;

/// What the fixture server does for a path.
#[derive(Clone)]
pub enum Reply {
    /// 200 with this body.
    Body(String),
    /// 200 announcing the whole body's length, then only half of it, then close.
    CutShort(String),
    /// Read the request and never answer.
    Hang,
}

type Routes = Arc<Mutex<HashMap<String, Reply>>>;

/// The running server; its certificate is for `localhost`, issued by the CA at [`Self::ca`].
pub struct FeedServer {
    pub port: u16,
    /// The test CA's certificate (PEM).
    pub ca: PathBuf,
    routes: Routes,
    _pki: Pki,
}

/// Serve `routes` (path → reply; any other path is 404) over HTTPS on loopback.
pub async fn feed_server(routes: HashMap<&'static str, Reply>) -> FeedServer {
    ptls::install_default_provider();
    let pki = Pki::new();
    let spec = pki.leaf("localhost", &["localhost"]);
    let loaded = ptls::load_cert(&spec, SystemTime::now()).expect("server cert loads");
    let config = ptls::server_config(vec![loaded], 0, false).expect("server TLS config");
    let acceptor = TlsAcceptor::from(config);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let routes: Routes = Arc::new(Mutex::new(
        routes
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    ));
    let served = routes.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, routes) = (acceptor.clone(), served.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match tls.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let text = String::from_utf8_lossy(&head).to_string();
                let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
                let reply = routes
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(&path)
                    .cloned();
                match reply {
                    Some(Reply::Body(b)) => {
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{b}",
                            b.len()
                        );
                        let _ = tls.write_all(resp.as_bytes()).await;
                        let _ = tls.shutdown().await;
                    }
                    Some(Reply::CutShort(b)) => {
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
                            b.len(),
                            &b[..b.len() / 2]
                        );
                        let _ = tls.write_all(resp.as_bytes()).await;
                        let _ = tls.shutdown().await;
                    }
                    Some(Reply::Hang) => std::future::pending::<()>().await,
                    None => {
                        let _ = tls
                            .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                            .await;
                    }
                }
            });
        }
    });
    let ca = pki.ca_path.clone();
    FeedServer {
        port,
        ca,
        routes,
        _pki: pki,
    }
}

impl FeedServer {
    /// `https://localhost:PORT{path}`.
    pub fn https(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }

    /// Serve `reply` at `path` from now on.
    pub fn set(&self, path: &str, reply: Reply) {
        self.routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(path.to_string(), reply);
    }
}
