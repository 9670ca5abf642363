#!/usr/bin/env bash
# Measures what docs/REPORT.md states, and draws its charts into docs/report/.
# Every figure in the report comes from a run of this script on the machine it
# names; medians and ratios, because the machine is shared and noisy.
#
# Usage: scripts/report.sh [--quick]
#   (no option): the full run, about an hour on 2 cores; writes docs/report/.
#   --quick: small sizes and the debug build, so CI can run it in a minute and the
#            script cannot rot; its figures are not the report's. Writes to
#            target/report-quick/ instead of docs/report/.
#   --help:  this text.
# Every run writes OUT/run.txt: the commit, the CPU and its flags, the cores, the
# load average before and after, and the date, for the figures next to it.
set -euo pipefail
cd "$(dirname "$0")/.."
QUICK=0
case "${1:-}" in
  "") ;;
  --quick) QUICK=1 ;;
  -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "report.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
esac
[ $# -le 1 ] || { echo "report.sh: one option at most (try --help)" >&2; exit 2; }
if [ $QUICK = 1 ]; then
  cargo build --quiet
  BIN="${CARGO_TARGET_DIR:-target}/debug/cardinal"
  OUT=target/report-quick
  FRAMES=20000; USERS=20000; SEEDS=2; LATE_FRAMES=20000
else
  cargo build --release --quiet
  BIN="${CARGO_TARGET_DIR:-target}/release/cardinal"
  OUT=docs/report
  FRAMES=200000; USERS=100000; SEEDS=5; LATE_FRAMES=300000
fi
mkdir -p "$OUT"
facts() {
  echo "commit: $(git rev-parse HEAD)$(git diff --quiet HEAD -- src benches scripts || echo ' (with uncommitted changes)')"
  echo "cpu: $(lscpu | sed -n 's/^Model name: *//p'); cores: $(nproc); avx512bw: $(grep -q avx512bw /proc/cpuinfo && echo yes || echo no); avx2: $(grep -q avx2 /proc/cpuinfo && echo yes || echo no)"
}
{ echo "scripts/report.sh${1:+ $1}, started $(date -u +%FT%TZ)"; facts; echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"; } > "$OUT/run.txt"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"; echo "load average after: $(cut -d" " -f1-3 /proc/loadavg), ended $(date -u +%FT%TZ)" >> "$OUT/run.txt"' EXIT
python3 -c 'import json' # python3 draws the charts; only its standard library

# --- 1. HLL error against precision --------------------------------------------
# Each seed is a different stream; the exact count of the same run is the reference.
echo "lg_k seed window exact hll stated_rse" > "$WORK/hll.txt"
for seed in $(seq "$SEEDS"); do
  $BIN gen --frames "$FRAMES" --users "$USERS" --rate 1000 --seed "$seed" -o "$WORK/f.json" 2>/dev/null
  $BIN count --quiet --format json --windows minute,hour "$WORK/f.json" > "$WORK/exact.json"
  for k in 10 11 12 13 14 15 16; do
    $BIN count --quiet --format json --windows minute,hour --counter hll --precision "$k" \
      "$WORK/f.json" > "$WORK/hll.json"
    python3 - "$k" "$seed" "$WORK/exact.json" "$WORK/hll.json" >> "$WORK/hll.txt" <<'EOF'
import json, sys
k, seed, exact, hll = sys.argv[1:]
ex = {(r["window"], r["start"]): r["unique_users"] for r in map(json.loads, open(exact))}
for r in map(json.loads, open(hll)):
    key = (r["window"], r["start"])
    print(k, seed, "%s/%s" % key, ex[key], r["unique_users"], r.get("rse", 0))
EOF
  done
done
python3 - "$WORK/hll.txt" "$OUT" <<'EOF'
import math, sys, statistics
rows = [l.split() for l in open(sys.argv[1]).read().splitlines()[1:]]
out = sys.argv[2]
by_k = {}
for k, seed, window, exact, hll, rse in rows:
    exact, hll = int(exact), int(hll)
    if exact < 1000:   # tiny windows are counted exactly by HLL's list mode
        continue
    by_k.setdefault(int(k), []).append(((hll - exact) / exact, float(rse)))
table = ["| lg_k | windows | measured RMS relative error | stated 1.04/sqrt(2^k) | worst |", "|---|---|---|---|---|"]
points = []
for k in sorted(by_k):
    errs = [e for e, _ in by_k[k]]
    rms = math.sqrt(sum(e * e for e in errs) / len(errs))
    theory = 1.04 / math.sqrt(2 ** k)
    worst = max(abs(e) for e in errs)
    table.append("| %d | %d | %.3f%% | %.3f%% | %.3f%% |" % (k, len(errs), 100 * rms, 100 * theory, 100 * worst))
    points.append((k, rms, theory, 2 ** k))
open(out + "/hll-error.md", "w").write("\n".join(table) + "\n")
# Chart: measured and stated error against lg_k (log scale on y).
W, H, L, B = 640, 320, 70, 40
ys = [p[1] for p in points] + [p[2] for p in points]
lo, hi = math.log10(min(ys) * 0.8), math.log10(max(ys) * 1.2)
x = lambda k: L + (k - 10) / 6 * (W - L - 20)
y = lambda v: 20 + (hi - math.log10(v)) / (hi - lo) * (H - 20 - B)
svg = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">' % (W, H)]
svg.append('<text x="%d" y="14" font-weight="bold">HLL relative error against precision (lg_k)</text>' % L)
svg.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#888"/>' % (L, H - B, W - 20, H - B))
for k, rms, theory, _ in points:
    svg.append('<text x="%.0f" y="%d" text-anchor="middle">%d</text>' % (x(k), H - B + 16, k))
for name, idx, color in (("measured (RMS)", 1, "#3366cc"), ("stated", 2, "#dd8800")):
    pts = " ".join("%.1f,%.1f" % (x(p[0]), y(p[idx])) for p in points)
    svg.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>' % (color, pts))
    for p in points:
        svg.append('<circle cx="%.1f" cy="%.1f" r="3" fill="%s"><title>lg_k %d: %s %.3f%%</title></circle>' % (x(p[0]), y(p[idx]), color, p[0], name, 100 * p[idx]))
svg.append('<text x="%d" y="%d" fill="#3366cc">measured (RMS)</text><text x="%d" y="%d" fill="#dd8800">stated 1.04/&#8730;2^k</text>' % (W - 200, 40, W - 200, 56))
for v in (0.001, 0.003, 0.01, 0.03):
    if lo <= math.log10(v) <= hi:
        svg.append('<text x="%d" y="%.1f" text-anchor="end">%.1f%%</text>' % (L - 6, y(v) + 4, 100 * v))
svg.append("</svg>")
open(out + "/hll-error.svg", "w").write("\n".join(svg) + "\n")
print("\n".join(table))
EOF

# --- 2. Lateness: late frames against --lateness -------------------------------
# The generator's delays: 99.9% of late-arriving frames within --max-delay 5 s, a
# tail of very late ones; the lateness is also the emission delay it costs.
$BIN gen --frames "$LATE_FRAMES" --rate 50 --disorder 0.3 --max-delay 5 --seed 3 -o "$WORK/late.json" 2>/dev/null
echo "| --lateness | late frames | share | each window final after |" > "$OUT/lateness.md"
echo "|---|---|---|---|" >> "$OUT/lateness.md"
: > "$WORK/late.txt"
for l in 0 1 2 3 4 5 6 8 10; do
  late=$($BIN count --format json --lateness "${l}s" "$WORK/late.json" 2>&1 >/dev/null \
    | sed -n 's/.* late \([0-9]*\),.*/\1/p')
  echo "$l $late" >> "$WORK/late.txt"
  python3 -c "import sys; l,n,t=map(int,sys.argv[1:]); print('| %d s | %d | %.4f%% | %d s of event time |' % (l, n, 100*n/t, l))" \
    "$l" "$late" "$LATE_FRAMES" >> "$OUT/lateness.md"
done
python3 - "$WORK/late.txt" "$LATE_FRAMES" "$OUT" <<'EOF'
import math, sys
rows = [tuple(map(int, l.split())) for l in open(sys.argv[1])]
total, out = int(sys.argv[2]), sys.argv[3]
W, H, L, B = 640, 320, 70, 40
share = [(l, max(n / total, 1e-7)) for l, n in rows]
lo, hi = math.log10(min(s for _, s in share) * 0.5), math.log10(max(s for _, s in share) * 2)
x = lambda l: L + l / 10 * (W - L - 20)
y = lambda v: 20 + (hi - math.log10(v)) / (hi - lo) * (H - 20 - B)
svg = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">' % (W, H)]
svg.append('<text x="%d" y="14" font-weight="bold">Frames lost as late against --lateness (= emission delay, s)</text>' % L)
svg.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#888"/>' % (L, H - B, W - 20, H - B))
svg.append('<polyline fill="none" stroke="#3366cc" stroke-width="2" points="%s"/>' % " ".join("%.1f,%.1f" % (x(l), y(s)) for l, s in share))
for l, s in share:
    svg.append('<circle cx="%.1f" cy="%.1f" r="3" fill="#3366cc"><title>%d s: %.4f%% late</title></circle>' % (x(l), y(s), l, 100 * s))
    svg.append('<text x="%.1f" y="%d" text-anchor="middle">%d</text>' % (x(l), H - B + 16, l))
for v in (1e-5, 1e-4, 1e-3, 1e-2, 1e-1):
    if lo <= math.log10(v) <= hi:
        svg.append('<text x="%d" y="%.1f" text-anchor="end">%g%%</text>' % (L - 6, y(v) + 4, 100 * v))
svg.append("</svg>")
open(out + "/lateness.svg", "w").write("\n".join(svg) + "\n")
EOF
cat "$OUT/lateness.md"

# --- 1. JSON against binary formats --------------------------------------------
# benches/formats.rs: the same generated frames (2 KB and ~200 B) in each format;
# bytes raw and lz4/zstd-compressed in 1 MB batches, encode and extract costs per
# core (medians of interleaved rounds); every decoder is checked against the
# generator's truth before timing. The quick run uses the test-profile build that
# CI has already made (`cargo build --benches`), at a tiny size.
if [ $QUICK = 1 ]; then
  cargo test --quiet --bench formats -- --frames-2k 20 --rounds 1 --tsv "$WORK/formats.tsv" >/dev/null
else
  cargo bench --quiet --bench formats -- --frames-2k 4000 --rounds 15 --tsv "$WORK/formats.tsv" >/dev/null
fi
cp "$WORK/formats.tsv" "$OUT/formats.tsv"
python3 - "$OUT/formats.tsv" "$OUT" <<'EOF'
import math, sys
lines = [l.split("\t") for l in open(sys.argv[1]).read().splitlines()]
rows = [dict(zip(lines[0], r)) for r in lines[1:]]
out = sys.argv[2]
def f(r, k):
    return float(r[k]) if r[k] else None
def si(v):
    if v is None:
        return ""
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if v >= div:
            return "%.3g%s" % (v / div, unit)
    return "%.3g" % v
def cardinal(sel):
    return next(f(r, "extract_frames_per_s") for r in sel
                if r["format"] == "JSON as today" and r["decoder"].startswith("cardinal"))
md = []
for size in sorted({int(r["size"]) for r in rows}, reverse=True):
    sel = [r for r in rows if int(r["size"]) == size]
    base = cardinal(sel)
    md.append("Frames of ~%d B (%.0f B of JSON on average); bytes per frame, encode and extract per core:\n" % (size, f(sel[0], "json_bytes")))
    md.append("| format | bytes | lz4 | zstd | encode, frames/s | extract with | frames/s | GB/s | × Cardinal's JSON |")
    md.append("|---|---|---|---|---|---|---|---|---|")
    last = None
    for r in sel:
        first = r["format"] != last
        last = r["format"]
        fps = f(r, "extract_frames_per_s")
        md.append("| %s | %s | %s | %s | %s | %s | %s | %.2f | %s |" % (
            r["format"] if first else "",
            "%.0f" % f(r, "bytes_raw") if first else "",
            "%.0f" % f(r, "bytes_lz4") if first else "",
            "%.0f" % f(r, "bytes_zstd") if first else "",
            si(f(r, "encode_frames_per_s")) if first else "",
            r["decoder"], si(fps), f(r, "extract_gb_per_s"),
            "(floor)" if "memchr" in r["decoder"] else "%.3g" % (fps / base)))
    md.append("")
open(out + "/formats.md", "w").write("\n".join(md))
# Chart, for the largest size: each format's bytes per frame (raw, zstd) and its
# fastest extraction in frames/s per core; log scales.
size = max(int(r["size"]) for r in rows)
sel = [r for r in rows if int(r["size"]) == size]
card = cardinal(sel)
# Per format: its first decoder (the crate's ordinary path; Cardinal's parser for
# JSON) and the fastest one measured.
best = {}
for r in sel:
    fps = f(r, "extract_frames_per_s")
    if "memchr" in r["decoder"]:
        continue
    b = best.setdefault(r["format"], [f(r, "bytes_raw"), f(r, "bytes_zstd"), fps, r["decoder"], 0.0, ""])
    if fps > b[4]:
        b[4:] = [fps, r["decoder"]]
names = list(best)
W, ROW, TOP, LBL, GAP = 980, 26, 56, 260, 24
PW = (W - LBL - 3 * GAP) / 2
H = TOP + ROW * len(names) + 44
esc = lambda s: s.replace("&", "&amp;").replace("<", "&lt;")
svg = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">' % (W, H)]
svg.append('<text x="10" y="16" font-weight="bold">Frames of ~%d B in each format: size, and the cost of getting uid and ts out (log scales)</text>' % size)
def panel(x0, lo, hi, ticks, title):
    svg.append('<text x="%.0f" y="40" font-weight="bold">%s</text>' % (x0, title))
    for t in ticks:
        x = x0 + (math.log10(t) - lo) / (hi - lo) * PW
        svg.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>' % (x, TOP - 6, x, H - 38))
        svg.append('<text x="%.1f" y="%d" text-anchor="middle">%s</text>' % (x, H - 24, si(t)))
    return lambda v: max(1.0, (math.log10(max(v, 10 ** lo)) - lo) / (hi - lo) * PW)
bx0 = LBL + GAP
bw = panel(bx0, 0, 3.5, (1, 10, 100, 1000), "bytes per frame: raw, after zstd (1 MB batches)")
ex0 = LBL + 2 * GAP + PW
ew = panel(ex0, 4, 9, (1e4, 1e5, 1e6, 1e7, 1e8, 1e9), "extract uid+ts: frames/s per core")
for i, name in enumerate(names):
    raw, zstd, first, fdec, fps, dec = best[name]
    y = TOP + i * ROW
    svg.append('<text x="%d" y="%d" text-anchor="end">%s</text>' % (LBL, y + 15, esc(name)))
    svg.append('<rect x="%.1f" y="%d" width="%.1f" height="9" fill="#3366cc"><title>%s: %.0f B raw</title></rect>' % (bx0, y + 2, bw(raw), esc(name), raw))
    svg.append('<rect x="%.1f" y="%d" width="%.1f" height="9" fill="#dd8800"><title>%s: %.0f B after zstd</title></rect>' % (bx0, y + 11, bw(zstd), esc(name), zstd))
    svg.append('<rect x="%.1f" y="%d" width="%.1f" height="9" fill="#33aa55"><title>%s, %s: %s frames/s</title></rect>' % (ex0, y + 2, ew(fps), esc(name), esc(dec), si(fps)))
    svg.append('<rect x="%.1f" y="%d" width="%.1f" height="9" fill="#cc3333"><title>%s, %s: %s frames/s</title></rect>' % (ex0, y + 11, ew(first), esc(name), esc(fdec), si(first)))
    svg.append('<text x="%.1f" y="%d">%s (%.3g&#215;)</text>' % (ex0 + ew(fps) + 4, y + 10, si(fps), fps / card))
svg.append('<text x="%.0f" y="%d" fill="#3366cc">raw</text><text x="%.0f" y="%d" fill="#dd8800">zstd</text>' % (bx0, H - 6, bx0 + 36, H - 6))
svg.append('<text x="%.0f" y="%d"><tspan fill="#33aa55">fastest decoder</tspan> (&#215; Cardinal&#8217;s parser), <tspan fill="#cc3333">the crate&#8217;s usual one</tspan></text>' % (ex0, H - 6))
svg.append("</svg>")
open(out + "/formats.svg", "w").write("\n".join(svg) + "\n")
print("\n".join(md))
EOF

# --- 3. Throughput against DuckDB and Polars (full run only) -------------------
if [ $QUICK = 0 ]; then
  scripts/bench-vs-peers.sh 500000 3 | tee "$OUT/peers.txt"
fi

# --- 3. The parser against its anchors, and its instructions per stage ---------
if [ $QUICK = 1 ]; then
  ANCHORS_PROFILE=dev scripts/bench-parser.sh 300 1 "$OUT/parser-anchors.txt"
else
  scripts/bench-parser.sh 20000 9 "$OUT/parser-anchors.txt"
fi
grep -v '^round' "$OUT/parser-anchors.txt"

# --- 3. Where the time goes: a profile folded into stages ----------------------
if [ $QUICK = 1 ]; then
  BIN=$BIN scripts/profile.sh 20000 "$OUT/profile.md"
else
  scripts/profile.sh 300000 "$OUT/profile.md"
fi
[ -f "$OUT/profile.md" ] && cat "$OUT/profile.md"

# --- 3. Cost against rate, users and open windows ------------------------------
if [ $QUICK = 1 ]; then
  BIN=$BIN scripts/bench-growth.sh 3000 1 "$OUT/growth.md"
else
  scripts/bench-growth.sh 600000 3 "$OUT/growth.md"
fi
cat "$OUT/growth.md"

# --- 4. Checkpoints: whole states against change sets, by state size ----------
: > "$WORK/checkpoints.tsv"
if [ $QUICK = 1 ]; then
  cargo test --quiet --bench checkpoint -- 20000 1 2000 | grep '^tsv' >> "$WORK/checkpoints.tsv"
else
  for users in 100000 1000000 10000000; do
    cargo bench --quiet --bench checkpoint -- "$users" 3 100000 | grep '^tsv' >> "$WORK/checkpoints.tsv"
  done
fi
python3 - "$WORK/checkpoints.tsv" > "$OUT/checkpoints.md" <<'EOF'
import sys
print("| users in six open windows (at the start) | whole state | change set after a second of traffic | restart: load the chain, rebuild |")
print("|---|---|---|---|")
for line in open(sys.argv[1]):
    _, users, per_second, wm, wb, cm, cb, load, restore = line.split()
    print("| %s | %.1f MB, %.0f ms | %.2f MB, %.1f ms (%s frames, half of them new users) | %.0f ms, %.0f ms |" % (
        f"{int(users):,}", int(wb) / 1e6, float(wm), int(cb) / 1e6, float(cm), f"{int(per_second):,}",
        float(load), float(restore)))
print()
print("`cargo bench --bench checkpoint -- USERS 3 100000`: medians of 3, written through "
      "StateDir (temporary file, fsync, rename).")
EOF
cat "$OUT/checkpoints.md"

# --- 4. A year's backfill: does the rate hold? --------------------------------
if [ $QUICK = 1 ]; then
  BIN=$BIN scripts/bench-backfill.sh 6000 1 "$OUT/backfill.md"
else
  scripts/bench-backfill.sh 1000000 3 "$OUT/backfill.md"
fi
cat "$OUT/backfill.md"

# --- 4. Scale-out on Kafka: 1, 2 and 3 instances of one group ------------------
if [ $QUICK = 1 ]; then
  BIN=$BIN scripts/bench-scale.sh 3000 1 "$OUT/scale.md"
else
  scripts/bench-scale.sh 200000 3 "$OUT/scale.md"
fi
cat "$OUT/scale.md"
echo "report: figures and charts in $OUT"
