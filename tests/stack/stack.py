"""Deploy infra/template.yaml into a moto server, in the plain CloudFormation form that
infra/stackset.py writes for StackSets (AWS's own SAM transform).

The Lambda's code is a stand-in zip, since moto never runs it. Everything else (the document
with its deploy-time values, the bucket, the rules, the IAM) is what the template says.
Reusable by other tests and the demo:

    outputs = deploy(stack_name, {"AgentSha256X8664": ..., "AgentSha256Aarch64": ...})
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from urllib.parse import urlparse

import boto3

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "infra"))
from stackset import stackset_template  # noqa: E402


# moto never runs the Lambda: every deploy here gives it this as its code.
STAND_IN_BOOTSTRAP = "#!/bin/sh\nexit 1\n"
# The agent's builds, by `uname -m`.
ARCHES = {"x86_64": "symroute-linux-x86_64", "aarch64": "symroute-linux-aarch64"}


def stand_in_code(directory: Path) -> Path:
    """A directory holding the stand-in Lambda `bootstrap`, for a CDK asset."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "bootstrap").write_text(STAND_IN_BOOTSTRAP)
    return directory


def stand_in_agents(dist: Path, marker: Path) -> dict[str, str]:
    """Both agent builds in `make agent`'s dist/ form (with SHA256SUMS), each a script writing its
    arguments to `marker`; returns file name -> SHA-256."""
    dist.mkdir(parents=True, exist_ok=True)
    digests = {}
    for arch, name in ARCHES.items():
        body = f"#!/bin/sh\n# stand-in for {arch}\nprintf '%s\\n' \"$@\" > '{marker}'\n".encode()
        (dist / name).write_bytes(body)
        digests[name] = hashlib.sha256(body).hexdigest()
    (dist / "SHA256SUMS").write_text("".join(f"{d}  {n}\n" for n, d in digests.items()))
    return digests


def _create_stack(stack_name: str, **arguments) -> dict[str, str]:
    """CreateStack in moto (which creates synchronously); the outputs, or why it failed."""
    cfn = boto3.client("cloudformation")
    cfn.create_stack(StackName=stack_name, Capabilities=["CAPABILITY_IAM"], **arguments)
    stack = cfn.describe_stacks(StackName=stack_name)["Stacks"][0]
    if stack["StackStatus"] != "CREATE_COMPLETE":
        raise RuntimeError(f"{stack_name}: {stack['StackStatus']} {stack.get('StackStatusReason')}")
    return {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}


def deploy(stack_name: str, parameters: dict[str, str]) -> dict[str, str]:
    """Create the stack in the moto named by AWS_ENDPOINT_URL; return its outputs."""
    if "AWS_ENDPOINT_URL" not in os.environ:
        raise RuntimeError("AWS_ENDPOINT_URL must point at a local moto server")
    region = boto3.session.Session().region_name
    s3 = boto3.client("s3")
    prefix = f"{stack_name.lower()}-code"
    s3.create_bucket(Bucket=f"{prefix}-{region}")
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("bootstrap", STAND_IN_BOOTSTRAP)
    s3.put_object(Bucket=f"{prefix}-{region}", Key="symroute-lambda.zip", Body=archive.getvalue())
    return _create_stack(
        stack_name,
        TemplateBody=json.dumps(stackset_template()),
        Parameters=[{"ParameterKey": k, "ParameterValue": v}
                    for k, v in {"LambdaCodeBucketPrefix": prefix, **parameters}.items()],
    )


CDK_DIR = ROOT / "infra" / "cdk"


def synth_cdk(out: Path, context: dict[str, str]) -> Path:
    """`cdk synth` of infra/cdk's example app into `out` (built by `make cdk-build`), in a network
    namespace of its own: the CLI's notices, version check and telemetry cannot leave the machine."""
    cli = CDK_DIR / "node_modules" / ".bin" / "cdk"
    if not (CDK_DIR / "example" / "app.js").exists() or not cli.exists():
        raise RuntimeError("infra/cdk is not built: run `make cdk-build`")
    command = ["unshare", "--net", "--map-root-user", str(cli), "synth", "--quiet", "--no-notices",
               "--no-version-reporting", "--output", str(out)]
    command += [f"--context={key}={value}" for key, value in context.items()]
    env = {**os.environ, "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20", "CDK_DISABLE_CLI_TELEMETRY": "true"}
    done = subprocess.run(command, cwd=CDK_DIR, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"cdk synth failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-2000:]}")
    return out


def deploy_cdk(stack_name: str, assembly: Path) -> dict[str, str]:
    """Deploy a synthesized CDK app (a cdk.out with one stack, as infra/cdk/example/app.ts
    writes it) into the moto named by AWS_ENDPOINT_URL, as `cdk deploy` does after `cdk
    bootstrap`: every file asset zipped or copied into the bucket and key its manifest names,
    then the template. Returns the stack's outputs."""
    if "AWS_ENDPOINT_URL" not in os.environ:
        raise RuntimeError("AWS_ENDPOINT_URL must point at a local moto server")
    templates = sorted(assembly.glob("*.template.json"))
    if len(templates) != 1:
        raise RuntimeError(f"{assembly}: expected one stack template, found {len(templates)}")
    template = templates[0]
    manifest = json.loads(template.with_name(template.name.replace(".template.json", ".assets.json")).read_text())
    account = boto3.client("sts").get_caller_identity()["Account"]
    region = boto3.session.Session().region_name
    s3 = boto3.client("s3")
    if manifest.get("dockerImages"):
        raise RuntimeError(f"{assembly}: container image assets cannot be deployed into moto")
    buckets = {b["Name"] for b in s3.list_buckets()["Buckets"]}
    for asset in manifest.get("files", {}).values():
        source = assembly / asset["source"]["path"]
        if asset["source"].get("packaging") == "zip":
            body = io.BytesIO()
            with zipfile.ZipFile(body, "w") as z:
                for path in sorted(source.rglob("*")):
                    if path.is_file():
                        z.write(path, path.relative_to(source))
            data = body.getvalue()
        else:
            data = source.read_bytes()
        for destination in asset["destinations"].values():
            bucket = destination["bucketName"].replace("${AWS::AccountId}", account).replace("${AWS::Region}", region)
            if bucket not in buckets:
                s3.create_bucket(Bucket=bucket)  # what `cdk bootstrap` creates once per account
                buckets.add(bucket)
            s3.put_object(Bucket=bucket, Key=destination["objectKey"], Body=data)
    return _create_stack(stack_name, TemplateBody=template.read_text())


def s3_source(url: str) -> dict[str, bytes]:
    """aws:downloadContent's S3 source, served by moto: https://s3.<region>.<suffix>/<bucket>/<key>.
    A key ending in "/" is a prefix: every object under it, named relative to it (as the SSM
    Agent lists and fetches them); FileNotFoundError when there is none."""
    parsed = urlparse(url)
    if not (parsed.scheme == "https" and parsed.netloc.startswith("s3.")):
        raise ValueError(f"not a path-style S3 URL: {url}")
    bucket, _, key = parsed.path.lstrip("/").partition("/")
    s3 = boto3.client("s3")
    if key.endswith("/"):
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=key).get("Contents", [])
        files = {o["Key"][len(key):]: s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
                 for o in listed if not o["Key"].endswith("/")}
        if not files:
            raise FileNotFoundError(url)
        return files
    try:
        return {key.rsplit("/", 1)[-1]: s3.get_object(Bucket=bucket, Key=key)["Body"].read()}
    except s3.exceptions.NoSuchKey as err:
        raise FileNotFoundError(url) from err
