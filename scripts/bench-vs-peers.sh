#!/usr/bin/env bash
# Times `cardinal count` side by side with DuckDB and Polars computing the same
# per-minute unique users from the same generated file, checks that all three
# agree, and prints the ratios. Runs are interleaved (R rounds) and medians are
# quoted, because this machine is shared and noisy.
#
# Usage: scripts/bench-vs-peers.sh [FRAMES=1000000] [ROUNDS=3]
# BASELINE=path/to/an/older/cardinal also times that build in the same rounds
# (before/after figures for a change).
set -euo pipefail
cd "$(dirname "$0")/.."
FRAMES=${1:-1000000}
ROUNDS=${2:-3}
THREADS=$(nproc)
WORK=${BENCH_DIR:-$(mktemp -d)}
trap '[ -z "${BENCH_DIR:-}" ] && rm -rf "$WORK"' EXIT

python3 -c 'import duckdb, polars' 2>/dev/null || pip install --quiet duckdb polars
cargo build --release --quiet
BIN="${CARGO_TARGET_DIR:-target}/release/cardinal"
FILE="$WORK/frames-$FRAMES.json"
[ -s "$FILE" ] || $BIN gen --frames "$FRAMES" -o "$FILE"
SIZE=$(stat -c %s "$FILE")
cat "$FILE" > /dev/null # warm the page cache for everyone alike
echo "file: $FILE, $FRAMES frames, $((SIZE / 1000000)) MB, $THREADS threads"

now() { date +%s.%N; }
declare -A TIMES
for round in $(seq "$ROUNDS"); do
  t0=$(now)
  $BIN count --quiet --format json --threads "$THREADS" "$FILE" > "$WORK/cardinal.json"
  t1=$(now)
  python3 -c 'import sys,json,calendar,time
for l in sys.stdin:
    v=json.loads(l); print(json.dumps({"start": calendar.timegm(time.strptime(v["start"],"%Y-%m-%dT%H:%M:%SZ")), "unique_users": v["unique_users"]}))' \
    < "$WORK/cardinal.json" > "$WORK/cardinal.out"
  TIMES[cardinal]+="$(echo "$t1 - $t0" | bc) "
  if [ -n "${BASELINE:-}" ]; then
    t0=$(now)
    "$BASELINE" count --quiet --format json --threads "$THREADS" "$FILE" > /dev/null
    t1=$(now)
    TIMES[baseline]+="$(echo "$t1 - $t0" | bc) "
  fi
  for engine in duckdb polars; do
    python3 scripts/peers.py "$engine" "$FILE" "$THREADS" > "$WORK/$engine.out" 2> "$WORK/$engine.err"
    TIMES[$engine]+="$(sed -n 's/^elapsed=//p' "$WORK/$engine.err") "
  done
done

for engine in duckdb polars; do
  if ! diff -q "$WORK/cardinal.out" "$WORK/$engine.out" > /dev/null; then
    echo "MISMATCH: cardinal and $engine disagree:"; diff "$WORK/cardinal.out" "$WORK/$engine.out" | head; exit 1
  fi
done
echo "all three agree on $(wc -l < "$WORK/cardinal.out") minute windows"

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
declare -A MED
ENGINES="cardinal duckdb polars"
[ -n "${BASELINE:-}" ] && ENGINES="cardinal baseline duckdb polars"
for engine in $ENGINES; do
  MED[$engine]=$(echo "${TIMES[$engine]}" | median)
  printf '%-9s median %6.2fs  %7.0f MB/s  %9.0f frames/s   (runs: %s)\n' "$engine" "${MED[$engine]}" \
    "$(echo "$SIZE / ${MED[$engine]} / 1000000" | bc -l)" "$(echo "$FRAMES / ${MED[$engine]}" | bc -l)" "${TIMES[$engine]}"
done
best=$(printf '%s\n' "${MED[duckdb]}" "${MED[polars]}" | sort -g | head -1)
printf 'cardinal is %.1fx faster than the better peer (DuckDB %.1fx, Polars %.1fx)\n' \
  "$(echo "$best / ${MED[cardinal]}" | bc -l)" \
  "$(echo "${MED[duckdb]} / ${MED[cardinal]}" | bc -l)" "$(echo "${MED[polars]} / ${MED[cardinal]}" | bc -l)"
if [ -n "${BASELINE:-}" ]; then
  printf 'the baseline build takes %.2fx the time of this one (DuckDB / baseline: %.1fx)\n' \
    "$(echo "${MED[baseline]} / ${MED[cardinal]}" | bc -l)" "$(echo "${MED[duckdb]} / ${MED[baseline]}" | bc -l)"
fi
