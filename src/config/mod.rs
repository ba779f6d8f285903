//! Stage 0: configuration. A raw [`file::FileConfig`] (serde, `deny_unknown_fields`) is compiled
//! into a checked [`Config`] before any port is bound. Errors name the file, line, key path and
//! bad value ([`ConfigError`]); the binary exits 64 on them.

pub mod error;
pub(crate) mod file;
pub mod reverse;
pub mod transparent;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

pub use error::ConfigError;
pub use transparent::TransparentListener;

use crate::evidence::SigningKey;
use crate::jurisdiction::load::TableSources;
use crate::policy::{Mode, Policy, Profile};

/// The example configuration, embedded: `residency-proxy run` with no arguments uses it.
pub const EXAMPLE: &str = include_str!("../../config/residency-proxy.toml");

/// Name used for the embedded example in messages.
pub const EXAMPLE_NAME: &str = "config/residency-proxy.toml";

/// What a listener does, with the settings only that kind has: a listener cannot be a
/// forward listener with reverse settings, or a reverse listener without them.
#[derive(Debug, Clone)]
pub enum ListenerKind {
    /// Forward proxy: absolute-form HTTP and CONNECT.
    Forward(ForwardListener),
    /// Reverse proxy: TLS termination (or plain HTTP), routes to upstream pools.
    Reverse(reverse::ReverseListener),
    /// Transparent (sidecar): connections redirected by iptables/nftables, decided on the
    /// original destination and the TLS SNI or HTTP Host, never terminated.
    Transparent(TransparentListener),
}

impl ListenerKind {
    /// Label for logs and the config (`kind = "..."`).
    pub fn as_str(&self) -> &'static str {
        match self {
            ListenerKind::Forward(_) => "forward",
            ListenerKind::Reverse(_) => "reverse",
            ListenerKind::Transparent(_) => "transparent",
        }
    }
}

/// Settings of a forward listener only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardListener {
    /// Destination ports clients may reach.
    pub allowed_ports: Vec<u16>,
}

/// One listener.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// Unique name, used in rules, audit records and metrics.
    pub name: String,
    /// Address to bind (port 0 picks a free port).
    pub bind: SocketAddr,
    /// Enforce or report.
    pub mode: Mode,
    /// Clients allowed to use the listener. Never empty: an open proxy is not configurable.
    pub allowed_clients: Vec<IpNet>,
    /// Maximum concurrent connections.
    pub max_connections: usize,
    /// The kind, with its own settings.
    pub kind: ListenerKind,
}

impl ListenerConfig {
    /// The forward settings, on a forward listener.
    pub fn forward(&self) -> Option<&ForwardListener> {
        match &self.kind {
            ListenerKind::Forward(f) => Some(f),
            ListenerKind::Reverse(_) | ListenerKind::Transparent(_) => None,
        }
    }

    /// The reverse settings, on a reverse listener.
    pub fn reverse(&self) -> Option<&reverse::ReverseListener> {
        match &self.kind {
            ListenerKind::Reverse(r) => Some(r),
            ListenerKind::Forward(_) | ListenerKind::Transparent(_) => None,
        }
    }

    /// The transparent settings, on a transparent listener.
    pub fn transparent(&self) -> Option<&TransparentListener> {
        match &self.kind {
            ListenerKind::Transparent(t) => Some(t),
            ListenerKind::Forward(_) | ListenerKind::Reverse(_) => None,
        }
    }

    /// The destination ports the listener lets clients reach: a forward or transparent
    /// listener's `allowed_ports`; `None` on a reverse listener (its destinations are its pool
    /// members, whose ports the configuration names).
    pub fn allowed_ports(&self) -> Option<&[u16]> {
        match &self.kind {
            ListenerKind::Forward(f) => Some(&f.allowed_ports),
            ListenerKind::Transparent(t) => Some(&t.allowed_ports),
            ListenerKind::Reverse(_) => None,
        }
    }
}

/// Timeouts and sizes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Time for a client to send a request's header section.
    pub header_read_timeout: Duration,
    /// How long an idle keep-alive client connection is kept.
    pub keepalive_idle_timeout: Duration,
    /// Time to establish a TCP connection to one upstream address.
    pub connect_timeout: Duration,
    /// A tunnel with no bytes either way for this long is closed.
    pub tunnel_idle_timeout: Duration,
    /// A tunnel open this long is closed, busy or not (`None`: no limit).
    pub max_tunnel_lifetime: Option<Duration>,
    /// A relayed request or response body with no byte for this long is cut.
    pub body_idle_timeout: Duration,
    /// Idle keep-alive upstream connections kept, in all (per idle set: the egress one and
    /// each reverse pool's).
    pub upstream_idle_max: usize,
    /// Upstream HTTP connections open at once (busy or idle) to one address, per idle set;
    /// a request past it waits (within `connect_timeout`) for one to free up. 0: no limit.
    pub upstream_max_connections: usize,
    /// An idle keep-alive upstream connection unused for this long is closed.
    pub upstream_idle_timeout: Duration,
    /// Time to wait for an upstream's response header section.
    pub upstream_response_timeout: Duration,
    /// Largest request header section accepted (bytes, at least 8192); larger gets 431.
    pub max_header_bytes: usize,
    /// On SIGTERM/SIGINT, how long open requests and tunnels may run before being cut.
    pub drain_timeout: Duration,
    /// HTTP/2: concurrent streams per client connection.
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2: largest header list accepted (bytes).
    pub h2_max_header_list_size: u32,
}

/// Where audit records go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditOutput {
    /// Standard output.
    Stdout,
    /// A file, appended to, reopened on SIGUSR1.
    File(PathBuf),
}

/// Audit writer settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    /// Destination.
    pub output: AuditOutput,
    /// Queue capacity (records).
    pub queue: usize,
    /// How long a request waits for queue space before the record goes to the overflow log.
    pub full_wait: Duration,
    /// The key that signs checkpoints (`audit.signing_key`), loaded and checked at compile
    /// time; `None`: the chain is unsigned. A reload does not change the running writer's key.
    pub signing_key: Option<Arc<SigningKey>>,
    /// A checkpoint every this many records (`audit.checkpoint_records`).
    pub checkpoint_records: u64,
    /// A checkpoint this long after the last one, if records were written since
    /// (`audit.checkpoint_interval`).
    pub checkpoint_interval: Duration,
}

/// The checked configuration.
/// The admin listener (`[admin]`): metrics, health, readiness, reload and explain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Whether `run` starts it (default true).
    pub enabled: bool,
    /// Where it listens (default `127.0.0.1:9090`: loopback unless configured otherwise).
    pub bind: SocketAddr,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from (or the embedded example's name).
    pub source: String,
    /// SHA-256 (hex) of the configuration text: the audit start line names it.
    pub digest: String,
    /// Listeners.
    pub listeners: Vec<ListenerConfig>,
    /// Jurisdiction data sources (the table is built from these at start).
    pub jurisdiction: TableSources,
    /// The adequacy profile.
    pub profile: Profile,
    /// Rules, attestations and defaults.
    pub policy: Policy,
    /// Per-lookup DNS timeout.
    pub resolver_timeout: Duration,
    /// Audit settings.
    pub audit: AuditConfig,
    /// Limits.
    pub limits: Limits,
    /// Reverse-proxy routes, in order (first match wins).
    pub routes: Vec<reverse::RouteConfig>,
    /// Upstream pools of reverse routes.
    pub pools: Vec<reverse::PoolConfig>,
    /// The admin listener.
    pub admin: AdminConfig,
    /// `policy.reevaluate_tunnels`: after a reload, re-decide every open tunnel on the address
    /// it dialled and close the ones the new policy denies (default true).
    pub reevaluate_tunnels: bool,
}

impl Config {
    /// Read and compile a configuration file. Relative paths inside it are taken relative to
    /// the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::read(path, &e))?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::parse(&text, &path.display().to_string(), &base)
    }

    /// The embedded example configuration.
    pub fn example() -> Result<Config, ConfigError> {
        Self::parse(EXAMPLE, EXAMPLE_NAME, Path::new("."))
    }

    /// Compile configuration text; `source` names it in errors, `base` resolves relative paths.
    pub fn parse(text: &str, source: &str, base: &Path) -> Result<Config, ConfigError> {
        let mut config = file::compile(text, source, base)?;
        config.digest = crate::evidence::chain::sha256_hex(text.as_bytes());
        Ok(config)
    }
}
