#!/usr/bin/env bash
# A real Kafka-protocol broker on loopback for the tests: nisshi (an Apache-Kafka-compatible
# broker written in Rust) with in-memory storage. There is no Docker engine and no Apache
# Kafka distribution on these machines; see docs/design.md §10 and README "Testing".
#
#   scripts/test-broker.sh install   build nisshi once into the cache (~25 min on 2 cores)
#   scripts/test-broker.sh up        install if needed, start on 127.0.0.1:$KAFKA_PORT, create topics;
#                                    prints the bootstrap address (use it as WEATHERFLOW_TEST_BROKERS)
#   scripts/test-broker.sh down      stop it
#   scripts/test-broker.sh status    exit 0 when it listens
#
# Environment: KAFKA_PORT (9092), NISSHI_ROOT (cache, default ~/.cache/weatherflow/nisshi-0.8.1),
# KAFKA_PARTITIONS (4), NISSHI_RUN_DIR (pid file and broker.log), NISSHI_PREBUILT (optional: a
# gzipped nisshi 0.8.1 x86-64 Linux binary with a `.sha256` file beside it; used instead of
# building when its checksum matches, and ignored otherwise).
#
# Why nightly: nisshi 0.8.1's dependency rama 0.4 needs rustc >= 1.96, newer than the stable
# toolchain here; the image carries a nightly toolchain, used only to build the broker.
set -euo pipefail
NISSHI_VERSION=0.8.1
NISSHI_ROOT=${NISSHI_ROOT:-$HOME/.cache/weatherflow/nisshi-$NISSHI_VERSION}
NISSHI=$NISSHI_ROOT/bin/nisshi
PORT=${KAFKA_PORT:-9092}
RUN_DIR=${NISSHI_RUN_DIR:-${TMPDIR:-/tmp}/weatherflow-broker-$PORT}
TOPICS="weather-raw weather-features weather-predictions weather-raw-dlq"
PARTITIONS=${KAFKA_PARTITIONS:-4}

say() { echo "test-broker: $*" >&2; }
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

# The prebuilt binary, when given and intact, saves the 25-minute build.
install_prebuilt() {
  local gz=${NISSHI_PREBUILT:-}
  [ -n "$gz" ] && [ -f "$gz" ] && [ -f "$gz.sha256" ] || return 1
  local want have
  want=$(awk '{print $1}' "$gz.sha256")
  have=$(sha256sum "$gz" | awk '{print $1}')
  if [ "$want" != "$have" ]; then
    say "prebuilt $gz fails its checksum; building instead"
    return 1
  fi
  mkdir -p "$NISSHI_ROOT/bin"
  gunzip -c "$gz" >"$NISSHI.tmp" && chmod +x "$NISSHI.tmp" && mv "$NISSHI.tmp" "$NISSHI"
  say "installed the prebuilt nisshi $NISSHI_VERSION from $gz"
}

install() {
  [ -x "$NISSHI" ] && return 0
  install_prebuilt && return 0
  local toolchain=nightly
  if ! rustup toolchain list | grep -q '^nightly'; then
    say "no nightly toolchain; installing the minimal nightly profile"
    rustup toolchain install nightly --profile minimal >&2
  fi
  say "building nisshi $NISSHI_VERSION into $NISSHI_ROOT (first time only, ~25 min on 2 cores)"
  cargo +"$toolchain" install nisshi --version "$NISSHI_VERSION" --locked \
    --no-default-features --features dynostore --root "$NISSHI_ROOT" >&2
}

up() {
  install
  if listening; then say "something already listens on 127.0.0.1:$PORT"; exit 1; fi
  mkdir -p "$RUN_DIR"
  # nisshi reads ./.env at start: run it from its own folder so no project .env leaks in.
  # --group-initial-rebalance-delay 0s: the default adds seconds to every group join.
  # setsid: the broker outlives this script; the child records its pid before exec.
  # `exec` plus the redirections leave no process holding this script's stdout, so
  # `$(test-broker.sh up)` returns as soon as the address is printed.
  (cd "$RUN_DIR" && exec setsid bash -c 'echo $$ >broker.pid; exec "$0" broker \
      --listener-url "tcp://127.0.0.1:$1" --advertised-listener-url "tcp://127.0.0.1:$1" \
      --storage-engine memory://nisshi/ --group-initial-rebalance-delay 0s' \
      "$NISSHI" "$PORT" >"$RUN_DIR/broker.log" 2>&1 </dev/null) &
  for _ in $(seq 1 200); do listening && break; sleep 0.05; done
  listening || { say "broker did not start; see $RUN_DIR/broker.log"; tail -20 "$RUN_DIR/broker.log" >&2; exit 1; }
  for t in $TOPICS; do
    "$NISSHI" topic create "$t" --partitions "$PARTITIONS" --broker "tcp://127.0.0.1:$PORT" >/dev/null
  done
  echo "127.0.0.1:$PORT"
}

down() {
  if [ -f "$RUN_DIR/broker.pid" ]; then
    pid=$(cat "$RUN_DIR/broker.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$RUN_DIR/broker.pid"
  fi
}

case "${1:-}" in
  install) install ;;
  up) up ;;
  down) down ;;
  status) if listening; then echo "listening on 127.0.0.1:$PORT"; else echo "not listening"; exit 1; fi ;;
  *) echo "usage: $0 install|up|down|status" >&2; exit 2 ;;
esac
