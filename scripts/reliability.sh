#!/usr/bin/env bash
# The reliability suite, long versions (issue 8; results in RELIABILITY.md).
#
#   scripts/reliability.sh            every scenario at its long size, then the report table
#   scripts/reliability.sh --short    the CI sizes (what `cargo test` runs), plus the ignored long sizes
#
# It starts the test broker when WEATHERFLOW_TEST_BROKERS is unset (scripts/test-broker.sh),
# runs the `reliability_*` and `fuzz_*` tests of tests/it (the ignored long sizes too:
# broker pause, broker restart, slow sink) one at a time, so fault timings are not disturbed by
# other tests, and collects one JSON report per scenario into
# benches/results/reliability/<date>/reports.jsonl, printed as a table at the end.
# The soak (scenario 9) is separate: scripts/soak.sh (30 min).
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=long
[ "${1:-}" = "--short" ] && MODE=short
OUT=${RELIABILITY_OUT:-benches/results/reliability/$(date -u +%Y-%m-%d)-$MODE}
mkdir -p "$OUT"
REPORT="$PWD/$OUT/reports.jsonl"
: >"$REPORT"
if [ -z "${WEATHERFLOW_TEST_BROKERS:-}" ]; then
  WEATHERFLOW_TEST_BROKERS=$(scripts/test-broker.sh up)
  export WEATHERFLOW_TEST_BROKERS
fi
export WEATHERFLOW_RELIABILITY_REPORT="$REPORT" CI=true
[ "$MODE" = long ] && export WEATHERFLOW_RELIABILITY=long
started=$(date +%s)
cargo test --release --test it -- --include-ignored --test-threads 1 reliability_ fuzz_ 2>&1 | tee "$OUT/test.log" \
  | grep -E "^test |reliability-report|panicked|test result" >&2
python3 - "$REPORT" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print("| scenario | runs | faults | records in | windows out | missing | non-identical duplicates | time to recover (ms) |")
print("|---|---:|---:|---:|---:|---:|---:|---|")
for r in rows:
    rec = r["recover_ms"]
    span = "-" if not rec else (f"{min(rec)}–{max(rec)}" if len(rec) > 1 else str(rec[0]))
    print(f"| {r['scenario']} | {r['runs']} | {r['faults']} | {r['records_in']} | {r['windows_out']} | "
          f"{r['missing'] + r['unexpected'] + r['wrong']} | {r['nonidentical_duplicates']} | {span} |")
PY
echo "reliability: $MODE suite in $(( $(date +%s) - started )) s; reports in $OUT" >&2
