#![allow(dead_code)] // not every test file uses every helper
//! A test certificate authority made at run time with rcgen in a temporary directory, and TLS
//! client settings that trust it.

use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256,
};
use residency_proxy::tls::CertSpec;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    SupportedProtocolVersion,
};
use tempfile::TempDir;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// A test CA and a temporary directory for the files it issues.
pub struct Pki {
    pub dir: TempDir,
    pub ca: CertifiedIssuer<'static, KeyPair>,
    pub ca_path: PathBuf,
}

/// A fresh ECDSA P-256 key.
pub fn p256() -> KeyPair {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("a P-256 key")
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "residency-proxy test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(params, p256()).expect("CA certificate");
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, ca.pem()).expect("write the CA");
        Pki { dir, ca, ca_path }
    }

    /// Writes `contents` to `name` in the temporary directory.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).expect("write a file");
        path
    }

    /// Issues a leaf with common name `cn` and DNS SANs `sans` for `key`, after `edit` has had
    /// its say on the parameters; writes `<cn>.pem` (leaf + CA) and `<cn>-key.pem`.
    pub fn leaf_with(
        &self,
        cn: &str,
        sans: &[&str],
        key: &KeyPair,
        edit: impl FnOnce(&mut CertificateParams),
    ) -> CertSpec {
        let sans: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
        let mut params = CertificateParams::new(sans).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, cn);
        edit(&mut params);
        let cert = params.signed_by(key, &self.ca).expect("sign the leaf");
        let chain = self.write(&format!("{cn}.pem"), cert.pem() + &self.ca.pem());
        let key = self.write(&format!("{cn}-key.pem"), key.serialize_pem());
        CertSpec {
            chain,
            key,
            names: Vec::new(),
        }
    }

    /// A leaf with a fresh P-256 key.
    pub fn leaf(&self, cn: &str, sans: &[&str]) -> CertSpec {
        self.leaf_with(cn, sans, &p256(), |_| {})
    }

    /// The CA as a rustls trust store.
    pub fn roots(&self) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.der().clone()).expect("add the CA");
        Arc::new(roots)
    }
}

/// The DNS names among the subject alternative names of a DER certificate.
pub fn dns_sans(der: &[u8]) -> Vec<String> {
    let (_, cert) = X509Certificate::from_der(der).expect("parse the certificate");
    cert.subject_alternative_name()
        .expect("SAN extension")
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some((*d).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A TLS client trusting the test CA, with `provider` and `versions`, offering `alpn`;
/// `any_name` accepts a certificate for another name (see [`AnyName`]); `sni` false sends no
/// server name.
pub fn client_config(
    pki: &Pki,
    provider: CryptoProvider,
    versions: &[&'static SupportedProtocolVersion],
    alpn: &[&str],
    any_name: bool,
    sni: bool,
) -> Arc<ClientConfig> {
    let provider = Arc::new(provider);
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions)
        .expect("client protocol versions");
    let mut config = if any_name {
        let inner = WebPkiServerVerifier::builder_with_provider(pki.roots(), provider)
            .build()
            .expect("a verifier");
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyName(inner)))
            .with_no_client_auth()
    } else {
        builder
            .with_root_certificates(pki.roots())
            .with_no_client_auth()
    };
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    config.enable_sni = sni;
    Arc::new(config)
}

/// Accepts a certificate valid for another name than the one connected to (the chain is still
/// checked up to the test CA), so a default certificate can be inspected.
#[derive(Debug)]
pub struct AnyName(pub Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
