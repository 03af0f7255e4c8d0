#!/usr/bin/env python3
"""Run ssm-documents/symroute.yaml on this machine as SSM would (see ssmdoc.py), for tests.

The digests are pinned from --dist (as `make deploy` pins them from dist/agent); the download
step is served from --bucket (default: --dist), so a test can put a tampered file there. With
--netns the script runs in that network namespace and in the instance's own copy-on-write /etc
and /var/lib (instancefs.py), so an agent that persists never touches this host; without it,
only a stand-in agent that writes nothing may be used. --agent old emulates an SSM Agent older
than 3.3.2746.0 (text substitution, no SSM_ variables). With --guest-qga SOCK the steps run inside
a VM lab guest instead (through --guest-exec, tests/src/bin/symroute-guest-exec.rs), which first
copies the command's directory into the guest, where the SSM Agent would have written it.

Prints the agent's report (the runAgent step's stdout) and its stderr; exits with the command's
exit code, or 64 when SSM would have refused the parameters.
"""
import argparse
import hashlib
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ssmdoc  # noqa: E402
from instancefs import InstanceFs  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
FILES = {"AgentSha256X8664": "symroute-linux-x86_64", "AgentSha256Aarch64": "symroute-linux-aarch64"}


def pair(text):
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--document", type=Path, default=ROOT / "ssm-documents" / "symroute.yaml")
    parser.add_argument("--dist", type=Path, required=True, help="the binaries whose digests are pinned")
    parser.add_argument("--bucket", type=Path, help="what the download step serves (default: --dist)")
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--netns")
    parser.add_argument("--guest-qga", type=Path, help="a VM lab guest's agent socket: run the steps there")
    parser.add_argument("--guest-exec", type=Path, help="the symroute-guest-exec binary (with --guest-qga)")
    parser.add_argument("--agent", choices=[a.value for a in ssmdoc.Agent], default="new")
    parser.add_argument("--env", type=pair, action="append", default=[])
    parser.add_argument("--param", type=pair, action="append", default=[])
    args = parser.parse_args()
    args.workdir = args.workdir.resolve()

    digests = {}
    for name, file in FILES.items():
        path = args.dist / file
        digests[name] = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "0" * 64
    document = ssmdoc.load(args.document, {"AWS::Region": "local-1", "AWS::URLSuffix": "amazonaws.com",
                                           "AgentBucket": "local-bucket", **digests})
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), **dict(args.env)}
    if args.guest_qga and args.netns:
        parser.error("--guest-qga and --netns exclude each other")
    if args.guest_qga and not args.guest_exec:
        parser.error("--guest-qga needs --guest-exec")
    fs = InstanceFs(args.netns, args.workdir / "instance-fs") if args.netns else None
    orchestration = args.workdir / "orchestration"
    wrap = fs.wrap if fs else None
    if args.guest_qga:
        wrap = [str(args.guest_exec), "--qga", str(args.guest_qga), "--copy", str(orchestration / "command"), "--"]
    try:
        result = ssmdoc.run(document, dict(args.param), source=ssmdoc.s3_from_directory(args.bucket or args.dist),
                            orchestration=orchestration, command_id="command",
                            agent=ssmdoc.Agent(args.agent), wrap=wrap, env=env)
    except ssmdoc.InvalidParameters as err:
        print(f"InvalidParameters: {err}", file=sys.stderr)
        sys.exit(64)
    finally:
        if fs:
            fs.close()
    for step in result.steps:
        if step.action == "aws:runShellScript":
            sys.stdout.write(step.stdout)
            sys.stderr.write(step.stderr)
        elif step.exit_code != 0:
            sys.stderr.write(f"{step.name}: {step.stderr}\n")
    sys.exit(result.exit_code)


if __name__ == "__main__":
    main()
