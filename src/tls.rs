//! Placeholder until the TLS module lands.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;
/// Cert spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSpec {
    /// Chain.
    pub chain: PathBuf,
    /// Key.
    pub key: PathBuf,
    /// Names.
    pub names: Vec<String>,
}
/// Loaded.
pub struct LoadedCert {
    /// Names.
    pub names: Vec<String>,
}
/// Error.
#[derive(Debug, thiserror::Error)]
#[error("TLS support is not built yet")]
pub struct TlsError;
/// Load.
pub fn load_cert(_spec: &CertSpec, _now: SystemTime) -> Result<LoadedCert, TlsError> {
    Err(TlsError)
}
/// Server config.
pub fn server_config(
    _c: Vec<LoadedCert>,
    _d: usize,
    _h2: bool,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    Err(TlsError)
}
/// Client config.
pub fn client_config(_ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    Err(TlsError)
}
