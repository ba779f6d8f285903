//! What a transparent connection's first bytes say about where it is going, read from bytes
//! peeked off the socket (never consumed, never answered): the server name of a TLS
//! ClientHello (parsed by rustls's [`Acceptor`], which is dropped before any handshake
//! message is written, so TLS is never terminated), or the `Host` of an HTTP/1 request head
//! (parsed by `httparse`). Anything else is [`FirstBytes::Other`] and is decided by address.
//!
//! The name is a *claim*: whoever opened the connection wrote it. The pipeline believes it
//! only after checking that it resolves to the connection's original destination.

use rustls::server::Acceptor;

/// Headers an HTTP request head may carry for its `Host` to be found.
const MAX_HEADERS: usize = 128;

/// What the first bytes of a connection are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstBytes {
    /// A TLS ClientHello, with its `server_name` (SNI) if it has one. With Encrypted Client
    /// Hello this is the outer (public) name.
    Tls {
        /// The SNI host name, as sent.
        server_name: Option<String>,
    },
    /// An HTTP/1.x request head, with its one `Host` header (none if absent, repeated or not
    /// text). The value is as sent, port included.
    Http {
        /// The `Host` header value.
        host: Option<String>,
    },
    /// Neither (another protocol, or a malformed ClientHello or request head).
    Other,
}

impl FirstBytes {
    /// The name these bytes claim, if any.
    pub fn claimed_name(&self) -> Option<&str> {
        match self {
            FirstBytes::Tls { server_name } => server_name.as_deref(),
            FirstBytes::Http { host } => host.as_deref(),
            FirstBytes::Other => None,
        }
    }
}

/// The verdict on the bytes peeked so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sniff {
    /// Enough bytes to say.
    Known(FirstBytes),
    /// A prefix of a ClientHello or request head: more bytes would tell.
    Incomplete,
}

/// Classify the bytes a connection started with. `Incomplete` means they are the prefix of a
/// ClientHello or of an HTTP request head; the caller peeks again (within its bounds) or
/// decides by address.
pub fn sniff(buf: &[u8]) -> Sniff {
    match buf.first() {
        None => Sniff::Incomplete,
        // A TLS record of type handshake (22), versions 3.x.
        Some(0x16) => match buf.get(1) {
            None => Sniff::Incomplete,
            Some(0x03) => client_hello(buf),
            Some(_) => Sniff::Known(FirstBytes::Other),
        },
        Some(_) => request_head(buf),
    }
}

/// The server name of a ClientHello: rustls reads the records and the handshake message; the
/// acceptor is dropped before it writes anything.
fn client_hello(buf: &[u8]) -> Sniff {
    let mut acceptor = Acceptor::default();
    let mut rest = buf;
    while !rest.is_empty() {
        match acceptor.read_tls(&mut rest) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    match acceptor.accept() {
        Ok(Some(accepted)) => Sniff::Known(FirstBytes::Tls {
            server_name: accepted.client_hello().server_name().map(str::to_owned),
        }),
        Ok(None) => Sniff::Incomplete,
        Err(_) => Sniff::Known(FirstBytes::Other),
    }
}

/// The `Host` of an HTTP/1 request head.
fn request_head(buf: &[u8]) -> Sniff {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(_)) => {
            let mut hosts = req
                .headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case("host"));
            let host = match (hosts.next(), hosts.next()) {
                (Some(h), None) => std::str::from_utf8(h.value)
                    .ok()
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .map(str::to_owned),
                _ => None,
            };
            Sniff::Known(FirstBytes::Http { host })
        }
        Ok(httparse::Status::Partial) => Sniff::Incomplete,
        // A request head, but with more headers than are looked at: no Host is believed.
        Err(httparse::Error::TooManyHeaders) => Sniff::Known(FirstBytes::Http { host: None }),
        Err(_) => Sniff::Known(FirstBytes::Other),
    }
}

#[cfg(test)]
mod tests;
