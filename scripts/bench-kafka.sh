#!/usr/bin/env bash
# Kafka end to end on this machine, broker on loopback (BENCHMARKS.md, "Kafka").
#
#   scripts/bench-kafka.sh RAW.jsonl EXPECTED_WINDOWS [WORKERS]
#
# 1. Starts a fresh in-memory test broker on port ${KAFKA_PORT:-9093}.
# 2. Produces RAW.jsonl to bench-raw with `weatherflow produce` (the broker's ingest rate).
# 3. Times the pipeline (`run --source kafka -w WORKERS`) from start until the broker has
#    acknowledged EXPECTED_WINDOWS windows (read from its 1 s progress lines), then stops it
#    with SIGTERM. Consumer lag over time is in the progress lines (bench-run.log).
# 4. Reports the broker's own consume rate: kcat reading bench-raw to its end.
#
# EXPECTED_WINDOWS is the window count of a file replay of the same input
# (`weatherflow run --source file --input RAW.jsonl --output f.jsonl; wc -l f.jsonl`).
set -euo pipefail
RAW=$1; EXPECTED=$2; WORKERS=${3:-2}
export KAFKA_PORT=${KAFKA_PORT:-9093}
HERE=$(cd "$(dirname "$0")/.." && pwd)
W=$HERE/target/release/weatherflow
OUT=${BENCH_OUT:-$PWD}
T=(--topic bench-raw --features-topic bench-features --predictions-topic bench-predictions
   --dlq-topic bench-dlq --checkpoint-topic bench-checkpoints)

"$HERE/scripts/test-broker.sh" down >/dev/null 2>&1 || true
B=$("$HERE/scripts/test-broker.sh" up)
trap '"$HERE/scripts/test-broker.sh" down' EXIT
echo "broker $B"

echo "== produce"
/usr/bin/time -v "$W" produce --brokers "$B" "${T[@]}" --from file --input "$RAW" \
  >"$OUT/bench-produce.log" 2>&1
grep -E "produced|Elapsed|User time|System time|Maximum resident" "$OUT/bench-produce.log" || true

echo "== pipeline -w $WORKERS"
start=$(date +%s.%N)
/usr/bin/time -v "$W" run --source kafka -w "$WORKERS" --brokers "$B" "${T[@]}" --group bench \
  --idle-timeout 2s --progress-interval 1s --log-format json >"$OUT/bench-run.log" 2>&1 &
pid=$!
while kill -0 "$pid" 2>/dev/null; do
  acked=$(grep -o '"acked":[0-9]*' "$OUT/bench-run.log" | tail -1 | cut -d: -f2 || true)
  if [ -n "$acked" ] && [ "$acked" -ge "$EXPECTED" ]; then break; fi
  sleep 0.2
done
done_at=$(date +%s.%N)
# Signal the pipeline itself, not /usr/bin/time around it (it must live to report).
pkill -TERM -x weatherflow || true
wait "$pid" || true
secs=$(echo "$done_at - $start" | bc -l)
lines=$(wc -l <"$RAW")
echo "all $EXPECTED windows acknowledged after $secs s: $(echo "$lines / $secs" | bc) readings/s"
grep -E "User time|System time|Maximum resident|emit→ack|windows to kafka|readings in" "$OUT/bench-run.log" || true
echo "consumer lag over time (s, lag):"
grep -o '"timestamp":"[^"]*".*"consumer_lag":[0-9]*' "$OUT/bench-run.log" \
  | sed -E 's/"timestamp":"[^T]*T([^"]*)".*"consumer_lag":([0-9]*)/\1 \2/' | head -200 || true

if command -v kcat >/dev/null; then
  echo "== broker consume rate (kcat, librdkafka from this build)"
  lib=$(dirname "$(find "$HERE/target/release" -path '*rdkafka-sys*/out/src/librdkafka.so.1' | head -1)")
  /usr/bin/time -f "%e s" env LD_LIBRARY_PATH="$lib" kcat -b "$B" -C -t bench-raw -e -q -o beginning \
    -X fetch.max.bytes=52428800 | wc -l
fi
