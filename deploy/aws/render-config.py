#!/usr/bin/env python3
"""Print the residency-proxy configuration that gateway-vpc.yaml's launch template writes,
with the template's parameter defaults, so `residency-proxy check` can validate it.

Usage: render-config.py gateway-vpc.yaml > residency-proxy.toml
"""

import re
import sys
import textwrap

import yaml


class Loader(yaml.SafeLoader):
    pass


# CloudFormation short forms (!Ref, !Sub, ...) as plain data.
def _tag(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {suffix: value}


Loader.add_multi_constructor("!", _tag)


def main(argv):
    with open(argv[1], encoding="utf-8") as f:
        template = yaml.load(f, Loader=Loader)
    defaults = {k: v.get("Default") for k, v in template["Parameters"].items()}
    data = template["Resources"]["ProxyLaunchTemplate"]["Properties"]["LaunchTemplateData"]
    script, variables = data["UserData"]["Fn::Base64"]["Sub"]
    m = re.search(r"<<'TOML'\n(.*?)\nTOML\n", script, re.S)
    if not m:
        print("no <<'TOML' here-document in the launch template's user data", file=sys.stderr)
        return 1
    values = dict(defaults)
    values["AWS::StackName"] = "residency-proxy"
    for name, join in variables.items():
        sep, items = join["Join"]
        values[name] = sep.join(defaults[items["Ref"]].split(","))

    def sub(match):
        key = match.group(1)
        if key not in values or values[key] is None:
            raise KeyError(f"no value for ${{{key}}}")
        return str(values[key])

    print(re.sub(r"\$\{([A-Za-z0-9:]+)\}", sub, textwrap.dedent(m.group(1))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
