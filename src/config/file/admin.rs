//! `[admin]`: the admin listener's address, checked against the proxy's own listeners.

use std::net::{Ipv4Addr, SocketAddr};

use super::raw::FileAdmin;
use super::{Compiler, Res};
use crate::config::{AdminConfig, ListenerConfig};

/// Where the admin listener binds unless `[admin] bind` says otherwise: loopback only.
pub const DEFAULT_ADMIN_BIND: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 9090);

impl Compiler<'_> {
    pub(super) fn admin(&self, raw: FileAdmin, listeners: &[ListenerConfig]) -> Res<AdminConfig> {
        let enabled = raw.enabled.unwrap_or(true);
        let bind = match &raw.bind {
            None => DEFAULT_ADMIN_BIND,
            Some(v) => v.get_ref().parse::<SocketAddr>().map_err(|_| {
                self.bad(
                    v,
                    "admin.bind",
                    "invalid bind address (expected IP:port, e.g. 127.0.0.1:9090)",
                )
            })?,
        };
        if enabled
            && bind.port() != 0
            && let Some(l) = listeners.iter().find(|l| collides(l.bind, bind))
        {
            let reason = format!(
                "the admin listener would share {} with listener '{}'",
                l.bind, l.name
            );
            return Err(match &raw.bind {
                Some(v) => self.bad(v, "admin.bind", reason),
                None => crate::config::ConfigError::new(self.source, "admin.bind", reason),
            });
        }
        Ok(AdminConfig { enabled, bind })
    }
}

/// Two binds that cannot both be held: the same port on the same address, or on a wildcard
/// address of the same family and any address of it.
fn collides(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && a.is_ipv4() == b.is_ipv4()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

#[cfg(test)]
mod tests {
    use super::collides;

    #[test]
    fn a_wildcard_collides_with_every_address_of_its_family_on_the_port() {
        let p = |s: &str| s.parse().expect("addr");
        assert!(collides(p("127.0.0.1:9090"), p("127.0.0.1:9090")));
        assert!(collides(p("0.0.0.0:9090"), p("127.0.0.1:9090")));
        assert!(!collides(p("127.0.0.1:9090"), p("127.0.0.2:9090")));
        assert!(!collides(p("127.0.0.1:9090"), p("127.0.0.1:9091")));
        assert!(!collides(p("[::]:9090"), p("127.0.0.1:9090")));
    }
}
