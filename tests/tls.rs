//! Integration tests for `residency_proxy::tls`: certificate loading and its refusals, the
//! SNI resolver driven by real rustls handshakes, ALPN and protocol versions.
//!
//! Every certificate is made at run time with rcgen in a temporary directory. ring cannot
//! generate RSA keys, so the RSA key (and the PKCS#1 / SEC1 / encrypted encodings) come from
//! the `openssl` command-line tool, which the development image ships.

#[path = "support/pki.rs"]
mod pki;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ED25519};
use residency_proxy::tls::{self, CertSpec, LoadedCert, SniResolver, TlsError};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ProtocolVersion, ServerConfig, SupportedProtocolVersion};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use x509_parser::prelude::{FromDer, X509Certificate};

use pki::{Pki, client_config, dns_sans, p256};

// ---------------------------------------------------------------------------------------
// Certificates made at run time
// ---------------------------------------------------------------------------------------

/// Runs `openssl` with `args`, feeding `stdin`, and returns its standard output.
fn openssl(args: &[&str], stdin: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the openssl command is needed to make RSA keys (ring cannot)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("feed openssl");
    let out = child.wait_with_output().expect("openssl output");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A fresh 2048-bit RSA key as PKCS#8 PEM.
fn rsa_pkcs8_pem() -> String {
    let pem = openssl(
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ],
        b"",
    );
    String::from_utf8(pem).expect("PEM is text")
}

/// Re-encodes a PKCS#8 key in its traditional form: PKCS#1 for RSA, SEC1 for EC.
fn traditional(pkcs8_pem: &str) -> Vec<u8> {
    openssl(&["pkey", "-traditional"], pkcs8_pem.as_bytes())
}

fn load(spec: &CertSpec) -> Result<LoadedCert, TlsError> {
    tls::load_cert(spec, SystemTime::now())
}

fn load_ok(spec: &CertSpec) -> LoadedCert {
    match load(spec) {
        Ok(cert) => cert,
        Err(e) => panic!("{e}"),
    }
}

fn load_err(spec: &CertSpec) -> TlsError {
    match load(spec) {
        Ok(_) => panic!("{spec:?} loaded but should have been refused"),
        Err(e) => e,
    }
}

fn shown(path: &Path) -> String {
    path.display().to_string()
}

// ---------------------------------------------------------------------------------------
// Handshakes
// ---------------------------------------------------------------------------------------

static BOTH: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];
static TLS12_ONLY: &[&SupportedProtocolVersion] = &[&rustls::version::TLS12];
static TLS13_ONLY: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// How the test client is set up.
struct Client {
    versions: &'static [&'static SupportedProtocolVersion],
    alpn: &'static [&'static str],
    /// Send SNI.
    sni: bool,
    /// Accept a certificate for another name (chain still verified).
    any_name: bool,
    provider: CryptoProvider,
}

impl Default for Client {
    fn default() -> Self {
        Self {
            versions: BOTH,
            alpn: &[],
            sni: true,
            any_name: false,
            provider: rustls::crypto::ring::default_provider(),
        }
    }
}

impl Client {
    fn config(self, pki: &Pki) -> Arc<ClientConfig> {
        client_config(
            pki,
            self.provider,
            self.versions,
            self.alpn,
            self.any_name,
            self.sni,
        )
    }
}

/// What the client saw of a completed handshake.
#[derive(Debug)]
struct Seen {
    /// The leaf's common name.
    cn: String,
    /// The leaf's DNS SANs.
    sans: Vec<String>,
    /// The number of certificates served.
    chain_len: usize,
    alpn: Option<String>,
    version: Option<ProtocolVersion>,
}

/// Runs one handshake over an in-memory duplex pipe, connecting to `name`.
async fn handshake(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    name: &str,
) -> Result<Seen, std::io::Error> {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let server_name = ServerName::try_from(name.to_owned()).expect("server name");
    let accept = TlsAcceptor::from(server).accept(server_io);
    let connect = TlsConnector::from(client).connect(server_name, client_io);
    let both = async { tokio::join!(accept, connect) };
    let (accepted, connected) = tokio::time::timeout(Duration::from_secs(20), both)
        .await
        .expect("handshake timed out");
    let stream = connected?;
    let _server_side = accepted?;
    let conn = stream.get_ref().1;
    let chain = conn.peer_certificates().expect("server sent certificates");
    let (_, leaf) = X509Certificate::from_der(chain[0].as_ref()).expect("parse served leaf");
    let cn = leaf
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_owned();
    let sans = dns_sans(chain[0].as_ref());
    Ok(Seen {
        cn,
        sans,
        chain_len: chain.len(),
        alpn: conn
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned()),
        version: conn.protocol_version(),
    })
}

async fn handshake_ok(server: &Arc<ServerConfig>, client: Arc<ClientConfig>, name: &str) -> Seen {
    match handshake(Arc::clone(server), client, name).await {
        Ok(seen) => seen,
        Err(e) => panic!("handshake to {name} failed: {e}"),
    }
}

/// A server with three certificates: `a` (default unless told), `b`, and a wildcard.
fn three_cert_server(pki: &Pki, default: usize, h2: bool) -> Arc<ServerConfig> {
    let certs = vec![
        load_ok(&pki.leaf("cert-a", &["a.test"])),
        load_ok(&pki.leaf("cert-b", &["b.test", "www.b.test"])),
        load_ok(&pki.leaf("cert-wild", &["*.wild.test"])),
    ];
    tls::server_config(certs, default, h2).expect("server config")
}

// ---------------------------------------------------------------------------------------
// Loading: key types and encodings
// ---------------------------------------------------------------------------------------

#[test]
fn ecdsa_p256_p384_and_ed25519_leaves_load() {
    let pki = Pki::new();
    for (cn, alg) in [
        ("p256", &PKCS_ECDSA_P256_SHA256),
        ("p384", &PKCS_ECDSA_P384_SHA384),
        ("ed25519", &PKCS_ED25519),
    ] {
        let key = KeyPair::generate_for(alg).expect("key");
        let spec = pki.leaf_with(cn, &["app.test"], &key, |_| {});
        let loaded = load_ok(&spec);
        assert_eq!(loaded.names, ["app.test"], "{cn}");
        assert_eq!(loaded.certified.cert.len(), 2, "{cn}: leaf + CA");
    }
}

#[test]
fn rsa_leaf_loads_as_pkcs8_and_pkcs1() {
    let pki = Pki::new();
    let pem = rsa_pkcs8_pem();
    let key = KeyPair::from_pem(&pem).expect("RSA key");
    let mut spec = pki.leaf_with("rsa", &["rsa.test"], &key, |_| {});
    assert!(
        std::fs::read_to_string(&spec.key)
            .unwrap()
            .contains("BEGIN PRIVATE KEY")
    );
    assert_eq!(load_ok(&spec).names, ["rsa.test"]);

    let pkcs1 = traditional(&pem);
    assert!(String::from_utf8_lossy(&pkcs1).contains("BEGIN RSA PRIVATE KEY"));
    spec.key = pki.write("rsa-pkcs1-key.pem", pkcs1);
    assert_eq!(load_ok(&spec).names, ["rsa.test"]);
}

#[test]
fn ec_key_loads_as_sec1() {
    let pki = Pki::new();
    let key = p256();
    let mut spec = pki.leaf_with("sec1", &["sec1.test"], &key, |_| {});
    let sec1 = traditional(&key.serialize_pem());
    assert!(String::from_utf8_lossy(&sec1).contains("BEGIN EC PRIVATE KEY"));
    spec.key = pki.write("sec1-key.pem", sec1);
    assert_eq!(load_ok(&spec).names, ["sec1.test"]);
}

#[test]
fn names_default_to_the_lower_cased_dns_sans() {
    let pki = Pki::new();
    let spec = pki.leaf(
        "mixed",
        &["WWW.Example.TEST", "*.Api.example.test", "127.0.0.1"],
    );
    let loaded = load_ok(&spec);
    assert_eq!(loaded.names, ["www.example.test", "*.api.example.test"]);
}

#[test]
fn not_after_is_reported() {
    let pki = Pki::new();
    let spec = pki.leaf_with("dated", &["dated.test"], &p256(), |p| {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2100, 1, 1);
    });
    let loaded = load_ok(&spec);
    // 2100-01-01T00:00:00Z
    assert_eq!(
        loaded.not_after,
        UNIX_EPOCH + Duration::from_secs(4_102_444_800)
    );
}

// ---------------------------------------------------------------------------------------
// Loading: refusals
// ---------------------------------------------------------------------------------------

#[test]
fn key_that_does_not_match_the_certificate_is_refused_naming_both_files() {
    let pki = Pki::new();
    let a = pki.leaf("match-a", &["a.test"]);
    let b = pki.leaf("match-b", &["b.test"]);
    let crossed = CertSpec {
        chain: a.chain.clone(),
        key: b.key.clone(),
        names: Vec::new(),
    };
    let err = load_err(&crossed);
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&shown(&a.chain)), "{msg}");
    assert!(msg.contains(&shown(&b.key)), "{msg}");
    assert!(msg.contains("does not match"), "{msg}");
}

#[test]
fn chain_with_the_ca_first_is_refused_as_a_mismatch() {
    let pki = Pki::new();
    let spec = pki.leaf("order", &["order.test"]);
    let leaf_and_ca = std::fs::read_to_string(&spec.chain).unwrap();
    let ca_first = pki.ca.pem() + &leaf_and_ca;
    let spec = CertSpec {
        chain: pki.write("ca-first.pem", ca_first),
        ..spec
    };
    let err = load_err(&spec);
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err:?}");
    assert!(err.to_string().contains("leaf certificate first"), "{err}");
}

#[test]
fn expired_certificate_is_refused_with_its_date() {
    let pki = Pki::new();
    let spec = pki.leaf_with("expired", &["old.test"], &p256(), |p| {
        p.not_before = rcgen::date_time_ymd(2000, 1, 1);
        p.not_after = rcgen::date_time_ymd(2001, 1, 1);
    });
    let err = load_err(&spec);
    assert!(matches!(err, TlsError::Expired { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&shown(&spec.chain)), "{msg}");
    assert!(msg.contains("expired on 2001-01-01T00:00:00Z"), "{msg}");
}

#[test]
fn not_yet_valid_certificate_is_refused_with_its_date() {
    let pki = Pki::new();
    let spec = pki.leaf_with("future", &["new.test"], &p256(), |p| {
        p.not_before = rcgen::date_time_ymd(2090, 6, 15);
        p.not_after = rcgen::date_time_ymd(2091, 1, 1);
    });
    let err = load_err(&spec);
    assert!(matches!(err, TlsError::NotYetValid { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&shown(&spec.chain)), "{msg}");
    assert!(
        msg.contains("not yet valid until 2090-06-15T00:00:00Z"),
        "{msg}"
    );
}

#[test]
fn validity_is_judged_at_the_given_time() {
    let pki = Pki::new();
    let spec = pki.leaf_with("window", &["w.test"], &p256(), |p| {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    let mid_2020 = UNIX_EPOCH + Duration::from_secs(1_593_561_600); // 2020-07-01
    assert!(tls::load_cert(&spec, mid_2020).is_ok());
    let end_2019 = UNIX_EPOCH + Duration::from_secs(1_577_836_799); // 2019-12-31T23:59:59Z
    assert!(matches!(
        tls::load_cert(&spec, end_2019),
        Err(TlsError::NotYetValid { .. })
    ));
    assert!(matches!(
        tls::load_cert(&spec, SystemTime::now()),
        Err(TlsError::Expired { .. })
    ));
}

#[test]
fn configured_name_without_a_san_is_refused_listing_the_sans() {
    let pki = Pki::new();
    let mut spec = pki.leaf("sans", &["app.test", "*.app.test"]);
    spec.names = vec!["app.test".into(), "other.test".into()];
    let err = load_err(&spec);
    assert!(matches!(err, TlsError::NameNotCovered { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&shown(&spec.chain)), "{msg}");
    assert!(
        msg.contains("no SAN for configured name other.test (SANs: app.test, *.app.test)"),
        "{msg}"
    );

    // A wildcard covers one label, not two, and not the bare domain.
    spec.names = vec!["a.b.app.test".into()];
    assert!(matches!(load_err(&spec), TlsError::NameNotCovered { .. }));
    let bare = pki.leaf("bare", &["*.bare.test"]);
    let bare = CertSpec {
        names: vec!["bare.test".into()],
        ..bare
    };
    assert!(matches!(load_err(&bare), TlsError::NameNotCovered { .. }));
}

#[test]
fn configured_names_are_normalised_and_kept() {
    let pki = Pki::new();
    let mut spec = pki.leaf("cfg", &["app.test", "*.app.test", "extra.test"]);
    spec.names = vec!["APP.test.".into(), "x.App.Test".into(), "*.app.test".into()];
    let loaded = load_ok(&spec);
    // The configured names (not every SAN) are what the certificate serves.
    assert_eq!(loaded.names, ["app.test", "x.app.test", "*.app.test"]);
}

#[test]
fn file_that_is_not_pem_is_refused() {
    let pki = Pki::new();
    let good = pki.leaf("good", &["good.test"]);

    let text = CertSpec {
        chain: pki.write("notes.txt", "this is not a certificate\n"),
        ..good.clone()
    };
    let err = load_err(&text);
    assert!(matches!(err, TlsError::NotPem { .. }), "{err:?}");
    assert!(err.to_string().contains(&shown(&text.chain)), "{err}");

    let der = CertSpec {
        chain: pki.write("leaf.der", pki.ca.der().as_ref()),
        ..good.clone()
    };
    assert!(matches!(load_err(&der), TlsError::NotPem { .. }));

    let truncated = CertSpec {
        key: pki.write(
            "truncated-key.pem",
            "-----BEGIN PRIVATE KEY-----\nMIGHAgEA\n",
        ),
        ..good.clone()
    };
    let err = load_err(&truncated);
    assert!(matches!(err, TlsError::NotPem { .. }), "{err:?}");
    assert!(err.to_string().contains(&shown(&truncated.key)), "{err}");
}

#[test]
fn empty_key_file_is_refused() {
    let pki = Pki::new();
    let spec = CertSpec {
        key: pki.write("empty-key.pem", ""),
        ..pki.leaf("nokey", &["nokey.test"])
    };
    let err = load_err(&spec);
    assert!(matches!(err, TlsError::NoPrivateKey { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&shown(&spec.key)), "{msg}");
    assert!(msg.contains("no private key in file"), "{msg}");

    // A certificate where the key should be is no key either.
    let spec = CertSpec {
        key: spec.chain.clone(),
        ..spec
    };
    assert!(matches!(load_err(&spec), TlsError::NoPrivateKey { .. }));
}

#[test]
fn chain_without_a_certificate_is_refused() {
    let pki = Pki::new();
    let good = pki.leaf("nocert", &["nocert.test"]);
    for (file, contents) in [
        ("empty.pem", String::new()),
        ("key-only.pem", p256().serialize_pem()),
    ] {
        let spec = CertSpec {
            chain: pki.write(file, contents),
            ..good.clone()
        };
        let err = load_err(&spec);
        assert!(
            matches!(err, TlsError::NoCertificate { .. }),
            "{file}: {err:?}"
        );
        assert!(err.to_string().contains("no certificate in file"), "{err}");
    }
}

#[test]
fn missing_file_is_a_read_error_naming_it() {
    let pki = Pki::new();
    let spec = CertSpec {
        chain: pki.dir.path().join("absent.pem"),
        ..pki.leaf("present", &["present.test"])
    };
    let err = load_err(&spec);
    assert!(matches!(err, TlsError::Read { .. }), "{err:?}");
    assert!(err.to_string().contains(&shown(&spec.chain)), "{err}");
}

#[test]
fn unusable_keys_are_refused_as_unsupported() {
    let pki = Pki::new();
    let good = pki.leaf("badkey", &["badkey.test"]);

    // A PKCS#8 section whose content is no key ring knows.
    let junk = CertSpec {
        key: pki.write(
            "junk-key.pem",
            "-----BEGIN PRIVATE KEY-----\nAAECAwQFBgcICQ==\n-----END PRIVATE KEY-----\n",
        ),
        ..good.clone()
    };
    let err = load_err(&junk);
    assert!(
        matches!(err, TlsError::UnsupportedKeyType { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains(&shown(&junk.key)), "{err}");

    // An encrypted key.
    let key = std::fs::read(&good.key).unwrap();
    let encrypted = openssl(
        &[
            "pkcs8",
            "-topk8",
            "-v2",
            "aes-256-cbc",
            "-passout",
            "pass:secret",
        ],
        &key,
    );
    let spec = CertSpec {
        key: pki.write("encrypted-key.pem", encrypted),
        ..good
    };
    let err = load_err(&spec);
    assert!(
        matches!(err, TlsError::UnsupportedKeyType { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("encrypted"), "{err}");
}

// ---------------------------------------------------------------------------------------
// Configurations
// ---------------------------------------------------------------------------------------

#[test]
fn server_config_needs_a_certificate_and_a_valid_default() {
    let pki = Pki::new();
    assert!(matches!(
        tls::server_config(Vec::new(), 0, true),
        Err(TlsError::NoCertificates)
    ));
    let one = vec![load_ok(&pki.leaf("one", &["one.test"]))];
    assert!(matches!(
        tls::server_config(one.clone(), 1, true),
        Err(TlsError::DefaultOutOfRange {
            default: 1,
            count: 1
        })
    ));
    let config = tls::server_config(one, 0, true).expect("config");
    assert_eq!(
        config.alpn_protocols,
        [b"h2".to_vec(), b"http/1.1".to_vec()]
    );
}

#[test]
fn server_config_without_h2_offers_only_http11() {
    let pki = Pki::new();
    let one = vec![load_ok(&pki.leaf("one", &["one.test"]))];
    let config = tls::server_config(one, 0, false).expect("config");
    assert_eq!(config.alpn_protocols, [b"http/1.1".to_vec()]);
}

#[test]
fn client_config_builds_with_webpki_roots() {
    let config = tls::client_config(None).expect("client config");
    assert_eq!(config.alpn_protocols, [b"http/1.1".to_vec()]);
}

#[test]
fn client_config_refuses_a_ca_file_that_is_not_pem() {
    let pki = Pki::new();
    let bogus = pki.write("bogus-ca.pem", "not a CA");
    let err = tls::client_config(Some(&bogus)).expect_err("refused");
    assert!(matches!(err, TlsError::NotPem { .. }), "{err:?}");
    assert!(err.to_string().contains(&shown(&bogus)), "{err}");
}

#[test]
fn install_default_provider_is_idempotent() {
    tls::install_default_provider();
    tls::install_default_provider();
    assert!(CryptoProvider::get_default().is_some());
}

#[test]
fn resolver_pick_is_case_insensitive_and_falls_back() {
    let pki = Pki::new();
    let certs = vec![
        load_ok(&pki.leaf("cert-a", &["a.test"])),
        load_ok(&pki.leaf("cert-b", &["b.test"])),
        load_ok(&pki.leaf("cert-wild", &["*.wild.test"])),
    ];
    let resolver = SniResolver::new(&certs, 1).expect("resolver");
    let is = |sni: Option<&str>, want: usize| {
        assert!(
            Arc::ptr_eq(resolver.pick(sni), &certs[want].certified),
            "{sni:?} should pick certificate {want}"
        );
    };
    is(Some("a.test"), 0);
    is(Some("A.TEST"), 0);
    is(Some("a.test."), 0);
    is(Some("X.Wild.Test"), 2);
    is(Some("wild.test"), 1);
    is(Some("a.b.wild.test"), 1);
    is(Some("unknown.test"), 1);
    is(None, 1);
    assert!(format!("{resolver:?}").contains("*.wild.test"));
}

// ---------------------------------------------------------------------------------------
// Handshakes: SNI, ALPN, versions
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn sni_picks_the_certificate_by_exact_name() {
    let pki = Pki::new();
    let server = three_cert_server(&pki, 0, true);
    let seen = handshake_ok(&server, Client::default().config(&pki), "b.test").await;
    assert_eq!(seen.cn, "cert-b");
    assert_eq!(seen.sans, ["b.test", "www.b.test"]);
    assert_eq!(seen.chain_len, 2);
    let seen = handshake_ok(&server, Client::default().config(&pki), "www.b.test").await;
    assert_eq!(seen.cn, "cert-b");
    let seen = handshake_ok(&server, Client::default().config(&pki), "a.test").await;
    assert_eq!(seen.cn, "cert-a");
}

#[tokio::test]
async fn sni_picks_the_wildcard_certificate() {
    let pki = Pki::new();
    let server = three_cert_server(&pki, 0, true);
    let seen = handshake_ok(&server, Client::default().config(&pki), "api.wild.test").await;
    assert_eq!(seen.cn, "cert-wild");
    assert_eq!(seen.sans, ["*.wild.test"]);
}

#[tokio::test]
async fn exact_name_beats_wildcard() {
    let pki = Pki::new();
    let certs = vec![
        load_ok(&pki.leaf("wild", &["*.x.test"])),
        load_ok(&pki.leaf("exact", &["api.x.test"])),
    ];
    let server = tls::server_config(certs, 0, true).expect("config");
    let seen = handshake_ok(&server, Client::default().config(&pki), "api.x.test").await;
    assert_eq!(seen.cn, "exact");
    let seen = handshake_ok(&server, Client::default().config(&pki), "web.x.test").await;
    assert_eq!(seen.cn, "wild");
}

#[tokio::test]
async fn unknown_sni_gets_the_default_certificate() {
    let pki = Pki::new();
    for (default, cn) in [(0, "cert-a"), (1, "cert-b")] {
        let server = three_cert_server(&pki, default, true);
        let client = Client {
            any_name: true,
            ..Client::default()
        };
        let seen = handshake_ok(&server, client.config(&pki), "unknown.test").await;
        assert_eq!(seen.cn, cn);
        // Two labels under the wildcard are not covered by it either.
        let client = Client {
            any_name: true,
            ..Client::default()
        };
        let seen = handshake_ok(&server, client.config(&pki), "a.b.wild.test").await;
        assert_eq!(seen.cn, cn);
    }
    // Without tolerance the client refuses the default certificate for that name.
    let server = three_cert_server(&pki, 0, true);
    assert!(
        handshake(server, Client::default().config(&pki), "unknown.test")
            .await
            .is_err()
    );
}

#[tokio::test]
async fn no_sni_gets_the_default_certificate() {
    let pki = Pki::new();
    let server = three_cert_server(&pki, 0, true);
    // Connecting to b.test without sending SNI: the server cannot know, and serves the
    // default (cert-a), which the client accepts only because it tolerates the name.
    let client = Client {
        sni: false,
        any_name: true,
        ..Client::default()
    };
    let seen = handshake_ok(&server, client.config(&pki), "b.test").await;
    assert_eq!(seen.cn, "cert-a");
    // An IP address is never sent as SNI.
    let client = Client {
        any_name: true,
        ..Client::default()
    };
    let seen = handshake_ok(&server, client.config(&pki), "127.0.0.1").await;
    assert_eq!(seen.cn, "cert-a");
    // With the default covering the name, a strict client is satisfied too.
    let server = three_cert_server(&pki, 1, true);
    let client = Client {
        sni: false,
        ..Client::default()
    };
    let seen = handshake_ok(&server, client.config(&pki), "b.test").await;
    assert_eq!(seen.cn, "cert-b");
}

#[tokio::test]
async fn alpn_negotiates_h2_when_offered_and_enabled() {
    let pki = Pki::new();
    let h2_and_http11 = || Client {
        alpn: &["h2", "http/1.1"],
        ..Client::default()
    };
    let server = three_cert_server(&pki, 0, true);
    let seen = handshake_ok(&server, h2_and_http11().config(&pki), "a.test").await;
    assert_eq!(seen.alpn.as_deref(), Some("h2"));

    let http11_only = Client {
        alpn: &["http/1.1"],
        ..Client::default()
    };
    let seen = handshake_ok(&server, http11_only.config(&pki), "a.test").await;
    assert_eq!(seen.alpn.as_deref(), Some("http/1.1"));

    let seen = handshake_ok(&server, Client::default().config(&pki), "a.test").await;
    assert_eq!(seen.alpn, None, "no ALPN offered, none negotiated");

    let no_h2 = three_cert_server(&pki, 0, false);
    let seen = handshake_ok(&no_h2, h2_and_http11().config(&pki), "a.test").await;
    assert_eq!(seen.alpn.as_deref(), Some("http/1.1"));
}

#[tokio::test]
async fn tls12_only_and_tls13_only_clients_handshake_with_every_key_type() {
    let pki = Pki::new();
    let rsa = KeyPair::from_pem(&rsa_pkcs8_pem()).expect("RSA key");
    let p384 = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).expect("P-384 key");
    let ed25519 = KeyPair::generate_for(&PKCS_ED25519).expect("Ed25519 key");
    let certs = vec![
        load_ok(&pki.leaf("p256", &["p256.test"])),
        load_ok(&pki.leaf_with("p384", &["p384.test"], &p384, |_| {})),
        load_ok(&pki.leaf_with("rsa", &["rsa.test"], &rsa, |_| {})),
        load_ok(&pki.leaf_with("ed25519", &["ed25519.test"], &ed25519, |_| {})),
    ];
    let server = tls::server_config(certs, 0, true).expect("config");
    for (versions, want) in [
        (TLS12_ONLY, ProtocolVersion::TLSv1_2),
        (TLS13_ONLY, ProtocolVersion::TLSv1_3),
    ] {
        for cn in ["p256", "p384", "rsa", "ed25519"] {
            let client = Client {
                versions,
                alpn: &["h2", "http/1.1"],
                ..Client::default()
            };
            let seen = handshake_ok(&server, client.config(&pki), &format!("{cn}.test")).await;
            assert_eq!(seen.cn, cn);
            assert_eq!(seen.version, Some(want), "{cn}");
            assert_eq!(seen.alpn.as_deref(), Some("h2"), "{cn}");
        }
    }
}

#[tokio::test]
async fn same_name_with_two_key_types_serves_the_one_the_client_can_use() {
    let pki = Pki::new();
    let rsa = KeyPair::from_pem(&rsa_pkcs8_pem()).expect("RSA key");
    let certs = vec![
        load_ok(&pki.leaf("dual-ecdsa", &["dual.test"])),
        load_ok(&pki.leaf_with("dual-rsa", &["dual.test"], &rsa, |_| {})),
    ];
    let server = tls::server_config(certs, 0, true).expect("config");

    let seen = handshake_ok(&server, Client::default().config(&pki), "dual.test").await;
    assert_eq!(
        seen.cn, "dual-ecdsa",
        "first listed wins when both are usable"
    );

    // A TLS 1.2 client offering only ECDHE-RSA suites cannot use the ECDSA certificate.
    let mut rsa_only = rustls::crypto::ring::default_provider();
    rsa_only.cipher_suites =
        vec![rustls::crypto::ring::cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256];
    let client = Client {
        versions: TLS12_ONLY,
        provider: rsa_only,
        ..Client::default()
    };
    let seen = handshake_ok(&server, client.config(&pki), "dual.test").await;
    assert_eq!(seen.cn, "dual-rsa");
}

#[tokio::test]
async fn upstream_client_config_trusts_a_configured_ca() {
    let pki = Pki::new();
    let server = three_cert_server(&pki, 0, true);
    let client = tls::client_config(Some(&pki.ca_path)).expect("client config");
    let seen = handshake_ok(&server, Arc::clone(&client), "b.test").await;
    assert_eq!(seen.cn, "cert-b");
    assert_eq!(seen.alpn.as_deref(), Some("http/1.1"));

    // The Mozilla roots do not trust the test CA.
    let public = tls::client_config(None).expect("client config");
    assert!(handshake(server, public, "b.test").await.is_err());
}

#[tokio::test]
async fn handshake_over_loopback_tcp() {
    let pki = Pki::new();
    let server = three_cert_server(&pki, 0, true);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor = TlsAcceptor::from(server);
    let serve = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let tls = acceptor.accept(tcp).await.expect("server handshake");
        tls.get_ref().1.server_name().map(str::to_owned)
    });
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let client = Client {
        alpn: &["h2"],
        ..Client::default()
    }
    .config(&pki);
    let name = ServerName::try_from("x.wild.test").expect("name");
    let tls = TlsConnector::from(client)
        .connect(name, tcp)
        .await
        .expect("client handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let sni = tokio::time::timeout(Duration::from_secs(20), serve)
        .await
        .expect("server in time")
        .expect("server task");
    assert_eq!(sni.as_deref(), Some("x.wild.test"));
}
