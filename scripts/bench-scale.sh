#!/usr/bin/env bash
# Scale-out on Kafka (`run --scale-out`): the same backfill of a 6-partition topic on
# Tansu (SQLite engine, right offsets) by 1, 2 and 3 instances started together, and
# by one plain `run` (no scale-out) as the baseline, in rounds that rotate the order.
# Each run has its own consumer group, so its own partials topic. Reports the wall
# time until the results are complete (the merger's merge_complete; the others may
# linger a session timeout in case the merge group hands them the merge) and until
# every instance has exited, frames/s, the bytes the instances wrote to the
# partials topic per million frames, exact and HLL, and where the merge's time went.
#
# Usage: scripts/bench-scale.sh [FRAMES=200000] [ROUNDS=3] [OUT_MD]
#        BIN=path/to/cardinal picks the build
set -euo pipefail
cd "$(dirname "$0")/.."
FRAMES=${1:-200000}
ROUNDS=${2:-3}
OUT=${3:-/dev/stdout}
if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet
  BIN="${CARGO_TARGET_DIR:-target}/release/cardinal"
fi
WORK=$(mktemp -d)
# A broker of our own (scripts/kafka.sh, on a free port, its data in $WORK).
trap '[ -n "${OWN_BROKER:-}" ] && scripts/kafka.sh stop; rm -rf "$WORK"' EXIT
TANSU=$(command -v tansu || echo "$HOME/.cargo/bin/tansu")
export KAFKA_PORT KAFKA_DIR="$WORK/tansu"
KAFKA_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
scripts/kafka.sh start sqlite 2> /dev/null
OWN_BROKER=1
B="127.0.0.1:$KAFKA_PORT"
# A day of frames at the generator's user mix: minute and hour windows.
$BIN gen --frames "$FRAMES" --rate "$(python3 -c "print($FRAMES / 86400)")" --users 100000 \
  -o "$WORK/frames.json" 2>/dev/null
"$TANSU" topic create --broker "tcp://$B" --partitions 6 frames > /dev/null
$BIN produce -b "$B" -t frames --key-field uid "$WORK/frames.json" 2> "$WORK/produce.err" \
  || { cat "$WORK/produce.err" >&2; exit 1; }
run_group() { # GROUP N COUNTER: N instances at once; prints seconds and partials bytes
  local group=$1 n=$2 counter=$3
  "$TANSU" topic create --broker "tcp://$B" --partitions 1 "$group.results" > /dev/null
  local start end pids=()
  start=$(date +%s.%N)
  for i in $(seq "$n"); do
    RUST_LOG=cardinal=info $BIN run -b "$B" -t frames -g "$group" --scale-out --until-end --results-topic "$group.results" \
      --counter "$counter" --windows minute,hour,day -X session.timeout.ms=6000 \
      > /dev/null 2> "$WORK/$group.$i.err" &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || { cat "$WORK/$group".*.err >&2; exit 1; }; done
  end=$(date +%s.%N)
  local bytes
  bytes=$(cat "$WORK/$group".*.err | sed -n 's/^partials: .* records, \([0-9]*\) bytes.*/\1/p' | paste -sd+ | bc)
  # The merge's own work, summed over the instances that held it.
  local merge
  merge=$(cat "$WORK/$group".*.err | sed -n 's/^merge: \([0-9]*\) records (\([0-9]*\) bytes) read in [0-9]* rebuilds, \([0-9.]*\) s applying them, \([0-9.]*\) s deciding.*/\1 \2 \3 \4/p' \
    | awk '{r+=$1; b+=$2; a+=$3; p+=$4} END {printf "%d %d %.2f %.2f", r, b, a, p}')
  local done_at
  done_at=$(grep -h 'event="merge_complete"' "$WORK/$group".*.err | head -1 | cut -d' ' -f1)
  echo "$(python3 -c "
import datetime
done = datetime.datetime.fromisoformat('$done_at'.replace('Z', '+00:00')).timestamp()
print(f'{done - $start:.3f} {$end - $start:.3f}')") $bytes $merge"
}
: > "$WORK/times.txt"
plain() { # GROUP: one run without --scale-out; prints seconds
  local start end
  start=$(date +%s.%N)
  $BIN run -b "$B" -t frames -g "$1" --until-end --windows minute,hour,day \
    -X session.timeout.ms=6000 > /dev/null 2> "$WORK/$1.err" || { cat "$WORK/$1.err" >&2; exit 1; }
  end=$(date +%s.%N)
  python3 -c "print(f'{$end - $start:.3f}')"
}
: > "$WORK/plain.txt"
for round in $(seq "$ROUNDS"); do
  order=(0 1 2 3)
  [ $((round % 4)) -eq 2 ] && order=(2 3 0 1)
  [ $((round % 4)) -eq 3 ] && order=(1 0 3 2)
  [ $((round % 4)) -eq 0 ] && order=(3 2 1 0)
  for n in "${order[@]}"; do
    if [ "$n" = 0 ]; then
      plain "p$round" >> "$WORK/plain.txt"
    else
      echo "$n $(run_group "g$round-$n" "$n" exact)" >> "$WORK/times.txt"
    fi
  done
done
hll=$(run_group "hll" 3 hll)
python3 - "$WORK/times.txt" "$FRAMES" "$hll" "$WORK/plain.txt" > "$OUT" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
frames = int(sys.argv[2])
plain = statistics.median(float(l) for l in open(sys.argv[4]))
print(f"Scale-out backfill, {frames} frames of about 2 KB on 6 partitions, Tansu SQLite, "
      f"windows minute,hour,day (medians of {len(rows)//3} rounds):\n")
print("| instances | results complete | frames/s | all exited | partials written "
      "| per million frames | merge: records read | merge: applying | merge: deciding and publishing |")
print("|---|---|---|---|---|---|---|---|---|")
print(f"| 1, plain `run` (no scale-out) | {plain:.1f} s | {frames / plain:,.0f} | {plain:.1f} s "
      "| | | | | |")
med = lambda n, i, f=float: statistics.median(f(r[i]) for r in rows if r[0] == n)
for n in ("1", "2", "3"):
    t, b = med(n, 1), med(n, 3, int)
    print(f"| {n} | {t:.1f} s | {frames / t:,.0f} | {med(n, 2):.1f} s | {b / 1e6:.1f} MB "
          f"| {b / frames:.1f} MB | {med(n, 4, int):,.0f} | {med(n, 6):.2f} s | {med(n, 7):.2f} s |")
hll = sys.argv[3].split()
print(f"\nHLL (3 instances, one run, results complete in {float(hll[0]):.1f} s): partials "
      f"written {int(hll[2]) / 1e6:.2f} MB, {int(hll[2]) / frames:.2f} MB per million frames; "
      f"the merge spent {hll[5]} s applying them and {hll[6]} s deciding and publishing.")
EOF
