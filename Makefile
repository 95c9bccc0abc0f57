# trpc — `make demo` runs the echo example end to end, `make test` runs everything CI runs.
SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(HOME)/.cache/trpc-target
CARGO ?= cargo

.PHONY: demo test fmt fmt-check clippy unit doc-test bench fuzz clean

## demo: start the echo server, show a reply, a deadline, a status error, metadata and a recovered panic, stop gracefully.
demo:
	$(CARGO) build --quiet --example echo_server --bin trpc
	./scripts/demo.sh

## test: formatting, clippy -D warnings, and every unit, doc and integration test.
test: fmt-check clippy unit doc-test

fmt:
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit:
	$(CARGO) test --workspace --all-targets

doc-test:
	$(CARGO) test --workspace --doc

clean:
	$(CARGO) clean
