//! Cardinal's validating parser against its anchors, on the same frames, in one
//! run (issue 21): simdjson's DOM parse (C++, through `simdjson-rust`: validates
//! everything and builds a tape), serde_json validating without building anything
//! (`IgnoredAny`), simd-json's borrowed value, sonic-rs's lazy `get_many` (checks
//! UTF-8, otherwise trusts the JSON: not a validator), Cardinal's byte-at-a-time
//! parser (the oracle the fast path is fuzzed against), and the memchr floor
//! (counting `"` with `memchr`: every byte read once, nothing decided).
//!
//! Two frame shapes: `mixed` (`cardinal gen`'s default: nesting, decoy keys,
//! numbers, emoji) and `challenge` (`gen --profile challenge`: short keys, long
//! strings dense with escapes and Cyrillic).
//!
//! Before timing, every frame's (uid, ts) from Cardinal, both its paths, is
//! compared with serde_json's reading, and every other parser must accept every
//! frame; any difference aborts the run. Each round times every parser once over
//! all frames, in an order that rotates from round to round, so the machine's
//! noise falls on all alike; medians over the rounds are printed last, with each
//! parser's ratio to simdjson and to the floor. Every round is printed as it is
//! measured (`round` lines), so the raw figures stay with the medians.
//!
//! Usage: `parser-anchors [--frames N] [--rounds R] [--profiles mixed,challenge]
//! [--only NAME]` (`--only cardinal` runs one parser, once, for callgrind).

use std::borrow::Cow;
use std::hint::black_box;
use std::time::Instant;

use cardinal::generator::{FrameGen, GenConfig, Profile};
use cardinal::parser::{parse_frame, parse_frame_scalar};

#[derive(Clone, Copy, PartialEq)]
enum Parser {
    Cardinal,
    CardinalScalar,
    Simdjson,
    SerdeIgnored,
    SimdJsonBorrowed,
    SonicLazy,
    MemchrFloor,
}

const ALL: [Parser; 7] = [
    Parser::Cardinal,
    Parser::Simdjson,
    Parser::SerdeIgnored,
    Parser::SimdJsonBorrowed,
    Parser::SonicLazy,
    Parser::CardinalScalar,
    Parser::MemchrFloor,
];

impl Parser {
    fn name(self) -> &'static str {
        match self {
            Parser::Cardinal => "cardinal",
            Parser::CardinalScalar => "cardinal-scalar",
            Parser::Simdjson => "simdjson-dom",
            Parser::SerdeIgnored => "serde_json-ignored",
            Parser::SimdJsonBorrowed => "simd-json-borrowed",
            Parser::SonicLazy => "sonic-rs-lazy",
            Parser::MemchrFloor => "memchr-floor",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Parser::Cardinal => "validates all, root uid+ts (the fastest path this CPU has)",
            Parser::CardinalScalar => "validates all, root uid+ts, a byte at a time (the oracle)",
            Parser::Simdjson => "validates all, builds a tape, converts every number",
            Parser::SerdeIgnored => "validates all, builds nothing",
            Parser::SimdJsonBorrowed => "validates all, builds a borrowed DOM (copies the frame)",
            Parser::SonicLazy => "does NOT validate: checks UTF-8, skips values",
            Parser::MemchrFloor => "reads each byte once, decides nothing",
        }
    }
}

/// Everything a parser needs between frames, allocated once.
struct Ctx {
    simdjson: simdjson_rust::dom::Parser,
    sonic: sonic_rs::PointerTree,
    scratch: Vec<u8>,
}

impl Ctx {
    fn new() -> Ctx {
        let mut sonic = sonic_rs::PointerTree::new();
        sonic.add_path(["uid"].iter());
        sonic.add_path(["ts"].iter());
        Ctx {
            simdjson: simdjson_rust::dom::Parser::default(),
            sonic,
            scratch: Vec::with_capacity(1 << 20),
        }
    }

    /// Parses one frame; returns something that depends on the parse, so that
    /// nothing is optimized away, or an error text.
    fn run(&mut self, p: Parser, f: &[u8]) -> Result<usize, String> {
        match p {
            Parser::Cardinal => parse_frame(f)
                .map(|fr| fr.uid.len() + fr.ts as usize)
                .map_err(|e| e.to_string()),
            Parser::CardinalScalar => parse_frame_scalar(f)
                .map(|fr| fr.uid.len() + fr.ts as usize)
                .map_err(|e| e.to_string()),
            Parser::Simdjson => self
                .simdjson
                .parse_bytes(f)
                .map(|tape| tape.scope_count())
                .map_err(|e| e.to_string()),
            Parser::SerdeIgnored => serde_json::from_slice::<serde::de::IgnoredAny>(f)
                .map(|_| 1)
                .map_err(|e| e.to_string()),
            Parser::SimdJsonBorrowed => {
                self.scratch.clear();
                self.scratch.extend_from_slice(f);
                simd_json::to_borrowed_value(&mut self.scratch)
                    .map(|v| usize::from(matches!(v, simd_json::BorrowedValue::Object(_))))
                    .map_err(|e| e.to_string())
            }
            Parser::SonicLazy => sonic_rs::get_many(f, &self.sonic)
                .map(|v| v.iter().flatten().map(|x| x.as_raw_str().len()).sum())
                .map_err(|e| e.to_string()),
            Parser::MemchrFloor => Ok(memchr::memchr_iter(b'"', f).count()),
        }
    }
}

fn frames(profile: Profile, n: u64) -> Vec<Vec<u8>> {
    let cfg = GenConfig {
        frames: n,
        string_ts: 0.1,
        profile,
        ..GenConfig::default()
    };
    FrameGen::new(&cfg).map(|f| f.line).collect()
}

/// serde_json's reading of the root uid and ts: the reference.
fn reference(f: &[u8]) -> (Vec<u8>, i64) {
    let v: serde_json::Value = serde_json::from_slice(f).expect("serde_json reads every frame");
    let uid = v["uid"].as_str().expect("a string uid").as_bytes().to_vec();
    let ts = match &v["ts"] {
        serde_json::Value::String(s) => s.parse().expect("a digit string"),
        n => n.as_i64().expect("an integer ts"),
    };
    (uid, ts)
}

/// Checks Cardinal against serde_json on every frame, and keeps the frames that
/// every parser accepts: simdjson's DOM refuses integers beyond 64 bits
/// (`BIGINT_ERROR`), which are valid JSON and which the mixed frames carry, so
/// such frames are left out for all parsers alike, and counted.
fn check(frames: Vec<Vec<u8>>, ctx: &mut Ctx, profile: &str) -> Vec<Vec<u8>> {
    let mut kept = Vec::with_capacity(frames.len());
    let mut refused = vec![0usize; ALL.len()];
    for (i, f) in frames.into_iter().enumerate() {
        let (uid, ts) = reference(&f);
        for fr in [parse_frame(&f), parse_frame_scalar(&f)] {
            let fr = fr.unwrap_or_else(|e| panic!("{profile} frame {i}: cardinal: {e}"));
            assert_eq!(
                (fr.uid, fr.ts),
                (Cow::from(&uid[..]), ts),
                "{profile} frame {i}"
            );
        }
        let mut all = true;
        for (k, &p) in ALL.iter().enumerate() {
            if ctx.run(p, &f).is_err() {
                refused[k] += 1;
                all = false;
            }
        }
        if all {
            kept.push(f);
        }
    }
    for (k, p) in ALL.iter().enumerate() {
        if refused[k] > 0 {
            println!(
                "{profile}: {} refused {} valid frames (left out for every parser)",
                p.name(),
                refused[k]
            );
        }
    }
    kept
}

fn time(p: Parser, frames: &[Vec<u8>], ctx: &mut Ctx) -> f64 {
    let started = Instant::now();
    let mut acc = 0usize;
    for f in frames {
        acc = acc.wrapping_add(ctx.run(p, black_box(f)).unwrap_or(0));
    }
    black_box(acc);
    started.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() {
    let mut n = 20_000u64;
    let mut rounds = 9usize;
    let mut profiles = vec![Profile::Mixed, Profile::Challenge];
    let mut only: Option<Parser> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--frames" => n = value().parse().expect("--frames N"),
            "--rounds" => rounds = value().parse().expect("--rounds R"),
            "--profiles" => {
                profiles = value()
                    .split(',')
                    .map(|p| match p {
                        "mixed" => Profile::Mixed,
                        "challenge" => Profile::Challenge,
                        _ => panic!("--profiles: mixed or challenge, not {p}"),
                    })
                    .collect()
            }
            "--only" => {
                let name = value();
                only = Some(
                    *ALL.iter()
                        .find(|p| p.name() == name)
                        .unwrap_or_else(|| panic!("--only: no parser {name}")),
                )
            }
            _ => panic!("unknown argument {a} (see the header of benches/anchors/src/main.rs)"),
        }
    }
    let mut ctx = Ctx::new();
    for profile in profiles {
        let pname = if profile == Profile::Mixed {
            "mixed"
        } else {
            "challenge"
        };
        let generated = frames(profile, n);
        let frames = if only.is_some() {
            generated
        } else {
            check(generated, &mut ctx, pname)
        };
        let bytes: usize = frames.iter().map(Vec::len).sum();
        if let Some(p) = only {
            let s = time(p, &frames, &mut ctx);
            println!("only {pname} {} {bytes} B in {s:.3} s", p.name());
            continue;
        }
        println!(
            "profile {pname}: {} of {n} frames timed, {bytes} B ({} B each on average); \
             cardinal's (uid, ts), both paths, equal serde_json's on all {n}",
            frames.len(),
            bytes / frames.len().max(1)
        );
        let mut secs: Vec<Vec<f64>> = vec![Vec::new(); ALL.len()];
        for round in 0..rounds {
            for k in 0..ALL.len() {
                let i = (k + round) % ALL.len();
                let s = time(ALL[i], &frames, &mut ctx);
                secs[i].push(s);
                println!(
                    "round {pname} {} {} {:.4} s {:.3} GB/s",
                    round + 1,
                    ALL[i].name(),
                    s,
                    bytes as f64 / s / 1e9
                );
            }
        }
        let gbs: Vec<f64> = secs
            .into_iter()
            .map(|s| bytes as f64 / median(s) / 1e9)
            .collect();
        let of = |p: Parser| gbs[ALL.iter().position(|&q| q == p).expect("listed")];
        let (simdjson, floor) = (of(Parser::Simdjson), of(Parser::MemchrFloor));
        println!("medians {pname} ({rounds} rounds, GB/s on one core):");
        for (i, p) in ALL.iter().enumerate() {
            println!(
                "  {:<20} {:>6.3} GB/s  {:>5.2}x simdjson  {:>5.1}% of the floor  {}",
                p.name(),
                gbs[i],
                gbs[i] / simdjson,
                100.0 * gbs[i] / floor,
                p.what()
            );
        }
    }
}
