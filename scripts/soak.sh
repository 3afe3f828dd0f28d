#!/usr/bin/env bash
# Soak (issue 8, scenario 9): a steady stream through Kafka for a long time, sampling the
# pipeline's RSS, watermark lag and consumer lag, to show they stay flat.
#
#   scripts/soak.sh                 30 min at 100 000 readings/s (100 000 stations, 1 s cadence,
#                                   so event time keeps pace with the wall clock)
#
# Environment: SOAK_SECONDS (1800), SOAK_RATE (100000), SOAK_STATIONS (= rate), SOAK_WORKERS (2),
# SOAK_OUT (benches/results/soak), SOAK_KAFKA_PORT (9094), WEATHERFLOW_BIN (a copy of
# target/release/weatherflow is taken, so rebuilding during the soak changes nothing; the
# copy goes to SOAK_BIN_DIR, default target/soak, outside the committed results).
# SOAK_HISTORY (5m) is the API store's --history: its default, 24 h, holds about 0.4 KiB per
# station-minute, which at 100 000 stations grows by 2.4 GiB an hour for a day (the first soak
# showed exactly that); 5 m reaches its steady state within the soak.
# It runs its own broker (scripts/test-broker.sh on SOAK_KAFKA_PORT) and stops it at the end.
# Output: $SOAK_OUT/samples.csv (one row per 10 s), soak.png when matplotlib is available
# (scripts/soak-plot.py installs it into a venv), and the logs.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TOTAL=${SOAK_SECONDS:-1800}
RATE=${SOAK_RATE:-100000}
STATIONS=${SOAK_STATIONS:-$RATE}
WORKERS=${SOAK_WORKERS:-2}
OUT=${SOAK_OUT:-benches/results/soak}
PORT=${SOAK_KAFKA_PORT:-9094}
API_PORT=${SOAK_API_PORT:-18080}
mkdir -p "$OUT"
BIN_DIR=${SOAK_BIN_DIR:-target/soak}
mkdir -p "$BIN_DIR"
BIN="$BIN_DIR/weatherflow"
cp "${WEATHERFLOW_BIN:-target/release/weatherflow}" "$BIN"
export KAFKA_PORT=$PORT NISSHI_RUN_DIR="$PWD/$OUT/broker"
BROKERS=$(scripts/test-broker.sh up)
cleanup() {
  [ -n "${PRODUCER:-}" ] && kill "$PRODUCER" 2>/dev/null || true
  [ -n "${PIPELINE:-}" ] && kill "$PIPELINE" 2>/dev/null || true
  scripts/test-broker.sh down || true
}
trap cleanup EXIT
echo "soak: $RATE readings/s, $STATIONS stations, -w $WORKERS, ${SECONDS_TOTAL}s, broker $BROKERS" >&2
"$BIN" produce --from generator --brokers "$BROKERS" --stations "$STATIONS" --interval 1s \
  --rate "$RATE" --events $((RATE * (SECONDS_TOTAL + 60))) --seed 8 >"$OUT/producer.log" 2>&1 &
PRODUCER=$!
"$BIN" run --source kafka --brokers "$BROKERS" -w "$WORKERS" --group soak \
  --api "127.0.0.1:$API_PORT" --history "${SOAK_HISTORY:-5m}" --max-stations "$STATIONS" >"$OUT/pipeline.log" 2>&1 &
PIPELINE=$!
python3 scripts/soak-sample.py --pid "$PIPELINE" --producer-pid "$PRODUCER" \
  --metrics "http://127.0.0.1:$API_PORT/metrics" --seconds "$SECONDS_TOTAL" --out "$OUT/samples.csv"
kill -TERM "$PIPELINE"
STOP=$(date +%s.%N)
wait "$PIPELINE" && echo "soak: pipeline stopped cleanly in $(echo "$(date +%s.%N) - $STOP" | bc) s" >&2
PIPELINE=
python3 scripts/soak-plot.py "$OUT/samples.csv" "$OUT/soak.png" || echo "soak: no plot (see above)" >&2
