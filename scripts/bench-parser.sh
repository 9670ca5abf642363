#!/usr/bin/env bash
# The parser against its anchors (simdjson, serde_json, simd-json, sonic-rs, the
# memchr floor) on both frame shapes, timed on one pinned core in alternated
# rounds, then the instructions per byte of each parser stage under callgrind
# (load-independent; the AVX2 path, since valgrind runs no AVX-512).
# Usage: scripts/bench-parser.sh [FRAMES=20000] [ROUNDS=9] [OUT=/dev/stdout]
# The anchors are a crate of their own (benches/anchors), so that `cargo test` never
# builds simdjson's C++. ANCHORS_PROFILE=dev (what report.sh --quick uses) builds
# them unoptimized into the main target directory, sharing its dependencies: a
# check that they still build, whose figures mean nothing.
set -euo pipefail
case "${1:-}" in -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0;; esac
cd "$(dirname "$0")/.."
FRAMES=${1:-20000} ROUNDS=${2:-9} OUT=${3:-/dev/stdout}
PROFILE=${ANCHORS_PROFILE:-release}
case $PROFILE in
  release) DIR=${ANCHORS_TARGET_DIR:-${CARGO_TARGET_DIR:-target}/anchors}; OUTDIR=release ;;
  dev) DIR=${ANCHORS_TARGET_DIR:-${CARGO_TARGET_DIR:-target}}; OUTDIR=debug ;;
  *) echo "bench-parser.sh: ANCHORS_PROFILE is release or dev, not $PROFILE" >&2; exit 2 ;;
esac
cargo build --profile "$PROFILE" --quiet --locked --manifest-path benches/anchors/Cargo.toml --target-dir "$DIR"
BIN=$DIR/$OUTDIR/parser-anchors
STAGE_FRAMES=$(( FRAMES < 5000 ? FRAMES : 5000 ))
PIN=(); command -v taskset >/dev/null && [ "$(nproc)" -gt 1 ] && PIN=(taskset -c 1)
{
  echo "== scripts/bench-parser.sh $FRAMES $ROUNDS ($PROFILE build)"
  echo "date: $(date -u +%FT%TZ); commit: $(git rev-parse HEAD)$(git diff --quiet HEAD -- src benches || echo ' (with uncommitted changes)')"
  echo "cpu: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; avx512bw: $(grep -q avx512bw /proc/cpuinfo && echo yes || echo no); avx2: $(grep -q avx2 /proc/cpuinfo && echo yes || echo no)"
  echo "pinned: ${PIN[*]:-no}; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "== timed (GB/s on one core; every round, then medians)"
  "${PIN[@]}" "$BIN" --frames "$FRAMES" --rounds "$ROUNDS"
  echo "load after timing: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "== instructions per byte per stage (callgrind, AVX2 path, $STAGE_FRAMES frames, $PROFILE build)"
  if command -v valgrind >/dev/null; then
    python3 scripts/parser-stages.py --bin "$BIN" --frames "$STAGE_FRAMES"
  else
    echo "valgrind is not installed: skipped"
  fi
} > "$OUT"
