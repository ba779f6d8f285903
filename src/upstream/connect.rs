//! Dial a [`VettedAddr`]: the only kind of address the proxy connects to.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::destination::BoxFuture;
use crate::error::ProxyError;
use crate::policy::VettedAddr;

/// Opens TCP connections to vetted addresses. Tests substitute one that fails loudly when an
/// address they did not expect is dialled.
pub trait Connector: Send + Sync + 'static {
    /// Connect to `addr`.
    fn connect(&self, addr: VettedAddr) -> BoxFuture<'_, io::Result<TcpStream>>;
}

/// The real connector.
#[derive(Debug, Default, Clone, Copy)]
pub struct TcpConnector;

impl Connector for TcpConnector {
    fn connect(&self, addr: VettedAddr) -> BoxFuture<'_, io::Result<TcpStream>> {
        Box::pin(async move {
            let s = TcpStream::connect(addr.addr()).await?;
            s.set_nodelay(true)?;
            Ok(s)
        })
    }
}

/// Try the vetted addresses in order, each with `timeout`; the first that connects wins.
pub async fn connect_first(
    connector: &Arc<dyn Connector>,
    vetted: &[VettedAddr],
    timeout: Duration,
    target: &str,
) -> Result<(TcpStream, VettedAddr), ProxyError> {
    let mut last = None;
    let mut all_timed_out = true;
    for &addr in vetted {
        match tokio::time::timeout(timeout, connector.connect(addr)).await {
            Ok(Ok(stream)) => return Ok((stream, addr)),
            Ok(Err(e)) => {
                all_timed_out = false;
                last = Some(format!("{}: {e}", addr.addr()));
            }
            Err(_) => last = Some(format!("{}: timed out", addr.addr())),
        }
    }
    if all_timed_out && !vetted.is_empty() {
        return Err(ProxyError::ConnectTimeout(target.to_string()));
    }
    Err(ProxyError::Connect {
        target: target.to_string(),
        reason: last.unwrap_or_else(|| "no address to dial".into()),
    })
}
