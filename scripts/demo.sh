#!/usr/bin/env bash
# The `make demo` script: runs the echo server and drives it with the `trpc` CLI.
set -euo pipefail
BIN="${CARGO_TARGET_DIR:-target}/debug"
LOG="$(mktemp -t trpc-demo.XXXXXX)"
SERVER_PID=""
cleanup() { [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true; rm -f "$LOG"; }
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }
# Runs a call that is expected to fail, showing its error and exit code.
run_fails() {
  printf '$ %s\n' "$*"
  local rc=0
  "$@" || rc=$?
  if [ "$rc" -eq 0 ]; then echo "expected this call to fail" >&2; exit 1; fi
  echo "(exit code $rc, as expected)"
}

step "start the echo server on an ephemeral port"
"$BIN/examples/echo_server" --listen 127.0.0.1:0 >"$LOG" 2>&1 &
SERVER_PID=$!
ADDR=""
for _ in $(seq 1 100); do
  ADDR="$(sed -n 's/^listening on //p' "$LOG" | head -n1)"
  [ -n "$ADDR" ] && break
  sleep 0.1
done
[ -n "$ADDR" ] || { echo "server did not start"; cat "$LOG"; exit 1; }
echo "echo server listening on $ADDR (pid $SERVER_PID)"
T="$BIN/trpc"

step "a unary call with metadata (x-* request metadata is echoed back as response metadata)"
run "$T" call "$ADDR" echo.Echo/Say '{"message": "hello, trpc"}' -H x-user=alice -H x-request-id=42 -v

step "a deadline: Sleep 2s with a 200ms timeout -> DEADLINE_EXCEEDED, and the server cancels the handler"
run_fails "$T" call "$ADDR" echo.Echo/Sleep '{"millis": 2000}' --timeout 200ms

step "a status error from the handler"
run_fails "$T" call "$ADDR" echo.Echo/Fail '{"code": 5, "message": "no such user"}'

step "an unknown method"
run_fails "$T" call "$ADDR" echo.Echo/Nope '{}'

step "a handler panic becomes INTERNAL; the server lives on"
run_fails "$T" call "$ADDR" echo.Echo/Panic '{}'
run "$T" call "$ADDR" echo.Echo/Say '{"message": "still alive"}'

step "server stats: the cancelled sleep was seen by the server"
STATS="$("$T" call "$ADDR" echo.Echo/Stats)"
echo "$STATS"
echo "$STATS" | grep -q '"cancelled": 1' || { echo "expected one cancelled sleep"; exit 1; }

step "the same port speaks gRPC: trpc call with a grpc:// target (the Say method accepts JSON and protobuf)"
run "$T" call "grpc://$ADDR" echo.Echo/Say '{"message": "hello over gRPC"}' -H x-user=alice -v

step "and the HTTP/JSON gateway: plain curl, same port"
run curl -sS -X POST "http://$ADDR/echo.Echo/Say" -H 'content-type: application/json' -H 'x-user: carol' -d '{"message": "hello over HTTP"}'
echo
run curl -sS -i -X POST "http://$ADDR/echo.Echo/Fail" -d '{"code": 5, "message": "no such user"}'
echo

step "graceful shutdown on SIGTERM"
kill -TERM "$SERVER_PID"
wait "$SERVER_PID"; STATUS=$?
SERVER_PID=""
echo "server exited with status $STATUS"
echo "--- server log ---"
cat "$LOG"
grep -q "Sleep cancelled" "$LOG"
grep -q "echo server stopped" "$LOG"
step "every layer at once: examples/full_stack (trace, metrics, timeout, retry, auth, compression)"
echo "server and client in one process; the client's stack: trace, metrics, deadline, auth, retry, attempt timeout, gzip"
FS_LOG="$(mktemp -t trpc-full-stack.XXXXXX)"
printf '$ %s\n' "$BIN/examples/full_stack --json"
FS_OUT="$("$BIN/examples/full_stack" --json 2>"$FS_LOG")" || { echo "full_stack failed"; cat "$FS_LOG"; rm -f "$FS_LOG"; exit 1; }
echo "$FS_OUT"
echo "--- its first JSON log lines (stderr; RUST_LOG=warn by default in the demo) ---"
head -n 2 "$FS_LOG"
rm -f "$FS_LOG"
for want in "reply \"hello, layers\"" "after 3 attempts" "wrong token   -> UNAUTHENTICATED" "PERMISSION_DENIED" "bytes on the wire" "trpc_server_calls_total"; do
  echo "$FS_OUT" | grep -qF "$want" || { echo "full_stack output lacks: $want"; exit 1; }
done

step "axum: one app serving REST, gRPC and the JSON gateway (examples/axum_gateway)"
AX_LOG="$(mktemp -t trpc-axum.XXXXXX)"
"$BIN/examples/axum_gateway" --listen 127.0.0.1:0 >"$AX_LOG" 2>&1 &
AX_PID=$!
SERVER_PID=$AX_PID
AX=""
for _ in $(seq 1 100); do
  AX="$(sed -n 's/^listening on //p' "$AX_LOG" | head -n1)"
  [ -n "$AX" ] && break
  sleep 0.1
done
[ -n "$AX" ] || { echo "axum_gateway did not start"; cat "$AX_LOG"; exit 1; }
echo "axum app on $AX"
run curl -sS "http://$AX/healthz"
AX_REST="$(curl -sS "http://$AX/api/greet/ann")"
printf '$ curl -sS http://%s/api/greet/ann\n%s\n' "$AX" "$AX_REST"
echo "$AX_REST" | grep -q 'hello, ann \[trpc\]' || { echo "REST route did not reach the trpc backend"; exit 1; }
AX_JSON="$(curl -sS -H 'x-user: bob' -d '{"name": "ann"}' "http://$AX/greeter.Greeter/Greet")"
printf '$ curl -sS -H "x-user: bob" -d %s http://%s/greeter.Greeter/Greet\n%s\n' "'{\"name\": \"ann\"}'" "$AX" "$AX_JSON"
echo "$AX_JSON" | grep -q 'asked by bob) \[http\]' || { echo "JSON gateway answer unexpected"; exit 1; }
run curl -sS -i -d '{"name": ""}' "http://$AX/greeter.Greeter/Greet"
echo
run curl -sS -d '{"name": "liftoff"}' "http://$AX/greeter.Greeter/Countdown"
run "$T" call "grpc://$AX" greeter.Greeter/Greet '{"name": "a gRPC client"}'
kill -TERM "$AX_PID"; wait "$AX_PID" || true
SERVER_PID=""
rm -f "$AX_LOG"

step "demo finished"
