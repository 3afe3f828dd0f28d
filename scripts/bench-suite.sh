#!/usr/bin/env bash
# Every `weatherflow bench` figure of BENCHMARKS.md, in one go (~25 min on 2 vCPUs).
#
#   scripts/bench-suite.sh [OUT_DIR]          (default target/bench-suite)
#
# Needs a release build (cargo build --release) and, for the Kafka block, a broker:
# WEATHERFLOW_TEST_BROKERS=$(scripts/test-broker.sh up). Without one the Kafka block is
# skipped with a notice. Run it on a quiet machine: every block alternates its runs, but
# a busy neighbour still moves the figures. The peers are separate: benches/peers/run.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
WF=${WF:-target/release/weatherflow}
OUT=${1:-target/bench-suite}
mkdir -p "$OUT"
[[ -x $WF ]] || { echo "no $WF: cargo build --release first" >&2; exit 2; }
FILE=$OUT/raw-1000x24h.jsonl
run() {
    local name=$1; shift
    echo "== $name: weatherflow bench $*" | tee -a "$OUT/log.txt"
    "$WF" bench --json "$OUT/$name.json" "$@" | tee -a "$OUT/log.txt"
}
[[ -f $FILE ]] || "$WF" generate --stations 1000 --duration 24h --interval 10s --seed 1 \
    --start 2026-11-20T00:00:00Z --no-faults --output "$FILE"
run A-gen-noml-workers --no-ml --workers 1,2,4 --repeat 2
run B-gen-ml-workers --workers 1,2,4 --repeat 2
run C-file-noml-workers --source file --input "$FILE" --stations 1000 --no-ml --workers 1,2,4 --repeat 2
run D-stations-noml --no-ml --stations 1000,10000,100000 --workers 2 --repeat 2
run E-stations-ml --stations 1000,10000,100000 --workers 2 --repeat 2
run F-paced-1M-noml --no-ml --speed 10000 --workers 2 --repeat 2
run G-paced-1M-ml --speed 10000 --workers 2 --repeat 2
# Memory per station: the same offered rate (250 k readings/s) at each station count.
for ml in --no-ml --with-ml; do
    for pair in "1000 2500" "10000 250" "100000 25"; do
        set -- $pair
        run "M${ml}-$1" "$ml" --stations "$1" --speed "$2" --events 6000000 --workers 2 --repeat 2
    done
done
if [[ -n ${WEATHERFLOW_TEST_BROKERS:-} ]]; then
    run H-kafka-noml --source kafka --brokers "$WEATHERFLOW_TEST_BROKERS" --no-ml --workers 1,2 --repeat 2
else
    echo "skipping the Kafka block: set WEATHERFLOW_TEST_BROKERS=\$(scripts/test-broker.sh up)" | tee -a "$OUT/log.txt"
fi
echo "done: $OUT" | tee -a "$OUT/log.txt"
