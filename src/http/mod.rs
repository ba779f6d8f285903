//! HTTP pieces shared by every listener: the body type, hop-by-hop and `Via` headers, and the
//! proxy's own responses (refusal, failure).

pub(crate) mod body;
pub(crate) mod headers;
pub(crate) mod response;
pub(crate) mod server;

pub use body::{BodyError, ProxyBody, RawBody, RawRest, from_hyper, never};
pub use response::{failure, listener_gone, refusal, text_response};
