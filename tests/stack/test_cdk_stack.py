"""The CDK construct's example app (infra/cdk), synthesized by the real `cdk synth`, checked by
cfn-lint and deployed into moto as `cdk deploy` would; then the document as deployed runs the
agent as the SAM stack's does (test_deployed_stack.py). Needs `make cdk-build` (test-stack runs it)."""
import os
import platform
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
import yaml

from conftest import ROOT
import ssmdoc
import stack

@pytest.fixture(scope="module")
def stand_in_dist(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cdk")
    marker = tmp / "agent-ran"
    digests = stack.stand_in_agents(tmp / "dist", marker)
    return {"tmp": tmp, "dist": tmp / "dist", "marker": marker, "digests": digests,
            "code": stack.stand_in_code(tmp / "code")}


@pytest.fixture(scope="module")
def assembly(stand_in_dist):
    d = stand_in_dist
    return stack.synth_cdk(d["tmp"] / "cdk.out", {
        "agentSha256X8664": d["digests"]["symroute-linux-x86_64"],
        "agentSha256Aarch64": d["digests"]["symroute-linux-aarch64"],
        "lambdaZip": str(d["code"]), "createTrail": "true", "associationTagKey": "symroute",
    })


def test_cdk_synth_output_passes_cfn_lint_with_no_findings(assembly):
    (template,) = assembly.glob("*.template.json")
    lint = subprocess.run([str(Path(sys.executable).parent / "cfn-lint"), "--format", "parseable", "--include-checks", "I", "--", str(template)],
                          capture_output=True, text=True)
    assert lint.returncode == 0 and lint.stdout == "", f"cfn-lint findings:\n{lint.stdout}{lint.stderr}"


def test_cdk_synth_refuses_a_malformed_digest_before_anything_is_written(stand_in_dist, tmp_path):
    """The construct checks the template's AllowedPatterns at synth time: a deploy never starts."""
    with pytest.raises(RuntimeError, match="agentSha256X8664 must be 64 lowercase hex digits"):
        stack.synth_cdk(tmp_path / "bad.out", {"agentSha256X8664": "ABC", "agentSha256Aarch64": "0" * 64,
                                               "lambdaZip": str(stand_in_dist["code"])})
    assert not list((tmp_path / "bad.out").glob("*.template.json"))


def test_cdk_stack_deploys_into_moto_and_its_document_runs_the_agent(aws, assembly, stand_in_dist):
    d = stand_in_dist
    outputs = stack.deploy_cdk("symroute-cdk", assembly)
    assert set(outputs) >= {"DocumentName", "AgentBucket", "FunctionName", "InstancePolicyArn",
                            "CommandLogGroupName", "FailureQueueUrl"}
    subprocess.run([sys.executable, str(ROOT / "infra" / "upload_agent.py"), "--dist", str(d["dist"]),
                    "--bucket", outputs["AgentBucket"]], capture_output=True, text=True, check=True)
    events = boto3.client("events")
    rules = [r for r in events.list_rules()["Rules"] if r["Name"].startswith("symroute-cdk")]
    assert len(rules) == 5 and all(r["State"] == "ENABLED" for r in rules)
    function = boto3.client("lambda").get_function_configuration(FunctionName=outputs["FunctionName"])
    assert function["Environment"]["Variables"]["SYMROUTE_DOCUMENT_NAME"] == outputs["DocumentName"]
    content = boto3.client("ssm").get_document(Name=outputs["DocumentName"])["Content"]
    document = yaml.safe_load(content)
    d["marker"].unlink(missing_ok=True)
    result = ssmdoc.run(document, {"action": "apply", "target": "eni-0123456789abcdef0"},
                        source=stack.s3_source, orchestration=d["tmp"] / "orchestration",
                        command_id="cdk-apply", env={"PATH": os.environ["PATH"]})
    assert result.exit_code == 0, result
    assert d["marker"].read_text().split() == [
        "apply", "--eni", "eni-0123456789abcdef0", "--install-trigger", "--json"]
