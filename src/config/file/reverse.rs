//! Compiling the reverse-proxy part of a file: reverse listeners, certificates, pools and
//! routes, into the types of [`crate::config::reverse`].

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use toml::Spanned;

use super::raw::{FileCert, FileListener, FilePool, FileRoute, Kind};
use super::{Compiler, Res};
use crate::config::reverse::*;
use crate::config::{ConfigError, ListenerConfig};
use crate::destination::parse_authority;
use crate::tls::{self, CertSpec};
use crate::wire::forwarded::ForwardedHeader;
use crate::wire::proxy_protocol::Accept;

impl Compiler<'_> {
    /// Refuse keys that belong to another listener kind.
    pub(super) fn kind_keys(&self, l: &FileListener, kind: Kind, i: usize) -> Res<()> {
        let key = |k: &str| format!("listener[{i}].{k}");
        if kind != Kind::Transparent {
            self.no_transparent_keys(l, i)?;
        }
        match kind {
            Kind::Forward | Kind::Transparent => {
                let reverse_only = [
                    ("cert", l.cert.is_some()),
                    ("h2", l.h2.is_some()),
                    ("redirect_https_port", l.redirect_https_port.is_some()),
                    ("proxy_protocol", l.proxy_protocol.is_some()),
                    ("trusted_proxies", l.trusted_proxies.is_some()),
                    ("forwarded_header", l.forwarded_header.is_some()),
                    ("default_pool", l.default_pool.is_some()),
                ];
                if let Some((k, _)) = reverse_only.iter().find(|(_, set)| *set) {
                    return Err(self.fail(
                        l.name.span(),
                        key(k),
                        None,
                        "only reverse listeners take this key (set kind = \"reverse\")",
                    ));
                }
            }
            Kind::Reverse => {
                if let Some(p) = &l.allowed_ports {
                    return Err(self.fail(
                        p.span(),
                        key("allowed_ports"),
                        None,
                        "only forward and transparent listeners take allowed_ports (reverse listeners reach their pools)",
                    ));
                }
            }
        }
        Ok(())
    }

    /// Reverse listeners serve the public by default; `allowed_clients` narrows that.
    pub(super) fn reverse_clients(
        &self,
        raw: Option<&Spanned<Vec<Spanned<String>>>>,
        i: usize,
    ) -> Res<Vec<IpNet>> {
        let Some(raw) = raw else {
            return Ok(vec![
                IpNet::V4(ipnet::Ipv4Net::default()),
                IpNet::V6(ipnet::Ipv6Net::default()),
            ]);
        };
        let list = self.list(Some(raw), &format!("listener[{i}].allowed_clients"))?;
        list.iter()
            .enumerate()
            .map(|(j, c)| self.cidr(c, &format!("listener[{i}].allowed_clients[{j}]")))
            .collect()
    }

    pub(super) fn reverse_listener(&self, l: &FileListener, i: usize) -> Res<ReverseListener> {
        let key = |k: &str| format!("listener[{i}].{k}");
        let h2 = l.h2.unwrap_or(true);
        let proxy_protocol = match &l.proxy_protocol {
            None => None,
            Some(p) => match p.get_ref().as_str() {
                "none" => None,
                "v1" => Some(Accept::V1),
                "v2" => Some(Accept::V2),
                "any" => Some(Accept::Any),
                _ => {
                    return Err(self.bad(p, key("proxy_protocol"), "expected none, v1, v2 or any"));
                }
            },
        };
        let trusted_proxies = l
            .trusted_proxies
            .iter()
            .flatten()
            .enumerate()
            .map(|(j, c)| self.cidr(c, &format!("listener[{i}].trusted_proxies[{j}]")))
            .collect::<Res<Vec<_>>>()?;
        let forwarded_header = match &l.forwarded_header {
            None => ForwardedHeader::default(),
            Some(h) => ForwardedHeader::parse(h.get_ref()).ok_or_else(|| {
                self.bad(
                    h,
                    key("forwarded_header"),
                    "expected x-forwarded-for or forwarded",
                )
            })?,
        };
        let default_pool = l.default_pool.as_ref().map(|p| p.get_ref().clone());
        let redirect_https_port = l
            .redirect_https_port
            .as_ref()
            .map(|p| self.port(p, &key("redirect_https_port")))
            .transpose()?;
        let certs = l.cert.as_deref().unwrap_or_default();
        if redirect_https_port.is_some() && !certs.is_empty() {
            return Err(self.fail(
                l.name.span(),
                key("redirect_https_port"),
                None,
                "a TLS listener cannot redirect to HTTPS (remove redirect_https_port or the certificates)",
            ));
        }
        let (tls, cert_expiry) = if certs.is_empty() {
            (None, None)
        } else {
            let (config, expiry) = self.certs(certs, i, h2)?;
            (Some(config), expiry)
        };
        Ok(ReverseListener {
            tls,
            cert_expiry,
            redirect_https_port,
            proxy_protocol,
            trusted_proxies,
            forwarded_header,
            default_pool,
            h2,
        })
    }

    /// The listener's rustls configuration, and the earliest `notAfter` of its certificates.
    fn certs(
        &self,
        certs: &[FileCert],
        i: usize,
        h2: bool,
    ) -> Res<(Arc<rustls::ServerConfig>, Option<SystemTime>)> {
        let now = SystemTime::now();
        let mut loaded = Vec::new();
        let mut default = None;
        for (j, c) in certs.iter().enumerate() {
            let key = |k: &str| format!("listener[{i}].cert[{j}].{k}");
            let spec = CertSpec {
                chain: self.path(&c.chain, &key("chain"))?,
                key: self.path(&c.key, &key("key"))?,
                names: c.names.clone().unwrap_or_default(),
            };
            let cert = tls::load_cert(&spec, now).map_err(|e| {
                self.fail(
                    c.chain.span(),
                    format!("listener[{i}].cert[{j}]"),
                    None,
                    e.to_string(),
                )
            })?;
            if c.default == Some(true) {
                if default.is_some() {
                    return Err(self.fail(
                        c.chain.span(),
                        key("default"),
                        None,
                        "only one certificate can be the default",
                    ));
                }
                default = Some(j);
            }
            loaded.push(cert);
        }
        let expiry = loaded.iter().map(|c| c.not_after).min();
        let config = tls::server_config(loaded, default.unwrap_or(0), h2).map_err(|e| {
            ConfigError::new(self.source, format!("listener[{i}].cert"), e.to_string())
        })?;
        Ok((config, expiry))
    }

    pub(super) fn pools(&self, raw: Vec<FilePool>) -> Res<Vec<PoolConfig>> {
        let mut out: Vec<PoolConfig> = Vec::new();
        for (i, p) in raw.iter().enumerate() {
            let key = |k: &str| format!("pool[{i}].{k}");
            let name = self.non_empty(&p.name, &key("name"), "pool name")?;
            if out.iter().any(|o| o.name == name) {
                return Err(self.bad(&p.name, key("name"), "duplicate pool name"));
            }
            if p.members.get_ref().is_empty() {
                return Err(self.fail(
                    p.members.span(),
                    key("members"),
                    Some("[]".into()),
                    "a pool needs at least one member",
                ));
            }
            let members = p
                .members
                .get_ref()
                .iter()
                .enumerate()
                .map(|(j, m)| {
                    parse_authority(m.get_ref(), None)
                        .map(|d| Member {
                            host: d.host,
                            port: d.port,
                        })
                        .map_err(|e| {
                            self.bad(
                                m,
                                format!("pool[{i}].members[{j}]"),
                                format!("{e} (expected host:port)"),
                            )
                        })
                })
                .collect::<Res<Vec<_>>>()?;
            let balance = match &p.balance {
                None => Balance::RoundRobin,
                Some(b) => match b.get_ref().as_str() {
                    "round-robin" => Balance::RoundRobin,
                    "least-connections" => Balance::LeastConnections,
                    _ => {
                        return Err(self.bad(
                            b,
                            key("balance"),
                            "expected round-robin or least-connections",
                        ));
                    }
                },
            };
            let eject_after =
                self.int(p.eject_after.as_ref(), &key("eject_after"), 3, 1, 1000)? as u32;
            let eject_for = self.duration(
                p.eject_for.as_ref(),
                &key("eject_for"),
                Duration::from_secs(30),
            )?;
            let tls = if p.tls == Some(true) {
                let ca =
                    p.ca.as_ref()
                        .map(|c| self.path(c, &key("ca")))
                        .transpose()?;
                let client = tls::client_config(ca.as_deref())
                    .map_err(|e| ConfigError::new(self.source, key("ca"), e.to_string()))?;
                Some(UpstreamTls {
                    client,
                    server_name: p.server_name.as_ref().map(|s| s.get_ref().clone()),
                })
            } else {
                if let Some(c) = p.ca.as_ref().or(p.server_name.as_ref()) {
                    return Err(self.bad(c, key("tls"), "ca and server_name need tls = true"));
                }
                None
            };
            let health_check = match &p.health_check {
                None => None,
                Some(path) if !path.get_ref().starts_with('/') => {
                    return Err(self.bad(
                        path,
                        key("health_check"),
                        "expected a path starting with /",
                    ));
                }
                Some(path) => Some(HealthCheck {
                    path: path.get_ref().clone(),
                    interval: self.duration(
                        p.health_interval.as_ref(),
                        &key("health_interval"),
                        Duration::from_secs(5),
                    )?,
                    timeout: self.duration(
                        p.health_timeout.as_ref(),
                        &key("health_timeout"),
                        Duration::from_secs(2),
                    )?,
                }),
            };
            out.push(PoolConfig {
                name,
                members,
                balance,
                eject_after,
                eject_for,
                tls,
                health_check,
            });
        }
        Ok(out)
    }

    pub(super) fn routes(
        &self,
        raw: Vec<FileRoute>,
        listeners: &[ListenerConfig],
        pools: &[PoolConfig],
    ) -> Res<Vec<RouteConfig>> {
        let mut out = Vec::new();
        for (i, r) in raw.iter().enumerate() {
            let key = |k: &str| format!("route[{i}].{k}");
            let host = self.host(&r.host, &key("host"))?;
            let path_prefix = match &r.path_prefix {
                None => "/".to_string(),
                Some(p) if p.get_ref().starts_with('/') => p.get_ref().clone(),
                Some(p) => {
                    return Err(self.bad(p, key("path_prefix"), "expected a path starting with /"));
                }
            };
            if !pools.iter().any(|p| p.name == *r.pool.get_ref()) {
                return Err(self.bad(&r.pool, key("pool"), "no such pool"));
            }
            let mut names = Vec::new();
            for (j, l) in r.listeners.iter().flatten().enumerate() {
                let ok = listeners
                    .iter()
                    .any(|c| c.name == *l.get_ref() && c.reverse().is_some());
                if !ok {
                    return Err(self.bad(
                        l,
                        format!("route[{i}].listeners[{j}]"),
                        "no such reverse listener",
                    ));
                }
                names.push(l.get_ref().clone());
            }
            out.push(RouteConfig {
                listeners: names,
                host,
                path_prefix,
                pool: r.pool.get_ref().clone(),
            });
        }
        Ok(out)
    }

    pub(super) fn check_default_pools(
        &self,
        listeners: &[ListenerConfig],
        pools: &[PoolConfig],
    ) -> Res<()> {
        for (i, l) in listeners.iter().enumerate() {
            if let Some(p) = l.reverse().and_then(|r| r.default_pool.as_ref())
                && !pools.iter().any(|x| &x.name == p)
            {
                return Err(ConfigError::new(
                    self.source,
                    format!("listener[{i}].default_pool"),
                    "no such pool",
                )
                .with_value(p.clone()));
            }
        }
        Ok(())
    }
}
