//! Stage 7 of the pipeline: talk to the destination we vetted. Nothing here takes a host name.

pub mod connect;
mod idle;
pub mod pool;
pub mod tunnel;
pub mod watch;

pub use connect::{Connector, TcpConnector, connect_first};
