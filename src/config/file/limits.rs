//! `[limits]`: timeouts and sizes, with their defaults and bounds.

use std::time::Duration;

use toml::Spanned;

use super::raw::FileLimits;
use super::{Compiler, Res, parse_duration};
use crate::config::Limits;

/// Smallest accepted `max_header_bytes` (hyper's minimum read buffer).
pub const MIN_HEADER_BYTES: usize = 8192;
/// Largest accepted `max_header_bytes` (1 MiB).
pub const MAX_HEADER_BYTES: usize = 1 << 20;
/// Default `max_header_bytes`.
pub const DEFAULT_HEADER_BYTES: usize = 65_536;
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
/// Default `upstream_max_connections`.
pub const DEFAULT_UPSTREAM_MAX_CONNECTIONS: usize = 512;
const DEFAULT_UPSTREAM_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

impl Compiler<'_> {
    pub(super) fn limits(&self, raw: FileLimits) -> Res<Limits> {
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
            upstream_max_connections: self.int(
                raw.upstream_max_connections.as_ref(),
                "limits.upstream_max_connections",
                DEFAULT_UPSTREAM_MAX_CONNECTIONS,
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
}
