#!/usr/bin/env python3
"""A stand-in for the SSM Agent of one instance, for `make demo` and the end-to-end tests.

It polls the local moto (AWS_ENDPOINT_URL) for commands sent to its instance, takes the
document from SSM as deployed, and runs it as the SSM Agent would (tests/stack/ssmdoc.py:
parameter checks, ENV_VAR interpolation, aws:downloadContent from moto's S3) with the shell
steps inside the instance's network namespace and its own filesystem view (see INSTANCE_FS),
so an agent that persists never touches this host.

moto keeps no command results, so each finished command is one JSON line on stdout:
{"command_id", "parameters", "exit_code", "steps": [{"name", "exit_code"}], "stdout", "stderr"}.
It stops when stdin closes.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import subprocess
import threading
from pathlib import Path

import boto3
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "stack"))
import ssmdoc  # noqa: E402
import stack  # noqa: E402
from run_document import NETWORK_CONFIG  # noqa: E402

# The instance's own filesystem: the agent persists what it does (systemd units, udev rules,
# its own copy under /var/lib), which on this machine would land in the host's. One holder
# process keeps a mount namespace in which /etc and /var/lib are copy-on-write over a tmpfs and
# the network configuration directories are empty; every command runs in it (nsenter), so what
# one command persists the next one sees, as on a real instance, and the host sees nothing.
INSTANCE_FS = ('s=$1; shift; mount -t tmpfs symroute-instance "$s" || exit 125; '
               'for d in /etc /var/lib; do n=$(printf %s "$d" | tr / _); '
               'mkdir -p "$s/u$n" "$s/w$n" && mount -t overlay symroute-instance '
               '-o "lowerdir=$d,upperdir=$s/u$n,workdir=$s/w$n" "$d" || exit 125; done; '
               'for d in "$@"; do [ -d "$d" ] && mount -t tmpfs symroute-instance "$d"; done; '
               'echo ready; exec sleep infinity')


def instance_fs(netns: str, scratch: Path) -> subprocess.Popen:
    scratch.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(["ip", "netns", "exec", netns, "unshare", "-m", "--propagation", "private",
                               "sh", "-c", INSTANCE_FS, "instance-fs", str(scratch), *NETWORK_CONFIG],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    if holder.stdout.readline().strip() != "ready":
        holder.kill()
        raise SystemExit(f"ssm_agent: cannot give {netns} a private filesystem")
    return holder


# How often to ask SSM for new commands; the real agent long-polls its message service.
POLL_SECONDS = 0.1


def is_ours(ec2, command: dict, instance_id: str) -> bool:
    """moto puts every instance of the region into InstanceIds of a command sent without
    Targets, so the ENI named by `target` decides: the instance the Lambda tagged it with at
    attach (still there after a detach), else the one it is attached to."""
    if instance_id not in command.get("InstanceIds", []):
        return False
    target = command.get("Parameters", {}).get("target", ["all"])[0]
    if not target.startswith("eni-"):
        return True
    enis = ec2.describe_network_interfaces(Filters=[{"Name": "network-interface-id", "Values": [target]}])
    for eni in enis["NetworkInterfaces"]:
        tags = {t["Key"]: t["Value"] for t in eni.get("TagSet", [])}
        owner = tags.get("symroute:instance-id") or eni.get("Attachment", {}).get("InstanceId")
        return owner == instance_id
    return False


def run_command(ssm, command: dict, args) -> dict:
    content = ssm.get_document(Name=command["DocumentName"])["Content"]
    document = yaml.safe_load(content)
    parameters = {k: v[0] for k, v in command.get("Parameters", {}).items()}
    work = args.workdir / command["CommandId"]
    root = work / "root"
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "SYMROUTE_DOWNLOAD_DIR": str(root / "var/lib/symroute/download"),
           "AWS_EC2_METADATA_SERVICE_ENDPOINT": args.imds}
    # ip netns exec, unshare and sh all exec: the holder's pid is the one to enter.
    wrap = ["nsenter", "--target", str(args.holder), "--mount", "--net", "--"]
    line = {"command_id": command["CommandId"], "parameters": parameters}
    try:
        result = ssmdoc.run(document, parameters, fetch=stack.s3_fetch, orchestration=work / "orchestration",
                            wrap=wrap, env=env, root=root)
    except ssmdoc.InvalidParameters as err:
        return {**line, "exit_code": 64, "steps": [], "stdout": "", "stderr": f"InvalidParameters: {err}"}
    shell = [s for s in result.steps if s.action == "aws:runShellScript"]
    failed_downloads = [f"{s.name}: {s.stderr}" for s in result.steps if s.exit_code and s not in shell]
    return {**line, "exit_code": result.exit_code,
            "steps": [{"name": s.name, "exit_code": s.exit_code} for s in result.steps],
            "stdout": "".join(s.stdout for s in shell),
            "stderr": "\n".join(failed_downloads + [s.stderr for s in shell if s.stderr])}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instance-id", required=True)
    parser.add_argument("--netns", required=True)
    parser.add_argument("--imds", required=True, help="the IMDS endpoint as seen inside the namespace")
    parser.add_argument("--workdir", type=Path, required=True)
    args = parser.parse_args()
    if not os.environ.get("AWS_ENDPOINT_URL", "").startswith("http://127.0.0.1:"):
        raise SystemExit("ssm_agent: AWS_ENDPOINT_URL must name a moto server on 127.0.0.1")
    ssm, ec2 = boto3.client("ssm"), boto3.client("ec2")
    holder = instance_fs(args.netns, args.workdir / "instance-fs")
    args.holder = holder.pid
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    seen, out = set(), threading.Lock()
    while not stop.wait(POLL_SECONDS):
        for command in ssm.list_commands(InstanceId=args.instance_id)["Commands"]:
            if command["CommandId"] in seen:
                continue
            # The Lambda tags the ENI before it sends, so one look decides for good.
            seen.add(command["CommandId"])
            if not is_ours(ec2, command, args.instance_id):
                continue
            # The SSM Agent runs commands side by side (CommandWorkersLimit): so does this.
            threading.Thread(target=report, args=(ssm, command, args, out), daemon=True).start()
    holder.kill()


def report(ssm, command: dict, args, out: threading.Lock):
    try:
        line = run_command(ssm, command, args)
    except Exception as err:  # noqa: BLE001 - reported, and the agent keeps polling
        line = {"command_id": command["CommandId"], "exit_code": 1, "steps": [], "stdout": "",
                "stderr": f"ssm agent stand-in: {type(err).__name__}: {err}"}
    with out:
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
