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
  FRAMES=20000; USERS=20000; SEEDS=2; LATE_FRAMES=20000; FLIP_FRAMES=5000
else
  cargo build --release --quiet
  BIN="${CARGO_TARGET_DIR:-target}/release/cardinal"
  OUT=docs/report
  FRAMES=200000; USERS=100000; SEEDS=5; LATE_FRAMES=300000; FLIP_FRAMES=100000
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

# --- 2. Lateness: late frames against --lateness, corrections against --grace ---
# The challenge's stream: 30% of frames delayed uniformly 1-5 s, and a heavy tail
# of 0.1% delayed log-uniformly from 5 s to 5 min (`gen --tail`). A frame is lost
# as late when its window is final: its end (plus --grace) is at or before the
# watermark, the newest ts less --lateness. model.py counts that from the frames
# alone, as an independent check of every figure in the table.
$BIN gen --frames "$LATE_FRAMES" --rate 50 --disorder 0.3 --max-delay 5 --tail 0.001 \
  --tail-max-delay 300 --seed 3 -o "$WORK/late.json" 2>/dev/null
cat > "$WORK/model.py" <<'EOF'
import json, sys
ts = [json.loads(l)["ts"] for l in open(sys.argv[1])]
def late(lateness, grace):
    newest, n = None, 0
    for t in ts:
        if newest is not None and t - t % 60 + 60 + grace <= newest - lateness:
            n += 1
        newest = t if newest is None else max(newest, t)
    return n
print(late(int(sys.argv[2]), int(sys.argv[3])))
EOF
: > "$WORK/late.txt"
sweep() { # lateness grace -> "lateness grace late model corrections records"
  $BIN count --format json --lateness "$1s" --grace "$2s" "$WORK/late.json" 2> "$WORK/summary" > "$WORK/records"
  echo "$1 $2 $(sed -n 's/.* late \([0-9]*\),.*/\1/p' "$WORK/summary") $(python3 "$WORK/model.py" "$WORK/late.json" "$1" "$2") $(sed -n 's/.*corrections \([0-9]*\),.*/\1/p' "$WORK/summary") $(wc -l < "$WORK/records")"
}
for l in 0 1 2 3 4 5 6 8 10; do sweep "$l" 0 >> "$WORK/late.txt"; done
for g in 10 30 60 120 300; do sweep 5 "$g" >> "$WORK/late.txt"; done
python3 - "$WORK/late.txt" "$LATE_FRAMES" "$OUT" > "$OUT/lateness.md" <<'EOF'
import math, sys
rows = [tuple(map(int, l.split())) for l in open(sys.argv[1])]
total, out = int(sys.argv[2]), sys.argv[3]
for l, g, late, model, _, _ in rows:
    if late != model:
        sys.exit(f"lateness {l} s, grace {g} s: Cardinal lost {late} frames, the model {model}")
print("Frames: %d, 30%% delayed 1-5 s, 0.1%% delayed 5 s to 5 min (log-uniform). "
      "Every count below equals the model's, worked out from the frames alone." % total)
print()
print("| --lateness | frames lost as late | share | each window final after |")
print("|---|---|---|---|")
for l, g, late, _, _, _ in rows:
    if g == 0:
        print("| %d s | %d | %.4f%% | %d s of event time |" % (l, late, 100 * late / total, l))
print()
print("| --lateness 5s with --grace | frames lost as late | corrections published | records published |")
print("|---|---|---|---|")
for l, g, late, _, corr, recs in rows:
    if l == 5:
        print("| %d s | %d | %d | %d |" % (g, late, corr, recs))
# The chart: frames lost against lateness, on a log axis; a zero is written, not drawn.
pts = [(l, late / total) for l, g, late, _, _, _ in rows if g == 0]
W, H, L, B = 640, 340, 80, 56
shown = [s for _, s in pts if s > 0] or [1e-6]
lo, hi = math.floor(math.log10(min(shown))), math.ceil(math.log10(max(shown)))
hi = max(hi, lo + 1)
x = lambda l: L + l / 10 * (W - L - 30)
y = lambda v: 30 + (hi - math.log10(v)) / (hi - lo) * (H - 30 - B)
svg = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">' % (W, H),
       '<rect width="100%" height="100%" fill="white"/>',
       '<text x="%d" y="16" font-weight="bold">Frames lost as late against --lateness (0.1%% of frames 5 s to 5 min late)</text>' % 10]
for e in range(lo, hi + 1):
    v = 10.0 ** e
    svg.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#eee"/>' % (L, y(v), W - 30, y(v)))
    svg.append('<text x="%d" y="%.1f" text-anchor="end">%g%%</text>' % (L - 6, y(v) + 4, 100 * v))
for l in range(0, 11):
    svg.append('<line x1="%.1f" y1="30" x2="%.1f" y2="%d" stroke="#eee"/>' % (x(l), x(l), H - B))
    svg.append('<text x="%.1f" y="%d" text-anchor="middle">%d</text>' % (x(l), H - B + 16, l))
svg.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#888"/>' % (L, H - B, W - 30, H - B))
svg.append('<line x1="%d" y1="30" x2="%d" y2="%d" stroke="#888"/>' % (L, L, H - B))
svg.append('<text x="%.1f" y="%d" text-anchor="middle">--lateness (s): also how long after its end each window is final</text>' % ((L + W - 30) / 2, H - 12))
svg.append('<text transform="translate(16,%.1f) rotate(-90)" text-anchor="middle">frames lost (share, log scale)</text>' % ((30 + H - B) / 2))
line = [(l, s) for l, s in pts if s > 0]
svg.append('<polyline fill="none" stroke="#3366cc" stroke-width="2" points="%s"/>' % " ".join("%.1f,%.1f" % (x(l), y(s)) for l, s in line))
for l, s in pts:
    if s > 0:
        svg.append('<circle cx="%.1f" cy="%.1f" r="3" fill="#3366cc"><title>%d s: %.4f%% lost</title></circle>' % (x(l), y(s), l, 100 * s))
    else:
        svg.append('<text x="%.1f" y="%d" text-anchor="middle" fill="#3366cc">0</text>' % (x(l), H - B - 6))
svg.append("</svg>")
open(out + "/lateness.svg", "w").write("\n".join(svg) + "\n")
EOF
cat "$OUT/lateness.md"

# --- 2. Bit flips: what the outlier guard catches, and what gets through -------
# `gen --bitflips P` flips one bit among 20 to 30 of a fraction P of the ts (12 days
# to 34 years away); scripts/flips_check.py works out the truth from the frames alone.
echo "flip_rate confirm flipped outlier late slipped honest_rejected wrong_windows far_days short long minutes" > "$WORK/flips.txt"
flips() { # rate confirm
  $BIN gen --frames "$FLIP_FRAMES" --rate 50 --disorder 0.3 --bitflips "$1" --seed 5 -o "$WORK/flips.json" 2>/dev/null
  $BIN count --format json --confirm "$2" --rejects "$WORK/flips.rej" "$WORK/flips.json" > "$WORK/flips.out" 2>/dev/null
  echo "$1 $2 $(python3 scripts/flips_check.py "$WORK/flips.json" "$WORK/flips.rej" "$WORK/flips.out")" >> "$WORK/flips.txt"
}
for rate in 0.0001 0.001 0.01 0.05 0.2; do flips "$rate" 16; done
for confirm in 1 2 4 8; do flips 0.01 "$confirm"; done
for confirm in 2 4 8; do flips 0.05 "$confirm"; done
python3 - "$WORK/flips.txt" "$FLIP_FRAMES" > "$OUT/bitflips.md" <<'EOF'
import sys
lines = open(sys.argv[1]).read().split("\n")[1:]
print("%s frames at 50/s of event time, 30%% of them 1-5 s late; each ts flipped with the "
      "given probability. Counts from scripts/flips_check.py, against the truth worked out "
      "from the frames." % f"{int(sys.argv[2]):,}")
print()
print("| flips | --confirm | flipped | caught as outlier | caught as late | counted (slipped in) | honest frames rejected | windows made by flips | minutes short of the truth |")
print("|---|---|---|---|---|---|---|---|---|")
for l in lines:
    if not l.strip():
        continue
    rate, confirm, flipped, outlier, late, slipped, honest, wrong, far, short, long_, minutes = l.split()
    wrong_s = wrong if wrong == "0" else "%s (%s days away)" % (wrong, far)
    print("| %g%% | %s | %s | %s | %s | %s | %s | %s | %s of %s |" % (
        100 * float(rate), confirm, flipped, outlier, late, slipped, honest, wrong_s, short, minutes))
EOF
cat "$OUT/bitflips.md"

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
