#!/usr/bin/env python3
"""Instructions per byte in each stage of Cardinal's parser, counted by callgrind.

Instruction counts do not depend on the machine's load, so these figures are
comparable between runs, commits and machines with the same instruction set.
Valgrind does not run AVX-512, so what is counted is the AVX2 path (the path of
every x86_64 CPU with AVX2 but not AVX-512); the AVX-512 path is timed, not
counted (benches/anchors).

How: `parser-anchors --only cardinal` parses generated frames under
`valgrind --tool=callgrind --dump-instr=yes`. Every instruction executed inside
a `cardinal::parser::` function is mapped, through the binary's debug info
(`addr2line -i`, which names every inlined function around it), to the innermost
function that is a stage below; calls out of the parser (simdutf8, memcpy,
malloc) count with their callee's name. Frame generation is not counted.

Usage: scripts/parser-stages.py [--frames N] [--profiles mixed,challenge]
       [--bin target/release/parser-anchors]   (builds benches/anchors if no --bin)
"""

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile

# Innermost match wins: (pattern on the inlined function's name, stage).
STAGES = [
    (r"Positions<.*>::push_bits", "1c positions of brackets, root keys (push_bits)"),
    (r"parser::simd::scan_block", "1b classify, strings, numbers (scan_block)"),
    (r"parser::classify::", "1b classify, strings, numbers (scan_block)"),
    (r"Lookback", "1a UTF-8 and number lookback (AVX-512 only)"),
    (r"parser::simd::Nesting::step", "2 brackets (Nesting::step)"),
    (r"parser::simd::grammar", "3 grammar (grammar)"),
    (r"parser::root_keys::RootKeys", "4 root keys (RootKeys)"),
    (r"parser::root_keys::Padded", "0 padding (Padded)"),
    (r"parser::simd::prefetch", "0 prefetch"),
    (r"parser::(extract|extract_uid|extract_ts|parse_ts|decode|unescape)", "5 uid and ts (extract)"),
    (r"simdutf8::", "0 UTF-8 (simdutf8, AVX2/SSE2 only)"),
]
OTHER = "6 the rest (window loop, setup, verdict)"


def stage_of(names):
    for name in names:  # innermost first
        for pat, stage in STAGES:
            if re.search(pat, name):
                return stage
    return OTHER


def callee_stage(name):
    for pat, stage in STAGES:
        if re.search(pat, name):
            return stage
    if re.search(r"mem(cpy|move|set)", name):
        return "7 memcpy/memset calls"
    if re.search(r"malloc|free|alloc", name):
        return "7 allocation calls"
    return "7 other calls: " + name[:60]


def callgrind(binary, profile, frames, out):
    cmd = ["valgrind", "--tool=callgrind", "--dump-instr=yes", "--dump-line=no", "--compress-strings=no",
           "--compress-pos=no", f"--callgrind-out-file={out}", binary,
           "--frames", str(frames), "--profiles", profile, "--only", "cardinal"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"parser-stages: {' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    m = re.search(r"only \S+ cardinal (\d+) B", r.stdout)
    if not m:
        sys.exit(f"parser-stages: no byte count in {r.stdout!r}")
    return int(m.group(1))


def parse_callgrind(path):
    """Self cost per instruction address in parser functions, and the inclusive
    cost of their calls to functions outside the parser, by callee."""
    own = collections.Counter()
    calls = collections.Counter()
    in_parser = False
    callee = None
    after_calls = False
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("fn="):
                in_parser = "cardinal::parser::" in line
                continue
            if line.startswith("cfn="):
                callee = line[4:]
                continue
            if line.startswith("calls="):
                after_calls = True
                continue
            if not line.startswith("0x"):
                continue
            fields = line.split()
            addr, cost = fields[0], fields[-1]
            if after_calls:
                after_calls = False
                if in_parser and "cardinal::parser::" not in callee:
                    calls[callee] += int(cost)
                continue
            if in_parser:
                own[int(addr, 16)] += int(cost)
    return own, calls


def inline_chains(binary, addrs):
    """For each address, the names of the functions inlined around it, innermost first."""
    text = "\n".join(hex(a) for a in addrs) + "\n"
    r = subprocess.run(["addr2line", "-a", "-i", "-f", "-C", "-e", binary],
                       input=text, capture_output=True, text=True, check=True)
    chains, current = {}, None
    lines = r.stdout.splitlines()
    i = 0
    while i < len(lines):
        if re.fullmatch(r"0x[0-9a-f]+", lines[i]):
            current = int(lines[i], 16)
            chains[current] = []
            i += 1
            continue
        chains[current].append(lines[i])  # the function; the next line is file:line
        i += 2
    return chains


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=5000)
    ap.add_argument("--profiles", default="mixed,challenge")
    ap.add_argument("--bin")
    args = ap.parse_args()
    binary = args.bin
    if not binary:
        target = os.environ.get("ANCHORS_TARGET_DIR") or os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "anchors")
        subprocess.run(["cargo", "build", "--release", "--quiet", "--manifest-path",
                        "benches/anchors/Cargo.toml", "--target-dir", target], check=True)
        binary = os.path.join(target, "release", "parser-anchors")
    for profile in args.profiles.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "callgrind.out")
            nbytes = callgrind(binary, profile, args.frames, out)
            own, calls = parse_callgrind(out)
        chains = inline_chains(binary, sorted(own))
        by_stage = collections.Counter()
        for addr, cost in own.items():
            by_stage[stage_of(chains.get(addr, []))] += cost
        for callee, cost in calls.items():
            by_stage[callee_stage(callee)] += cost
        total = sum(by_stage.values())
        print(f"profile {profile}: {args.frames} frames, {nbytes} B, "
              f"{total} instructions in the parser: {total / nbytes:.3f} per byte")
        for stage in sorted(by_stage):
            cost = by_stage[stage]
            print(f"  {stage:<46} {cost / nbytes:7.3f} instr/B  {100 * cost / total:5.1f}%")


if __name__ == "__main__":
    main()
