# Host agent: static musl binaries for x86_64 and aarch64.
AGENT_DIST := dist/agent
AGENT_TARGET_DIR = $(or $(CARGO_TARGET_DIR),target)

.PHONY: agent
agent: setup-rust ## static agent binaries for x86_64 and aarch64 into dist/agent/ with SHA256SUMS
	CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=rust-lld \
	  $(CARGO) build --release --locked -p symroute-agent --target x86_64-unknown-linux-musl --target aarch64-unknown-linux-musl
	@mkdir -p $(AGENT_DIST)
	cp $(AGENT_TARGET_DIR)/x86_64-unknown-linux-musl/release/symroute $(AGENT_DIST)/symroute-linux-x86_64
	cp $(AGENT_TARGET_DIR)/aarch64-unknown-linux-musl/release/symroute $(AGENT_DIST)/symroute-linux-aarch64
	cd $(AGENT_DIST) && sha256sum symroute-linux-x86_64 symroute-linux-aarch64 > SHA256SUMS
	@ls -l $(AGENT_DIST)

.PHONY: bench-agent
BENCH_STEPS += bench-agent
bench-agent: agent ## the agent's benchmark (root)
	$(CARGO) bench --locked -p symroute-agent --bench apply
