# CDK: the Symroute construct (infra/cdk: TypeScript built with jsii), its example app, its tests.
# npm packages come from infra/cdk/package-lock.json; Node.js and npm are the machine's.
CDK_DIR  := $(ROOT)/infra/cdk
CDK_OUT  ?= $(CDK_DIR)/cdk.out
# jsii's tools warn about Node 20's end of life (the machine's Node) in a box on every run; the
# CDK itself supports it. The box is kept out of the logs.
CDK_ENV  := JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=20 CDK_DISABLE_CLI_TELEMETRY=true
# The tools run in a network namespace of their own (only loopback): the CLI's notices, version
# checks and telemetry cannot leave the machine, and nothing they need is on the network.
OFFLINE  := unshare --net --map-root-user
TEST_STEPS += test-cdk

.PHONY: setup-node cdk-build cdk-synth cdk-package test-cdk

setup: setup-node

$(CDK_DIR)/node_modules/.stamp: $(CDK_DIR)/package.json $(CDK_DIR)/package-lock.json
	@command -v npm >/dev/null || { echo "setup-node: npm is missing (Node.js 20 or newer with npm is needed for infra/cdk)" >&2; exit 1; }
	cd $(CDK_DIR) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

setup-node: $(CDK_DIR)/node_modules/.stamp ## the CDK package's npm dependencies only (infra/cdk/node_modules, from its lockfile)

cdk-build: setup-python setup-node ## stage the document, patterns (and Lambda zip if built) into infra/cdk/assets, compile with jsii, compile the example app
	$(PY) $(CDK_DIR)/stage-assets.py
	cd $(CDK_DIR) && $(CDK_ENV) $(OFFLINE) npx jsii --silence-warnings=reserved-word
	cd $(CDK_DIR) && $(OFFLINE) npx tsc -p tsconfig.example.json

cdk-synth: cdk-build ## cdk synth of the example app into infra/cdk/cdk.out (agent digests from dist/agent, Lambda from dist/lambda; CDK_CONTEXT='-c createTrail=true ...')
	cd $(CDK_DIR) && $(CDK_ENV) $(OFFLINE) npx cdk synth --quiet --no-notices --no-version-reporting --output $(CDK_OUT) $(CDK_CONTEXT)

# From an empty dist/, since twine would take anything left there for a package. One recipe for
# cdk-package and test-cdk, so that test-cdk does not compile the construct a second time.
define CDK_PACK
	rm -rf $(CDK_DIR)/dist
	cd $(CDK_DIR) && $(CDK_ENV) npx jsii-pacmak --targets js python
	@ls -l $(CDK_DIR)/dist/js $(CDK_DIR)/dist/python
endef

cdk-package: cdk-build ## the jsii packages for npm and PyPI into infra/cdk/dist (pip fetches Python build tools)
	$(CDK_PACK)

CDK_PY_VENV := $(ROOT)/.tools/cdk-python

# The Python CDK a Python user installs, for the binding check (PyPI: a registry).
$(CDK_PY_VENV)/.stamp: $(CDK_DIR)/requirements-python.txt
	@test -x $(CDK_PY_VENV)/bin/python || python3 -m venv $(CDK_PY_VENV)
	@$(CDK_PY_VENV)/bin/pip install -q --disable-pip-version-check -r $<
	@touch $@

# jest: template assertions, parity with the SAM template, cdk-nag; the Python wheel jsii-pacmak
# builds, installed beside the Python aws-cdk-lib and synthesizing a stack; then the real
# `cdk synth`, cfn-lint and a deploy into moto (pytest).
test-cdk: cdk-build $(CDK_PY_VENV)/.stamp ## the CDK construct's tests: jest (assertions, SAM parity, cdk-nag), the Python wheel synthesizing a stack, cdk synth + cfn-lint + moto deploy
	cd $(CDK_DIR) && $(CDK_ENV) $(OFFLINE) npx jest --ci
	$(CDK_PACK)
	$(CDK_PY_VENV)/bin/pip install -q --disable-pip-version-check --force-reinstall --no-deps $(CDK_DIR)/dist/python/symroute_cdk-*.whl
	cd $(CDK_DIR) && $(CDK_ENV) $(OFFLINE) $(CDK_PY_VENV)/bin/python test/python_binding.py
	@cd $(ROOT) && $(PY) -m pytest -q -p no:cacheprovider tests/stack/test_cdk_stack.py; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "test-cdk: pytest collected no tests in tests/stack/test_cdk_stack.py" >&2; fi; \
	exit $$rc
