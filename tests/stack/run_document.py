#!/usr/bin/env python3
"""Run ssm-documents/symroute.yaml on this machine as SSM would (see ssmdoc.py), for tests.

The digests are pinned from --dist (as `make deploy` pins them from dist/agent); the download
step is served from --bucket (default: --dist), so a test can put a tampered file there. With
--netns the script runs in that network namespace, in a private mount namespace whose network
configuration directories are empty tmpfs, so an agent that persists never touches this host.

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

ROOT = Path(__file__).resolve().parents[2]
FILES = {"AgentSha256X8664": "symroute-linux-x86_64", "AgentSha256Aarch64": "symroute-linux-aarch64"}
NETWORK_CONFIG = ["/etc/systemd/network", "/run/systemd/network", "/etc/network", "/etc/netplan",
                  "/etc/NetworkManager", "/run/NetworkManager", "/etc/sysconfig"]
GUARD = 'for d in "$@"; do [ "$d" = -- ] && break; [ -d "$d" ] && mount -t tmpfs symroute-test "$d"; done; ' \
        'while [ "$1" != -- ]; do shift; done; shift; exec "$@"'


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
    root = args.workdir / "root"
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
           "SYMROUTE_DOWNLOAD_DIR": str(root / "var/lib/symroute/download"), **dict(args.env)}
    wrap = None
    if args.netns:
        wrap = ["ip", "netns", "exec", args.netns, "unshare", "-m", "--propagation", "private",
                "sh", "-c", GUARD, "guard", *NETWORK_CONFIG, "--"]
    try:
        result = ssmdoc.run(document, dict(args.param), fetch=ssmdoc.s3_from_directory(args.bucket or args.dist),
                            orchestration=args.workdir / "orchestration", wrap=wrap, env=env, root=root)
    except ssmdoc.InvalidParameters as err:
        print(f"InvalidParameters: {err}", file=sys.stderr)
        sys.exit(64)
    for step in result.steps:
        if step.action == "aws:runShellScript":
            sys.stdout.write(step.stdout)
            sys.stderr.write(step.stderr)
        elif step.exit_code != 0:
            sys.stderr.write(f"{step.name}: {step.stderr}\n")
    sys.exit(result.exit_code)


if __name__ == "__main__":
    main()
