# `make demo`: the whole chain on this machine, from an ENI attach on a local AWS API
# (moto) to a working ping; and the same flow as end-to-end tests in `make test`.
# Code: tests/src/demo/, tests/src/bin/symroute-demo.rs, tests/demo/*.py, tests/tests/e2e.rs.
DEMO_TARGET_DIR = $(or $(CARGO_TARGET_DIR),$(ROOT)/target)
# e.g. `make demo DEMO_ARGS=--json`
DEMO_ARGS ?=
# STACK=cdk deploys the CDK construct's example app instead of the SAM template.
STACK ?= sam
TEST_STEPS += test-e2e

.PHONY: demo demo-build test-e2e

# The debug binaries exactly as `cargo test --workspace` builds them (it builds each package's
# binaries for its integration tests): after `make test` this is a no-op, and a narrower
# `cargo build -p ...` would unify features differently and compile the AWS SDK a second time.
demo-build: ## build the debug binaries the demo and the e2e tests run
	$(CARGO) test --workspace --locked --no-run

demo: setup agent demo-build $(if $(filter cdk,$(STACK)),cdk-build) ## the whole chain on this machine, no AWS account (root); STACK=cdk for the CDK stack; DEMO_ARGS=--json or --old-ssm-agent
	$(DEMO_TARGET_DIR)/debug/symroute-demo --dist $(ROOT)/$(AGENT_DIST) --stack $(STACK) $(DEMO_ARGS)

# The e2e tests are #[ignore]d in `cargo test --workspace`: they need the static agent from
# `make agent` and the Lambda binary, which this step builds first.
test-e2e: setup agent demo-build cdk-build ## the end-to-end tests: the demo's flow with assertions (root)
	SYMROUTE_E2E_DIST=$(ROOT)/$(AGENT_DIST) $(CARGO) test --workspace --locked --test e2e -- --ignored
