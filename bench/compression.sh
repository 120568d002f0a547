#!/usr/bin/env bash
# What -compression costs and saves, in one run: switchboard (text mode)
# without it, with it in the mode it ships (no context takeover), and with
# it built for context takeover, each against the same load tool whose
# clients all offer permessage-deflate (as browsers do).
#
#   idle:   IDLE_CONNS connections, 5 s: RSS per connection, handshakes/s
#   fanout: 500 receivers, 5 senders at RATE msgs/s each, 10 s, with
#           PAYLOAD-byte and BIG_PAYLOAD-byte messages: server CPU per
#           million deliveries, bytes written per delivery, p99, and the
#           server's RSS at the end (compressors held by busy connections)
#
# Writes bench/compression.md (compare.sh includes it in BENCHMARKS.md).
# Takes about 2 minutes. Knobs: IDLE_CONNS RATE PAYLOAD BIG_PAYLOAD ROUNDS OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

IDLE_CONNS=${IDLE_CONNS:-10000}
RATE=${RATE:-80}
PAYLOAD=${PAYLOAD:-100}
BIG_PAYLOAD=${BIG_PAYLOAD:-2000}
ROUNDS=${ROUNDS:-1}
OUT=${OUT:-$root/bench/compression.md}
PORT=${PORT:-5120}

for tool in jq go; do
  command -v "$tool" >/dev/null || { echo "compression.sh: needs $tool" >&2; exit 1; }
done

work=$(mktemp -d)
server_pid=
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

go build -o "$work/switchboard" .
go build -ldflags "-X main.compressionModeName=context-takeover" -o "$work/switchboard-ctx" .
go build -o "$work/loadtest" ./cmd/loadtest

start() {
  "$@" -addr "127.0.0.1:$PORT" -rate 0 -max-conns 100000 >"$work/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  cat "$work/server.log" >&2
  exit 1
}
stop() {
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=
}

# run LABEL SERVER-CMD... : the three measures against fresh servers.
run() {
  local label=$1
  shift
  local url="ws://127.0.0.1:$PORT/ws" lt=("$work/loadtest" -target switchboard-text -compression -quiet)
  echo "== $label" >&2
  start "$@"
  "${lt[@]}" -url "$url" -pid "$server_pid" -scenario idle -conns "$IDLE_CONNS" -hold 5s -sources 8 |
    tail -n 1 | jq -c --arg l "$label" '{label: $l, kind: "idle", r: .idle}' >>"$work/rows.jsonl"
  stop
  local p
  for p in "$PAYLOAD" "$BIG_PAYLOAD"; do
    start "$@"
    "${lt[@]}" -url "$url" -pid "$server_pid" -scenario fanout -receivers 500 -senders 5 \
      -rate "$RATE" -payload "$p" -duration 10s -sources 4 |
      tail -n 1 | jq -c --arg l "$label" --arg p "$p" '{label: $l, kind: ("fanout " + $p), r: .fanout}' >>"$work/rows.jsonl"
    stop
  done
}

: >"$work/rows.jsonl"
for _ in $(seq 1 "$ROUNDS"); do
  run "off" "$work/switchboard"
  run "on (no context takeover, shipped)" "$work/switchboard" -compression
  run "on (context takeover)" "$work/switchboard-ctx" -compression
done

{
  echo "## Compression (\`-compression\`)"
  echo
  echo "Written by \`bench/compression.sh\` on $(date -u +%Y-%m-%d): switchboard in text mode, every"
  echo "client offering permessage-deflate; one server per row, back to back. Fan-out: 500"
  echo "receivers, 5 senders at $RATE msgs/s each, 10 s. The load tool's payloads are a"
  echo "stamp padded with dots, so the large ones compress far better than chat text would."
  echo "*written B/delivery* is the server's wchar (/proc/PID/io) over deliveries."
  echo
  echo "| server | idle RSS/conn KiB | handshakes/s | payload | CPU s per M deliveries | written B/delivery | p50 ms | p99 ms | RSS after MiB |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
  jq -rs '
    group_by(.label) as $groups
    | ["off", "on (no context takeover, shipped)", "on (context takeover)"][] as $name
    | ($groups[] | select(.[0].label == $name)) as $g
    | ($g | map(select(.kind == "idle")) | last | .r) as $idle
    | $g[] | select(.kind != "idle")
    | "| \($name) | \(($idle.rss_per_conn_bytes // 0) / 1024 | . * 10 | round / 10) | \($idle.handshakes_per_s | round) | \(.kind | ltrimstr("fanout ")) B | \(.r.server_cpu_s_per_million // 0 | . * 100 | round / 100) | \(.r.server_bytes_per_delivery // 0 | round) | \(.r.latency.p50_ms) | \(.r.latency.p99_ms) | \((.r.server_rss_bytes // 0) / 1048576 | round) |"
  ' "$work/rows.jsonl"
  echo
  echo "Raw lines:"
  echo
  echo '```'
  cat "$work/rows.jsonl"
  echo '```'
} >"$OUT"
echo "wrote $OUT" >&2
