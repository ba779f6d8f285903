//! Stage 3 of the pipeline: where is that, as addresses?
//!
//! A request names its destination as a URL authority or a `CONNECT` target. This module
//! turns that text into a canonical [`Destination`] (one spelling per host, so a deny list
//! cannot be bypassed by writing the same host differently) and then resolves it to the
//! IP addresses the proxy may dial, through the [`Resolver`] trait.
//!
//! # Normalisation rules
//! - IPv4 literals are accepted only as a strict dotted quad (`127.0.0.1`). Anything that
//!   *ends in a number* (decimal, or `0x…` hex) but is not a strict dotted quad — `2130706433`,
//!   `0177.0.0.1`, `0x7f.1`, `127.1`, `1.2.3.04` — is rejected with
//!   [`DestinationError::LegacyIpLiteral`], because `getaddrinfo`/`inet_aton` would read it as an
//!   address the policy never saw (see stripe/smokescreen PR #285; the test is the WHATWG URL
//!   host parser's "ends in a number" rule).
//! - IPv6 literals are bracketed in authorities (`[::1]:443`); zone ids are rejected.
//! - Names are mapped through IDNA (UTS 46) to lower-case ASCII (punycode), one trailing dot is
//!   removed, and the result must be a plain DNS name (labels of `[a-z0-9_-]`, 1–63 chars,
//!   total ≤ 253). IDNA runs *before* the numeric check, so full-width digits such as
//!   `１２７.０.０.１` become the IPv4 address they spell rather than a "name".

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::pin::Pin;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::LookupIpStrategy;
use hickory_resolver::net::NetError;

/// Longest raw host or authority text we will even look at, in bytes. A valid name is at
/// most 253 ASCII bytes, but its Unicode spelling can be several times longer.
const MAX_INPUT_LEN: usize = 2048;
/// Longest normalised DNS name (without the trailing dot), per RFC 1035.
const MAX_NAME_LEN: usize = 253;
/// Longest DNS label, per RFC 1035.
const MAX_LABEL_LEN: usize = 63;

/// A destination host, normalised.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A DNS name: lower-case ASCII (IDNA → punycode), no trailing dot.
    Name(String),
    /// An IP literal (IPv4 strict dotted quad, or IPv6 without zone id).
    Ip(IpAddr),
}

impl fmt::Display for Host {
    /// Names as-is; IP literals in their canonical form (IPv6 without brackets).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(name) => f.write_str(name),
            Host::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// A normalised host and port: the thing the proxy will connect to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Destination {
    /// The normalised host.
    pub host: Host,
    /// The TCP port, 1–65535.
    pub port: u16,
}

impl Destination {
    /// The destination as `host:port`, with an IPv6 host in brackets (`[::1]:443`).
    pub fn authority(&self) -> String {
        match self.host {
            Host::Ip(IpAddr::V6(ip)) => format!("[{ip}]:{}", self.port),
            _ => format!("{}:{}", self.host, self.port),
        }
    }
}

impl fmt::Display for Destination {
    /// Same as [`Destination::authority`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.authority())
    }
}

/// Why a destination could not be parsed. Every message is fit for a 400 response body;
/// echoed input is shown with Rust string escaping, so control characters are not reflected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DestinationError {
    /// No host at all.
    #[error("destination host is empty")]
    Empty,
    /// No port in the authority and no default for the scheme.
    #[error("destination port is missing")]
    MissingPort,
    /// The port is not a decimal number in 1–65535.
    #[error("invalid destination port {0:?}: expected a decimal number from 1 to 65535")]
    BadPort(String),
    /// Looks like a numeric IPv4 address but is not a strict dotted quad.
    #[error(
        "host {0:?} looks like a numeric IPv4 address but is not a plain dotted quad \
         (four decimal parts 0-255, no leading zeros)"
    )]
    LegacyIpLiteral(String),
    /// An IPv6 literal carrying a zone id (`%eth0`).
    #[error("IPv6 zone identifiers are not allowed: {0:?}")]
    ZoneId(String),
    /// A malformed IPv6 literal, or an unbracketed one in an authority.
    #[error("invalid IPv6 address {0:?} (IPv6 hosts must be written in brackets, e.g. [::1]:443)")]
    BadIpv6(String),
    /// Not a valid DNS host name.
    #[error("invalid host name {0:?}")]
    BadHostname(String),
    /// The host (or the whole authority) exceeds the DNS length limits.
    #[error("destination host is too long")]
    TooLong,
}

/// Parse `"host:port"`, `"[v6]:port"`, or `"host"` (then `default_port` is used; `None` →
/// [`DestinationError::MissingPort`]).
pub fn parse_authority(
    authority: &str,
    default_port: Option<u16>,
) -> Result<Destination, DestinationError> {
    if authority.is_empty() {
        return Err(DestinationError::Empty);
    }
    if authority.len() > MAX_INPUT_LEN {
        return Err(DestinationError::TooLong);
    }

    let (host_text, port_text) = if authority.starts_with('[') {
        // Bracketed IPv6: "[v6]" or "[v6]:port"; nothing else may follow the bracket.
        let Some(close) = authority.find(']') else {
            return Err(DestinationError::BadIpv6(authority.to_owned()));
        };
        let (host, rest) = authority.split_at(close + 1);
        match rest.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if rest.is_empty() => (host, None),
            None => return Err(DestinationError::BadIpv6(authority.to_owned())),
        }
    } else {
        match authority.split_once(':') {
            None => (authority, None),
            // A second colon means an unbracketed IPv6 literal (or garbage): refuse rather
            // than guess where the port starts.
            Some((_, rest)) if rest.contains(':') => {
                return Err(DestinationError::BadIpv6(authority.to_owned()));
            }
            Some((host, port)) => (host, Some(port)),
        }
    };

    if host_text.is_empty() {
        return Err(DestinationError::Empty);
    }
    let host = normalize_host(host_text)?;
    let port = match port_text {
        Some(text) => parse_port(text)?,
        None => default_port.ok_or(DestinationError::MissingPort)?,
    };
    if port == 0 {
        return Err(DestinationError::BadPort("0".to_owned()));
    }
    Ok(Destination { host, port })
}

/// Parse a port: ASCII decimal digits only (no sign, no whitespace), value 1–65535.
fn parse_port(text: &str) -> Result<u16, DestinationError> {
    let bad = || DestinationError::BadPort(text.to_owned());
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    // Digits only, so the only possible parse failure is overflow.
    match text.parse::<u16>() {
        Ok(0) | Err(_) => Err(bad()),
        Ok(port) => Ok(port),
    }
}

/// Normalise a host as it appears in a URL authority or CONNECT target (brackets allowed for
/// IPv6; a bare IPv6 literal is also accepted for callers that already split off the port).
pub fn normalize_host(raw: &str) -> Result<Host, DestinationError> {
    if raw.is_empty() {
        return Err(DestinationError::Empty);
    }
    if raw.len() > MAX_INPUT_LEN {
        return Err(DestinationError::TooLong);
    }

    if let Some(inner) = raw.strip_prefix('[') {
        let Some(inner) = inner.strip_suffix(']') else {
            return Err(DestinationError::BadIpv6(raw.to_owned()));
        };
        return parse_ipv6(inner, raw);
    }
    if raw.contains(':') {
        return parse_ipv6(raw, raw);
    }
    normalize_name_or_ipv4(raw)
}

/// Parse the text of an IPv6 literal (without brackets). `raw` is what we echo in errors.
fn parse_ipv6(text: &str, raw: &str) -> Result<Host, DestinationError> {
    if text.contains('%') {
        return Err(DestinationError::ZoneId(raw.to_owned()));
    }
    text.parse::<Ipv6Addr>()
        .map(|ip| Host::Ip(IpAddr::V6(ip)))
        .map_err(|_| DestinationError::BadIpv6(raw.to_owned()))
}

/// IDNA-map a name, then decide whether it is a strict IPv4 literal, a legacy numeric
/// spelling (rejected), or a DNS name (validated).
fn normalize_name_or_ipv4(raw: &str) -> Result<Host, DestinationError> {
    let bad_name = || DestinationError::BadHostname(raw.to_owned());

    // UTS 46 first (lower-cases, maps full-width digits and dots, punycodes), as the WHATWG
    // host parser does; the numeric check must see the mapped form.
    let ascii = idna::uts46::Uts46::new()
        .to_ascii(
            raw.as_bytes(),
            idna::uts46::AsciiDenyList::URL,
            idna::uts46::Hyphens::Allow,
            idna::uts46::DnsLength::Ignore,
        )
        .map_err(|_| bad_name())?
        .to_ascii_lowercase();

    // One trailing dot (the DNS root) is dropped; "a.." still fails below (empty label).
    let name = ascii.strip_suffix('.').unwrap_or(&ascii);
    if name.is_empty() {
        return Err(bad_name());
    }

    let last_label = name.rsplit('.').next().unwrap_or(name);
    if ends_in_number(last_label) {
        return strict_dotted_quad(name)
            .map(|ip| Host::Ip(IpAddr::V4(ip)))
            .ok_or_else(|| DestinationError::LegacyIpLiteral(raw.to_owned()));
    }

    if name.len() > MAX_NAME_LEN {
        return Err(DestinationError::TooLong);
    }
    if !name.split('.').all(valid_label) {
        return Err(bad_name());
    }
    Ok(Host::Name(name.to_owned()))
}

/// WHATWG "ends in a number": the last label is all decimal digits, or `0x`/`0X` followed
/// by (possibly zero) hex digits. Such a host can only be an IPv4 address.
fn ends_in_number(label: &str) -> bool {
    if !label.is_empty() && label.bytes().all(|b| b.is_ascii_digit()) {
        return true;
    }
    match label.get(..2) {
        Some("0x" | "0X") => label[2..].bytes().all(|b| b.is_ascii_hexdigit()),
        _ => false,
    }
}

/// Exactly four decimal parts, each 0–255, 1–3 digits, no leading zeros.
fn strict_dotted_quad(text: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = text.split('.');
    for octet in &mut octets {
        let part = parts.next()?;
        let canonical = !part.is_empty()
            && part.len() <= 3
            && part.bytes().all(|b| b.is_ascii_digit())
            && !(part.len() > 1 && part.starts_with('0'));
        if !canonical {
            return None;
        }
        *octet = part.parse().ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(Ipv4Addr::from(octets))
}

/// A DNS label after IDNA: 1–63 of `[a-z0-9_-]`, not starting or ending with `-`.
fn valid_label(label: &str) -> bool {
    (1..=MAX_LABEL_LEN).contains(&label.len())
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

/// A boxed, `Send` future, as returned by [`Resolver::resolve`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a host name could not be resolved.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ResolveError {
    /// NXDOMAIN, or the name exists but has no A/AAAA records.
    #[error("no such host: {0}")]
    NotFound(String),
    /// The lookup did not finish within the configured timeout.
    #[error("DNS lookup for {0} timed out")]
    Timeout(String),
    /// Any other failure (resolver misconfigured, servers unreachable, SERVFAIL, ...).
    #[error("DNS lookup for {host} failed: {reason}")]
    Failed {
        /// The name being looked up.
        host: String,
        /// What went wrong.
        reason: String,
    },
}

/// Turns a host name into addresses. The proxy dials only addresses that passed policy, so a
/// resolver just returns addresses and never connects anywhere itself.
pub trait Resolver: Send + Sync + 'static {
    /// Resolve a normalised host name (never an IP literal) to all its A and AAAA addresses, in answer order.
    fn resolve<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, ResolveError>>;
}

/// Tests and `explain`: a fixed map name → addresses. Unknown names → NotFound.
#[derive(Debug, Clone, Default)]
pub struct StaticResolver {
    entries: HashMap<String, Vec<IpAddr>>,
}

impl StaticResolver {
    /// An empty resolver: every name is [`ResolveError::NotFound`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Map `name` to `addrs` (replacing any earlier entry). The name is matched
    /// case-insensitively and with one trailing dot ignored.
    pub fn insert(&mut self, name: &str, addrs: Vec<IpAddr>) -> &mut Self {
        self.entries.insert(static_key(name), addrs);
        self
    }
}

/// The lookup key for [`StaticResolver`]: lower-case, one trailing dot removed.
fn static_key(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

impl Resolver for StaticResolver {
    fn resolve<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, ResolveError>> {
        let result = match self.entries.get(&static_key(name)) {
            Some(addrs) if !addrs.is_empty() => Ok(addrs.clone()),
            _ => Err(ResolveError::NotFound(name.to_owned())),
        };
        Box::pin(std::future::ready(result))
    }
}

/// The real one: hickory-resolver, reading /etc/resolv.conf (falls back to hickory's default config with a tracing warning if that fails), caching by TTL (hickory's cache), a configurable per-lookup timeout, A and AAAA (dual stack, IPv4 first then IPv6).
///
/// Names are queried as fully-qualified (a trailing dot is added), so the proxy host's
/// `search` domains never rewrite a client's destination.
pub struct SystemResolver {
    inner: TokioResolver,
    timeout: Duration,
}

impl fmt::Debug for SystemResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SystemResolver")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl SystemResolver {
    /// Build a resolver from the system configuration with `timeout` per lookup (applied to
    /// each DNS request and, as a hard cap, to the whole lookup including retries).
    pub fn new(timeout: Duration) -> Result<Self, ResolveError> {
        // Fail closed: a gateway that silently switched to a public resolver would send every
        // destination name to a third party and answer from outside the operator's DNS view.
        let mut builder = TokioResolver::builder_tokio().map_err(|error| ResolveError::Failed {
            host: "(resolver setup)".to_owned(),
            reason: format!("cannot read the system DNS configuration (/etc/resolv.conf): {error}"),
        })?;
        let options = builder.options_mut();
        options.timeout = timeout;
        options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        let inner = builder.build().map_err(|error| ResolveError::Failed {
            host: "(resolver setup)".to_owned(),
            reason: error.to_string(),
        })?;
        Ok(Self { inner, timeout })
    }

    async fn lookup(&self, name: &str) -> Result<Vec<IpAddr>, ResolveError> {
        let fqdn = format!("{name}.");
        let answer = tokio::time::timeout(self.timeout, self.inner.lookup_ip(fqdn.as_str()))
            .await
            .map_err(|_| ResolveError::Timeout(name.to_owned()))?;
        match answer {
            Ok(lookup) => {
                let addrs: Vec<IpAddr> = lookup.iter().collect();
                if addrs.is_empty() {
                    Err(ResolveError::NotFound(name.to_owned()))
                } else {
                    Ok(addrs)
                }
            }
            Err(error) => Err(map_net_error(name, &error)),
        }
    }
}

/// Map a hickory error to ours: NXDOMAIN / no records → NotFound, timeouts → Timeout.
fn map_net_error(name: &str, error: &NetError) -> ResolveError {
    if error.is_nx_domain() || error.is_no_records_found() {
        ResolveError::NotFound(name.to_owned())
    } else if matches!(error, NetError::Timeout) {
        ResolveError::Timeout(name.to_owned())
    } else {
        ResolveError::Failed {
            host: name.to_owned(),
            reason: error.to_string(),
        }
    }
}

impl Resolver for SystemResolver {
    fn resolve<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, ResolveError>> {
        Box::pin(self.lookup(name))
    }
}

/// Resolve a Destination: Host::Ip → vec![ip] without any DNS; Host::Name → resolver.
pub async fn resolve(resolver: &dyn Resolver, host: &Host) -> Result<Vec<IpAddr>, ResolveError> {
    match host {
        Host::Ip(ip) => Ok(vec![*ip]),
        Host::Name(name) => {
            let addrs = resolver.resolve(name).await?;
            if addrs.is_empty() {
                Err(ResolveError::NotFound(name.clone()))
            } else {
                Ok(addrs)
            }
        }
    }
}

#[cfg(test)]
mod tests;
