//! TLS for the reverse-proxy mode: loading and checking certificates, choosing one per
//! connection by SNI, and building the rustls server and (upstream) client configurations.
//!
//! This module owns:
//! - [`load_cert`]: read a PEM chain and key, and refuse them at start-up (with the file and
//!   the reason) when they are not PEM, hold no certificate or key, use an unsupported key
//!   type, do not match each other, are outside their validity window, or do not cover a
//!   configured name;
//! - [`SniResolver`]: the per-handshake choice of certificate (exact name, then wildcard,
//!   then the default);
//! - [`server_config`] and [`client_config`]: the rustls configurations for the listener
//!   side and the upstream side;
//! - [`install_default_provider`]: the process-wide crypto provider.
//!
//! # Why ring
//! Every configuration here is built with rustls' *ring* crypto provider, never the
//! process default, and `aws-lc-rs` is kept out of the dependency tree: ring builds with
//! nothing more than a C compiler, while aws-lc-rs may need cmake (and more) on some
//! targets, which a fresh developer or CI machine does not necessarily have.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, InconsistentKeys, RootCertStore, ServerConfig};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

mod pem;
use pem::{read_certs, read_key};

/// ALPN protocol id for HTTP/2.
const ALPN_H2: &[u8] = b"h2";
/// ALPN protocol id for HTTP/1.1.
const ALPN_HTTP11: &[u8] = b"http/1.1";

/// One certificate for a reverse listener, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSpec {
    /// PEM file with the certificate chain, leaf first (intermediates may follow).
    pub chain: PathBuf,
    /// PEM file with the private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC); RSA, ECDSA
    /// P-256/P-384 or Ed25519. Encrypted keys are not supported.
    pub key: PathBuf,
    /// Names this certificate must serve (`*.example.org` for a wildcard). Each must be
    /// covered by a DNS SAN of the leaf. Empty means: serve the leaf's DNS SANs.
    pub names: Vec<String>,
}

/// Why a certificate, key or TLS configuration was refused.
///
/// Every variant that comes from a file names that file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("{}: read error: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The file is not (valid) PEM.
    #[error("{}: not PEM: {reason}", .path.display())]
    NotPem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The file is PEM but holds no `CERTIFICATE` section.
    #[error("{}: no certificate in file", .path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The file is PEM (or empty) but holds no private key section.
    #[error(
        "{}: no private key in file (expected PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)",
        .path.display()
    )]
    NoPrivateKey {
        /// The file.
        path: PathBuf,
    },
    /// A `CERTIFICATE` section is not a valid X.509 certificate.
    #[error("{}: certificate #{index} is not a valid X.509 certificate: {reason}", .path.display())]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// Position in the chain, 1 = leaf.
        index: usize,
        /// The parser's reason.
        reason: String,
    },
    /// The private key is of a type (or encoding) the ring provider cannot sign with.
    #[error(
        "{}: unsupported key type (supported: RSA, ECDSA P-256/P-384, Ed25519; unencrypted): {reason}",
        .path.display()
    )]
    UnsupportedKeyType {
        /// The key file.
        path: PathBuf,
        /// The reason given by rustls, or what was found.
        reason: String,
    },
    /// The private key is not the key of the leaf certificate.
    #[error(
        "{}: private key does not match certificate {} (is the leaf certificate first in the chain?)",
        .key.display(),
        .cert.display()
    )]
    KeyMismatch {
        /// The chain file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The leaf certificate's `notAfter` is in the past.
    #[error("{}: certificate expired on {not_after}", .path.display())]
    Expired {
        /// The chain file.
        path: PathBuf,
        /// `notAfter`, RFC 3339 UTC.
        not_after: String,
    },
    /// The leaf certificate's `notBefore` is in the future.
    #[error("{}: certificate not yet valid until {not_before}", .path.display())]
    NotYetValid {
        /// The chain file.
        path: PathBuf,
        /// `notBefore`, RFC 3339 UTC.
        not_before: String,
    },
    /// A configured name is not covered by any DNS SAN of the leaf.
    #[error("{}: no SAN for configured name {name} (SANs: {})", .path.display(), list(.sans))]
    NameNotCovered {
        /// The chain file.
        path: PathBuf,
        /// The configured name (normalised).
        name: String,
        /// The leaf's DNS SANs.
        sans: Vec<String>,
    },
    /// A CA file's certificate could not be used as a trust anchor.
    #[error("{}: unusable CA certificate: {reason}", .path.display())]
    BadCa {
        /// The CA file.
        path: PathBuf,
        /// The reason given by rustls.
        reason: String,
    },
    /// A server configuration was asked for without any certificate.
    #[error("no certificates configured for the TLS listener")]
    NoCertificates,
    /// The default certificate index is not one of the certificates.
    #[error("default certificate index {default} is out of range ({count} certificates)")]
    DefaultOutOfRange {
        /// The index asked for.
        default: usize,
        /// How many certificates there are.
        count: usize,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// Joins names for an error message; "none" when there are none.
fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

/// A checked certificate: the parsed chain with its signing key, the names it serves and
/// its expiry.
#[derive(Debug, Clone)]
pub struct LoadedCert {
    /// The DNS names this certificate serves, lower-case, without trailing dot, wildcards
    /// kept as `*.example.org`: the configured names when [`CertSpec::names`] is non-empty
    /// (each checked to be covered by a SAN), otherwise the leaf's DNS SANs.
    pub names: Vec<String>,
    /// The leaf's `notAfter`.
    pub not_after: SystemTime,
    /// Chain (leaf first) and signing key, ready for rustls.
    pub certified: Arc<CertifiedKey>,
}

/// The rustls ring crypto provider, as used by every configuration built here.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Installs ring as the process-wide default rustls crypto provider.
///
/// Idempotent: a provider that is already installed (ring or not) is left in place.
pub fn install_default_provider() {
    // `Err` only means a default was installed already, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Lower-cases a DNS name and drops one trailing dot.
fn normalise_name(name: &str) -> String {
    let name = name.trim();
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// Whether the SAN `san` (normalised) covers the name `name` (normalised): equal, or `san`
/// is `*.rest` and `name` is exactly one non-empty label followed by `.rest`.
fn san_covers(san: &str, name: &str) -> bool {
    if san == name {
        return true;
    }
    match (san.strip_prefix("*."), name.split_once('.')) {
        (Some(san_rest), Some((label, name_rest))) => {
            !label.is_empty() && label != "*" && !san_rest.is_empty() && san_rest == name_rest
        }
        _ => false,
    }
}

/// Seconds since the Unix epoch (negative before it).
fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

/// A Unix timestamp as a `SystemTime`.
fn system_time(seconds: i64) -> SystemTime {
    let magnitude = Duration::from_secs(seconds.unsigned_abs());
    let t = if seconds >= 0 {
        UNIX_EPOCH.checked_add(magnitude)
    } else {
        UNIX_EPOCH.checked_sub(magnitude)
    };
    t.unwrap_or(UNIX_EPOCH)
}

/// Loads and checks one certificate: chain and key parse as PEM, the key type is one ring
/// signs with, the key is the leaf's, `now` lies in the leaf's validity window, and every
/// configured name is covered by a DNS SAN (exactly or by a single-label wildcard).
pub fn load_cert(spec: &CertSpec, now: SystemTime) -> Result<LoadedCert, TlsError> {
    let chain_path = spec.chain.as_path();
    let key_path = spec.key.as_path();
    let chain = read_certs(chain_path)?;
    let key = read_key(key_path)?;

    let LeafInfo {
        not_before,
        not_after,
        sans,
    } = leaf_info(chain_path, &chain)?;

    let signing_key = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| {
        TlsError::UnsupportedKeyType {
            path: key_path.to_owned(),
            reason: e.to_string(),
        }
    })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => {}
        // Every ring key can report its public key; if one cannot, there is nothing to
        // compare, and the handshake itself will fail loudly.
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err(TlsError::KeyMismatch {
                cert: chain_path.to_owned(),
                key: key_path.to_owned(),
            });
        }
        Err(e) => {
            return Err(TlsError::BadCertificate {
                path: chain_path.to_owned(),
                index: 1,
                reason: e.to_string(),
            });
        }
    }

    let now_s = unix_seconds(now);
    if now_s < not_before {
        return Err(TlsError::NotYetValid {
            path: chain_path.to_owned(),
            not_before: crate::time::rfc3339_seconds(not_before),
        });
    }
    if now_s > not_after {
        return Err(TlsError::Expired {
            path: chain_path.to_owned(),
            not_after: crate::time::rfc3339_seconds(not_after),
        });
    }

    let names = if spec.names.is_empty() {
        sans
    } else {
        let mut names: Vec<String> = Vec::with_capacity(spec.names.len());
        for name in spec.names.iter().map(|n| normalise_name(n)) {
            if !sans.iter().any(|san| san_covers(san, &name)) {
                return Err(TlsError::NameNotCovered {
                    path: chain_path.to_owned(),
                    name,
                    sans,
                });
            }
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names
    };

    Ok(LoadedCert {
        names,
        not_after: system_time(not_after),
        certified: Arc::new(certified),
    })
}

/// What the checks need from the leaf certificate.
struct LeafInfo {
    /// `notBefore`, Unix seconds.
    not_before: i64,
    /// `notAfter`, Unix seconds.
    not_after: i64,
    /// DNS SANs, normalised, deduplicated, in certificate order.
    sans: Vec<String>,
}

/// Parses the whole chain (so that garbage in an intermediate is caught at start-up) and
/// returns what the checks need from the leaf.
fn leaf_info(path: &Path, chain: &[CertificateDer<'_>]) -> Result<LeafInfo, TlsError> {
    let bad = |index: usize, reason: String| TlsError::BadCertificate {
        path: path.to_owned(),
        index,
        reason,
    };
    let mut info = None;
    for (i, der) in chain.iter().enumerate() {
        let (_, cert) =
            X509Certificate::from_der(der.as_ref()).map_err(|e| bad(i + 1, e.to_string()))?;
        if i == 0 {
            let validity = cert.validity();
            info = Some(LeafInfo {
                not_before: validity.not_before.timestamp(),
                not_after: validity.not_after.timestamp(),
                sans: dns_sans(&cert).map_err(|reason| bad(1, reason))?,
            });
        }
    }
    info.ok_or_else(|| TlsError::NoCertificate {
        path: path.to_owned(),
    })
}

/// The leaf's DNS SANs, normalised, deduplicated, in certificate order.
fn dns_sans(leaf: &X509Certificate<'_>) -> Result<Vec<String>, String> {
    let ext = leaf
        .subject_alternative_name()
        .map_err(|e| format!("subjectAltName: {e}"))?;
    let mut sans: Vec<String> = Vec::new();
    if let Some(ext) = ext {
        for general in &ext.value.general_names {
            if let GeneralName::DNSName(dns) = general {
                let dns = normalise_name(dns);
                if !sans.contains(&dns) {
                    sans.push(dns);
                }
            }
        }
    }
    Ok(sans)
}

/// Chooses the certificate for each TLS handshake from the client's SNI.
///
/// Order: an exact name match, then a single-label wildcard match (`*.example.org` for
/// `a.example.org`), else the default certificate — also for clients that send no SNI.
/// SNI is compared case-insensitively and without a trailing dot. When several
/// certificates serve the same name (say an ECDSA and an RSA one), the first one listed
/// whose key can sign with a scheme the client offers wins.
pub struct SniResolver {
    /// The certificates, in configuration order.
    certs: Vec<Arc<CertifiedKey>>,
    /// Exact name → candidate indexes.
    exact: HashMap<String, Vec<usize>>,
    /// Wildcard suffix (`example.org` for `*.example.org`) → candidate indexes.
    wildcard: HashMap<String, Vec<usize>>,
    /// Index of the default certificate.
    default: usize,
}

impl fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut exact: Vec<&String> = self.exact.keys().collect();
        exact.sort();
        let mut wildcard: Vec<String> = self.wildcard.keys().map(|s| format!("*.{s}")).collect();
        wildcard.sort();
        f.debug_struct("SniResolver")
            .field("certificates", &self.certs.len())
            .field("exact", &exact)
            .field("wildcard", &wildcard)
            .field("default", &self.default)
            .finish()
    }
}

impl SniResolver {
    /// Builds a resolver over `certs` (each serving its [`LoadedCert::names`]) with
    /// `certs[default]` as the fallback.
    pub fn new(certs: &[LoadedCert], default: usize) -> Result<Self, TlsError> {
        if certs.is_empty() {
            return Err(TlsError::NoCertificates);
        }
        if default >= certs.len() {
            return Err(TlsError::DefaultOutOfRange {
                default,
                count: certs.len(),
            });
        }
        let mut exact: HashMap<String, Vec<usize>> = HashMap::new();
        let mut wildcard: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, cert) in certs.iter().enumerate() {
            for name in &cert.names {
                let name = normalise_name(name);
                let (map, key) = match name.strip_prefix("*.") {
                    Some(rest) => (&mut wildcard, rest.to_owned()),
                    None => (&mut exact, name),
                };
                let slot = map.entry(key).or_default();
                if !slot.contains(&i) {
                    slot.push(i);
                }
            }
        }
        Ok(Self {
            certs: certs.iter().map(|c| Arc::clone(&c.certified)).collect(),
            exact,
            wildcard,
            default,
        })
    }

    /// The candidate indexes for an SNI name, exact before wildcard; `None` for no match.
    fn candidates(&self, sni: &str) -> Option<&[usize]> {
        let name = normalise_name(sni);
        if let Some(found) = self.exact.get(&name) {
            return Some(found);
        }
        let (label, rest) = name.split_once('.')?;
        if label.is_empty() {
            return None;
        }
        self.wildcard.get(rest).map(Vec::as_slice)
    }

    /// The certificate the resolver picks for an SNI name (`None` = no SNI), ignoring
    /// signature-scheme preferences. For diagnostics and tests.
    pub fn pick(&self, sni: Option<&str>) -> &Arc<CertifiedKey> {
        let index = sni
            .and_then(|s| self.candidates(s))
            .and_then(|c| c.first().copied())
            .unwrap_or(self.default);
        &self.certs[index]
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(candidates) = client_hello.server_name().and_then(|s| self.candidates(s)) else {
            return Some(Arc::clone(&self.certs[self.default]));
        };
        let offered = client_hello.signature_schemes();
        let chosen = candidates
            .iter()
            .find(|&&i| self.certs[i].key.choose_scheme(offered).is_some())
            .or(candidates.first())
            .copied()
            .unwrap_or(self.default);
        Some(Arc::clone(&self.certs[chosen]))
    }
}

/// Builds the listener's rustls configuration: ring provider, TLS 1.3 and 1.2, no client
/// authentication, certificates chosen by [`SniResolver`] (`certs[default]` as fallback),
/// and ALPN `h2`, `http/1.1` (only `http/1.1` when `h2` is false).
pub fn server_config(
    certs: Vec<LoadedCert>,
    default: usize,
    h2: bool,
) -> Result<Arc<ServerConfig>, TlsError> {
    let resolver = SniResolver::new(&certs, default)?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = if h2 {
        vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()]
    } else {
        vec![ALPN_HTTP11.to_vec()]
    };
    Ok(Arc::new(config))
}

/// Builds the rustls configuration for TLS connections to upstreams: ring provider, TLS
/// 1.3 and 1.2, ALPN `http/1.1`, servers verified against the Mozilla roots of
/// `webpki-roots`, or — when `ca` is given — against the certificates of that PEM file
/// only.
pub fn client_config(ca: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = match ca {
        None => RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        },
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(path)? {
                roots.add(cert).map_err(|e| TlsError::BadCa {
                    path: path.to_owned(),
                    reason: e.to_string(),
                })?;
            }
            roots
        }
    };
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests;
