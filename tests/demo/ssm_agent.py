#!/usr/bin/env python3
"""A stand-in for the SSM Agent of one instance, for `make demo` and the end-to-end tests.

It registers its instance with Systems Manager (the strict layer in front of moto: Online,
Linux, the chosen agent version), polls for commands sent to its instance, takes the document
from SSM as deployed, and runs it as the SSM Agent would (tests/stack/ssmdoc.py: RE2 parameter
checks, ENV_VAR interpolation for a new agent or text substitution for an old one, a private
download directory per command, at most five commands at once) with the shell steps inside the
instance's network namespace and its own copy-on-write /etc and /var/lib (instancefs.py). When a
command ends it reports the result to Systems Manager, which emits the command status-change
event, as the real service does.

Each finished command is also one JSON line on stdout:
{"command_id", "parameters", "exit_code", "status", "steps": [{"name", "exit_code"}], "stdout", "stderr"}.
It stops when stdin closes.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import urllib.request
from pathlib import Path

import boto3
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "stack"))
import ssmdoc  # noqa: E402
import stack  # noqa: E402
from instancefs import InstanceFs  # noqa: E402

# How often to ask SSM for new commands; the real agent long-polls its message service.
POLL_SECONDS = 0.1
AGENT_VERSIONS = {ssmdoc.Agent.NEW: "3.3.2746.0", ssmdoc.Agent.OLD: "3.2.1705.0"}


def control(path: str, body: dict) -> dict:
    req = urllib.request.Request(os.environ["AWS_ENDPOINT_URL"] + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as res:
        return json.loads(res.read())


def run_command(ssm, command: dict, args) -> dict:
    content = ssm.get_document(Name=command["DocumentName"])["Content"]
    document = yaml.safe_load(content)
    parameters = {k: v[0] for k, v in command.get("Parameters", {}).items()}
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "AWS_EC2_METADATA_SERVICE_ENDPOINT": args.imds}
    line = {"command_id": command["CommandId"], "parameters": parameters}
    try:
        result = ssmdoc.run(document, parameters, source=stack.s3_source,
                            orchestration=args.workdir / "orchestration", command_id=command["CommandId"],
                            agent=args.agent, wrap=args.fs.wrap, env=env)
    except ssmdoc.InvalidParameters as err:
        return {**line, "exit_code": 1, "status": "Failed", "steps": [], "stdout": "",
                "stderr": f"InvalidParameters: {err}"}
    shell = [s for s in result.steps if s.action == "aws:runShellScript"]
    failed_downloads = [f"{s.name}: {s.stderr}" for s in result.steps if s.exit_code and s not in shell]
    return {**line, "exit_code": result.exit_code, "status": result.status,
            "reboot_requested": result.reboot_requested,
            "steps": [{"name": s.name, "exit_code": s.exit_code, "status": s.status, "stdout": s.stdout,
                       "stderr": s.stderr} for s in result.steps],
            "stdout": "".join(s.stdout for s in shell),
            "stderr": "\n".join(failed_downloads + [s.stderr for s in shell if s.stderr])}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instance-id", required=True)
    parser.add_argument("--netns", required=True)
    parser.add_argument("--imds", required=True, help="the IMDS endpoint as seen inside the namespace")
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--agent", choices=[a.value for a in ssmdoc.Agent], default="new",
                        help="emulate an SSM Agent with ENV_VAR interpolation (new) or without (old)")
    args = parser.parse_args()
    args.agent = ssmdoc.Agent(args.agent)
    if not os.environ.get("AWS_ENDPOINT_URL", "").startswith("http://127.0.0.1:"):
        raise SystemExit("ssm_agent: AWS_ENDPOINT_URL must name a moto server on 127.0.0.1")
    ssm = boto3.client("ssm")
    args.fs = InstanceFs(args.netns, args.workdir / "instance-fs")
    control("/_strict/register", {"instance_id": args.instance_id, "agent_version": AGENT_VERSIONS[args.agent]})
    # The caller waits for this before it sends anything: an unregistered instance is unmanaged.
    sys.stdout.write(json.dumps({"registered": args.instance_id, "agent_version": AGENT_VERSIONS[args.agent]}) + "\n")
    sys.stdout.flush()
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    seen, out = set(), threading.Lock()
    # The SSM Agent runs commands side by side, up to CommandWorkersLimit (5): so does this.
    workers = threading.BoundedSemaphore(ssmdoc.COMMAND_WORKERS)
    while not stop.wait(POLL_SECONDS):
        # The strict layer lists only commands really sent to this instance.
        for command in ssm.list_commands(InstanceId=args.instance_id)["Commands"]:
            if command["CommandId"] in seen:
                continue
            seen.add(command["CommandId"])
            workers.acquire()
            threading.Thread(target=report, args=(ssm, command, args, out, workers), daemon=True).start()
    args.fs.close()


def report(ssm, command: dict, args, out: threading.Lock, workers: threading.BoundedSemaphore):
    try:
        line = run_command(ssm, command, args)
    except Exception as err:  # noqa: BLE001 - reported, and the agent keeps polling
        line = {"command_id": command["CommandId"], "exit_code": 1, "status": "Failed", "steps": [],
                "stdout": "", "stderr": f"ssm agent stand-in: {type(err).__name__}: {err}"}
    finally:
        workers.release()
    steps = [{"name": s["name"], "status": s.get("status", "Failed"), "response_code": s["exit_code"],
              "stdout": s.get("stdout", ""), "stderr": s.get("stderr", "")} for s in line.get("steps", [])]
    try:
        control("/_strict/report", {"command_id": line["command_id"], "instance_id": args.instance_id,
                                    "status": line["status"], "steps": steps})
    except OSError as err:
        line["stderr"] += f"\nssm agent stand-in: could not report the result: {err}"
    with out:
        sys.stdout.write(json.dumps({k: v for k, v in line.items() if k != "steps"} |
                                    {"steps": [{"name": s["name"], "exit_code": s["response_code"]} for s in steps]})
                         + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
