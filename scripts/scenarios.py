#!/usr/bin/env python3
"""Random scenarios for `cardinal count`, checked against a reference model.

The model is written from the documented rules (docs/guide/output.md, "When is a
window emitted?"; docs/guide/input.md, the options and the rejects table; and, where
the guide leaves a choice open, docs/ARCHITECTURE.md's trust rule), not from
Cardinal's code: Python's `json` decides which lines are frames, `zoneinfo` the
calendar, the watermark which frames are late, and the outlier guard which frames
are held, released, counted or convicted as outliers. `Model` says, rule by rule,
where the guide was silent and what was assumed.

Each scenario comes from a seed: a zone, a set of windows, a lateness, a
`--max-ahead` and `--confirm`, and a stream of one of five kinds:
  steady   disorder within and beyond the lateness, small gaps;
  flips    a random bit of `ts` flipped (years ahead or back, or past the year 9999),
           isolated or in bursts (up to five frames, or --confirm less one, or
           --confirm), the same bit or not;
  jumps    genuine forward jumps of event time, minutes to weeks ahead;
  sparse   gaps wider than `--max-ahead`, so frames are held and released;
  startup  garbage among the first frames: ts 0, a month-old clock, a flip.
Every kind also gets escaped and non-ASCII uids, invalid lines of fifteen kinds,
lines at and over `--max-frame-bytes` to the byte, frames late or on time by one
second (but sparse streams, whose disorder stays within the lateness), and
sometimes one to three SIGKILLs, each run resuming from `--state-dir`, then one
more run after the end.

Checked for every scenario: every window's users and frames; every rejected line
once, with its reason (and for `late`, the windows it missed); every record final
and version 1; the summary's counts (for a killed job, the whole job's); without a
kill, the order of the records (so a window that closed early shows even when no
later frame was refused for it); with kills, that a window printed twice was
printed alike, and that a run after the end prints nothing and leaves the rejects.

Fixed scenarios run first, every time: each targets a past bug by its commit
(`--list-fixed` names them). A failing scenario is shrunk and written to --keep
(default scenarios-failed/) as its input file and the command that reproduces it.

Usage: scripts/scenarios.py [--seeds N] [--first S] [--soak SECONDS] [--bin PATH]
                            [--no-fixed] [--only-fixed] [--list-fixed]
"""

import argparse
import collections
import json
import os
import random
import re
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
# docs/guide/input.md, --confirm: "held frames are also bounded by 16 MiB per
# partition or file".
MAX_HELD_BYTES = 16 << 20
# docs/ARCHITECTURE.md, "Startup garbage": beyond the reach plus eight median
# absolute deviations below the first frames' median.
STRAGGLER_SPREADS = 8
DAY = 86_400
KINDS = ["steady", "flips", "jumps", "sparse", "startup"]


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
    if not isinstance(uid, str) or uid == "":
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
    """An invalid line and the reason docs/guide/input.md gives for it."""
    kinds = [
        (b'{"uid":"x","ts":%d' % ts, "truncated"),
        (b'{"ts":%d}' % ts, "missing_uid"),
        (b'{"uid":"x","ts":%d.5}' % ts, "bad_ts"),                  # a fraction
        (b'{"uid":"x","uid":"y","ts":%d}' % ts, "duplicate_key"),
        (b'{"a":{"uid":"x","ts":%d}}' % ts, "missing_uid"),         # only nested
        (b'{"uid":"\xff\xfe","ts":%d}' % ts, "malformed"),          # invalid UTF-8
        (b"", "empty"),
        (b"[1,2,3]", "not_an_object"),
        (b'{"uid":"x","ts":"%d "}' % ts, "bad_ts"),                 # not digits
        (b'{"uid":"x","ts":-1}', "bad_ts"),                         # negative
        (b'{"uid":"x","ts":%d} x' % ts, "malformed"),               # trailing bytes
        (b'{"uid":"x","ts":NaN}', "malformed"),                     # not JSON
        (b'{"uid":"","ts":%d}' % ts, "empty_uid"),
        (b'{"uid":7,"ts":%d}' % ts, "uid_not_string"),
        (b'{"uid":"x","t\\u0073":%d,"ts":%d}' % (ts, ts), "duplicate_key"),  # escaped
    ]
    return rng.choice(kinds)


def flip(rng, ts, bit=None):
    """`ts` with one bit flipped: bits 0-5 are disorder, 6-30 minutes to decades
    either way, 31-37 centuries ahead, 38 past the year 9999 (`bad_ts`)."""
    return ts ^ (1 << (rng.randrange(0, 39) if bit is None else bit))


class Scenario:
    """A seed's options and lines. `reasons` maps each invalid line's bytes to the
    reason the guide gives for it; `name` and `targets` are for fixed scenarios."""

    name = None
    targets = None
    kill_after_checkpoints = None

    def __init__(self, seed):
        rng = random.Random(seed)
        self.seed = seed
        self.kind = rng.choice(KINDS)
        self.tz = rng.choice(ZONES)
        grans = [g for g in GRANULARITIES if rng.random() < 0.5]
        self.grans = grans or ["minute"]
        self.lateness = rng.choice([0, 1, 5, 10, 30, 30, 90])
        self.max_ahead = rng.choice([60, 60, 60, 10, 300])
        self.confirm = rng.choice([16, 16, 16, 8, 4, 3, 1])
        self.max_frame_bytes = rng.choice([None] * 5 + [1024])
        self.kills = rng.choice([0, 0, 0, 0, 0, 0, 1, 1, 2, 3])
        self.reasons = {}
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
        max_delay = rng.choice([0, self.lateness, self.lateness * 2 + 3, 59])
        invalid = rng.choice([0.0, 0.01, 0.1])
        too_large = 0.02 if self.max_frame_bytes and rng.random() < 0.5 else 0.0
        # Probes of the lateness to the second: a frame that moves the stream to
        # just past (or just before) where a minute is final, then a frame from that
        # minute's last second, late by one second (or on time by one).
        cal = Calendar(self.tz)
        probes = ("minute" in self.grans and self.kind != "sparse"
                  and max(self.max_ahead, self.lateness) >= 60)
        p_probe = rng.choice([3, 10]) / n if probes else 0.0
        probe = None
        p_flip = p_jump = 0.0
        if self.kind == "flips":
            p_flip = rng.choice([0.002, 0.01, 0.05])
        elif self.kind == "jumps":
            p_jump = rng.choice([0.002, 0.01, 0.03])
            n = min(n, 2000)
        elif self.kind == "sparse":
            # Often wider than the reach: frames are held until the stream catches
            # up with them, or --confirm of them show it moved.
            max_gap = rng.choice([90, 300, 3600, DAY])
            n = min(n, 600)
            max_delay = rng.choice([0, self.lateness])
        elif self.kind == "startup":
            n = rng.randrange(3, 60) if rng.random() < 0.3 else n
            p_flip = rng.choice([0.0, 0.002])
        # Startup: one or two garbage frames among the first --confirm.
        startup = {}
        if self.kind == "startup":
            for _ in range(rng.choice([1, 1, 2])):
                startup[rng.randrange(0, self.confirm + 1)] = rng.choice(
                    ["zero", "month", "flip", "ahead"])
        lines = []
        base = start
        valid_seen = 0
        burst, burst_bit = 0, None
        for _ in range(n):
            gap = rng.randint(0, max_gap)
            if self.kind == "sparse" and rng.random() < 0.3:
                gap = rng.randint(0, 3)          # bursts between the gaps
            base += gap
            if rng.random() < p_jump:
                base += rng.choice([rng.randint(61, 3600), rng.randint(3600, 3 * DAY),
                                    rng.randint(DAY, 40 * DAY)])
            ts = base - rng.randint(0, max_delay)
            if probe is not None:
                ts, probe = probe, None
            elif rng.random() < p_probe:
                end = cal.bounds("minute", base - self.lateness)[1]
                base = ts = end + self.lateness - rng.choice([0, 1])
                probe = end - 1
            garbage_kind = startup.get(valid_seen)
            if garbage_kind is not None:
                del startup[valid_seen]
                ts = {"zero": 0, "month": base - 30 * DAY, "flip": flip(rng, base),
                      "ahead": base + rng.choice([3600, 365 * DAY])}[garbage_kind]
            elif burst == 0 and rng.random() < p_flip:
                # Up to five, or just under and at --confirm (which makes a jump).
                burst = rng.choice([1, 1, 1, 2, 3, 5, max(1, self.confirm - 1), self.confirm])
                burst_bit = rng.randrange(0, 39) if rng.random() < 0.5 else None
            if burst > 0:
                burst -= 1
                ts = flip(rng, ts, burst_bit)
            if rng.random() < invalid:
                raw, reason = garbage(rng, ts)
                lines.append(raw)
                self.reasons[raw] = reason
                continue
            uid = a_uid(rng, users)
            ts_text = '"%d"' % ts if rng.random() < 0.1 else "%d" % ts
            nested = ',"x":{"uid":"decoy","ts":1}' if rng.random() < 0.2 else ""
            uid_text = encode_uid(rng, uid)
            if rng.random() < too_large:
                # Around the limit, to the byte: at it, one over, one under, or more.
                size = self.max_frame_bytes + rng.choice([-1, 0, 1, rng.randint(2, 300)])
                short = len(('{"uid":%s,"ts":%s%s,"pad":""}' % (uid_text, ts_text, nested))
                            .encode("utf-8"))
                nested += ',"pad":"%s"' % ("p" * max(0, size - short))
            line = '{"uid":%s,"ts":%s%s}' % (uid_text, ts_text, nested)
            if rng.random() < 0.5:
                line = '{"ts":%s%s,"uid":%s}' % (ts_text, nested, uid_text)
            raw = line.encode("utf-8")
            lines.append(raw)
            if ts > MAX_TS:
                self.reasons[raw] = "bad_ts"
            valid_seen += 1
        self.lines = lines

    def label(self):
        if self.name:
            return "fixed %s" % self.name
        return "seed %d (%s)" % (self.seed, self.kind)

    def options(self, perturb=()):
        """The options the model assumes, then any perturbation (Cardinal only)."""
        opts = collections.OrderedDict([
            ("--windows", ",".join(self.grans)), ("--tz", self.tz),
            ("--lateness", "%ds" % self.lateness), ("--max-ahead", "%ds" % self.max_ahead),
            ("--confirm", "%d" % self.confirm)])
        if self.max_frame_bytes:
            opts["--max-frame-bytes"] = "%d" % self.max_frame_bytes
        for p in perturb:
            name, op, value = p
            current = opts.get(name)
            if op == "=":
                opts[name] = value
            else:
                number = int(re.match(r"\d+", current or "0").group())
                unit = "s" if (current or "").endswith("s") else ""
                number += int(value) if op == "+" else -int(value)
                opts[name] = "%d%s" % (max(1 if name == "--confirm" else 0, number), unit)
        return [x for k, v in opts.items() for x in (k, v)]


# ---------------------------------------------------------------- the model

class Held:
    __slots__ = ("ts", "supported", "contradicted", "line", "uid", "weight")

    def __init__(self, ts, line, uid, weight):
        self.ts, self.line, self.uid, self.weight = ts, line, uid, weight
        self.supported = self.contradicted = 0


class Model:
    """What Cardinal must do with one scenario's lines, rule by rule.

    From docs/guide/output.md ("When is a window emitted?"):
    - The watermark is the highest *trusted* ts minus --lateness; a window is final,
      and printed, once the watermark reaches its end; a frame for a final window is
      late for that window and still counts for the open coarser ones.
    - A frame more than the reach (--max-ahead, or --lateness if larger) beyond the
      highest trusted ts is held: not counted, not moving the watermark.
    - Every later frame votes on each held frame: at or after its ts minus the
      lateness supports it, earlier contradicts it; --confirm contradictions make it
      an outlier.
    - --confirm frames held at once: the trusted time moves to their median and
      every held frame within reach is counted, before any window closes.
    - Before the guard has a clock the first --confirm frames are held; one far below
      their median that came after a frame it is late for is an outlier; the very
      first frame is counted whatever its gap.
    Where the guide is silent or loose, from docs/ARCHITECTURE.md ("Trust rule",
    "Startup garbage") and, where that too leaves a choice, from src/watermark.rs
    (each such place is marked GAP below, and listed in the issue 23 report).
    """

    def __init__(self, sc):
        self.cal = Calendar(sc.tz)
        self.grans = sorted(set(sc.grans), key=GRANULARITIES.index)
        self.lateness = sc.lateness
        self.confirm = sc.confirm
        self.reach = max(sc.max_ahead, sc.lateness)
        self.max_frame_bytes = sc.max_frame_bytes or (1 << 20)
        self.reasons = sc.reasons
        self.max_trusted = None
        self.closed_through = None      # the stream's watermark as windows saw it
        self.held = []
        self.open = {}                  # (end, granularity index, start) -> [users, frames]
        self.results = {}               # (window, start label) -> (users, frames)
        self.order = []                 # (window, start label) as they are printed
        self.rejects = {}               # line -> (reason, windows missed if late)
        self.counted = self.late = self.outliers = 0
        self.invalid = collections.Counter()

    # ---- the watermark and the windows

    def observe(self, ts):
        if self.max_trusted is None or ts > self.max_trusted:
            self.max_trusted = ts

    def count(self, line, uid, ts):
        wm = self.closed_through
        missed = []
        for gi, g in enumerate(self.grans):
            s, e = self.cal.bounds(g, ts)
            if wm is not None and e <= wm:
                missed.append(g)
                continue
            w = self.open.setdefault((e, gi, s), [set(), 0])
            w[0].add(uid)
            w[1] += 1
        if len(missed) < len(self.grans):
            self.counted += 1
        if missed:
            self.late += 1
            self.rejects[line] = ("late", missed)

    def emit(self, key):
        e, gi, s = key
        users, frames = self.open.pop(key)
        k = (self.grans[gi], self.cal.label(s))
        self.results[k] = (len(users), frames)
        self.order.append(k)

    def advance(self):
        """Closes, in order of their ends, the windows the watermark has passed."""
        if self.max_trusted is None:
            return
        wm = self.max_trusted - self.lateness
        if self.closed_through is not None and wm <= self.closed_through:
            return
        self.closed_through = wm
        # Windows ending together go out finest first (the guide does not say; GAP:
        # the order of records printed at the same moment).
        for key in sorted(k for k in self.open if k[0] <= wm):
            self.emit(key)

    # ---- the outlier guard

    def convict(self, h):
        self.outliers += 1
        self.rejects[h.line] = ("outlier", None)

    def release(self):
        """Held frames within reach of the trusted time, again while that moves it.
        GAP: the guide says a held frame is counted "as soon as the stream catches
        up with it"; ARCHITECTURE.md says when the trusted time comes within reach
        of it, which is the rule used."""
        released = []
        while self.held and self.max_trusted is not None:
            limit = self.max_trusted + self.reach
            now = [h for h in self.held if h.ts <= limit]
            if not now:
                break
            self.held = [h for h in self.held if h.ts > limit]
            for h in now:
                self.observe(h.ts)
            released += now
        return released

    def vote(self, ts):
        kept = []
        for h in self.held:
            if ts < h.ts - self.lateness:
                h.contradicted += 1
                if h.contradicted >= self.confirm:
                    self.convict(h)
                    continue
            else:
                h.supported += 1
            kept.append(h)
        self.held = kept

    def stragglers(self):
        """Before the guard has a clock. GAP: "far below their median" and "a frame
        it is late for" are made exact from ARCHITECTURE.md (the reach plus eight
        median absolute deviations) and watermark.rs: lower medians; at least three
        frames held; only frames within reach above the median count as ones a later
        frame can be late for; also applied at the end of an input shorter than
        --confirm frames."""
        if len(self.held) < 3:
            return
        times = sorted(h.ts for h in self.held)
        median = times[(len(times) - 1) // 2]
        deviations = sorted(abs(t - median) for t in times)
        mad = deviations[(len(deviations) - 1) // 2]
        floor = median - self.reach - mad * STRAGGLER_SPREADS
        plausible = median + self.reach
        ahead = None
        kept = []
        for h in self.held:
            late_for_earlier = ahead is not None and h.ts < ahead - self.lateness
            if h.ts < floor and late_for_earlier:
                self.convict(h)
                continue
            if h.ts <= plausible:
                ahead = h.ts if ahead is None else max(ahead, h.ts)
            kept.append(h)
        self.held = kept

    def frame(self, line, uid, ts, weight):
        if self.held:
            self.vote(ts)
        released = []
        if self.max_trusted is not None and ts <= self.max_trusted + self.reach:
            moved = ts > self.max_trusted
            self.observe(ts)
            if moved:
                released = self.release()
            self.count(line, uid, ts)
        else:
            self.held.append(Held(ts, line, uid, weight))
            full_bytes = sum(h.weight for h in self.held) >= MAX_HELD_BYTES
            if full_bytes:
                # GAP: the guide says only that held frames are bounded by 16 MiB
                # ("when bytes fill first, the frames held so far decide", --help);
                # ARCHITECTURE.md: frames more contradicted than supported are
                # outliers, then the jump. A frame weighs its line's bytes.
                for h in [h for h in self.held if h.contradicted > h.supported]:
                    self.convict(h)
                self.held = [h for h in self.held if h.contradicted <= h.supported]
            if len(self.held) >= self.confirm or (
                    full_bytes and sum(h.weight for h in self.held) >= MAX_HELD_BYTES):
                if self.max_trusted is None:
                    self.stragglers()
                times = sorted(h.ts for h in self.held)
                # GAP: "their median" of an even number of frames is the lower one.
                self.observe(times[(len(times) - 1) // 2])
                released = self.release()
        # Released frames count before any window closes: never late for their release.
        for h in released:
            self.count(h.line, h.uid, h.ts)
        self.advance()

    def finish(self):
        """End of input. GAP: the guide does not say what becomes of frames still
        held. ARCHITECTURE.md: "counted unless more later frames contradicted than
        supported it"; watermark.rs counts the frame itself as one support (kept when
        contradicted = supported + 1), and that is the rule used: see the issue 23
        report, the two disagree."""
        if self.max_trusted is None:
            self.stragglers()
        released = []
        for h in self.held:
            if h.supported + 1 >= h.contradicted:
                self.observe(h.ts)
                released.append(h)
            else:
                self.convict(h)
        self.held = []
        for h in released:
            self.count(h.line, h.uid, h.ts)
        for key in sorted(self.open):
            self.emit(key)

    def run(self, lines):
        for i, raw in enumerate(lines, 1):
            if len(raw) > self.max_frame_bytes:
                self.rejects[i] = ("too_large", None)
                self.invalid["too_large"] += 1
                continue
            f = frame_of(raw)
            reason = self.reasons.get(raw)
            if f is None:
                reason = reason or "invalid"   # an invalid line the generator did not tag
                self.rejects[i] = (reason, None)
                self.invalid[reason] += 1
                continue
            if reason:
                raise AssertionError("line %d: tagged %s but a frame to Python" % (i, reason))
            self.frame(i, f[0], f[1], len(raw))
        self.finish()
        return self

    def summary(self):
        return {"read": None, "counted": self.counted, "rejected": sum(self.invalid.values()),
                "late": self.late, "outliers": self.outliers, "by_reason": dict(self.invalid)}


def model(lines, sc):
    return Model(sc).run(lines)


# ---------------------------------------------------------------- running Cardinal

def records(text):
    """The records of one run's stdout, in order. A run killed mid-write leaves a
    last line without its newline: not a record."""
    out = []
    for line in text.split("\n")[:-1]:
        v = json.loads(line)
        out.append(((v["window"], v["start"]),
                    (v["unique_users"], v["frames"], v["version"], v["final"])))
    return out


SUMMARY = re.compile(r"counted (\d+), rejected (\d+), late (\d+), outliers (\d+);")


def summary_of(stderr):
    m = SUMMARY.search(stderr)
    if not m:
        return None
    by = {}
    r = re.search(r"rejected by reason: ([^\n]*)", stderr)
    if r:
        for part in r.group(1).split(", "):
            name, n = part.rsplit(" ", 1)
            by[name] = int(n)
    read = re.search(r"cardinal: (\d+) frames read", stderr)
    return {"read": int(read.group(1)) if read else None, "counted": int(m.group(1)),
            "rejected": int(m.group(2)), "late": int(m.group(3)),
            "outliers": int(m.group(4)), "by_reason": by}


class Run:
    """What Cardinal printed for one scenario: each run's records, the rejects file,
    the last run's summary, and what a run after the end did."""

    def __init__(self):
        self.runs = []
        self.rejects = []
        self.summary = None
        self.after_end = None
        self.killed = 0


def wait_for_checkpoints(p, state, n):
    """Until the run has written `n` more checkpoint files (or ended, or 10 s)."""
    seen = set(os.listdir(state)) if os.path.isdir(state) else set()
    new = set()
    deadline = time.time() + 10
    while len(new) < n and p.poll() is None and time.time() < deadline:
        if os.path.isdir(state):
            new |= {f for f in os.listdir(state) if f.startswith("checkpoint")} - seen
        time.sleep(0.001)


def run_cardinal(binary, sc, lines, work, perturb=()):
    path = os.path.join(work, "in.json")
    with open(path, "wb") as f:
        f.write(b"\n".join(lines) + b"\n")
    rejects = os.path.join(work, "rejects.jsonl")
    state = os.path.join(work, "state")
    base = [binary, "count", "--format", "json", "--rejects", rejects] + sc.options(perturb)
    out = Run()
    if sc.kills:
        cmd = base + ["--state-dir", state, "--checkpoint-interval", "0s", path]
        delays = random.Random(sc.seed)
        for _ in range(sc.kills):
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            if sc.kill_after_checkpoints:
                wait_for_checkpoints(p, state, sc.kill_after_checkpoints)
            else:
                time.sleep(delays.uniform(0.0, 0.05))
            p.send_signal(signal.SIGKILL)
            stdout, stderr = p.communicate()
            out.killed += p.returncode == -signal.SIGKILL
            out.runs.append(records(stdout.decode()))
            if p.returncode == 0:
                # Done before the kill: the runs after it find nothing to do.
                out.summary = summary_of(stderr.decode()) or out.summary
            elif p.returncode != -signal.SIGKILL:
                raise RuntimeError("exit %d: %s" % (p.returncode, stderr.decode()[-2000:]))
        r = subprocess.run(cmd, capture_output=True)
    else:
        cmd = base + [path]
        r = subprocess.run(cmd, capture_output=True)
    if r.returncode != 0:
        raise RuntimeError("exit %d: %s" % (r.returncode, r.stderr.decode()[-2000:]))
    out.runs.append(records(r.stdout.decode()))
    out.summary = summary_of(r.stderr.decode()) or out.summary
    if out.summary is None and sc.kills and b"nothing to do" in r.stderr:
        # Killed after its last checkpoint, before its summary: no run prints one.
        out.summary = "lost"
    if os.path.exists(rejects):
        with open(rejects, encoding="utf-8") as f:
            text = f.read()
        for line in text.splitlines():
            v = json.loads(line)
            out.rejects.append((v["line"], v["reason"], v["detail"]))
        if sc.kills:
            # A finished backfill run again does nothing: no record, rejects kept.
            again = subprocess.run(cmd, capture_output=True)
            with open(rejects, encoding="utf-8") as f:
                out.after_end = (again.returncode, again.stdout.decode(), f.read() == text)
    elif sc.kills:
        again = subprocess.run(cmd, capture_output=True)
        out.after_end = (again.returncode, again.stdout.decode(), not os.path.exists(rejects))
    return out


def differences(want, got, sc):
    """What Cardinal did that the model says it must not; [] if none."""
    problems = []
    latest = {}
    printed = collections.defaultdict(set)
    for run in got.runs:
        for key, value in run:
            printed[(key, value[2])].add(value)
            latest[key] = value
    not_final = [k for k, v in latest.items() if not v[3]]
    if not_final:
        problems.append("not final: %s" % not_final[:5])
    versions = sorted({v[2] for v in latest.values()} - {1})
    if versions:
        problems.append("versions other than 1 without --grace: %s" % versions)
    unlike = [(k, sorted(v)) for k, v in printed.items() if len(v) > 1]
    if unlike:
        problems.append("%d windows printed twice with different figures (restarts must "
                        "never publish another value): %s" % (len(unlike), unlike[:3]))
    figures = {k: v[:2] for k, v in latest.items()}
    if figures != want.results:
        diff = [(k, want.results.get(k), figures.get(k))
                for k in sorted(set(want.results) | set(figures))
                if want.results.get(k) != figures.get(k)]
        problems.append("%d of %d windows differ (window, model, cardinal): %s"
                        % (len(diff), len(want.results), diff[:5]))
    elif not sc.kills:
        order = [k for k, _ in got.runs[-1]]
        if order != want.order:
            at = next(i for i, (a, b) in enumerate(zip(order + [None], want.order + [None]))
                      if a != b)
            problems.append("records printed in another order (a window closed early?): "
                            "record %d is %s, the model's is %s"
                            % (at + 1, order[at] if at < len(order) else None,
                               want.order[at] if at < len(want.order) else None))
    twice = sorted(x for x, k in collections.Counter(r[0] for r in got.rejects).items() if k > 1)
    have = {}
    for line, reason, detail in got.rejects:
        have[line] = (reason, detail)
    wrong = []
    for line in sorted(set(have) | set(want.rejects)):
        w, g = want.rejects.get(line), have.get(line)
        if w is None or g is None:
            wrong.append((line, w and w[0], g and g[0]))
            continue
        reason, missed = w
        if reason == "invalid":
            ok = g[0] not in ("late", "outlier", "too_large")
        else:
            ok = g[0] == reason
        if ok and missed is not None:
            ok = g[1] == "window already final: " + ",".join(missed)
        if not ok:
            wrong.append((line, reason + (" " + ",".join(missed) if missed else ""),
                          g[0] + (" (%s)" % g[1] if reason == "late" else "")))
    if wrong or twice:
        problems.append("rejects differ (line, model, cardinal)%s: %s; twice %s"
                        % (" (%d runs killed, each resumed)" % got.killed if sc.kills else "",
                           wrong[:8], twice[:10]))
    s, ws = got.summary, want.summary()
    ws["read"] = want.lines
    if s == "lost":
        pass
    elif s is None:
        problems.append("no summary on stderr")
    elif s != ws:
        keys = [k for k in ws if s.get(k) != ws[k]]
        problems.append("summary differs%s: %s" % (
            " (the whole job's, across kills)" if sc.kills else "",
            ", ".join("%s model %s cardinal %s" % (k, ws[k], s.get(k)) for k in keys)))
    if got.after_end is not None:
        rc, stdout, kept = got.after_end
        if rc != 0 or stdout or not kept:
            problem = ("a run after the end: exit %d, %d records printed, rejects %s"
                       % (rc, stdout.count("\n"), "kept" if kept else "changed"))
            problems.append(problem)
    return problems


# A disagreement found by this runner where Cardinal, not the model, is wrong, kept
# until it is fixed (scripts/scenarios-regressions/README.md): reported, but fails the
# run only with --strict, so that CI does not fail at random on a known bug.
# None is open: the one kept here (a backfill killed at its end republished its last
# windows on every rerun) was fixed in 6466949, and fails the run again.
KNOWN = "KNOWN (scripts/scenarios-regressions/) "


def check(binary, sc, lines, work, perturb=()):
    """(None if Cardinal agrees with the model, else what differs; what Cardinal did;
    what the model said)."""
    want = model(lines, sc)
    want.lines = len(lines)
    got = run_cardinal(binary, sc, lines, work, perturb)
    problems = differences(want, got, sc)
    return ("; ".join(problems) if problems else None), got, want


def only_known(bad):
    return all(p.startswith(KNOWN) for p in bad.split("; "))


def shrink(binary, sc, work, perturb=(), strict=False):
    """A smaller list of lines that still fails (for a reason not known, unless
    `strict`): drops halves, then quarters, ..."""
    lines = sc.lines
    chunk = len(lines) // 2
    while chunk >= 1:
        i = 0
        while i < len(lines):
            trial = lines[:i] + lines[i + chunk:]
            shutil.rmtree(work, ignore_errors=True)
            os.makedirs(work)
            try:
                bad = trial and check(binary, sc, trial, work, perturb)[0]
                failed = bad and (strict or not only_known(bad))
            except RuntimeError:
                failed = True
            if failed:
                lines = trial
            else:
                i += chunk
        chunk //= 2
    return lines


# ---------------------------------------------------------------- fixed scenarios

class Fixed(Scenario):
    """A hand-written scenario, run every time."""

    def __init__(self, name, targets, lines, grans=("minute",), tz="UTC", lateness=5,
                 max_ahead=60, confirm=16, max_frame_bytes=None, kills=0,
                 kill_after_checkpoints=None, reasons=None):
        self.name, self.targets, self.seed, self.kind = name, targets, 0, "fixed"
        self.lines = [line if isinstance(line, bytes) else line.encode() for line in lines]
        self.grans, self.tz, self.lateness = list(grans), tz, lateness
        self.max_ahead, self.confirm, self.max_frame_bytes = max_ahead, confirm, max_frame_bytes
        self.kills = kills
        self.kill_after_checkpoints = kill_after_checkpoints
        self.reasons = {k.encode() if isinstance(k, str) else k: v
                        for k, v in (reasons or {}).items()}


def fr(uid, ts, pad=0):
    return '{"uid":"%s","ts":%d%s}' % (uid, ts, ',"pad":"%s"' % ("x" * pad) if pad else "")


def fixed_scenarios():
    t = 1_468_244_340          # 2016-07-11T13:39:00Z
    out = []
    # ee281d0 (issue 18, item 3): ts 0 or a month-old ts among a file's first
    # --confirm frames was released with them and opened a window of its own (the
    # same frame from the 17th line on was late). Now an outlier; the very first
    # frame alone is counted, whatever its gap.
    for garbage, at in [(0, 3), (t - 30 * DAY, 9), (0, 15)]:
        lines = [fr("u%d" % i, t + i) for i in range(40)]
        lines.insert(at, fr("g", garbage))
        out.append(Fixed("startup-garbage-%d-at-%d" % (garbage, at), "ee281d0", lines,
                         grans=("minute", "day")))
    short = [fr("u%d" % i, t + i) for i in range(8)]
    short.insert(2, fr("g", 0))
    out.append(Fixed("startup-garbage-in-a-short-input", "ee281d0", short))
    out.append(Fixed("ts-0-first-is-counted", "ee281d0 (its exception)",
                     [fr("g", 0)] + [fr("u%d" % i, t + i) for i in range(30)]))
    # ee281d0 (issue 18, item 1): a line over --max-frame-bytes that arrived whole
    # within one read was counted; only the line still growing at a read's end was
    # measured. Lines of 1,020 to 1,030 bytes (and one of 5,000), boundary included.
    lines = []
    for i in range(60):
        line = fr("u%d" % i, t + i)
        if i % 3:
            n = 1019 + i % 11       # 1,019 to 1,029 bytes
            line = fr("u%d" % i, t + i, pad=n - len(line) - len(',"pad":""'))
            assert len(line) == n
        lines.append(line)
    lines.append(fr("big", t + 61, pad=5000))
    out.append(Fixed("too-large-lines-that-arrive-whole", "ee281d0", lines,
                     max_frame_bytes=1024))
    # ddac4a0 (issue 18, item 13): the guard was bounded by --confirm frames only
    # (up to 100,000 of up to --max-frame-bytes). Now also by 16 MiB, and bytes fill
    # it first here. (a) A genuine jump of 3 MiB frames must be made once 16 MiB
    # are held, so a straggler from before the jump is late; before ddac4a0 the jump
    # waited for 1,000 frames and the straggler counted. (b) Huge garbage frames that
    # fill the buffer are outliers, not a jump: the frames after them spoke against
    # them (what convict_contradicted is for).
    mib = 1 << 20
    jump = [fr("u%d" % i, t + i) for i in range(20)]
    jump += [fr("j%d" % i, t + 3 * 3600 + i, pad=3 * mib) for i in range(8)]
    jump += [fr("s", t + 10)] + [fr("k%d" % i, t + 3 * 3600 + 8 + i) for i in range(5)]
    out.append(Fixed("huge-frames-jump-by-bytes", "ddac4a0", jump, grans=("minute", "hour"),
                     confirm=1000, max_frame_bytes=4 * mib))
    flips = []
    for i in range(40):
        flips.append(fr("u%d" % i, t + i))
        if i % 10 == 5:
            flips.append(fr("g%d" % i, (t + i) ^ (1 << 27), pad=7 * mib))   # +4 years
    out.append(Fixed("huge-garbage-fills-the-guard", "ddac4a0", flips,
                     grans=("minute", "hour", "year"), confirm=1000, max_frame_bytes=8 * mib))
    # 0e0cd9b: what a jump releases is counted before the watermark moves, so the
    # frames that prove a jump are never late, even those of a minute that the
    # jump's median has passed (here the jump lands 40 s into a minute, a frame
    # every 4 s); then a jump proven by exactly --confirm frames at the very end.
    lines = [fr("u%d" % (i % 7), t + i // 10) for i in range(100)]
    lines += [fr("v%d" % (i % 5), t + 3 * 3600 + 40 + 4 * i - (i % 3)) for i in range(100)]
    lines += [fr("w%d" % i, t + 30 * DAY + i) for i in range(16)]
    out.append(Fixed("a-jump-counts-the-frames-that-prove-it", "0e0cd9b", lines,
                     grans=("minute", "hour", "day")))
    # Bit flips in a sparse stream (tests/hostile_input.rs has one flip; here a
    # burst of five of the same bit, and one back to 1970 once the clock runs).
    lines = [fr("u%d" % i, t + 600 * i) for i in range(60)]
    for at in range(30, 35):
        lines[at] = fr("f", (t + 600 * at) ^ (1 << 31))
    lines[50] = fr("b", (t + 600 * 50) ^ (1 << 30))
    out.append(Fixed("sparse-stream-with-a-burst-of-flips", "0e0cd9b", lines,
                     grans=("minute", "day")))
    # End of input, GAP: a held frame with one contradiction and no support is
    # counted (watermark.rs: "the frame supports itself"); ARCHITECTURE.md's wording
    # would make it an outlier.
    lines = [fr("u%d" % i, t + i) for i in range(50)] + [fr("a", 5000 + t), fr("b", 5001 + t),
                                                         fr("c", t + 50)]
    out.append(Fixed("held-at-the-end-one-against-none", "GAP (end of input)", lines))
    # 127564b, e65f8c9, 2bbea23: across kills, the rejects file holds each line once
    # (before 127564b a resumed run wrote them again); the summary covers the whole
    # job (before e65f8c9 it covered the last run; before 2bbea23 a chain of change
    # sets restored the whole state's counters, 299,008 of 300,000 frames). Three
    # kills, each once the run has written three more checkpoint files (one per
    # chunk of 4,096 lines), so each resume reads a whole state and change sets.
    rng = random.Random(23)
    lines = []
    for i in range(60_000):
        ts = t + i // 50 - rng.randint(0, 8)
        if i % 997 == 0:
            lines.append(b"{")
        elif i % 1999 == 0:
            lines.append(fr("f", ts ^ (1 << 33)))
        else:
            lines.append(fr("u%d" % rng.randrange(5000), ts))
    out.append(Fixed("kills-mid-run-resume-the-whole-job", "127564b, e65f8c9, 2bbea23", lines,
                     grans=("minute", "hour"), kills=3, kill_after_checkpoints=3,
                     reasons={b"{": "truncated"}))
    return out


# ---------------------------------------------------------------- main

def parse_perturb(text):
    m = re.fullmatch(r"(--[a-z-]+)([=+-])(.+)", text)
    if not m:
        raise argparse.ArgumentTypeError("--perturb OPTION=VALUE, OPTION+N or OPTION-N")
    return m.groups()


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
    ap.add_argument("--no-fixed", action="store_true", help="only the seeds")
    ap.add_argument("--only-fixed", action="store_true", help="only the fixed scenarios")
    ap.add_argument("--list-fixed", action="store_true",
                    help="name the fixed scenarios and the commits they target")
    ap.add_argument("--kind", choices=KINDS, help="only seeds of this kind")
    ap.add_argument("--strict", action="store_true",
                    help="fail on known Cardinal bugs too (scripts/scenarios-regressions/)")
    # Debugging the runner itself: run Cardinal with an option the model does not
    # assume (e.g. --perturb --confirm+1, --perturb --lateness=0s), to see that the
    # runner notices. Repeatable.
    ap.add_argument("--perturb", type=parse_perturb, action="append", default=[],
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    fixed = fixed_scenarios()
    if args.list_fixed:
        for sc in fixed:
            print("%-44s %s" % (sc.name, sc.targets))
        return 0
    if not os.access(args.bin, os.X_OK):
        ap.error(f"--bin {args.bin}: no such executable (build it, or pass --bin PATH)")
    started = time.time()
    ran = fixed_ran = kills = frames = windows = 0
    kinds = collections.Counter()
    failures = []
    known = []

    def one(sc):
        nonlocal frames, windows, kills
        work = tempfile.mkdtemp(prefix="cardinal-scenario-")
        try:
            try:
                bad, got, want = check(args.bin, sc, sc.lines, work, args.perturb)
                kills += got.killed
                windows += len(want.results)
            except RuntimeError as e:
                bad = str(e)
            frames += len(sc.lines)
            if bad and not args.strict and only_known(bad):
                known.append(sc.label())
                print("KNOWN %s: %s" % (sc.label(), bad), flush=True)
            elif bad:
                small = sc.lines
                if not args.no_shrink:
                    small = shrink(args.bin, sc, work, args.perturb, args.strict)
                os.makedirs(args.keep, exist_ok=True)
                stem = os.path.join(args.keep, (sc.name or "seed-%d" % sc.seed))
                with open(stem + ".json", "wb") as f:
                    f.write(b"\n".join(small) + b"\n")
                repro = " ".join([args.bin, "count", "--format", "json", "--rejects",
                                  stem + ".rejects.jsonl"] + sc.options(args.perturb)
                                 + [stem + ".json"])
                if sc.kills:
                    repro += ("\n  (it failed with --state-dir DIR --checkpoint-interval 0s, "
                              "SIGKILL %d times %s, then run to the end, then once more)"
                              % (sc.kills, "after 3 more checkpoint files each"
                                 if sc.kill_after_checkpoints else "0-50 ms into each run"))
                if args.perturb:
                    repro += "\n  (perturbed: the model assumed %s)" % " ".join(sc.options())
                with open(stem + ".cmd", "w") as f:
                    f.write("# %s: %s\n%s\n" % (sc.label(), bad, repro))
                failures.append(sc.label())
                print("MISMATCH %s (%d lines, shrunk to %d%s): %s\n  reproduce: %s"
                      % (sc.label(), len(sc.lines), len(small),
                         ", with %d kills" % sc.kills if sc.kills else "", bad, repro),
                      flush=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    if not args.no_fixed:
        for sc in fixed:
            one(sc)
            fixed_ran += 1
    seed = args.first
    while not args.only_fixed:
        if args.soak and time.time() - started >= args.soak:
            break
        if not args.soak and ran >= args.seeds:
            break
        sc = Scenario(seed)
        seed += 1
        if args.kind and sc.kind != args.kind:
            continue
        one(sc)
        ran += 1
        kinds[sc.kind] += 1
    print("scenarios: %d fixed and %d seeded run (seeds %d to %d: %s), %d runs killed and resumed, "
          "%d lines, %d windows checked, %d mismatches%s, %.0f s"
          % (fixed_ran, ran, args.first, seed - 1,
             ", ".join("%d %s" % (kinds[k], k) for k in KINDS if kinds[k]),
             kills, frames, windows, len(failures),
             " (and %d known: %s%s)" % (len(known), ", ".join(known[:4]),
                                         ", ..." if len(known) > 4 else "") if known else "",
             time.time() - started))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
