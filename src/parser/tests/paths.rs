//! Random JSON (decoys included), serialized by serde_json, then damaged: every path
//! (AVX-512, AVX2, SSE2, scalar) must give the same answer, and the fast ones must
//! answer for every valid frame.

use super::super::classify::{Avx2, Avx512, Isa, Masks, Sse2};
use super::super::*;
use proptest::prelude::*;
use serde_json::{Map, Value};

pub fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "(\\PC|[\"\\\\\n\t{}\\[\\]\u{0}\u{1f}])*".prop_map(Value::String),
        Just(Value::String("\"uid\":\"fake\",\"ts\":1".into())),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![Just("uid".to_string()), Just("ts".to_string()), "\\PC{0,8}"],
                    inner
                ),
                0..6
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

prop_compose! {
    /// A valid frame with uid and ts somewhere among other root fields.
    pub fn frame()(
        before in prop::collection::vec(("[a-z]{1,6}", value()), 0..4),
        after in prop::collection::vec(("[a-z]{1,6}", value()), 0..4),
        uid in "\\PC{1,12}",
        ts in 0i64..=MAX_TS,
        ts_as_string in any::<bool>(),
        uid_first in any::<bool>(),
    ) -> (String, String, i64) {
        let pair = |(k, v): &(String, Value)| format!("{}:{}", Value::from(k.as_str()), v);
        let mut parts: Vec<String> =
            before.iter().filter(|(k, _)| k != "uid" && k != "ts").map(pair).collect();
        let u = format!("\"uid\":{}", Value::from(uid.as_str()));
        let t = if ts_as_string { format!("\"ts\":\"{ts}\"") } else { format!("\"ts\":{ts}") };
        if uid_first { parts.push(u); parts.push(t); } else { parts.push(t); parts.push(u); }
        parts.extend(after.iter().filter(|(k, _)| k != "uid" && k != "ts").map(pair));
        (format!("{{{}}}", parts.join(",")), uid, ts)
    }
}

/// Field names and units other than the defaults: prefixes and swaps of the
/// default names, names the fast path's first-byte filter would skip, non-ASCII.
fn other_spec() -> impl Strategy<Value = FrameSpec> {
    let names = prop_oneof![
        Just("uid"),
        Just("ts"),
        Just("u"),
        Just("t"),
        Just("user"),
        Just("time"),
        Just("a"),
        Just("é"),
        Just("\"q\\"),
    ];
    let units = prop_oneof![
        Just(TsUnit::Seconds),
        Just(TsUnit::Millis),
        Just(TsUnit::Micros)
    ];
    (names.clone(), names, units).prop_filter_map("distinct names", |(u, t, unit)| {
        FrameSpec::new(u, t, unit).ok()
    })
}

/// Bytes that matter to a JSON parser, to splice in.
const SPICE: &[u8] = b"{}[]:,\"\\ \t\r\n0123456789-+.eEtrufalsn/bu\x00\x1f\x7f\x80\xbf\xc0\xc2\xe0\xed\xf0\xf4\xf5\xff";

fn damage() -> impl Strategy<Value = Vec<(u8, usize, usize)>> {
    prop::collection::vec((0u8..4, any::<usize>(), 0..SPICE.len()), 0..4)
}

fn apply(line: &mut Vec<u8>, edits: &[(u8, usize, usize)]) {
    for &(kind, at, spice) in edits {
        let at = at % (line.len() + 1);
        let b = SPICE[spice];
        match kind {
            0 if at < line.len() => line[at] = b,
            1 => line.insert(at, b),
            2 if at < line.len() => _ = line.remove(at),
            _ => line.truncate(at.max(1)),
        }
    }
}

/// A fast path, as a pointer: `unsafe`, since the AVX ones may only run on a CPU
/// with their features.
pub type FastFn =
    for<'a, 'b> unsafe fn(&'a [u8], &'b FrameSpec) -> Option<Result<Frame<'a>, ParseError>>;

/// The fast paths this CPU can run, by name. A path it cannot run is not tested,
/// and `test` says so on stderr (once per test; written past the test harness's
/// capture, so it shows in a passing run too).
pub fn fast_paths(test: &str) -> Vec<(&'static str, FastFn)> {
    let mut paths: Vec<(&'static str, FastFn)> = vec![("sse2", simd::parse_sse2)];
    if simd::has_avx2() {
        paths.push(("avx2", simd::parse_avx2));
    } else {
        skipped(test, "AVX2 (with PCLMULQDQ, BMI1, BMI2, POPCNT)", "AVX2");
    }
    if simd::has_avx512() {
        paths.push(("avx512", simd::parse_avx512));
    } else {
        skipped(test, "AVX-512 BW", "AVX-512");
    }
    paths
}

/// Says, once per test and path, that this CPU cannot run the path.
pub fn skipped(test: &str, features: &str, path: &str) {
    use std::io::Write;
    use std::sync::Mutex;
    static SAID: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());
    let mut said = SAID.lock().unwrap_or_else(|e| e.into_inner());
    let key = (test.to_string(), path.to_string());
    if !said.contains(&key) {
        said.push(key);
        _ = writeln!(
            std::io::stderr(),
            "SKIPPED: this CPU has no {features}; the {path} path was not tested by {test}"
        );
    }
}

pub fn agree(line: &[u8]) -> Result<(), TestCaseError> {
    agree_with(line, &FrameSpec::DEFAULT)
}

/// The fast paths answer as the scalar parser does, under `spec`.
pub fn agree_with(line: &[u8], spec: &FrameSpec) -> Result<(), TestCaseError> {
    let want = scalar::parse(line, spec);
    for (name, path) in fast_paths("paths::agree_with") {
        // SAFETY: `fast_paths` lists only the paths whose features it detected.
        let got = unsafe { path(line, spec) };
        match got {
            Some(got) => prop_assert_eq!(&got, &want, "{}", name),
            // No valid frame here nests deeper than 64, the fast path's limit.
            None => prop_assert!(
                matches!(
                    want,
                    Err(ParseError::Empty
                        | ParseError::NotAnObject(_)
                        | ParseError::Truncated
                        | ParseError::Malformed(_)
                        | ParseError::DuplicateKey(_))
                ),
                "{} gave up on {:?}",
                name,
                want
            ),
        }
    }
    prop_assert_eq!(parse_frame_with(line, spec), want);
    Ok(())
}

proptest! {
    #[test]
    fn agrees_with_serde_json((line, uid, ts) in frame()) {
        let reference: Value = serde_json::from_str(&line).unwrap();
        let f = parse_frame(line.as_bytes()).unwrap();
        prop_assert_eq!(f.uid.as_ref(), reference["uid"].as_str().unwrap().as_bytes());
        prop_assert_eq!(f.uid.as_ref(), uid.as_bytes());
        prop_assert_eq!(f.ts, ts);
        for cut in (1..line.len()).step_by(7) {
            prop_assert_eq!(parse_frame(&line.as_bytes()[..cut]), Err(ParseError::Truncated));
        }
    }

    #[test]
    fn simd_and_scalar_agree_on_damaged_frames((line, _, _) in frame(), edits in damage()) {
        let mut line = line.into_bytes();
        agree(&line)?;
        apply(&mut line, &edits);
        agree(&line)?;
    }

    #[test]
    fn simd_and_scalar_agree_under_other_names_and_units(
        (line, _, _) in frame(),
        edits in damage(),
        spec in other_spec(),
        rename in any::<bool>(),
    ) {
        // The frame's own keys renamed to the spec's, or left as decoys.
        let line = if rename {
            line.replacen("\"uid\":", &format!("{}:", Value::from(spec.uid_field())), 1)
                .replacen("\"ts\":", &format!("{}:", Value::from(spec.ts_field())), 1)
        } else {
            line
        };
        let mut line = line.into_bytes();
        agree_with(&line, &spec)?;
        apply(&mut line, &edits);
        agree_with(&line, &spec)?;
    }

    #[test]
    fn avx2_and_sse2_classify_alike(block in prop::collection::vec(any::<u8>(), 64)) {
        if !simd::has_avx2() {
            skipped("avx2_and_sse2_classify_alike", "AVX2 (with PCLMULQDQ, BMI1, BMI2, POPCNT)", "AVX2");
        } else {
            let block: &[u8; 64] = block.as_slice().try_into().unwrap();
            // SAFETY: the features were just detected; SSE2 is baseline.
            let (a, s) = unsafe { (classify_avx2(block), Sse2::classify(block)) };
            // The AVX2 operator table also takes the control characters 0x0C and
            // 0x1A, which are errors anyway.
            prop_assert_eq!(a.op & !a.ctrl, s.op & !s.ctrl);
            prop_assert_eq!(
                (a.quote, a.backslash, a.ws, a.ctrl, a.bit0, a.bit1, a.bit6),
                (s.quote, s.backslash, s.ws, s.ctrl, s.bit0, s.bit1, s.bit6)
            );
            prop_assert_eq!(
                (a.digit, a.zero, a.punct, a.escape, a.hex, a.key_start),
                (s.digit, s.zero, s.punct, s.escape, s.hex, s.key_start)
            );
        }
    }

    #[test]
    fn avx512_and_sse2_classify_alike(block in prop::collection::vec(any::<u8>(), 64)) {
        if !simd::has_avx512() {
            skipped("avx512_and_sse2_classify_alike", "AVX-512 BW", "AVX-512");
        } else {
            let block: &[u8; 64] = block.as_slice().try_into().unwrap();
            // SAFETY: the features were just detected; SSE2 is baseline.
            let (a, s) = unsafe { (classify_avx512(block), Sse2::classify(block)) };
            // As AVX2's, the AVX-512 operator table also takes 0x0C and 0x1A.
            prop_assert_eq!(a.op & !a.ctrl, s.op & !s.ctrl);
            prop_assert_eq!(
                (a.quote, a.backslash, a.ws, a.ctrl, a.bit0, a.bit1, a.bit6),
                (s.quote, s.backslash, s.ws, s.ctrl, s.bit0, s.bit1, s.bit6)
            );
            prop_assert_eq!(
                (a.digit, a.zero, a.punct, a.escape, a.hex, a.key_start),
                (s.digit, s.zero, s.punct, s.escape, s.hex, s.key_start)
            );
        }
    }

    /// UTF-8 sequences and numbers, valid or not, around the ends of blocks, where
    /// the AVX-512 path looks at the neighbouring block.
    #[test]
    fn paths_agree_on_utf8_and_numbers_around_block_ends(
        pad in 0usize..140,
        pieces in prop::collection::vec(0..PIECES.len(), 1..5),
        quoted in any::<bool>(),
        close in any::<bool>(),
    ) {
        let mut line = br#"{"uid":"x","ts":1,"a":"#.to_vec();
        line.extend(std::iter::repeat_n(b' ', pad));
        if quoted {
            line.push(b'"');
        }
        for &p in &pieces {
            line.extend_from_slice(PIECES[p]);
        }
        if quoted {
            line.push(b'"');
        }
        if close {
            line.push(b'}');
        }
        agree(&line)?;
    }

    #[test]
    fn simd_and_scalar_agree_on_any_bytes(body in prop::collection::vec(any::<u8>(), 0..200)) {
        agree(&body)?;
        agree(&[b"{\"", &body[..]].concat())?;
    }
}

/// Bits of numbers and of UTF-8, good and bad, to put together.
const PIECES: &[&[u8]] = &[
    b"0",
    b"7",
    b"-",
    b"+",
    b".",
    b"e",
    b"E",
    b"12",
    b"0.5",
    b"-0",
    b"1e-05",
    b"2E+3",
    b"00",
    b"1.2.3",
    b"1e5e",
    b"1e5.2",
    b"-.5",
    b"1.",
    b"e5",
    b"\xc3\xa9",
    b"\xe2\x82\xac",
    b"\xf0\x9f\x98\x80",
    b"\xf4\x8f\xbf\xbf",
    b"\x80",
    b"\xc0\x80",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\xf5",
    b"\xc3",
    b"\xe2\x82",
    b"\xf0\x9f\x98",
    b"\\u00e9",
    b"\\u12",
    b",",
    b" ",
];

/// # Safety
///
/// The CPU must have the features of `simd::has_avx512`.
#[target_feature(enable = "avx512f,avx512bw,avx2,pclmulqdq,bmi1,bmi2,popcnt")]
unsafe fn classify_avx512(block: &[u8; 64]) -> Masks {
    // SAFETY: the caller guarantees the CPU has AVX-512's features.
    unsafe { Avx512::classify(block) }
}

/// # Safety
///
/// The CPU must have the features of `simd::has_avx2`.
#[target_feature(enable = "avx2,pclmulqdq,bmi1,bmi2,popcnt")]
unsafe fn classify_avx2(block: &[u8; 64]) -> Masks {
    // SAFETY: the caller guarantees the CPU has AVX2's features.
    unsafe { Avx2::classify(block) }
}
