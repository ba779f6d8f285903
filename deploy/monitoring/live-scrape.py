#!/usr/bin/env python3
"""Scrape a running residency-proxy's /metrics after traffic of every kind, for the metric checks.

Usage: live-scrape.py BINARY OUT.prom

Everything stays on loopback: a local HTTP origin (in this process), a configuration with a
forward listener, a TLS reverse listener (certificate made here with openssl) and the admin
listener, each on a port the OS picked. Through the proxy it sends an absolute-form forward
request, a CONNECT tunnel carrying a request, a reverse request over TLS, and a request to the
cloud metadata address (denied before anything is dialled); then POST /-/reload, and writes
GET /metrics to OUT.prom.

Exit status: 0 done; 77 when the binary refuses the [admin] table (a build without the admin
listener: nothing to scrape); 1 on any other failure.
"""

import http.client
import http.server
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

SKIP = 77


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Origin(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"origin\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def wait_ready(admin, proc, deadline):
    """Poll /readyz until 200 or the deadline; the proxy exiting ends the wait at once."""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"proxy exited with {proc.returncode} before it was ready")
        try:
            c = http.client.HTTPConnection("127.0.0.1", admin, timeout=2)
            c.request("GET", "/readyz")
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("proxy not ready within 60 s")


def expect(status, want, what):
    if status != want:
        raise RuntimeError(f"{what}: status {status}, expected {want}")
    print(f"  {what}: {status}")


def main(argv):
    if len(argv) != 3:
        print("usage: live-scrape.py BINARY OUT.prom", file=sys.stderr)
        return 1
    binary, out = os.path.abspath(argv[1]), argv[2]
    tmp = tempfile.mkdtemp(prefix="residency-proxy-scrape-")
    origin = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Origin)
    threading.Thread(target=origin.serve_forever, daemon=True).start()
    oport = origin.server_address[1]
    fwd, rev, admin = free_port(), free_port(), free_port()

    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "30", "-keyout", key, "-out", cert, "-subj", "/CN=app.test",
         "-addext", "subjectAltName=DNS:app.test"],
        check=True, capture_output=True)
    config = os.path.join(tmp, "scrape.toml")
    with open(config, "w", encoding="utf-8") as f:
        f.write(f"""
[audit]
output = "audit.jsonl"

[admin]
bind = "127.0.0.1:{admin}"

[[listener]]
name = "egress"
bind = "127.0.0.1:{fwd}"
allowed_clients = ["127.0.0.0/8"]
allowed_ports = [80, {oport}]

[[listener]]
name = "inbound"
kind = "reverse"
bind = "127.0.0.1:{rev}"
default_pool = "app"

[[listener.cert]]
chain = "cert.pem"
key = "key.pem"

[[pool]]
name = "app"
members = ["127.0.0.1:{oport}"]

[policy]
internal_allowed = ["127.0.0.0/8"]
""")
    check = subprocess.run([binary, "check", config], capture_output=True, text=True)
    if check.returncode != 0:
        if "unknown field `admin`" in check.stderr:
            print("this build has no [admin] table (admin listener): no /metrics to scrape")
            return SKIP
        print(check.stderr, file=sys.stderr)
        return 1

    log = open(os.path.join(tmp, "proxy.log"), "w", encoding="utf-8")
    proc = subprocess.Popen([binary, "run", "--config", config], stdout=log, stderr=log)
    try:
        wait_ready(admin, proc, time.monotonic() + 60)

        # Forward: absolute-form request.
        c = http.client.HTTPConnection("127.0.0.1", fwd, timeout=10)
        c.request("GET", f"http://127.0.0.1:{oport}/")
        r = c.getresponse()
        r.read()
        expect(r.status, 200, "forward GET")

        # CONNECT: a tunnel, then a request through it.
        c = http.client.HTTPConnection("127.0.0.1", fwd, timeout=10)
        c.set_tunnel("127.0.0.1", oport)
        c.request("GET", "/")
        r = c.getresponse()
        r.read()
        expect(r.status, 200, "GET through a CONNECT tunnel")

        # Denied: the metadata endpoint, refused before anything is dialled.
        c = http.client.HTTPConnection("127.0.0.1", fwd, timeout=10)
        c.request("GET", "http://169.254.169.254/latest/meta-data/")
        r = c.getresponse()
        r.read()
        expect(r.status, 403, "forward GET to the metadata address")

        # Reverse: TLS, SNI app.test, routed to the origin.
        ctx = ssl.create_default_context(cafile=cert)
        ctx.check_hostname = True
        with socket.create_connection(("127.0.0.1", rev), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="app.test") as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
        expect(int(data.split(b" ", 2)[1]), 200, "reverse GET over TLS")

        for path, want in (("/healthz", 200), ("/readyz", 200)):
            c = http.client.HTTPConnection("127.0.0.1", admin, timeout=10)
            c.request("GET", path)
            r = c.getresponse()
            r.read()
            expect(r.status, want, f"admin GET {path}")
        c = http.client.HTTPConnection("127.0.0.1", admin, timeout=10)
        c.request("POST", "/-/reload")
        r = c.getresponse()
        r.read()
        expect(r.status, 200, "admin POST /-/reload")

        c = http.client.HTTPConnection("127.0.0.1", admin, timeout=10)
        c.request("GET", "/metrics")
        r = c.getresponse()
        body = r.read()
        expect(r.status, 200, "admin GET /metrics")
        with open(out, "wb") as f:
            f.write(body)
        print(f"  {len(body.splitlines())} lines scraped to {out}")
        return 0
    except (OSError, RuntimeError, ValueError, IndexError) as e:
        print(f"live scrape failed: {e}", file=sys.stderr)
        log.flush()
        with open(log.name, encoding="utf-8", errors="replace") as f:
            print(f.read()[-4000:], file=sys.stderr)
        return 1
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
        origin.shutdown()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
