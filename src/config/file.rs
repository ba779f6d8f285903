//! The configuration file as written ([`FileConfig`]) and its compilation into a checked
//! [`Config`] ([`compile`]).
//!
//! Every table refuses unknown keys, every key is optional unless documented otherwise, and
//! defaults are applied at compile time (they are listed in `config/README.md`). Values that
//! need checking are [`Spanned`], so every refusal names the line, the key path
//! (`listener[0].allowed_clients[1]`) and the value.

use std::collections::HashMap;
use std::fmt::Display;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::{
    AuditConfig, AuditOutput, Config, ConfigError, ForwardListener, Limits, ListenerConfig,
    ListenerKind,
};
use crate::destination::{Host, normalize_host};
use crate::jurisdiction::Jurisdiction;
use crate::jurisdiction::load::TableSources;
use crate::jurisdiction::sources::{line_of, parse_cidr};
use crate::policy::profile::{BUILTIN, DEFAULT_PROFILE};
use crate::policy::{Action, Attestation, Class, HostPattern, Mode, Policy, Profile, Rule};

mod reverse;

/// A listener's kind as written, before its settings are compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Forward,
    Reverse,
}

/// Default listener clients: loopback and private space, never the whole Internet.
pub const DEFAULT_ALLOWED_CLIENTS: [&str; 6] = [
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "fc00::/7",
];
/// Default destination ports.
pub const DEFAULT_ALLOWED_PORTS: [u16; 2] = [80, 443];
/// Default per-listener connection limit.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Largest accepted `max_connections`.
pub const MAX_MAX_CONNECTIONS: usize = 1_000_000;
/// Default audit queue capacity.
pub const DEFAULT_AUDIT_QUEUE: usize = 10_000;
/// Largest accepted audit `queue`.
pub const MAX_AUDIT_QUEUE: usize = 10_000_000;
/// Smallest accepted `max_header_bytes` (hyper's minimum read buffer).
pub const MIN_HEADER_BYTES: usize = 8192;
/// Largest accepted `max_header_bytes` (1 MiB).
pub const MAX_HEADER_BYTES: usize = 1 << 20;
/// Default `max_header_bytes`.
pub const DEFAULT_HEADER_BYTES: usize = 65_536;

const DEFAULT_RESOLVER_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_FULL_WAIT: Duration = Duration::from_millis(50);
const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_KEEPALIVE_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_TUNNEL_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Default `body_idle_timeout`.
pub const DEFAULT_BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default `upstream_idle_timeout`.
pub const DEFAULT_UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Default `upstream_idle_max`.
pub const DEFAULT_UPSTREAM_IDLE_MAX: usize = 256;
/// Largest accepted `upstream_idle_max`.
pub const MAX_UPSTREAM_IDLE_MAX: usize = 100_000;
const DEFAULT_UPSTREAM_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

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
    pub route: Option<Vec<reverse::FileRoute>>,
    /// `[[pool]]`: upstream pools of reverse routes.
    pub pool: Option<Vec<reverse::FilePool>>,
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
    /// `forward` (the only kind so far).
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
    pub cert: Option<Vec<reverse::FileCert>>,
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

/// Parse a duration: a whole number and a unit, `ms`, `s`, `m` or `h` (`"250ms"`, `"5s"`,
/// `"2m"`, `"1h"`). Zero is refused.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    const EXPECTED: &str = "invalid duration (expected a whole number and a unit ms, s, m or h, e.g. 250ms, 5s, 2m, 1h)";
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let per_unit_ms: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(EXPECTED.to_string()),
    };
    if number.is_empty() {
        return Err(EXPECTED.to_string());
    }
    let ms = number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(per_unit_ms))
        .ok_or_else(|| "duration is too large".to_string())?;
    if ms == 0 {
        return Err("duration must be greater than zero".to_string());
    }
    Ok(Duration::from_millis(ms))
}

/// Parse and check configuration text and build the [`Config`]. `source` names the text in
/// errors; relative paths in it are resolved against `base`.
pub fn compile(text: &str, source: &str, base: &Path) -> Result<Config, ConfigError> {
    let raw: FileConfig = toml::from_str(text).map_err(|e| toml_error(text, source, &e))?;
    Compiler { text, source, base }.config(raw)
}

/// Compilation context: the text (for lines), its name and the base directory.
pub(super) struct Compiler<'a> {
    pub(super) text: &'a str,
    pub(super) source: &'a str,
    pub(super) base: &'a Path,
}

pub(super) type Res<T> = Result<T, ConfigError>;

impl Compiler<'_> {
    pub(super) fn fail(
        &self,
        span: Range<usize>,
        key: impl Into<String>,
        value: Option<String>,
        reason: impl Into<String>,
    ) -> ConfigError {
        let e = ConfigError::new(self.source, key, reason).at_line(line_of(self.text, span.start));
        match value {
            Some(v) => e.with_value(v),
            None => e,
        }
    }

    /// An error about a spanned value, naming the value.
    pub(super) fn bad<T: Display>(
        &self,
        v: &Spanned<T>,
        key: impl Into<String>,
        reason: impl Into<String>,
    ) -> ConfigError {
        self.fail(v.span(), key, Some(v.get_ref().to_string()), reason)
    }

    fn config(&self, raw: FileConfig) -> Res<Config> {
        let listeners = self.listeners(raw.listener)?;
        let policy = self.policy(raw.policy.unwrap_or_default(), &listeners)?;
        let resolver = raw.resolver.unwrap_or_default();
        let resolver_timeout = self.duration(
            resolver.timeout.as_ref(),
            "resolver.timeout",
            DEFAULT_RESOLVER_TIMEOUT,
        )?;
        let audit = self.audit(raw.audit.unwrap_or_default())?;
        let limits = self.limits(raw.limits.unwrap_or_default())?;
        let (jurisdiction, profile) = self.jurisdiction(raw.jurisdiction.unwrap_or_default())?;
        let pools = self.pools(raw.pool.unwrap_or_default())?;
        let routes = self.routes(raw.route.unwrap_or_default(), &listeners, &pools)?;
        self.check_default_pools(&listeners, &pools)?;
        Ok(Config {
            source: self.source.to_string(),
            listeners,
            jurisdiction,
            profile,
            policy,
            resolver_timeout,
            audit,
            limits,
            routes,
            pools,
        })
    }

    // ---- scalars -------------------------------------------------------------------------

    pub(super) fn duration(
        &self,
        v: Option<&Spanned<String>>,
        key: &str,
        default: Duration,
    ) -> Res<Duration> {
        match v {
            None => Ok(default),
            Some(v) => parse_duration(v.get_ref()).map_err(|r| self.bad(v, key, r)),
        }
    }

    pub(super) fn int(
        &self,
        v: Option<&Spanned<i64>>,
        key: &str,
        default: usize,
        min: usize,
        max: usize,
    ) -> Res<usize> {
        let Some(v) = v else {
            return Ok(default);
        };
        usize::try_from(*v.get_ref())
            .ok()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| self.bad(v, key, format!("must be between {min} and {max}")))
    }

    pub(super) fn port(&self, v: &Spanned<i64>, key: &str) -> Res<u16> {
        u16::try_from(*v.get_ref())
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| self.bad(v, key, "invalid port (expected 1 to 65535)"))
    }

    pub(super) fn mode(&self, v: &Spanned<String>, key: &str) -> Res<Mode> {
        match v.get_ref().as_str() {
            "enforce" => Ok(Mode::Enforce),
            "report" => Ok(Mode::Report),
            _ => Err(self.bad(v, key, "invalid mode (expected enforce or report)")),
        }
    }

    pub(super) fn action(&self, v: &Spanned<String>, key: &str) -> Res<Action> {
        match v.get_ref().as_str() {
            "allow" => Ok(Action::Allow),
            "deny" => Ok(Action::Deny),
            _ => Err(self.bad(v, key, "invalid action (expected allow or deny)")),
        }
    }

    pub(super) fn cidr(&self, v: &Spanned<String>, key: &str) -> Res<IpNet> {
        parse_cidr(v.get_ref()).map_err(|r| self.bad(v, key, r))
    }

    /// A host pattern (`name` or `*.suffix`), normalised as request hosts are (IDNA to
    /// punycode, lower case, one trailing dot dropped), so a pattern matches exactly the hosts
    /// a request can carry. An IP literal is refused: addresses are matched by `destinations`.
    pub(super) fn host(&self, v: &Spanned<String>, key: &str) -> Res<HostPattern> {
        let raw = v.get_ref().trim();
        let (wild, name) = match raw.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, raw),
        };
        let invalid = |why: String| {
            self.bad(
                v,
                key,
                format!(
                    "invalid host pattern ({why}; expected a name such as api.example.org, or *.example.org for any name below it)"
                ),
            )
        };
        match normalize_host(name) {
            Ok(Host::Name(n)) => {
                let text = if wild { format!("*.{n}") } else { n };
                HostPattern::parse(&text).ok_or_else(|| invalid("not a name".into()))
            }
            Ok(Host::Ip(ip)) => {
                let cidr = match ip {
                    std::net::IpAddr::V4(_) => format!("{ip}/32"),
                    std::net::IpAddr::V6(_) => format!("{ip}/128"),
                };
                Err(self.bad(
                    v,
                    key,
                    format!(
                        "{ip} is an IP address, not a host name: match addresses with destinations = [\"{cidr}\"]"
                    ),
                ))
            }
            Err(e) => Err(invalid(e.to_string())),
        }
    }

    pub(super) fn non_empty(&self, v: &Spanned<String>, key: &str, what: &str) -> Res<String> {
        if v.get_ref().trim().is_empty() {
            return Err(self.bad(v, key, format!("{what} must not be empty")));
        }
        Ok(v.get_ref().clone())
    }

    /// A path, relative ones resolved against the base directory.
    pub(super) fn path(&self, v: &Spanned<String>, key: &str) -> Res<PathBuf> {
        if v.get_ref().is_empty() {
            return Err(self.bad(v, key, "path must not be empty"));
        }
        let p = Path::new(v.get_ref());
        if p.is_absolute() || self.base.as_os_str().is_empty() || self.base == Path::new(".") {
            Ok(p.to_path_buf())
        } else {
            Ok(self.base.join(p))
        }
    }

    /// Check a rule's optional list: present lists must not be empty (an empty matcher list
    /// would match anything, which is never what `[]` was meant to say).
    pub(super) fn list<'v, T>(&self, v: Option<&'v Spanned<Vec<T>>>, key: &str) -> Res<&'v [T]> {
        match v {
            None => Ok(&[]),
            Some(l) if l.get_ref().is_empty() => Err(self.fail(
                l.span(),
                key,
                Some("[]".into()),
                "empty list (remove the key to match anything)",
            )),
            Some(l) => Ok(l.get_ref()),
        }
    }

    // ---- sections ------------------------------------------------------------------------

    fn listeners(&self, raw: Option<Spanned<Vec<FileListener>>>) -> Res<Vec<ListenerConfig>> {
        let Some(raw) = raw else {
            return Err(ConfigError::new(
                self.source,
                "listener",
                "at least one [[listener]] is required",
            ));
        };
        if raw.get_ref().is_empty() {
            return Err(self.fail(
                raw.span(),
                "listener",
                None,
                "at least one [[listener]] is required",
            ));
        }
        let mut out: Vec<ListenerConfig> = Vec::new();
        for (i, l) in raw.into_inner().into_iter().enumerate() {
            let key = |k: &str| format!("listener[{i}].{k}");
            let name = l.name.get_ref();
            let valid = !name.is_empty()
                && name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                });
            if !valid {
                return Err(self.bad(
                    &l.name,
                    key("name"),
                    "invalid listener name (expected one or more of a-z, 0-9, _ and -)",
                ));
            }
            if let Some(j) = out.iter().position(|o| o.name == *name) {
                return Err(self.bad(
                    &l.name,
                    key("name"),
                    format!("duplicate listener name (already used by listener[{j}])"),
                ));
            }
            let kind = match &l.kind {
                None => Kind::Forward,
                Some(k) if k.get_ref() == "forward" => Kind::Forward,
                Some(k) if k.get_ref() == "reverse" => Kind::Reverse,
                Some(k) => {
                    return Err(self.bad(
                        k,
                        key("kind"),
                        "unknown listener kind (expected forward or reverse)",
                    ));
                }
            };
            self.kind_keys(&l, kind, i)?;
            let bind: SocketAddr = l.bind.get_ref().parse().map_err(|_| {
                self.bad(
                    &l.bind,
                    key("bind"),
                    "invalid bind address (expected IP:port, e.g. 127.0.0.1:3128 or [::1]:3128)",
                )
            })?;
            if bind.port() != 0
                && let Some(j) = out.iter().position(|o| o.bind == bind)
            {
                return Err(self.bad(
                    &l.bind,
                    key("bind"),
                    format!("address already used by listener[{j}]"),
                ));
            }
            let mode = match &l.mode {
                None => Mode::Enforce,
                Some(m) => self.mode(m, &key("mode"))?,
            };
            let allowed_clients = match kind {
                Kind::Forward => self.allowed_clients(l.allowed_clients.as_ref(), i)?,
                Kind::Reverse => self.reverse_clients(l.allowed_clients.as_ref(), i)?,
            };
            // Forward listeners only (a reverse listener with the key is refused above).
            let allowed_ports = match &l.allowed_ports {
                None => DEFAULT_ALLOWED_PORTS.to_vec(),
                Some(ports) if ports.get_ref().is_empty() => {
                    return Err(self.fail(
                        ports.span(),
                        key("allowed_ports"),
                        Some("[]".into()),
                        "an empty list allows no port (remove the key for the default [80, 443])",
                    ));
                }
                Some(ports) => ports
                    .get_ref()
                    .iter()
                    .enumerate()
                    .map(|(j, p)| self.port(p, &format!("listener[{i}].allowed_ports[{j}]")))
                    .collect::<Res<_>>()?,
            };
            let max_connections = self.int(
                l.max_connections.as_ref(),
                &key("max_connections"),
                DEFAULT_MAX_CONNECTIONS,
                1,
                MAX_MAX_CONNECTIONS,
            )?;
            let kind = match kind {
                Kind::Forward => ListenerKind::Forward(ForwardListener { allowed_ports }),
                Kind::Reverse => ListenerKind::Reverse(self.reverse_listener(&l, i)?),
            };
            out.push(ListenerConfig {
                name: name.clone(),
                bind,
                mode,
                allowed_clients,
                max_connections,
                kind,
            });
        }
        Ok(out)
    }

    fn allowed_clients(
        &self,
        raw: Option<&Spanned<Vec<Spanned<String>>>>,
        i: usize,
    ) -> Res<Vec<IpNet>> {
        let Some(raw) = raw else {
            return DEFAULT_ALLOWED_CLIENTS
                .iter()
                .map(|c| {
                    parse_cidr(c)
                        .map_err(|r| ConfigError::new(self.source, "listener.allowed_clients", r))
                })
                .collect();
        };
        if raw.get_ref().is_empty() {
            return Err(self.fail(
                raw.span(),
                format!("listener[{i}].allowed_clients"),
                Some("[]".into()),
                "an empty list would make an open proxy (list the client networks, or remove the key for loopback and private networks)",
            ));
        }
        let mut out = Vec::new();
        for (j, c) in raw.get_ref().iter().enumerate() {
            let key = format!("listener[{i}].allowed_clients[{j}]");
            let net = self.cidr(c, &key)?;
            if net.prefix_len() == 0 {
                return Err(self.bad(
                    c,
                    key,
                    "would make an open proxy (list the client networks instead)",
                ));
            }
            out.push(net);
        }
        // Several networks can cover everything between them (0.0.0.0/1 + 128.0.0.0/1).
        let everything = [
            ("IPv4", IpNet::V4(ipnet::Ipv4Net::default())),
            ("IPv6", IpNet::V6(ipnet::Ipv6Net::default())),
        ];
        for (family, all) in everything {
            if IpNet::aggregate(&out).contains(&all) {
                return Err(self.fail(
                    raw.span(),
                    format!("listener[{i}].allowed_clients"),
                    None,
                    format!(
                        "these networks together cover all of {family}: that would make an open proxy (list the client networks instead)"
                    ),
                ));
            }
        }
        Ok(out)
    }

    fn policy(&self, raw: FilePolicy, listeners: &[ListenerConfig]) -> Res<Policy> {
        let unknown = match &raw.unknown {
            None => Action::Deny,
            Some(u) => self.action(u, "policy.unknown")?,
        };
        let internal_allowed = raw
            .internal_allowed
            .iter()
            .flatten()
            .enumerate()
            .map(|(j, c)| self.cidr(c, &format!("policy.internal_allowed[{j}]")))
            .collect::<Res<Vec<_>>>()?;
        let mut rules: Vec<Rule> = Vec::new();
        for (i, r) in raw.rule.iter().flatten().enumerate() {
            let rule = self.rule(r, i, listeners)?;
            if let Some(j) = rules.iter().position(|o| o.id == rule.id) {
                return Err(self.bad(
                    &r.id,
                    format!("policy.rule[{i}].id"),
                    format!("duplicate rule id (already used by policy.rule[{j}])"),
                ));
            }
            rules.push(rule);
        }
        let attestations = raw
            .attestation
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, a)| {
                let key = |k: &str| format!("policy.attestation[{i}].{k}");
                Ok(Attestation {
                    host: self.host(&a.host, &key("host"))?,
                    organisation: self.non_empty(
                        &a.organisation,
                        &key("organisation"),
                        "organisation",
                    )?,
                    basis: self.non_empty(&a.basis, &key("basis"), "basis")?,
                })
            })
            .collect::<Res<Vec<_>>>()?;
        Ok(Policy {
            rules,
            attestations,
            internal_allowed,
            unknown,
        })
    }

    fn rule(&self, r: &FileRule, i: usize, listeners: &[ListenerConfig]) -> Res<Rule> {
        let key = |k: &str| format!("policy.rule[{i}].{k}");
        let item = |k: &str, j: usize| format!("policy.rule[{i}].{k}[{j}]");
        let id = self.non_empty(&r.id, &key("id"), "rule id")?;
        let action = self.action(&r.action, &key("action"))?;
        let mode = r
            .mode
            .as_ref()
            .map(|m| self.mode(m, &key("mode")))
            .transpose()?;
        let mut names = Vec::new();
        for (j, l) in self
            .list(r.listeners.as_ref(), &key("listeners"))?
            .iter()
            .enumerate()
        {
            if !listeners.iter().any(|c| c.name == *l.get_ref()) {
                let known: Vec<&str> = listeners.iter().map(|c| c.name.as_str()).collect();
                return Err(self.bad(
                    l,
                    item("listeners", j),
                    format!("no such listener (configured: {})", known.join(", ")),
                ));
            }
            names.push(l.get_ref().clone());
        }
        let clients = self
            .list(r.clients.as_ref(), &key("clients"))?
            .iter()
            .enumerate()
            .map(|(j, c)| self.cidr(c, &item("clients", j)))
            .collect::<Res<_>>()?;
        let hosts = self
            .list(r.hosts.as_ref(), &key("hosts"))?
            .iter()
            .enumerate()
            .map(|(j, h)| self.host(h, &item("hosts", j)))
            .collect::<Res<_>>()?;
        let ports = self
            .list(r.ports.as_ref(), &key("ports"))?
            .iter()
            .enumerate()
            .map(|(j, p)| self.port(p, &item("ports", j)))
            .collect::<Res<_>>()?;
        let classes = self
            .list(r.classes.as_ref(), &key("classes"))?
            .iter()
            .enumerate()
            .map(|(j, c)| self.class(c, &item("classes", j)))
            .collect::<Res<_>>()?;
        let jurisdictions = self
            .list(r.jurisdictions.as_ref(), &key("jurisdictions"))?
            .iter()
            .enumerate()
            .map(|(j, c)| {
                Jurisdiction::from_code(c.get_ref()).ok_or_else(|| {
                    self.bad(
                        c,
                        item("jurisdictions", j),
                        "unknown jurisdiction (expected an ISO 3166-1 alpha-2 code such as GB, or internal, metadata, reserved, unknown; the UK is GB, Greece is GR)",
                    )
                })
            })
            .collect::<Res<_>>()?;
        let destinations = self
            .list(r.destinations.as_ref(), &key("destinations"))?
            .iter()
            .enumerate()
            .map(|(j, c)| self.cidr(c, &item("destinations", j)))
            .collect::<Res<_>>()?;
        Ok(Rule {
            id: Arc::from(id),
            listeners: names,
            clients,
            hosts,
            ports,
            classes,
            jurisdictions,
            destinations,
            action,
            mode,
        })
    }

    fn class(&self, v: &Spanned<String>, key: &str) -> Res<Class> {
        const CLASSES: [Class; 6] = [
            Class::Home,
            Class::Adequate,
            Class::Conditional,
            Class::NotAdequate,
            Class::Internal,
            Class::Unknown,
        ];
        CLASSES
            .into_iter()
            .find(|c| c.as_str() == v.get_ref())
            .ok_or_else(|| {
                self.bad(
                    v,
                    key,
                    "unknown class (expected home, adequate, conditional, not-adequate, internal or unknown)",
                )
            })
    }

    fn audit(&self, raw: FileAudit) -> Res<AuditConfig> {
        let output = match &raw.output {
            None => AuditOutput::Stdout,
            Some(o) if o.get_ref() == "stdout" => AuditOutput::Stdout,
            Some(o) => AuditOutput::File(self.path(o, "audit.output")?),
        };
        let queue = self.int(
            raw.queue.as_ref(),
            "audit.queue",
            DEFAULT_AUDIT_QUEUE,
            1,
            MAX_AUDIT_QUEUE,
        )?;
        let full_wait =
            self.duration(raw.full_wait.as_ref(), "audit.full_wait", DEFAULT_FULL_WAIT)?;
        Ok(AuditConfig {
            output,
            queue,
            full_wait,
        })
    }

    fn limits(&self, raw: FileLimits) -> Res<Limits> {
        let d = |v: &Option<Spanned<String>>, key: &str, default: Duration| {
            self.duration(v.as_ref(), &format!("limits.{key}"), default)
        };
        Ok(Limits {
            header_read_timeout: d(
                &raw.header_read_timeout,
                "header_read_timeout",
                DEFAULT_HEADER_READ_TIMEOUT,
            )?,
            keepalive_idle_timeout: d(
                &raw.keepalive_idle_timeout,
                "keepalive_idle_timeout",
                DEFAULT_KEEPALIVE_IDLE_TIMEOUT,
            )?,
            connect_timeout: d(
                &raw.connect_timeout,
                "connect_timeout",
                DEFAULT_CONNECT_TIMEOUT,
            )?,
            tunnel_idle_timeout: d(
                &raw.tunnel_idle_timeout,
                "tunnel_idle_timeout",
                DEFAULT_TUNNEL_IDLE_TIMEOUT,
            )?,
            max_tunnel_lifetime: match &raw.max_tunnel_lifetime {
                None => None,
                Some(v) if v.get_ref() == "off" => None,
                Some(v) => Some(parse_duration(v.get_ref()).map_err(|r| {
                    self.bad(v, "limits.max_tunnel_lifetime", format!("{r}, or \"off\""))
                })?),
            },
            body_idle_timeout: d(
                &raw.body_idle_timeout,
                "body_idle_timeout",
                DEFAULT_BODY_IDLE_TIMEOUT,
            )?,
            upstream_idle_max: self.int(
                raw.upstream_idle_max.as_ref(),
                "limits.upstream_idle_max",
                DEFAULT_UPSTREAM_IDLE_MAX,
                0,
                MAX_UPSTREAM_IDLE_MAX,
            )?,
            upstream_idle_timeout: d(
                &raw.upstream_idle_timeout,
                "upstream_idle_timeout",
                DEFAULT_UPSTREAM_IDLE_TIMEOUT,
            )?,
            upstream_response_timeout: d(
                &raw.upstream_response_timeout,
                "upstream_response_timeout",
                DEFAULT_UPSTREAM_RESPONSE_TIMEOUT,
            )?,
            max_header_bytes: self.int(
                raw.max_header_bytes.as_ref(),
                "limits.max_header_bytes",
                DEFAULT_HEADER_BYTES,
                MIN_HEADER_BYTES,
                MAX_HEADER_BYTES,
            )?,
            drain_timeout: d(&raw.drain_timeout, "drain_timeout", DEFAULT_DRAIN_TIMEOUT)?,
            h2_max_concurrent_streams: self.int(
                raw.h2_max_concurrent_streams.as_ref(),
                "limits.h2_max_concurrent_streams",
                100,
                1,
                10_000,
            )? as u32,
            h2_max_header_list_size: self.int(
                raw.h2_max_header_list_size.as_ref(),
                "limits.h2_max_header_list_size",
                DEFAULT_HEADER_BYTES,
                MIN_HEADER_BYTES,
                MAX_HEADER_BYTES,
            )? as u32,
        })
    }

    fn jurisdiction(&self, raw: FileJurisdiction) -> Res<(TableSources, Profile)> {
        let geoip = raw
            .geoip
            .as_ref()
            .map(|g| self.path(g, "jurisdiction.geoip"))
            .transpose()?;
        let mut overrides = Vec::new();
        for (j, o) in raw.overrides.iter().flatten().enumerate() {
            let key = format!("jurisdiction.overrides[{j}]");
            let path = self.path(o, &key)?;
            if !matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("csv" | "toml")
            ) {
                return Err(self.bad(o, key, "overrides file must end in .csv or .toml"));
            }
            overrides.push(path);
        }
        let aws_ranges = raw
            .aws_ranges
            .iter()
            .flatten()
            .enumerate()
            .map(|(j, a)| self.path(a, &format!("jurisdiction.aws_ranges[{j}]")))
            .collect::<Res<Vec<_>>>()?;
        let cloud_dir = match raw.cloud_dir.as_ref() {
            Some(d) => {
                let path = self.path(d, "jurisdiction.cloud_dir")?;
                if !path.is_dir() {
                    return Err(self.bad(
                        d,
                        "jurisdiction.cloud_dir",
                        "not a directory (create it with `residency-proxy update-ranges --out DIR`)",
                    ));
                }
                Some(path)
            }
            None => None,
        };
        let cloud_refresh = match raw.cloud_refresh.as_ref() {
            None => None,
            Some(v) if v.get_ref() == "off" => None,
            Some(v) => {
                const KEY: &str = "jurisdiction.cloud_refresh";
                // The feeds change a few times a day at most: no need to ask more often.
                const MIN_CLOUD_REFRESH: Duration = Duration::from_secs(600);
                let every = parse_duration(v.get_ref())
                    .map_err(|r| self.bad(v, KEY, format!("{r}, or \"off\"")))?;
                if every < MIN_CLOUD_REFRESH {
                    return Err(self.bad(v, KEY, "must be at least 10m"));
                }
                if cloud_dir.is_none() {
                    return Err(self.bad(v, KEY, "needs jurisdiction.cloud_dir: the directory the refreshed feeds are written to"));
                }
                Some(every)
            }
        };
        let profile = self.profile(raw.profile.as_ref())?;
        Ok((
            TableSources {
                geoip,
                overrides,
                aws_ranges,
                cloud_ranges: raw.cloud_ranges.unwrap_or(true),
                cloud_dir,
                cloud_refresh,
            },
            profile,
        ))
    }

    /// Load the profile: a built-in name as is, a `.toml` path resolved against the base.
    fn profile(&self, raw: Option<&Spanned<String>>) -> Res<Profile> {
        const KEY: &str = "jurisdiction.profile";
        let Some(raw) = raw else {
            return Profile::load(DEFAULT_PROFILE).map_err(|e| {
                ConfigError::new(self.source, KEY, format!("cannot load profile: {e}"))
                    .with_value(DEFAULT_PROFILE)
            });
        };
        let written = raw.get_ref();
        let arg = if BUILTIN.iter().any(|(n, _)| n == written) || !written.ends_with(".toml") {
            written.clone()
        } else {
            let path = self.path(raw, KEY)?;
            path.to_str()
                .ok_or_else(|| self.bad(raw, KEY, "profile path is not valid UTF-8"))?
                .to_string()
        };
        Profile::load(&arg).map_err(|e| {
            let reason = match e.line {
                None if !written.ends_with(".toml") => e.reason,
                None => format!("cannot load profile {arg}: {}", e.reason),
                Some(_) => format!("cannot load profile: {e}"),
            };
            self.bad(raw, KEY, reason)
        })
    }
}

// ---- errors from the toml crate ------------------------------------------------------------

/// Map a toml syntax, type or unknown-key error to file, line, key path and value.
fn toml_error(text: &str, source: &str, e: &toml::de::Error) -> ConfigError {
    let message = friendly(e.message());
    let Some(span) = e.span() else {
        return ConfigError::new(source, "", message);
    };
    let line = line_of(text, span.start);
    let (mut key, value) = match DeTable::parse(text) {
        Ok(doc) => locate(doc.get_ref(), text, &span),
        Err(_) => None,
    }
    .unwrap_or_else(|| {
        // A syntax error (no document), or a span no part covers: name the nearest table.
        let table = nearest_table(text, line);
        let snippet = text.get(span.clone()).unwrap_or("").trim();
        if message == "duplicate key" && !snippet.is_empty() {
            return (join(&table, snippet), None);
        }
        // On a `key = value` line, name the key and show the value as written.
        let assignment = text
            .lines()
            .nth(line.saturating_sub(1))
            .and_then(|l| l.split_once('='))
            .filter(|(k, _)| is_bare_key(k.trim()));
        match assignment {
            Some((k, v)) => (join(&table, k.trim()), Some(v.trim().to_string())),
            None => (table, (!snippet.is_empty()).then(|| snippet.to_string())),
        }
    });
    let mut reason = message;
    if let Some(field) = reason
        .strip_prefix("missing field `")
        .and_then(|r| r.strip_suffix('`'))
    {
        key = join(&key, field);
        reason = "required key is missing".to_string();
    }
    let err = ConfigError::new(source, key, reason).at_line(line);
    match value {
        Some(v) => err.with_value(v),
        None => err,
    }
}

/// Trade serde's Rust vocabulary for TOML's.
fn friendly(message: &str) -> String {
    if message.contains(" as i128, ") {
        return "integer out of range".to_string();
    }
    let mut m = message
        .replace("expected i64", "expected an integer")
        .replace("expected a sequence", "expected an array")
        .replace("expected a map", "expected a table");
    if let Some(at) = m.find("expected struct ") {
        m.truncate(at);
        m.push_str("expected a table");
    }
    m
}

/// A bare TOML key (or dotted bare keys): letters, digits, `_`, `-` and `.`.
fn is_bare_key(k: &str) -> bool {
    !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

fn join(table: &str, key: &str) -> String {
    if table.is_empty() {
        key.to_string()
    } else {
        format!("{table}.{key}")
    }
}

/// One located part of the document.
struct Part {
    span: Range<usize>,
    path: String,
    /// A key, or a table header: no value to show.
    is_key: bool,
}

/// Key path and (for a value) its text at `span`: the deepest part with exactly this span,
/// else the smallest part containing it.
fn locate(doc: &DeTable<'_>, text: &str, span: &Range<usize>) -> Option<(String, Option<String>)> {
    let mut parts = Vec::new();
    collect(doc, "", &mut parts);
    let exact = parts
        .iter()
        .filter(|p| p.span == *span)
        .max_by_key(|p| p.path.len());
    let part = exact.or_else(|| {
        parts
            .iter()
            .filter(|p| p.span.start <= span.start && span.end <= p.span.end)
            .min_by_key(|p| (p.span.end - p.span.start, usize::MAX - p.path.len()))
    })?;
    let value = (!part.is_key)
        .then(|| text.get(part.span.clone()).map(str::to_string))
        .flatten();
    Some((part.path.clone(), value))
}

fn collect(table: &DeTable<'_>, prefix: &str, out: &mut Vec<Part>) {
    for (k, v) in table.iter() {
        let path = join(prefix, k.get_ref());
        out.push(Part {
            span: k.span(),
            path: path.clone(),
            is_key: true,
        });
        collect_value(v, &path, out);
    }
}

fn collect_value(v: &Spanned<DeValue<'_>>, path: &str, out: &mut Vec<Part>) {
    match v.get_ref() {
        DeValue::Table(t) => {
            out.push(Part {
                span: v.span(),
                path: path.to_string(),
                is_key: true,
            });
            collect(t, path, out);
        }
        DeValue::Array(a) => {
            let tables = a.iter().all(|e| e.get_ref().is_table());
            out.push(Part {
                span: v.span(),
                path: path.to_string(),
                is_key: tables,
            });
            for (i, e) in a.iter().enumerate() {
                collect_value(e, &format!("{path}[{i}]"), out);
            }
        }
        _ => out.push(Part {
            span: v.span(),
            path: path.to_string(),
            is_key: false,
        }),
    }
}

/// The table header in force before `line` (`policy.rule[2]`), for syntax errors.
fn nearest_table(text: &str, line: usize) -> String {
    let mut current = String::new();
    let mut counts: HashMap<String, usize> = HashMap::new();
    let clean = |name: &str| -> String {
        name.split('.')
            .map(|p| p.trim().trim_matches(|c| c == '"' || c == '\''))
            .collect::<Vec<_>>()
            .join(".")
    };
    for l in text.lines().take(line.saturating_sub(1)) {
        let t = l.trim();
        if let Some(rest) = t.strip_prefix("[[") {
            if let Some(end) = rest.find("]]") {
                let name = clean(&rest[..end]);
                let n = counts.entry(name.clone()).or_insert(0);
                current = format!("{name}[{n}]");
                *n += 1;
            }
        } else if let Some(rest) = t.strip_prefix('[')
            && let Some(end) = rest.find(']')
        {
            current = clean(&rest[..end]);
        }
    }
    current
}
