"""Seed-style Python/boto3 version of the symroute Lambda, for `make bench` only.

It makes the same AWS calls as the Rust function for the same events (DescribeNetworkInterfaces,
DescribeInstances, CreateTags, SendCommand, GetCommandInvocation), so the two can be compared
under awslambdaric against one Runtime API server and one moto.
"""

import os
import time

import boto3

DOCUMENT = os.environ["SYMROUTE_DOCUMENT_NAME"]
SKIP_TAG = os.environ.get("SYMROUTE_SKIP_TAG", "symroute:skip")
WAIT = int(os.environ.get("SYMROUTE_WAIT_SECONDS", "60"))
ec2 = boto3.client("ec2")
ssm = boto3.client("ssm")


def tags(resource):
    return {t["Key"]: t.get("Value", "") for t in resource.get("TagSet", resource.get("Tags", []))}


def skipped(reason):
    return {"skipped": reason}


def instance_check(instance_id):
    res = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    if not res:
        return "instance-gone"
    inst = res[0]["Instances"][0]
    if inst.get("Platform") == "windows":
        return "not-linux"
    if inst["State"]["Name"] != "running":
        return "not-running"
    if SKIP_TAG in tags(inst):
        return "skip-tag"
    return None


def send(instance_id, action, target):
    command_id = ssm.send_command(
        DocumentName=DOCUMENT,
        InstanceIds=[instance_id],
        Parameters={"action": [action], "target": [target]},
    )["Command"]["CommandId"]
    status = "Pending"
    deadline = time.monotonic() + WAIT
    delay = 0
    while WAIT and time.monotonic() < deadline:
        time.sleep(delay)
        try:
            inv = ssm.get_command_invocation(CommandId=command_id, InstanceId=instance_id)
            status = inv["Status"]
            if status not in ("Pending", "InProgress", "Delayed", "Cancelling"):
                break
        except ssm.exceptions.InvocationDoesNotExist:
            pass
        delay = 0.25 if delay == 0 else min(delay * 2, 2)
    if status != "Success" and WAIT:
        raise RuntimeError(f"command {command_id} ended {status}")
    return {"instance_id": instance_id, "eni_id": target, "action": action,
            "command_id": command_id, "status": status}


def handler(event, context):
    detail = event["detail"]
    if event["detail-type"] == "EC2 Instance State-change Notification":
        instance_id = detail["instance-id"]
        reason = instance_check(instance_id)
        if reason:
            return skipped(reason)
        enis = ec2.describe_network_interfaces(
            Filters=[{"Name": "attachment.instance-id", "Values": [instance_id]}])["NetworkInterfaces"]
        secondary = [e for e in enis if e["Attachment"]["DeviceIndex"] > 0]
        if not secondary:
            return skipped("no-secondary-enis")
        for e in secondary:
            ec2.create_tags(Resources=[e["NetworkInterfaceId"]], Tags=[
                {"Key": "symroute:instance-id", "Value": instance_id},
                {"Key": "symroute:attachment-id", "Value": e["Attachment"]["AttachmentId"]}])
        return send(instance_id, "apply", "all")
    if detail.get("errorCode"):
        return skipped("failed-call")
    params = detail["requestParameters"]
    if detail["eventName"] == "DetachNetworkInterface":
        found = ec2.describe_network_interfaces(Filters=[
            {"Name": "tag:symroute:attachment-id", "Values": [params["attachmentId"]]}])["NetworkInterfaces"]
        if not found:
            return skipped("unknown-attachment")
        instance_id = tags(found[0])["symroute:instance-id"]
        return send(instance_id, "remove", found[0]["NetworkInterfaceId"])
    eni_id, instance_id = params["networkInterfaceId"], params["instanceId"]
    eni = ec2.describe_network_interfaces(NetworkInterfaceIds=[eni_id])["NetworkInterfaces"][0]
    att = eni.get("Attachment") or {}
    if att.get("DeviceIndex", 0) == 0 and att.get("NetworkCardIndex", 0) == 0:
        return skipped("primary-interface")
    if eni.get("InterfaceType", "interface") != "interface":
        return skipped("interface-type")
    eni_tags = tags(eni)
    if "node.k8s.amazonaws.com/instance_id" in eni_tags or eni.get("Description", "").startswith("aws-K8S-"):
        return skipped("vpc-cni")
    if SKIP_TAG in eni_tags:
        return skipped("skip-tag")
    reason = instance_check(instance_id)
    if reason:
        return skipped(reason)
    ec2.create_tags(Resources=[eni_id], Tags=[
        {"Key": "symroute:instance-id", "Value": instance_id},
        {"Key": "symroute:attachment-id", "Value": att["AttachmentId"]}])
    return send(instance_id, "apply", eni_id)
