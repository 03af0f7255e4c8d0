"""The SSM document: structure, and what its parameter checks let through."""
import re

import pytest
import yaml

from conftest import DOCUMENT
import ssmdoc

DOC = yaml.safe_load(DOCUMENT.read_text())
TARGET = DOC["parameters"]["target"]["allowedPattern"]
ACTIONS = DOC["parameters"]["action"]["allowedValues"]


def test_schema_and_precondition():
    assert DOC["schemaVersion"] == "2.2"
    assert DOC["mainSteps"], "no steps"
    for step in DOC["mainSteps"]:
        assert step["precondition"] == {"StringEquals": ["platformType", "Linux"]}, step["name"]


def test_parameters_are_the_contract():
    params = DOC["parameters"]
    assert set(params) == {"action", "target"}
    assert params["action"]["allowedValues"] == ["apply", "remove", "status"]
    assert params["action"]["default"] == "apply"
    assert params["target"]["default"] == "all"
    for name, spec in params.items():
        assert spec["type"] == "String"
        assert spec["interpolationType"] == "ENV_VAR", name
        assert "allowedValues" in spec or "allowedPattern" in spec, name
    assert TARGET.startswith("^") and "$" in TARGET


def test_no_parameter_is_pasted_into_a_step():
    """Values reach the shell only as SSM_<name>: no {{ name }} anywhere in the steps."""
    text = yaml.safe_dump(DOC["mainSteps"])
    assert not re.search(r"{{\s*\w+\s*}}", text), "a {{ parameter }} is interpolated into a step"
    script = "\n".join(DOC["mainSteps"][-1]["inputs"]["runCommand"])
    assert "$SSM_action" in script and "$SSM_target" in script


def test_downloads_are_fixed_at_deploy_time():
    downloads = [s for s in DOC["mainSteps"] if s["action"] == "aws:downloadContent"]
    files = sorted(s["inputs"]["destinationPath"].rsplit("/", 1)[-1] for s in downloads)
    assert files == ["symroute-linux-aarch64", "symroute-linux-x86_64"]
    for step in downloads:
        assert step["inputs"]["sourceType"] == "S3"
        path = yaml.safe_load(step["inputs"]["sourceInfo"])["path"]
        # Content-addressed: the key carries the digest the script verifies.
        assert re.fullmatch(r"https://s3\.@@AWS::Region@@\.@@AWS::URLSuffix@@/@@AgentBucket@@/agent/"
                            r"@@AgentSha256(X8664|Aarch64)@@/symroute-linux-(x86_64|aarch64)", path), path
    script = "\n".join(DOC["mainSteps"][-1]["inputs"]["runCommand"])
    assert "@@AgentSha256X8664@@" in script and "@@AgentSha256Aarch64@@" in script


VALID_TARGETS = [
    "all",
    "eni-0123abcd",                 # 8 hex digits, the old form
    "eni-0a9c4b60624c0e41d",        # 17 hex digits, today's form
    "0a:1b:2c:3d:4e:5f",
    "02:00:00:00:00:01",
]
HOSTILE_TARGETS = [
    "", " ", "ALL", "All", "all ", " all", "all\n", "all\r", "all\r\n", "\nall", "all\x00",
    "all\u2028", "all;reboot", "all && reboot", "all|sh", "all`id`", "$(id)", "all$(id)",
    "`reboot`", "${IFS}", "eni-0a9c4b60624c0e41d;id", "eni-0a9c4b60624c0e41d\nid",
    "eni-0a9c4b60624c0e41d id", "eni-0A9C4B60624C0E41D", "eni-0123abc", "eni-0a9c4b60624c0e41d0",
    "eni-", "eni-xyzxyzxy", "eni-0123abcd'", "'eni-0123abcd'", "\"all\"", "eni-０１２３abcd",
    "ënì-0123abcd", "0a:1b:2c:3d:4e", "0a:1b:2c:3d:4e:5f:60", "0A:1B:2C:3D:4E:5F",
    "0a-1b-2c-3d-4e-5f", "0a:1b:2c:3d:4e:5g", "0a:1b:2c:3d:4e:5f\n", "0a:1b:2c:3d:4e:5f;id",
    "all" * 1000, "eni-" + "0" * 10000, "a" * 65536, "--all", "-a", "all --root /", "../../etc",
    "*", "?", "[a]", "~", "all#", "all\\", "\\all",
]


@pytest.mark.parametrize("value", VALID_TARGETS)
def test_valid_targets_pass(value):
    assert re.search(TARGET, value)
    assert ssmdoc.validate(DOC, {"target": value})["target"] == value


@pytest.mark.parametrize("value", HOSTILE_TARGETS, ids=lambda v: repr(v)[:40])
def test_hostile_targets_are_refused(value):
    assert not re.search(TARGET, value)
    with pytest.raises(ssmdoc.InvalidParameters):
        ssmdoc.validate(DOC, {"target": value})


@pytest.mark.parametrize("value", ["apply", "remove", "status"])
def test_valid_actions_pass(value):
    assert ssmdoc.validate(DOC, {"action": value}) == {"action": value, "target": "all"}


@pytest.mark.parametrize("value", ["", "Apply", "apply ", "apply\n", "apply;id", "$(id)", "`id`",
                                   "applyx", "delete", "stale", "--help", "apply --root /", "ápply"])
def test_hostile_actions_are_refused(value):
    assert value not in ACTIONS
    with pytest.raises(ssmdoc.InvalidParameters):
        ssmdoc.validate(DOC, {"action": value})


def test_unknown_parameter_is_refused():
    with pytest.raises(ssmdoc.InvalidParameters):
        ssmdoc.validate(DOC, {"commands": "id"})
