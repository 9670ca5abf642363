#!/usr/bin/env bash
# A historical backfill: a year of generated frames in twelve monthly files, counted
# with all six windows and checkpoints on, by `count` over the files and by `run
# --until-end` from a Tansu topic (SQLite engine, the one with right offsets). Does
# the rate hold over the whole year? `count`: the first month alone against the
# whole year, interleaved; `run`: its own 5-second progress lines, first against last.
#
# Usage: scripts/bench-backfill.sh [FRAMES=1000000] [ROUNDS=3] [OUT_MD]
#        BIN=path/to/cardinal picks the build; NO_KAFKA=1 skips the Tansu half
set -euo pipefail
cd "$(dirname "$0")/.."
FRAMES=${1:-1000000}
ROUNDS=${2:-3}
OUT=${3:-/dev/stdout}
if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet
  BIN="${CARGO_TARGET_DIR:-target}/release/cardinal"
fi
WORK=$(mktemp -d)
# A broker of our own (scripts/kafka.sh, on a free port, its data in $WORK).
trap '[ -n "${OWN_BROKER:-}" ] && scripts/kafka.sh stop; rm -rf "$WORK"' EXIT
ALL=minute,hour,day,week,month,year
RATE=$(python3 -c "print($FRAMES / (365 * 86400))")
$BIN gen --frames "$FRAMES" --rate "$RATE" -o "$WORK/year.json" 2>/dev/null
split -n l/12 -d --additional-suffix=.json "$WORK/year.json" "$WORK/month-"
rm "$WORK/year.json"
MONTHS=("$WORK"/month-*.json)
rate() { sed -n 's/.* frames read .* in \([0-9.]*\)s: \([0-9]*\) frames\/s.*/\2/p' | head -1; }
: > "$WORK/count.txt"
for round in $(seq "$ROUNDS"); do
  rm -rf "$WORK/state-1" "$WORK/state-12"
  cat "${MONTHS[@]}" > /dev/null
  one=$(/usr/bin/time -f "rss %M" $BIN count --windows $ALL --state-dir "$WORK/state-1" \
    "${MONTHS[0]}" 2>&1 >/dev/null)
  year=$(/usr/bin/time -f "rss %M" $BIN count --windows $ALL --state-dir "$WORK/state-12" \
    "${MONTHS[@]}" 2>&1 >/dev/null)
  echo "$(echo "$one" | rate) $(echo "$one" | sed -n 's/^rss //p') $(echo "$year" | rate) $(echo "$year" | sed -n 's/^rss //p')" >> "$WORK/count.txt"
done
: > "$WORK/run.txt"
TANSU=$(command -v tansu || echo "$HOME/.cargo/bin/tansu")
if [ -z "${NO_KAFKA:-}" ] && [ -x "$TANSU" ]; then
  export KAFKA_PORT KAFKA_DIR="$WORK/tansu"
  KAFKA_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  scripts/kafka.sh start sqlite 2> /dev/null
  OWN_BROKER=1
  PORT=$KAFKA_PORT
  "$TANSU" topic create --broker "tcp://127.0.0.1:$PORT" --partitions 4 year > /dev/null
  if ! $BIN produce -b "127.0.0.1:$PORT" -t year --key-field uid "${MONTHS[@]}" 2> "$WORK/produce.err"; then
    cat "$WORK/produce.err" >&2
    exit 1
  fi
  RUST_LOG=cardinal=info /usr/bin/time -f "rss %M" $BIN run -b "127.0.0.1:$PORT" -t year -g backfill \
    --until-end --windows $ALL --state-dir "$WORK/state-run" > /dev/null 2> "$WORK/run.err"
  sed -n 's/.*frames_per_s=\([0-9]*\).*/\1/p; s/.*frames read, \([0-9]*\) frames\/s.*/\1/p' \
    "$WORK/run.err" > "$WORK/run.txt"
  grep -E "frames read .* in|^rss" "$WORK/run.err" > "$WORK/run.summary" || true
fi
python3 - "$WORK" "$FRAMES" "$ROUNDS" > "$OUT" <<'PY'
import re, statistics, sys
work, frames, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rows = [list(map(int, l.split())) for l in open(work + "/count.txt") if l.strip()]
med = lambda i: statistics.median(r[i] for r in rows)
print("| `count`, all six windows, checkpoints on | frames/s (median of %d) | peak RSS |" % rounds)
print("|---|---|---|")
print("| first month alone | %.0fk | %.0f MB |" % (med(0) / 1e3, med(1) / 1024))
print("| the whole year (12 files) | %.0fk | %.0f MB |" % (med(2) / 1e3, med(3) / 1024))
print()
rates = [int(l) for l in open(work + "/run.txt") if l.strip() and int(l) > 0]
try:
    summary = open(work + "/run.summary").read()
except FileNotFoundError:
    summary = ""
total = re.search(r"in ([0-9.]+)s: ([0-9]+) frames/s", summary)
if total:
    rss = re.search(r"rss ([0-9]+)", summary)
    line = ("`run --until-end` from Tansu (4 partitions, SQLite engine): %s frames/s over the "
            "whole run, %s MB peak RSS" % (total.group(2), int(rss.group(1)) // 1024 if rss else "?"))
    if len(rates) >= 4:
        q = max(1, len(rates) // 4)
        line += "; 5-second rates: first quarter median %.0fk, last quarter median %.0fk (%d samples)" % (
            statistics.median(rates[:q]) / 1e3, statistics.median(rates[-q:]) / 1e3, len(rates))
    print(line + ".")
    print()
print("`scripts/bench-backfill.sh %d %d`: a year of generated frames (about 2 KB each) "
      "in twelve files." % (frames, rounds))
PY
