//! Configuration: the embedded example, a full file, and refusals of bad files with file, line,
//! key path and value.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use residency_proxy::config::{AuditOutput, Config, ConfigError};
use residency_proxy::jurisdiction::Jurisdiction;
use residency_proxy::policy::{Action, Class, HostPattern, Mode};

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|n| n.parse().expect("test CIDR")).collect()
}

const DEFAULT_CLIENTS: [&str; 6] = [
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "fc00::/7",
];

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, "test.toml", Path::new("."))
}

#[test]
fn the_example_compiles_with_the_defaults() {
    let c = Config::example().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.source, "config/residency-proxy.toml");
    assert_eq!(c.listeners.len(), 1);
    let l = &c.listeners[0];
    assert_eq!(l.name, "egress");
    assert_eq!(l.kind.as_str(), "forward");
    assert_eq!(l.bind, "127.0.0.1:3128".parse::<SocketAddr>().unwrap());
    assert_eq!(l.mode, Mode::Enforce);
    assert_eq!(l.allowed_clients, nets(&DEFAULT_CLIENTS));
    assert_eq!(
        l.forward().expect("a forward listener").allowed_ports,
        vec![80, 443]
    );
    assert_eq!(l.max_connections, 10_000);
    assert_eq!(&*c.profile.name, "uk-adequate");
    assert_eq!(c.jurisdiction.geoip, None);
    assert!(c.jurisdiction.overrides.is_empty());
    assert!(c.jurisdiction.aws_ranges.is_empty());
    assert_eq!(c.resolver_timeout, Duration::from_secs(5));
    assert_eq!(c.audit.output, AuditOutput::Stdout);
    assert_eq!(c.audit.queue, 10_000);
    assert_eq!(c.audit.full_wait, Duration::from_millis(50));
    assert_eq!(c.limits.header_read_timeout, Duration::from_secs(10));
    assert_eq!(c.limits.keepalive_idle_timeout, Duration::from_secs(60));
    assert_eq!(c.limits.connect_timeout, Duration::from_secs(5));
    assert_eq!(c.limits.tunnel_idle_timeout, Duration::from_secs(300));
    assert_eq!(c.limits.upstream_response_timeout, Duration::from_secs(60));
    assert_eq!(c.limits.max_header_bytes, 65_536);
    assert_eq!(c.limits.drain_timeout, Duration::from_secs(30));
    assert!(c.policy.rules.is_empty());
    assert!(c.policy.attestations.is_empty());
    assert!(c.policy.internal_allowed.is_empty());
    assert_eq!(c.policy.unknown, Action::Deny);
}

#[test]
fn a_minimal_file_gets_the_same_defaults_as_the_example() {
    let min = parse("[[listener]]\nname = \"egress\"\nbind = \"127.0.0.1:3128\"\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let ex = Config::example().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        format!("{:?}", min.listeners),
        format!("{:?}", ex.listeners)
    );
    assert_eq!(min.jurisdiction, ex.jurisdiction);
    assert_eq!(min.profile.name, ex.profile.name);
    assert_eq!(min.resolver_timeout, ex.resolver_timeout);
    assert_eq!(min.audit, ex.audit);
    assert_eq!(min.limits, ex.limits);
    assert_eq!(min.policy.unknown, ex.policy.unknown);
}

const FULL: &str = r#"
[jurisdiction]
profile = "profiles/uk-only.toml"
geoip = "/var/lib/geo/country.mmdb"
overrides = ["overrides.csv", "/etc/residency/more.toml"]
aws_ranges = ["ip-ranges.json"]

[resolver]
timeout = "250ms"

[audit]
output = "audit/audit.jsonl"
queue = 42
full_wait = "2m"

[limits]
header_read_timeout = "1s"
keepalive_idle_timeout = "2s"
connect_timeout = "3s"
tunnel_idle_timeout = "1h"
upstream_response_timeout = "4s"
max_header_bytes = 8192
drain_timeout = "5s"

[[listener]]
name = "egress"
kind = "forward"
bind = "127.0.0.1:3128"
mode = "enforce"
allowed_clients = ["10.1.0.0/16"]
allowed_ports = [443]
max_connections = 7

[[listener]]
name = "shadow_2"
bind = "[::1]:0"
mode = "report"

[policy]
unknown = "allow"
internal_allowed = ["10.20.0.0/16", "fd00:1::/48"]

[[policy.rule]]
id = "partners"
action = "allow"
mode = "report"
listeners = ["egress", "shadow_2"]
clients = ["10.1.0.0/16"]
hosts = ["*.nhs.uk", "API.Example.org.", "*.Bücher.Example"]
ports = [443, 8443]
classes = ["conditional", "not-adequate"]
jurisdictions = ["US", "metadata", "gr"]
destinations = ["52.0.0.0/8"]

[[policy.rule]]
id = "no-ru"
action = "deny"

[[policy.attestation]]
host = "*.example-dpf.com"
organisation = "Example Inc."
basis = "UK Extension to the EU-US DPF (SI 2023/1028); DPF list entry checked 2026-10-01"
"#;

#[test]
fn a_full_file_compiles_to_the_expected_values() {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let c = Config::parse(FULL, "full.toml", &base).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.source, "full.toml");
    assert_eq!(&*c.profile.name, "uk-only");
    assert_eq!(
        c.jurisdiction.geoip,
        Some(PathBuf::from("/var/lib/geo/country.mmdb"))
    );
    assert_eq!(
        c.jurisdiction.overrides,
        vec![
            base.join("overrides.csv"),
            PathBuf::from("/etc/residency/more.toml")
        ]
    );
    assert_eq!(c.jurisdiction.aws_ranges, vec![base.join("ip-ranges.json")]);
    assert_eq!(c.resolver_timeout, Duration::from_millis(250));
    assert_eq!(
        c.audit.output,
        AuditOutput::File(base.join("audit/audit.jsonl"))
    );
    assert_eq!(c.audit.queue, 42);
    assert_eq!(c.audit.full_wait, Duration::from_secs(120));
    assert_eq!(c.limits.header_read_timeout, Duration::from_secs(1));
    assert_eq!(c.limits.keepalive_idle_timeout, Duration::from_secs(2));
    assert_eq!(c.limits.connect_timeout, Duration::from_secs(3));
    assert_eq!(c.limits.tunnel_idle_timeout, Duration::from_secs(3600));
    assert_eq!(c.limits.upstream_response_timeout, Duration::from_secs(4));
    assert_eq!(c.limits.max_header_bytes, 8192);
    assert_eq!(c.limits.drain_timeout, Duration::from_secs(5));

    assert_eq!(c.listeners.len(), 2);
    let (a, b) = (&c.listeners[0], &c.listeners[1]);
    assert_eq!(a.name, "egress");
    assert_eq!(a.kind.as_str(), "forward");
    assert_eq!(a.bind, "127.0.0.1:3128".parse::<SocketAddr>().unwrap());
    assert_eq!(a.mode, Mode::Enforce);
    assert_eq!(a.allowed_clients, nets(&["10.1.0.0/16"]));
    assert_eq!(
        a.forward().expect("a forward listener").allowed_ports,
        vec![443]
    );
    assert_eq!(a.max_connections, 7);
    assert_eq!(b.name, "shadow_2");
    assert_eq!(b.bind, "[::1]:0".parse::<SocketAddr>().unwrap());
    assert_eq!(b.mode, Mode::Report);
    assert_eq!(b.allowed_clients, nets(&DEFAULT_CLIENTS));
    assert_eq!(
        b.forward().expect("a forward listener").allowed_ports,
        vec![80, 443]
    );
    assert_eq!(b.max_connections, 10_000);

    let p = &c.policy;
    assert_eq!(p.unknown, Action::Allow);
    assert_eq!(p.internal_allowed, nets(&["10.20.0.0/16", "fd00:1::/48"]));
    assert_eq!(p.rules.len(), 2);
    let r = &p.rules[0];
    assert_eq!(&*r.id, "partners");
    assert_eq!(r.action, Action::Allow);
    assert_eq!(r.mode, Some(Mode::Report));
    assert_eq!(r.listeners, vec!["egress", "shadow_2"]);
    assert_eq!(r.clients, nets(&["10.1.0.0/16"]));
    assert_eq!(
        r.hosts,
        vec![
            HostPattern::Suffix("nhs.uk".into()),
            HostPattern::Exact("api.example.org".into()),
            HostPattern::Suffix("xn--bcher-kva.example".into())
        ]
    );
    assert_eq!(r.ports, vec![443, 8443]);
    assert_eq!(r.classes, vec![Class::Conditional, Class::NotAdequate]);
    let codes: Vec<_> = ["US", "metadata", "GR"]
        .iter()
        .map(|c| Jurisdiction::from_code(c).unwrap())
        .collect();
    assert_eq!(r.jurisdictions, codes);
    assert_eq!(r.destinations, nets(&["52.0.0.0/8"]));
    let r = &p.rules[1];
    assert_eq!(&*r.id, "no-ru");
    assert_eq!(r.action, Action::Deny);
    assert_eq!(r.mode, None);
    assert!(r.listeners.is_empty() && r.hosts.is_empty() && r.jurisdictions.is_empty());
    assert_eq!(p.attestations.len(), 1);
    let a = &p.attestations[0];
    assert_eq!(a.host, HostPattern::Suffix("example-dpf.com".into()));
    assert_eq!(a.organisation, "Example Inc.");
    assert!(a.basis.starts_with("UK Extension"));
}

/// A listener table to put in front of a bad fragment (3 lines).
const LISTENER: &str = "[[listener]]\nname = \"egress\"\nbind = \"127.0.0.1:3128\"\n";

/// Bad files: `(text, line, substrings the one-line message must contain)`.
fn bad_files() -> Vec<(String, usize, Vec<&'static str>)> {
    let l = |rest: &str| format!("{LISTENER}{rest}");
    vec![
        // Unknown keys, at the top, in a table and in an array of tables.
        (
            l("bogus = 1\n"),
            4,
            vec!["test.toml:4: ", "listener[0].bogus: unknown field `bogus`"],
        ),
        (
            format!("[limits]\nmax_header_byte = 9000\n{LISTENER}"),
            2,
            vec!["limits.max_header_byte: unknown field `max_header_byte`"],
        ),
        (
            format!("colour = \"blue\"\n{LISTENER}"),
            1,
            vec!["test.toml:1: colour: unknown field `colour`"],
        ),
        // Types.
        (
            l("max_connections = \"many\"\n"),
            4,
            vec![
                "listener[0].max_connections: invalid type",
                "expected an integer",
                "'\"many\"'",
            ],
        ),
        (
            l("allowed_ports = [443, \"80\"]\n"),
            4,
            vec!["listener[0].allowed_ports[1]: invalid type", "('\"80\"')"],
        ),
        // Listener checks.
        (
            l("allowed_clients = [\"10.0.0.0/8\", \"10.0.0.1/33\"]\n"),
            4,
            vec![
                "listener[0].allowed_clients[1]: invalid CIDR",
                "('10.0.0.1/33')",
            ],
        ),
        (
            l("allowed_clients = [\"10.0.0.1/8\"]\n"),
            4,
            vec!["listener[0].allowed_clients[0]: '10.0.0.1/8' has host bits set"],
        ),
        (
            l("allowed_clients = [\"0.0.0.0/0\"]\n"),
            4,
            vec![
                "test.toml:4: listener[0].allowed_clients[0]: would make an open proxy",
                "('0.0.0.0/0')",
            ],
        ),
        (
            l("allowed_clients = [\"::1/128\",\n  \"::/0\"]\n"),
            5,
            vec![
                "listener[0].allowed_clients[1]: would make an open proxy",
                "('::/0')",
            ],
        ),
        (
            l("allowed_clients = []\n"),
            4,
            vec![
                "listener[0].allowed_clients: an empty list would make an open proxy",
                "('[]')",
            ],
        ),
        (
            l("allowed_ports = [0]\n"),
            4,
            vec!["listener[0].allowed_ports[0]: invalid port (expected 1 to 65535) ('0')"],
        ),
        (
            l("allowed_ports = [443, 70000]\n"),
            4,
            vec!["listener[0].allowed_ports[1]: invalid port", "('70000')"],
        ),
        (
            l("allowed_ports = []\n"),
            4,
            vec!["listener[0].allowed_ports: an empty list allows no port"],
        ),
        (
            l("max_connections = 0\n"),
            4,
            vec!["listener[0].max_connections: must be between 1 and 1000000 ('0')"],
        ),
        (
            format!("{LISTENER}\n[[listener]]\nname = \"egress\"\nbind = \"127.0.0.1:3129\"\n"),
            6,
            vec![
                "listener[1].name: duplicate listener name (already used by listener[0]) ('egress')",
            ],
        ),
        (
            format!("{LISTENER}\n[[listener]]\nname = \"second\"\nbind = \"127.0.0.1:3128\"\n"),
            7,
            vec!["listener[1].bind: address already used by listener[0] ('127.0.0.1:3128')"],
        ),
        (
            "[[listener]]\nname = \"Egress!\"\nbind = \"127.0.0.1:3128\"\n".to_string(),
            2,
            vec!["listener[0].name: invalid listener name", "('Egress!')"],
        ),
        (
            "[[listener]]\nname = \"egress\"\nbind = \"localhost:3128\"\n".to_string(),
            3,
            vec![
                "listener[0].bind: invalid bind address",
                "('localhost:3128')",
            ],
        ),
        (
            l("kind = \"sidecar\"\n"),
            4,
            vec![
                "listener[0].kind: unknown listener kind (expected forward, reverse or transparent) ('sidecar')",
            ],
        ),
        (
            l("mode = \"shadow\"\n"),
            4,
            vec!["listener[0].mode: invalid mode (expected enforce or report) ('shadow')"],
        ),
        (
            "[[listener]]\nname = \"egress\"\n".to_string(),
            1,
            vec!["test.toml:1: listener[0].bind: required key is missing"],
        ),
        // Policy.
        (
            l(
                "[[policy.rule]]\nid = \"a\"\naction = \"allow\"\nlisteners = [\"egress\", \"ingress\"]\n",
            ),
            7,
            vec!["policy.rule[0].listeners[1]: no such listener (configured: egress) ('ingress')"],
        ),
        (
            l(
                "[[policy.rule]]\nid = \"a\"\naction = \"allow\"\n\n[[policy.rule]]\nid = \"a\"\naction = \"deny\"\n",
            ),
            9,
            vec!["policy.rule[1].id: duplicate rule id (already used by policy.rule[0]) ('a')"],
        ),
        (
            l("[[policy.rule]]\nid = \"\"\naction = \"allow\"\n"),
            5,
            vec!["policy.rule[0].id: rule id must not be empty"],
        ),
        (
            l("[[policy.rule]]\naction = \"allow\"\n"),
            4,
            vec!["policy.rule[0].id: required key is missing"],
        ),
        (
            l("[[policy.rule]]\nid = \"a\"\naction = \"permit\"\n"),
            6,
            vec!["policy.rule[0].action: invalid action (expected allow or deny) ('permit')"],
        ),
        (
            l(
                "[[policy.rule]]\nid = \"a\"\naction = \"allow\"\n\n[[policy.rule]]\nid = \"b\"\naction = \"deny\"\nclasses = [\"home\", \"inadequate\"]\n",
            ),
            11,
            vec!["policy.rule[1].classes[1]: unknown class", "('inadequate')"],
        ),
        (
            l("[[policy.rule]]\nid = \"a\"\naction = \"deny\"\njurisdictions = [\"UK\"]\n"),
            7,
            vec![
                "policy.rule[0].jurisdictions[0]: unknown jurisdiction",
                "the UK is GB",
                "('UK')",
            ],
        ),
        (
            l("[[policy.rule]]\nid = \"a\"\naction = \"deny\"\nhosts = [\"*\"]\n"),
            7,
            vec!["policy.rule[0].hosts[0]: invalid host pattern", "('*')"],
        ),
        // Host patterns are names, normalised like request hosts; addresses go in destinations.
        (
            l("[[policy.rule]]\nid = \"a\"\naction = \"allow\"\nhosts = [\"10.0.0.5\"]\n"),
            7,
            vec![
                "policy.rule[0].hosts[0]: 10.0.0.5 is an IP address, not a host name",
                "destinations = [\"10.0.0.5/32\"]",
                "('10.0.0.5')",
            ],
        ),
        (
            l(
                "[[policy.rule]]\nid = \"a\"\naction = \"allow\"\nhosts = [\"api.example.org\", \"[::1]\"]\n",
            ),
            7,
            vec!["policy.rule[0].hosts[1]: ::1 is an IP address", "/128"],
        ),
        (
            l("[[policy.rule]]\nid = \"a\"\naction = \"allow\"\nhosts = [\"*.10.0.0.5\"]\n"),
            7,
            vec!["policy.rule[0].hosts[0]: 10.0.0.5 is an IP address"],
        ),
        (
            l("[[policy.rule]]\nid = \"a\"\naction = \"allow\"\nhosts = [\"bad_name!.example\"]\n"),
            7,
            vec![
                "policy.rule[0].hosts[0]: invalid host pattern",
                "('bad_name!.example')",
            ],
        ),
        (
            l("[[policy.rule]]\nid = \"a\"\naction = \"allow\"\nhosts = [\"0x7f.1\"]\n"),
            7,
            vec![
                "policy.rule[0].hosts[0]: invalid host pattern",
                "('0x7f.1')",
            ],
        ),
        (
            l("[[policy.attestation]]\nhost = \"8.8.8.8\"\norganisation = \"o\"\nbasis = \"b\"\n"),
            5,
            vec!["policy.attestation[0].host: 8.8.8.8 is an IP address"],
        ),
        // Networks that cover a whole family between them make an open proxy too.
        (
            l("allowed_clients = [\"0.0.0.0/1\", \"128.0.0.0/1\"]\n"),
            4,
            vec![
                "test.toml:4: listener[0].allowed_clients: these networks together cover all of IPv4",
                "open proxy",
            ],
        ),
        (
            l("allowed_clients = [\"127.0.0.0/8\",\n  \"::/1\", \"8000::/2\", \"c000::/2\"]\n"),
            4,
            vec!["listener[0].allowed_clients: these networks together cover all of IPv6"],
        ),
        (
            l("[[policy.rule]]\nid = \"a\"\naction = \"deny\"\nhosts = []\n"),
            7,
            vec!["policy.rule[0].hosts: empty list (remove the key to match anything) ('[]')"],
        ),
        (
            l("[[policy.rule]]\nid = \"a\"\naction = \"deny\"\ndestinations = [\"52.0.0.0\"]\n"),
            7,
            vec![
                "policy.rule[0].destinations[0]: invalid CIDR",
                "('52.0.0.0')",
            ],
        ),
        (
            l("[policy]\nunknown = \"maybe\"\n"),
            5,
            vec!["policy.unknown: invalid action (expected allow or deny) ('maybe')"],
        ),
        (
            l(
                "[[policy.attestation]]\nhost = \"*.example.com\"\norganisation = \" \"\nbasis = \"DPF\"\n",
            ),
            6,
            vec!["policy.attestation[0].organisation: organisation must not be empty"],
        ),
        // Durations and sizes.
        (
            l("[resolver]\ntimeout = \"5 parsecs\"\n"),
            5,
            vec!["resolver.timeout: invalid duration", "('5 parsecs')"],
        ),
        (
            l("[limits]\ndrain_timeout = \"0s\"\n"),
            5,
            vec!["limits.drain_timeout: duration must be greater than zero ('0s')"],
        ),
        (
            l("[audit]\nfull_wait = \"1.5s\"\n"),
            5,
            vec!["audit.full_wait: invalid duration", "('1.5s')"],
        ),
        (
            l("[limits]\nmax_header_bytes = 100\n"),
            5,
            vec!["limits.max_header_bytes: must be between 8192 and 1048576 ('100')"],
        ),
        (
            l("[audit]\nqueue = 0\n"),
            5,
            vec!["audit.queue: must be between 1 and 10000000 ('0')"],
        ),
        // Jurisdiction data.
        (
            format!("[jurisdiction]\nprofile = \"uk-strict\"\n{LISTENER}"),
            2,
            vec![
                "test.toml:2: jurisdiction.profile: no such profile",
                "('uk-strict')",
            ],
        ),
        (
            format!("[jurisdiction]\nprofile = \"no/such/profile.toml\"\n{LISTENER}"),
            2,
            vec![
                "jurisdiction.profile: cannot load profile",
                "('no/such/profile.toml')",
            ],
        ),
        (
            format!("[jurisdiction]\noverrides = [\"a.csv\", \"b.txt\"]\n{LISTENER}"),
            2,
            vec!["jurisdiction.overrides[1]: overrides file must end in .csv or .toml ('b.txt')"],
        ),
        // TOML syntax.
        (
            format!("{LISTENER}max_connections = 10\nmode = \"enforce\n"),
            5,
            vec![
                "test.toml:5: listener[0].mode: invalid basic string",
                "('\"enforce')",
            ],
        ),
        (
            "[[listener]]\nname = \"egress\"\nbind = 127.0.0.1:3128\n".to_string(),
            3,
            vec!["test.toml:3: listener[0].bind: ", "('127.0.0.1:3128')"],
        ),
        (
            l("max_connections = 99999999999999999999\n"),
            4,
            vec!["listener[0].max_connections: integer out of range"],
        ),
        (
            format!("[limits\n{LISTENER}"),
            1,
            vec!["test.toml:1: ", "unclosed table"],
        ),
        (
            format!("{LISTENER}[limits]\nconnect_timeout = \"1s\"\nconnect_timeout = \"2s\"\n"),
            6,
            vec!["test.toml:6: limits.connect_timeout: duplicate key"],
        ),
        // Listeners are required.
        (
            "[resolver]\ntimeout = \"1s\"\n".to_string(),
            0,
            vec!["test.toml: listener: at least one [[listener]] is required"],
        ),
    ]
}

#[test]
fn bad_files_are_refused_with_line_key_and_value() {
    let mut failures = Vec::new();
    for (text, line, wants) in bad_files() {
        match parse(&text) {
            Ok(_) => failures.push(format!("accepted:\n{text}")),
            Err(e) => {
                let msg = e.to_string();
                let want_line = (line != 0).then_some(line);
                if e.line != want_line
                    || !wants.iter().all(|w| msg.contains(w))
                    || msg.contains('\n')
                    || e.file != "test.toml"
                {
                    failures.push(format!(
                        "line {:?} (want {want_line:?}): {msg}\n  want {wants:?}\n  in:\n{text}",
                        e.line
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn error_fields_are_filled_in() {
    let e = parse(&format!("{LISTENER}allowed_ports = [70000]\n")).unwrap_err();
    assert_eq!(e.file, "test.toml");
    assert_eq!(e.line, Some(4));
    assert_eq!(e.key, "listener[0].allowed_ports[0]");
    assert_eq!(e.value.as_deref(), Some("70000"));
    assert_eq!(
        e.to_string(),
        "test.toml:4: listener[0].allowed_ports[0]: invalid port (expected 1 to 65535) ('70000')"
    );
}

#[test]
fn an_unreadable_file_names_the_path() {
    let e = Config::load(Path::new("/no/such/dir/residency-proxy.toml")).unwrap_err();
    assert_eq!(e.file, "/no/such/dir/residency-proxy.toml");
    assert_eq!(e.line, None);
    assert!(
        e.to_string()
            .starts_with("/no/such/dir/residency-proxy.toml: cannot read")
    );
}

#[test]
fn load_resolves_paths_against_the_file_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("proxy.toml");
    let text = format!("[audit]\noutput = \"audit.log\"\n{LISTENER}");
    std::fs::write(&path, text).expect("write");
    let c = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c.audit.output,
        AuditOutput::File(dir.path().join("audit.log"))
    );
    assert_eq!(c.source, path.display().to_string());
}
