//! residency-proxy: a data-residency enforcement proxy.
//!
//! Every destination is resolved, every address is mapped to a jurisdiction by a compiled
//! prefix table, and every flow to a jurisdiction outside the active adequacy profile is
//! blocked (or reported). See `ARCHITECTURE.md` for the life of a request.
//!
//! # Layout (pipeline order)
//! - [`jurisdiction`]: where is this address, legally? (pure, no I/O on the lookup path)
//! - [`policy`]: adequacy profiles and the decision (pure)

pub mod admin;
pub mod audit;
pub mod config;
mod conn;
pub mod destination;
pub mod error;
pub mod evidence;
mod http;
pub mod jurisdiction;
pub mod label;
mod listen;
pub mod metrics;
pub mod pipeline;
pub mod policy;
pub mod refresh;
pub mod reload;
pub mod report;
pub mod server;
mod state;
mod time;
pub mod tls;
pub mod upstream;
pub mod wire;
