#!/usr/bin/env bash
# What checkpoints cost: `cardinal count` over the same file with all six
# granularities, without --state-dir, with a checkpoint every second (the
# default) and every 100 ms, alternated for ROUNDS rounds; prints medians, the
# ratios, and the checkpoint size and time that Cardinal itself reports.
#
# Usage: scripts/bench-checkpoints.sh [FRAMES=1000000] [ROUNDS=3]
set -euo pipefail
cd "$(dirname "$0")/.."
FRAMES=${1:-1000000}
ROUNDS=${2:-3}
WORK=${BENCH_DIR:-$(mktemp -d)}
cargo build --release --quiet
BIN="${CARGO_TARGET_DIR:-target}/release/cardinal"
FILE="$WORK/frames-$FRAMES.json"
[ -s "$FILE" ] || $BIN gen --frames "$FRAMES" -o "$FILE"
cat "$FILE" > /dev/null
ALL=minute,hour,day,week,month,year
seconds() { sed -n 's/.* in \([0-9.]*\)s: .*/\1/p' | head -1; }
OFF=(); ON=(); FAST=(); CP=""; CPF=""
for round in $(seq "$ROUNDS"); do
  OFF+=("$($BIN count --windows $ALL "$FILE" 2>&1 >/dev/null | seconds)")
  out=$($BIN count --windows $ALL --state-dir "$WORK/state" --reset-state --checkpoint-interval 1s "$FILE" 2>&1 >/dev/null)
  ON+=("$(echo "$out" | seconds)")
  CP=$(echo "$out" | grep 'checkpoints:' || true)
  out=$($BIN count --windows $ALL --state-dir "$WORK/state" --reset-state --checkpoint-interval 100ms "$FILE" 2>&1 >/dev/null)
  FAST+=("$(echo "$out" | seconds)")
  CPF=$(echo "$out" | grep 'checkpoints:' || true)
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
off=$(median "${OFF[@]}"); on=$(median "${ON[@]}"); fast=$(median "${FAST[@]}")
echo "no checkpoints:          median ${off}s (runs: ${OFF[*]})"
echo "checkpoint every 1 s:    median ${on}s (runs: ${ON[*]})"
echo "checkpoint every 100 ms: median ${fast}s (runs: ${FAST[*]})"
printf 'throughput: %.0f%% of no checkpoints at 1 s, %.0f%% at 100 ms\n' \
  "$(echo "100 * $off / $on" | bc -l)" "$(echo "100 * $off / $fast" | bc -l)"
echo "at 1 s:$CP" | sed 's/  */ /g'
echo "at 100 ms:$CPF" | sed 's/  */ /g'
