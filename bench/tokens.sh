#!/usr/bin/env bash
# What token mode costs a handshake: the load tool's idle scenario against a
# server without tokens and one with -jwt-secret (HS256), alternated ROUNDS
# times in one run so drift on this shared machine hits both alike. Prints
# one line per run and the ratio of the medians.
#
# Knobs (environment): CONNS (10000) ROUNDS (3) MODE (switchboard-text or
# switchboard-json).
set -euo pipefail
cd "$(dirname "$0")/.."

CONNS=${CONNS:-10000}
ROUNDS=${ROUNDS:-3}
MODE=${MODE:-switchboard-text}
SECRET=bench-secret-$RANDOM$RANDOM
PORT=5111

work=$(mktemp -d)
server_pid=
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

go build -o "$work/switchboard" .
go build -o "$work/loadtest" ./cmd/loadtest

# run LABEL SERVER-FLAGS... -- LOADTEST-FLAGS... : one idle run against a
# fresh server; prints handshakes/s.
run() {
  local label=$1
  shift
  local server_flags=() tool_flags=()
  while [ "$1" != "--" ]; do server_flags+=("$1"); shift; done
  shift
  tool_flags=("$@")
  "$work/switchboard" -addr 127.0.0.1:$PORT -rate 0 "${server_flags[@]}" >"$work/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
    sleep 0.1
  done
  local line
  line=$("$work/loadtest" -target "$MODE" -url ws://127.0.0.1:$PORT/ws -pid "$server_pid" -scenario idle \
    -conns "$CONNS" -hold 2s -sources 8 "${tool_flags[@]}" | tail -n 1)
  kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=
  local rate dropped
  rate=$(sed -n 's/.*"handshakes_per_s":\([0-9.]*\).*/\1/p' <<<"$line")
  dropped=$(sed -n 's/.*"dropped":\([0-9]*\).*/\1/p' <<<"$line")
  echo "$label $rate" >>"$work/rates"
  printf '%-7s %10.0f handshakes/s  (%s dropped)\n' "$label" "$rate" "$dropped"
}

echo "$MODE, idle scenario, $CONNS connections, $ROUNDS rounds"
for round in $(seq 1 "$ROUNDS"); do
  run plain --
  run token -jwt-secret "$SECRET" -- -token-secret "$SECRET"
done
median() { grep "^$1 " "$work/rates" | awk '{print $2}' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
plain=$(median plain)
token=$(median token)
awk -v p="$plain" -v t="$token" 'BEGIN {printf "median: plain %.0f/s, token %.0f/s, token/plain = %.3f\n", p, t, t/p}'
