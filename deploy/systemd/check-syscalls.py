#!/usr/bin/env python3
"""Check the unit's SystemCallFilter against the system calls the proxy makes.

Usage: check-syscalls.py BINARY

Runs `BINARY check` and `BINARY run` under strace (on loopback: an audit file, a forward
listener, a denied request, SIGUSR1 to reopen the audit file, another request, SIGTERM to drain
and stop), collects every system call made by any thread, and expands the filter of
residency-proxy.service with `systemd-analyze syscall-filter`: every call must be in the allowed
sets and none in the denied ones (those would fail with EPERM under systemd). Exit 0 or 1.
"""

import http.client
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def groups():
    out = subprocess.run(["systemd-analyze", "syscall-filter"], capture_output=True, text=True, check=True).stdout
    table, current = {}, None
    for line in out.splitlines():
        if line.startswith("@"):
            current = table.setdefault(line.split()[0], [])
        elif line.strip() and not line.strip().startswith("#") and current is not None:
            current.append(line.split()[0])
    return table


def expand(names, table):
    out = set()
    for name in names:
        out |= expand(table.get(name, []), table) if name.startswith("@") else {name}
    return out


def unit_filter():
    allow, deny = [], []
    with open(os.path.join(HERE, "residency-proxy.service"), encoding="utf-8") as f:
        for line in f:
            m = re.match(r"SystemCallFilter=(~?)(.*)", line.strip())
            if m:
                (deny if m.group(1) else allow).extend(m.group(2).split())
    return allow, deny


def syscalls(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        return {m.group(1) for line in f if (m := re.match(r"\d+\s+([a-z0-9_]+)\(", line))}


def request(port):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "http://169.254.169.254/")
    c.getresponse().read()


def main(argv):
    binary = os.path.abspath(argv[1])
    tmp = tempfile.mkdtemp(prefix="residency-proxy-syscalls-")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = os.path.join(tmp, "proxy.toml")
    with open(config, "w", encoding="utf-8") as f:
        f.write(f'[audit]\noutput = "audit.jsonl"\n\n[[listener]]\nname = "egress"\n'
                f'bind = "127.0.0.1:{port}"\nallowed_clients = ["127.0.0.0/8"]\n')
    check_trace, run_trace = os.path.join(tmp, "check.strace"), os.path.join(tmp, "run.strace")
    subprocess.run(["strace", "-f", "-qq", "-o", check_trace, binary, "check", config],
                   check=True, capture_output=True)
    tracer = subprocess.Popen(["strace", "-f", "-qq", "-o", run_trace, binary, "run", "--config", config],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or tracer.poll() is not None:
                    raise RuntimeError("the proxy did not start listening under strace")
                time.sleep(0.1)
        with open(f"/proc/{tracer.pid}/task/{tracer.pid}/children", encoding="utf-8") as f:
            proxy = int(f.read().split()[0])
        request(port)
        os.kill(proxy, 10)  # SIGUSR1: reopen the audit file
        request(port)
        os.kill(proxy, 15)  # SIGTERM: drain and exit
        tracer.wait(timeout=60)
    except (OSError, RuntimeError, ValueError, IndexError, subprocess.TimeoutExpired) as e:
        tracer.kill()
        print(f"syscall check failed: {e}", file=sys.stderr)
        return 1
    used = syscalls(check_trace) | syscalls(run_trace)
    table = groups()
    allow_names, deny_names = unit_filter()
    allowed, denied = expand(allow_names, table), expand(deny_names, table)
    outside = sorted(used - allowed)
    refused = sorted(used & denied)
    if outside:
        print(f"not in {' '.join(allow_names)}: {' '.join(outside)}", file=sys.stderr)
    if refused:
        print(f"in the denied {' '.join(deny_names)}: {' '.join(refused)}", file=sys.stderr)
    if outside or refused:
        return 1
    print(f"{len(used)} system calls made by check and run, all allowed by the unit's SystemCallFilter")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
