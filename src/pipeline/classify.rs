//! Stage 2 of the pipeline: what does the client want?

use hyper::{Method, Request};

use crate::audit;
use crate::destination::{Destination, DestinationError, parse_authority};
use crate::error::ProxyError;

/// What a request asks the proxy to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intent {
    /// An absolute-form HTTP request to relay.
    Forward(Destination),
    /// A CONNECT tunnel.
    Connect(Destination),
}

impl Intent {
    /// Label for audit records and metrics.
    pub fn label(&self) -> audit::Intent {
        match self {
            Intent::Forward(_) => audit::Intent::Forward,
            Intent::Connect(_) => audit::Intent::Connect,
        }
    }

    /// The destination.
    pub fn destination(&self) -> &Destination {
        match self {
            Intent::Forward(d) | Intent::Connect(d) => d,
        }
    }
}

fn bad(e: DestinationError) -> ProxyError {
    ProxyError::BadRequest(e.to_string())
}

/// Classify a request received on a forward listener.
pub fn classify<B>(req: &Request<B>) -> Result<Intent, ProxyError> {
    let uri = req.uri();
    if req.method() == Method::CONNECT {
        // RFC 9110 §9.3.6: the target is authority-form, host and port, nothing else.
        let authority = uri.authority().ok_or_else(|| {
            ProxyError::BadRequest("CONNECT needs an authority-form target (host:port)".into())
        })?;
        if uri.scheme().is_some() || uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
            return Err(ProxyError::BadRequest(
                "CONNECT needs an authority-form target (host:port)".into(),
            ));
        }
        let dest = parse_authority(authority.as_str(), None).map_err(bad)?;
        return Ok(Intent::Connect(dest));
    }
    let Some(authority) = uri.authority() else {
        return Err(ProxyError::BadRequest(
            "this is a forward proxy: send absolute-form requests (GET http://host/path) or CONNECT host:port".into(),
        ));
    };
    match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("http") => {}
        Some(s) if s.eq_ignore_ascii_case("https") => {
            return Err(ProxyError::BadRequest(
                "https URLs go through a CONNECT tunnel (use https_proxy)".into(),
            ));
        }
        _ => {
            return Err(ProxyError::BadRequest(
                "only http:// absolute-form URLs can be forwarded".into(),
            ));
        }
    }
    if authority.as_str().contains('@') {
        return Err(ProxyError::BadRequest(
            "credentials in the URL authority are not forwarded".into(),
        ));
    }
    let dest = parse_authority(authority.as_str(), Some(80)).map_err(bad)?;
    Ok(Intent::Forward(dest))
}
