//! Placeholder until the forwarding-headers module lands.
/// Placeholder.
pub fn client_addr(
    peer: std::net::IpAddr,
    _h: &hyper::HeaderMap,
    _t: &[ipnet::IpNet],
) -> std::net::IpAddr {
    peer
}
/// Placeholder.
pub fn apply(
    _h: &mut hyper::HeaderMap,
    _p: std::net::IpAddr,
    _proto: &str,
    _host: Option<&str>,
    _t: &[ipnet::IpNet],
) {
}
