//! Reading PEM files: certificate chains and private keys, refused with the file and the
//! reason when they are not PEM or hold nothing usable.

use std::path::Path;

use rustls::pki_types::pem::{self, PemObject, SectionKind};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::TlsError;

/// Reads a file, naming it in the error.
fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// What a PEM file held.
struct PemContents {
    /// Every recognised section, in file order.
    sections: Vec<(SectionKind, Vec<u8>)>,
    /// The file has an `ENCRYPTED PRIVATE KEY` section (skipped by the parser).
    encrypted_key: bool,
}

/// Splits a file into its PEM sections; refuses syntax errors and non-blank files that
/// hold no PEM section at all (for example DER or random text).
fn read_pem(path: &Path) -> Result<PemContents, TlsError> {
    let bytes = read_file(path)?;
    let not_pem = |reason: String| TlsError::NotPem {
        path: path.to_owned(),
        reason,
    };
    let mut sections = Vec::new();
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(&bytes) {
        sections.push(section.map_err(|e| not_pem(pem_error(&e)))?);
    }
    let blank = bytes.iter().all(u8::is_ascii_whitespace);
    if sections.is_empty() && !blank && !contains(&bytes, b"-----BEGIN ") {
        return Err(not_pem("no PEM section (-----BEGIN ...-----) found".into()));
    }
    Ok(PemContents {
        sections,
        encrypted_key: contains(&bytes, b"-----BEGIN ENCRYPTED PRIVATE KEY-----"),
    })
}

/// A PEM parse error as text.
fn pem_error(e: &pem::Error) -> String {
    match e {
        pem::Error::MissingSectionEnd { end_marker } => format!(
            "section is missing its end line {}",
            String::from_utf8_lossy(end_marker)
        ),
        pem::Error::IllegalSectionStart { line } => {
            format!("malformed BEGIN line {}", String::from_utf8_lossy(line))
        }
        other => other.to_string(),
    }
}

/// Whether `haystack` contains `needle`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Reads every certificate of a PEM file, in order.
pub(super) fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_pem(path)?;
    let certs: Vec<CertificateDer<'static>> = pem
        .sections
        .into_iter()
        .filter(|(kind, _)| *kind == SectionKind::Certificate)
        .map(|(_, der)| CertificateDer::from(der))
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// Reads the (first) private key of a PEM file.
pub(super) fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_pem(path)?;
    let encrypted = pem.encrypted_key;
    let key = pem.sections.into_iter().find_map(|(kind, der)| match kind {
        SectionKind::PrivateKey | SectionKind::RsaPrivateKey | SectionKind::EcPrivateKey => {
            PrivateKeyDer::from_pem(kind, der)
        }
        _ => None,
    });
    match key {
        Some(key) => Ok(key),
        None if encrypted => Err(TlsError::UnsupportedKeyType {
            path: path.to_owned(),
            reason: "the key is encrypted; decrypt it first".into(),
        }),
        None => Err(TlsError::NoPrivateKey {
            path: path.to_owned(),
        }),
    }
}
