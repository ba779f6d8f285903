//! Peeking over loopback sockets: nothing is consumed, and the wait is bounded.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

const WAIT: Duration = Duration::from_secs(10);

/// A connected pair: (the client's end, the proxy's end).
async fn pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let client = TcpStream::connect(l.local_addr().expect("addr"))
        .await
        .expect("connect");
    let (server, _) = l.accept().await.expect("accept");
    (client, server)
}

fn hello(name: &str) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = ServerName::try_from(name.to_owned()).expect("name");
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).expect("ClientHello");
    }
    out
}

#[tokio::test]
async fn a_client_hello_in_two_segments_is_read_whole_and_left_unread() {
    let (mut client, server) = pair().await;
    let bytes = hello("gb.test");
    let (first, rest) = bytes.split_at(10);
    client.write_all(first).await.expect("first part");
    let peek = tokio::spawn(async move {
        let p = peek_first(&server, 16 * 1024, WAIT).await;
        (p, server)
    });
    client.write_all(rest).await.expect("the rest");
    let (peeked, mut server) = peek.await.expect("peek");
    assert_eq!(
        peeked,
        Peeked::Bytes(FirstBytes::Tls {
            server_name: Some("gb.test".into())
        })
    );
    let mut all = vec![0u8; bytes.len()];
    server.read_exact(&mut all).await.expect("read");
    assert_eq!(all, bytes, "peeking consumed nothing");
}

#[tokio::test]
async fn peeking_is_bounded_in_time_and_size() {
    let short = Duration::from_millis(50);
    // Nothing sent: a server-speaks-first client.
    let (_client, server) = pair().await;
    assert_eq!(peek_first(&server, 1024, short).await, Peeked::Silent);
    // A prefix that never completes.
    let (mut client, server) = pair().await;
    client
        .write_all(&hello("gb.test")[..20])
        .await
        .expect("write");
    assert_eq!(
        peek_first(&server, 1024, short).await,
        Peeked::Bytes(FirstBytes::Other)
    );
    // A request head longer than the bound, at once (no waiting for the timeout).
    let (mut client, server) = pair().await;
    let head = format!(
        "GET / HTTP/1.1\r\nX-Pad: {}\r\nHost: gb.test\r\n\r\n",
        "a".repeat(2000)
    );
    client.write_all(head.as_bytes()).await.expect("write");
    // (The Host line lies past the bound, so however the bytes arrive, the bound is reached
    // before the head is complete.)
    let started = std::time::Instant::now();
    assert_eq!(
        peek_first(&server, 512, WAIT).await,
        Peeked::Bytes(FirstBytes::Other)
    );
    assert!(
        started.elapsed() < WAIT,
        "decided at the bound, not at the timeout"
    );
    // Closed before a byte.
    let (client, server) = pair().await;
    drop(client);
    assert_eq!(peek_first(&server, 1024, WAIT).await, Peeked::Closed);
}
