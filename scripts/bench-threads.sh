#!/usr/bin/env bash
# `count --threads 1` against `--threads 2` (and more, if given) on the same files,
# alternated rounds, with the CPU time each took: what a second parser thread buys,
# and how much of a core the reading and aggregating stage takes (issue 21).
# Usage: scripts/bench-threads.sh FILE... (BIN= picks the build, ROUNDS=5, THREADS="1 2")
set -euo pipefail
case "${1:-}" in ""|-h|--help) sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'; exit 0;; esac
cd "$(dirname "$0")/.."
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/cardinal}
ROUNDS=${ROUNDS:-5} THREADS=${THREADS:-1 2}
echo "bin: $BIN; commit: $(git rev-parse --short HEAD); cpu: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; avx512bw: $(grep -q avx512bw /proc/cpuinfo && echo yes || echo no); date: $(date -u +%FT%TZ)"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for f in "$@"; do
  cat "$f" > /dev/null
  echo "file: $f, $(stat -c %s "$f") bytes"
  for r in $(seq "$ROUNDS"); do
    for t in $THREADS; do
      /usr/bin/time -f "%e %U %S %M" -o /tmp/bench-threads.$$ "$BIN" count --quiet --threads "$t" "$f" > /dev/null
      read -r wall user sys rss < /tmp/bench-threads.$$
      echo "round $r threads $t: wall $wall s, cpu $(echo "$user + $sys" | bc) s, peak rss $((rss / 1024)) MB"
    done
  done
done
rm -f /tmp/bench-threads.$$
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
