#!/usr/bin/env bash
# How `cardinal count`'s cost grows with the work: frames/s and peak memory against
# the stream's rate (frames per minute), the number of distinct users, and the
# windows counted (minute only, or all six granularities open at once). All cases
# are run in each round, interleaved; medians of ROUNDS. Prints a Markdown table.
#
# Usage: scripts/bench-growth.sh [FRAMES=200000] [ROUNDS=3] [OUT_MD]
#        BIN=path/to/cardinal picks the build (default: the release one)
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
trap 'rm -rf "$WORK"' EXIT
ALL=minute,hour,day,week,month,year
RATES=(100 10000)
USERS=(1000 $((FRAMES / 10)) $FRAMES)
for rate in "${RATES[@]}"; do
  for users in "${USERS[@]}"; do
    $BIN gen --frames "$FRAMES" --users "$users" --rate "$rate" -o "$WORK/f-$rate-$users.json" 2>/dev/null
  done
done
: > "$WORK/runs.txt"
for round in $(seq "$ROUNDS"); do
  for rate in "${RATES[@]}"; do
    for users in "${USERS[@]}"; do
      f="$WORK/f-$rate-$users.json"
      cat "$f" > /dev/null
      for windows in minute $ALL; do
        /usr/bin/time -f "%M" -o "$WORK/rss" $BIN count --windows "$windows" "$f" \
          > /dev/null 2> "$WORK/err"
        secs=$(sed -n 's/.* in \([0-9.]*\)s: .*/\1/p' "$WORK/err" | head -1)
        [ -n "$secs" ] || { cat "$WORK/err" >&2; exit 1; }
        echo "$rate $users $([ "$windows" = minute ] && echo 1 || echo 6) $secs $(cat "$WORK/rss")" >> "$WORK/runs.txt"
      done
    done
  done
done
python3 - "$WORK/runs.txt" "$FRAMES" "$ROUNDS" > "$OUT" <<'PY'
import statistics, sys
rows, frames, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
by = {}
for line in open(rows):
    rate, users, windows, secs, rss = line.split()
    by.setdefault((int(rate), int(users), int(windows)), []).append((float(secs), int(rss)))
print("| frames/min | user population (`gen --users`) | windows | frames/s (median) | peak RSS (MB) |")
print("|---|---|---|---|---|")
for (rate, users, windows), runs in sorted(by.items()):
    secs = statistics.median(r[0] for r in runs)
    rss = statistics.median(r[1] for r in runs) / 1024
    print("| %d | %d | %s | %.0fk | %.0f |" % (
        rate * 60, users, "minute" if windows == 1 else "all six", frames / secs / 1e3, rss))
print()
print("`scripts/bench-growth.sh %d %d`: `cardinal count` (2 threads) over %d generated "
      "frames of about 2 KB per case, from the page cache, cases interleaved, medians of %d." %
      (frames, rounds, frames, rounds))
PY
