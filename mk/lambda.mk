# Lambda: the arm64 zip via cargo-lambda, and its benchmark against the Python seed.
# cargo-lambda and zig come from the venv (requirements-dev.txt); the venv's bin is on PATH.
LAMBDA_DIST       := dist/lambda
LAMBDA_TARGET_DIR := $(or $(CARGO_TARGET_DIR),$(ROOT)/target)
BENCH_STEPS       += bench-lambda

.PHONY: lambda bench-lambda

lambda: setup-python ## the Lambda as an arm64 zip (cargo-lambda) into dist/lambda/
	@rustup target list --installed | grep -qx aarch64-unknown-linux-gnu || rustup target add aarch64-unknown-linux-gnu
	cargo lambda build --release --arm64 --locked -p symroute-lambda --output-format zip
	@mkdir -p $(LAMBDA_DIST)
	cp $(LAMBDA_TARGET_DIR)/lambda/symroute-lambda/bootstrap.zip $(LAMBDA_DIST)/symroute-lambda-arm64.zip
	@ls -l $(LAMBDA_DIST)/symroute-lambda-arm64.zip

# Cold start, per-event time and peak RSS of the release Rust Lambda and the Python/boto3 seed
# handler (awslambdaric), both against one moto through the same Runtime API server.
bench-lambda: setup-python ## the Lambda's cold start, per-event time, memory and burst time
	$(CARGO) build --release --locked -p symroute-lambda
	@mkdir -p bench/results
	@# Built like `cargo test --workspace` builds it, so the debug build is shared, not redone.
	$(CARGO) build --locked --workspace --examples
	$(LAMBDA_TARGET_DIR)/debug/examples/lambda-bench \
	  --rust $(LAMBDA_TARGET_DIR)/release/symroute-lambda \
	  --python-handler bench/lambda/handler.py \
	  --out bench/results/lambda.md
