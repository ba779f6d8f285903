//! Settings of a transparent listener: traffic an iptables/nftables rule redirected to the
//! proxy, decided on its original destination and on the name its first bytes claim.

use std::time::Duration;

/// Default wait for a client's first bytes before the connection is decided by address alone.
pub const DEFAULT_PEEK_TIMEOUT: Duration = Duration::from_millis(500);
/// Default bound on the bytes peeked for a TLS ClientHello or an HTTP request head.
pub const DEFAULT_PEEK_MAX_BYTES: usize = 16 * 1024;
/// Smallest `peek_max_bytes`: a ClientHello with a name fits in it.
pub const MIN_PEEK_MAX_BYTES: usize = 512;
/// Largest `peek_max_bytes`.
pub const MAX_PEEK_MAX_BYTES: usize = 64 * 1024;

/// Settings of a transparent listener only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransparentListener {
    /// Original destination ports clients may reach.
    pub allowed_ports: Vec<u16>,
    /// How long to wait for the client's first bytes. A client that sends nothing first
    /// (a server-speaks-first protocol such as SMTP) is decided by address after this.
    pub peek_timeout: Duration,
    /// Most bytes peeked, without consuming them, for the SNI or Host.
    pub peek_max_bytes: usize,
    /// Believe a TLS SNI or HTTP Host only if that name resolves to the original destination
    /// (otherwise the connection is decided by address, and recorded as not verified).
    pub host_must_resolve: bool,
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    fn parse(listener: &str) -> Result<Config, String> {
        let text =
            format!("[[listener]]\nname = \"sidecar\"\nbind = \"127.0.0.1:15001\"\n{listener}\n");
        Config::parse(&text, "test.toml", Path::new(".")).map_err(|e| e.to_string())
    }

    #[test]
    fn a_transparent_listener_takes_its_defaults() {
        let c = parse("kind = \"transparent\"").expect("config");
        let l = &c.listeners[0];
        assert_eq!(l.kind.as_str(), "transparent");
        let t = l.transparent().expect("transparent settings");
        assert_eq!(
            *t,
            TransparentListener {
                allowed_ports: vec![80, 443],
                peek_timeout: DEFAULT_PEEK_TIMEOUT,
                peek_max_bytes: DEFAULT_PEEK_MAX_BYTES,
                host_must_resolve: true,
            }
        );
        assert_eq!(l.allowed_ports(), Some(&[80, 443][..]));
        assert!(l.forward().is_none() && l.reverse().is_none());
        assert!(
            l.allowed_clients.iter().all(|n| n.prefix_len() > 0),
            "the forward listeners' client default: never everyone"
        );
    }

    #[test]
    fn its_keys_are_compiled() {
        let c = parse(
            "kind = \"transparent\"\nallowed_ports = [443, 5432]\npeek_timeout = \"2s\"\npeek_max_bytes = 4096\nhost_must_resolve = false",
        )
        .expect("config");
        let t = c.listeners[0].transparent().expect("transparent").clone();
        assert_eq!(t.allowed_ports, [443, 5432]);
        assert_eq!(t.peek_timeout, Duration::from_secs(2));
        assert_eq!(t.peek_max_bytes, 4096);
        assert!(!t.host_must_resolve);
    }

    #[test]
    fn bad_values_and_keys_of_other_kinds_are_refused_with_their_line() {
        for (listener, want) in [
            (
                "kind = \"transparent\"\npeek_max_bytes = 100",
                "listener[0].peek_max_bytes",
            ),
            (
                "kind = \"transparent\"\npeek_timeout = \"0s\"",
                "listener[0].peek_timeout",
            ),
            (
                "kind = \"transparent\"\nh2 = true",
                "only reverse listeners",
            ),
            (
                "kind = \"transparent\"\nallowed_clients = [\"0.0.0.0/0\"]",
                "open proxy",
            ),
            ("peek_timeout = \"1s\"", "only transparent listeners"),
            (
                "kind = \"reverse\"\nhost_must_resolve = true",
                "only transparent listeners",
            ),
            ("kind = \"sidecar\"", "forward, reverse or transparent"),
        ] {
            let e = parse(listener).expect_err(listener);
            assert!(e.contains(want), "{listener}: {e}");
            assert!(e.contains("test.toml:"), "names the file and line: {e}");
        }
    }
}
