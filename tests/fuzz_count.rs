//! A fuzz target for the whole counting pipeline, on the stable toolchain: random
//! streams of frames (timestamps anywhere from 0 to past the end of representable
//! time, ordered runs, jumps, garbage lines, oversized lines) go through
//! `pipeline::count_from` with every window enabled, and it must
//! - never panic,
//! - account for every input line exactly once: counted in a window, or in the
//!   rejects file with its line number,
//! - keep at most two open windows per granularity after every chunk (everything
//!   counted lies within the lateness of the newest trusted frame).
//!
//! CI runs a fixed, small number of cases. A long run:
//!
//! ```sh
//! CARDINAL_FUZZ_CASES=20000 cargo test --release --test fuzz_count
//! ```

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::{Arc, Mutex};

use cardinal::aggregator::Settings;
use cardinal::emitter::Format;
use cardinal::pipeline::{self, CountConfig, CounterKind, Hooks, OpenInput, Sinks, StateView};
use cardinal::sink::{RejectSink, ResultSink};
use cardinal::watermark::GuardConfig;
use cardinal::window::{Calendar, Granularity};
use proptest::prelude::*;
use serde_json::Value;

/// A writer the test can read back after the run.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct MaxOpen(usize);

impl Hooks for MaxOpen {
    fn progress(
        &mut self,
        state: &mut dyn StateView,
        _now_ms: Option<u64>,
    ) -> Result<(), pipeline::PipelineError> {
        self.0 = self.0.max(state.open_windows());
        Ok(())
    }
}

/// One line of input, as the fuzzer builds it.
#[derive(Debug, Clone)]
enum Line {
    /// A frame at the stream's time plus a step (the stream moves on).
    Step(u32, i64),
    /// A frame at an arbitrary time.
    Anywhere(u32, i64),
    /// A frame as a string `ts`.
    StringTs(u32, i64),
    /// Bytes that are probably not a frame.
    Garbage(Vec<u8>),
    /// A line over the frame limit.
    Huge(usize),
}

/// 9998-12-31T23:59:59Z: the last second whose windows of every granularity jiff represents in UTC.
const LAST: i64 = 253_370_764_799;

fn line() -> impl Strategy<Value = Line> {
    prop_oneof![
        8 => (0u32..50, prop_oneof![Just(0i64), 0i64..5, 0i64..120, 0i64..100_000, -4i64..0])
            .prop_map(|(u, d)| Line::Step(u, d)),
        1 => (0u32..50, prop_oneof![
                0i64..=2_000_000_000,
                Just(0i64),
                (LAST - 2)..(LAST + 3),
                (253_402_300_799i64 - 5)..(253_402_300_799 + 5),
                Just(i64::MAX),
            ]).prop_map(|(u, t)| Line::Anywhere(u, t)),
        1 => (0u32..50, 0i64..2_000_000_000).prop_map(|(u, t)| Line::StringTs(u, t)),
        1 => proptest::collection::vec(
            // Mapped, not filtered: a filter's rejections add up over a long run
            // and abort it (proptest's local reject limit) near 34,000 cases.
            any::<u8>().prop_map(|b| if b == b'\n' { b'?' } else { b }),
            0..40,
        )
            .prop_map(Line::Garbage),
        1 => (2048usize..6000).prop_map(Line::Huge),
    ]
}

fn render(lines: &[Line]) -> Vec<u8> {
    let mut t: i64 = 1_468_244_340;
    let mut out = Vec::new();
    for l in lines {
        match l {
            Line::Step(u, d) => {
                t = (t + d).max(0);
                writeln!(out, r#"{{"uid":"u{u}","ts":{t},"n":{{"ts":1}}}}"#).unwrap();
            }
            Line::Anywhere(u, ts) => writeln!(out, r#"{{"ts":{ts},"uid":"u{u}"}}"#).unwrap(),
            Line::StringTs(u, ts) => writeln!(out, r#"{{"uid":"u{u}","ts":"{ts}"}}"#).unwrap(),
            Line::Garbage(b) => {
                out.extend_from_slice(b);
                out.push(b'\n');
            }
            Line::Huge(n) => {
                out.extend_from_slice(br#"{"uid":"big","ts":1468244340,"pad":""#);
                out.extend(std::iter::repeat_n(b'x', *n));
                out.extend_from_slice(b"\"}\n");
            }
        }
    }
    out
}

fn cases() -> u32 {
    std::env::var("CARDINAL_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(48)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn every_line_is_counted_or_rejected_and_open_windows_stay_bounded(
        lines in proptest::collection::vec(line(), 1..600),
        confirm in 1usize..20,
        chunk_bytes in 64usize..4096,
    ) {
        let input = render(&lines);
        let total_lines = input.iter().filter(|b| **b == b'\n').count() as u64;
        let dir = tempfile::tempdir().unwrap();
        let rejects_path = dir.path().join("rejects.jsonl");
        let out = Shared::default();
        let mut sinks = Sinks {
            results: vec![Box::new(ResultSink::new(Box::new(out.clone()), Format::Json))],
            rejects: vec![Box::new(RejectSink::create(&rejects_path).unwrap())],
        };
        let config = CountConfig {
            calendar: Calendar::utc(),
            settings: Settings {
                granularities: Granularity::ALL.to_vec(),
                guard: GuardConfig { max_ahead: 60, confirm },
                ..Settings::default()
            },
            counter: CounterKind::Exact,
            threads: 2,
            chunk_bytes,
            max_frame_bytes: 2048,
            metrics: None,
            frames: cardinal::parser::FrameSpec::default(),
        };
        let inputs = vec![OpenInput {
            name: "fuzz".into(),
            reader: Box::new(std::io::Cursor::new(input)),
        }];
        let mut hooks = MaxOpen(0);
        let report = pipeline::count_from(&config, inputs, &mut sinks, &mut hooks, None, None)
            .expect("the run succeeds");
        drop(sinks);
        prop_assert!(hooks.0 <= 2 * Granularity::ALL.len(), "{} windows open at once", hooks.0);

        // Frames counted, from the minute windows (every frame is in exactly one).
        let results = out.0.lock().unwrap().clone();
        let mut in_minutes = 0u64;
        for l in String::from_utf8(results).unwrap().lines() {
            let v: Value = serde_json::from_str(l).unwrap();
            if v["window"] == "minute" {
                in_minutes += v["frames"].as_u64().unwrap();
            }
        }
        // Rejected lines, each once; a late frame that still counted in a coarser
        // window is rejected for the minute only, so it is counted by neither sum twice.
        let rejected_text = std::fs::read_to_string(&rejects_path).unwrap();
        let mut rejected = BTreeSet::new();
        for l in rejected_text.lines() {
            let v: Value = serde_json::from_str(l).unwrap();
            let line = v["line"].as_u64().unwrap();
            prop_assert!(rejected.insert(line), "line {line} rejected twice");
            prop_assert!((1..=total_lines).contains(&line));
        }
        prop_assert_eq!(in_minutes + rejected.len() as u64, total_lines);
        prop_assert_eq!(report.telemetry.frames_received, total_lines);
    }
}
