"""The template deployed into moto (AWS's own SAM transform, moto's CloudFormation), then the
document as deployed run against the agent as `make deploy` uploads it."""
import json
import os
import platform
import subprocess
import sys

import boto3
import pytest
import yaml

from conftest import PATTERNS, ROOT
import ssmdoc
import stack

HERE_FILE = stack.ARCHES[platform.machine()]


@pytest.fixture(scope="module")
def deployed(aws, tmp_path_factory):
    """Stand-in agents in dist/ form, uploaded by infra/upload_agent.py to the stack's bucket."""
    tmp = tmp_path_factory.mktemp("deployed")
    dist = tmp / "dist"
    marker = tmp / "agent-ran"
    stack.stand_in_agents(dist, marker)
    upload = [sys.executable, str(ROOT / "infra" / "upload_agent.py"), "--dist", str(dist)]
    params = subprocess.run([*upload, "--parameters"], capture_output=True, text=True, check=True)
    parameters = dict(word.split("=", 1) for word in params.stdout.split())
    outputs = stack.deploy("symroute-test", parameters)
    subprocess.run([*upload, "--stack", "symroute-test"], capture_output=True, text=True, check=True)
    return {"outputs": outputs, "dist": dist, "marker": marker, "tmp": tmp, "parameters": parameters}


def document(outputs):
    content = boto3.client("ssm").get_document(Name=outputs["DocumentName"])["Content"]
    return yaml.safe_load(content)


def run(deployed, name, **parameters):
    deployed["marker"].unlink(missing_ok=True)
    return ssmdoc.run(document(deployed["outputs"]), parameters, source=stack.s3_source,
                      orchestration=deployed["tmp"] / "orchestration", command_id=name,
                      env={"PATH": os.environ["PATH"]})


def release(params):
    return f"agent/{params['AgentSha256X8664']}-{params['AgentSha256Aarch64']}/"


def test_deployed_document_carries_the_digests_and_bucket(deployed):
    doc, params = document(deployed["outputs"]), deployed["parameters"]
    assert "@@" not in json.dumps(doc)
    bucket = deployed["outputs"]["AgentBucket"]
    paths = [json.loads(s["inputs"]["sourceInfo"])["path"] for s in doc["mainSteps"][:1]]
    assert paths == [f"https://s3.us-east-1.amazonaws.com/{bucket}/{release(params)}"]
    script = doc["mainSteps"][1]["inputs"]["runCommand"]
    assert f"sha_x86_64='{params['AgentSha256X8664']}'" in script
    assert f"sha_aarch64='{params['AgentSha256Aarch64']}'" in script


def test_deployed_document_runs_the_uploaded_agent(deployed):
    result = run(deployed, "apply", action="apply", target="eni-0a9c4b60624c0e41d")
    assert [s.exit_code for s in result.steps] == [0, 0], result.steps
    assert deployed["marker"].read_text().splitlines() == [
        "apply", "--eni", "eni-0a9c4b60624c0e41d", "--install-trigger", "--json"]


def test_a_tampered_object_in_the_bucket_is_refused(deployed):
    bucket = deployed["outputs"]["AgentBucket"]
    key = release(deployed["parameters"]) + HERE_FILE
    s3 = boto3.client("s3")
    original = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    pwned = deployed["tmp"] / "pwned"
    s3.put_object(Bucket=bucket, Key=key, Body=original.replace(b"printf", f"touch '{pwned}'; printf".encode()))
    try:
        result = run(deployed, "tampered")
        assert result.exit_code == 1
        assert "refusing to run" in result.step("runAgent").stderr
        assert not deployed["marker"].exists() and not pwned.exists()
    finally:
        s3.put_object(Bucket=bucket, Key=key, Body=original)


def test_lambda_is_wired_to_the_document_and_log_group(deployed):
    outputs = deployed["outputs"]
    config = boto3.client("lambda").get_function_configuration(FunctionName=outputs["FunctionName"])
    env = config["Environment"]["Variables"]
    assert env["SYMROUTE_DOCUMENT_NAME"] == outputs["DocumentName"]
    assert env["SYMROUTE_LOG_GROUP"] == outputs["CommandLogGroupName"]
    assert env["SYMROUTE_SKIP_TAG"] == "symroute:skip"
    assert (env["SYMROUTE_ON_HOST_TRIGGER"], env["SYMROUTE_CONNMARK"]) == ("true", "keep")
    assert config["Runtime"] == "provided.al2023"  # moto's CloudFormation drops Architectures


def test_rules_carry_the_pattern_files_and_target_the_lambda(deployed):
    events = boto3.client("events")
    function_arn = boto3.client("lambda").get_function(
        FunctionName=deployed["outputs"]["FunctionName"])["Configuration"]["FunctionArn"]
    canonical = lambda pattern: json.dumps(pattern, sort_keys=True)
    document = deployed["outputs"]["DocumentName"]
    patterns = sorted(canonical(json.loads(p.read_text().replace("@@Document@@", document)))
                      for p in PATTERNS.glob("*.json"))
    rules = [r for r in events.list_rules()["Rules"] if r["Name"].startswith("symroute-test-")]
    assert sorted(canonical(json.loads(r["EventPattern"])) for r in rules) == patterns
    for rule in rules:
        targets = events.list_targets_by_rule(Rule=rule["Name"])["Targets"]
        assert [t["Arn"] for t in targets] == [function_arn]
