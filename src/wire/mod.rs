//! Pure parsers of what arrives on the wire before a request is decided: bytes in, values out,
//! no I/O. The listener and pipeline layers call them.
//!
//! - [`proxy_protocol`]: the PROXY protocol v1/v2 header of a load balancer (AWS NLB).
//! - [`forwarded`]: `Forwarded` / `X-Forwarded-For` from trusted proxies.
//! - [`sniff`]: the TLS SNI or HTTP `Host` a transparent connection's first bytes claim.

pub(crate) mod forwarded;
pub mod proxy_protocol;
pub mod sniff;
