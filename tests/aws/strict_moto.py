#!/usr/bin/env python3
"""moto behind a strict layer: the local AWS API for every test and the demo.

moto is more lenient than AWS in ways that hid real failures, so this layer enforces the
documented contracts moto skips, before moto sees a request (each one is listed in
tests/README.md):

Systems Manager
- SendCommand: every parameter is checked against the document as the service and the SSM
  Agent check it (unknown names, allowedValues, allowedPattern compiled with RE2 and matched
  unanchored: ssmdoc.validate); the document must exist; every instance must be registered
  and Online (the service answers InvalidInstanceId otherwise); TimeoutSeconds 30..2592000;
  Comment at most 100 characters; at most 50 InstanceIds. The true recipients are recorded:
  moto's ListCommands puts every instance of the region into InstanceIds.
- ListCommands: the true recipients; Filters implemented (DocumentName, InvokedAfter,
  InvokedBefore, Status) with the documented key names and timestamp form; others refused.
- GetCommandInvocation: PluginName is required for a document with more than one step
  (InvalidPluginName), must name a step, and the instance must be a recipient
  (InvocationDoesNotExist). The answer is what the instance's agent reported (POST
  /_strict/report); until then the invocation is Pending, never moto's instant Success.
- DescribeInstanceInformation (moto has none): answers from the instances registered with
  POST /_strict/register, as an SSM Agent registering would.
- A reported invocation emits Systems Manager's "EC2 Command Invocation Status-change
  Notification" into the default event bus (PutEvents), as the service does.

Control endpoints (JSON, loopback only): POST /_strict/register {instance_id, ping_status,
platform_type, agent_version}; POST /_strict/report {command_id, instance_id, status, steps:
[{name, status, response_code, stdout, stderr}]}; GET /_strict/state.

  strict_moto.py -H 127.0.0.1 -p PORT
"""
from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import re
import sys
import threading
import time
from pathlib import Path

import yaml
from werkzeug.serving import run_simple
from werkzeug.test import Client
from werkzeug.wrappers import Request, Response

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "stack"))
import ssmdoc  # noqa: E402

from moto.moto_server.werkzeug_app import (  # noqa: E402
    DomainDispatcherApplication, MotoRequestHandler, create_backend_app)

ACCOUNT = "123456789012"
COMMAND_STATUS = "EC2 Command Invocation Status-change Notification"
LIST_COMMAND_FILTERS = {"InvokedAfter", "InvokedBefore", "Status", "ExecutionStage", "DocumentName"}
# The documented timestamp forms for InvokedAfter/InvokedBefore (2024-07-07T00:00:00Z, or a date).
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}:\d{2}Z)?$")


def _json_error(code: str, message: str, status: int = 400) -> Response:
    body = json.dumps({"__type": code, "message": message})
    return Response(body, status=status, content_type="application/x-amz-json-1.1")


def _json(data: dict) -> Response:
    return Response(json.dumps(data, default=str), content_type="application/x-amz-json-1.1")


def _timestamp(text: str) -> float:
    if not TIMESTAMP.match(text):
        raise ValueError(text)
    fmt = "%Y-%m-%dT%H:%M:%SZ" if "T" in text else "%Y-%m-%d"
    return dt.datetime.strptime(text, fmt).replace(tzinfo=dt.timezone.utc).timestamp()


class StrictLayer:
    def __init__(self, moto):
        self.moto = moto
        self.client = Client(moto)
        self.lock = threading.Lock()
        self.instances: dict[str, dict] = {}
        # command id -> {"instances", "document", "time", "steps"}
        self.commands: dict[str, dict] = {}
        # (command id, instance id) -> {"status", "steps": {name: {...}}}
        self.reports: dict[tuple[str, str], dict] = {}
        self.rejections: list[str] = []

    # -- plumbing ---------------------------------------------------------------------------
    def _moto_call(self, service: str, target: str, region: str, body: dict) -> dict:
        headers = {
            "X-Amz-Target": target,
            "Content-Type": "application/x-amz-json-1.1",
            "Authorization": f"AWS4-HMAC-SHA256 Credential=testing/20260101/{region}/{service}/aws4_request, "
                             "SignedHeaders=host, Signature=0",
            "Host": f"{service}.{region}.amazonaws.com",
        }
        res = self.client.post("/", headers=headers, data=json.dumps(body))
        data = json.loads(res.get_data(as_text=True) or "{}")
        if res.status_code >= 400:
            raise LookupError(data.get("__type", str(res.status_code)), data.get("message", ""))
        return data

    def _forward(self, environ, start_response, body: bytes):
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        return self.moto(environ, start_response)

    def _moto_json(self, environ, body: bytes) -> tuple[int, dict]:
        captured = {}

        def start(status, headers, exc_info=None):
            captured["status"] = int(status.split()[0])

        chunks = self._forward(environ, start, body)
        text = b"".join(chunks).decode()
        return captured["status"], json.loads(text or "{}")

    def _reject(self, code: str, message: str) -> Response:
        with self.lock:
            self.rejections.append(f"{code}: {message}")
        return _json_error(code, message)

    # -- WSGI -------------------------------------------------------------------------------
    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path.startswith("/_strict/"):
            return self._control(Request(environ))(environ, start_response)
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if not target.startswith("AmazonSSM."):
            return self.moto(environ, start_response)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        op = target.split(".", 1)[1]
        region = self._region(environ)
        handler = getattr(self, f"_ssm_{op}", None)
        if handler is None:
            return self._forward(environ, start_response, body)
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            return _json_error("SerializationException", "body is not JSON")(environ, start_response)
        result = handler(environ, body, request, region)
        if isinstance(result, Response):
            return result(environ, start_response)
        return result(start_response)

    @staticmethod
    def _region(environ) -> str:
        auth = environ.get("HTTP_AUTHORIZATION", "")
        match = re.search(r"Credential=[^/]+/\d+/([a-z0-9-]+)/", auth)
        return match.group(1) if match else "us-east-1"

    # -- control ----------------------------------------------------------------------------
    def _control(self, request: Request) -> Response:
        if request.path == "/_strict/state":
            with self.lock:
                return _json({"instances": self.instances, "commands": self.commands,
                              "reports": {f"{c} {i}": r for (c, i), r in self.reports.items()},
                              "rejections": self.rejections})
        data = request.get_json(force=True, silent=True) or {}
        if request.path == "/_strict/register":
            instance = data["instance_id"]
            with self.lock:
                self.instances[instance] = {
                    "InstanceId": instance,
                    "PingStatus": data.get("ping_status", "Online"),
                    "PlatformType": data.get("platform_type", "Linux"),
                    "PlatformName": data.get("platform_name", "Debian GNU/Linux"),
                    "AgentVersion": data.get("agent_version", "3.3.2746.0"),
                    "ResourceType": "EC2Instance",
                    "LastPingDateTime": time.time(),
                }
            return _json({"registered": instance})
        if request.path == "/_strict/report":
            return self._report(data)
        return _json_error("NotFound", request.path, 404)

    def _report(self, data: dict) -> Response:
        command, instance = data["command_id"], data["instance_id"]
        with self.lock:
            known = self.commands.get(command)
            if not known or instance not in known["instances"]:
                return _json_error("InvocationDoesNotExist", f"{command} was not sent to {instance}")
            steps = {s["name"]: s for s in data.get("steps", [])}
            self.reports[(command, instance)] = {"status": data["status"], "steps": steps}
            document, region = known["document"], known["region"]
        detail = {"command-id": command, "document-name": document, "instance-id": instance,
                  "requested-date-time": dt.datetime.now(dt.timezone.utc).isoformat(), "status": data["status"]}
        entry = {"Source": "aws.ssm", "DetailType": COMMAND_STATUS, "Detail": json.dumps(detail),
                 "Resources": [f"arn:aws:ec2:{region}:{ACCOUNT}:instance/{instance}"]}
        try:
            self._moto_call("events", "AWSEvents.PutEvents", region, {"Entries": [entry]})
        except LookupError as err:
            return _json_error("PutEventsFailed", str(err), 500)
        return _json({"reported": command})

    # -- Systems Manager --------------------------------------------------------------------
    def _document(self, region: str, name: str) -> dict | None:
        try:
            doc = self._moto_call("ssm", "AmazonSSM.GetDocument", region, {"Name": name})
        except LookupError:
            return None
        return yaml.safe_load(doc["Content"])

    def _ssm_DescribeInstanceInformation(self, environ, body, request, region):
        wanted = None
        for f in request.get("Filters", []):
            if f.get("Key") == "InstanceIds":
                wanted = set(f.get("Values", []))
        for f in request.get("InstanceInformationFilterList", []):
            if f.get("key") == "InstanceIds":
                wanted = set(f.get("valueSet", []))
        with self.lock:
            found = [i for k, i in self.instances.items() if wanted is None or k in wanted]
        return _json({"InstanceInformationList": found})

    def _ssm_SendCommand(self, environ, body, request, region):
        name = request.get("DocumentName", "")
        document = self._document(region, name)
        if document is None:
            return self._reject("InvalidDocument", f"document {name} does not exist")
        instances = request.get("InstanceIds", [])
        if not instances and not request.get("Targets"):
            return self._reject("ValidationException", "InstanceIds or Targets is required")
        if len(instances) > 50:
            return self._reject("ValidationException", "at most 50 InstanceIds")
        timeout = request.get("TimeoutSeconds")
        if timeout is not None and not 30 <= int(timeout) <= 2592000:
            return self._reject("ValidationException", f"TimeoutSeconds {timeout} is not in 30..2592000")
        if len(request.get("Comment", "")) > 100:
            return self._reject("ValidationException", "Comment is longer than 100 characters")
        with self.lock:
            unknown = [i for i in instances if self.instances.get(i, {}).get("PingStatus") != "Online"]
        if unknown:
            return self._reject("InvalidInstanceId", f"Instances {unknown} not in a valid state for account {ACCOUNT}")
        given = {k: v[0] if isinstance(v, list) and len(v) == 1 else v
                 for k, v in request.get("Parameters", {}).items()}
        if any(not isinstance(v, str) for v in given.values()):
            return self._reject("InvalidParameters", "each parameter takes exactly one String here")
        try:
            ssmdoc.validate(document, given)
        except ssmdoc.InvalidParameters as err:
            return self._reject("InvalidParameters", str(err))
        status, answer = self._moto_json(environ, body)
        if status >= 400:
            return _json_error(answer.get("__type", "InternalServerError"), answer.get("message", ""), status)
        command = answer["Command"]
        with self.lock:
            self.commands[command["CommandId"]] = {
                "instances": instances, "document": name, "region": region, "time": time.time(),
                "comment": request.get("Comment", ""),
                "steps": [s["name"] for s in document.get("mainSteps", [])],
            }
        command["InstanceIds"] = instances
        return _json(answer)

    def _ssm_ListCommands(self, environ, body, request, region):
        filters = request.pop("Filters", [])
        for f in filters:
            if f.get("key") not in LIST_COMMAND_FILTERS:
                return self._reject("InvalidFilterKey", f"ListCommands has no filter {f.get('key')!r}")
            if f.get("key") in ("InvokedAfter", "InvokedBefore"):
                try:
                    f["when"] = _timestamp(f.get("value", ""))
                except ValueError:
                    return self._reject("InvalidFilterValue", f"{f['key']} {f.get('value')!r} is not a timestamp "
                                                              "of the form 2024-07-07T00:00:00Z")
        instance = request.get("InstanceId")
        status, answer = self._moto_json(environ, json.dumps(request).encode())
        if status >= 400:
            return _json_error(answer.get("__type", "InternalServerError"), answer.get("message", ""), status)
        kept = []
        with self.lock:
            for c in answer.get("Commands", []):
                mine = self.commands.get(c["CommandId"])
                if mine is None:
                    kept.append(c)
                    continue
                c["InstanceIds"] = mine["instances"]
                if instance and instance not in mine["instances"]:
                    continue
                if all(self._matches(f, c, mine) for f in filters):
                    kept.append(c)
        answer["Commands"] = kept
        return _json(answer)

    @staticmethod
    def _matches(f: dict, command: dict, mine: dict) -> bool:
        key, value = f["key"], f.get("value", "")
        if key == "DocumentName":
            return command.get("DocumentName") == value
        if key == "InvokedAfter":
            return mine["time"] >= f["when"]
        if key == "InvokedBefore":
            return mine["time"] <= f["when"]
        if key == "Status":
            return command.get("Status") == value
        return True

    def _ssm_GetCommandInvocation(self, environ, body, request, region):
        command, instance = request.get("CommandId", ""), request.get("InstanceId", "")
        plugin = request.get("PluginName")
        with self.lock:
            mine = self.commands.get(command)
            report = self.reports.get((command, instance))
        if mine is None:
            return self._reject("InvalidCommandId", f"{command}")
        if instance not in mine["instances"]:
            return self._reject("InvocationDoesNotExist", f"{command} was not sent to {instance}")
        if plugin is None and len(mine["steps"]) > 1:
            return self._reject("InvalidPluginName",
                                f"the document has {len(mine['steps'])} steps: PluginName must name one")
        if plugin is not None and plugin not in mine["steps"]:
            return self._reject("InvalidPluginName", f"the document has no step {plugin!r}")
        step = plugin or mine["steps"][0]
        answer = {"CommandId": command, "InstanceId": instance, "DocumentName": mine["document"],
                  "PluginName": step, "Comment": mine["comment"]}
        got = (report or {}).get("steps", {}).get(step)
        if got is None:
            answer.update({"Status": "Pending" if report is None else report["status"],
                           "StatusDetails": "Pending" if report is None else report["status"],
                           "ResponseCode": -1, "StandardOutputContent": "", "StandardErrorContent": ""})
        else:
            answer.update({"Status": got["status"], "StatusDetails": got["status"],
                           "ResponseCode": got["response_code"],
                           "StandardOutputContent": got.get("stdout", ""),
                           "StandardErrorContent": got.get("stderr", "")})
        return _json(answer)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args()
    if not args.host.startswith("127."):
        raise SystemExit("strict_moto: serves loopback only")
    moto = DomainDispatcherApplication(create_backend_app)
    run_simple(args.host, args.port, StrictLayer(moto), threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
