#!/usr/bin/env python3
"""The AWS side of `make demo` and the end-to-end tests, against a local moto server.

One process, boto3 loaded once: it reads one JSON request per line on stdin,
`{"op": NAME, ...arguments}`, and answers one JSON line on stdout, `{"ok": {...}}` or
`{"error": "one line"}`. The caller (tests/src/demo/) drives the timeline; this side only
speaks to moto, named by AWS_ENDPOINT_URL (with fake credentials and a region).

The stack is deployed as the template defines it (tests/stack/stack.py, the agent uploaded by
infra/upload_agent.py). moto cannot invoke a Lambda, so each of the stack's rules targets a
queue instead, which the caller drains and hands to the real Lambda binary.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import traceback
import uuid
from datetime import datetime, timezone
from pathlib import Path

import boto3

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "stack"))
sys.path.insert(0, str(ROOT / "infra"))
import stack  # noqa: E402
import upload_agent  # noqa: E402

QUEUE = "symroute-demo-events"


def clients():
    if not os.environ.get("AWS_ENDPOINT_URL", "").startswith("http://127.0.0.1:"):
        raise SystemExit("aws_side: AWS_ENDPOINT_URL must name a moto server on 127.0.0.1")
    names = ["ec2", "ssm", "s3", "sqs", "events", "lambda", "sts"]
    return {n: boto3.client(n) for n in names}


class Side:
    def __init__(self):
        self.c = clients()
        self.queue_url = None

    # --- the stack -------------------------------------------------------------------------

    def deploy(self, stack_name: str, dist: str, source: str = "sam") -> dict:
        """Deploy the stack with the agent's digests (the SAM template, or the CDK example app
        synthesized by `cdk synth` when source is "cdk"), upload the agent, route the rules to
        a queue as well. Returns what the caller needs to run the Lambda and the instance."""
        dist_dir = Path(dist)
        sums = upload_agent.digests(dist_dir)
        params = {upload_agent.FILES[name]: digest for name, digest in sums.items()}
        if source == "sam":
            outputs = stack.deploy(stack_name, params)
        elif source == "cdk":
            work = Path(tempfile.mkdtemp(prefix="symroute-demo-cdk-"))
            # moto never runs the Lambda: the caller runs the real binary.
            code = stack.stand_in_code(work / "code")
            context = {"agentSha256X8664": params["AgentSha256X8664"],
                       "agentSha256Aarch64": params["AgentSha256Aarch64"], "lambdaZip": str(code)}
            outputs = stack.deploy_cdk(stack_name, stack.synth_cdk(work / "cdk.out", context))
        else:
            raise ValueError(f"unknown stack source {source!r} (sam or cdk)")
        # upload_agent prints what it uploads: keep stdout for answers only.
        saved, sys.stdout = sys.stdout, sys.stderr
        try:
            upload_agent.upload(outputs["AgentBucket"], dist_dir, sums)
        finally:
            sys.stdout = saved
        function = self.c["lambda"].get_function_configuration(FunctionName=outputs["FunctionName"])
        function_arn = function["FunctionArn"]
        sqs = self.c["sqs"]
        self.queue_url = sqs.create_queue(QueueName=QUEUE)["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])[
            "Attributes"]["QueueArn"]
        events = self.c["events"]
        rules = []
        for rule in events.list_rules()["Rules"]:
            targets = events.list_targets_by_rule(Rule=rule["Name"])["Targets"]
            lambda_ids = [t["Id"] for t in targets if t["Arn"] == function_arn]
            if lambda_ids:
                # moto raises on a Lambda target at PutEvents: the queue stands in for it.
                events.remove_targets(Rule=rule["Name"], Ids=lambda_ids)
                events.put_targets(Rule=rule["Name"], Targets=[{"Id": "demo-queue", "Arn": queue_arn}])
                rules.append({"name": rule["Name"], "pattern": json.loads(rule["EventPattern"])})
        if not rules:
            raise RuntimeError(f"stack {stack_name} has no rule targeting {function_arn}")
        keys = {name: upload_agent.release_prefix(sums) + name for name in sums}
        return {"outputs": outputs, "function_env": function["Environment"]["Variables"],
                "rules": rules, "queue_url": self.queue_url, "agent_keys": keys}

    def tamper(self, bucket: str, key: str) -> dict:
        """Replace an uploaded agent with different bytes (what an attacker with bucket write
        access could do); the document's digest check must refuse it."""
        s3 = self.c["s3"]
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        s3.put_object(Bucket=bucket, Key=key, Body=body + b"\n# tampered\n")
        return {"bucket": bucket, "key": key}

    # --- EC2 -------------------------------------------------------------------------------

    def network(self, cidr: str, subnets: list[str]) -> dict:
        ec2 = self.c["ec2"]
        vpc = ec2.create_vpc(CidrBlock=cidr)["Vpc"]["VpcId"]
        ids = [ec2.create_subnet(VpcId=vpc, CidrBlock=s, AvailabilityZone="us-east-1a")["Subnet"]["SubnetId"]
               for s in subnets]
        return {"vpc_id": vpc, "subnet_ids": ids}

    def instance(self, subnet_id: str, ip: str, tags: dict[str, str]) -> dict:
        """A running Linux instance whose primary ENI has `ip` (moto hands out reserved
        addresses such as .1 unless told)."""
        ec2 = self.c["ec2"]
        images = ec2.describe_images(Owners=["amazon"])["Images"]
        linux = [i for i in images if i.get("Platform") != "windows"]
        image = next((i for i in linux if "amzn" in i.get("Name", "")), linux[0])["ImageId"]
        spec = {"ImageId": image, "MinCount": 1, "MaxCount": 1, "InstanceType": "t3.micro",
                "NetworkInterfaces": [{"DeviceIndex": 0, "SubnetId": subnet_id, "PrivateIpAddress": ip}]}
        if tags:
            spec["TagSpecifications"] = [{"ResourceType": "instance",
                                          "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]
        instance = ec2.run_instances(**spec)["Instances"][0]
        primary = instance["NetworkInterfaces"][0]
        return {"instance_id": instance["InstanceId"], **self._eni(primary["NetworkInterfaceId"])}

    def eni(self, subnet_id: str, ip: str) -> dict:
        created = self.c["ec2"].create_network_interface(SubnetId=subnet_id, PrivateIpAddress=ip,
                                                         Description="symroute demo")
        return self._eni(created["NetworkInterface"]["NetworkInterfaceId"])

    def _eni(self, eni_id: str) -> dict:
        eni = self.c["ec2"].describe_network_interfaces(NetworkInterfaceIds=[eni_id])["NetworkInterfaces"][0]
        return {"eni_id": eni_id, "mac": eni["MacAddress"].lower(), "subnet_id": eni["SubnetId"],
                "vpc_id": eni["VpcId"], "ips": [a["PrivateIpAddress"] for a in eni["PrivateIpAddresses"]]}

    def attach(self, eni_id: str, instance_id: str, device_index: int) -> dict:
        answer = self.c["ec2"].attach_network_interface(
            NetworkInterfaceId=eni_id, InstanceId=instance_id, DeviceIndex=device_index)
        return {"attachment_id": answer["AttachmentId"], "request_id": answer["ResponseMetadata"]["RequestId"]}

    def detach(self, attachment_id: str) -> dict:
        answer = self.c["ec2"].detach_network_interface(AttachmentId=attachment_id)
        return {"request_id": answer["ResponseMetadata"]["RequestId"]}

    # --- the event -------------------------------------------------------------------------

    def publish(self, event_name: str, request_parameters: dict, response_elements: dict) -> dict:
        """PutEvents with the CloudTrail record CloudTrail would have written for this call
        (the shape of a real AttachNetworkInterface record); the rules decide delivery."""
        account = self.c["sts"].get_caller_identity()["Account"]
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        request_id = response_elements.get("requestId") or str(uuid.uuid4())
        detail = {
            "eventVersion": "1.08",
            "userIdentity": {"type": "Root", "principalId": account,
                             "arn": f"arn:aws:iam::{account}:root", "accountId": account},
            "eventTime": now,
            "eventSource": "ec2.amazonaws.com",
            "eventName": event_name,
            "awsRegion": boto3.session.Session().region_name,
            "sourceIPAddress": "AWS Internal",
            "userAgent": "symroute-demo",
            "requestParameters": request_parameters,
            "responseElements": {"requestId": request_id, **response_elements},
            "requestID": request_id,
            "eventID": str(uuid.uuid4()),
            "readOnly": False,
            "eventType": "AwsApiCall",
            "managementEvent": True,
            "recipientAccountId": account,
            "eventCategory": "Management",
        }
        entries = self.c["events"].put_events(Entries=[{
            "Source": "aws.ec2", "DetailType": "AWS API Call via CloudTrail",
            "Detail": json.dumps(detail), "Time": datetime.now(timezone.utc)}])["Entries"]
        if "EventId" not in entries[0]:
            raise RuntimeError(f"PutEvents refused the event: {entries[0]}")
        return {"event_id": entries[0]["EventId"], "detail": detail}

    def drain(self, wait_seconds: int = 0) -> dict:
        """What the rules delivered to the queue so far (deleted once read)."""
        sqs = self.c["sqs"]
        events = []
        while True:
            got = sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10,
                                      WaitTimeSeconds=0 if events else wait_seconds)
            messages = got.get("Messages", [])
            if not messages:
                return {"events": events}
            for m in messages:
                events.append(json.loads(m["Body"]))
                sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=m["ReceiptHandle"])

    # --- SSM -------------------------------------------------------------------------------

    def commands(self, instance_id: str) -> dict:
        """Commands SSM holds for the instance (the strict layer lists only true recipients)."""
        listed = self.c["ssm"].list_commands(InstanceId=instance_id)["Commands"]
        return {"commands": [{"command_id": c["CommandId"], "document": c["DocumentName"],
                              "instance_ids": c.get("InstanceIds", []),
                              "parameters": {k: v[0] for k, v in c.get("Parameters", {}).items()}}
                             for c in listed]}


def main():
    side = Side()
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            op = request.pop("op")
            if op.startswith("_") or not callable(getattr(side, op, None)):
                raise ValueError(f"unknown op {op!r}")
            answer = {"ok": getattr(side, op)(**request)}
        except Exception as err:  # noqa: BLE001 - every failure becomes a one-line answer
            traceback.print_exc(file=sys.stderr)
            answer = {"error": f"{type(err).__name__}: {err}".splitlines()[0]}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
