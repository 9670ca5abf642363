#!/usr/bin/env bash
# The parser against its anchors (simdjson, serde_json, simd-json, sonic-rs, the
# memchr floor) on both frame shapes, timed on one pinned core in alternated
# rounds, then the instructions per byte of each parser stage under callgrind
# (load-independent; the AVX2 path, since valgrind runs no AVX-512).
# Usage: scripts/bench-parser.sh [FRAMES=20000] [ROUNDS=9] [OUT=/dev/stdout]
# The anchors are a crate of their own (benches/anchors), built into
# $ANCHORS_TARGET_DIR (default $CARGO_TARGET_DIR/anchors) so that `cargo test` never builds
# simdjson's C++.
set -euo pipefail
case "${1:-}" in -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0;; esac
cd "$(dirname "$0")/.."
FRAMES=${1:-20000} ROUNDS=${2:-9} OUT=${3:-/dev/stdout}
export ANCHORS_TARGET_DIR=${ANCHORS_TARGET_DIR:-${CARGO_TARGET_DIR:-target}/anchors}
cargo build --release --quiet --manifest-path benches/anchors/Cargo.toml --target-dir "$ANCHORS_TARGET_DIR"
BIN=$ANCHORS_TARGET_DIR/release/parser-anchors
PIN=(); command -v taskset >/dev/null && [ "$(nproc)" -gt 1 ] && PIN=(taskset -c 1)
{
  echo "== scripts/bench-parser.sh $FRAMES $ROUNDS"
  echo "date: $(date -u +%FT%TZ); commit: $(git rev-parse HEAD)$(git diff --quiet HEAD -- src benches || echo ' (with uncommitted changes)')"
  echo "cpu: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; avx512bw: $(grep -q avx512bw /proc/cpuinfo && echo yes || echo no); avx2: $(grep -q avx2 /proc/cpuinfo && echo yes || echo no)"
  echo "pinned: ${PIN[*]:-no}; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "== timed (GB/s on one core; every round, then medians)"
  "${PIN[@]}" "$BIN" --frames "$FRAMES" --rounds "$ROUNDS"
  echo "load after timing: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "== instructions per byte per stage (callgrind, AVX2 path, 5000 frames)"
  if command -v valgrind >/dev/null; then
    python3 scripts/parser-stages.py --bin "$BIN" --frames 5000
  else
    echo "valgrind is not installed: skipped"
  fi
} > "$OUT"
