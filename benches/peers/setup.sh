#!/usr/bin/env bash
# Creates (or reuses) the peers' virtualenv and installs requirements.txt into it.
# Idempotent: a second run only checks that the pinned versions are present.
#   VENV    where the venv lives (default ~/.cache/weatherflow/peers-venv)
#   PYTHON  interpreter that creates it (default python3; must be 3.11 for apache-flink 2.3)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
VENV=${VENV:-$HOME/.cache/weatherflow/peers-venv}
PYTHON=${PYTHON:-python3}

if [[ ! -x $VENV/bin/python ]]; then
    echo "creating $VENV with $($PYTHON --version)"
    mkdir -p "$(dirname "$VENV")"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
fi

# pip skips what is already satisfied, so this is cheap on a second run.
"$VENV/bin/pip" install -q -r "$here/requirements.txt"

echo "python   $("$VENV/bin/python" --version 2>&1)"
echo "java     $(java -version 2>&1 | head -1)"
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
for dist in ("duckdb", "polars", "pyspark", "apache-flink", "apache-flink-libraries", "py4j"):
    print(f"{dist:<24} {md.version(dist)}")
import os, pyflink
lib = os.path.join(os.path.dirname(pyflink.__file__), "lib")
jars = sorted(j for j in os.listdir(lib) if j.endswith(".jar"))
print("pyflink lib/:", ", ".join(jars))
if not any("json" in j for j in jars):
    print("WARNING: no flink-json jar in pyflink/lib; the Flink job's 'json' format will fail")
PY
