#!/usr/bin/env python3
"""Upload the agent binaries to the artifact bucket under one release prefix,
agent/<sha256 x86_64>-<sha256 aarch64>/<file>.

The SSM document downloads that whole prefix (one step, so a build missing for the other CPU
cannot fail a command) and verifies its own CPU's file against the digest in the prefix's name:
an upload never replaces what a deployed document points at. Refuses when dist/agent does not match its SHA256SUMS, and sends each
object's SHA-256 so S3 itself rejects a corrupted upload.

  upload_agent.py --dist dist/agent --bucket NAME
  upload_agent.py --dist dist/agent --stack NAME [--if-stack-exists]
  upload_agent.py --dist dist/agent --parameters     # prints the template's digest parameters
"""
import argparse
import base64
import hashlib
import sys
from pathlib import Path

FILES = {"symroute-linux-x86_64": "AgentSha256X8664", "symroute-linux-aarch64": "AgentSha256Aarch64"}


def fail(message):
    print(f"upload_agent: {message}", file=sys.stderr)
    sys.exit(1)


def digests(dist: Path) -> dict[str, str]:
    sums_file = dist / "SHA256SUMS"
    if not sums_file.is_file():
        fail(f"{sums_file} is missing: run `make agent` first")
    listed = {}
    for line in sums_file.read_text().splitlines():
        digest, _, name = line.partition("  ")
        listed[name.lstrip("*")] = digest
    for name in FILES:
        if name not in listed:
            fail(f"{sums_file} does not list {name}")
        actual = hashlib.sha256((dist / name).read_bytes()).hexdigest()
        if actual != listed[name]:
            fail(f"{dist / name} has SHA-256 {actual}, SHA256SUMS says {listed[name]}")
    return {name: listed[name] for name in FILES}


def stack_bucket(stack: str, if_exists: bool):
    import boto3
    from botocore.exceptions import ClientError

    try:
        found = boto3.client("cloudformation").describe_stacks(StackName=stack)["Stacks"][0]
    except ClientError as err:
        if if_exists and "does not exist" in str(err):
            return None
        raise
    outputs = {o["OutputKey"]: o["OutputValue"] for o in found.get("Outputs", [])}
    if "AgentBucket" not in outputs:
        fail(f"stack {stack} has no AgentBucket output")
    return outputs["AgentBucket"]


def release_prefix(sums: dict[str, str]) -> str:
    """The S3 prefix the document downloads: both digests, in the template's parameter order."""
    return "agent/" + "-".join(sums[name] for name in FILES) + "/"


def upload(bucket: str, dist: Path, sums: dict[str, str]):
    import boto3
    from botocore.exceptions import ClientError

    s3 = boto3.client("s3")
    prefix = release_prefix(sums)
    for name, digest in sums.items():
        key = prefix + name
        try:
            s3.head_object(Bucket=bucket, Key=key)
            print(f"s3://{bucket}/{key} already there")
            continue
        except ClientError as err:
            if err.response["Error"]["Code"] not in ("404", "NoSuchKey", "NotFound"):
                raise
        s3.put_object(Bucket=bucket, Key=key, Body=(dist / name).read_bytes(),
                      ChecksumSHA256=base64.b64encode(bytes.fromhex(digest)).decode())
        print(f"uploaded s3://{bucket}/{key}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dist", type=Path, required=True)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--bucket")
    where.add_argument("--stack")
    where.add_argument("--parameters", action="store_true")
    parser.add_argument("--if-stack-exists", action="store_true")
    args = parser.parse_args()
    sums = digests(args.dist)
    if args.parameters:
        print(" ".join(f"{FILES[name]}={digest}" for name, digest in sums.items()))
        return
    bucket = args.bucket or stack_bucket(args.stack, args.if_stack_exists)
    if bucket is None:
        print(f"stack {args.stack} does not exist yet: uploading after it is created")
        return
    upload(bucket, args.dist, sums)


if __name__ == "__main__":
    main()
