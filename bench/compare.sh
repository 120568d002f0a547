#!/usr/bin/env bash
# Side-by-side benchmark of switchboard (text and JSON mode) against the
# gorilla/websocket chat example and Centrifugo v6.9.1, on loopback, with the
# same load tool and the same scenarios back to back. Writes BENCHMARKS.md,
# bench/chart.png and bench/results.jsonl (the load tool's raw JSON lines).
# Takes about 12 minutes (building Centrifugo alone takes about 3).
#
# Knobs (environment): RECEIVERS SENDERS PAYLOAD RATES STEP IDLE_CONNS SB_FLAGS
# REACH_CONNS (0 skips the reach runs) BIG_IDLE_CONNS (0 skips the
# one-process ceiling run) OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

RECEIVERS=${RECEIVERS:-500}
SENDERS=${SENDERS:-5}
PAYLOAD=${PAYLOAD:-100}
RATES=${RATES:-20,80,160,320,480,640,960,1280,1920,2560}
STEP=${STEP:-5s}
IDLE_CONNS=${IDLE_CONNS:-10000}
REACH_CONNS=${REACH_CONNS:-19000}
BIG_IDLE_CONNS=${BIG_IDLE_CONNS:-19500}
OUT=${OUT:-$root/BENCHMARKS.md}

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "building switchboard, the load tool, the gorilla chat example (v1.5.3) and Centrifugo (v6.9.1)" >&2
go build -o "$work/switchboard" .
go build -o "$work/loadtest" ./cmd/loadtest
go build -o "$work/reachfloor" ./cmd/reachfloor
# The gorilla chat example comes from the Go module proxy into a throwaway
# module; nothing of it is committed here.
mkdir -p "$work/gorilla"
(
  cd "$work/gorilla"
  go mod init gorillachat >/dev/null 2>&1
  go get github.com/gorilla/websocket@v1.5.3 >/dev/null 2>&1
  go build -o "$work/gorilla-chat" github.com/gorilla/websocket/examples/chat
)
# Centrifugo the same way: its release module, built here, not committed.
mkdir -p "$work/centrifugo-build"
(
  cd "$work/centrifugo-build"
  go mod init centrifugobuild >/dev/null 2>&1
  go get github.com/centrifugal/centrifugo/v6@v6.9.1 >/dev/null 2>&1
  go build -o "$work/centrifugo" github.com/centrifugal/centrifugo/v6
)
# Centrifugo's config: everything default except what the load tool needs.
# client.insecure lets clients connect, subscribe and publish without a
# token (as anonymous users); the channel options allow client publishing
# explicitly as well (allow_publish_for_subscriber, and
# allow_publish_for_anonymous since insecure clients have no user ID).
# client.queue_max_size is each connection's outbound queue cap in bytes,
# before a slow client is disconnected: 1 MiB, switchboard's default
# -max-queue-bytes (Centrifugo's default is also 1 MiB; set here so the two
# stay matched). ping_interval (25s) and pong_timeout (8s) stay default: the
# load tool answers the server's {} pings.
cat >"$work/centrifugo.json" <<'EOF'
{
  "http_server": {"address": "127.0.0.1", "port": 5105},
  "client": {"insecure": true, "queue_max_size": 1048576},
  "channel": {
    "without_namespace": {"allow_publish_for_subscriber": true, "allow_publish_for_anonymous": true}
  }
}
EOF

# start_server NAME PORT CMD... : starts a server, waits until it listens,
# and sets server_pid.
start_server() {
  local name=$1 port=$2
  shift 2
  "$@" >"$work/$name.log" 2>&1 &
  server_pid=$!
  pids+=("$server_pid")
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "$name did not start; its log:" >&2
  cat "$work/$name.log" >&2
  exit 1
}

stop_server() {
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
}

results="$work/results.jsonl"
: >"$results"

# run_target TARGET PORT CMD... : the ladder and the idle scenario against one
# freshly started server.
run_target() {
  local target=$1 port=$2
  shift 2
  local url="ws://127.0.0.1:$port/ws"
  if [ "$target" = centrifugo ]; then url="ws://127.0.0.1:$port/connection/websocket"; fi
  echo "== $target: ladder" >&2
  start_server "$target" "$port" "$@"
  "$work/loadtest" -target "$target" -url "$url" -pid "$server_pid" -scenario ladder \
    -receivers "$RECEIVERS" -senders "$SENDERS" -payload "$PAYLOAD" \
    -rates "$RATES" -step-duration "$STEP" -sources 4 | tail -n 1 >>"$results"
  stop_server
  echo "== $target: idle $IDLE_CONNS" >&2
  start_server "$target" "$port" "$@"
  "$work/loadtest" -target "$target" -url "$url" -pid "$server_pid" -scenario idle \
    -conns "$IDLE_CONNS" -hold 5s -sources 8 | tail -n 1 >>"$results"
  stop_server
}

# run_reach TARGET VIA PORT CMD... : the reach scenario (REACH_CONNS idle
# connections in one room, one message, time until the last has it)
# against one freshly started server. VIA is "publish" (switchboard's HTTP
# publish, which the floor answers too) or "client" (a client message).
run_reach() {
  local target=$1 via=$2 port=$3
  shift 3
  [ "$REACH_CONNS" -gt 0 ] || return 0
  local url="ws://127.0.0.1:$port/ws" lt_target=$target extra=()
  if [ "$target" = centrifugo ]; then url="ws://127.0.0.1:$port/connection/websocket"; fi
  if [ "$target" = floor ]; then lt_target=switchboard-text; fi
  if [ "$via" = publish ]; then extra=(-publish-url "http://127.0.0.1:$port/api/rooms/bench/messages"); fi
  echo "== $target: reach $REACH_CONNS ($via)" >&2
  start_server "$target-reach" "$port" "$@"
  "$work/loadtest" -target "$lt_target" -url "$url" -pid "$server_pid" -scenario reach \
    -conns "$REACH_CONNS" -sources 8 "${extra[@]}" | tail -n 1 |
    sed "s/\"target\":\"$lt_target\"/\"target\":\"$target\"/" >>"$results" ||
    true # a run that missed connections is kept and shown as such
  stop_server
}

# SB_FLAGS adds server flags to both switchboard runs, e.g. SB_FLAGS="-history-size 0".
sb_flags=(-rate 0 -max-conns 100000 ${SB_FLAGS:-})
run_target switchboard-text 5101 "$work/switchboard" -addr 127.0.0.1:5101 "${sb_flags[@]}"
run_target switchboard-json 5102 "$work/switchboard" -addr 127.0.0.1:5102 "${sb_flags[@]}"
run_target gorilla 5103 "$work/gorilla-chat" -addr 127.0.0.1:5103
run_target centrifugo 5105 "$work/centrifugo" --config "$work/centrifugo.json"

# The floor first: one goroutine writing the frame to each socket in turn,
# nothing else (cmd/reachfloor); every reach time is read against it.
run_reach floor publish 5106 "$work/reachfloor" -addr 127.0.0.1:5106 -writers 1
run_reach switchboard-text publish 5101 "$work/switchboard" -addr 127.0.0.1:5101 "${sb_flags[@]}"
run_reach switchboard-text client 5101 "$work/switchboard" -addr 127.0.0.1:5101 "${sb_flags[@]}"
run_reach switchboard-json client 5102 "$work/switchboard" -addr 127.0.0.1:5102 "${sb_flags[@]}"
run_reach gorilla client 5103 "$work/gorilla-chat" -addr 127.0.0.1:5103
run_reach centrifugo client 5105 "$work/centrifugo" --config "$work/centrifugo.json"

if [ "$BIG_IDLE_CONNS" -gt 0 ]; then
  echo "== switchboard-text: idle $BIG_IDLE_CONNS in one server process" >&2
  start_server switchboard-big 5104 "$work/switchboard" -addr 127.0.0.1:5104 "${sb_flags[@]}"
  "$work/loadtest" -target switchboard-text -url ws://127.0.0.1:5104/ws -pid "$server_pid" \
    -scenario idle -conns "$BIG_IDLE_CONNS" -hold 10s -procs 2 -sources 16 | tail -n 1 >"$work/big.jsonl"
  grep -h "connection ceiling" "$work/switchboard-big.log" >"$work/ceiling.txt" || true
  stop_server
fi

"$work/loadtest" report -in "$results" -md "$work/report.md" -png "$root/bench/chart.png" -reach-png "$root/bench/reach.png"
# Keep the raw JSON lines beside the report, for anyone who wants more.
cat "$results" "$work/big.jsonl" 2>/dev/null >"$root/bench/results.jsonl" || true

{
  echo "# Benchmarks: switchboard against the gorilla/websocket chat example and Centrifugo"
  echo
  echo "Written by \`bench/compare.sh\` on $(date -u +%Y-%m-%d). All servers ran on this"
  echo "machine with the load generator beside them on loopback, back to back in"
  echo "one run. Absolute numbers drift on a shared machine; the ratios are the"
  echo "figures to quote."
  echo
  echo "- machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -sr)"
  echo "- $(go version)"
  echo "- fan-out: $RECEIVERS receivers and $SENDERS senders in one room, $PAYLOAD-byte payloads, per-sender rates $RATES, $STEP a step"
  echo "- idle: $IDLE_CONNS connections held 5 s"
  echo "- reach: $REACH_CONNS idle connections in one room, one message; the floor is cmd/reachfloor with one writer"
  echo
  echo "Command: \`RECEIVERS=$RECEIVERS SENDERS=$SENDERS PAYLOAD=$PAYLOAD RATES=$RATES STEP=$STEP IDLE_CONNS=$IDLE_CONNS REACH_CONNS=$REACH_CONNS BIG_IDLE_CONNS=$BIG_IDLE_CONNS bash bench/compare.sh\`"
  echo
  # The report's own title and chart links are replaced by ours, with
  # paths from the repository's root.
  grep -v -e '^# ' -e '^!\[' "$work/report.md"
  echo
  echo "![p99 latency against offered load](bench/chart.png)"
  echo
  if [ -f "$root/bench/reach.png" ] && [ "$REACH_CONNS" -gt 0 ]; then
    echo "![one message to every connection of one room](bench/reach.png)"
    echo
  fi
  cat "$root/bench/analysis.md"
  if [ -s "$work/big.jsonl" ]; then
    echo
    echo "## One process at the descriptor ceiling"
    echo
    echo "switchboard (text mode) holding $BIG_IDLE_CONNS idle connections from two generator processes:"
    echo
    echo '```'
    cat "$work/ceiling.txt"
    cat "$work/big.jsonl"
    echo '```'
  fi
  # The last compression report (bench/compression.sh), then the last
  # cluster report (bench/cluster.sh), stay at the end.
  if [ -f "$root/bench/compression.md" ]; then
    echo
    echo '<!-- bench/compression.sh -->'
    echo
    cat "$root/bench/compression.md"
  fi
  if [ -f "$root/bench/cluster.md" ]; then
    echo
    echo '<!-- bench/cluster.sh -->'
    echo
    sed 's/^#/##/' "$root/bench/cluster.md"
  fi
} >"$OUT"
echo "wrote $OUT and bench/chart.png" >&2
