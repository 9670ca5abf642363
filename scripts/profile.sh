#!/usr/bin/env bash
# Where `cardinal count` spends its time: a perf profile of one parser thread over
# generated frames with all six granularities, folded into the pipeline's stages
# (read, split lines, validate UTF-8, scan and parse, aggregate, other). Shares of
# CPU samples, medians of ROUNDS runs, so the machine's noise moves them little.
#
# Usage: scripts/profile.sh [FRAMES=300000] [OUT_MD]   (needs perf; prints a table)
#        BIN=path/to/cardinal picks the build (the report's --quick run uses the debug one)
#        ROUNDS=3 profiles to take the median of
set -euo pipefail
cd "$(dirname "$0")/.."
FRAMES=${1:-300000}
OUT=${2:-/dev/stdout}
ROUNDS=${ROUNDS:-3}
command -v perf >/dev/null || { echo "perf is not installed: skipped" >&2; exit 0; }
if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet
  BIN="${CARGO_TARGET_DIR:-target}/release/cardinal"
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
$BIN gen --frames "$FRAMES" -o "$WORK/f.json" 2>/dev/null
cat "$WORK/f.json" > /dev/null
for round in $(seq "$ROUNDS"); do
  if ! perf record -F 4999 -o "$WORK/perf.data" $BIN count --threads 1 --quiet \
      --windows minute,hour,day,week,month,year "$WORK/f.json" > /dev/null 2> "$WORK/err"; then
    echo "perf record failed (kernel.perf_event_paranoid?): skipped" >&2
    cat "$WORK/err" >&2
    exit 0
  fi
  perf report -i "$WORK/perf.data" --no-children --sort dso,symbol --stdio 2>/dev/null \
    > "$WORK/report.$round"
done
python3 - "$FRAMES" "$ROUNDS" "$WORK" > "$OUT" <<'PY'
import re, statistics, sys
frames, rounds, work = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
stages = [
    ("scan and parse (SIMD classification, grammar, root keys, uid/ts)",
     r"parser::|parse_one|parse_chunk|memchr2|literal_ok"),
    ("validate UTF-8 (simdutf8)", r"simdutf8"),
    ("split lines (memchr)", r"memchr::One"),
    ("aggregate (hash sets of six windows, watermark)",
     r"hashbrown|aggregator::|Aggregate<|counter::|xxh3"),
    ("read (kernel copies from the page cache)",
     r"_copy_to_iter|copy_page_to_iter|filemap|ext4|read_iter"),
    ("other (scheduler, page faults, allocation, output)", r""),
]
runs = []
for r in range(1, rounds + 1):
    share = {name: 0.0 for name, _ in stages}
    for line in open("%s/report.%d" % (work, r)):
        m = re.match(r"\s+([0-9.]+)%\s+(\S+)\s+\[.\]\s+(.*?)\s+-\s+-", line)
        if not m:
            continue
        pct, sym = float(m.group(1)), m.group(3)
        for name, pat in stages:
            if re.search(pat, sym):
                share[name] += pct
                break
    runs.append(share)
if sum(runs[0].values()) < 50:
    sys.exit("the profile has too few samples folded: %r" % runs[0])
print("| stage | share of CPU samples, median | runs |")
print("|---|---|---|")
for name, _ in stages:
    v = [s[name] for s in runs]
    print("| %s | %.1f%% | %s |" % (name, statistics.median(v), ", ".join("%.1f" % x for x in v)))
print()
print("`scripts/profile.sh %d`: `cardinal count --threads 1` over %d generated frames (2 KB), "
      "all six granularities, perf at 4999 Hz, %d runs." % (frames, frames, rounds))
PY
