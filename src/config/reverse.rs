//! Reverse-proxy configuration: reverse listeners (certificates, PROXY protocol, trusted
//! proxies), `[[route]]` and `[[pool]]`. Certificates are loaded and checked here, at compile
//! time, so a bad certificate refuses to start with the file and the reason.

use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use super::ListenerConfig;
use crate::destination::Host;
use crate::policy::HostPattern;
use crate::wire::forwarded::ForwardedHeader;
use crate::wire::proxy_protocol::Accept;

/// A reverse listener's own settings.
#[derive(Debug, Clone)]
pub struct ReverseListener {
    /// TLS server configuration (certificates by SNI, ALPN); `None` for plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The earliest `notAfter` of the listener's certificates (`None` for plain HTTP).
    pub cert_expiry: Option<std::time::SystemTime>,
    /// Plain listeners: redirect every request to HTTPS on this port.
    pub redirect_https_port: Option<u16>,
    /// PROXY protocol versions accepted before anything else on a connection.
    pub proxy_protocol: Option<Accept>,
    /// Peers whose forwarding header is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// The one forwarding header believed from trusted proxies and written upstream; the
    /// other is removed.
    pub forwarded_header: ForwardedHeader,
    /// Pool for requests no route matches; `None` answers 404.
    pub default_pool: Option<String>,
    /// Offer HTTP/2 by ALPN.
    pub h2: bool,
}

/// One route: host and path prefix to a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    /// Listeners the route applies to (empty: every reverse listener).
    pub listeners: Vec<String>,
    /// Host pattern (exact or `*.suffix`).
    pub host: HostPattern,
    /// Path prefix (`/` matches everything).
    pub path_prefix: String,
    /// Pool name.
    pub pool: String,
}

/// The reverse listeners that can send requests to pool `pool`, in configuration order: those
/// whose `default_pool` it is, and those a route naming it applies to (a route without
/// `listeners` applies to every reverse listener).
pub fn pool_users<'a>(
    listeners: &'a [ListenerConfig],
    routes: &[RouteConfig],
    pool: &str,
) -> Vec<&'a ListenerConfig> {
    listeners
        .iter()
        .filter(|l| {
            let Some(rl) = l.reverse() else {
                return false;
            };
            rl.default_pool.as_deref() == Some(pool)
                || routes.iter().any(|r| {
                    r.pool == pool && (r.listeners.is_empty() || r.listeners.contains(&l.name))
                })
        })
        .collect()
}

/// How a pool picks a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// In turn.
    RoundRobin,
    /// The member with the fewest requests in flight.
    LeastConnections,
}

/// One pool member: a name or address, and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Host name (resolved and vetted per request) or address.
    pub host: Host,
    /// Port.
    pub port: u16,
}

/// Active health checking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// Path requested with GET; 2xx and 3xx are healthy.
    pub path: String,
    /// Time between checks.
    pub interval: Duration,
    /// Time one check may take.
    pub timeout: Duration,
}

/// TLS to the upstream.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    /// Client configuration (webpki roots or the configured CA).
    pub client: Arc<rustls::ClientConfig>,
    /// SNI and verified name; default: the member's host.
    pub server_name: Option<String>,
}

/// An upstream pool.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Unique name.
    pub name: String,
    /// Members.
    pub members: Vec<Member>,
    /// Balancing.
    pub balance: Balance,
    /// Consecutive failures that eject a member.
    pub eject_after: u32,
    /// How long an ejected member stays out.
    pub eject_for: Duration,
    /// TLS to the members.
    pub tls: Option<UpstreamTls>,
    /// Active health checks.
    pub health_check: Option<HealthCheck>,
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::pool_users;
    use crate::config::Config;

    #[test]
    fn pool_users_are_the_listeners_whose_routes_or_default_pool_reach_the_pool() {
        let text = r#"
[[listener]]
name = "egress"
bind = "127.0.0.1:0"

[[listener]]
name = "a"
kind = "reverse"
bind = "127.0.0.1:0"
default_pool = "p"

[[listener]]
name = "b"
kind = "reverse"
bind = "127.0.0.1:0"

[[listener]]
name = "c"
kind = "reverse"
bind = "127.0.0.1:0"

[[route]]
host = "q.test"
pool = "q"
listeners = ["b"]

[[route]]
host = "all.test"
pool = "r"

[[pool]]
name = "p"
members = ["uk.test:80"]

[[pool]]
name = "q"
members = ["uk.test:80"]

[[pool]]
name = "r"
members = ["uk.test:80"]

[[pool]]
name = "unused"
members = ["uk.test:80"]
"#;
        let c = Config::parse(text, "test.toml", Path::new(".")).unwrap_or_else(|e| panic!("{e}"));
        let users = |pool: &str| -> Vec<String> {
            pool_users(&c.listeners, &c.routes, pool)
                .iter()
                .map(|l| l.name.clone())
                .collect()
        };
        assert_eq!(users("p"), ["a"], "default_pool");
        assert_eq!(users("q"), ["b"], "a route scoped to one listener");
        assert_eq!(
            users("r"),
            ["a", "b", "c"],
            "a route for every reverse listener"
        );
        assert!(users("unused").is_empty());
    }
}
