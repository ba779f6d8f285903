#![allow(dead_code)] // not every test file uses every helper
//! Network namespaces for end-to-end tests of traffic the kernel redirects: namespaces, veth
//! pairs and iptables rules made by the test under names unique to it, removed when dropped,
//! and threads that run inside a namespace.
//!
//! Everything here needs root and the `ip` (iproute2) and `iptables` commands; [`missing`]
//! says what is absent so a test can skip with a clear message instead of failing.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use nix::sched::{CloneFlags, setns};

/// Why namespace tests cannot run here, if they cannot: not root, or a command missing.
pub fn missing(commands: &[&str]) -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok();
    let root = uid.is_some_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root {
        return Some("they need root (network namespaces and iptables)".into());
    }
    let absent: Vec<&str> = commands
        .iter()
        .copied()
        .filter(|c| {
            Command::new("sh")
                .args(["-c", &format!("command -v {c}")])
                .stdout(Stdio::null())
                .status()
                .map_or(true, |s| !s.success())
        })
        .collect();
    if !absent.is_empty() {
        return Some(format!("missing commands: {}", absent.join(", ")));
    }
    None
}

/// A name unique to this process and call: `{prefix}{pid}x{n}`, short enough for an
/// interface name (15 bytes) when `prefix` is at most 3 bytes.
pub fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let pid = std::process::id() % 1_000_000;
    format!("{prefix}{pid}x{}", N.fetch_add(1, Ordering::SeqCst))
}

/// Run `program args`, returning its output (whatever its status).
pub fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

/// Run `program args`; panic with its stderr unless it succeeds.
pub fn must(program: &str, args: &[&str]) {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace, deleted (with its interfaces and rules) on drop, together with the
/// per-namespace `/etc/netns/NAME/` files `ip netns exec` mounts over `/etc`.
pub struct Netns {
    /// Its name.
    pub name: String,
}

impl Netns {
    /// Create `name` with its loopback up.
    pub fn add(name: &str) -> Netns {
        must("ip", &["netns", "add", name]);
        let ns = Netns { name: name.into() };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n NAME args`.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        must("ip", &all);
    }

    /// `ip netns exec NAME program args`, checked.
    pub fn must(&self, program: &str, args: &[&str]) {
        let mut all = vec!["netns", "exec", self.name.as_str(), program];
        all.extend_from_slice(args);
        must("ip", &all);
    }

    /// `ip netns exec NAME program args` with `env` set, checked.
    pub fn must_env(&self, env: &[(&str, &str)], program: &str, args: &[&str]) {
        let out = self
            .command(program)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
        assert!(
            out.status.success(),
            "{program} {} in {}: {}",
            args.join(" "),
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `ip netns exec NAME program args`, its output whatever its status.
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        let mut all = vec!["netns", "exec", self.name.as_str(), program];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// A command that runs `program` inside the namespace (to spawn).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", self.name.as_str(), program]);
        c
    }

    /// Write `/etc/netns/NAME/FILE`, which `ip netns exec` mounts over `/etc/FILE` (`hosts`,
    /// `resolv.conf`) for the commands it runs.
    pub fn etc(&self, file: &str, contents: &str) {
        let dir = self.etc_dir();
        std::fs::create_dir_all(&dir).expect("create /etc/netns/NAME");
        std::fs::write(dir.join(file), contents).expect("write a per-namespace /etc file");
    }

    fn etc_dir(&self) -> PathBuf {
        PathBuf::from("/etc/netns").join(&self.name)
    }

    /// Run `f` on a new thread whose network namespace is this one (every socket it, and any
    /// thread it starts, opens is in the namespace), and return its handle.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = PathBuf::from("/run/netns").join(&self.name);
        std::thread::spawn(move || {
            let ns = File::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
            setns(&ns, CloneFlags::CLONE_NEWNET).expect("enter the network namespace");
            f()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.name]);
        let _ = std::fs::remove_dir_all(self.etc_dir());
    }
}

/// Connect namespaces `a` and `b` with a veth pair named `{base}a` / `{base}b`, addresses
/// `a_addrs` on `a`'s end and `b_addrs` on `b`'s (IPv6 ones without duplicate address
/// detection, so they are usable at once), both ends up.
pub fn veth(base: &str, a: &Netns, a_addrs: &[&str], b: &Netns, b_addrs: &[&str]) {
    let (ea, eb) = (format!("{base}a"), format!("{base}b"));
    must(
        "ip",
        &[
            "link", "add", &ea, "netns", &a.name, "type", "veth", "peer", "name", &eb, "netns",
            &b.name,
        ],
    );
    for (ns, end, addrs) in [(a, &ea, a_addrs), (b, &eb, b_addrs)] {
        for addr in addrs {
            if addr.contains(':') {
                ns.ip(&["addr", "add", addr, "dev", end, "nodad"]);
            } else {
                ns.ip(&["addr", "add", addr, "dev", end]);
            }
        }
        ns.ip(&["link", "set", end, "up"]);
    }
}
