#!/usr/bin/env bash
# Fuzzes the REST API with schemathesis against its own /openapi.json (README, "Fuzzing").
#
#   scripts/fuzz-api.sh [MAX_EXAMPLES]      # default 200 cases per operation and phase
#
# Installs schemathesis from PyPI into ~/.cache/weatherflow/schemathesis-venv (reused when
# present), starts the pipeline on generated data with --linger so the API holds real
# stations, waits until its input is complete, then runs every schemathesis phase and check
# (no 5xx; status codes, content types, headers and bodies as documented; negative inputs
# rejected) with a fixed seed. Exits non-zero on any failure; the report is in
# target/schemathesis/.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
W=$HERE/target/release/weatherflow
EXAMPLES=${1:-200}
PORT=${API_PORT:-18097}
VENV=$HOME/.cache/weatherflow/schemathesis-venv
OUT=$HERE/target/schemathesis
mkdir -p "$OUT"

if [ ! -x "$VENV/bin/schemathesis" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q 'schemathesis>=4,<5'
fi
"$VENV/bin/schemathesis" --version
[ -x "$W" ] || (cd "$HERE" && cargo build --release)

"$W" -w 2 --stations 20 --events 200000 --speed max --start 2026-11-20T00:00:00Z \
  --api 127.0.0.1:$PORT --linger >"$OUT/pipeline.log" 2>&1 &
pid=$!
trap 'kill -INT $pid 2>/dev/null || true; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do
  curl -sf "http://127.0.0.1:$PORT/ready" 2>/dev/null | grep -q '"input_complete":true' && break
  sleep 0.1
done
curl -sf "http://127.0.0.1:$PORT/ready" | grep -q '"input_complete":true' || { echo "pipeline not ready" >&2; exit 1; }

"$VENV/bin/schemathesis" run "http://127.0.0.1:$PORT/openapi.json" \
  --checks all --max-examples "$EXAMPLES" --seed 1 --workers 2 --generation-codec ascii \
  --report junit --report-dir "$OUT" --no-color
