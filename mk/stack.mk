# Deployable stack: SSM document, EventBridge patterns, SAM template, `make deploy`.
# Docs: docs/deploy.md.
TEST_STEPS += test-stack

STACK_NAME ?= symroute
STACK_PARAMETERS ?=
SAM_VENV := $(ROOT)/.tools/sam

.PHONY: test-stack stack-embed stackset-template deploy

# pytest exits 5 when it collects nothing: that is a broken suite here, not a pass.
test-stack: setup-python ## the stack's pytest suite (document, patterns, template, deploy script, strict layer)
	@cd $(ROOT) && $(PY) -m pytest -q -p no:cacheprovider tests/stack --ignore=tests/stack/test_cdk_stack.py; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "test-stack: pytest collected no tests in tests/stack" >&2; fi; \
	exit $$rc

# After editing ssm-documents/ or eventbridge/: refresh their copies inside infra/template.yaml.
stack-embed: setup-python ## refresh the copies of ssm-documents/ and eventbridge/ inside infra/template.yaml
	$(PY) infra/embed_document.py

# Plain CloudFormation (SAM transform applied) for a service-managed StackSet.
stackset-template: setup-python ## the template as plain CloudFormation for a service-managed StackSet
	$(PY) infra/stackset.py --output dist/stack/stackset.json

$(SAM_VENV)/.stamp: infra/requirements-deploy.txt
	@test -x $(SAM_VENV)/bin/python || python3 -m venv $(SAM_VENV)
	@$(SAM_VENV)/bin/pip install -q --disable-pip-version-check -r $<
	@touch $@

deploy: setup agent lambda $(SAM_VENV)/.stamp ## build, upload the agent, sam deploy (STACK_NAME, STACK_PARAMETERS)
	STACK_NAME='$(STACK_NAME)' STACK_PARAMETERS='$(STACK_PARAMETERS)' SAM='$(SAM_VENV)/bin/sam' \
	  PY='$(PY)' AGENT_DIST='$(AGENT_DIST)' LAMBDA_ZIP='$(LAMBDA_DIST)/symroute-lambda-arm64.zip' infra/deploy.sh
