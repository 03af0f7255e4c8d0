#!/usr/bin/env python3
"""Write infra/template.yaml as plain CloudFormation, for a service-managed StackSet.

Service-managed StackSets reject templates that use macros, AWS::Serverless included, so the SAM
transform is applied here, by AWS's own translator (aws-sam-translator), and the Lambda's code is
read from `<LambdaCodeBucketPrefix>-<region>/<LambdaCodeKey>` (Lambda reads code only from a bucket
in its own region). Nothing account- or region-specific is added.

  stackset.py --output dist/stack/stackset.json
"""
import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "infra" / "template.yaml"
CODE_PARAMETERS = {
    "LambdaCodeBucketPrefix": {
        "Type": "String",
        "Description": "The Lambda zip is read from s3://<prefix>-<region>/<LambdaCodeKey>.",
        "AllowedPattern": "^[a-z0-9][a-z0-9.-]{1,40}$",
    },
    "LambdaCodeKey": {"Type": "String", "Default": "symroute-lambda.zip", "AllowedPattern": "^[^\\s]{1,1024}$"},
}


class _NoManagedPolicies:
    """The template names no AWS managed policy, so the translator needs no IAM lookups."""

    def load(self):
        return {}


def transform(code: dict, template: Path = TEMPLATE) -> dict:
    """The template after the SAM transform, with `code` as the Lambda's Code property."""
    # The translator asks boto for a region only to fill pseudo parameters it never emits here.
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    from cfnlint.decode import decode
    from samtranslator.translator.transform import transform as sam_transform

    source, problems = decode(str(template))
    if problems:
        raise ValueError(f"{template}: {problems}")
    source = json.loads(json.dumps(source))
    source["Resources"]["Function"]["Properties"]["CodeUri"] = "s3://placeholder/placeholder.zip"
    out = sam_transform(source, {}, _NoManagedPolicies())
    out["Resources"]["Function"]["Properties"]["Code"] = code
    return out


def stackset_template(template: Path = TEMPLATE) -> dict:
    out = transform({"S3Bucket": {"Fn::Sub": "${LambdaCodeBucketPrefix}-${AWS::Region}"},
                     "S3Key": {"Ref": "LambdaCodeKey"}}, template)
    out["Parameters"].update(CODE_PARAMETERS)
    groups = out.get("Metadata", {}).get("AWS::CloudFormation::Interface", {}).get("ParameterGroups", [])
    groups.append({"Label": {"default": "Lambda code"}, "Parameters": list(CODE_PARAMETERS)})
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(stackset_template(), indent=1) + "\n")
    print(f"wrote {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
