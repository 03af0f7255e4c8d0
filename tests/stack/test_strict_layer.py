"""The strict layer in front of moto (tests/aws/strict_moto.py): each contract AWS enforces and
moto does not, shown refused through the real boto3 client. Each test would pass against bare
moto only if the behaviour were absent, which is the point."""
import json
import urllib.request

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import DOCUMENT
import ssmdoc

DOC_NAME = "strict-test-doc"


def control(aws, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(aws["SYMROUTE_STRICT_URL"] + path, data=data,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as res:
        return json.loads(res.read())


@pytest.fixture(scope="module")
def world(aws):
    ec2, ssm = boto3.client("ec2"), boto3.client("ssm")
    document = ssmdoc.load(DOCUMENT, {"AWS::Region": "us-east-1", "AWS::URLSuffix": "amazonaws.com",
                                      "AgentBucket": "b", "AgentSha256X8664": "0" * 64,
                                      "AgentSha256Aarch64": "1" * 64})
    ssm.create_document(Name=DOC_NAME, Content=json.dumps(document), DocumentType="Command",
                        DocumentFormat="JSON")
    ids = [i["InstanceId"] for i in ec2.run_instances(ImageId="ami-1e749f67", MinCount=3, MaxCount=3)["Instances"]]
    registered, offline, unknown = ids
    control(aws, "/_strict/register", {"instance_id": registered})
    control(aws, "/_strict/register", {"instance_id": offline, "ping_status": "ConnectionLost"})
    return {"ssm": ssm, "registered": registered, "offline": offline, "unknown": unknown}


def send(world, instance=None, **params):
    return world["ssm"].send_command(
        DocumentName=DOC_NAME, InstanceIds=[instance or world["registered"]],
        Parameters={k: [v] for k, v in params.items()}, Comment="strict test", TimeoutSeconds=60)


def code(err):
    return err.value.response["Error"]["Code"]


@pytest.mark.parametrize("target", ["all\n", "eni-0123abcd\n", "ALL", "eni-0123abcd;id", "eni-0123abcd0"])
def test_send_command_checks_parameters_with_re2(world, target):
    with pytest.raises(ClientError) as err:
        send(world, action="apply", target=target)
    assert code(err) == "InvalidParameters"


def test_send_command_needs_a_registered_online_instance(world):
    for instance in (world["offline"], world["unknown"]):
        with pytest.raises(ClientError) as err:
            send(world, instance, action="apply", target="all")
        assert code(err) == "InvalidInstanceId"


def test_send_command_bounds_timeout_and_comment(world):
    # boto3 checks these itself; the Rust SDK does not, so the layer must.
    ssm = boto3.client("ssm", config=Config(parameter_validation=False))
    with pytest.raises(ClientError) as err:
        ssm.send_command(DocumentName=DOC_NAME, InstanceIds=[world["registered"]], TimeoutSeconds=10)
    assert code(err) == "ValidationException"
    with pytest.raises(ClientError) as err:
        ssm.send_command(DocumentName=DOC_NAME, InstanceIds=[world["registered"]], Comment="x" * 101)
    assert code(err) == "ValidationException"


def test_list_commands_names_true_recipients_and_filters(world):
    command = send(world, action="apply", target="eni-0123abcd")["Command"]
    assert command["InstanceIds"] == [world["registered"]]
    ssm = world["ssm"]
    mine = ssm.list_commands(InstanceId=world["registered"])["Commands"]
    assert command["CommandId"] in [c["CommandId"] for c in mine]
    # moto alone lists it for every instance of the region.
    others = ssm.list_commands(InstanceId=world["unknown"])["Commands"]
    assert command["CommandId"] not in [c["CommandId"] for c in others]
    by_doc = ssm.list_commands(InstanceId=world["registered"],
                               Filters=[{"key": "DocumentName", "value": "AWS-RunShellScript"}])["Commands"]
    assert by_doc == []
    later = ssm.list_commands(InstanceId=world["registered"],
                              Filters=[{"key": "InvokedAfter", "value": "2999-01-01T00:00:00Z"}])["Commands"]
    assert later == []
    with pytest.raises(ClientError) as err:
        ssm.list_commands(Filters=[{"key": "InvokedAfter", "value": "2024-07-07T00:00:00.5Z"}])
    assert code(err) == "InvalidFilterValue"


def test_get_command_invocation_needs_the_step_and_is_pending_until_reported(aws, world):
    ssm = world["ssm"]
    command = send(world, action="apply", target="all")["Command"]["CommandId"]
    instance = world["registered"]
    with pytest.raises(ClientError) as err:
        ssm.get_command_invocation(CommandId=command, InstanceId=instance)
    assert code(err) == "InvalidPluginName"
    with pytest.raises(ClientError) as err:
        ssm.get_command_invocation(CommandId=command, InstanceId=instance, PluginName="nope")
    assert code(err) == "InvalidPluginName"
    with pytest.raises(ClientError) as err:
        ssm.get_command_invocation(CommandId=command, InstanceId=world["unknown"], PluginName="runAgent")
    assert code(err) == "InvocationDoesNotExist"
    pending = ssm.get_command_invocation(CommandId=command, InstanceId=instance, PluginName="runAgent")
    assert pending["Status"] == "Pending"
    control(aws, "/_strict/report", {"command_id": command, "instance_id": instance, "status": "Failed",
                                     "steps": [{"name": "runAgent", "status": "Failed", "response_code": 3,
                                                "stdout": "{}", "stderr": ""}]})
    done = ssm.get_command_invocation(CommandId=command, InstanceId=instance, PluginName="runAgent")
    assert (done["Status"], done["ResponseCode"]) == ("Failed", 3)


def test_describe_instance_information_answers_registered_instances(world):
    ssm = world["ssm"]
    info = ssm.describe_instance_information(
        Filters=[{"Key": "InstanceIds", "Values": [world["registered"], world["unknown"]]}])
    found = {i["InstanceId"]: i for i in info["InstanceInformationList"]}
    assert set(found) == {world["registered"]}
    assert (found[world["registered"]]["PingStatus"], found[world["registered"]]["PlatformType"]) == ("Online", "Linux")


def test_a_report_emits_the_command_status_event(aws, world):
    events, sqs = boto3.client("events"), boto3.client("sqs")
    queue = sqs.create_queue(QueueName="strict-status")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="strict-status", EventPattern=json.dumps({
        "source": ["aws.ssm"], "detail-type": ["EC2 Command Invocation Status-change Notification"],
        "detail": {"document-name": [DOC_NAME]}}))
    events.put_targets(Rule="strict-status", Targets=[{"Id": "q", "Arn": arn}])
    command = send(world, action="remove", target="eni-0123abcd")["Command"]["CommandId"]
    control(aws, "/_strict/report", {"command_id": command, "instance_id": world["registered"],
                                     "status": "Success", "steps": []})
    messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
    details = [json.loads(m["Body"])["detail"] for m in messages]
    assert {"command-id": command, "status": "Success"}.items() <= details[-1].items(), details
    assert details[-1]["instance-id"] == world["registered"]
