#!/usr/bin/env python3
"""A `count --state-dir` backfill killed at its end is never finished again.

Found by scripts/scenarios.py --soak (seeds 1074 and 1081: a kill that landed
between the checkpoint of the last chunk and the one written at the end). Here
made deterministic: the run's stdout is a pipe nobody reads, so the end of input's
records (all 2,000 windows, since the lateness keeps every window open until then)
fill it and the run blocks in the end-of-input flush, after the last chunk's
checkpoint; it is then killed with SIGKILL.

docs/guide/crash-safety.md: "`kill -9` at any moment loses nothing and counts
nothing twice", and "A backfill that finished says so and does nothing when run
again." What Cardinal does: the resumed run reads nothing (it resumes at the end),
prints the 2,000 windows, says it finished (exit 0), but writes no checkpoint; so
does every run after it, each printing the same 2,000 records again.

Usage: resume-at-end-republishes.py BINARY   (exit 1 while the bug is there, 0 once fixed)
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

binary = sys.argv[1] if len(sys.argv) > 1 else "target/debug/cardinal"
work = tempfile.mkdtemp(prefix="cardinal-regression-")
path = os.path.join(work, "in.json")
with open(path, "w") as f:
    for i in range(2000):
        f.write('{"uid":"u%d","ts":%d}\n' % (i % 37, 1_700_000_000 + 60 * i))
state = os.path.join(work, "state")
cmd = [binary, "count", "--format", "json", "--lateness", "3000000000",
       "--state-dir", state, "--checkpoint-interval", "0s", path]
print("$ " + " ".join(cmd) + "   # stdout never read, SIGKILL once it blocks")
p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
deadline = time.time() + 20
while p.poll() is None and not os.path.exists(os.path.join(state, "checkpoint")):
    if time.time() > deadline:
        break
    time.sleep(0.01)
time.sleep(1.0)                     # let it fill the pipe and block in the flush
p.send_signal(signal.SIGKILL)
p.wait()
print("killed: exit %s" % p.returncode)
failed = False
for run in (1, 2, 3):
    r = subprocess.run(cmd, capture_output=True, text=True)
    records = r.stdout.count("\n")
    print("run %d after the kill: exit %d, %d records; %s"
          % (run, r.returncode, records, r.stderr.strip().splitlines()[0][:120]))
    if run > 1 and records:
        failed = True
shutil.rmtree(work, ignore_errors=True)
print("BUG: every run after the end prints the last windows again" if failed
      else "ok: the run after the resumed one did nothing")
sys.exit(1 if failed else 0)
