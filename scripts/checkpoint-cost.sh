#!/usr/bin/env bash
# The throughput cost of station-state checkpoints (BENCHMARKS.md, issue 17).
#
# Produces 2,000,000 generator readings (1,000 stations) once, then reads them with
# `run --source kafka --stop-at-end`: one warm-up run that is discarded, then N pairs in
# ABBA order, with and without --no-state-checkpoint. Each run has a fresh consumer group
# and state topic, so every run does the same work. Prints one line per run:
#   label pair k-readings/s cpu-seconds peak-rss-MiB
# then the mean and median ratio (with / without).
#
# Usage: scripts/checkpoint-cost.sh [BROKERS] [OUT_DIR]   (N=10 pairs by default)
set -euo pipefail
B=${1:-127.0.0.1:9300}
D=${2:-$(mktemp -d)}
N=${N:-10}
W=${WEATHERFLOW_BIN:-$(dirname "$0")/../target/release/weatherflow}
RUN=$(date +%s)
mkdir -p "$D"
echo "results in $D" >&2

"$W" produce --from generator --stations 1000 --events 2000000 --interval 10s \
  --start 2026-11-20T00:00:00Z --seed 3 --no-faults --brokers "$B" --topic "ck-$RUN-raw" \
  --partitions 4 --rate 0 >"$D/produce.txt" 2>&1

one() { # label pair [extra flags]
  local label=$1 i=$2
  shift 2
  "$W" run --source kafka --stop-at-end -w 2 --no-api --brokers "$B" --topic "ck-$RUN-raw" \
    --group "ck-$RUN-$label-$i" --state-topic "ck-$RUN-state-$label-$i" \
    --bench-report "$D/r-$label-$i.json" "$@" >"$D/log-$label-$i.txt" 2>&1
  python3 - "$D/r-$label-$i.json" "$label" "$i" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
print(sys.argv[2], sys.argv[3], round(r["readings"] / r["wall_s"] / 1e3, 1), r["cpu_s"], r["peak_rss_bytes"] // 2**20)
EOF
}

{
  one warm 0 --no-state-checkpoint
  for i in $(seq 1 "$N"); do
    if [ $((i % 2)) = 1 ]; then
      one with "$i"; one without "$i" --no-state-checkpoint
    else
      one without "$i" --no-state-checkpoint; one with "$i"
    fi
  done
} | tee "$D/results.txt"

python3 - "$D/results.txt" <<'EOF'
import statistics as st, sys
rate = {}
for line in open(sys.argv[1]):
    label, i, r, *_ = line.split()
    rate[(label, int(i))] = float(r)
pairs = sorted(i for (label, i) in rate if label == "with" and ("without", i) in rate)
ratios = [rate[("with", i)] / rate[("without", i)] for i in pairs]
se = st.stdev(ratios) / len(ratios) ** 0.5 if len(ratios) > 1 else float("nan")
print(f"pairs {len(ratios)}: mean ratio {st.mean(ratios):.3f} (SE {se:.3f}), median {st.median(ratios):.3f}")
EOF
