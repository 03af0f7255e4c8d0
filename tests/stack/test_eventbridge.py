"""EventBridge patterns, judged by moto's own implementation of the pattern language."""
import copy
import json

import pytest
from moto.events.models import EventPattern

from conftest import FIXTURES, PATTERNS

NAMES = ["attach-network-interface", "detach-network-interface", "instance-running"]


def pattern(name):
    return EventPattern.load((PATTERNS / f"{name}.json").read_text())


def fixture(name):
    return json.loads((FIXTURES / f"{name}.json").read_text())


def matching(event):
    return [n for n in NAMES if pattern(n).matches_event(event)]


def variant(name, **detail):
    event = fixture(name)
    for key, value in detail.items():
        if value is None:
            event["detail"].pop(key, None)
        else:
            event["detail"][key] = value
    return event


def test_fixtures_are_present():
    for name in ["attach", "attach-failed", "detach", "instance-running"]:
        assert (FIXTURES / f"{name}.json").is_file(), f"missing {FIXTURES}/{name}.json"


def test_attach_matches_the_attach_pattern_only():
    assert matching(fixture("attach")) == ["attach-network-interface"]


def test_failed_attach_matches_nothing():
    assert "errorCode" in fixture("attach-failed")["detail"]
    assert matching(fixture("attach-failed")) == []


def test_detach_matches_the_detach_pattern_only():
    assert matching(fixture("detach")) == ["detach-network-interface"]


def test_failed_detach_matches_nothing():
    assert matching(variant("detach", errorCode="Client.InvalidAttachmentID.NotFound")) == []


def test_running_matches_the_running_pattern_only():
    assert matching(fixture("instance-running")) == ["instance-running"]


@pytest.mark.parametrize("state", ["pending", "stopping", "stopped", "shutting-down", "terminated"])
def test_other_states_match_nothing(state):
    assert matching(variant("instance-running", state=state)) == []


@pytest.mark.parametrize("call", ["CreateNetworkInterface", "DeleteNetworkInterface",
                                  "ModifyNetworkInterfaceAttribute", "AssignPrivateIpAddresses",
                                  "RunInstances", "attachNetworkInterface"])
def test_other_calls_match_nothing(call):
    assert matching(variant("attach", eventName=call)) == []


def test_same_name_from_another_service_matches_nothing():
    event = variant("attach", eventSource="ec2-fake.amazonaws.com")
    assert matching(event) == []
    event = fixture("attach")
    event["source"] = "custom.ec2"
    assert matching(event) == []


def test_an_empty_error_code_still_counts_as_a_failure():
    # `exists: false` is about presence: a record carrying errorCode at all is not a success.
    assert matching(variant("attach", errorCode="")) == []


def test_patterns_are_what_moto_accepts_as_valid():
    for name in NAMES:
        p = pattern(name)
        assert p.get_pattern() == json.loads((PATTERNS / f"{name}.json").read_text())
