//! Failures on the request path. A deny is a decision, not an error: see `policy::Decision`.

use hyper::StatusCode;

use crate::label::labels;

labels! {
    /// Which side of the proxy a failure is on: dashboards tell "their fault" from "ours".
    pub enum Side {
        /// The client sent something wrong.
        Downstream => "downstream",
        /// The destination (or its DNS) failed.
        Upstream => "upstream",
        /// The proxy itself failed.
        Internal => "internal",
    }
}

/// A side reads as its label, so an optional side reads as an optional label
/// (`rec.error_side.as_deref() == Some("upstream")`).
impl std::ops::Deref for Side {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

/// A request-path failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// Malformed or unsupported request.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The destination name does not resolve.
    #[error("cannot resolve {host}: {reason}")]
    Resolve {
        /// Host name.
        host: String,
        /// Resolver's reason.
        reason: String,
    },
    /// DNS timed out.
    #[error("DNS lookup for {0} timed out")]
    ResolveTimeout(String),
    /// No vetted address accepted a connection.
    #[error("cannot connect to {target}: {reason}")]
    Connect {
        /// What was dialled.
        target: String,
        /// Last error.
        reason: String,
    },
    /// Connecting timed out on every vetted address.
    #[error("connecting to {0} timed out")]
    ConnectTimeout(String),
    /// The upstream did not answer in time.
    #[error("upstream {0} did not respond in time")]
    UpstreamTimeout(String),
    /// The upstream broke the protocol or the connection.
    #[error("upstream {target} failed: {reason}")]
    Upstream {
        /// Destination.
        target: String,
        /// What went wrong.
        reason: String,
    },
}

impl ProxyError {
    /// Status sent to the client.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::Resolve { .. } | ProxyError::Connect { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::ResolveTimeout(_)
            | ProxyError::ConnectTimeout(_)
            | ProxyError::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// Whose fault.
    pub fn side(&self) -> Side {
        match self {
            ProxyError::BadRequest(_) => Side::Downstream,
            _ => Side::Upstream,
        }
    }

    /// Closed label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            ProxyError::BadRequest(_) => "bad-request",
            ProxyError::Resolve { .. } => "resolve-failed",
            ProxyError::ResolveTimeout(_) => "resolve-timeout",
            ProxyError::Connect { .. } => "connect-failed",
            ProxyError::ConnectTimeout(_) => "connect-timeout",
            ProxyError::UpstreamTimeout(_) => "upstream-timeout",
            ProxyError::Upstream { .. } => "upstream-failed",
        }
    }
}
