# symroute — see README.md. `make demo` and `make test` install what they need via `make setup`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

ROOT      := $(abspath .)
VENV      := $(ROOT)/.venv
PY        := $(VENV)/bin/python
CARGO     ?= cargo
export PATH := $(VENV)/bin:$(HOME)/.cargo/bin:$(PATH)

# Debian packages every part needs; part files (mk/*.mk) add theirs before `setup` runs.
APT_PACKAGES := iproute2 iputils-ping nftables radvd curl jq procps psmisc python3-venv
RUST_TARGETS := x86_64-unknown-linux-musl aarch64-unknown-linux-musl
# Extra test steps that parts contribute (each a make target run after `cargo test`).
TEST_STEPS :=
# Benchmark steps that parts contribute; each writes bench/results/<part>.md.
BENCH_STEPS :=

include $(sort $(wildcard mk/*.mk))

.PHONY: help setup setup-apt setup-rust setup-python test test-preflight demo agent lambda deploy bench bench-report fmt clippy

help: ## this list, from the targets' own `##` comments
	@grep -hE '^[a-z][a-z0-9-]*:.*## ' $(MAKEFILE_LIST) | sort | \
	  awk -F':.*## ' '{ printf "make %-18s %s\n", $$1, $$2 }'

setup: setup-apt setup-rust setup-python ## install what the rest needs (Debian packages, Rust targets and components, the Python venv); idempotent

setup-apt: ## the Debian packages only
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "setup: installing Debian packages:" $$missing; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

setup-rust: ## the Rust targets and components only
	@installed=$$(rustup target list --installed); \
	for t in $(RUST_TARGETS); do grep -qx $$t <<<"$$installed" || rustup target add $$t; done
	@components=$$(rustup component list --installed); \
	for c in clippy rustfmt; do grep -q "^$$c" <<<"$$components" || rustup component add $$c; done

$(VENV)/.stamp: requirements-dev.txt
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	@touch $@

setup-python: $(VENV)/.stamp ## the Python virtualenv (.venv) only

# Refuses, in one line each, what would make `make test` prove less than it claims.
test-preflight: ## refuse, in one line, what would make `make test` prove less (not root; blessing or no property cases under CI)
	@if [ "$$(id -u)" != 0 ]; then echo "make test: needs root (the tests build network namespaces and run the agent against the kernel); run it as root" >&2; exit 1; fi
	@if [ "$$CI" = true ] && [ -n "$${SYMROUTE_BLESS:-}" ]; then echo "make test: SYMROUTE_BLESS rewrites the golden files instead of checking them; refused under CI" >&2; exit 1; fi
	@if [ "$$CI" = true ] && [ "$${PROPTEST_CASES:-}" = 0 ]; then echo "make test: PROPTEST_CASES=0 runs no property case; refused under CI" >&2; exit 1; fi

test: test-preflight setup ## every test: fmt, clippy, cargo test, then the steps parts add (root; creates network namespaces)
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	$(CARGO) test --workspace --locked
	@for step in $(TEST_STEPS); do $(MAKE) --no-print-directory $$step || exit 1; done

fmt: ## format the Rust code
	$(CARGO) fmt --all

clippy: ## lint the Rust code, warnings as errors
	$(CARGO) clippy --workspace --all-targets -- -D warnings

bench: setup ## measure speed and memory into bench/RESULTS.md (root)
	@if [ "$$(id -u)" != 0 ]; then echo "make bench: needs root (the benchmarks build network namespaces and boot guests); nothing was measured" >&2; exit 1; fi
	@for step in $(BENCH_STEPS); do $(MAKE) --no-print-directory $$step || exit 1; done
	@$(MAKE) --no-print-directory bench-report

bench-report: ## rebuild bench/RESULTS.md from bench/results/*.md, each followed by what bench/notes/ says of it (after running one bench step alone)
	@{ echo "# symroute benchmarks"; echo; \
	   echo "Written by \`make bench\` on $$(date -u +%F), $$(nproc) cores, kernel $$(uname -r)."; echo; \
	   for f in bench/results/*.md; do cat $$f; echo; \
	     n=bench/notes/$$(basename $$f); if [ -f $$n ]; then cat $$n; echo; fi; done; } > bench/RESULTS.md
	@cat bench/RESULTS.md
