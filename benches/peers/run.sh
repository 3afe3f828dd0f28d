#!/usr/bin/env bash
# Side-by-side benchmark: weatherflow and the peer engines run the same window job on the
# same file, one after another, each measured as a whole process tree, each checked
# window for window against weatherflow's output. See README.md.
#
#   benches/peers/run.sh [INPUT] [ENGINE...]
#
# INPUT    weather-raw JSON lines (default /work/bench/raw-1000x24h.jsonl)
# ENGINE   any of: ours duckdb polars polars-dynamic spark flink
#          (default: ours duckdb polars spark flink)
#
# Environment
#   RUNS         repetitions of the whole engine list (default 1); one row per run
#   WEATHERFLOW  weatherflow binary (default /work/main/target/release/weatherflow)
#   VENV         peers' virtualenv (default ~/.cache/weatherflow/peers-venv, see setup.sh)
#   WORKDIR      outputs, logs, measurements (default /tmp/weatherflow-peers)
#   RESULTS      Markdown results file (default $WORKDIR/results-<UTC time>.md)
#   KEEP_OUTPUT  1 keeps every engine's output; by default outputs that pass the check are
#                deleted (failing ones are kept for inspection)
#   PAUSE        seconds of rest before each measured run (default 3)
# Paths (input, binary, venv, workdir) must not contain spaces.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
INPUT=${1:-/work/bench/raw-1000x24h.jsonl}
[[ $# -gt 0 ]] && shift
if [[ $# -gt 0 ]]; then ENGINES=("$@"); else ENGINES=(ours duckdb polars spark flink); fi
RUNS=${RUNS:-1}
WEATHERFLOW=${WEATHERFLOW:-/work/main/target/release/weatherflow}
VENV=${VENV:-$HOME/.cache/weatherflow/peers-venv}
WORKDIR=${WORKDIR:-/tmp/weatherflow-peers}
RESULTS=${RESULTS:-$WORKDIR/results-$(date -u +%Y%m%dT%H%M%SZ).md}
KEEP_OUTPUT=${KEEP_OUTPUT:-0}
PAUSE=${PAUSE:-3}
PY=$VENV/bin/python

INPUT=$(realpath "$INPUT")
[[ -f $INPUT ]] || { echo "no input file $INPUT" >&2; exit 2; }
[[ -x $PY ]] || { echo "no venv at $VENV: run $here/setup.sh" >&2; exit 2; }
for e in "${ENGINES[@]}"; do
    case $e in
        ours) [[ -x $WEATHERFLOW ]] || { echo "no binary $WEATHERFLOW" >&2; exit 2; } ;;
        duckdb|polars|polars-dynamic|spark|flink) ;;
        *) echo "unknown engine $e" >&2; exit 2 ;;
    esac
done
mkdir -p "$WORKDIR/logs"

# Command of one engine writing into directory $2.
engine_cmd() {
    local e=$1 out=$2
    case $e in
        ours) echo "$WEATHERFLOW run -w 2 --source file --input $INPUT --output $out/features.jsonl --no-ml --no-api" ;;
        duckdb) echo "$PY $here/duckdb_job.py $INPUT $out" ;;
        polars) echo "$PY $here/polars_job.py $INPUT $out" ;;
        polars-dynamic) echo "$PY $here/polars_job.py $INPUT $out --method dynamic" ;;
        spark) echo "$PY $here/spark_job.py $INPUT $out" ;;
        flink) echo "$PY $here/flink_job.py $INPUT $out" ;;
    esac
}

engine_version() {
    case $1 in
        ours) "$WEATHERFLOW" --version | awk '{print $2}' ;;
        duckdb) "$PY" -c 'import importlib.metadata as m; print(m.version("duckdb"))' ;;
        polars*) "$PY" -c 'import importlib.metadata as m; print(m.version("polars"))' ;;
        spark) "$PY" -c 'import importlib.metadata as m; print(m.version("pyspark"))' ;;
        flink) "$PY" -c 'import importlib.metadata as m; print(m.version("apache-flink"))' ;;
    esac
}

# Reading the input once puts it in the page cache, so no engine pays for a cold read
# (the file, 1.2 GB, fits in RAM many times); it also gives the event count.
echo "counting lines of $INPUT"
EVENTS=$(wc -l < "$INPUT")
BYTES=$(stat -c %s "$INPUT")

# weatherflow's output is the reference. If ours is not in the list, a reference made
# earlier from the same input and binary is reused, or one is made now (not measured).
REF=$WORKDIR/reference-features.jsonl
REF_STAMP=$WORKDIR/reference.stamp
stamp="$INPUT $BYTES $(stat -c %Y "$INPUT") $(realpath "$WEATHERFLOW" 2>/dev/null) $(stat -c %Y "$WEATHERFLOW" 2>/dev/null)"
have_ref=0
if [[ -f $REF && -f $REF_STAMP && $(cat "$REF_STAMP") == "$stamp" ]]; then have_ref=1; fi
if [[ $have_ref == 0 && " ${ENGINES[*]} " != *" ours "* ]]; then
    echo "making the reference output with weatherflow (not measured)"
    "$WEATHERFLOW" run -w 2 --source file --input "$INPUT" --output "$REF" --no-ml --no-api \
        > "$WORKDIR/logs/reference.out" 2> "$WORKDIR/logs/reference.err"
    echo "$stamp" > "$REF_STAMP"
    have_ref=1
fi

declare -A VERSION
for e in "${ENGINES[@]}"; do VERSION[$e]=$(engine_version "$e"); done

{
    echo "# Peer benchmark: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo
    echo "- Machine: $(nproc) vCPUs, $(free -g | awk '/Mem:/{print $2}') GiB RAM, $(uname -r); load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- Input: \`$INPUT\`: $EVENTS lines, $BYTES bytes"
    echo "- Java: $(java -version 2>&1 | head -1); Python: $("$PY" --version 2>&1)"
    echo "- Wall, CPU (user+sys) and peak RSS are of each engine's whole process tree"
    echo "  (\`measure.py\`: subreaper + /proc sampling every 100 ms); wall includes JVM and"
    echo "  session start-up. \"engine s\" is the time the engine itself reports for the job"
    echo "  (see README). events = input lines."
    echo "- Check: \`check.py\` against weatherflow's output (keys, counts, mean/min/max within"
    echo "  max(1e-6, 1e-9·|x|), std within max(1e-6, 1e-6·|x|))."
    echo
    echo "Commands (OUT is a fresh directory per run):"
    echo
    for e in "${ENGINES[@]}"; do echo "    $e: $(engine_cmd "$e" OUT)"; done
    echo
    echo "| run | engine | version | wall s | events/s | CPU s | events per CPU-s | peak RSS | engine s | check |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
} > "$RESULTS"
echo "results: $RESULTS"

for run in $(seq 1 "$RUNS"); do
    for e in "${ENGINES[@]}"; do
        out=$WORKDIR/out-$e-r$run
        log=$WORKDIR/logs/$e-r$run
        rm -rf "$out"
        mkdir -p "$out"
        sync
        sleep "$PAUSE"
        echo "== run $run: $e"
        # shellcheck disable=SC2046
        set +e
        (cd "$WORKDIR" && "$PY" "$here/measure.py" "$log.measure.json" -- $(engine_cmd "$e" "$out")) \
            > "$log.out" 2> "$log.err"
        rc=$?
        set -e

        if [[ $e == ours ]]; then
            engine_s=$(grep -a "wall time" "$log.err" | awk '{print $3}' | tail -1)
            if [[ $rc == 0 && $run == 1 ]]; then
                cp "$out/features.jsonl" "$REF"
                echo "$stamp" > "$REF_STAMP"
                have_ref=1
            fi
        else
            engine_s=$(grep -a "^ENGINE_SECONDS=" "$log.out" | tail -1 | cut -d= -f2)
        fi

        if [[ $rc != 0 ]]; then
            check="engine FAILED (exit $rc, see $log.err)"
        elif [[ $have_ref == 0 ]]; then
            check="no reference"
        else
            set +e
            "$PY" "$here/check.py" "$REF" "$out" > "$log.check" 2>&1
            crc=$?
            set -e
            summary=$(grep -a "^CHECK" "$log.check" | tail -1)
            if [[ $crc == 0 ]]; then
                n=${summary#CHECK ok windows=}
                check="ok (${n%% *} windows)"
                [[ $KEEP_OUTPUT == 1 ]] || rm -rf "$out"
            else
                check="FAIL: ${summary#CHECK FAIL } (see $log.check)"
            fi
        fi

        row=$("$PY" - "$log.measure.json" "$EVENTS" "$run" "$e" "${VERSION[$e]}" "${engine_s:-}" "$check" <<'PYROW'
import json, sys
path, events, run, engine, version, engine_s, check = sys.argv[1:]
m = json.load(open(path))
events = int(events)
wall, cpu = m["wall_s"], m["cpu_s"]
rate = lambda n, s: f"{n / s / 1e3:,.0f} k" if s > 0 else "-"
eng = f"{float(engine_s):.2f}" if engine_s else "-"
print(f"| {run} | {engine} | {version} | {wall:.2f} | {rate(events, wall)} | {cpu:.2f} | "
      f"{rate(events, cpu)} | {m['peak_rss_kb'] / 1024:,.0f} MB | {eng} | {check} |")
PYROW
)
        echo "$row" | tee -a "$RESULTS"
    done
done
echo
echo "results: $RESULTS"
