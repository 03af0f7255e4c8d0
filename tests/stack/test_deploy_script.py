"""infra/deploy.sh (what `make deploy` runs) against a real moto server. The SAM CLI is the one
stand-in: it records its calls, and its `deploy` creates the stack in moto from the same
template (infra/stackset.py's transformed form), as CloudFormation would."""
import hashlib
import json
import os
import subprocess
import sys

import boto3
import pytest
import yaml

from conftest import ROOT

FAKE_SAM = '''#!{python}
import json, sys
sys.path.insert(0, {stack_dir!r})
import boto3, stack
args, seen = sys.argv[1:], None
if args[0] == "deploy":
    name = args[args.index("--stack-name") + 1]
    overrides = dict(a.split("=", 1) for a in args[args.index("--parameter-overrides") + 1:])
    cfn = boto3.client("cloudformation")
    if name in [s["StackName"] for s in cfn.list_stacks()["StackSummaries"]]:
        # What the bucket holds when the stack (and its document) would change.
        outputs = cfn.describe_stacks(StackName=name)["Stacks"][0]["Outputs"]
        bucket = next(o["OutputValue"] for o in outputs if o["OutputKey"] == "AgentBucket")
        seen = sorted(o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket).get("Contents", []))
    else:
        stack.deploy(name, overrides)
with open({log!r}, "a") as log:
    log.write(json.dumps({{"args": args, "bucket_keys_at_deploy": seen}}) + "\\n")
'''


@pytest.fixture
def aws(moto_server, monkeypatch):
    for key in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(key)
    for key, value in moto_server.items():
        monkeypatch.setenv(key, value)


def make_dist(path, tag):
    path.mkdir()
    lines = []
    for name in ["symroute-linux-x86_64", "symroute-linux-aarch64"]:
        body = f"#!/bin/sh\n# {tag} {name}\n".encode()
        (path / name).write_bytes(body)
        lines.append(f"{hashlib.sha256(body).hexdigest()}  {name}")
    (path / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    return {n: d for d, n in (l.split("  ") for l in lines)}


def deploy(tmp_path, dist, stack_name):
    sam = tmp_path / "sam"
    log = tmp_path / "sam.log"
    sam.write_text(FAKE_SAM.format(python=sys.executable, stack_dir=str(ROOT / "tests" / "stack"), log=str(log)))
    sam.chmod(0o755)
    zip_file = tmp_path / "symroute-lambda-arm64.zip"
    zip_file.write_bytes(b"PK\x05\x06" + b"\0" * 18)
    env = dict(os.environ, STACK_NAME=stack_name, SAM=str(sam), PY=sys.executable, AGENT_DIST=str(dist),
               LAMBDA_ZIP=str(zip_file), STACK_PARAMETERS="SkipTag=team:no-symroute")
    proc = subprocess.run([str(ROOT / "infra" / "deploy.sh")], env=env, capture_output=True, text=True)
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return proc, calls


def release(digests):
    prefix = f"agent/{digests['symroute-linux-x86_64']}-{digests['symroute-linux-aarch64']}/"
    return {prefix + name for name in digests}


def test_first_deploy_creates_disabled_uploads_then_enables(aws, tmp_path):
    """Nothing may send a command naming an agent the bucket does not hold yet."""
    first = make_dist(tmp_path / "dist1", "v1")
    proc, calls = deploy(tmp_path, tmp_path / "dist1", "symroute-deploy")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "does not exist yet" in proc.stdout
    # No `sam build`: the template points at the zip `make lambda` built; no beta features.
    assert [c["args"][0] for c in calls] == ["deploy", "deploy"], calls
    assert not [c for c in calls if "--beta-features" in c["args"]]
    create, enable = (c["args"] for c in calls)
    for call in (create, enable):
        assert call[call.index("--template-file") + 1] == "infra/template.yaml"
        assert call[call.index("--capabilities") + 1] == "CAPABILITY_IAM"
    overrides = create[create.index("--parameter-overrides") + 1:]
    assert overrides == [f"AgentSha256X8664={first['symroute-linux-x86_64']}",
                         f"AgentSha256Aarch64={first['symroute-linux-aarch64']}", "SkipTag=team:no-symroute",
                         "Enabled=false"]
    assert enable[-1] == "Enabled=true"
    # When the stack was enabled, the agent was already in its bucket.
    assert set(calls[1]["bucket_keys_at_deploy"]) == release(first)

    outputs = {o["OutputKey"]: o["OutputValue"] for o in
               boto3.client("cloudformation").describe_stacks(StackName="symroute-deploy")["Stacks"][0]["Outputs"]}
    bucket = outputs["AgentBucket"]
    s3 = boto3.client("s3")
    for key in release(first):
        name = key.rsplit("/", 1)[-1]
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == (tmp_path / "dist1" / name).read_bytes()
    doc = yaml.safe_load(boto3.client("ssm").get_document(Name=outputs["DocumentName"])["Content"])
    assert f"sha_x86_64='{first['symroute-linux-x86_64']}'" in doc["mainSteps"][1]["inputs"]["runCommand"]
    assert "AgentBucket" in proc.stdout and bucket in proc.stdout

    # A new agent: its objects are in the bucket before the stack (and its document) change.
    second = make_dist(tmp_path / "dist2", "v2")
    (tmp_path / "sam.log").unlink()
    proc, calls = deploy(tmp_path, tmp_path / "dist2", "symroute-deploy")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(calls) == 1 and calls[0]["args"][-1] == "Enabled=true", calls
    at_deploy = set(calls[0]["bucket_keys_at_deploy"])
    assert at_deploy == release(first) | release(second), "the new agent was not in the bucket before the update"
    assert {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]} == release(first) | release(second)


def test_refuses_without_the_lambda_zip(aws, tmp_path):
    make_dist(tmp_path / "dist", "v1")
    sam = tmp_path / "sam"
    sam.write_text("#!/bin/sh\ntouch " + str(tmp_path / "sam-ran") + "\n")
    sam.chmod(0o755)
    env = dict(os.environ, STACK_NAME="symroute-nozip", SAM=str(sam), PY=sys.executable,
               AGENT_DIST=str(tmp_path / "dist"), LAMBDA_ZIP=str(tmp_path / "absent.zip"))
    proc = subprocess.run([str(ROOT / "infra" / "deploy.sh")], env=env, capture_output=True, text=True)
    assert proc.returncode != 0 and "make lambda" in proc.stderr, proc.stderr
    assert not (tmp_path / "sam-ran").exists()


def test_refuses_a_dist_that_does_not_match_its_sums(aws, tmp_path):
    make_dist(tmp_path / "dist", "v1")
    (tmp_path / "dist" / "symroute-linux-x86_64").write_bytes(b"swapped")
    proc, calls = deploy(tmp_path, tmp_path / "dist", "symroute-refused")
    assert proc.returncode != 0
    assert "SHA256SUMS says" in proc.stderr
    assert calls == [], "SAM ran although the agent did not match its digests"
