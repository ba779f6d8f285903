//! The `[limits]` keys that bound tunnels, relayed bodies and the idle upstream sets: defaults,
//! accepted values and refusals with file and line.

use std::path::Path;
use std::time::Duration;

use residency_proxy::config::{Config, ConfigError};

const LISTENER: &str = "[[listener]]\nname = \"egress\"\nbind = \"127.0.0.1:0\"\n";

fn parse(limits: &str) -> Result<Config, ConfigError> {
    let text = format!("{LISTENER}\n[limits]\n{limits}\n");
    Config::parse(&text, "test.toml", Path::new("."))
}

#[test]
fn defaults_bound_everything_but_the_tunnel_lifetime() {
    for c in [
        parse("").unwrap_or_else(|e| panic!("{e}")),
        Config::example().unwrap_or_else(|e| panic!("{e}")),
    ] {
        let l = &c.limits;
        assert_eq!(l.max_tunnel_lifetime, None, "off by default");
        assert_eq!(l.body_idle_timeout, Duration::from_secs(60));
        assert_eq!(l.upstream_idle_max, 256);
        assert_eq!(l.upstream_max_connections, 512);
        assert_eq!(l.upstream_idle_timeout, Duration::from_secs(90));
    }
}

#[test]
fn values_are_taken_as_written() {
    let c = parse(
        r#"
max_tunnel_lifetime = "8h"
body_idle_timeout = "250ms"
upstream_idle_max = 0
upstream_max_connections = 0
upstream_idle_timeout = "2m"
"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let l = &c.limits;
    assert_eq!(l.max_tunnel_lifetime, Some(Duration::from_secs(8 * 3600)));
    assert_eq!(l.body_idle_timeout, Duration::from_millis(250));
    assert_eq!(l.upstream_idle_max, 0, "0 keeps no idle connection");
    assert_eq!(l.upstream_max_connections, 0, "0 sets no limit");
    assert_eq!(l.upstream_idle_timeout, Duration::from_secs(120));

    let c = parse(r#"max_tunnel_lifetime = "off""#).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.limits.max_tunnel_lifetime, None);
}

#[test]
fn bad_values_are_refused_with_file_and_line() {
    let cases = [
        (
            r#"max_tunnel_lifetime = "forever""#,
            "limits.max_tunnel_lifetime",
            "\"off\"",
        ),
        (
            r#"max_tunnel_lifetime = "0s""#,
            "limits.max_tunnel_lifetime",
            "greater than zero",
        ),
        (
            r#"body_idle_timeout = "0ms""#,
            "limits.body_idle_timeout",
            "greater than zero",
        ),
        (
            r#"body_idle_timeout = "soon""#,
            "limits.body_idle_timeout",
            "invalid duration",
        ),
        (
            "upstream_idle_max = -1",
            "limits.upstream_idle_max",
            "between 0 and 100000",
        ),
        (
            "upstream_idle_max = 100001",
            "limits.upstream_idle_max",
            "between 0 and 100000",
        ),
        (
            "upstream_max_connections = -2",
            "limits.upstream_max_connections",
            "between 0 and 100000",
        ),
        (
            r#"upstream_idle_timeout = "1d""#,
            "limits.upstream_idle_timeout",
            "invalid duration",
        ),
    ];
    for (line, key, want) in cases {
        let e = match parse(line) {
            Ok(_) => panic!("{line}: accepted"),
            Err(e) => e,
        };
        let msg = e.to_string();
        assert_eq!(e.line, Some(6), "{line}: {msg}");
        assert!(msg.starts_with("test.toml:6:"), "{line}: {msg}");
        assert!(msg.contains(key), "{line}: {msg}");
        assert!(msg.contains(want), "{line}: {msg} (want {want})");
    }
}
