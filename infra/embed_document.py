#!/usr/bin/env python3
"""Embed ssm-documents/symroute.yaml and eventbridge/*.json into infra/template.yaml.

CloudFormation cannot read a local file, so the template carries copies, each between
`# BEGIN embedded <path>` and `# END embedded <path>`; this script writes them (`make stack-embed`)
and tests/stack checks they never drift. Patterns (JSON is YAML) go in as they are, except that a
JSON string that is a whole placeholder "@@Name@@" becomes {"Ref": "Name"} (the pattern for the
command status names the stack's own document). In the document, every @@Name@@ placeholder
turns into ${Name} inside Fn::Sub, resolved at deploy time; AgentBucket comes from the
template's bucket choice (own bucket or a central one).
"""
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "infra" / "template.yaml"
MARKER = re.compile(r"^\s*# (BEGIN|END) embedded (\S+)$")
PLACEHOLDER = re.compile(r"@@([A-Za-z0-9:]+)@@")
# Values that are not a parameter or pseudo parameter get a Fn::Sub variable map.
SUB_VARIABLES = {"AgentBucket": {"Fn::If": ["CreateArtifactBucket", {"Ref": "ArtifactBucket"}, {"Ref": "AgentBucketName"}]}}


class Sub:
    def __init__(self, text):
        self.text = text


def to_cfn(node):
    if isinstance(node, dict):
        return {k: to_cfn(v) for k, v in node.items()}
    if isinstance(node, list):
        return [to_cfn(v) for v in node]
    if isinstance(node, str) and PLACEHOLDER.search(node):
        return Sub(node)
    return node


def represent_sub(dumper, sub):
    text = sub.text.replace("${", "${!")
    names = PLACEHOLDER.findall(text)
    text = PLACEHOLDER.sub(lambda m: "${" + m.group(1) + "}", text)
    variables = {n: SUB_VARIABLES[n] for n in dict.fromkeys(names) if n in SUB_VARIABLES}
    if not variables:
        return dumper.represent_scalar("!Sub", text)
    return dumper.represent_dict({"Fn::Sub": [text, variables]})


class Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data):
        return True


Dumper.add_representer(Sub, represent_sub)


def render(path, indent):
    source = ROOT / path
    if source.suffix == ".json":
        text = re.sub(r'"@@([A-Za-z0-9]+)@@"', r'{"Ref": "\1"}', source.read_text())
    else:
        content = to_cfn(yaml.safe_load(source.read_text()))
        text = yaml.dump(content, Dumper=Dumper, sort_keys=False, width=1000, default_flow_style=False)
    return ["" if not line else " " * indent + line + "\n" for line in text.splitlines()]


def main():
    out, skipping = [], False
    for line in TEMPLATE.read_text().splitlines(keepends=True):
        marker = MARKER.match(line)
        if marker and marker.group(1) == "END":
            skipping = False
        if not skipping:
            out.append(line)
        if marker and marker.group(1) == "BEGIN":
            out.extend(render(marker.group(2), len(line) - len(line.lstrip())))
            skipping = True
            print(f"embedded {marker.group(2)}", file=sys.stderr)
    TEMPLATE.write_text("".join(out))


if __name__ == "__main__":
    main()
