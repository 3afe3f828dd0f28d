#!/usr/bin/env bash
# REST API throughput, and the pipeline's throughput under API load (BENCHMARKS.md, "REST API").
#
#   scripts/bench-api.sh            # needs wrk (Debian: apt install wrk) and a release build
#
# 1. Idle: the pipeline replays 600 k generated readings of 1,000 stations, then lingers
#    (--linger) with its API up; `wrk` hammers GET /predictions/{id} with 32 connections.
# 2. Busy: the pipeline runs 8.64 M generated readings (1,000 stations, 24 h) as fast as
#    it can with -w 2, four ways: API off; API on and unused; API under ~1 k req/s; API under
#    wrk at full blast. Each prints the run's events/s, and wrk its req/s and latency.
# Every case runs RUNS times (default 2); CASES picks them (default "idle off none paced full").
# Ports: API_PORT (default 18099).
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
W=$HERE/target/release/weatherflow
PORT=${API_PORT:-18099}
RUNS=${RUNS:-2}
CASES=${CASES:-idle off none paced full}
has() { [[ " $CASES " == *" $1 "* ]]; }
URL=http://127.0.0.1:$PORT
TMP=$(mktemp -d)
trap 'pkill -INT -f "api 127.0.0.1:$PORT" 2>/dev/null || true; rm -rf "$TMP"' EXIT
command -v wrk >/dev/null || { echo "wrk not found: apt install wrk" >&2; exit 1; }
[ -x "$W" ] || (cd "$HERE" && cargo build --release)

# Waits until GET $1 answers with a body matching $2 (30 s at most).
wait_for() {
  for _ in $(seq 1 300); do
    curl -sf "$URL$1" 2>/dev/null | grep -q "$2" && return 0
    sleep 0.1
  done
  echo "timed out waiting for $1 ~ $2" >&2; return 1
}

wrk_summary() { grep -E "Requests/sec|^ +50%|^ +99%" "$1" | tr -s ' ' | tr '\n' ' '; echo; }

if has idle; then
echo "== idle pipeline: wrk -t1 -c32 -d10s GET /predictions/st-00042"
"$W" -w 2 --stations 1000 --events 600000 --speed max --start 2026-11-20T00:00:00Z \
  --api 127.0.0.1:$PORT --linger >"$TMP/idle.log" 2>&1 &
wait_for /ready '"input_complete":true'
for run in $(seq 1 "$RUNS"); do
  wrk -t1 -c32 -d10s --latency "$URL/predictions/st-00042" >"$TMP/wrk.txt"
  echo "  run $run: $(wrk_summary "$TMP/wrk.txt")"
done
pkill -INT -f "api 127.0.0.1:$PORT"; wait || true
fi

# About 1000 requests per second: 32 connections, each pausing 28 ms after an answer.
echo 'function delay() return 28 end' >"$TMP/paced.lua"

busy() {  # $1 = label, $2 = load: none | paced | full | off, $3 = run
  has "$2" || return 0
  run=$3
  {
    api=(--api 127.0.0.1:$PORT); [ "$2" = off ] && api=(--no-api)
    "$W" -w 2 --stations 1000 --events 8640000 --speed max --start 2026-11-20T00:00:00Z \
      "${api[@]}" >"$TMP/busy.log" 2>&1 &
    pid=$!
    wrk_pid=""
    if [ "$2" = paced ] || [ "$2" = full ]; then
      wait_for /health ok
      script=(); [ "$2" = paced ] && script=(-s "$TMP/paced.lua")
      wrk -t1 -c32 -d120s --latency "${script[@]}" "$URL/predictions/st-00042" >"$TMP/wrk.txt" 2>&1 &
      wrk_pid=$!
    fi
    wait "$pid"
    [ -n "$wrk_pid" ] && { kill -INT "$wrk_pid"; wait "$wrk_pid" || true; }
    rate=$(grep -o 'readings in .*' "$TMP/busy.log" | head -1)
    echo "  $1 run $run: $rate ${wrk_pid:+| wrk: $(wrk_summary "$TMP/wrk.txt")}"
  }
}
# The cases take turns, so a slow spell of this noisy machine hits all of them alike.
echo "== busy pipeline: 8.64 M readings, 1,000 stations, -w 2"
for run in $(seq 1 "$RUNS"); do
  busy "API off        " off "$run"
  busy "API on, no load" none "$run"
  busy "API ~1k req/s  " paced "$run"
  busy "API full blast " full "$run"
done
