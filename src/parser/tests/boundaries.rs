//! Regression tests at the fast path's boundaries, run on every path this CPU has
//! (scalar, SSE2, AVX2, AVX-512; a missing one is reported as SKIPPED) and
//! compared with serde_json's verdict: a root key at every offset across a
//! window (32 blocks, 2048 bytes) and past it, more root keys than a batch holds
//! (192, the check's threshold, with room for 256), literals and numbers in the
//! last 128 bytes (where blocks are read from the padded copy), and every frame
//! length from 1 to 300.

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

use super::super::*;
use super::paths::fast_paths;

/// serde_json's verdict on a line, in the parser's terms.
#[derive(Debug, Clone, PartialEq)]
enum Verdict {
    /// Not one valid JSON object.
    Invalid,
    /// A valid object whose root has a key of `spec` more than once.
    Duplicate,
    /// A valid object with one uid, a non-empty string, and one ts, an integer
    /// in range (the only kinds of value these tests put there).
    Counted(Vec<u8>, i64),
    /// A valid object the frame rules reject otherwise (missing or bad field).
    Rejected,
}

/// The root's keys and values, in order, duplicates kept.
struct Root(Vec<(String, Value)>);

impl<'de> de::Deserialize<'de> for Root {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Root, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Root;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Root, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    entries.push(entry);
                }
                Ok(Root(entries))
            }
        }
        d.deserialize_map(V)
    }
}

fn verdict(line: &[u8], spec: &FrameSpec) -> Verdict {
    // Ignoring values, serde_json does not check UTF-8 inside strings.
    if std::str::from_utf8(line).is_err() || serde_json::from_slice::<IgnoredAny>(line).is_err() {
        return Verdict::Invalid;
    }
    let Ok(Root(entries)) = serde_json::from_slice::<Root>(line) else {
        return Verdict::Invalid;
    };
    let named = |name: &str| -> Vec<&Value> {
        entries
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v)
            .collect()
    };
    let (uids, tss) = (named(spec.uid_field()), named(spec.ts_field()));
    if uids.len() > 1 || tss.len() > 1 {
        return Verdict::Duplicate;
    }
    let uid = uids
        .first()
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty());
    let ts = tss
        .first()
        .and_then(|v| v.as_u64())
        .filter(|&t| t <= spec.unit().max_value() as u64);
    match (uid, ts) {
        (Some(uid), Some(ts)) => Verdict::Counted(
            uid.as_bytes().to_vec(),
            ts as i64 / spec.unit().per_second(),
        ),
        _ => Verdict::Rejected,
    }
}

/// Every path gives serde_json's verdict on `line`; the fast paths answer for
/// every valid object without a duplicate root key, and for nothing else.
fn check(test: &str, line: &[u8], spec: &FrameSpec) {
    let want = verdict(line, spec);
    let shown = || String::from_utf8_lossy(line).into_owned();
    let scalar = scalar::parse(line, spec);
    let scalar_ok = match (&want, &scalar) {
        (Verdict::Counted(uid, ts), Ok(f)) => f.uid.as_ref() == &uid[..] && f.ts == *ts,
        (Verdict::Duplicate, Err(ParseError::DuplicateKey(_))) => true,
        (
            Verdict::Invalid,
            Err(
                ParseError::Empty
                | ParseError::NotAnObject(_)
                | ParseError::Truncated
                | ParseError::Malformed(_),
            ),
        ) => true,
        (
            Verdict::Rejected,
            Err(
                ParseError::MissingUid
                | ParseError::MissingTs
                | ParseError::UidNotString
                | ParseError::EmptyUid
                | ParseError::BadTs,
            ),
        ) => true,
        _ => false,
    };
    assert!(
        scalar_ok,
        "scalar: {scalar:?}, serde_json: {want:?}, on {}",
        shown()
    );
    for (name, path) in fast_paths(test) {
        // SAFETY: `fast_paths` lists only the paths whose features it detected.
        let got = unsafe { path(line, spec) };
        let ok = match (&want, &got) {
            (Verdict::Invalid | Verdict::Duplicate, None) => true,
            (Verdict::Counted(..) | Verdict::Rejected, Some(got)) => *got == scalar,
            _ => false,
        };
        assert!(
            ok,
            "{name}: {got:?}, serde_json: {want:?}, scalar: {scalar:?}, on {}",
            shown()
        );
    }
    assert_eq!(parse_frame_with(line, spec), scalar, "{}", shown());
}

/// Root keys whose opening quote is at every offset from 1 to past the end of
/// the first window (and of the second block of the next), each a uid, a ts, a
/// uid spelled with an escape, a key that only begins like one, or a second uid.
#[test]
fn a_root_key_at_every_offset_across_a_window() {
    let test = "a_root_key_at_every_offset_across_a_window";
    let other = FrameSpec::new("uid", "time", TsUnit::Seconds).unwrap();
    for at in 1..=2048 + 130 {
        let pad = " ".repeat(at - 1);
        for (line, spec) in [
            (format!(r#"{{{pad}"uid":"x","ts":5}}"#), &FrameSpec::DEFAULT),
            (format!(r#"{{{pad}"ts":5,"uid":"x"}}"#), &FrameSpec::DEFAULT),
            (
                format!(r#"{{{pad}"\u0075id":"x","ts":5}}"#),
                &FrameSpec::DEFAULT,
            ),
            (
                format!(r#"{{{pad}"uix":"y","uid":"x","ts":5}}"#),
                &FrameSpec::DEFAULT,
            ),
            (
                format!(r#"{{{pad}"tsx":"y","uid":"x","ts":5}}"#),
                &FrameSpec::DEFAULT,
            ),
            (format!(r#"{{{pad}"time":5,"uid":"x"}}"#), &other),
            (format!(r#"{{{pad}"ts":5,"uid":"x","time":6}}"#), &other),
        ] {
            check(test, line.as_bytes(), spec);
        }
        // The key at `at` in a frame that goes on, and the second uid there.
        let tail = " ".repeat(200);
        for line in [
            format!(r#"{{{pad}"uid":"x","ts":5,"z":"{tail}"}}"#),
            format!(
                r#"{{"uid":"a","ts":5,"p":"{}","uid":"x"}}"#,
                " ".repeat(at.saturating_sub(23))
            ),
            format!(r#"{{"ts":5,"uid":"a",{pad}"ts":6,"z":"{tail}"}}"#),
        ] {
            check(test, line.as_bytes(), &FrameSpec::DEFAULT);
        }
    }
}

/// Keys the fast path lists wait in a batch of up to 256, checked once more than
/// 192 wait: frames with around those numbers of listed root keys (beginning `u`
/// or `t`, or any key under other names), the uid or a second uid last.
#[test]
fn more_root_keys_than_a_batch() {
    let test = "more_root_keys_than_a_batch";
    let named = FrameSpec::new("user", "time", TsUnit::Seconds).unwrap();
    for n in [
        1, 63, 64, 65, 191, 192, 193, 194, 255, 256, 257, 383, 384, 385, 1000,
    ] {
        for (spec, k, uid, ts) in [
            (&FrameSpec::DEFAULT, "u", "uid", "ts"),
            (&FrameSpec::DEFAULT, "t", "uid", "ts"),
            (&named, "k", "user", "time"),
        ] {
            let keys: String = (0..n).map(|i| format!(r#""{k}{i}":{i},"#)).collect();
            let short: String = (0..n).map(|_| format!(r#""{k}":0,"#)).collect();
            for line in [
                format!(r#"{{{keys}"{uid}":"x","{ts}":7}}"#),
                format!(r#"{{"{ts}":7,{keys}"{uid}":"x"}}"#),
                format!(r#"{{"{uid}":"a","{ts}":7,{keys}"{uid}":"x"}}"#),
                format!(r#"{{"{uid}":"a",{short}"{ts}":7}}"#),
                format!(r#"{{"{uid}":"a",{short}"{ts}":7,"{ts}":8}}"#),
            ] {
                check(test, line.as_bytes(), spec);
            }
        }
    }
}

/// `true`, `false`, `null` and numbers, good and bad, at every distance up to
/// 130 bytes from the end of the frame and every offset in a block: the fast path
/// reads them from the padded copy of the line's last 128 bytes there.
#[test]
fn literals_and_numbers_in_the_last_128_bytes() {
    let test = "literals_and_numbers_in_the_last_128_bytes";
    let values = [
        "true",
        "false",
        "null",
        "tru",
        "nul",
        "fals",
        "truex",
        "nulll",
        "0",
        "-0",
        "-1.5e+3",
        "01",
        "1.",
        "-",
        "1e",
        "123456789012345678901234",
    ];
    for value in values {
        for pad in 0..64 {
            for gap in 0..=130 {
                let (pad, gap) = (" ".repeat(pad), " ".repeat(gap));
                for line in [
                    format!(r#"{{"uid":"x","ts":1,"a":{pad}{value}{gap}}}"#),
                    format!(r#"{{"uid":"x","ts":1,"a":[{pad}{value}]{gap}}}"#),
                ] {
                    check(test, line.as_bytes(), &FrameSpec::DEFAULT);
                }
            }
        }
        // The value as the ts, last.
        for gap in 0..=130 {
            let line = format!(r#"{{"uid":"x","ts":{value}{}}}"#, " ".repeat(gap));
            check(test, line.as_bytes(), &FrameSpec::DEFAULT);
        }
    }
}

/// Frames of every length from 1 to 300 bytes: valid ones padded to it with
/// whitespace or a string, and the prefixes of that length of a frame with every
/// kind of value (all invalid but the whole).
#[test]
fn every_frame_length_from_1_to_300() {
    let test = "every_frame_length_from_1_to_300";
    let rich = concat!(
        r#"{"uid":"u\u00e9\"x","a":[1,-2.5e-3,0,true,false,null,{"b":"\\\/"}],"#,
        r#""c":{"uid":"decoy","ts":-1},"d":"é€😀","e":1E+2,"ts":1468244384,"#,
        r#""f":[[[]]],"g":{},"h":"\ud83d\ude00","i":12345678901234567890,"#,
        r#""j":"                                                            ","#,
        r#""k":[true ,false ,null ],"l":"\t\n\r\b\f","m":0.5}"#
    );
    let rich = format!("{rich}{}", " ".repeat(300usize.saturating_sub(rich.len())));
    assert!(rich.len() >= 300);
    for len in 1..=300 {
        check(test, &rich.as_bytes()[..len], &FrameSpec::DEFAULT);
        let minimal = r#"{"uid":"x","ts":1}"#.len();
        if len >= minimal {
            let extra = len - minimal;
            for line in [
                format!(r#"{{"uid":"x","ts":1{}}}"#, " ".repeat(extra)),
                format!(r#"{}{{"uid":"x","ts":1}}"#, " ".repeat(extra)),
                format!(r#"{{"uid":"{}","ts":1}}"#, "x".repeat(extra + 1)),
                format!(r#"{{"uid":"x","ts":{}}}"#, "1".repeat(extra + 1)),
            ] {
                assert_eq!(line.len(), len);
                check(test, line.as_bytes(), &FrameSpec::DEFAULT);
            }
        }
        // Damaged at the end: the last byte dropped, doubled, or replaced.
        let base = format!(
            r#"{{"uid":"x","ts":1{}}}"#,
            " ".repeat(len.saturating_sub(18))
        );
        let b = base.as_bytes();
        check(test, &b[..b.len() - 1], &FrameSpec::DEFAULT);
        check(test, &[b, b"}"].concat(), &FrameSpec::DEFAULT);
        check(
            test,
            &[&b[..b.len() - 1], b"]"].concat(),
            &FrameSpec::DEFAULT,
        );
    }
}
