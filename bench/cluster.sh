#!/usr/bin/env bash
# Cluster benchmark of switchboard over NATS JetStream, everything on
# loopback: one nats-server, several switchboard nodes, and the load tool.
#
#  A. Cross-node latency: the same fan-out load against one node without
#     -nats, then against a 3-node cluster with the senders on node 1 and
#     the receivers on node 2, then with the receivers spread over nodes
#     1-3. p50/p99 and their ratio to the single node.
#  B. One big room: CONNS idle connections spread over NODES nodes, one
#     HTTP publish to node 1, and the time until every connection has it.
#
# Writes a markdown report to OUT (default bench/cluster.md) with the raw
# JSON lines of the load tool at its end. A full run (100,000 connections)
# takes a few minutes; a smoke run:
#
#   NODES=3 CONNS=3000 DURATION=3s bash bench/cluster.sh
#
# Knobs (environment): NODES CONNS RECEIVERS SENDERS RATE PAYLOAD DURATION
# HOLD PUBLISH_WAIT PER_PROC SOURCES BASE_PORT NATS_PORT RUN_TIMEOUT
# BIG_TIMEOUT PARTS (A, B or AB) BIN_DIR (take switchboard, loadtest and
# nats-server from there instead of building) KEEP (1 keeps the work
# directory with every log) NODE_FLAGS (more flags for every node)
# PPROF_BASE OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

NODES=${NODES:-6}
CONNS=${CONNS:-100000}
RECEIVERS=${RECEIVERS:-500}
SENDERS=${SENDERS:-5}
RATE=${RATE:-100}
PAYLOAD=${PAYLOAD:-100}
DURATION=${DURATION:-10s}
HOLD=${HOLD:-5s}
PUBLISH_WAIT=${PUBLISH_WAIT:-60s}
# One process holds at most ~20,000 descriptors here: generator processes
# take at most PER_PROC connections each, nodes at most MAX_CONNS.
PER_PROC=${PER_PROC:-19000}
MAX_CONNS=${MAX_CONNS:-20000}
BASE_PORT=${BASE_PORT:-5200}
NATS_PORT=${NATS_PORT:-4322}
RUN_TIMEOUT=${RUN_TIMEOUT:-300}
BIG_TIMEOUT=${BIG_TIMEOUT:-900}
PARTS=${PARTS:-AB}
BIN_DIR=${BIN_DIR:-}
KEEP=${KEEP:-0}
# PPROF_BASE > 0 serves node i's Go profiler on 127.0.0.1:PPROF_BASE+i.
PPROF_BASE=${PPROF_BASE:-0}
OUT=${OUT:-$root/bench/cluster.md}
# Each source address 127.0.0.N has one ephemeral port range (~28,000) for
# all nodes together (the generator binds before connecting), so keep each
# one well under that.
SOURCES=${SOURCES:-$((CONNS / 5000 + 2))}
((SOURCES > 254)) && SOURCES=254

die() {
  echo "cluster.sh: $*" >&2
  exit 1
}
for tool in curl jq timeout go; do
  command -v "$tool" >/dev/null || die "needs $tool"
done
((NODES >= 1 && CONNS >= 1)) || die "NODES and CONNS must be at least 1"

work=$(mktemp -d)
pids=()
# cleanup stops everything this script started: TERM first (a node says
# goodbye to the cluster), KILL after 15 s. On failure (or with KEEP=1)
# the work directory, with every log, is kept.
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  # Newest first: the load tool, then the nodes, then the broker.
  local i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do stop_pid "${pids[$i]}"; done
  if ((status == 0 && KEEP != 1)); then
    rm -rf "$work"
  else
    echo "cluster.sh: logs kept in $work" >&2
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# stop_pid PID : TERM, wait up to 15 s, then KILL.
stop_pid() {
  local pid=$1
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 150); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# forget_pid PID : drop a stopped process from the cleanup list.
forget_pid() {
  local keep=() p
  for p in "${pids[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  pids=("${keep[@]}")
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ---------------------------------------------------------------- binaries
if [ -n "$BIN_DIR" ]; then
  for b in switchboard loadtest nats-server; do
    [ -x "$BIN_DIR/$b" ] || die "BIN_DIR has no $b"
    cp "$BIN_DIR/$b" "$work/$b"
  done
else
  echo "building switchboard, the load tool and nats-server (pinned in go.mod)" >&2
  timeout 600 go build -o "$work/switchboard" .
  timeout 600 go build -o "$work/loadtest" ./cmd/loadtest
  timeout 600 go build -o "$work/nats-server" github.com/nats-io/nats-server/v2
fi
lt=$work/loadtest
if [[ $PARTS == *B* || $PARTS == *A* ]] && ! grep -q -- '-nats' <<<"$("$work/switchboard" -h 2>&1 || true)"; then
  die "this switchboard build has no -nats flag (no cluster mode)"
fi

# ------------------------------------------------------------- processes
# start_nats NAME PORT : a fresh JetStream server with its own store.
start_nats() {
  local name=$1 port=$2 mport=$(($2 + 4000))
  port_free "$port" || die "port $port is in use"
  port_free "$mport" || die "port $mport is in use"
  "$work/nats-server" -a 127.0.0.1 -p "$port" -m "$mport" -js -sd "$work/$name-js" >"$work/$name.log" 2>&1 &
  nats_pid=$!
  pids+=("$nats_pid")
  for _ in $(seq 1 150); do
    if [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$mport/healthz")" = 200 ]; then
      return 0
    fi
    kill -0 "$nats_pid" 2>/dev/null || break
    sleep 0.1
  done
  cat "$work/$name.log" >&2
  die "nats-server did not become healthy"
}

# start_node NAME PORT [FLAGS...] : a switchboard node, waited for until
# its /healthcheck answers 200; sets node_pid.
start_node() {
  local name=$1 port=$2
  shift 2
  port_free "$port" || die "port $port is in use"
  # The single node must not pick up a cluster from the environment.
  env -u SWITCHBOARD_NATS_URL -u SWITCHBOARD_NODE_ID \
    "$work/switchboard" -addr "127.0.0.1:$port" -rate 0 -max-conns "$MAX_CONNS" "$@" ${NODE_FLAGS:-} >"$work/$name.log" 2>&1 &
  node_pid=$!
  pids+=("$node_pid")
  for _ in $(seq 1 300); do
    if [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$port/healthcheck")" = 200 ]; then
      return 0
    fi
    kill -0 "$node_pid" 2>/dev/null || break
    sleep 0.1
  done
  tail -n 20 "$work/$name.log" >&2
  die "$name did not become healthy on port $port"
}

# start_cluster PART N : nats-server plus nodes node1..nodeN on ports
# BASE_PORT+1.. ; sets node_pids and node_ports.
start_cluster() {
  local part=$1 n=$2 i
  start_nats "$part-nats" "$NATS_PORT"
  node_pids=()
  node_ports=()
  for i in $(seq 1 "$n"); do
    local profiler=()
    if ((PPROF_BASE > 0)); then profiler=(-pprof "127.0.0.1:$((PPROF_BASE + i))"); fi
    start_node "$part-node$i" $((BASE_PORT + i)) -nats "nats://127.0.0.1:$NATS_PORT" -node-id "node$i" "${profiler[@]}"
    node_pids+=("$node_pid")
    node_ports+=($((BASE_PORT + i)))
  done
}

# stop_cluster : nodes first (they say goodbye through the broker), then
# the broker.
stop_cluster() {
  local pid
  for pid in "${node_pids[@]}" "$nats_pid"; do
    stop_pid "$pid"
    forget_pid "$pid"
  done
}

# ws_urls PORT... : the -url list for these nodes.
ws_urls() {
  local out="" p
  for p in "$@"; do out+="${out:+,}ws://127.0.0.1:$p/ws"; done
  echo "$out"
}

results=$work/results.jsonl
: >"$results"

# warnings PART NAME... : appends the WARN and ERROR lines of these logs
# (slog's level=WARN, nats-server's [WRN]) to $work/PART-warnings.txt.
warnings() {
  local part=$1 name
  shift
  for name in "$@"; do
    grep -h -E 'level=(WARN|ERROR)|\[(WRN|ERR|FTL)\]' "$work/$name.log" 2>/dev/null | sed "s/^/$name: /" || true
  done >>"$work/$part-warnings.txt"
}

# write_warnings PART : the report's view of those lines.
write_warnings() {
  local f=$work/$1-warnings.txt
  [ -s "$f" ] || return 0
  echo
  echo "Warnings and errors in the broker and node logs ($(wc -l <"$f") lines, first 20):"
  echo
  echo '```'
  head -n 20 "$f" | cut -c1-300
  echo '```'
}

# ------------------------------------------------------------ A: latency
# run_fanout LABEL ROOM URLS SENDER_URLS : one fan-out run; its JSON line
# goes to results and $work/a-LABEL.json, its stderr to $work/a-LABEL.log.
# A failed run is reported in the table, not fatal.
run_fanout() {
  local label=$1 room=$2 urls=$3 sender_urls=$4
  echo "== A: $label (receivers $urls, senders $sender_urls)" >&2
  if timeout "$RUN_TIMEOUT" "$lt" -target switchboard-text -scenario fanout -room "$room" \
    -url "$urls" -sender-url "$sender_urls" -receivers "$RECEIVERS" -senders "$SENDERS" \
    -rate "$RATE" -duration "$DURATION" -payload "$PAYLOAD" -sources 4 -quiet \
    >"$work/a-$label.out" 2>"$work/a-$label.log" && [ -s "$work/a-$label.out" ]; then
    tail -n 1 "$work/a-$label.out" | tee -a "$results" >"$work/a-$label.json"
    jq -r '.fanout | "   p50 \(.latency.p50_ms) ms, p99 \(.latency.p99_ms) ms, lost \(.lost)"' "$work/a-$label.json" >&2
  else
    echo "== A: $label failed: $(tail -n 1 "$work/a-$label.log")" >&2
  fi
}

part_a() {
  start_node a-single "$BASE_PORT"
  run_fanout single lat "$(ws_urls "$BASE_PORT")" "$(ws_urls "$BASE_PORT")"
  stop_pid "$node_pid"
  forget_pid "$node_pid"
  warnings a a-single

  start_cluster a 3
  local p=("${node_ports[@]}")
  run_fanout cross-node lat-cross "$(ws_urls "${p[1]}")" "$(ws_urls "${p[0]}")"
  run_fanout spread-3 lat-spread "$(ws_urls "${p[@]}")" "$(ws_urls "${p[0]}")"
  stop_cluster
  warnings a a-nats a-node1 a-node2 a-node3
}

# a_row LABEL SENDERS_ON RECEIVERS_ON : one markdown row, ratios against
# the single node.
a_row() {
  local label=$1 son=$2 ron=$3 f=$work/a-$1.json
  if [ ! -s "$f" ]; then
    echo "| $label | $son | $ron | failed: $(tail -n 1 "$work/a-$label.log" 2>/dev/null | sed 's/|/\\|/g') | | | | | | | | | | |"
    return
  fi
  local base=$work/a-single.json
  jq -r --arg name "$label" --arg son "$son" --arg ron "$ron" --slurpfile base <([ -s "$base" ] && cat "$base" || echo null) '
    def f2(x): (x * 100 | round) as $c | "\($c / 100 | floor).\($c % 100 | tostring | if length < 2 then "0" + . else . end)";
    def r(v; b): if b == null or b == 0 then "" else "\(f2(v / b))×" end;
    .fanout as $f | ($base[0].fanout.latency // null) as $b |
    "| \($name) | \($son) | \($ron) | \($f.connections) | \($f.offered_deliveries_per_s | round) | \($f.delivered_deliveries_per_s | round) | \($f.lost) | \($f.dropped_clients) | \(f2($f.latency.p50_ms)) | \(f2($f.latency.p99_ms)) | \(f2($f.latency.p999_ms)) | \(f2($f.latency.max_ms)) | \(r($f.latency.p50_ms; $b.p50_ms)) | \(r($f.latency.p99_ms; $b.p99_ms)) |"
  ' "$f"
}

# ----------------------------------------------------------- B: big room
# rss_kb PID : VmRSS in KiB, 0 once the process is gone.
rss_kb() { awk '/^VmRSS:/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# node_closes PORT... : sessions the nodes closed, by reason, summed. A
# node too busy to answer within 2 s is left out rather than fatal.
node_closes() {
  local p
  for p in "$@"; do
    { curl -s --max-time 2 "http://127.0.0.1:$p/metrics" || true; } | grep '^switchboard_session_closes_total{' || true
  done | awk -F'[{}" ]+' '{sum[$3] += $NF} END {for (r in sum) printf "%s%s %d", (n++ ? ", " : ""), r, sum[r]}'
}

# node_sessions PORT : the node's own open sessions, from /metrics, or
# nothing when the node does not answer within 2 s.
node_sessions() {
  local n
  n=$({ curl -s --max-time 2 "http://127.0.0.1:$1/metrics" || true; } | awk '/^switchboard_sessions /{print $2; exit}')
  if [[ $n =~ ^[0-9]+$ ]]; then echo "$n"; fi
}

part_b() {
  # Leave memory for the generator and the system: assume 64 KiB per
  # connection for node and generator together, and scale down if short.
  local avail_kb
  avail_kb=$(awk '/^MemAvailable:/{print $2}' /proc/meminfo)
  b_asked=$CONNS
  if ((CONNS * 64 > avail_kb)); then
    CONNS=$((avail_kb / 64 / 1000 * 1000))
    b_note="Scaled down from $b_asked to $CONNS connections: $((avail_kb / 1024)) MiB available."
  fi
  ((CONNS >= 1)) || die "not enough memory for part B"
  b_per_node=$(((CONNS + NODES - 1) / NODES))
  if ((b_per_node > MAX_CONNS - 100)); then
    b_note+=" ${b_per_node} connections per node is at or over what one node can hold here (~$((MAX_CONNS - 64)))."
  fi
  b_procs=$(((CONNS + PER_PROC - 1) / PER_PROC))

  start_cluster b "$NODES"
  # The nodes' RSS before any connection, so the per-connection figure
  # does not count the runtime's and the cluster link's own memory.
  b_base_kb=0
  local pid
  for pid in "${node_pids[@]}"; do b_base_kb=$((b_base_kb + $(rss_kb "$pid"))); done
  local urls pub
  urls=$(ws_urls "${node_ports[@]}")
  pub="http://127.0.0.1:${node_ports[0]}/api/rooms/big/messages"
  echo "== B: $CONNS idle connections over $NODES nodes, $b_procs generator process(es), $SOURCES sources" >&2
  timeout "$BIG_TIMEOUT" "$lt" -target switchboard-text -scenario idle -room big -url "$urls" \
    -conns "$CONNS" -procs "$b_procs" -sources "$SOURCES" -hold "$HOLD" -idle-uids shared \
    -publish-url "$pub" -publish-wait "$PUBLISH_WAIT" \
    >"$work/b.json" 2>"$work/b.log" &
  local lt_pid=$!
  pids+=("$lt_pid")
  # Sample the nodes every second while the load tool runs: the peaks of
  # summed RSS and of summed sessions, each with its per-node split.
  b_peak_kb=0
  b_peak_nodes=""
  b_peak_sessions=0
  b_sessions=""
  local total kb i per sess n held tick=0
  while kill -0 "$lt_pid" 2>/dev/null; do
    total=0 per="" held=0 sess=""
    for i in "${!node_pids[@]}"; do
      kb=$(rss_kb "${node_pids[$i]}")
      total=$((total + ${kb:-0}))
      per+="${per:+, }node$((i + 1)) $((${kb:-0} / 1024))"
      n=$(node_sessions "${node_ports[$i]}")
      held=$((held + ${n:-0}))
      sess+="${sess:+, }node$((i + 1)) ${n:-?}"
    done
    if ((total > b_peak_kb)); then
      b_peak_kb=$total b_peak_nodes=$per
    fi
    if ((held > b_peak_sessions)); then
      b_peak_sessions=$held b_sessions=$sess
    fi
    if ((++tick % 5 == 0)); then
      echo "   [${tick}s] nodes: $held sessions, RSS $((total / 1024)) MiB; $(tail -n 1 "$work/b.log" 2>/dev/null | cut -c1-100)" >&2
    fi
    sleep 1
  done
  b_status=0
  wait "$lt_pid" || b_status=$?
  b_closes=$(node_closes "${node_ports[@]}")
  forget_pid "$lt_pid"
  if ((b_status == 0)) && [ -s "$work/b.json" ]; then
    tail -n 1 "$work/b.json" >>"$results"
  else
    b_error="load tool exit $b_status: $(tail -n 1 "$work/b.log")"
    echo "== B failed: $b_error" >&2
  fi
  stop_cluster
  local names=(b-nats)
  for i in $(seq 1 "$NODES"); do names+=("b-node$i"); done
  warnings b "${names[@]}"
}

b_row() {
  if [ -n "${b_error:-}" ]; then
    echo "| $NODES | $CONNS | failed: ${b_error//|/\\|} | | | | | | | | | | | |"
    return
  fi
  jq -r --arg nodes "$NODES" --arg peak "$b_peak_kb" --arg base "$b_base_kb" '
    def n(v): if v == null then "" else v end;
    .idle as $i | ($peak | tonumber) as $kb | ($base | tonumber) as $kb0 |
    "| \($nodes) | \($i.conns) | \($i.procs) | \(.sources) | \($i.opened) | \($i.failed_dials) | \($i.dropped) | \($i.handshakes_per_s | round) | \(n($i.publish_recipients)) | \(n($i.publish_reached)) | \(n($i.publish_missing)) | \(if $i.publish_reach_ms == null then "" else ($i.publish_reach_ms * 10 | round / 10) end) | \($kb / 1024 | round) | \(if $i.opened > 0 then (($kb - $kb0) / $i.opened * 10 | round / 10) else "" end) |"
  ' "$work/b.json"
}

# ------------------------------------------------------------------ run
b_note=""
b_error=""
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
[[ $PARTS == *A* ]] && part_a
[[ $PARTS == *B* ]] && part_b

command_line="NODES=$NODES CONNS=${b_asked:-$CONNS} RECEIVERS=$RECEIVERS SENDERS=$SENDERS RATE=$RATE PAYLOAD=$PAYLOAD DURATION=$DURATION HOLD=$HOLD PUBLISH_WAIT=$PUBLISH_WAIT PARTS=$PARTS bash bench/cluster.sh"
{
  echo "# Cluster benchmark: switchboard over NATS JetStream"
  echo
  echo "Written by \`bench/cluster.sh\` (started $started). The broker, every node"
  echo "and the load tool ran on this one machine, on loopback, so they share its"
  echo "cores: absolute numbers drift; compare the rows with each other."
  echo
  echo "- machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(uname -sr)"
  echo "- memory: $(free -g | awk '/Mem:/{print $2 " GiB total, " $7 " GiB available"}') (\`free -g\` at the end of the run below)"
  echo "- $(go version), $("$work/nats-server" --version)"
  echo "- open-file limit per process: $(ulimit -Hn); nodes run with \`-rate 0 -max-conns $MAX_CONNS\`"
  echo
  echo "Command: \`$command_line\`"
  echo
  echo '```'
  echo "\$ nproc"
  nproc
  echo "\$ free -g"
  free -g
  echo '```'
  if [[ $PARTS == *A* ]]; then
    echo
    echo "## A. Cross-node latency at equal load"
    echo
    echo "One room, $RECEIVERS receivers and $SENDERS senders (text mode), $RATE messages/s per sender,"
    echo "$PAYLOAD-byte payloads, $DURATION of sending. Latency is from a message's scheduled send time"
    echo "to its receipt, over every receiving connection (the senders get their own"
    echo "messages back, so a few deliveries per message stay on the senders' node)."
    echo "The single node runs without \`-nats\`; the cluster is 3 nodes on one"
    echo "nats-server with JetStream, where every room message passes through the stream."
    echo
    echo "| setup | senders on | receivers on | conns | offered/s | delivered/s | lost | dropped | p50 ms | p99 ms | p999 ms | max ms | p50 / single | p99 / single |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    a_row single "single node" "single node"
    a_row cross-node node1 node2
    a_row spread-3 node1 "node1, node2, node3"
    write_warnings a
  fi
  if [[ $PARTS == *B* ]]; then
    echo
    echo "## B. One room over $NODES nodes"
    echo
    echo "$CONNS idle connections (one shared uid, so no join storm) in room \`big\`,"
    echo "spread round-robin over $NODES nodes, from ${b_procs:-?} generator process(es) and $SOURCES"
    echo "source addresses. Once all were open and welcomed, one \`POST"
    echo "/api/rooms/big/messages\` went to node 1; *reach ms* is from the POST's"
    echo "start to the last connection's receipt (wait bounded by $PUBLISH_WAIT; *missing* ="
    echo "opened but not reached by then). Node RSS is the peak of the summed VmRSS"
    echo "of all nodes, sampled every second; *node RSS/conn* is that peak less the"
    echo "nodes' RSS before any connection (${b_base_kb:-0} KiB in all), per connection opened."
    [ -n "$b_note" ] && echo && echo "$b_note"
    echo
    echo "| nodes | conns | gen procs | sources | opened | failed dials | dropped | handshakes/s | publish recipients | reached | missing | reach ms | nodes RSS MiB | node RSS/conn KiB |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    b_row
    echo
    echo "- RSS per node at the peak (MiB): ${b_peak_nodes:-n/a}"
    echo "- sessions at their peak (\`switchboard_sessions\`, sampled every second): ${b_peak_sessions:-0} in all; ${b_sessions:-n/a}"
    echo "- sessions the nodes closed, by reason (\`switchboard_session_closes_total\`): ${b_closes:-n/a}"
    if [ -s "$work/b.json" ] && [ "$(jq -r '.idle.drop_reason // empty' "$work/b.json")" != "" ]; then
      echo "- first drop seen by the load tool: $(jq -r '.idle.drop_reason' "$work/b.json")"
    fi
    if [ -s "$work/b.json" ] && [ "$(jq -r '.idle.publish_error // empty' "$work/b.json")" != "" ]; then
      echo "- publish error: $(jq -r '.idle.publish_error' "$work/b.json")"
    fi
    if [ -s "$work/b.json" ] && [ "$(jq -r '.idle.first_dial_error // empty' "$work/b.json")" != "" ]; then
      echo "- first dial error: $(jq -r '.idle.first_dial_error' "$work/b.json")"
    fi
    write_warnings b
  fi
  if [ -f "$root/bench/cluster-analysis.md" ]; then
    echo
    cat "$root/bench/cluster-analysis.md"
  fi
  echo
  echo "## Raw results"
  echo
  echo "The load tool's JSON lines:"
  echo
  echo '```'
  cat "$results"
  echo '```'
} >"$OUT"
echo "wrote $OUT" >&2

# BENCHMARKS.md carries the latest cluster report after the marker line,
# one heading level down; bench/compare.sh keeps it when it rewrites the
# single-node part.
if [ "$OUT" = "$root/bench/cluster.md" ] && [ -f "$root/BENCHMARKS.md" ]; then
  {
    sed '/^<!-- bench\/cluster.sh -->$/,$d' "$root/BENCHMARKS.md"
    echo '<!-- bench/cluster.sh -->'
    echo
    sed 's/^#/##/' "$OUT"
  } >"$root/BENCHMARKS.md.new"
  mv "$root/BENCHMARKS.md.new" "$root/BENCHMARKS.md"
  echo "updated $root/BENCHMARKS.md" >&2
fi
