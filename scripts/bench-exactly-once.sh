#!/usr/bin/env bash
# The cost of --exactly-once against at-least-once: `run --until-end` over one
# topic of generated frames on Apache Kafka, alternated rounds, each with a fresh
# group and results topic; prints every round and the medians, with the machine's
# facts. Usage: scripts/bench-exactly-once.sh [FRAMES=200000] [ROUNDS=3]
set -euo pipefail
if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then
  sed -n '2,5p' "$0" | sed 's/^# //'; exit 0
fi
cd "$(dirname "$0")/.."
FRAMES=${1:-200000}
ROUNDS=${2:-3}
export KAFKA_PORT=${KAFKA_PORT:-19492}
export KAFKA_DIR=${KAFKA_DIR:-$(mktemp -d)}
BIN=${CARGO_TARGET_DIR:-target}/release/cardinal
cargo build --release --quiet
scripts/kafka.sh install apache >/dev/null
scripts/kafka.sh start apache >/dev/null
trap 'scripts/kafka.sh stop >/dev/null 2>&1 || true' EXIT
B=127.0.0.1:$KAFKA_PORT
topics() { scripts/kafka.sh tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$B" "$@" >/dev/null; }
topics --create --topic frames --partitions 4
WORK=$(mktemp -d)
$BIN gen --frames "$FRAMES" -o "$WORK/frames.json"
$BIN produce -b "$B" -t frames --key-field uid "$WORK/frames.json" 2>/dev/null
echo "commit: $(git rev-parse --short HEAD); cpu: $(lscpu | sed -n 's/^Model name: *//p'); cores: $(nproc); date: $(date -u +%FT%TZ)"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg); frames: $FRAMES on 4 partitions"
declare -A T
for r in $(seq "$ROUNDS"); do
  for mode in at-least-once exactly-once; do
    topics --create --topic "results-$mode-$r" --partitions 1 --config cleanup.policy=compact
    extra=(); [ "$mode" = exactly-once ] && extra=(--exactly-once)
    t0=$(date +%s.%N)
    $BIN run -b "$B" -t frames -g "g-$mode-$r" --until-end --windows minute,hour --quiet \
      --results-topic "results-$mode-$r" "${extra[@]}" > /dev/null 2>> "$WORK/runs.log"
    t=$(echo "$(date +%s.%N) - $t0" | bc)
    echo "round $r $mode: $t s"
    T[$mode]+="$t "
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
for mode in at-least-once exactly-once; do
  echo "median $mode: $(echo ${T[$mode]} | tr ' ' '\n' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}') s"
done
