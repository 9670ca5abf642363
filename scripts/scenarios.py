#!/usr/bin/env python3
"""Random scenarios for `cardinal count`, checked against a reference model.

The model is written from the documented rules (docs/guide/output.md, "When is a
window emitted?"), not from Cardinal's code: Python's `json` decides which lines are
frames, `zoneinfo` the calendar, and the watermark rule which frames are late.

Each scenario comes from a seed: a zone, a set of windows, a lateness, a stream
with disorder inside and beyond the lateness, gaps, escaped and non-ASCII uids,
invalid lines of several kinds, and sometimes a fault (SIGKILL mid-run and a resume
from `--state-dir`). Cardinal's latest record per window and its rejects file must
equal the model's: every valid frame counted once in every window it is not late
for, every invalid or late line rejected once.

The streams stay where the rules leave no freedom: the first 16 frames (the guard's
`--confirm`) are in order, and no frame is more than `--max-ahead` (60 s) ahead of
the stream, so nothing is held as a suspected garbage timestamp. Bit flips and
jumps, where the rules allow a range, are the property and unit tests' business.

Usage: scripts/scenarios.py [--seeds N] [--first S] [--soak SECONDS] [--bin PATH]
A failing scenario is shrunk and written to --keep (default scenarios-failed/) as
its input file and the command that reproduces it.
"""

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_calendar import Calendar  # noqa: E402  (the tests' calendar too)

GRANULARITIES = ["minute", "hour", "day", "week", "month", "year"]
ZONES = ["UTC", "Europe/Zurich", "America/New_York", "Asia/Kolkata", "Australia/Sydney",
         "America/Sao_Paulo", "Pacific/Auckland"]
MAX_TS = 253_402_300_799
CONFIRM = 16
MAX_AHEAD = 60


# ---------------------------------------------------------------- what a frame is

class Invalid(Exception):
    pass


def no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise Invalid("duplicate key")
    return dict(pairs)


def reject_constant(name):
    raise Invalid("not JSON: " + name)


def frame_of(raw):
    """(uid, ts) if the line is a frame Cardinal must count, else None."""
    try:
        text = raw.decode("utf-8")
        v = json.loads(text, object_pairs_hook=no_duplicates, parse_constant=reject_constant)
    except (UnicodeDecodeError, ValueError, Invalid, RecursionError):
        return None
    if not isinstance(v, dict):
        return None
    uid, ts = v.get("uid"), v.get("ts")
    if not isinstance(uid, str):
        return None
    if isinstance(ts, bool):
        return None
    if isinstance(ts, int):
        pass
    elif isinstance(ts, str) and ts.isascii() and ts.isdigit() and len(ts) <= 18:
        ts = int(ts)
    else:
        return None
    if not 0 <= ts <= MAX_TS:
        return None
    return uid, ts


# ---------------------------------------------------------------- scenarios

def a_uid(rng, users):
    n = rng.randrange(users)
    kind = rng.random()
    if kind < 0.7:
        return "u%d" % n
    if kind < 0.85:
        return "ü-%d-日本" % n
    return "tab\t%d\"q\\" % n


def encode_uid(rng, uid):
    return json.dumps(uid, ensure_ascii=rng.random() < 0.5)


def garbage(rng, ts):
    kinds = [
        lambda: b'{"uid":"x","ts":%d' % ts,                       # truncated
        lambda: b'{"ts":%d}' % ts,                                 # no uid
        lambda: b'{"uid":"x","ts":%d.5}' % ts,                     # fraction
        lambda: b'{"uid":"x","uid":"y","ts":%d}' % ts,             # duplicate key
        lambda: b'{"a":{"uid":"x","ts":%d}}' % ts,                 # only nested
        lambda: b'{"uid":"\xff\xfe","ts":%d}' % ts,                # invalid UTF-8
        lambda: b"",                                               # empty line
        lambda: b"[1,2,3]",                                        # not an object
        lambda: b'{"uid":"x","ts":"%d "}' % ts,                    # not digits
        lambda: b'{"uid":"x","ts":-1}',                            # negative
        lambda: b'{"uid":"x","ts":%d} x' % ts,                     # trailing bytes
        lambda: b'{"uid":"x","ts":NaN}',                           # not JSON
    ]
    return rng.choice(kinds)()


class Scenario:
    def __init__(self, seed):
        rng = random.Random(seed)
        self.seed = seed
        self.tz = rng.choice(ZONES)
        grans = [g for g in GRANULARITIES if rng.random() < 0.5]
        self.grans = grans or ["minute"]
        self.lateness = rng.choice([0, 1, 5, 10, 30])
        self.fault = rng.random() < 0.25
        n = rng.randrange(40, 4000)
        users = rng.randrange(1, 300)
        # Sometimes near a DST change or a year's end, where calendars go wrong.
        start = rng.choice([
            rng.randrange(1_400_000_000, 1_900_000_000),
            1_711_846_800 + rng.randrange(-7200, 7200),   # 2024-03-31 01:00Z, EU spring
            1_730_595_600 + rng.randrange(-7200, 7200),   # 2024-11-03 01:00Z, US fall
            1_735_689_600 + rng.randrange(-7200, 7200),   # 2025-01-01 00:00Z
        ])
        max_gap = rng.choice([0, 1, 3, 10, 30])
        max_delay = rng.choice([0, self.lateness, self.lateness * 2 + 3, MAX_AHEAD - 1])
        invalid = rng.choice([0.0, 0.01, 0.1])
        lines = []
        base = start
        valid_seen = 0
        newest = start
        for _ in range(n):
            base += rng.randint(0, max_gap)
            if valid_seen < CONFIRM:
                ts = base  # the guard's first frames in order: see the module's doc
            else:
                ts = base - rng.randint(0, max_delay)
            # Never further ahead of the stream than --max-ahead: never held.
            ts = min(ts, newest + MAX_AHEAD - 1)
            if rng.random() < invalid:
                lines.append(garbage(rng, ts))
                continue
            uid = a_uid(rng, users)
            ts_text = '"%d"' % ts if rng.random() < 0.1 else "%d" % ts
            nested = ',"x":{"uid":"decoy","ts":1}' if rng.random() < 0.2 else ""
            line = '{"uid":%s,"ts":%s%s}' % (encode_uid(rng, uid), ts_text, nested)
            if rng.random() < 0.5:
                line = '{"ts":%s%s,"uid":%s}' % (ts_text, nested, encode_uid(rng, uid))
            lines.append(line.encode("utf-8"))
            valid_seen += 1
            newest = max(newest, ts)
        self.lines = lines

    def options(self):
        return ["--windows", ",".join(self.grans), "--tz", self.tz,
                "--lateness", "%ds" % self.lateness]


# ---------------------------------------------------------------- the model

def model(lines, grans, tz, lateness):
    """(windows, rejected lines): (window, start label) -> (users, frames), and the
    1-based numbers of the lines that must be in the rejects file."""
    cal = Calendar(tz)
    windows = {}
    rejected = set()
    held = []          # the guard's first frames, before it has a clock
    wm = None          # watermark: highest trusted ts minus the lateness

    def count(line_no, uid, ts):
        late = False
        for g in grans:
            s, e = cal.bounds(g, ts)
            if wm is not None and e <= wm:
                late = True  # that window was final before this frame came
                continue
            w = windows.setdefault((g, s), [set(), 0])
            w[0].add(uid)
            w[1] += 1
        if late:
            rejected.add(line_no)

    for i, raw in enumerate(lines, 1):
        f = frame_of(raw)
        if f is None:
            rejected.add(i)
            continue
        uid, ts = f
        if len(held) < CONFIRM and wm is None:
            held.append((i, uid, ts))
            if len(held) == CONFIRM:
                # In order and within reach of each other: all released, counted
                # before any window closes.
                for h in held:
                    count(*h)
                wm = max(h[2] for h in held) - lateness
            continue
        count(i, uid, ts)
        wm = max(wm, ts - lateness)
    if wm is None:
        for h in held:
            count(*h)
    out = {}
    for (g, s), (users, frames) in windows.items():
        out[(g, cal.label(s))] = (len(users), frames)
    return out, rejected


# ---------------------------------------------------------------- running Cardinal

def latest(stdout_texts):
    got = {}
    for text in stdout_texts:
        # A run killed mid-write leaves a last line without its newline: not a record.
        for line in text.split("\n")[:-1]:
            v = json.loads(line)
            key = (v["window"], v["start"])
            if key not in got or v["version"] >= got[key][2]:
                got[key] = (v["unique_users"], v["frames"], v["version"], v["final"])
    return got


def run_cardinal(binary, sc, lines, work):
    path = os.path.join(work, "in.json")
    with open(path, "wb") as f:
        f.write(b"\n".join(lines) + b"\n")
    rejects = os.path.join(work, "rejects.jsonl")
    state = os.path.join(work, "state")
    base = [binary, "count", "--format", "json", "--quiet", "--rejects", rejects] + sc.options()
    outputs = []
    note = ""
    if sc.fault:
        cmd = base + ["--state-dir", state, "--checkpoint-interval", "0s", path]
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(random.Random(sc.seed).uniform(0.0, 0.05))
        p.send_signal(signal.SIGKILL)
        out, _ = p.communicate()
        outputs.append(out.decode())
        note = " (killed, then resumed)"
        r = subprocess.run(cmd, capture_output=True)
    else:
        r = subprocess.run(base + [path], capture_output=True)
    if r.returncode != 0:
        raise RuntimeError("exit %d: %s" % (r.returncode, r.stderr.decode()[-2000:]))
    outputs.append(r.stdout.decode())
    got = latest(outputs)
    rejected = []
    if os.path.exists(rejects):
        for line in open(rejects, encoding="utf-8"):
            rejected.append(json.loads(line)["line"])
    return got, rejected, note, base + [path]


def check(binary, sc, lines, work):
    """None if Cardinal agrees with the model, else what differs."""
    want, want_rejected = model(lines, sc.grans, sc.tz, sc.lateness)
    got, rejected, note, cmd = run_cardinal(binary, sc, lines, work)
    problems = []
    not_final = [k for k, v in got.items() if not v[3]]
    if not_final:
        problems.append("not final at the end: %s" % not_final[:5])
    got_figures = {k: v[:2] for k, v in got.items()}
    if got_figures != want:
        diff = [(k, want.get(k), got_figures.get(k))
                for k in sorted(set(want) | set(got_figures)) if want.get(k) != got_figures.get(k)]
        problems.append("%d of %d windows differ (window, model, cardinal): %s"
                        % (len(diff), len(want), diff[:5]))
    if sorted(rejected) != sorted(want_rejected):
        twice = sorted({x for x in rejected if rejected.count(x) > 1})
        missing = sorted(set(want_rejected) - set(rejected))
        extra = sorted(set(rejected) - set(want_rejected))
        problems.append("rejects differ%s: missing lines %s, extra %s, twice %s"
                        % (note, missing[:10], extra[:10], twice[:10]))
    if problems:
        return "; ".join(problems), cmd
    return None


def shrink(binary, sc, work):
    """A smaller list of lines that still fails: drops halves, then quarters, ..."""
    lines = sc.lines
    chunk = len(lines) // 2
    while chunk >= 1:
        i = 0
        while i < len(lines):
            trial = lines[:i] + lines[i + chunk:]
            shutil.rmtree(work, ignore_errors=True)
            os.makedirs(work)
            try:
                failed = trial and check(binary, sc, trial, work)
            except RuntimeError:
                failed = True
            if failed:
                lines = trial
            else:
                i += chunk
        chunk //= 2
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=40, help="scenarios to run (default 40)")
    ap.add_argument("--first", type=int, default=1, help="the first seed (default 1)")
    ap.add_argument("--soak", type=float, default=0, help="run for this many seconds instead")
    default_bin = os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release", "cardinal")
    ap.add_argument("--bin", default=os.environ.get("CARDINAL_BIN", default_bin),
                    help="the build to test (default $CARDINAL_BIN, else the release build)")
    ap.add_argument("--keep", default="scenarios-failed", help="where failing cases go")
    ap.add_argument("--no-shrink", action="store_true")
    args = ap.parse_args()
    if not os.access(args.bin, os.X_OK):
        ap.error(f"--bin {args.bin}: no such executable (build it, or pass --bin PATH)")
    started = time.time()
    ran = faults = frames = windows = 0
    failures = []
    seed = args.first
    while True:
        if args.soak and time.time() - started >= args.soak:
            break
        if not args.soak and ran >= args.seeds:
            break
        sc = Scenario(seed)
        work = tempfile.mkdtemp(prefix="cardinal-scenario-")
        try:
            bad = check(args.bin, sc, sc.lines, work)
        except RuntimeError as e:
            bad = (str(e), [])
        ran += 1
        faults += sc.fault
        frames += len(sc.lines)
        windows += len(model(sc.lines, sc.grans, sc.tz, sc.lateness)[0])
        if bad:
            why, _ = bad
            small = sc.lines if args.no_shrink else shrink(args.bin, sc, work)
            os.makedirs(args.keep, exist_ok=True)
            case = os.path.join(args.keep, "seed-%d.json" % seed)
            with open(case, "wb") as f:
                f.write(b"\n".join(small) + b"\n")
            repro = " ".join([args.bin, "count", "--format", "json"] + sc.options() + [case])
            failures.append(seed)
            print("MISMATCH seed %d (%d lines, shrunk to %d%s): %s\n  reproduce: %s"
                  % (seed, len(sc.lines), len(small), ", with a kill" if sc.fault else "",
                     why, repro), flush=True)
        shutil.rmtree(work, ignore_errors=True)
        seed += 1
    print("scenarios: %d run (seeds %d to %d), %d with a kill and resume, %d lines, "
          "%d windows checked, %d mismatches, %.0f s"
          % (ran, args.first, seed - 1, faults, frames, windows, len(failures),
             time.time() - started))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
