use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use super::*;

/// The first flight of a real rustls client: its ClientHello, as the proxy would peek it.
fn client_hello_bytes(name: &str, sni: bool) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    config.enable_sni = sni;
    let name = ServerName::try_from(name.to_owned()).expect("a server name");
    let mut conn = ClientConnection::new(Arc::new(config), name).expect("a client");
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).expect("write the ClientHello");
    }
    out
}

fn tls(name: Option<&str>) -> Sniff {
    Sniff::Known(FirstBytes::Tls {
        server_name: name.map(str::to_owned),
    })
}

fn http(host: Option<&str>) -> Sniff {
    Sniff::Known(FirstBytes::Http {
        host: host.map(str::to_owned),
    })
}

#[test]
fn a_client_hello_gives_its_server_name() {
    let hello = client_hello_bytes("api.example.org", true);
    assert_eq!(sniff(&hello), tls(Some("api.example.org")));
}

#[test]
fn a_client_hello_without_sni_is_tls_without_a_name() {
    assert_eq!(
        sniff(&client_hello_bytes("api.example.org", false)),
        tls(None)
    );
    // Clients send no SNI for an IP address.
    assert_eq!(sniff(&client_hello_bytes("192.0.2.7", true)), tls(None));
}

#[test]
fn every_prefix_of_a_client_hello_is_incomplete() {
    let hello = client_hello_bytes("api.example.org", true);
    for n in 0..hello.len() {
        assert_eq!(sniff(&hello[..n]), Sniff::Incomplete, "prefix of {n} bytes");
    }
}

#[test]
fn bytes_after_the_client_hello_do_not_matter() {
    let mut hello = client_hello_bytes("api.example.org", true);
    hello.extend_from_slice(b"\x17\x03\x03\x00\x05hello");
    assert_eq!(sniff(&hello), tls(Some("api.example.org")));
}

#[test]
fn a_corrupt_client_hello_is_other() {
    let mut hello = client_hello_bytes("api.example.org", true);
    // The handshake type (byte 5) is no longer ClientHello.
    hello[5] = 2;
    assert_eq!(sniff(&hello), Sniff::Known(FirstBytes::Other));
    // A handshake record of an SSL 2 / unknown major version.
    assert_eq!(sniff(b"\x16\x02\x00"), Sniff::Known(FirstBytes::Other));
}

#[test]
fn an_http_request_head_gives_its_host() {
    let head = b"GET /a HTTP/1.1\r\nUser-Agent: t\r\nHOST: web.example.org:8080\r\n\r\n";
    assert_eq!(sniff(head), http(Some("web.example.org:8080")));
    assert_eq!(
        sniff(b"POST / HTTP/1.0\r\nContent-Length: 0\r\n\r\n"),
        http(None),
        "HTTP/1.0 without Host"
    );
}

#[test]
fn a_repeated_or_empty_host_is_no_host() {
    assert_eq!(
        sniff(b"GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n"),
        http(None)
    );
    assert_eq!(sniff(b"GET / HTTP/1.1\r\nHost: \r\n\r\n"), http(None));
}

#[test]
fn a_request_head_prefix_is_incomplete() {
    let head = b"GET / HTTP/1.1\r\nHost: web.example.org\r\n\r\n";
    for n in 0..head.len() {
        assert_eq!(sniff(&head[..n]), Sniff::Incomplete, "prefix of {n} bytes");
    }
}

#[test]
fn other_protocols_are_other() {
    for bytes in [
        &b"SSH-2.0-OpenSSH_9.6\r\n"[..],
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"\x00\x00\x00\x08\x04\xd2\x16\x2f",
        b"\x16\x01",
    ] {
        assert_eq!(sniff(bytes), Sniff::Known(FirstBytes::Other), "{bytes:?}");
    }
}

#[test]
fn too_many_headers_is_http_without_a_host() {
    let mut head = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..=MAX_HEADERS {
        head.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    head.extend_from_slice(b"Host: a.example\r\n\r\n");
    assert_eq!(sniff(&head), http(None));
}

#[test]
fn the_claimed_name_is_the_sni_or_the_host() {
    let t = FirstBytes::Tls {
        server_name: Some("a.example".into()),
    };
    assert_eq!(t.claimed_name(), Some("a.example"));
    assert_eq!(FirstBytes::Other.claimed_name(), None);
}
