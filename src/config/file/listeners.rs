//! `[[listener]]`: names, kinds, bind addresses, modes, clients, ports and connection limits
//! (the settings of reverse listeners are compiled in `reverse`).

use std::net::SocketAddr;

use ipnet::IpNet;
use toml::Spanned;

use super::raw::{FileListener, Kind};
use super::{Compiler, Res};
use crate::config::{ConfigError, ForwardListener, ListenerConfig, ListenerKind};
use crate::jurisdiction::sources::parse_cidr;
use crate::policy::Mode;

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

impl Compiler<'_> {
    pub(super) fn listeners(
        &self,
        raw: Option<Spanned<Vec<FileListener>>>,
    ) -> Res<Vec<ListenerConfig>> {
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
                Some(k) if k.get_ref() == "transparent" => Kind::Transparent,
                Some(k) => {
                    return Err(self.bad(
                        k,
                        key("kind"),
                        "unknown listener kind (expected forward, reverse or transparent)",
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
                Kind::Forward | Kind::Transparent => {
                    self.allowed_clients(l.allowed_clients.as_ref(), i)?
                }
                Kind::Reverse => self.reverse_clients(l.allowed_clients.as_ref(), i)?,
            };
            // Forward and transparent listeners only (a reverse listener with the key is
            // refused above).
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
                Kind::Transparent => {
                    ListenerKind::Transparent(self.transparent_listener(&l, i, allowed_ports)?)
                }
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
}
