//! The file as written: the serde tables, each refusing unknown keys. Values that need
//! checking are [`Spanned`], so a refusal can name their line.

use serde::Deserialize;
use toml::Spanned;

/// A listener's kind as written, before its settings are compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Forward,
    Reverse,
    Transparent,
}

/// The whole file, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `[jurisdiction]`: data sources and the adequacy profile.
    pub jurisdiction: Option<FileJurisdiction>,
    /// `[resolver]`: DNS settings.
    pub resolver: Option<FileResolver>,
    /// `[audit]`: the audit writer.
    pub audit: Option<FileAudit>,
    /// `[limits]`: timeouts and sizes.
    pub limits: Option<FileLimits>,
    /// `[[listener]]`: at least one is required.
    pub listener: Option<Spanned<Vec<FileListener>>>,
    /// `[policy]`: defaults, rules and attestations.
    pub policy: Option<FilePolicy>,
    /// `[[route]]`: reverse-proxy routes, in order.
    pub route: Option<Vec<FileRoute>>,
    /// `[[pool]]`: upstream pools of reverse routes.
    pub pool: Option<Vec<FilePool>>,
    /// `[admin]`: the admin listener (metrics, health, reload, explain).
    pub admin: Option<FileAdmin>,
}

/// `[admin]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAdmin {
    /// `IP:port` of the admin listener.
    pub bind: Option<Spanned<String>>,
    /// Whether the admin listener runs at all.
    pub enabled: Option<bool>,
}

/// `[jurisdiction]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileJurisdiction {
    /// Built-in profile name or a profile `.toml` path.
    pub profile: Option<Spanned<String>>,
    /// MaxMind DB path; absent uses the embedded DB-IP database.
    pub geoip: Option<Spanned<String>>,
    /// Override files (`.csv` or `.toml`).
    pub overrides: Option<Vec<Spanned<String>>>,
    /// AWS `ip-ranges.json` files.
    pub aws_ranges: Option<Vec<Spanned<String>>>,
    /// Use the embedded cloud-provider ranges (default true).
    pub cloud_ranges: Option<bool>,
    /// Directory of provider feeds written by `update-ranges`.
    pub cloud_dir: Option<Spanned<String>>,
    /// How often the running proxy refreshes `cloud_dir` from the feeds (duration or `"off"`).
    pub cloud_refresh: Option<Spanned<String>>,
}

/// `[resolver]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileResolver {
    /// Per-lookup timeout (duration string).
    pub timeout: Option<Spanned<String>>,
}

/// `[audit]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAudit {
    /// `stdout` or a file path.
    pub output: Option<Spanned<String>>,
    /// Queue capacity in records.
    pub queue: Option<Spanned<i64>>,
    /// How long a request waits for queue space (duration string).
    pub full_wait: Option<Spanned<String>>,
    /// Ed25519 PKCS#8 PEM private key that signs checkpoints.
    pub signing_key: Option<Spanned<String>>,
    /// A checkpoint every this many records.
    pub checkpoint_records: Option<Spanned<i64>>,
    /// A checkpoint this long after the last one, if records were written since.
    pub checkpoint_interval: Option<Spanned<String>>,
}

/// `[limits]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLimits {
    /// Time to read a request's header section.
    pub header_read_timeout: Option<Spanned<String>>,
    /// Idle keep-alive timeout.
    pub keepalive_idle_timeout: Option<Spanned<String>>,
    /// Upstream TCP connect timeout.
    pub connect_timeout: Option<Spanned<String>>,
    /// Idle tunnel timeout.
    pub tunnel_idle_timeout: Option<Spanned<String>>,
    /// Longest a tunnel may stay open (duration or `"off"`).
    pub max_tunnel_lifetime: Option<Spanned<String>>,
    /// Idle timeout of relayed request and response bodies.
    pub body_idle_timeout: Option<Spanned<String>>,
    /// Idle upstream connections kept, in all.
    pub upstream_idle_max: Option<Spanned<i64>>,
    /// Upstream connections open at once per address.
    pub upstream_max_connections: Option<Spanned<i64>>,
    /// Idle upstream connection expiry.
    pub upstream_idle_timeout: Option<Spanned<String>>,
    /// Upstream response header timeout.
    pub upstream_response_timeout: Option<Spanned<String>>,
    /// Largest request header section in bytes.
    pub max_header_bytes: Option<Spanned<i64>>,
    /// Shutdown drain timeout.
    pub drain_timeout: Option<Spanned<String>>,
    /// HTTP/2 concurrent streams per connection.
    pub h2_max_concurrent_streams: Option<Spanned<i64>>,
    /// HTTP/2 header list size.
    pub h2_max_header_list_size: Option<Spanned<i64>>,
}

/// One `[[listener]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileListener {
    /// Unique name, `[a-z0-9_-]+` (required).
    pub name: Spanned<String>,
    /// `forward`, `reverse` or `transparent`.
    pub kind: Option<Spanned<String>>,
    /// Socket address to bind (required).
    pub bind: Spanned<String>,
    /// `enforce` or `report`.
    pub mode: Option<Spanned<String>>,
    /// Client CIDRs allowed to use the listener.
    pub allowed_clients: Option<Spanned<Vec<Spanned<String>>>>,
    /// Destination ports allowed.
    pub allowed_ports: Option<Spanned<Vec<Spanned<i64>>>>,
    /// Concurrent connection limit.
    pub max_connections: Option<Spanned<i64>>,
    /// Reverse listeners: `[[listener.cert]]` certificates (TLS when present).
    pub cert: Option<Vec<FileCert>>,
    /// Reverse listeners: offer HTTP/2 by ALPN.
    pub h2: Option<bool>,
    /// Reverse listeners without certificates: answer everything with a redirect to this HTTPS port.
    pub redirect_https_port: Option<Spanned<i64>>,
    /// Reverse listeners: `none`, `v1`, `v2` or `any`.
    pub proxy_protocol: Option<Spanned<String>>,
    /// Reverse listeners: peers whose forwarding headers are believed.
    pub trusted_proxies: Option<Vec<Spanned<String>>>,
    /// Reverse listeners: `x-forwarded-for` or `forwarded`, the header believed from them.
    pub forwarded_header: Option<Spanned<String>>,
    /// Reverse listeners: pool for requests no route matches (else 404).
    pub default_pool: Option<Spanned<String>>,
    /// Transparent listeners: wait for the client's first bytes (duration string).
    pub peek_timeout: Option<Spanned<String>>,
    /// Transparent listeners: most bytes peeked for the SNI or Host.
    pub peek_max_bytes: Option<Spanned<i64>>,
    /// Transparent listeners: believe a name only if it resolves to the original destination.
    pub host_must_resolve: Option<bool>,
}

/// `[policy]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePolicy {
    /// `deny` or `allow`: what an unknown jurisdiction gets when no rule matches.
    pub unknown: Option<Spanned<String>>,
    /// Internal destination CIDRs that may be reached.
    pub internal_allowed: Option<Vec<Spanned<String>>>,
    /// `[[policy.rule]]`, in order.
    pub rule: Option<Vec<FileRule>>,
    /// `[[policy.attestation]]`.
    pub attestation: Option<Vec<FileAttestation>>,
    /// Re-decide open tunnels after a reload and close the ones now denied.
    pub reevaluate_tunnels: Option<bool>,
}

/// One `[[policy.rule]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRule {
    /// Unique id (required).
    pub id: Spanned<String>,
    /// `allow` or `deny` (required).
    pub action: Spanned<String>,
    /// Mode override.
    pub mode: Option<Spanned<String>>,
    /// Listener names.
    pub listeners: Option<Spanned<Vec<Spanned<String>>>>,
    /// Client CIDRs.
    pub clients: Option<Spanned<Vec<Spanned<String>>>>,
    /// Host patterns.
    pub hosts: Option<Spanned<Vec<Spanned<String>>>>,
    /// Destination ports.
    pub ports: Option<Spanned<Vec<Spanned<i64>>>>,
    /// Jurisdiction classes.
    pub classes: Option<Spanned<Vec<Spanned<String>>>>,
    /// Jurisdiction codes.
    pub jurisdictions: Option<Spanned<Vec<Spanned<String>>>>,
    /// Destination CIDRs.
    pub destinations: Option<Spanned<Vec<Spanned<String>>>>,
}

/// One `[[policy.attestation]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAttestation {
    /// Host pattern (required).
    pub host: Spanned<String>,
    /// Recipient organisation (required).
    pub organisation: Spanned<String>,
    /// Legal basis (required).
    pub basis: Spanned<String>,
}

/// One `[[listener.cert]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCert {
    /// PEM chain, leaf first.
    pub chain: Spanned<String>,
    /// PEM private key.
    pub key: Spanned<String>,
    /// Names the certificate must serve (checked against its SANs).
    pub names: Option<Vec<String>>,
    /// The certificate for clients without SNI or with an unknown name.
    pub default: Option<bool>,
}

/// One `[[route]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRoute {
    /// Host pattern (required).
    pub host: Spanned<String>,
    /// Path prefix (default `/`).
    pub path_prefix: Option<Spanned<String>>,
    /// Pool name (required).
    pub pool: Spanned<String>,
    /// Listener names.
    pub listeners: Option<Vec<Spanned<String>>>,
}

/// One `[[pool]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePool {
    /// Unique name (required).
    pub name: Spanned<String>,
    /// `host:port` members (required, not empty).
    pub members: Spanned<Vec<Spanned<String>>>,
    /// `round-robin` or `least-connections`.
    pub balance: Option<Spanned<String>>,
    /// Consecutive failures that eject a member (default 3).
    pub eject_after: Option<Spanned<i64>>,
    /// Ejection time (default 30s).
    pub eject_for: Option<Spanned<String>>,
    /// TLS to members (default false).
    pub tls: Option<bool>,
    /// CA PEM file for upstream TLS (default: webpki roots).
    pub ca: Option<Spanned<String>>,
    /// Upstream TLS name (default: the member host).
    pub server_name: Option<Spanned<String>>,
    /// Active health check path (absent: passive health only).
    pub health_check: Option<Spanned<String>>,
    /// Health check interval (default 5s).
    pub health_interval: Option<Spanned<String>>,
    /// Health check timeout (default 2s).
    pub health_timeout: Option<Spanned<String>>,
}
