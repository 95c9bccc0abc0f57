#!/usr/bin/env bash
# Makes (once) the Python venv the gRPC interop tests use, with grpcio,
# grpcio-tools and grpcio-health-checking from PyPI, and prints its python.
# TRPC_INTEROP_VENV overrides the location (default ~/.cache/trpc-interop-venv).
set -euo pipefail
VENV="${TRPC_INTEROP_VENV:-$HOME/.cache/trpc-interop-venv}"
PY="$VENV/bin/python"
if ! "$PY" -c "import grpc, grpc_tools, grpc_health" >/dev/null 2>&1; then
  mkdir -p "$(dirname "$VENV")"
  exec 9>"${VENV}.lock"
  flock 9
  if ! "$PY" -c "import grpc, grpc_tools, grpc_health" >/dev/null 2>&1; then
    python3 -m venv "$VENV" >&2
    "$VENV/bin/pip" install --quiet --disable-pip-version-check \
      grpcio grpcio-tools grpcio-health-checking >&2
  fi
fi
echo "$PY"
