#!/usr/bin/env bash
# make deploy: upload the agent (content-addressed), build the Lambda with cargo-lambda, sam deploy.
# Environment: STACK_NAME, STACK_PARAMETERS (extra Key=Value overrides), SAM, PY, AGENT_DIST.
# AWS credentials and region come from the usual AWS variables or profile.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${STACK_NAME:?}" "${SAM:?}" "${PY:?}" "${AGENT_DIST:?}"
digests=$("$PY" infra/upload_agent.py --dist "$AGENT_DIST" --parameters)

# An existing stack's bucket gets the new binaries before its document points at them.
"$PY" infra/upload_agent.py --dist "$AGENT_DIST" --stack "$STACK_NAME" --if-stack-exists

SAM_CLI_BETA_RUST_CARGO_LAMBDA=1 SAM_CLI_TELEMETRY=0 \
  "$SAM" build --beta-features --template-file infra/template.yaml --build-dir .tools/sam/build
# shellcheck disable=SC2086 # STACK_PARAMETERS is a list of Key=Value words
SAM_CLI_TELEMETRY=0 "$SAM" deploy --template-file .tools/sam/build/template.yaml \
  --stack-name "$STACK_NAME" --capabilities CAPABILITY_IAM --resolve-s3 \
  --no-fail-on-empty-changeset --parameter-overrides $digests ${STACK_PARAMETERS:-}

# A new stack's bucket exists only now.
"$PY" infra/upload_agent.py --dist "$AGENT_DIST" --stack "$STACK_NAME"
"$PY" - "$STACK_NAME" <<'PYTHON'
import sys, boto3
stack = boto3.client("cloudformation").describe_stacks(StackName=sys.argv[1])["Stacks"][0]
for output in stack.get("Outputs", []):
    print(f"{output['OutputKey']:20} {output['OutputValue']}")
PYTHON
