#!/usr/bin/env python3
"""Bit-flipped timestamps against Cardinal's outlier guard (docs/REPORT.md, section 2).

Usage: scripts/flips_check.py FRAMES REJECTS RESULTS
FRAMES: `cardinal gen --bitflips P` output; REJECTS: `count --rejects` output;
RESULTS: `count --format json` output. Prints, space separated: flipped frames,
flipped caught as outliers, flipped caught as late, flipped counted (slipped),
honest frames rejected, windows that exist only because of flips, how far the
farthest of them is from the stream (days), honest minutes with fewer users than
the truth, honest minutes with more, honest minutes.

The truth comes from the frames alone: `gen` flips one bit among 20 to 30, which
moves a ts by at least 2^20 s (12 days), while the honest stream spans hours, so
a frame whose ts is more than 2^19 s from the median is a flipped one. The true
unique users of each minute are those of the other frames.
"""
import collections
import json
import statistics
import sys
from datetime import datetime
frames, rejects, results = sys.argv[1:4]
rows = [json.loads(l) for l in open(frames)]
ts = [r["ts"] for r in rows]
mid = statistics.median(ts)
# A flipped ts moved by at least 2^20 s (12 days); the honest stream spans hours.
flipped = {i + 1 for i, t in enumerate(ts) if abs(t - mid) > 2 ** 19}
rej = collections.defaultdict(set)
for l in open(rejects):
    r = json.loads(l)
    rej[r["reason"]].add(r["line"])
truth = collections.defaultdict(set)
for i, r in enumerate(rows):
    if i + 1 not in flipped:
        truth[r["ts"] - r["ts"] % 60].add(r["uid"])
got = {}
for l in open(results):
    r = json.loads(l)
    if r["window"] == "minute":
        start = int(datetime.fromisoformat(r["start"].replace("Z", "+00:00")).timestamp())
        got[start] = r["unique_users"]
caught = rej["outlier"] | rej["late"]
slipped = flipped - caught
honest_rejected = (caught - flipped)
wrong = {s for s in got if s not in truth}
short = {s for s in truth if got.get(s, 0) < len(truth[s])}
long_ = {s for s in truth if got.get(s, 0) > len(truth[s])}
far = max((abs(s - mid) for s in wrong), default=0)
print(len(flipped), len(flipped & rej["outlier"]), len(flipped & rej["late"]), len(slipped),
      len(honest_rejected), len(wrong), round(far / 86400), len(short), len(long_), len(truth))
