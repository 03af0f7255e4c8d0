#!/usr/bin/env bash
# make deploy: upload the agent (content-addressed), then sam deploy the template with the Lambda
# zip that `make lambda` built (no `sam build`: nothing is compiled twice, no beta features).
# Environment: STACK_NAME, STACK_PARAMETERS (extra Key=Value overrides), SAM, PY, AGENT_DIST,
# LAMBDA_ZIP. AWS credentials and region come from the usual AWS variables or profile.
#
# Order matters: nothing may send a command that names an agent the bucket does not hold yet.
# - an existing stack: upload into its bucket first, then update the stack (and its document);
# - a new stack: create it with Enabled=false (rules disabled, no association), upload into the
#   bucket it just created, then enable it.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${STACK_NAME:?}" "${SAM:?}" "${PY:?}" "${AGENT_DIST:?}" "${LAMBDA_ZIP:?}"
[ -f "$LAMBDA_ZIP" ] || { echo "deploy: $LAMBDA_ZIP is missing: run \`make lambda\` first" >&2; exit 1; }
digests=$("$PY" infra/upload_agent.py --dist "$AGENT_DIST" --parameters)

sam_deploy() {
  # shellcheck disable=SC2086 # digests and STACK_PARAMETERS are lists of Key=Value words
  SAM_CLI_TELEMETRY=0 "$SAM" deploy --template-file infra/template.yaml \
    --stack-name "$STACK_NAME" --capabilities CAPABILITY_IAM --resolve-s3 \
    --no-fail-on-empty-changeset --parameter-overrides $digests ${STACK_PARAMETERS:-} "$@"
}

uploaded=$("$PY" infra/upload_agent.py --dist "$AGENT_DIST" --stack "$STACK_NAME" --if-stack-exists)
printf '%s\n' "$uploaded"
if grep -q 'does not exist yet' <<<"$uploaded"; then
  sam_deploy Enabled=false
  "$PY" infra/upload_agent.py --dist "$AGENT_DIST" --stack "$STACK_NAME"
fi
sam_deploy Enabled=true

"$PY" - "$STACK_NAME" <<'PYTHON'
import sys, boto3
stack = boto3.client("cloudformation").describe_stacks(StackName=sys.argv[1])["Stacks"][0]
for output in stack.get("Outputs", []):
    print(f"{output['OutputKey']:20} {output['OutputValue']}")
PYTHON
