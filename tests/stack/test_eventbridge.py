"""EventBridge patterns, judged by moto's own implementation of the pattern language."""
import copy
import json

import pytest
from moto.events.models import EventPattern

from conftest import FIXTURES, PATTERNS

NAMES = ["attach-network-interface", "detach-network-interface", "address-change", "instance-running",
         "command-status"]
# The stack's own document, as the deployed command-status pattern names it.
DOCUMENT_NAME = "symroute-Document-AbCdEf123456"


def pattern_text(name):
    return (PATTERNS / f"{name}.json").read_text().replace("@@Document@@", DOCUMENT_NAME)


def pattern(name):
    return EventPattern.load(pattern_text(name))


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
    for name in ["attach", "attach-failed", "detach", "instance-running", "command-invocation",
                 "assign-private-ip", "assign-ipv6"]:
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


@pytest.mark.parametrize("call", ["AssignPrivateIpAddresses", "UnassignPrivateIpAddresses",
                                  "AssignIpv6Addresses", "UnassignIpv6Addresses"])
def test_address_calls_match_the_address_pattern_only(call):
    assert matching(variant("assign-private-ip", eventName=call)) == ["address-change"]
    assert matching(variant("assign-ipv6", eventName=call)) == ["address-change"]


def test_failed_address_calls_match_nothing():
    event = variant("assign-private-ip", errorCode="Client.PrivateIpAddressLimitExceeded")
    assert matching(event) == []


def test_running_matches_the_running_pattern_only():
    assert matching(fixture("instance-running")) == ["instance-running"]


@pytest.mark.parametrize("state", ["pending", "stopping", "stopped", "shutting-down", "terminated"])
def test_other_states_match_nothing(state):
    assert matching(variant("instance-running", state=state)) == []


@pytest.mark.parametrize("call", ["CreateNetworkInterface", "DeleteNetworkInterface",
                                  "ModifyNetworkInterfaceAttribute", "AssociateAddress",
                                  "RunInstances", "attachNetworkInterface",
                                  "assignPrivateIpAddresses", "AssignIpv6Address"])
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
        assert p.get_pattern() == json.loads(pattern_text(name))


def test_a_failed_command_of_our_document_matches_the_command_status_pattern_only():
    assert matching(fixture("command-invocation")) == ["command-status"]


@pytest.mark.parametrize("status", ["Failed", "TimedOut", "Cancelled"])
def test_every_unsuccessful_end_reaches_the_function(status):
    assert matching(variant("command-invocation", status=status)) == ["command-status"]


@pytest.mark.parametrize("status", ["Success", "Pending", "InProgress", "Delayed", "Cancelling"])
def test_success_and_in_flight_statuses_match_nothing(status):
    assert matching(variant("command-invocation", status=status)) == []


def test_other_documents_commands_match_nothing():
    assert matching(variant("command-invocation", **{"document-name": "AWS-RunShellScript"})) == []
