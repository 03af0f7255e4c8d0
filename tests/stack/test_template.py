"""The SAM template: lint-clean, in step with the document and patterns, least privilege."""
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from cfnlint.decode import decode

from conftest import DOCUMENT, PATTERNS, ROOT, TEMPLATE


def load_template():
    template, problems = decode(str(TEMPLATE))
    assert not problems, problems
    return json.loads(json.dumps(template))


T = load_template()
R = T["Resources"]


CFN_LINT = Path(sys.executable).parent / "cfn-lint"


def test_cfn_lint_finds_nothing():
    """Zero errors and zero warnings (informational findings count too)."""
    proc = subprocess.run([CFN_LINT, "--include-checks", "I", "--", TEMPLATE],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


def test_cfn_lint_is_awake(tmp_path):
    """The lint step can fail: the same template with a bogus property is reported."""
    bad = tmp_path / "template.yaml"
    bad.write_text(TEMPLATE.read_text().replace("MemorySize: 256", "MemorySize: 256\n      Bogus: 1"))
    proc = subprocess.run([CFN_LINT, "--", bad], capture_output=True, text=True)
    assert proc.returncode != 0 and "Bogus" in proc.stdout, proc.stdout + proc.stderr


def unsub(node):
    """Undo infra/embed_document.py: Fn::Sub strings back to the document's @@Name@@ form."""
    if isinstance(node, dict):
        if set(node) == {"Fn::Sub"}:
            text = node["Fn::Sub"][0] if isinstance(node["Fn::Sub"], list) else node["Fn::Sub"]
            text = re.sub(r"\$\{([A-Za-z0-9:]+)\}", r"@@\1@@", text)
            return text.replace("${!", "${")
        return {k: unsub(v) for k, v in node.items()}
    if isinstance(node, list):
        return [unsub(v) for v in node]
    return node


def test_embedded_document_is_the_document():
    embedded = unsub(R["Document"]["Properties"]["Content"])
    assert embedded == yaml.safe_load(DOCUMENT.read_text()), "run `make stack-embed`"


def test_document_placeholders_all_resolve():
    embedded = json.dumps(R["Document"]["Properties"]["Content"])
    names = set(re.findall(r"\$\{([A-Za-z0-9:]+)\}", embedded))
    assert names, "no deploy-time values in the document"
    known = set(T["Parameters"]) | {"AWS::Region", "AWS::URLSuffix", "AgentBucket"}
    assert names <= known, names - known


@pytest.mark.parametrize("event,name", [("Attach", "attach-network-interface"),
                                        ("Detach", "detach-network-interface"),
                                        ("Running", "instance-running")])
def test_rules_use_the_pattern_files(event, name):
    rule = R["Function"]["Properties"]["Events"][event]
    assert rule["Type"] == "EventBridgeRule"
    assert rule["Properties"]["Pattern"] == json.loads((PATTERNS / f"{name}.json").read_text())
    assert rule["Properties"]["DeadLetterConfig"]["Arn"] == {"Fn::GetAtt": ["FailureQueue", "Arn"]}


def test_lambda_is_built_by_cargo_lambda_from_the_package():
    fn = R["Function"]
    props = fn["Properties"]
    assert props["Runtime"] == "provided.al2023"
    assert props["Architectures"] == ["arm64"]
    assert props["Handler"] == "bootstrap"
    assert fn["Metadata"]["BuildMethod"] == "rust-cargolambda"
    crate = (TEMPLATE.parent / props["CodeUri"]).resolve()
    manifest = tomllib.loads((crate / "Cargo.toml").read_text())
    binary = fn["Metadata"]["BuildProperties"]["Binary"]
    assert manifest["package"]["name"] == "symroute-lambda"
    assert binary in [b["name"] for b in manifest.get("bin", [])] or binary == manifest["package"]["name"]
    env = props["Environment"]["Variables"]
    assert env["SYMROUTE_DOCUMENT_NAME"] == {"Ref": "Document"}
    assert {"SYMROUTE_WAIT_SECONDS", "SYMROUTE_SKIP_TAG", "SYMROUTE_LOG_GROUP"} <= set(env)
    failure = props["EventInvokeConfig"]["DestinationConfig"]["OnFailure"]
    assert failure == {"Type": "SQS", "Destination": {"Fn::GetAtt": ["FailureQueue", "Arn"]}}
    assert props["LoggingConfig"]["LogGroup"] == {"Ref": "FunctionLogGroup"}


def test_every_log_group_has_a_retention():
    groups = [r for r in R.values() if r["Type"] == "AWS::Logs::LogGroup"]
    assert len(groups) == 2
    assert all(g["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"} for g in groups)


def test_failure_queue_has_an_alarm():
    alarm = R["FailureAlarm"]["Properties"]
    assert alarm["Namespace"] == "AWS/SQS"
    assert alarm["Dimensions"][0]["Value"] == {"Fn::GetAtt": ["FailureQueue", "QueueName"]}
    assert alarm["Threshold"] == 1


def test_artifact_bucket_is_private_encrypted_versioned_tls_only():
    props = R["ArtifactBucket"]["Properties"]
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert all(props["PublicAccessBlockConfiguration"].values())
    assert len(props["PublicAccessBlockConfiguration"]) == 4
    statements = R["ArtifactBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    tls = [s for s in statements if s["Effect"] == "Deny" and "aws:SecureTransport" in json.dumps(s)]
    assert tls and tls[0]["Condition"]["Bool"]["aws:SecureTransport"] == "false"
    assert not [s for s in statements if s["Effect"] == "Allow"]


def statements(resource):
    props = R[resource]["Properties"]
    if "PolicyDocument" in props:
        return props["PolicyDocument"]["Statement"]
    return [s for p in props["Policies"] for s in p["PolicyDocument"]["Statement"]]


def as_list(value):
    return value if isinstance(value, list) else [value]


def test_lambda_role_is_least_privilege():
    allowed = [s for s in statements("FunctionRole") if s["Effect"] == "Allow"]
    actions = [a for s in allowed for a in as_list(s["Action"])]
    assert not [a for a in actions if "*" in a], "wildcard action"
    assert len(actions) == len(set(actions))
    by_action = {a: s for s in allowed for a in as_list(s["Action"])}
    send = as_list(by_action["ssm:SendCommand"]["Resource"])
    assert [r["Fn::Sub"] for r in send] == [
        "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:document/${Document}",
        "arn:${AWS::Partition}:ec2:${AWS::Region}:${AWS::AccountId}:instance/*"]
    tags = by_action["ec2:CreateTags"]
    assert tags["Resource"]["Fn::Sub"].endswith(":network-interface/*")
    assert tags["Condition"]["ForAllValues:StringLike"]["aws:TagKeys"] == ["symroute:*"]
    star = {a for s in allowed if s["Resource"] == "*" for a in as_list(s["Action"])}
    assert all(re.match(r"(ec2|ssm):(Describe|Get|List)", a) for a in star), star
    assert set(actions) >= {"ec2:DescribeNetworkInterfaces", "ec2:DescribeInstances",
                            "ssm:GetCommandInvocation", "logs:PutLogEvents", "sqs:SendMessage"}


def test_instance_policy_reads_only_the_agent():
    allowed = statements("InstancePolicy")
    actions = {a for s in allowed for a in as_list(s["Action"])}
    assert actions == {"s3:GetObject", "s3:ListBucket", "logs:CreateLogStream", "logs:PutLogEvents",
                       "logs:DescribeLogStreams", "logs:DescribeLogGroups"}
    get = next(s for s in allowed if s["Action"] == "s3:GetObject")
    assert get["Resource"]["Fn::Sub"][0].endswith("/agent/*")
    listing = next(s for s in allowed if s["Action"] == "s3:ListBucket")
    assert listing["Condition"]["StringLike"]["s3:prefix"] == ["agent/*"]


def test_optional_parts_are_conditional():
    assert R["Trail"]["Condition"] == "CreateTrailCondition"
    assert R["TrailBucket"]["Condition"] == "CreateTrailCondition"
    assert T["Parameters"]["CreateTrail"]["Default"] == "false"
    assoc = R["Association"]
    assert assoc["Condition"] == "CreateAssociation"
    assert assoc["Properties"]["Parameters"] == {"action": ["apply"], "target": ["all"]}
    assert assoc["Properties"]["ApplyOnlyAtCronInterval"] is False
    assert R["ArtifactBucket"]["Condition"] == "CreateArtifactBucket"


def test_nothing_account_region_or_name_specific():
    """StackSet-able: no account ids, regions, partitions or fixed resource names."""
    text = TEMPLATE.read_text()
    assert not re.search(r"(?<![0-9a-f{])\d{12}(?!\d)", text), "an account id"
    assert not re.search(r"\b(us|eu|ap|sa|ca|me|af|il|mx)-(east|west|north|south|central|northeast|southeast)-\d\b", text)
    assert not re.search(r"arn:aws[a-z-]*:", text), "a hard-coded partition"
    named = {"BucketName", "QueueName", "RoleName", "ManagedPolicyName", "FunctionName",
             "LogGroupName", "TrailName", "AssociationName", "Name"}
    for logical, resource in R.items():
        for key in named & set(resource.get("Properties", {})):
            value = resource["Properties"][key]
            assert not isinstance(value, str), f"{logical}.{key} is fixed to {value!r}"


def test_stackset_template_is_plain_lint_clean_cloudformation(tmp_path):
    """What a service-managed StackSet gets (no macros: AWS's own SAM transform applied)."""
    sys.path.insert(0, str(ROOT / "infra"))
    from stackset import stackset_template

    out = stackset_template()
    assert "Transform" not in out
    types = {r["Type"] for r in out["Resources"].values()}
    assert not [t for t in types if t.startswith("AWS::Serverless::")]
    assert {"AWS::Events::Rule", "AWS::Lambda::Permission", "AWS::Lambda::EventInvokeConfig"} <= types
    fn = out["Resources"]["Function"]["Properties"]
    assert fn["Code"]["S3Bucket"] == {"Fn::Sub": "${LambdaCodeBucketPrefix}-${AWS::Region}"}
    assert fn["Architectures"] == ["arm64"]
    text = json.dumps(out)
    assert not re.search(r"\d{12}|arn:aws:|us-east-1", text), "account, partition or region leaked in"
    rendered = tmp_path / "stackset.json"
    rendered.write_text(json.dumps(out))
    proc = subprocess.run([CFN_LINT, "--include-checks", "I", "--", rendered], capture_output=True, text=True)
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr
