"""The document's shell step, run for real as the SSM Agent runs it (ssmdoc.py), against stand-in
agents, for both agent generations: NEW (3.3.2746.0+, parameters as SSM_<name>) and OLD (text
substitution only).

The stand-in records its arguments in a marker file, so "nothing ran" is checked, not assumed.
"""
import hashlib
import os
import platform
import stat
import subprocess
import threading

import pytest

from conftest import DOCUMENT
import ssmdoc

ARCH_FILE_ALL = {"x86_64": "symroute-linux-x86_64", "aarch64": "symroute-linux-aarch64"}
ARCH_FILE = ARCH_FILE_ALL[platform.machine()]
OTHER_FILE = next(f for f in ARCH_FILE_ALL.values() if f != ARCH_FILE)
AGENTS = [ssmdoc.Agent.NEW, ssmdoc.Agent.OLD]


class Stage:
    """A bucket directory with two stand-in agents and a document rendered for their digests."""

    def __init__(self, tmp_path, body="exit 0", tamper=False):
        self.tmp = tmp_path
        self.marker = tmp_path / "agent-ran"
        self.bucket = tmp_path / "bucket"
        self.bucket.mkdir()
        digests = {}
        for arch, file in ARCH_FILE_ALL.items():
            text = f"#!/bin/sh\n# stand-in symroute for {arch}\nprintf '%s\\n' \"$@\" > '{self.marker}'\n{body}\n"
            digests[arch] = hashlib.sha256(text.encode()).hexdigest()
            if tamper:
                text = text.replace("printf", "touch '%s.tampered'; printf" % self.marker)
            (self.bucket / file).write_text(text)
        self.document = ssmdoc.load(DOCUMENT, {
            "AWS::Region": "local-1", "AWS::URLSuffix": "amazonaws.com", "AgentBucket": "test-bucket",
            "AgentSha256X8664": digests["x86_64"], "AgentSha256Aarch64": digests["aarch64"]})
        self.orchestration = tmp_path / "orchestration"

    def run(self, agent=ssmdoc.Agent.NEW, command_id="cmd-1", **parameters):
        return ssmdoc.run(self.document, parameters, source=ssmdoc.s3_from_directory(self.bucket),
                          orchestration=self.orchestration, command_id=command_id, agent=agent,
                          env={"PATH": os.environ["PATH"]})

    def agent_args(self):
        return self.marker.read_text().splitlines() if self.marker.exists() else None


@pytest.mark.parametrize("agent", AGENTS, ids=lambda a: a.value)
@pytest.mark.parametrize("parameters,args", [
    # apply leaves the on-host trigger behind unless asked not to; remove and status never do.
    ({}, ["apply", "--all", "--install-trigger", "--json"]),
    ({"action": "apply", "target": "eni-0a9c4b60624c0e41d"},
     ["apply", "--eni", "eni-0a9c4b60624c0e41d", "--install-trigger", "--json"]),
    ({"action": "apply", "target": "eni-0a9c4b60624c0e41d", "onHostTrigger": "false"},
     ["apply", "--eni", "eni-0a9c4b60624c0e41d", "--json"]),
    ({"action": "remove", "target": "eni-0123abcd", "onHostTrigger": "true"}, ["remove", "--eni", "eni-0123abcd", "--json"]),
    # The connmark mode is switched by apply only; keep passes nothing (each ENI keeps its mode).
    ({"action": "apply", "target": "all", "connmark": "on"},
     ["apply", "--all", "--install-trigger", "--connmark", "on", "--json"]),
    ({"action": "apply", "target": "all", "onHostTrigger": "false", "connmark": "off"},
     ["apply", "--all", "--connmark", "off", "--json"]),
    ({"action": "apply", "target": "all", "connmark": "keep"}, ["apply", "--all", "--install-trigger", "--json"]),
    ({"action": "remove", "target": "all", "connmark": "on"}, ["remove", "--all", "--json"]),
    ({"action": "remove", "target": "eni-0123abcd"}, ["remove", "--eni", "eni-0123abcd", "--json"]),
    ({"action": "remove", "target": "0a:1b:2c:3d:4e:5f"}, ["remove", "--mac", "0a:1b:2c:3d:4e:5f", "--json"]),
    ({"action": "remove", "target": "all"}, ["remove", "--all", "--json"]),
    ({"action": "status", "target": "eni-0123abcd"}, ["status", "--json"]),
])
def test_agent_gets_the_right_command_line_from_old_and_new_agents(tmp_path, agent, parameters, args):
    stage = Stage(tmp_path)
    result = stage.run(agent, **parameters)
    assert result.status == "Success", result.steps
    assert [s.exit_code for s in result.steps] == [0, 0]
    assert stage.agent_args() == args


def test_new_agent_does_not_substitute_text_so_the_script_uses_the_variables(tmp_path):
    """The NEW stand-in leaves {{ target }} alone: a script that read it would get the braces."""
    stage = Stage(tmp_path)
    script = "\n".join(stage.document["mainSteps"][-1]["inputs"]["runCommand"])
    stage.document["mainSteps"][-1]["inputs"]["runCommand"] = [
        line.replace("if [ -z \"${SSM_target+x}\" ]; then ", "if true; then ") for line in script.splitlines()]
    result = stage.run(ssmdoc.Agent.NEW, target="eni-0123abcd")
    assert result.exit_code == 2, result.steps
    assert stage.agent_args() is None


@pytest.mark.parametrize("code", [0, 1, 2, 3, 4])
def test_command_exits_with_the_agents_code(tmp_path, code):
    stage = Stage(tmp_path, body=f"exit {code}")
    assert stage.run(target="eni-0123abcd").exit_code == code
    assert stage.agent_args() == ["apply", "--eni", "eni-0123abcd", "--install-trigger", "--json"]


@pytest.mark.parametrize("body", ["exit 194", "exit 168", "exit 169", "exit 5", "exit 127", "exit 255",
                                  "kill -TERM $$", "kill -KILL $$"])
def test_no_agent_exit_reaches_ssm_outside_0_to_4(tmp_path, body):
    """194 would reboot the host, 168/169 end the document: the script reports them as 1."""
    stage = Stage(tmp_path, body=body)
    result = stage.run(target="eni-0123abcd")
    assert result.exit_code == 1, result.steps
    assert not result.reboot_requested
    assert "reported as 1" in result.step("runAgent").stderr
    assert stage.agent_args() == ["apply", "--eni", "eni-0123abcd", "--install-trigger", "--json"]


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
    assert result.exit_code == 1 and result.status == "Failed"
    assert "was not downloaded" in result.step("runAgent").stderr
    assert stage.agent_args() is None


def test_a_missing_build_for_the_other_cpu_does_not_fail_the_command(tmp_path):
    stage = Stage(tmp_path)
    (stage.bucket / OTHER_FILE).unlink()
    result = stage.run()
    assert result.status == "Success", result.steps
    assert stage.agent_args() == ["apply", "--all", "--install-trigger", "--json"]


def test_each_command_downloads_into_its_own_private_directory(tmp_path):
    """Two commands at once (the agent runs up to five) never share a file."""
    stage = Stage(tmp_path, body="sleep 0.3")
    results = {}
    threads = [threading.Thread(target=lambda c=c: results.__setitem__(c, stage.run(command_id=c)))
               for c in ("cmd-a", "cmd-b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.status == "Success" for r in results.values()), results
    for command in ("cmd-a", "cmd-b"):
        downloads = stage.orchestration / command / "downloads"
        assert (downloads / "agent" / ARCH_FILE).is_file()
        for d in (stage.orchestration / command, downloads, downloads / "agent"):
            assert stat.S_IMODE(d.stat().st_mode) == 0o700, d


def test_stdout_is_cut_where_the_ssm_agent_cuts_it(tmp_path):
    stage = Stage(tmp_path, body="head -c 30000 /dev/zero | tr '\\0' x")
    out = stage.run().step("runAgent").stdout
    assert len(out.encode()) == ssmdoc.MAX_STDOUT and out.endswith(ssmdoc.TRUNCATED)


@pytest.mark.parametrize("action,target", [
    ("apply", "all;touch {pwned}"), ("apply", "$(touch {pwned})"), ("apply", "`touch {pwned}`"),
    ("apply", "eni-0123abcd\ntouch {pwned}"), ("apply", "eni-0123abcd;touch {pwned}"),
    ("apply", "eni-0123"), ("apply", "eni-0123abcd0123abcd01"), ("apply", "eni-0123abcd0"),
    ("apply", "0A:1B:2C:3D:4E:5F"), ("apply", "0a:1b:2c:3d:4e:5f "), ("apply", ""), ("apply", "--root=/"),
    ("apply", "*"), ("apply;touch {pwned}", "all"), ("$(touch {pwned})", "all"), ("", "all"), ("stale", "all"),
])
def test_shell_rechecks_values_itself(tmp_path, action, target, trigger="true", connmark="keep"):
    """Even a value that slipped past the service's checks is refused by the script, whole."""
    stage = Stage(tmp_path)
    pwned = tmp_path / "pwned"
    script = tmp_path / "_script.sh"
    script.write_text("\n".join(stage.document["mainSteps"][-1]["inputs"]["runCommand"]) + "\n")
    script.chmod(0o700)
    (tmp_path / "agent").mkdir()
    for file in ARCH_FILE_ALL.values():
        (tmp_path / "agent" / file).write_bytes((stage.bucket / file).read_bytes())
    env = {"PATH": os.environ["PATH"], "SSM_action": action.format(pwned=pwned),
           "SSM_target": target.format(pwned=pwned), "SSM_onHostTrigger": trigger.format(pwned=pwned),
           "SSM_connmark": connmark.format(pwned=pwned)}
    proc = subprocess.run(["sh", "-c", str(script)], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert stage.agent_args() is None
    assert not pwned.exists()


@pytest.mark.parametrize("trigger", ["", "yes", "TRUE", "true;touch {pwned}", "$(touch {pwned})", "true\n"])
def test_shell_rechecks_the_trigger_switch_too(tmp_path, trigger):
    test_shell_rechecks_values_itself(tmp_path, "apply", "all", trigger)


@pytest.mark.parametrize("connmark", ["", "ON", "yes", "on;touch {pwned}", "$(touch {pwned})", "on\n", "--root=/"])
def test_shell_rechecks_the_connmark_switch_too(tmp_path, connmark):
    test_shell_rechecks_values_itself(tmp_path, "apply", "all", "true", connmark)
