"""The SSM document: structure, and what its parameter checks let through, judged with RE2
(google-re2), the engine class the SSM Agent compiles allowedPattern with (Go's regexp), matched
unanchored as Go's MatchString does. Python's `re` is more lenient (lookaround) and reads `$`
differently (it matches before a final newline), so it is not used for any verdict here."""
import re

import pytest
import re2
import yaml

from conftest import DOCUMENT, TEMPLATE
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
    assert set(params) == {"action", "target", "onHostTrigger", "connmark"}
    assert params["action"]["allowedValues"] == ["apply", "remove", "status"]
    assert params["onHostTrigger"]["allowedValues"] == ["true", "false"]
    assert params["onHostTrigger"]["default"] == "true"
    assert params["connmark"]["allowedValues"] == ["keep", "on", "off"]
    assert params["connmark"]["default"] == "keep"
    assert params["action"]["default"] == "apply"
    assert params["target"]["default"] == "all"
    for name, spec in params.items():
        assert spec["type"] == "String"
        assert spec["interpolationType"] == "ENV_VAR", name
        assert "allowedValues" in spec or "allowedPattern" in spec, name
    assert TARGET.startswith("^") and TARGET.endswith("$")


def _patterns(node, where=""):
    """Every allowedPattern in a document or template, wherever it sits."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "allowedPattern" and isinstance(value, str):
                yield f"{where}.{key}", value
            else:
                yield from _patterns(value, f"{where}.{key}")
    elif isinstance(node, list):
        for n, value in enumerate(node):
            yield from _patterns(value, f"{where}[{n}]")


class _CfnLoader(yaml.SafeLoader):
    pass


_CfnLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def test_every_allowed_pattern_compiles_with_re2():
    """The SSM Agent fails every command whose document has a pattern RE2 cannot compile."""
    template = yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)
    found = list(_patterns(DOC, "document")) + list(_patterns(template, "template"))
    assert len(found) >= 2, found
    for where, pattern in found:
        re2.compile(pattern)  # raises re2.error, naming the construct RE2 refuses


def test_re2_refuses_what_python_accepts():
    """Why the tests use RE2: the pattern symroute shipped before compiled in Python only."""
    shipped = r"^(?:all|eni-[0-9a-f]{8,17}|[0-9a-f]{2}(?::[0-9a-f]{2}){5})$(?![\s\S])"
    re.compile(shipped)
    with pytest.raises(re2.error):
        re2.compile(shipped)
    with pytest.raises(ssmdoc.InvalidParameters, match="compiling allowed pattern"):
        ssmdoc.validate({"parameters": {"target": {"type": "String", "allowedPattern": shipped}}},
                        {"target": "all"})


def test_dollar_is_the_end_of_the_text_in_re2():
    """RE2 without (?m) reads `$` as the end of the text, so no lookahead is needed to refuse a
    trailing newline (Python's `re` would let it through)."""
    assert re.search(TARGET, "all\n")
    assert not re2.search(TARGET, "all\n")


def test_parameters_reach_the_shell_as_variables_with_the_documented_fallback():
    """SSM_<name> first; the substituted {{ name }} text only where the variable is unset
    (agents older than 3.3.2746.0), and nowhere else in the steps."""
    script = DOC["mainSteps"][-1]["inputs"]["runCommand"]
    for name in ("action", "target", "onHostTrigger", "connmark"):
        fallback = f'if [ -z "${{SSM_{name}+x}}" ]; then SSM_{name}="{{{{ {name} }}}}"; fi'
        assert fallback in script, name
    text = yaml.safe_dump(DOC["mainSteps"])
    assert len(re.findall(r"{{\s*\w+\s*}}", text)) == 4, "a {{ parameter }} is pasted elsewhere"


def test_one_download_of_the_release_prefix_into_the_commands_own_directory():
    downloads = [s for s in DOC["mainSteps"] if s["action"] == "aws:downloadContent"]
    assert len(downloads) == 1
    inputs = downloads[0]["inputs"]
    assert inputs["sourceType"] == "S3"
    # Relative: <orchestration>/<command id>/downloads/agent, private to this command.
    assert not inputs["destinationPath"].startswith("/")
    path = yaml.safe_load(inputs["sourceInfo"])["path"]
    # A prefix ("/" at the end) named by both digests the script verifies.
    assert path == ("https://s3.@@AWS::Region@@.@@AWS::URLSuffix@@/@@AgentBucket@@/agent/"
                    "@@AgentSha256X8664@@-@@AgentSha256Aarch64@@/"), path
    script = "\n".join(DOC["mainSteps"][-1]["inputs"]["runCommand"])
    assert "@@AgentSha256X8664@@" in script and "@@AgentSha256Aarch64@@" in script


VALID_TARGETS = [
    "all",
    "eni-0123abcd",                 # 8 hex digits, the old form (EC2 ids have 8 or 17)
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
    "eni-0123abcd0", "eni-0123abcd0123", "eni-0123abcd0123abcd", "all" * 1000, "eni-" + "0" * 10000, "a" * 65536, "--all", "-a", "all --root /", "../../etc",
    "*", "?", "[a]", "~", "all#", "all\\", "\\all",
]


@pytest.mark.parametrize("value", VALID_TARGETS)
def test_valid_targets_pass(value):
    assert re2.search(TARGET, value)
    assert ssmdoc.validate(DOC, {"target": value})["target"] == value


@pytest.mark.parametrize("value", HOSTILE_TARGETS, ids=lambda v: repr(v)[:40])
def test_hostile_targets_are_refused(value):
    assert not re2.search(TARGET, value)
    with pytest.raises(ssmdoc.InvalidParameters):
        ssmdoc.validate(DOC, {"target": value})


@pytest.mark.parametrize("value", ["apply", "remove", "status"])
def test_valid_actions_pass(value):
    assert ssmdoc.validate(DOC, {"action": value}) == {
        "action": value, "target": "all", "onHostTrigger": "true", "connmark": "keep"}


@pytest.mark.parametrize("value", ["", "True", "yes", "1", "true ", "true\n", "false;id", "$(id)"])
def test_hostile_trigger_switches_are_refused(value):
    with pytest.raises(ssmdoc.InvalidParameters):
        ssmdoc.validate(DOC, {"onHostTrigger": value})


@pytest.mark.parametrize("value", ["", "ON", "On", "true", "yes", "on ", "on\n", "off;id", "$(id)", "--root=/"])
def test_hostile_connmark_switches_are_refused(value):
    with pytest.raises(ssmdoc.InvalidParameters):
        ssmdoc.validate(DOC, {"connmark": value})


def test_connmark_values_survive_yaml_as_strings():
    """Unquoted, YAML 1.1 reads on/off as booleans; the service would then offer true/false."""
    assert all(isinstance(v, str) for v in DOC["parameters"]["connmark"]["allowedValues"])
    assert ssmdoc.validate(DOC, {"connmark": "on"})["connmark"] == "on"


@pytest.mark.parametrize("value", ["", "Apply", "apply ", "apply\n", "apply;id", "$(id)", "`id`",
                                   "applyx", "delete", "stale", "--help", "apply --root /", "ápply"])
def test_hostile_actions_are_refused(value):
    assert value not in ACTIONS
    with pytest.raises(ssmdoc.InvalidParameters):
        ssmdoc.validate(DOC, {"action": value})


def test_unknown_parameter_is_refused():
    with pytest.raises(ssmdoc.InvalidParameters):
        ssmdoc.validate(DOC, {"commands": "id"})
