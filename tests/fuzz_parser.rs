//! Differential fuzz test of the frame parser, with serde_json as the reference.
//!
//! A frame must be accepted exactly when serde_json reads the line as one JSON
//! object whose root has exactly one `uid` key, a non-empty string, and exactly
//! one `ts` key, a JSON integer 0..=MAX_TS (no sign, fraction or exponent) or a
//! string of 1 to 12 ASCII digits at most MAX_TS; and then the uid bytes and ts
//! must be the same. Rejections are checked too: the reason must be the one the
//! reference implies, and `malformed` at byte n must be exact: the first n bytes
//! can still begin a valid JSON text, the first n + 1 cannot. Every answer of the
//! fast path must also equal the scalar parser's (`parse_frame_scalar`).
//!
//! How the reference is built, around serde_json's quirks:
//! - JSON validity is `from_slice::<IgnoredAny>` plus `std::str::from_utf8` on the
//!   whole line: ignoring values, serde_json does not check UTF-8 inside strings,
//!   but it does accept escaped lone surrogates and out-of-range numbers (`1E400`),
//!   both valid JSON, which deserializing a `serde_json::Value` refuses.
//! - The root is read with a visitor that keeps every key in order, as bytes
//!   (serde_json decodes lone surrogates to WTF-8 when asked for bytes, as
//!   Cardinal does), since a `Value` map keeps only the last of duplicate keys.
//!   The `uid` and `ts` values are read as bytes when they are strings, else as
//!   any value; a number out of f64's range read as any value fails, and is then
//!   a bad `ts` or a non-string `uid` anyway.
//! - At the end of input inside a number (`1.`, `1e+`, `-`), serde_json reports a
//!   syntax error rather than end of input; a prefix is taken as viable when it,
//!   or it followed by `0`, ends in an end-of-input error. Conversely, after `\u`
//!   with fewer than four bytes left it reports end of input without looking at
//!   them, so those are checked to be hex digits here.
//! - serde_json stops at 128 levels of nesting; such lines are skipped.
//!
//! Inputs: arbitrary bytes, small random JSON documents, and frames from
//! `cardinal::generator` (valid, malformed, bit-flipped), most of them damaged:
//! truncation, byte and bit flips, bracket swaps, escapes valid and invalid,
//! invalid UTF-8 (overlongs, encoded surrogates, cut sequences, 0xFF), control
//! bytes, duplicate root keys, commas removed or added, leading zeros, literals.
//!
//! The default run is small enough for `cargo test` in debug mode. A long run:
//!
//! ```text
//! CARDINAL_FUZZ_CASES=3000000 CARDINAL_FUZZ_SEED=7 \
//!     cargo test --release --test fuzz_parser -- --nocapture
//! ```

use std::collections::BTreeMap;
use std::fmt;

use cardinal::generator::{FrameGen, GenConfig};
use cardinal::parser::{MAX_TS, ParseError, parse_frame, parse_frame_scalar};
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

const DEFAULT_CASES: u64 = 30_000;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------
// The reference.

/// What serde_json says about a whole line.
enum Reference {
    /// Not a JSON text (or not UTF-8).
    Invalid,
    /// Nested too deep for serde_json to tell.
    Unknown,
    /// A JSON text that is not an object.
    NotObject,
    /// A JSON object: its root keys in order, with what `uid` and `ts` hold; or
    /// `None` if a `uid` or `ts` value could not be read (see the module docs).
    Object(Option<Vec<(Vec<u8>, Field)>>),
}

#[derive(Debug, Clone, PartialEq)]
enum Field {
    Str(Vec<u8>),
    U64(u64),
    /// Any other value of a `uid` or `ts` key.
    Value,
    /// The value of another key, not looked at.
    Skipped,
}

#[derive(Clone, Copy)]
enum Mode {
    Bytes,
    Any,
}

struct RootSeed {
    uid: Mode,
    ts: Mode,
}

impl<'de> DeserializeSeed<'de> for RootSeed {
    type Value = Vec<(Vec<u8>, Field)>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RootSeed {
    type Value = Vec<(Vec<u8>, Field)>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut keys = Vec::new();
        while let Some(key) = map.next_key_seed(BytesSeed)? {
            let field = match key.as_slice() {
                b"uid" => map.next_value_seed(FieldSeed(self.uid))?,
                b"ts" => map.next_value_seed(FieldSeed(self.ts))?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    Field::Skipped
                }
            };
            keys.push((key, field));
        }
        Ok(keys)
    }
}

struct BytesSeed;

impl<'de> DeserializeSeed<'de> for BytesSeed {
    type Value = Vec<u8>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_bytes(self)
    }
}

impl<'de> Visitor<'de> for BytesSeed {
    type Value = Vec<u8>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
        Ok(v.to_vec())
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
        Ok(v.as_bytes().to_vec())
    }
}

struct FieldSeed(Mode);

impl<'de> DeserializeSeed<'de> for FieldSeed {
    type Value = Field;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Field, D::Error> {
        match self.0 {
            Mode::Bytes => d.deserialize_bytes(FieldVisitor),
            Mode::Any => d.deserialize_any(FieldVisitor),
        }
    }
}

struct FieldVisitor;

impl<'de> Visitor<'de> for FieldVisitor {
    type Value = Field;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any value")
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Field, E> {
        Ok(Field::Str(v.to_vec()))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Field, E> {
        Ok(Field::Str(v.as_bytes().to_vec()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Field, E> {
        Ok(Field::U64(v))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Field, E> {
        Ok(Field::Value)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Field, E> {
        Ok(Field::Value)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Field, E> {
        Ok(Field::Value)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Field, E> {
        Ok(Field::Value)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Field, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Field::Value)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Field, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Field::Value)
    }
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn reference(line: &[u8]) -> Reference {
    if let Err(e) = serde_json::from_slice::<IgnoredAny>(line) {
        if e.to_string().contains("recursion limit") {
            return Reference::Unknown;
        }
        return Reference::Invalid;
    }
    if std::str::from_utf8(line).is_err() {
        return Reference::Invalid;
    }
    if line.iter().find(|&&b| !is_ws(b)) != Some(&b'{') {
        return Reference::NotObject;
    }
    for (uid, ts) in [
        (Mode::Bytes, Mode::Bytes),
        (Mode::Bytes, Mode::Any),
        (Mode::Any, Mode::Bytes),
        (Mode::Any, Mode::Any),
    ] {
        let mut de = serde_json::Deserializer::from_slice(line);
        if let Ok(keys) = (RootSeed { uid, ts }).deserialize(&mut de) {
            return Reference::Object(Some(keys));
        }
    }
    Reference::Object(None)
}

/// What Cardinal must answer for a valid JSON object.
fn expected(keys: &[(Vec<u8>, Field)]) -> Result<(Vec<u8>, i64), ParseError> {
    let uids: Vec<&Field> = keys
        .iter()
        .filter(|(k, _)| k == b"uid")
        .map(|(_, v)| v)
        .collect();
    let tss: Vec<&Field> = keys
        .iter()
        .filter(|(k, _)| k == b"ts")
        .map(|(_, v)| v)
        .collect();
    if uids.len() > 1 || tss.len() > 1 {
        // Which of the two is named depends on which repeats first.
        return Err(ParseError::DuplicateKey("?"));
    }
    let uid = match uids.first() {
        None => return Err(ParseError::MissingUid),
        Some(Field::Str(s)) if s.is_empty() => return Err(ParseError::EmptyUid),
        Some(Field::Str(s)) => s.clone(),
        Some(_) => return Err(ParseError::UidNotString),
    };
    let ts = match tss.first() {
        None => return Err(ParseError::MissingTs),
        Some(Field::U64(v)) if *v <= MAX_TS as u64 => *v as i64,
        Some(Field::Str(s)) if (1..=12).contains(&s.len()) && s.iter().all(u8::is_ascii_digit) => {
            let v: i64 = std::str::from_utf8(s).unwrap().parse().unwrap();
            if v > MAX_TS {
                return Err(ParseError::BadTs);
            }
            v
        }
        Some(_) => return Err(ParseError::BadTs),
    };
    Ok((uid, ts))
}

/// Could `p` still begin a valid JSON text?
fn viable(p: &[u8]) -> bool {
    let utf8 = match std::str::from_utf8(p) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none(),
    };
    let eofish = |p: &[u8]| match serde_json::from_slice::<IgnoredAny>(p) {
        Ok(_) => true,
        Err(e) => e.is_eof(),
    };
    utf8 && (eofish(p) || eofish(&[p, b"0"].concat())) && partial_escape_ok(p)
}

/// serde_json reports end of input after `\u` when fewer than four bytes are
/// left, hex digits or not: those bytes must be hex digits.
fn partial_escape_ok(p: &[u8]) -> bool {
    (0..4).all(|k| {
        let Some(u) = p.len().checked_sub(k + 1) else {
            return true;
        };
        let backslashes = p[..u].iter().rev().take_while(|&&b| b == b'\\').count();
        !(p[u] == b'u' && backslashes % 2 == 1) || p[u + 1..].iter().all(u8::is_ascii_hexdigit)
    })
}

// ---------------------------------------------------------------------------
// The check.

#[derive(Default)]
struct Stats {
    cases: u64,
    outcomes: BTreeMap<&'static str, u64>,
    skipped_deep: u64,
}

fn check(line: &[u8], stats: &mut Stats) {
    stats.cases += 1;
    let got = parse_frame(line);
    let scalar = parse_frame_scalar(line);
    assert_eq!(
        got,
        scalar,
        "fast and scalar paths disagree on {}",
        show(line)
    );
    *stats
        .outcomes
        .entry(got.as_ref().map_or_else(ParseError::reason, |_| "accepted"))
        .or_default() += 1;
    let got = got.map(|f| (f.uid.into_owned(), f.ts));
    match reference(line) {
        Reference::Unknown => stats.skipped_deep += 1,
        Reference::Invalid => {
            let first = line.iter().position(|&b| !is_ws(b));
            match got {
                Err(ParseError::Empty) => assert!(first.is_none(), "{}", show(line)),
                Err(ParseError::NotAnObject(_)) => {
                    assert!(first.is_some_and(|i| line[i] != b'{'), "{}", show(line))
                }
                Err(ParseError::Truncated) => {
                    assert_eq!(first.map(|i| line[i]), Some(b'{'), "{}", show(line));
                    assert!(viable(line), "not a prefix of JSON: {}", show(line));
                }
                Err(ParseError::Malformed(at)) => {
                    assert_eq!(first.map(|i| line[i]), Some(b'{'), "{}", show(line));
                    assert!(at < line.len(), "{at}: {}", show(line));
                    assert!(viable(&line[..at]), "error before {at}: {}", show(line));
                    assert!(!viable(&line[..=at]), "no error at {at}: {}", show(line));
                }
                other => panic!("invalid JSON, got {other:?}: {}", show(line)),
            }
        }
        Reference::NotObject => {
            assert!(
                matches!(got, Err(ParseError::NotAnObject(_))),
                "{got:?}: {}",
                show(line)
            )
        }
        // A uid or ts value serde_json cannot read either way: a number beyond
        // f64's range (or two such keys), never a frame to count.
        Reference::Object(None) => assert!(
            matches!(
                got,
                Err(ParseError::DuplicateKey(_)
                    | ParseError::MissingUid
                    | ParseError::UidNotString
                    | ParseError::EmptyUid
                    | ParseError::BadTs)
            ),
            "{got:?}: {}",
            show(line)
        ),
        Reference::Object(Some(keys)) => match (expected(&keys), got) {
            (Err(ParseError::DuplicateKey(_)), Err(ParseError::DuplicateKey(k))) => {
                assert!(k == "uid" || k == "ts")
            }
            (want, got) => assert_eq!(got, want, "{}", show(line)),
        },
    }
}

fn show(line: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(line))
        .chars()
        .take(3000)
        .collect::<String>()
        + &format!(" (bytes {:x?})", &line[..line.len().min(400)])
}

// ---------------------------------------------------------------------------
// Inputs.

/// Valid spellings to splice into strings, and invalid ones.
const ESCAPES: &[&[u8]] = &[
    br"\n",
    br#"\""#,
    br"\\",
    br"\/",
    br"\b\f\r\t",
    br"\u00e9",
    br"\u0000",
    br"\ud800",
    br"\udbff",
    br"\udc00",
    br"\ud83d\ude00",
    br"\ud800\ud800",
    br"\uFFFD",
    br"\q",
    br"\x41",
    br"\u12",
    br"\u12G4",
    br"\U0041",
    br"\u+123",
    br"\",
    br"\'",
];

const BAD_UTF8: &[&[u8]] = &[
    b"\xc0\x80",
    b"\xc1\xbf",
    b"\xe0\x80\x80",
    b"\xe0\x9f\xbf",
    b"\xf0\x80\x80\x80",
    b"\xf0\x8f\xbf\xbf",
    b"\xed\xa0\x80",
    b"\xed\xbf\xbf",
    b"\xf4\x90\x80\x80",
    b"\xf5\x80\x80\x80",
    b"\xe2\x82",
    b"\xf0\x9f\x98",
    b"\xc3",
    b"\xff",
    b"\xfe",
    b"\x80",
    b"\xbf",
];

const GOOD_UTF8: &[&[u8]] = &[
    "é".as_bytes(),
    "日".as_bytes(),
    "😀".as_bytes(),
    "\u{10ffff}".as_bytes(),
];

const TOKENS: &[&[u8]] = &[
    b"true",
    b"false",
    b"null",
    b"tru",
    b"nul",
    b"NaN",
    b"-0",
    b"0",
    b"01",
    b"1e5",
    b"1.5",
    b"1.",
    b"-",
    b"1e",
    b"1e+",
    b"1.2.3",
    b"+1",
    b".5",
    b"1E400",
    b"-1",
    b"253402300799",
    b"253402300800",
    b"{}",
    b"[]",
    b"[1}",
    b"{1:2}",
    b"\"\"",
    b"\"x\"",
    b"[1,,2]",
    b"[1,]",
    b"{\"a\"}",
    b"{\"a\":1,}",
];

/// Valid scalars.
const SCALARS: &[&[u8]] = &[
    b"true",
    b"false",
    b"null",
    b"-0",
    b"0",
    b"1e5",
    b"1.5",
    b"-1",
    b"1E400",
    b"253402300799",
    b"253402300800",
    b"12345678901234567890123",
];

/// Pieces of root members to splice in, duplicates of uid and ts among them.
const MEMBERS: &[&[u8]] = &[
    br#""uid":"dup","#,
    br#""ts":1,"#,
    br#""\u0075id":"dup","#,
    br#""t\u0073":"1","#,
    br#""uid":"#,
    br#""other":[1,{"uid":2}],"#,
    br#""ts":"0146","#,
    br#""ts":01468244404,"#,
    br#""uid":"\ud800","#,
    b",",
    b":",
];

fn pick<'a>(rng: &mut Pcg64Mcg, from: &[&'a [u8]]) -> &'a [u8] {
    from[rng.random_range(0..from.len())]
}

/// A position in `line`, preferring the interesting bytes now and then.
fn position(rng: &mut Pcg64Mcg, line: &[u8]) -> usize {
    if line.is_empty() {
        return 0;
    }
    if rng.random_bool(0.5) {
        let at = rng.random_range(0..line.len());
        let want: &[u8] = match rng.random_range(0..4) {
            0 => b"\"",
            1 => b",",
            2 => b"{[",
            _ => b"0123456789",
        };
        if let Some(i) = line[at..].iter().position(|b| want.contains(b)) {
            return at + i;
        }
    }
    rng.random_range(0..=line.len())
}

fn mutate(rng: &mut Pcg64Mcg, line: &mut Vec<u8>) {
    let at = position(rng, line);
    let insert = |line: &mut Vec<u8>, bytes: &[u8]| {
        line.splice(at..at, bytes.iter().copied());
    };
    match rng.random_range(0..16) {
        0 => line.truncate(at),
        1 if at < line.len() => line[at] ^= 1 << rng.random_range(0..8),
        2 if at < line.len() => line[at] = rng.random(),
        3 if at < line.len() => {
            line[at] = match line[at] {
                b'{' => b'[',
                b'[' => b'{',
                b'}' => b']',
                b']' => b'}',
                b => b,
            }
        }
        4 => insert(line, pick(rng, ESCAPES)),
        5 => insert(line, pick(rng, BAD_UTF8)),
        6 => insert(line, pick(rng, GOOD_UTF8)),
        7 => insert(
            line,
            &[[0u8, 9, 10, 13, 0x1f, 0x7f, 0x0c][rng.random_range(0..7)]],
        ),
        8 => {
            // A member right after the root's `{`.
            let open = line.iter().position(|&b| b == b'{').map_or(0, |i| i + 1);
            line.splice(open..open, pick(rng, MEMBERS).iter().copied());
        }
        9 => insert(line, pick(rng, MEMBERS)),
        10 => {
            if let Some(i) = line[at..].iter().position(|&b| b == b',') {
                line.remove(at + i);
            }
        }
        11 => insert(line, b","),
        12 => {
            if let Some(i) = line[at..].iter().position(u8::is_ascii_digit) {
                line.insert(at + i, b'0');
            }
        }
        13 => insert(line, pick(rng, TOKENS)),
        14 if at < line.len() => {
            line.remove(at);
        }
        _ => insert(line, &[b" \t\r\n"[rng.random_range(0..4)]]),
    }
}

/// A small random JSON document (object at the root, mostly).
fn small_doc(rng: &mut Pcg64Mcg, depth: u32, out: &mut Vec<u8>) {
    let pick_key = |rng: &mut Pcg64Mcg| -> &'static [u8] {
        [
            &b"\"uid\""[..],
            b"\"ts\"",
            b"\"a\"",
            b"\"\"",
            b"\"\\u0075id\"",
            b"\"k\\\"\"",
        ][rng.random_range(0..6)]
    };
    let kind = if depth == 0 {
        0
    } else {
        rng.random_range(0..6)
    };
    match kind {
        0 | 1 if depth < 5 => {
            out.push(b'{');
            for i in 0..rng.random_range(0..4) {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(pick_key(rng));
                out.push(b':');
                small_doc(rng, depth + 1, out);
            }
            out.push(b'}');
        }
        2 if depth < 5 => {
            out.push(b'[');
            for i in 0..rng.random_range(0..4) {
                if i > 0 {
                    out.push(b',');
                }
                small_doc(rng, depth + 1, out);
            }
            out.push(b']');
        }
        3 => {
            out.push(b'"');
            for _ in 0..rng.random_range(0..4) {
                let piece: &[u8] = match rng.random_range(0..3) {
                    0 => pick(rng, &ESCAPES[..13]),
                    1 => pick(rng, GOOD_UTF8),
                    _ => b"ab1",
                };
                out.extend_from_slice(piece);
            }
            out.push(b'"');
        }
        _ => out.extend_from_slice(pick(rng, SCALARS)),
    }
}

fn run(cases: u64, seed: u64) -> Stats {
    let mut rng = Pcg64Mcg::seed_from_u64(seed);
    let mut stats = Stats::default();
    let cfg = GenConfig {
        frames: u64::MAX,
        seed,
        string_ts: 0.2,
        malformed: 0.1,
        bitflips: 0.02,
        ..GenConfig::default()
    };
    let mut frames = FrameGen::new(&cfg);
    for i in 0..cases {
        let mut line = match i % 8 {
            // Arbitrary bytes, sometimes behind the start of an object.
            0 => {
                let len = rng.random_range(0..48);
                let mut b: Vec<u8> = (0..len).map(|_| rng.random()).collect();
                if rng.random_bool(0.5) {
                    b.splice(0..0, *b"{\"");
                }
                b
            }
            // Small documents, half of them with root uid and ts.
            1 | 2 => {
                let mut d = Vec::new();
                small_doc(&mut rng, 0, &mut d);
                if rng.random_bool(0.5) && d.len() > 1 {
                    let ts: u64 = rng.random_range(0..=MAX_TS as u64 + 1);
                    let m = format!(
                        r#""uid":"u{}","ts":{ts}{}"#,
                        rng.random::<u8>(),
                        if d.len() > 2 { "," } else { "" }
                    );
                    d.splice(1..1, m.into_bytes());
                }
                d
            }
            // Generated frames.
            _ => frames.next().expect("endless").line,
        };
        let damage = match i % 8 {
            0 => 0,
            3 => 0,
            _ => rng.random_range(0..4),
        };
        for _ in 0..damage {
            mutate(&mut rng, &mut line);
        }
        check(&line, &mut stats);
    }
    stats
}

#[test]
fn parser_agrees_with_serde_json() {
    let cases = env_u64("CARDINAL_FUZZ_CASES", DEFAULT_CASES);
    let seed = env_u64("CARDINAL_FUZZ_SEED", 20_260_707);
    let start = std::time::Instant::now();
    let stats = run(cases, seed);
    eprintln!(
        "fuzz_parser: {} cases (seed {seed}) in {:.1?}; skipped (too deep for serde_json) {}; outcomes {:?}",
        stats.cases,
        start.elapsed(),
        stats.skipped_deep,
        stats.outcomes
    );
    // The inputs must exercise both sides.
    assert!(stats.outcomes.get("accepted").copied().unwrap_or(0) > cases / 10);
    assert!(stats.outcomes.get("malformed").copied().unwrap_or(0) > cases / 10);
}
