# trpc — `make demo` runs the echo example end to end, `make test` runs everything CI runs.
SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(HOME)/.cache/trpc-target
CARGO ?= cargo

.PHONY: demo test deps interop fmt fmt-check clippy unit doc-test bench fuzz clean

## demo: start the echo server, show a reply, a deadline, a status error, metadata and a recovered panic, stop gracefully;
## the same port over gRPC (trpc call grpc://) and the HTTP/JSON gateway (curl); then every layer at
## once (examples/full_stack): a retried call, rejected credentials, compression, /metrics; then one
## axum app serving REST, gRPC and the JSON gateway (examples/axum_gateway), driven with curl; then a
## cluster (examples/cluster): 3 replicas, each balancing policy, one replica killed with nothing failing.
demo: deps
	@command -v curl >/dev/null 2>&1 || { apt-get update && apt-get install -y curl; }
	$(CARGO) build --quiet --example echo_server --example full_stack --example axum_gateway --example cluster --bin trpc
	./scripts/demo.sh

## test: formatting, clippy -D warnings, and every unit, doc and integration test.
test: deps fmt-check clippy unit doc-test

## deps: system packages the tests need, installed when missing (python3 runs the
## cross-language client of integration/interop/ against a trpc server; the gRPC
## interop tests run Python grpcio from a venv (integration/interop/venv.sh:
## grpcio, grpcio-tools, grpcio-health-checking from PyPI); etcd-server is the
## real etcd the discovery tests start and the Go gRPC server the gRPC client is
## tested against; protoc builds etcd-client's protos).
deps:
	@command -v python3 >/dev/null 2>&1 || { apt-get update && apt-get install -y python3; }
	@python3 -c "import ensurepip" >/dev/null 2>&1 || { apt-get update && apt-get install -y python3-venv; }
	@command -v etcd >/dev/null 2>&1 || { apt-get update && apt-get install -y etcd-server; }
	@command -v protoc >/dev/null 2>&1 || { apt-get update && apt-get install -y protobuf-compiler; }
	@bash integration/interop/venv.sh >/dev/null

## interop: the gRPC interop suite both ways on its own (also part of `make test`):
## a Python grpcio client against trpc's interop server, trpc's client against a
## Python grpcio server and against trpc, and trpc's client against etcd.
interop: deps
	$(CARGO) test -p trpc-integration --test grpc_interop --test grpc_etcd

fmt:
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p trpc --no-default-features --all-targets -- -D warnings

unit:
	$(CARGO) test --workspace --all-targets

doc-test:
	$(CARGO) test --workspace --doc

## bench: trpc vs tonic, tarpc and raw framed TCP, side by side (benches/ is its own
## workspace, so `make test` never builds it). BENCH_QUICK=1 for a ~1 minute run;
## BENCH_ARGS="--help" for options. The latest table is in docs/PERFORMANCE.md.
## Then `trpc-bench cluster` (BENCH_CLUSTER_ARGS): p2c over 4 replica processes vs one
## channel, and the time from an etcd change to the balancer (docs/DISCOVERY.md).
bench: deps
	$(CARGO) run --release --manifest-path benches/Cargo.toml --bin trpc-bench -- $(BENCH_ARGS)
	$(CARGO) run --release --manifest-path benches/Cargo.toml --bin trpc-bench -- cluster $(BENCH_CLUSTER_ARGS)

## fuzz: run each fuzz target (fuzz/, cargo-fuzz on stable, no sanitizer) for
## FUZZ_SECONDS (default 60), starting from fuzz/corpus and the checked-in seeds.
## Installs cargo-fuzz when missing. Crashes land in fuzz/artifacts/<target>/.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= frame_decoder frame_roundtrip server_connection client_connection
fuzz:
	@command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install cargo-fuzz
	cd fuzz && for t in $(FUZZ_TARGETS); do \
	  mkdir -p corpus/$$t && \
	  CARGO_TARGET_DIR=$(HOME)/.cache/trpc-fuzz-target $(CARGO) fuzz run -s none $$t \
	    corpus/$$t $$( [ -d seeds/$$t ] && echo seeds/$$t ) \
	    -- -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 || exit 1; \
	done

clean:
	$(CARGO) clean
