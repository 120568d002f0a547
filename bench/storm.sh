#!/usr/bin/env bash
# A reconnect storm with history recovery: the load tool's storm scenario
# against one server. CLIENTS storm clients and STAYERS stayers share a
# room with one sender at RATE msgs/s; the storm clients are cut at once
# (no close frame), miss MISSED messages, and reconnect at once with
# ?since=. Prints the result line and a summary: the time until every
# storm client has recovered everything, and the stayers' live latency in
# a quiet window before the cut and during the storm. Exits non-zero when
# a storm client did not recover completely.
#
# Knobs (environment): CLIENTS (5000) STAYERS (100) RATE (50) MISSED (50)
# SOURCES (8) RECONNECT_CONC (0: all at once) SERVER_FLAGS (extra server
# flags, e.g. "-history-size 1000"). A storm client recovers only if the
# room's history still holds everything after its since when it is back:
# at the default -history-size 100 that is 100/RATE seconds of traffic,
# MISSED/RATE of them spent before the reconnect starts.
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS=${CLIENTS:-5000}
STAYERS=${STAYERS:-100}
RATE=${RATE:-50}
MISSED=${MISSED:-50}
SOURCES=${SOURCES:-8}
RECONNECT_CONC=${RECONNECT_CONC:-0}
read -r -a server_flags <<<"${SERVER_FLAGS:-}"
PORT=5112

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

"$work/switchboard" -addr 127.0.0.1:$PORT -rate 0 -max-conns 100000 ${server_flags[@]+"${server_flags[@]}"} \
  >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
  sleep 0.1
done

echo "storm: $CLIENTS storm clients missing $MISSED messages, $STAYERS stayers, sender at $RATE msgs/s${SERVER_FLAGS:+, server $SERVER_FLAGS}"
status=0
line=$("$work/loadtest" -scenario storm -url ws://127.0.0.1:$PORT/ws -pid "$server_pid" \
  -conns "$CLIENTS" -receivers "$STAYERS" -rate "$RATE" -missed "$MISSED" -sources "$SOURCES" \
  -reconnect-concurrency "$RECONNECT_CONC" -quiet | tail -n 1) || status=$?
echo "$line"
if [ -z "$line" ]; then
  echo "storm: no result (exit $status); server log:" >&2
  tail -n 20 "$work/server.log" >&2
  exit 1
fi
field() { sed -n "s/.*\"$1\":\([0-9.a-z]*\).*/\1/p" <<<"$line"; }
# latency FIELD: p50, p99 and max of one latency object of the line.
latency() {
  local obj
  obj=$(sed -n "s/.*\"$1\":{\([^}]*\)}.*/\1/p" <<<"$line")
  sed -n 's/.*"p50_ms":\([0-9.]*\).*"p99_ms":\([0-9.]*\).*"max_ms":\([0-9.]*\).*/p50 \1 ms, p99 \2 ms, max \3 ms/p' <<<"$obj"
}
echo "recovered true $(field recovered_true), false $(field recovered_false), incomplete $(field incomplete) of $(field storm_clients) (each missed $(field missed_min)..$(field missed_max))"
echo "time until all recovered: $(field time_to_all_recovered_ms) ms (reconnect dials took $(field reconnect_dial_s) s)"
echo "stayers, quiet window:  $(latency quiet_latency)"
echo "stayers, during storm:  $(latency storm_latency)"
exit "$status"
