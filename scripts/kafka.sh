#!/usr/bin/env bash
# The development and CI Kafka broker: Tansu (crates.io `tansu` 0.6.0, Apache-2.0).
#
#   scripts/kafka.sh install          install Tansu into ~/.cargo/bin if missing (~10 min cold)
#   scripts/kafka.sh start [ENGINE]   start it on 127.0.0.1:$KAFKA_PORT; ENGINE is sqlite (default:
#                                     right offsets, survives restarts) or memory (fast; benchmarks only)
#   scripts/kafka.sh stop             stop it
#   scripts/kafka.sh status           say whether it answers
#
# KAFKA_PORT (default 9092) and KAFKA_DIR (default .kafka, where the SQLite file,
# the log and the PID live) can be set in the environment.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${KAFKA_PORT:-9092}
DIR=${KAFKA_DIR:-$PWD/.kafka}
PIDFILE="$DIR/tansu.pid"
export PATH="$HOME/.cargo/bin:$PATH"

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

install() {
  if command -v tansu >/dev/null && tansu --version 2>/dev/null | grep -q '0\.6\.0'; then
    return
  fi
  echo "kafka.sh: installing Tansu 0.6.0 (about 10 minutes on 2 cores, once per machine)" >&2
  cargo install tansu --version 0.6.0 --locked --features dynostore,libsql
}

start() {
  local engine=${1:-sqlite}
  install
  if answers; then
    echo "kafka.sh: something already listens on 127.0.0.1:$PORT; not starting another broker" >&2
    return 0
  fi
  mkdir -p "$DIR"
  local url
  case "$engine" in
    sqlite) url="sqlite://tansu.db" ;;   # relative to $DIR: Tansu resolves it against its working directory
    memory) url="memory://tansu/" ;;
    *) echo "kafka.sh: unknown engine '$engine' (sqlite or memory)" >&2; exit 2 ;;
  esac
  (cd "$DIR" && exec tansu broker --listener-url "tcp://127.0.0.1:$PORT" \
      --advertised-listener-url "tcp://127.0.0.1:$PORT" --storage-engine "$url" \
      > "$DIR/tansu.log" 2>&1) &
  echo $! > "$PIDFILE"
  for _ in $(seq 1 300); do
    if answers; then
      echo "kafka.sh: Tansu ($engine) answers on 127.0.0.1:$PORT (pid $(cat "$PIDFILE"), log $DIR/tansu.log)" >&2
      return 0
    fi
    if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
      echo "kafka.sh: Tansu exited at start; its log:" >&2; tail -20 "$DIR/tansu.log" >&2; exit 1
    fi
    sleep 0.1
  done
  echo "kafka.sh: Tansu did not answer on 127.0.0.1:$PORT within 30 s; see $DIR/tansu.log" >&2
  exit 1
}

stop() {
  [ -f "$PIDFILE" ] || return 0
  local pid; pid=$(cat "$PIDFILE")
  if kill "$pid" 2>/dev/null; then
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$PIDFILE"
}

case "${1:-}" in
  install) install ;;
  start) start "${2:-sqlite}" ;;
  stop) stop ;;
  status) if answers; then echo "up on 127.0.0.1:$PORT"; else echo "down"; exit 1; fi ;;
  *) sed -n '2,12p' "$0" >&2; exit 2 ;;
esac
