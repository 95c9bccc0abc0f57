#!/usr/bin/env bash
# Shared by the profiling scripts (sourced, not run): the trpc-bench binary
# to use ($BIN, or this tree built in release) and a free-ish loopback port.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/trpc-target-bench}
cd "$(dirname "${BASH_SOURCE[0]}")"
if [[ -n ${BIN:-} ]]; then
  bin=$BIN
else
  cargo build --release --quiet
  bin=$CARGO_TARGET_DIR/release/trpc-bench
fi
port=$((7400 + RANDOM % 500))
addr=127.0.0.1:$port
