//! Transparent listeners: accept connections an iptables/nftables `REDIRECT` rule sent here,
//! read each one's original destination from the kernel's connection tracking
//! (`SO_ORIGINAL_DST` for IPv4, `IP6T_SO_ORIGINAL_DST` for IPv6, through `nix`), and hand it to
//! [`pipeline::transparent`](crate::pipeline::transparent). Connections over
//! `max_connections` wait to be accepted.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::Arc;

use nix::sys::socket::getsockopt;
use nix::sys::socket::sockopt::{Ip6tOriginalDst, OriginalDst};
use tokio::net::{TcpListener, TcpStream};

use crate::config::ListenerConfig;
use crate::pipeline::transparent::{self, OwnConnections, Redirected};
use crate::state::Shared;

/// Accept loop of a transparent listener.
pub async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    cfg: Arc<ListenerConfig>,
    stop: tokio_util::sync::CancellationToken,
) {
    // The upstream connections this listener's flows have open: a connection from one of them
    // is the proxy's own dial redirected back (see `OwnConnections`).
    let own = Arc::new(OwnConnections::default());
    super::accept_with(
        shared,
        listener,
        cfg,
        stop,
        move |shared, cfg, stream, peer, slot| serve(shared, cfg, stream, peer, own.clone(), slot),
    )
    .await;
}

async fn serve(
    shared: Arc<Shared>,
    cfg: Arc<ListenerConfig>,
    stream: TcpStream,
    peer: SocketAddr,
    own: Arc<OwnConnections>,
    _slot: super::ConnSlot,
) {
    let local = match stream.local_addr() {
        Ok(a) => a,
        Err(e) => {
            tracing::debug!(error = %e, client.addr = %peer, "Connection ended before it was read");
            return;
        }
    };
    let conn = Redirected {
        client: SocketAddr::new(peer.ip().to_canonical(), peer.port()),
        local,
        original: original_dst(&stream, local).map_err(|e| e.to_string()),
    };
    transparent::handle(shared, cfg, stream, conn, own).await;
}

/// The destination the client connected to before a `REDIRECT` (or DNAT) rule changed it, from
/// the connection's conntrack entry: `SO_ORIGINAL_DST` on an IPv4 connection (an IPv4 client
/// on a dual-stack socket included), `IP6T_SO_ORIGINAL_DST` on an IPv6 one. Fails when the
/// kernel has no NAT entry for the connection (it was not redirected).
pub fn original_dst(stream: &TcpStream, local: SocketAddr) -> io::Result<SocketAddr> {
    if local.ip().to_canonical().is_ipv4() {
        let sa = getsockopt(stream, OriginalDst).map_err(io::Error::from)?;
        let ip = Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr));
        Ok(SocketAddr::V4(SocketAddrV4::new(
            ip,
            u16::from_be(sa.sin_port),
        )))
    } else {
        let sa = getsockopt(stream, Ip6tOriginalDst).map_err(io::Error::from)?;
        let ip = Ipv6Addr::from(sa.sin6_addr.s6_addr);
        Ok(SocketAddr::V6(SocketAddrV6::new(
            ip,
            u16::from_be(sa.sin6_port),
            0,
            0,
        )))
    }
}
