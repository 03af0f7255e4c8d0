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


def pattern_file(name):
    """A pattern file as the template embeds it: a whole "@@Name@@" string is {"Ref": "Name"}."""
    text = re.sub(r'"@@([A-Za-z0-9]+)@@"', r'{"Ref": "\1"}', (PATTERNS / f"{name}.json").read_text())
    return json.loads(text)


@pytest.mark.parametrize("event,name", [("Attach", "attach-network-interface"),
                                        ("Detach", "detach-network-interface"),
                                        ("Addresses", "address-change"),
                                        ("Running", "instance-running"),
                                        ("CommandStatus", "command-status")])
def test_rules_use_the_pattern_files(event, name):
    rule = R["Function"]["Properties"]["Events"][event]
    assert rule["Type"] == "EventBridgeRule"
    assert rule["Properties"]["Pattern"] == pattern_file(name)
    assert rule["Properties"]["DeadLetterConfig"]["Arn"] == {"Fn::GetAtt": ["FailureQueue", "Arn"]}
    # A new stack starts disabled until its agent is uploaded (infra/deploy.sh).
    assert rule["Properties"]["State"] == {"Fn::If": ["IsEnabled", "ENABLED", "DISABLED"]}


def test_every_pattern_file_is_embedded():
    events = R["Function"]["Properties"]["Events"].values()
    embedded = [json.dumps(e["Properties"]["Pattern"], sort_keys=True) for e in events]
    for path in PATTERNS.glob("*.json"):
        assert json.dumps(pattern_file(path.stem), sort_keys=True) in embedded, path.name


def test_command_status_rule_names_only_this_stacks_document_and_failures():
    pattern = pattern_file("command-status")
    assert pattern["source"] == ["aws.ssm"]
    assert pattern["detail"]["document-name"] == [{"Ref": "Document"}]
    assert "Success" not in pattern["detail"]["status"]


def test_lambda_code_is_the_zip_make_lambda_builds():
    """No `sam build`: no beta feature, no second compile of the AWS SDK."""
    fn = R["Function"]
    props = fn["Properties"]
    assert props["Runtime"] == "provided.al2023"
    assert props["Architectures"] == ["arm64"]
    assert props["Handler"] == "bootstrap"
    assert "Metadata" not in fn
    zip_path = (TEMPLATE.parent / props["CodeUri"]).resolve()
    lambda_mk = (ROOT / "mk" / "lambda.mk").read_text()
    assert zip_path == ROOT / "dist" / "lambda" / "symroute-lambda-arm64.zip"
    assert "$(LAMBDA_DIST)/symroute-lambda-arm64.zip" in lambda_mk and "LAMBDA_DIST       := dist/lambda" in lambda_mk
    env = props["Environment"]["Variables"]
    assert env["SYMROUTE_DOCUMENT_NAME"] == {"Ref": "Document"}
    assert {"SYMROUTE_SKIP_TAG", "SYMROUTE_LOG_GROUP", "SYMROUTE_OWNER_MARKERS",
            "SYMROUTE_COMMAND_TIMEOUT_SECONDS"} <= set(env)
    failure = props["EventInvokeConfig"]["DestinationConfig"]["OnFailure"]
    assert failure == {"Type": "SQS", "Destination": {"Fn::GetAtt": ["FailureQueue", "Arn"]}}
    assert props["LoggingConfig"]["LogGroup"] == {"Ref": "FunctionLogGroup"}


def test_the_stacks_trigger_and_connmark_switches_reach_every_apply():
    """OnHostTrigger and Connmark allow exactly what the document's parameters allow (a value the
    document refuses would fail every command), default to the document's defaults, and reach
    both senders of `apply`: the Lambda (its environment) and the association."""
    doc = yaml.safe_load(DOCUMENT.read_text())["parameters"]
    for stack_name, doc_name in (("OnHostTrigger", "onHostTrigger"), ("Connmark", "connmark")):
        param = T["Parameters"][stack_name]
        assert param["AllowedValues"] == doc[doc_name]["allowedValues"], stack_name
        assert param["Default"] == doc[doc_name]["default"], stack_name
    env = R["Function"]["Properties"]["Environment"]["Variables"]
    assert env["SYMROUTE_ON_HOST_TRIGGER"] == {"Ref": "OnHostTrigger"}
    assert env["SYMROUTE_CONNMARK"] == {"Ref": "Connmark"}


def test_every_lambda_setting_is_one_the_lambda_reads():
    """No dead settings (RUST_LOG was one: the function reads AWS_LAMBDA_LOG_LEVEL)."""
    source = "".join(p.read_text() for p in (ROOT / "lambda" / "src").rglob("*.rs"))
    for name in R["Function"]["Properties"]["Environment"]["Variables"]:
        assert f'"{name}"' in source, f"{name} is set but never read"


def test_every_log_group_has_a_retention():
    groups = [r for r in R.values() if r["Type"] == "AWS::Logs::LogGroup"]
    assert len(groups) == 2
    assert all(g["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"} for g in groups)


def test_failure_queue_has_an_alarm():
    alarm = R["FailureAlarm"]["Properties"]
    assert alarm["Namespace"] == "AWS/SQS"
    assert alarm["Dimensions"][0]["Value"] == {"Fn::GetAtt": ["FailureQueue", "QueueName"]}
    # Each new failure, not the queue's depth (which stays up for the 14 days it keeps messages).
    assert (alarm["MetricName"], alarm["Statistic"], alarm["Threshold"]) == ("NumberOfMessagesSent", "Sum", 1)


def test_artifact_bucket_is_private_encrypted_versioned_tls_only():
    props = R["ArtifactBucket"]["Properties"]
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert all(props["PublicAccessBlockConfiguration"].values())
    assert len(props["PublicAccessBlockConfiguration"]) == 4
    statements = R["ArtifactBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    tls = [s for s in statements if s["Effect"] == "Deny" and "aws:SecureTransport" in json.dumps(s)]
    assert tls and tls[0]["Condition"]["Bool"]["aws:SecureTransport"] == "false"
    allowed = [s for s in statements if s["Effect"] == "Allow"]
    # Instances read the agent through the bucket policy, scoped to the account or organization.
    assert {s["Sid"] for s in allowed} == {"InstancesReadAgent", "InstancesListAgent"}
    for s in allowed:
        assert s["Principal"] == "*"
        assert s["Action"] in ("s3:GetObject", "s3:ListBucket")
        account, org = s["Condition"]["Fn::If"][2], s["Condition"]["Fn::If"][1]
        assert account["StringEquals"] == {"aws:PrincipalAccount": {"Ref": "AWS::AccountId"}}
        assert org["StringEquals"] == {"aws:PrincipalOrgID": {"Ref": "AgentReadOrganizationId"}}
    get = next(s for s in allowed if s["Action"] == "s3:GetObject")
    assert get["Resource"] == {"Fn::Sub": "${ArtifactBucket.Arn}/agent/*"}


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
    for action in ("ec2:CreateTags", "ec2:DeleteTags"):
        tags = by_action[action]
        assert tags["Resource"]["Fn::Sub"].endswith(":network-interface/*")
        assert tags["Condition"]["ForAllValues:StringLike"]["aws:TagKeys"] == ["symroute:*"]
    star = {a for s in allowed if s["Resource"] == "*" for a in as_list(s["Action"])}
    assert all(re.match(r"(ec2|ssm):(Describe|Get|List)", a) for a in star), star
    assert set(actions) >= {"ec2:DescribeNetworkInterfaces", "ec2:DescribeInstances",
                            "ssm:GetCommandInvocation", "ssm:ListCommands", "ssm:DescribeInstanceInformation",
                            "logs:PutLogEvents", "sqs:SendMessage"}
    trust = R["FunctionRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust == [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
                      "Action": "sts:AssumeRole"}], "a condition Lambda may not set"


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
    assert assoc["Properties"]["Parameters"] == {
        "action": ["apply"], "target": ["all"],
        "onHostTrigger": [{"Ref": "OnHostTrigger"}], "connmark": [{"Ref": "Connmark"}]}
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
