//! Writing PROXY protocol headers: what a load balancer sends ahead of a relayed connection
//! (for tests, and for anything that relays connections to a listener that requires one).

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use super::{
    AF_INET, AF_INET6, CMD_PROXY, INET_BLOCK_LEN, INET6_BLOCK_LEN, TRANSPORT_STREAM, V2_FIXED_LEN,
    V2_SIGNATURE,
};

/// Encode a v1 line ("PROXY TCP4 ...\r\n") for a TCP source/destination pair. Mixed families
/// are sent as TCP6 with the IPv4 side IPv4-mapped.
pub fn encode_v1(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let (src_ip, dst_ip) = same_family(src.ip(), dst.ip());
    let protocol = if src_ip.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {protocol} {src_ip} {dst_ip} {} {}\r\n",
        src.port(),
        dst.port()
    )
    .into_bytes()
}

/// Encode a v2 binary header (command PROXY, TCP, no TLVs) for a TCP source/destination pair.
/// Mixed families are sent as AF_INET6 with the IPv4 side IPv4-mapped.
pub fn encode_v2(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let (src_ip, dst_ip) = same_family(src.ip(), dst.ip());
    let mut out = Vec::with_capacity(V2_FIXED_LEN + INET6_BLOCK_LEN);
    out.extend_from_slice(&V2_SIGNATURE);
    out.push(0x20 | CMD_PROXY);
    match (src_ip, dst_ip) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.push((AF_INET << 4) | TRANSPORT_STREAM);
            out.extend_from_slice(&(INET_BLOCK_LEN as u16).to_be_bytes());
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        (s, d) => {
            out.push((AF_INET6 << 4) | TRANSPORT_STREAM);
            out.extend_from_slice(&(INET6_BLOCK_LEN as u16).to_be_bytes());
            out.extend_from_slice(&as_v6(s).octets());
            out.extend_from_slice(&as_v6(d).octets());
        }
    }
    out.extend_from_slice(&src.port().to_be_bytes());
    out.extend_from_slice(&dst.port().to_be_bytes());
    out
}

fn as_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

fn same_family(src: IpAddr, dst: IpAddr) -> (IpAddr, IpAddr) {
    if src.is_ipv4() == dst.is_ipv4() {
        (src, dst)
    } else {
        (IpAddr::V6(as_v6(src)), IpAddr::V6(as_v6(dst)))
    }
}
