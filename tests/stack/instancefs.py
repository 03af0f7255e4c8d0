"""An instance's own filesystem for the SSM Agent stand-ins (the demo's and run_document.py).

The agent persists what it does (network configuration, systemd units, udev rules, the on-host
trigger, its copy in /usr/local/sbin); on this machine that would land in the host's own /etc,
/var/lib and /usr/local. One holder process keeps a mount namespace, inside the instance's
network namespace, in which /etc, /var/lib and /usr/local are copy-on-write overlays over a
tmpfs, the network configuration directories are empty and /run/symroute (the agent's lock and
the metadata it keeps) is its own; every command runs in it (nsenter), so what one command
persists the next one sees, as on a real instance, and the host sees nothing.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

NETWORK_CONFIG = ["/etc/systemd/network", "/run/systemd/network", "/etc/network", "/etc/netplan",
                  "/etc/NetworkManager", "/run/NetworkManager", "/etc/sysconfig"]

_HOLDER = ('s=$1; shift; mount -t tmpfs symroute-instance "$s" || exit 125; '
           'for d in /etc /var/lib /usr/local; do n=$(printf %s "$d" | tr / _); '
           'mkdir -p "$s/u$n" "$s/w$n" && mount -t overlay symroute-instance '
           '-o "lowerdir=$d,upperdir=$s/u$n,workdir=$s/w$n" "$d" || exit 125; done; '
           'for d in "$@"; do [ -d "$d" ] && mount -t tmpfs symroute-instance "$d"; done; '
           # The agent's run lock and the metadata it keeps for the periodic check: private to
           # root (0700, as the agent checks) and to this instance.
           'mkdir -p /run/symroute && mount -t tmpfs -o mode=0700 symroute-instance /run/symroute '
           '|| exit 125; '
           'echo ready; exec sleep infinity')


class InstanceFs:
    """The holder process; `wrap` is the prefix that runs a command inside its namespaces."""

    def __init__(self, netns: str, scratch: Path):
        scratch.mkdir(parents=True, exist_ok=True)
        self.holder = subprocess.Popen(
            ["ip", "netns", "exec", netns, "unshare", "-m", "--propagation", "private",
             "sh", "-c", _HOLDER, "instance-fs", str(scratch), *NETWORK_CONFIG],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
        if self.holder.stdout.readline().strip() != "ready":
            self.holder.kill()
            raise SystemExit(f"cannot give {netns} a private filesystem")
        # ip netns exec, unshare and sh all exec: the holder's pid is the one to enter.
        self.wrap = ["nsenter", "--target", str(self.holder.pid), "--mount", "--net", "--"]

    def close(self):
        self.holder.kill()
        self.holder.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
