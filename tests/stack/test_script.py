"""The document's shell step, run for real as the SSM Agent runs it, against a stand-in agent.

The stand-in records its arguments in a marker file, so "nothing ran" is checked, not assumed.
"""
import hashlib
import os
import platform
import subprocess

import pytest

from conftest import DOCUMENT
import ssmdoc

ARCH_FILE = {"x86_64": "symroute-linux-x86_64", "aarch64": "symroute-linux-aarch64"}[platform.machine()]


class Stage:
    """A bucket directory with two stand-in agents and a document rendered for their digests."""

    def __init__(self, tmp_path, exit_code=0, tamper=False):
        self.tmp = tmp_path
        self.marker = tmp_path / "agent-ran"
        self.bucket = tmp_path / "bucket"
        self.bucket.mkdir()
        digests = {}
        for arch, file in ARCH_FILE_ALL.items():
            body = f"#!/bin/sh\n# stand-in symroute for {arch}\nprintf '%s\\n' \"$@\" > '{self.marker}'\nexit {exit_code}\n"
            digests[arch] = hashlib.sha256(body.encode()).hexdigest()
            if tamper:
                body = body.replace("exit", "touch '%s.tampered'; exit" % self.marker)
            (self.bucket / file).write_text(body)
        self.document = ssmdoc.load(DOCUMENT, {
            "AWS::Region": "local-1", "AWS::URLSuffix": "amazonaws.com", "AgentBucket": "test-bucket",
            "AgentSha256X8664": digests["x86_64"], "AgentSha256Aarch64": digests["aarch64"]})
        self.root = tmp_path / "root"
        self.download = self.root / "var/lib/symroute/download"

    def env(self):
        return {"PATH": os.environ["PATH"], "SYMROUTE_DOWNLOAD_DIR": str(self.download)}

    def run(self, **parameters):
        return ssmdoc.run(self.document, parameters, fetch=ssmdoc.s3_from_directory(self.bucket),
                          orchestration=self.tmp / "orchestration", env=self.env(), root=self.root)

    def agent_args(self):
        return self.marker.read_text().splitlines() if self.marker.exists() else None


ARCH_FILE_ALL = {"x86_64": "symroute-linux-x86_64", "aarch64": "symroute-linux-aarch64"}


@pytest.mark.parametrize("parameters,args", [
    ({}, ["apply", "--all", "--json"]),
    ({"action": "apply", "target": "eni-0a9c4b60624c0e41d"}, ["apply", "--eni", "eni-0a9c4b60624c0e41d", "--json"]),
    ({"action": "remove", "target": "eni-0123abcd"}, ["remove", "--eni", "eni-0123abcd", "--json"]),
    ({"action": "remove", "target": "0a:1b:2c:3d:4e:5f"}, ["remove", "--mac", "0a:1b:2c:3d:4e:5f", "--json"]),
    ({"action": "remove", "target": "all"}, ["remove", "--all", "--json"]),
    ({"action": "status", "target": "eni-0123abcd"}, ["status", "--json"]),
])
def test_agent_gets_the_right_command_line(tmp_path, parameters, args):
    stage = Stage(tmp_path)
    result = stage.run(**parameters)
    assert result.exit_code == 0, result.steps
    assert [s.exit_code for s in result.steps] == [0, 0, 0]
    assert stage.agent_args() == args


@pytest.mark.parametrize("code", [0, 1, 2, 3])
def test_command_exits_with_the_agents_code(tmp_path, code):
    stage = Stage(tmp_path, exit_code=code)
    assert stage.run(target="eni-0123abcd").exit_code == code
    assert stage.agent_args() == ["apply", "--eni", "eni-0123abcd", "--json"]


def test_tampered_agent_is_refused_and_nothing_runs(tmp_path):
    stage = Stage(tmp_path, tamper=True)
    result = stage.run()
    assert result.exit_code == 1
    assert "refusing to run" in result.step("runAgent").stderr
    assert stage.agent_args() is None
    assert not (tmp_path / "agent-ran.tampered").exists()


def test_missing_download_fails_without_running_anything(tmp_path):
    stage = Stage(tmp_path)
    (stage.bucket / ARCH_FILE).unlink()
    result = stage.run()
    assert result.exit_code == 1
    assert "was not downloaded" in result.step("runAgent").stderr
    assert stage.agent_args() is None


def test_private_copy_is_cleaned_up(tmp_path):
    stage = Stage(tmp_path)
    assert stage.run().exit_code == 0
    assert sorted(p.name for p in stage.download.iterdir()) == sorted(ARCH_FILE_ALL.values())


def test_an_agent_without_env_var_interpolation_is_refused(tmp_path):
    """An SSM Agent older than 3.3.2746.0 sets no SSM_ variables: refuse rather than guess."""
    stage = Stage(tmp_path)
    for spec in stage.document["parameters"].values():
        del spec["interpolationType"]
    result = stage.run()
    assert result.exit_code == 2
    assert "3.3.2746.0" in result.step("runAgent").stderr
    assert stage.agent_args() is None


@pytest.mark.parametrize("action,target", [
    ("apply", "all;touch {pwned}"), ("apply", "$(touch {pwned})"), ("apply", "`touch {pwned}`"),
    ("apply", "eni-0123abcd\ntouch {pwned}"), ("apply", "eni-0123abcd;touch {pwned}"),
    ("apply", "eni-0123"), ("apply", "eni-0123abcd0123abcd01"), ("apply", "0A:1B:2C:3D:4E:5F"),
    ("apply", "0a:1b:2c:3d:4e:5f "), ("apply", ""), ("apply", "--root=/"), ("apply", "*"),
    ("apply;touch {pwned}", "all"), ("$(touch {pwned})", "all"), ("", "all"), ("stale", "all"),
])
def test_shell_rechecks_values_itself(tmp_path, action, target):
    """Even a value that slipped past the service's checks is refused by the script, whole."""
    stage = Stage(tmp_path)
    pwned = tmp_path / "pwned"
    script_lines = stage.document["mainSteps"][-1]["inputs"]["runCommand"]
    script = tmp_path / "_script.sh"
    script.write_text("\n".join(script_lines) + "\n")
    script.chmod(0o700)
    for file in ARCH_FILE_ALL.values():
        stage.download.mkdir(parents=True, exist_ok=True)
        (stage.download / file).write_bytes((stage.bucket / file).read_bytes())
    env = stage.env() | {"SSM_action": action.format(pwned=pwned), "SSM_target": target.format(pwned=pwned)}
    proc = subprocess.run(["sh", "-c", str(script)], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert stage.agent_args() is None
    assert not pwned.exists()
