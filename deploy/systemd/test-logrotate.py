#!/usr/bin/env python3
"""End-to-end test of residency-proxy.logrotate with the proxy: rotation loses no record.

Usage: test-logrotate.py BINARY

Starts the proxy on loopback with its audit file in a temporary directory, makes one audited
request (to the metadata address: denied, nothing dialled), runs logrotate with this folder's
residency-proxy.logrotate (the path moved to the temporary directory, the postrotate command
pointed at this proxy's PID instead of the systemd unit), makes a second request, and checks
that the rotated file holds the first record, the reopened file the second. Exit 0 or 1.
"""

import glob
import http.client
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, what, seconds=30):
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def denied_request(port, path):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", f"http://169.254.169.254{path}")
    r = c.getresponse()
    r.read()
    if r.status != 403:
        raise RuntimeError(f"expected 403, got {r.status}")


def lines(path):
    """The flow records of an audit file: its lines less the chain's own (`start`, `continue`,
    `checkpoint`), which carry a `kind` key."""
    try:
        with open(path, encoding="utf-8") as f:
            return [l for l in f.read().splitlines() if '"kind":' not in l]
    except FileNotFoundError:
        return []


def main(argv):
    binary = os.path.abspath(argv[1])
    tmp = tempfile.mkdtemp(prefix="residency-proxy-logrotate-")
    audit = os.path.join(tmp, "audit.jsonl")
    port = free_port()
    config = os.path.join(tmp, "proxy.toml")
    with open(config, "w", encoding="utf-8") as f:
        f.write(f'[audit]\noutput = "{audit}"\n\n[[listener]]\nname = "egress"\n'
                f'bind = "127.0.0.1:{port}"\nallowed_clients = ["127.0.0.0/8"]\n')
    log = open(os.path.join(tmp, "proxy.log"), "w", encoding="utf-8")
    proc = subprocess.Popen([binary, "run", "--config", config], stdout=log, stderr=log)
    try:
        def listening():
            if proc.poll() is not None:
                raise RuntimeError(f"proxy exited with {proc.returncode}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False

        wait_for(listening, "the proxy to listen")
        denied_request(port, "/before-rotation")
        wait_for(lambda: len(lines(audit)) >= 1, "the first audit record")

        with open(os.path.join(HERE, "residency-proxy.logrotate"), encoding="utf-8") as f:
            rules = f.read()
        rules = rules.replace("/var/log/residency-proxy/", tmp + "/")
        rules, n = re.subn(r"(?m)^(\s*)systemctl kill .*$", rf"\1kill -USR1 {proc.pid}", rules)
        if n != 1 or tmp not in rules:
            raise RuntimeError("residency-proxy.logrotate: path or postrotate command not found")
        conf = os.path.join(tmp, "logrotate.conf")
        with open(conf, "w", encoding="utf-8") as f:
            f.write(rules)
        subprocess.run(["logrotate", "-f", "-s", os.path.join(tmp, "state"), conf], check=True)
        rotated = [p for p in glob.glob(os.path.join(tmp, "audit.jsonl-*"))]
        if len(rotated) != 1:
            raise RuntimeError(f"expected one rotated file, found {rotated}")
        # The proxy reopens (creates) the file on SIGUSR1; the next record goes there.
        wait_for(lambda: os.path.exists(audit), "the audit file to be reopened")
        denied_request(port, "/after-rotation")
        wait_for(lambda: len(lines(audit)) >= 1, "the second audit record")
        old, new = lines(rotated[0]), lines(audit)
        if len(old) != 1 or len(new) != 1:
            raise RuntimeError(f"rotated file has {len(old)} records, new file {len(new)}: expected 1 and 1")
        # The chain goes on across the rotation: both files verify, in order.
        checked = subprocess.run([binary, "verify", "--no-progress", rotated[0], audit],
                                 capture_output=True, text=True)
        if checked.returncode != 0:
            raise RuntimeError(f"verify of the rotated and reopened files: {checked.stdout.strip()}")
        print(f"logrotate + SIGUSR1: 1 record in {os.path.basename(rotated[0])}, 1 in the reopened file; "
              "both verify in order")
        return 0
    except (OSError, RuntimeError, subprocess.CalledProcessError) as e:
        print(f"logrotate test failed: {e}", file=sys.stderr)
        log.flush()
        print(open(log.name, encoding="utf-8", errors="replace").read()[-3000:], file=sys.stderr)
        return 1
    finally:
        proc.terminate()
        proc.wait(timeout=40)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
