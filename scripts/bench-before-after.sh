#!/usr/bin/env bash
# `count` of one build against another on the same file, alternated rounds, every
# round printed with the machine's facts (the figures in docs/report/count-before-
# after-*.txt). Usage: scripts/bench-before-after.sh OLD_BIN NEW_BIN FILE [ROUNDS=7]
# Instruction counts (load-independent): valgrind --tool=callgrind BIN count --quiet
# --threads 1 FILE, for each build.
set -euo pipefail
if [ $# -lt 3 ]; then sed -n '2,6p' "$0" | sed 's/^# //'; exit 2; fi
OLD=$1 NEW=$2 F=$3 ROUNDS=${4:-7}
cat "$F" > /dev/null
echo "old: $OLD; new: $NEW; commit: $(git rev-parse --short HEAD); cpu: $(lscpu | sed -n 's/^Model name: *//p'); avx512bw: $(grep -q avx512bw /proc/cpuinfo && echo yes || echo no); cores: $(nproc); date: $(date -u +%FT%TZ)"
echo "file: $F, $(stat -c %s "$F") bytes; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$ROUNDS"); do
  for b in old new; do
    bin=$OLD; [ $b = new ] && bin=$NEW
    t0=$(date +%s.%N); "$bin" count --quiet "$F" > /dev/null; t1=$(date +%s.%N)
    echo "round $r $b: $(echo "$t1 - $t0" | bc) s"
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
