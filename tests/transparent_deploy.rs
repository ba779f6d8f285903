//! The transparent deployment files agree with the code and with each other: the sidecar
//! configuration compiles, the Kubernetes example redirects to the port the listeners bind and
//! exempts the uid the proxy runs as, and the redirect script parses. (The script's rules
//! themselves run in `tests/transparent_netns.rs`.)

use std::path::Path;
use std::process::Command;

use residency_proxy::config::Config;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/transparent");

fn read(name: &str) -> String {
    std::fs::read_to_string(Path::new(DIR).join(name))
        .unwrap_or_else(|e| panic!("read deploy/transparent/{name}: {e}"))
}

/// The value of the env entry `name` in the manifest (`- name: NAME` then `value: "..."`).
fn env_value(manifest: &str, name: &str) -> String {
    let mut lines = manifest.lines().map(str::trim);
    lines
        .find(|l| *l == format!("- name: {name}"))
        .unwrap_or_else(|| panic!("{name} is set in sidecar.yaml"));
    let value = lines.next().expect("a value line");
    value
        .strip_prefix("value: ")
        .unwrap_or_else(|| panic!("{name}: {value}"))
        .trim_matches('"')
        .to_string()
}

#[test]
fn the_sidecar_configuration_compiles_to_transparent_listeners_on_the_redirect_port() {
    let config = Config::load(&Path::new(DIR).join("residency-proxy.toml")).expect("compiles");
    let manifest = read("sidecar.yaml");
    let port: u16 = env_value(&manifest, "PROXY_PORT").parse().expect("a port");
    let binds: Vec<String> = config
        .listeners
        .iter()
        .map(|l| l.bind.to_string())
        .collect();
    assert_eq!(binds, ["127.0.0.1:15001", "[::1]:15001"]);
    for l in &config.listeners {
        let t = l.transparent().expect("a transparent listener");
        assert_eq!(
            l.bind.port(),
            port,
            "{} binds the port the rules redirect to",
            l.name
        );
        assert!(t.host_must_resolve);
    }
}

#[test]
fn the_kubernetes_example_exempts_the_proxys_uid_the_admin_port_and_dns() {
    let manifest = read("sidecar.yaml");
    let uid = env_value(&manifest, "PROXY_UID");
    let proxy = manifest
        .split("- name: residency-proxy\n")
        .nth(1)
        .expect("the proxy container");
    let run_as = proxy
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("runAsUser: "))
        .expect("the proxy's runAsUser");
    assert_eq!(
        run_as, uid,
        "the redirect exempts the uid the proxy runs as"
    );
    assert_eq!(env_value(&manifest, "EXCLUDE_PORTS"), "9090");
    let script = read("residency-redirect.sh");
    assert!(script.contains("--dport 53 -j RETURN"), "DNS stays direct");
    assert!(script.contains("--uid-owner \"$PROXY_UID\" -j RETURN"));
    let kustomization = read("kustomization.yaml");
    for file in [
        "residency-redirect.sh",
        "residency-proxy.toml",
        "sidecar.yaml",
    ] {
        assert!(
            kustomization.contains(file),
            "kustomization.yaml names {file}"
        );
    }
}

#[test]
fn the_redirect_script_parses_and_refuses_a_bad_mode() {
    let script = Path::new(DIR).join("residency-redirect.sh");
    let syntax = Command::new("sh")
        .arg("-n")
        .arg(&script)
        .status()
        .expect("run sh");
    assert!(syntax.success());
    let bad = Command::new("sh")
        .arg(&script)
        .arg("sideways")
        .output()
        .expect("run the script");
    assert_eq!(bad.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("residency-redirect.sh sidecar"));
}
