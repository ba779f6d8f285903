//! HTTP pieces shared by every listener: the body type, hop-by-hop and `Via` headers, and the
//! proxy's own responses (refusal, failure).

pub mod body;
pub mod headers;
pub mod response;

pub use body::{ProxyBody, never};
pub use response::{DECISION_HEADER, failure, listener_gone, refusal, text_response};
