#!/usr/bin/env bash
# Profiles one side of one system's per-call path with callgrind (instruction
# counts are stable on a noisy machine, unlike timings).
#
#   benches/callgrind.sh server trpc 256 64 100000   # the trpc server, 256 in flight, 64 B
#   benches/callgrind.sh client trpc 1 64 20000      # the trpc client, 1 in flight
#
# The profiled side runs under valgrind, the other side natively. Collection
# covers the whole run (start-up is noise next to CALLS calls); the report (callgrind_annotate,
# inclusive and exclusive) lands in $OUT (default /tmp/trpc-callgrind).
# BIN=path/to/trpc-bench profiles that binary instead of building this tree
# (e.g. to compare two commits with the same harness).
set -euo pipefail
side=${1:?server|client} system=${2:?system} conc=${3:-256} payload=${4:-64} calls=${5:-100000}
threads=${THREADS:-2}
out=${OUT:-/tmp/trpc-callgrind}
mkdir -p "$out"
source "$(dirname "$0")/profile-common.sh"
tag=${TAG:-}$side-$system-c$conc-p$payload
cg=(valgrind --tool=callgrind --callgrind-out-file="$out/$tag.%p.out" --dump-instr=no --collect-jumps=no)
warm=$((calls / 10))

if [[ $side == server ]]; then
  # The server exits (and callgrind writes its profile) when its stdin closes.
  fifo=$(mktemp -u); mkfifo "$fifo"
  "${cg[@]}" "$bin" bench-server --system "$system" --listen "$addr" --threads "$threads" <"$fifo" &
  pid=$!
  exec 3>"$fifo"; rm -f "$fifo"
  for _ in $(seq 100); do (exec 4<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.2; done
  # Everything is counted, including start-up and a warm-up of CALLS/10:
  # per-call figures divide by CALLS + CALLS/10.
  "$bin" load --system "$system" --addr "$addr" --concurrency "$conc" --payload "$payload" --calls "$warm" --threads "$threads"
  "$bin" load --system "$system" --addr "$addr" --concurrency "$conc" --payload "$payload" --calls "$calls" --threads "$threads"
  exec 3>&-
  wait "$pid" 2>/dev/null || true
else
  "$bin" bench-server --system "$system" --listen "$addr" --threads "$threads" --detach &
  pid=$!
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
  # The client profile includes its start-up: keep CALLS large.
  warm=0
  "${cg[@]}" "$bin" load --system "$system" --addr "$addr" --concurrency "$conc" --payload "$payload" --calls "$calls" --threads "$threads"
  kill "$pid"; wait "$pid" 2>/dev/null || true
fi
file=$(ls -t "$out"/"$tag".*.out | head -1)
total=$(callgrind_annotate "$file" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}')
echo "$tag: $total instructions, $((total / (calls + warm))) per call ($file)"
callgrind_annotate --inclusive=yes "$file" > "$out/$tag.inclusive.txt" 2>/dev/null
callgrind_annotate "$file" > "$out/$tag.exclusive.txt" 2>/dev/null
echo "reports: $out/$tag.inclusive.txt $out/$tag.exclusive.txt"
