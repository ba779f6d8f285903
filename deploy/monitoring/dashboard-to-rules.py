#!/usr/bin/env python3
"""Write a Grafana dashboard's panel queries as a Prometheus rule file, for `promtool check rules`.

Usage: dashboard-to-rules.py DASHBOARD.json > rules.yml

Grafana's variables are replaced by values PromQL accepts ($__rate_interval and $__interval by
5m, $__range by 1h, every other $variable by .*), so promtool parses each query as Prometheus
would once Grafana has substituted them. Each query becomes one recording rule.
"""

import json
import re
import sys

import yaml


def exprs(node):
    for panel in node.get("panels") or []:
        for target in panel.get("targets") or []:
            if isinstance(target.get("expr"), str):
                yield panel.get("title", ""), target["expr"]
        yield from exprs(panel)


def substitute(expr):
    expr = re.sub(r"\$__(rate_interval|interval)\b", "5m", expr)
    expr = re.sub(r"\$__range\b", "1h", expr)
    return re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?", ".*", expr)


def main(argv):
    if len(argv) != 2:
        print("usage: dashboard-to-rules.py DASHBOARD.json", file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        dashboard = json.load(f)
    rules = [
        {"record": f"dashboard:query{i}", "expr": substitute(e), "labels": {"panel": title}}
        for i, (title, e) in enumerate(exprs(dashboard))
    ]
    if not rules:
        print(f"{argv[1]}: no panel queries", file=sys.stderr)
        return 2
    yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
