#!/usr/bin/env python3
"""Check that the rendered Kubernetes objects refer to each other correctly.

Usage: check-references.py RENDERED.yaml...   (the output of `kubectl kustomize deploy/kubernetes`)

Schema validation cannot see these: every Service, PodDisruptionBudget, NetworkPolicy and
PodMonitor selector selects some Deployment's pods in its namespace, and the ports they name
(by name or number) are container ports of those pods; an HPA targets an existing Deployment;
a pod's volumes name existing ConfigMaps, its mounts existing volumes, its service account an
existing ServiceAccount, and its probes named ports. Exit 1 listing every broken reference.
"""

import sys

import yaml


def main(paths):
    objs = [o for p in paths for o in yaml.safe_load_all(open(p, encoding="utf-8")) if o]
    errors = []
    by_kind = {}
    for o in objs:
        o.setdefault("metadata", {}).setdefault("namespace", "default")
        by_kind.setdefault(o["kind"], []).append(o)

    def names(kind, ns):
        return {o["metadata"]["name"] for o in by_kind.get(kind, []) if o["metadata"]["namespace"] == ns}

    def pods(ns, selector):
        """Pod templates of the Deployments in ns whose labels match selector."""
        out = []
        for d in by_kind.get("Deployment", []):
            labels = d["spec"]["template"]["metadata"].get("labels", {})
            if d["metadata"]["namespace"] == ns and all(labels.get(k) == v for k, v in selector.items()):
                out.append(d["spec"]["template"]["spec"])
        return out

    def ports(pod_specs):
        named, numbers = set(), set()
        for spec in pod_specs:
            for c in spec["containers"]:
                for p in c.get("ports", []):
                    named.add(p.get("name"))
                    numbers.add(p["containerPort"])
        return named, numbers

    def check_selected(what, ns, selector, port_refs):
        selected = pods(ns, selector)
        if not selected:
            errors.append(f"{what}: selector {selector} selects no pods in {ns}")
            return
        named, numbers = ports(selected)
        for ref in port_refs:
            if ref not in (numbers if isinstance(ref, int) else named):
                errors.append(f"{what}: port {ref!r} is not a container port of the selected pods")

    for o in objs:
        kind, ns, name = o["kind"], o["metadata"]["namespace"], o["metadata"]["name"]
        what = f"{kind}/{ns}/{name}"
        spec = o.get("spec", {})
        if kind == "Service":
            check_selected(what, ns, spec["selector"], [p.get("targetPort", p["port"]) for p in spec["ports"]])
        elif kind == "PodDisruptionBudget":
            check_selected(what, ns, spec["selector"]["matchLabels"], [])
        elif kind == "PodMonitor":
            check_selected(what, ns, spec["selector"]["matchLabels"], [e["port"] for e in spec["podMetricsEndpoints"]])
        elif kind == "HorizontalPodAutoscaler":
            if spec["scaleTargetRef"]["name"] not in names(spec["scaleTargetRef"]["kind"], ns):
                errors.append(f"{what}: scale target {spec['scaleTargetRef']['name']} does not exist")
        elif kind == "NetworkPolicy":
            sel = spec["podSelector"].get("matchLabels", {})
            if sel:
                refs = [p["port"] for r in spec.get("ingress", []) for p in r.get("ports", [])]
                check_selected(what, ns, sel, refs)
            for rule in spec.get("egress", []):
                for peer in rule.get("to", []):
                    peer_ns = peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
                    peer_pods = peer.get("podSelector", {}).get("matchLabels")
                    if peer_ns in names("Namespace", "default") and peer_pods:
                        check_selected(f"{what} egress to {peer_ns}", peer_ns, peer_pods,
                                       [p["port"] for p in rule.get("ports", [])])
        elif kind == "Deployment":
            pod = spec["template"]["spec"]
            volumes = {v["name"]: v for v in pod.get("volumes", [])}
            for v in volumes.values():
                if "configMap" in v and v["configMap"]["name"] not in names("ConfigMap", ns):
                    errors.append(f"{what}: volume {v['name']} names a missing ConfigMap {v['configMap']['name']}")
            sa = pod.get("serviceAccountName")
            if sa and sa not in names("ServiceAccount", ns):
                errors.append(f"{what}: service account {sa} does not exist")
            named, _ = ports([pod])
            for c in pod["containers"]:
                for m in c.get("volumeMounts", []):
                    if m["name"] not in volumes:
                        errors.append(f"{what}: container {c['name']} mounts a missing volume {m['name']}")
                for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                    port = c.get(probe, {}).get("httpGet", {}).get("port")
                    if isinstance(port, str) and port not in named:
                        errors.append(f"{what}: {probe} of {c['name']} names a missing port {port}")
    for e in errors:
        print(e, file=sys.stderr)
    if errors:
        return 1
    print(f"{len(objs)} objects, references consistent")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
