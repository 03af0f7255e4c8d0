"""infra/upload_agent.py (the upload half of `make deploy`) against a real moto server."""
import hashlib
import json
import os
import subprocess
import sys

import boto3
import pytest

from conftest import ROOT

UPLOAD = ROOT / "infra" / "upload_agent.py"
FILES = ["symroute-linux-x86_64", "symroute-linux-aarch64"]


@pytest.fixture
def dist(tmp_path):
    d = tmp_path / "agent"
    d.mkdir()
    lines = []
    for name in FILES:
        body = f"binary for {name} {tmp_path}".encode()
        (d / name).write_bytes(body)
        lines.append(f"{hashlib.sha256(body).hexdigest()}  {name}")
    (d / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    return d


@pytest.fixture
def aws(moto_server, monkeypatch):
    for key in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(key)
    for key, value in moto_server.items():
        monkeypatch.setenv(key, value)
    return moto_server


def upload(*args):
    env = {k: v for k, v in os.environ.items()}
    return subprocess.run([sys.executable, UPLOAD, *args], env=env, capture_output=True, text=True)


def sums(dist):
    return dict(reversed(line.split("  ")) for line in (dist / "SHA256SUMS").read_text().splitlines())


def test_uploads_under_the_digest_and_only_once(aws, dist, tmp_path):
    s3 = boto3.client("s3")
    bucket = f"agent-{tmp_path.name}".lower().replace("_", "-")[:60]
    s3.create_bucket(Bucket=bucket)
    first = upload("--dist", str(dist), "--bucket", bucket)
    assert first.returncode == 0, first.stderr
    digests = sums(dist)
    prefix = f"agent/{digests['symroute-linux-x86_64']}-{digests['symroute-linux-aarch64']}/"
    for name in FILES:
        body = s3.get_object(Bucket=bucket, Key=prefix + name)["Body"].read()
        assert body == (dist / name).read_bytes()
    again = upload("--dist", str(dist), "--bucket", bucket)
    assert again.returncode == 0 and again.stdout.count("already there") == 2, again.stdout


def test_refuses_a_dist_that_does_not_match_its_sums(aws, dist, tmp_path):
    bucket = f"tampered-{tmp_path.name}".lower().replace("_", "-")[:60]
    boto3.client("s3").create_bucket(Bucket=bucket)
    (dist / FILES[0]).write_bytes(b"something else")
    proc = upload("--dist", str(dist), "--bucket", bucket)
    assert proc.returncode == 1 and "SHA256SUMS says" in proc.stderr
    assert boto3.client("s3").list_objects_v2(Bucket=bucket).get("KeyCount") == 0


def test_finds_the_bucket_through_the_stack_output(aws, dist, tmp_path):
    stack = f"symroute-{tmp_path.name}".replace("_", "-")[:100]
    template = {"Resources": {"B": {"Type": "AWS::S3::Bucket"}},
                "Outputs": {"AgentBucket": {"Value": {"Ref": "B"}}}}
    cfn = boto3.client("cloudformation")
    cfn.create_stack(StackName=stack, TemplateBody=json.dumps(template))
    outputs = cfn.describe_stacks(StackName=stack)["Stacks"][0]["Outputs"]
    bucket = outputs[0]["OutputValue"]
    proc = upload("--dist", str(dist), "--stack", stack)
    assert proc.returncode == 0, proc.stderr
    keys = {o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket)["Contents"]}
    digests = sums(dist)
    prefix = f"agent/{digests[FILES[0]]}-{digests[FILES[1]]}/"
    assert keys == {prefix + n for n in FILES}


def test_a_stack_not_yet_created_is_fine_when_asked(aws, dist):
    proc = upload("--dist", str(dist), "--stack", "symroute-absent", "--if-stack-exists")
    assert proc.returncode == 0 and "does not exist yet" in proc.stdout, proc.stderr
    assert upload("--dist", str(dist), "--stack", "symroute-absent").returncode != 0


def test_prints_the_template_parameters(dist):
    proc = upload("--dist", str(dist), "--parameters")
    s = sums(dist)
    assert proc.stdout.split() == [f"AgentSha256X8664={s['symroute-linux-x86_64']}",
                                   f"AgentSha256Aarch64={s['symroute-linux-aarch64']}"]
