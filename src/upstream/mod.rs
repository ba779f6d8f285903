//! Stage 7 of the pipeline: talk to the destination we vetted. Nothing here takes a host name.

pub(crate) mod connect;
pub(crate) mod h1;
mod idle;
pub(crate) mod pool;
mod splice;
pub(crate) mod tunnel;
pub(crate) mod watch;

pub use connect::{Connector, TcpConnector, connect_first};
