//! The configuration file as written ([`FileConfig`]) and its compilation into a checked
//! [`Config`] ([`compile`]).
//!
//! Every table refuses unknown keys, every key is optional unless documented otherwise, and
//! defaults are applied at compile time (they are listed in `config/README.md`). Values that
//! need checking are [`Spanned`], so every refusal names the line, the key path
//! (`listener[0].allowed_clients[1]`) and the value.

use std::fmt::Display;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use toml::Spanned;

use super::{Config, ConfigError};
use crate::destination::{Host, normalize_host};
use crate::jurisdiction::sources::{line_of, parse_cidr};
use crate::policy::{Action, HostPattern, Mode};

mod admin;
mod audit;
mod jurisdiction;
mod limits;
mod listeners;
mod policy;
mod raw;
mod reverse;
mod toml_error;
mod transparent;

pub use limits::{
    DEFAULT_BODY_IDLE_TIMEOUT, DEFAULT_UPSTREAM_IDLE_MAX, DEFAULT_UPSTREAM_IDLE_TIMEOUT,
    DEFAULT_UPSTREAM_MAX_CONNECTIONS,
};
pub use raw::FileConfig;

const DEFAULT_RESOLVER_TIMEOUT: Duration = Duration::from_secs(5);

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
    let raw: FileConfig =
        toml::from_str(text).map_err(|e| toml_error::toml_error(text, source, &e))?;
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
        let raw_policy = raw.policy.unwrap_or_default();
        let reevaluate_tunnels = raw_policy.reevaluate_tunnels.unwrap_or(true);
        let policy = self.policy(raw_policy, &listeners)?;
        let admin = self.admin(raw.admin.unwrap_or_default(), &listeners)?;
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
            digest: String::new(),
            listeners,
            jurisdiction,
            profile,
            policy,
            resolver_timeout,
            audit,
            limits,
            routes,
            pools,
            admin,
            reevaluate_tunnels,
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
}
