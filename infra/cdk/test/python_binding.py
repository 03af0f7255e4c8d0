"""The construct as a Python CDK app uses it: the wheel jsii-pacmak built, installed with the
Python aws-cdk-lib, synthesizing a stack (make test-cdk runs it in a network namespace of its
own). Exits non-zero, naming what differs, when the binding does not behave like the TypeScript."""
import json
import sys
import tempfile
from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from symroute_cdk import AssociationOptions, Symroute

work = Path(tempfile.mkdtemp(prefix="symroute-python-binding-"))
code = work / "code"
code.mkdir()
(code / "bootstrap").write_text("#!/bin/sh\nexit 1\n")

app = cdk.App(outdir=str(work / "out"))
stack = cdk.Stack(app, "PythonBinding",
                  synthesizer=cdk.DefaultStackSynthesizer(generate_bootstrap_version_rule=False))
symroute = Symroute(stack, "Symroute", agent_sha256_x8664="a" * 64, agent_sha256_aarch64="b" * 64,
                    code=lambda_.Code.from_asset(str(code)), create_trail=True,
                    association=AssociationOptions(tag_key="symroute"))
role = iam.Role(stack, "InstanceRole", assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"))
symroute.grant_agent_read(role)

problems = []
try:
    Symroute(stack, "Bad", agent_sha256_x8664="XYZ", agent_sha256_aarch64="b" * 64,
             code=lambda_.Code.from_asset(str(code)))
    problems.append("a malformed digest was accepted")
except Exception as error:  # jsii raises the JavaScript error as a Python exception
    if "agentSha256X8664 must be 64 lowercase hex digits" not in str(error):
        problems.append(f"a malformed digest was refused with {error}")
stack.node.try_remove_child("Bad")

app.synth()
template = json.loads((work / "out" / "PythonBinding.template.json").read_text())
types = sorted(r["Type"] for r in template["Resources"].values())
want = {"AWS::Events::Rule": 5, "AWS::SSM::Document": 1, "AWS::SSM::Association": 1,
        "AWS::CloudTrail::Trail": 1, "AWS::S3::Bucket": 2, "AWS::Lambda::Function": 1,
        "AWS::IAM::Policy": 1}
for kind, count in want.items():
    if types.count(kind) != count:
        problems.append(f"{types.count(kind)} {kind}, want {count}")
document = next(r for r in template["Resources"].values() if r["Type"] == "AWS::SSM::Document")
if "sha_x86_64='" + "a" * 64 + "'" not in json.dumps(document):
    problems.append("the document does not carry the x86_64 digest")
if problems:
    print("python binding: " + "; ".join(problems), file=sys.stderr)
    sys.exit(1)
print(f"python binding: {len(types)} resources synthesized from Python, as from TypeScript")
