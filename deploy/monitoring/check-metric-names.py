#!/usr/bin/env python3
"""Check that every residency_proxy_* metric named in alert rules and Grafana dashboards exists.

Usage: check-metric-names.py SCRAPE FILE...

SCRAPE is a /metrics scrape in the Prometheus text format. Each FILE is a Prometheus rule file
(.yml/.yaml: every rule's `expr`) or a Grafana dashboard (.json: every panel target's `expr`
and every templating variable's `query`/`definition`). A name used in a query exists when the
scrape has a sample of that name, or a family of that name (`# TYPE`) whose type allows it: a
histogram's `_bucket`, `_sum` and `_count`, a summary's `_sum` and `_count`, a counter family
written without `_total`. The bare name of a histogram has no series and is not accepted.

Exit status: 0 when every name exists, 1 when one does not (each is listed with the files
using it), 2 on a usage or parse error, or when a FILE names no residency_proxy_* metric at all
(a check over nothing would pass for the wrong reason).
"""

import json
import re
import sys

import yaml

NAME = re.compile(r"\bresidency_proxy_[A-Za-z0-9_]+")
SUFFIXES = {
    "histogram": ("_bucket", "_sum", "_count"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "summary": ("_sum", "_count"),
    "counter": ("_total",),
}


def scrape_names(path):
    """The metric names a query may use against this scrape."""
    names, families = set(), {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            if line.startswith("#"):
                parts = line.split()
                if len(parts) >= 4 and parts[1] == "TYPE":
                    families[parts[2]] = parts[3]
                continue
            m = re.match(r"[A-Za-z_:][A-Za-z0-9_:]*", line)
            if not m:
                raise ValueError(f"{path}:{lineno}: not a sample line: {line[:80]}")
            names.add(m.group(0))
    for family, kind in families.items():
        if kind in ("histogram", "gaugehistogram", "summary"):
            names.update(family + s for s in SUFFIXES[kind])
        else:
            names.add(family)
            names.update(family + s for s in SUFFIXES.get(kind, ()))
    return names


def rule_exprs(path):
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    if not isinstance(doc, dict) or not isinstance(doc.get("groups"), list):
        raise ValueError(f"{path}: not a Prometheus rule file (no `groups` list)")
    for group in doc["groups"]:
        for rule in group.get("rules") or []:
            expr = rule.get("expr")
            if isinstance(expr, str):
                yield expr


def dashboard_exprs(path):
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)

    def panels(node):
        for panel in node.get("panels") or []:
            yield panel
            yield from panels(panel)  # rows hold their panels

    for panel in panels(doc):
        for target in panel.get("targets") or []:
            if isinstance(target.get("expr"), str):
                yield target["expr"]
    for var in (doc.get("templating") or {}).get("list") or []:
        for key in ("query", "definition"):
            value = var.get(key)
            if isinstance(value, dict):
                value = value.get("query")
            if isinstance(value, str):
                yield value


def main(argv):
    if len(argv) < 3:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    try:
        known = scrape_names(argv[1])
        used = {}
        for path in argv[2:]:
            exprs = dashboard_exprs(path) if path.endswith(".json") else rule_exprs(path)
            found = {n for e in exprs for n in NAME.findall(e)}
            if not found:
                print(f"{path}: names no residency_proxy_* metric", file=sys.stderr)
                return 2
            for name in found:
                used.setdefault(name, []).append(path)
    except (OSError, ValueError, yaml.YAMLError) as e:
        print(e, file=sys.stderr)
        return 2
    missing = sorted(n for n in used if n not in known)
    for name in missing:
        print(f"{name}: not in {argv[1]} (used in {', '.join(used[name])})", file=sys.stderr)
    if missing:
        print(f"{len(missing)} of {len(used)} metric names missing from the scrape", file=sys.stderr)
        return 1
    print(f"{len(used)} metric names in {len(argv) - 2} files, all in {argv[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
