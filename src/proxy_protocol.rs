//! Placeholder until the PROXY protocol module lands.
/// Accepted versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// v1.
    V1,
    /// v2.
    V2,
    /// Either.
    Any,
}
/// Placeholder.
#[derive(Debug)]
pub struct Header {
    /// Source.
    pub source: Option<std::net::SocketAddr>,
}
/// Placeholder.
pub async fn read_header<S: tokio::io::AsyncRead + Unpin>(
    _s: &mut S,
    _a: Accept,
    _t: std::time::Duration,
) -> Result<Header, std::io::Error> {
    Err(std::io::Error::other("PROXY protocol not built yet"))
}
