//! The life of a request, after accept: classify → vet (resolve → lookup → decide) → record →
//! connect → relay or tunnel. One file per stage or per door:
//!
//! - [`classify`]: what a forward-listener request asks for (`Intent`).
//! - [`vet`]: the one decision every door uses, `explain` included.
//! - [`forward`]: a forward listener's request, start to end.
//! - [`relay`]: absolute-form relay over a vetted upstream connection.
//! - [`connect`]: a CONNECT tunnel.
//! - [`reverse`]: a reverse listener's request: route, pool member, vet, relay.
//! - [`health`]: reverse pools' active health checks, vetted as live requests are.
//! - [`transparent`]: a redirected connection: original destination, SNI or Host, vet, tunnel.

pub(crate) mod classify;
pub(crate) mod connect;
pub(crate) mod forward;
pub(crate) mod health;
pub(crate) mod relay;
pub(crate) mod reverse;
pub mod transparent;
pub mod vet;
