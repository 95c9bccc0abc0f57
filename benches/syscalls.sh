#!/usr/bin/env bash
# Counts what one system's server asks of the kernel per call: context
# switches, futex and eventfd (`write`) wake-ups, epoll waits, socket reads
# and writes, and CPU time — `perf stat` over the server's whole life, one
# load run of CALLS calls.
#
#   benches/syscalls.sh trpc 256 64 1000000
#   benches/syscalls.sh trpc-inline 256 64 1000000
#
# Needs `perf` with tracepoints readable (perf_event_paranoid ≤ 1, or root).
# BIN=path/to/trpc-bench measures that binary instead of building this tree.
set -euo pipefail
system=${1:?system} conc=${2:-256} payload=${3:-64} calls=${4:-1000000}
threads=${THREADS:-2}
source "$(dirname "$0")/profile-common.sh"
out=$(mktemp)
events=context-switches,task-clock,syscalls:sys_enter_futex,syscalls:sys_enter_write,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_recvfrom,syscalls:sys_enter_sendto
# The server exits (and perf prints its counts) when its stdin closes.
fifo=$(mktemp -u); mkfifo "$fifo"
perf stat -x, -o "$out" -e "$events" "$bin" bench-server --system "$system" --listen "$addr" --threads "$threads" <"$fifo" >/dev/null &
pid=$!
exec 3>"$fifo"; rm -f "$fifo"
for _ in $(seq 100); do (exec 4<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
"$bin" load --system "$system" --addr "$addr" --concurrency "$conc" --payload "$payload" --calls "$calls" --threads "$threads"
exec 3>&-
wait "$pid" 2>/dev/null || true
# CSV lines: value,unit,event,...
awk -F, -v calls="$calls" -v sys="$system" '
  $3 == "task-clock" { printf "%s: server CPU %.3f µs/call\n", sys, $1 * 1000 / calls; next }
  $1 ~ /^[0-9.]+$/ { printf "%s: %-30s %10d  (%.4f per call)\n", sys, $3, $1, $1 / calls }
' "$out"
rm -f "$out"
