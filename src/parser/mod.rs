//! Frame parser: validates one JSON frame and pulls out its root-level `uid` and `ts`.
//!
//! # What is accepted
//!
//! A frame is counted only if the whole line is one JSON object as RFC 8259 defines
//! it, in valid UTF-8, with optional whitespace around it (a trailing `\r` is JSON
//! whitespace). Every byte is validated, nested values included:
//! - UTF-8 everywhere (no overlongs, no encoded surrogates, nothing above U+10FFFF);
//! - the grammar: brackets match (`[1}` is malformed), commas and colons where they
//!   belong (no `[1,,2]`, no trailing `,}` or `,]`, no `{"a"}`), keys are strings
//!   (no `{1:2}`), nothing after the root object;
//! - every string: no raw control characters (U+0000 to U+001F, tab included), and
//!   only the escapes `\" \\ \/ \b \f \n \r \t \uXXXX`;
//! - every number, `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?` (no `01`,
//!   `1.2.3`, `+1`, `NaN`), and every literal (`true`, `false`, `null`).
//!
//! Nesting depth is not limited. Then the root object must have exactly one `uid`
//! key, whose value is a non-empty string, and exactly one `ts` key, whose value is
//! a JSON integer from 0 to [`MAX_TS`] without sign, fraction or exponent (`-0`,
//! `1e5` and `1.5` are valid JSON but a bad `ts`), or a string of 1 to 12 ASCII
//! digits (after unescaping) whose value is at most [`MAX_TS`]. A digit string is
//! decimal text, not a JSON number, so leading zeros are fine there:
//! `"01468244404"` is 1468244404, while the number `01468244404` is malformed JSON.
//!
//! Root keys are compared after unescaping, so `"\u0075id"` is `uid`, and a second
//! root `uid` or `ts`, however spelled, rejects the frame ([`ParseError::DuplicateKey`]).
//!
//! The two key names and the unit of `ts` are a [`FrameSpec`] (`--uid-field`,
//! `--ts-field`, `--ts-unit`): everything above holds for any names, escapes
//! included. In milliseconds or microseconds a `ts` has at most 15 or 18 digits,
//! must lie below the end of [`MAX_TS`]'s second in that unit, and is floored to
//! seconds. The default names keep a fast path of their own (see [`root_keys`]).
//! Other root keys may repeat (RFC 8259 only says they SHOULD be unique), and keys
//! of nested objects are never compared: a nested `"uid"` is just a decoy.
//!
//! # The uid bytes
//!
//! The uid is returned as the bytes of its decoded string: exactly its UTF-8 bytes
//! for every string that is valid Unicode, so that hashing it equals hashing the
//! UTF-8 string (DataSketches compatibility). JSON also admits escaped lone
//! surrogates (`"\ud800"`), which no UTF-8 string can hold. They are decoded into
//! WTF-8: a surrogate that is not half of a `\uD8xx\uDCxx` pair becomes the
//! three-byte generalized UTF-8 form of its code point (U+D800 is `ED A0 80`).
//! Those bytes are never valid UTF-8, so such a uid differs from every valid one,
//! U+FFFD included, and distinct escaped uids stay distinct users. (serde_json
//! decodes lone surrogates the same way when asked for bytes.)
//!
//! # Errors
//!
//! A line that is not a valid JSON text is `empty` (whitespace only),
//! `not_an_object` (its first character is not `{`), `truncated` (it ends while
//! everything so far could still begin a valid frame: inside the object, a string,
//! an escape, a UTF-8 sequence, a number or a literal), or `malformed` at byte `n`:
//! the first `n` bytes could begin a valid frame, byte `n` cannot follow them
//! (for `\q` that is the `q`, for `01` the `1`, for `tru}` the `}`, for an
//! invalid UTF-8 sequence the first byte that cannot continue it). A valid JSON
//! object is then checked for, in this order: `duplicate_key`, `missing_uid`,
//! `uid_not_string`, `empty_uid`, `missing_ts`, `bad_ts`.
//!
//! # How
//!
//! There are two implementations of the same function. [`simd`] (x86_64) is the
//! hot path: it classifies 64-byte blocks into bit masks with AVX-512, AVX2 or
//! SSE2, whichever the CPU has, and checks strings, escapes, control characters,
//! numbers, bracket matching and the token grammar with bit operations on whole
//! blocks, UTF-8 with `simdutf8`.
//! [`scalar`] walks the bytes one at a time; it is the definition, the path on
//! other architectures and for frames nested deeper than 64, and what reports
//! every rejection, so error offsets are exact and come from one place. The fast
//! path answers only for a line it has fully validated; when anything is wrong (or
//! a root key repeats) it hands the line to the scalar parser, so a malformed
//! frame costs both. Both are checked against each other and against serde_json
//! by `tests/fuzz_parser.rs`.
//!
//! Full validation costs throughput: on generated 2 KB frames the fast path runs
//! at about a third of the speed of the earlier parser, which only matched
//! brackets after finding `uid` and `ts` (see `cargo bench --bench parser`).

use std::borrow::Cow;

use thiserror::Error;

// In a module of their own, which `record` also uses, so that `record` need not
// depend on the parser (whose errors `reject` maps, which maps `record`'s too).
pub use crate::ts_unit::{MAX_TS, TsUnit};

#[cfg(target_arch = "x86_64")]
mod classify;
#[cfg(target_arch = "x86_64")]
mod positions;
#[cfg(target_arch = "x86_64")]
mod root_keys;
mod scalar;
#[cfg(target_arch = "x86_64")]
mod simd;
#[cfg(test)]
mod tests;

/// The two root-level fields Cardinal counts by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The `uid` string, unescaped (WTF-8, see the module docs). Borrowed unless it
    /// contained escapes.
    pub uid: Cow<'a, [u8]>,
    /// The `ts` in unix seconds.
    pub ts: i64,
}

/// Where the user id comes from, `run --uid-from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, clap::ValueEnum)]
pub enum UidFrom {
    /// The frame's root uid field (`--uid-field`).
    #[default]
    Json,
    /// The Kafka record's key: non-empty, valid UTF-8.
    Key,
}

/// Where the event time comes from, `run --ts-from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, clap::ValueEnum)]
pub enum TsFrom {
    /// The frame's root ts field (`--ts-field`, in `--ts-unit`).
    #[default]
    Json,
    /// The Kafka record's timestamp (CreateTime or LogAppendTime), always in
    /// milliseconds, floored to seconds.
    RecordTimestamp,
}

impl UidFrom {
    pub const fn name(self) -> &'static str {
        match self {
            UidFrom::Json => "json",
            UidFrom::Key => "key",
        }
    }
}

impl TsFrom {
    pub const fn name(self) -> &'static str {
        match self {
            TsFrom::Json => "json",
            TsFrom::RecordTimestamp => "record-timestamp",
        }
    }
}

/// Which root keys hold the user and the time, and the time's unit: what the
/// parser looks for. The default is `uid`, `ts`, seconds. A field that comes from
/// the Kafka record instead (`--uid-from key`, `--ts-from record-timestamp`) is
/// not looked for: its root key is then just another key, and the [`Frame`] holds
/// an empty uid or a ts of 0 in its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameSpec {
    uid: Cow<'static, [u8]>,
    ts: Cow<'static, [u8]>,
    unit: TsUnit,
    /// `uid` and `ts`: the fast path's byte comparisons apply.
    default_keys: bool,
    uid_from: UidFrom,
    ts_from: TsFrom,
}

impl Default for FrameSpec {
    fn default() -> FrameSpec {
        FrameSpec::DEFAULT
    }
}

/// Why a [`FrameSpec`] cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SpecError {
    #[error("the {0} field name is empty")]
    EmptyName(&'static str),
    #[error("the uid and ts fields are both {0:?}: one key cannot hold both")]
    SameName(String),
}

impl FrameSpec {
    pub const DEFAULT: FrameSpec = FrameSpec {
        uid: Cow::Borrowed(b"uid"),
        ts: Cow::Borrowed(b"ts"),
        unit: TsUnit::Seconds,
        default_keys: true,
        uid_from: UidFrom::Json,
        ts_from: TsFrom::Json,
    };

    /// Root keys `uid` and `ts` (compared with keys after unescaping), `ts` in `unit`.
    pub fn new(uid: &str, ts: &str, unit: TsUnit) -> Result<FrameSpec, SpecError> {
        if uid.is_empty() {
            return Err(SpecError::EmptyName("uid"));
        }
        if ts.is_empty() {
            return Err(SpecError::EmptyName("ts"));
        }
        if uid == ts {
            return Err(SpecError::SameName(uid.to_string()));
        }
        Ok(FrameSpec {
            uid: Cow::Owned(uid.as_bytes().to_vec()),
            ts: Cow::Owned(ts.as_bytes().to_vec()),
            unit,
            default_keys: uid == "uid" && ts == "ts",
            uid_from: UidFrom::Json,
            ts_from: TsFrom::Json,
        })
    }

    /// The same spec, with the uid and the ts taken from where they say.
    pub fn taking(mut self, uid_from: UidFrom, ts_from: TsFrom) -> FrameSpec {
        self.uid_from = uid_from;
        self.ts_from = ts_from;
        self
    }

    pub fn uid_from(&self) -> UidFrom {
        self.uid_from
    }

    pub fn ts_from(&self) -> TsFrom {
        self.ts_from
    }

    /// A root key the frame's JSON must provide, or `Other` if it comes from the record.
    #[inline(always)]
    fn wanted(&self, key: RootKey) -> RootKey {
        match key {
            RootKey::Uid if self.uid_from != UidFrom::Json => RootKey::Other,
            RootKey::Ts if self.ts_from != TsFrom::Json => RootKey::Other,
            key => key,
        }
    }

    /// The uid key's name.
    pub fn uid_field(&self) -> &str {
        std::str::from_utf8(&self.uid).unwrap_or("uid")
    }

    /// The ts key's name.
    pub fn ts_field(&self) -> &str {
        std::str::from_utf8(&self.ts).unwrap_or("ts")
    }

    pub fn unit(&self) -> TsUnit {
        self.unit
    }

    /// The default names and unit.
    pub fn is_default(&self) -> bool {
        self.default_keys && self.unit == TsUnit::Seconds
    }

    /// Whether a root key, as written (escapes included), names the uid or the ts.
    #[inline(always)]
    fn classify(&self, raw: &[u8]) -> RootKey {
        if raw == &*self.uid {
            RootKey::Uid
        } else if raw == &*self.ts {
            RootKey::Ts
        } else if raw.contains(&b'\\') {
            // A key spelled with escapes ("\u0075id") is still "uid". A `\uXXXX`
            // spells at least one byte, so a key more than six times as long as
            // both names cannot be either.
            let longest = self.uid.len().max(self.ts.len()) * 6;
            if raw.len() > longest {
                RootKey::Other
            } else if decodes_to(raw, &self.uid) {
                RootKey::Uid
            } else if decodes_to(raw, &self.ts) {
                RootKey::Ts
            } else {
                RootKey::Other
            }
        } else {
            RootKey::Other
        }
    }
}

/// Why a frame was rejected. The `reason()` strings are part of the rejects format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ParseError {
    #[error("empty line")]
    Empty,
    #[error("not a JSON object (starts with {0:?})")]
    NotAnObject(char),
    #[error("truncated: input ends inside the object")]
    Truncated,
    #[error("malformed JSON at byte {0}")]
    Malformed(usize),
    #[error("no root-level \"uid\"")]
    MissingUid,
    #[error("no root-level \"ts\"")]
    MissingTs,
    #[error("root-level \"uid\" is not a string")]
    UidNotString,
    #[error("root-level \"uid\" is an empty string")]
    EmptyUid,
    #[error("root-level \"ts\" is not a whole number of seconds between 0 and {MAX_TS}")]
    BadTs,
    /// The root has `uid` or `ts` (the key named) more than once.
    #[error("root-level {0:?} appears more than once")]
    DuplicateKey(&'static str),
}

impl ParseError {
    /// Stable machine-readable name, used in rejects files and in the summary; the
    /// names live in [`crate::reject::Reason`], the one list of them.
    pub fn reason(&self) -> &'static str {
        crate::reject::Reason::from(self).name()
    }

    /// The error in words, naming the fields and unit of `spec` (the `Display`
    /// text is this under the default spec): the detail of a reject.
    pub fn describe(&self, spec: &FrameSpec) -> String {
        if spec.is_default() {
            return self.to_string();
        }
        let (uid, ts) = (spec.uid_field(), spec.ts_field());
        match self {
            ParseError::MissingUid => format!("no root-level {uid:?}"),
            ParseError::MissingTs => format!("no root-level {ts:?}"),
            ParseError::UidNotString => format!("root-level {uid:?} is not a string"),
            ParseError::EmptyUid => format!("root-level {uid:?} is an empty string"),
            ParseError::BadTs => format!(
                "root-level {ts:?} is not a whole number of {} (--ts-unit {}) between 0 and {}",
                spec.unit.words(),
                spec.unit.name(),
                spec.unit.max_value()
            ),
            ParseError::DuplicateKey(key) => {
                let name = if *key == "uid" { uid } else { ts };
                format!("root-level {name:?} appears more than once")
            }
            other => other.to_string(),
        }
    }
}

/// Parses one frame with the default [`FrameSpec`]. `line` excludes the line
/// terminator; a trailing `\r` is allowed.
pub fn parse_frame(line: &[u8]) -> Result<Frame<'_>, ParseError> {
    parse_frame_with(line, &FrameSpec::DEFAULT)
}

/// Parses one frame, looking for the keys and unit of `spec`.
#[inline]
pub fn parse_frame_with<'a>(line: &'a [u8], spec: &FrameSpec) -> Result<Frame<'a>, ParseError> {
    #[cfg(target_arch = "x86_64")]
    if let Some(answer) = simd::parse(line, spec) {
        return answer;
    }
    scalar::parse(line, spec)
}

/// The byte-at-a-time parser that [`parse_frame`] falls back to: same answers,
/// several times slower. Public for the differential fuzz test only.
#[doc(hidden)]
pub fn parse_frame_scalar(line: &[u8]) -> Result<Frame<'_>, ParseError> {
    scalar::parse(line, &FrameSpec::DEFAULT)
}

/// [`parse_frame_scalar`] with a spec. Public for the differential fuzz test only.
#[doc(hidden)]
pub fn parse_frame_scalar_with<'a>(
    line: &'a [u8],
    spec: &FrameSpec,
) -> Result<Frame<'a>, ParseError> {
    scalar::parse(line, spec)
}

fn first_char(rest: &[u8]) -> char {
    String::from_utf8_lossy(&rest[..rest.len().min(4)])
        .chars()
        .next()
        .unwrap_or('?')
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RootKey {
    Uid,
    Ts,
    Other,
}

/// Whether the unescaped `raw` key equals `name`, decoded without allocating and
/// only as far as it still matches. `raw` is a valid JSON string's content.
fn decodes_to(raw: &[u8], name: &[u8]) -> bool {
    let mut at = 0;
    let mut matches = true;
    let ok = decode(raw, |bytes| {
        matches = name.get(at..at + bytes.len()) == Some(bytes);
        at += bytes.len();
        matches
    });
    ok && matches && at == name.len()
}

/// The index of the first byte from `i` on that is not JSON whitespace.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn skip_ws(line: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = line.get(i) {
        i += 1;
    }
    i
}

/// Given the index just after an opening quote, returns the index of the closing
/// quote. Only meaningful on a string already known to be well-formed.
#[inline(always)]
fn string_end(buf: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let rel = memchr::memchr2(b'"', b'\\', buf.get(pos..)?)?;
        let at = pos + rel;
        if buf[at] == b'"' {
            return Some(at);
        }
        pos = at + 2;
    }
}

/// The checks on a line already known to be one valid JSON object whose root has at
/// most one `uid` and one `ts`; `uid_at` and `ts_at` are where their values start.
/// A field the spec takes from the record is left empty (uid) or 0 (ts).
#[inline(always)]
fn extract<'a>(
    line: &'a [u8],
    uid_at: Option<usize>,
    ts_at: Option<usize>,
    spec: &FrameSpec,
) -> Result<Frame<'a>, ParseError> {
    let uid = if spec.uid_from == UidFrom::Json {
        extract_uid(line, uid_at)?
    } else {
        Cow::Borrowed(&[][..])
    };
    let ts = if spec.ts_from == TsFrom::Json {
        extract_ts(line, ts_at, spec.unit)?
    } else {
        0
    };
    Ok(Frame { uid, ts })
}

#[inline(always)]
fn extract_uid(line: &[u8], uid_at: Option<usize>) -> Result<Cow<'_, [u8]>, ParseError> {
    let uid_at = uid_at.ok_or(ParseError::MissingUid)?;
    if line[uid_at] != b'"' {
        return Err(ParseError::UidNotString);
    }
    let end = string_end(line, uid_at + 1).ok_or(ParseError::Truncated)?;
    let raw = &line[uid_at + 1..end];
    if raw.is_empty() {
        // DataSketches skips empty strings too; a blank id names nobody.
        return Err(ParseError::EmptyUid);
    }
    let uid = if raw.contains(&b'\\') {
        Cow::Owned(unescape(raw).ok_or(ParseError::Malformed(uid_at))?)
    } else {
        Cow::Borrowed(raw)
    };
    Ok(uid)
}

#[inline(always)]
fn extract_ts(line: &[u8], ts_at: Option<usize>, unit: TsUnit) -> Result<i64, ParseError> {
    let ts_at = ts_at.ok_or(ParseError::MissingTs)?;
    match line[ts_at] {
        b'"' => {
            let end = string_end(line, ts_at + 1).ok_or(ParseError::Truncated)?;
            let raw = &line[ts_at + 1..end];
            if raw.contains(&b'\\') {
                parse_ts(&unescape(raw).ok_or(ParseError::BadTs)?, unit)
            } else {
                parse_ts(raw, unit)
            }
        }
        b'0'..=b'9' => {
            let digits = line[ts_at..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            match line.get(ts_at + digits) {
                // A valid JSON number goes on only with a fraction or an exponent.
                Some(b'.' | b'e' | b'E') => Err(ParseError::BadTs),
                _ => parse_ts(&line[ts_at..ts_at + digits], unit),
            }
        }
        _ => Err(ParseError::BadTs),
    }
}

/// Digits only: no sign, no fraction, no exponent, no spaces; at most
/// [`TsUnit::max_value`]; floored to seconds.
#[inline(always)]
fn parse_ts(digits: &[u8], unit: TsUnit) -> Result<i64, ParseError> {
    if digits.is_empty() || digits.len() > unit.max_digits() {
        return Err(ParseError::BadTs);
    }
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(ParseError::BadTs);
        }
        v = v * 10 + i64::from(d - b'0');
    }
    if v > unit.max_value() {
        return Err(ParseError::BadTs);
    }
    // Never negative here, so division is the floor.
    Ok(v / unit.per_second())
}

/// Decodes a JSON string's content (escapes included, quotes excluded) into WTF-8:
/// valid Unicode comes out as its UTF-8 bytes, and each escaped surrogate that is
/// not half of a high-low pair as the three-byte form of its code point (see the
/// module docs). `None` for an invalid escape; other bytes are copied as they are.
pub fn unescape(raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len());
    decode(raw, |bytes| {
        out.extend_from_slice(bytes);
        true
    })
    .then_some(out)
}

/// Hands the decoded bytes of `raw` to `emit` piece by piece (see [`unescape`]),
/// stopping when `emit` says so. False for an invalid escape or a stop.
#[inline]
fn decode(raw: &[u8], mut emit: impl FnMut(&[u8]) -> bool) -> bool {
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b != b'\\' {
            // A run of plain bytes at once.
            let run = raw[i..]
                .iter()
                .position(|&c| c == b'\\')
                .unwrap_or(raw.len() - i);
            if !emit(&raw[i..i + run]) {
                return false;
            }
            i += run;
            continue;
        }
        let Some(&esc) = raw.get(i + 1) else {
            return false;
        };
        i += 2;
        let simple = match esc {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let Some(hi) = raw.get(i..i + 4).and_then(hex4) else {
                    return false;
                };
                i += 4;
                let mut cp = hi;
                if (0xD800..0xDC00).contains(&hi)
                    && raw.get(i..i + 2) == Some(b"\\u")
                    && let Some(lo @ 0xDC00..0xE000) = raw.get(i + 2..i + 6).and_then(hex4)
                {
                    i += 6;
                    cp = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                }
                let (buf, len) = wtf8(cp);
                if !emit(&buf[..len]) {
                    return false;
                }
                continue;
            }
            _ => return false,
        };
        if !emit(&[simple]) {
            return false;
        }
    }
    true
}

/// UTF-8's bit layout for any code point up to U+10FFFF, surrogates included:
/// the bytes, and how many of them.
fn wtf8(cp: u32) -> ([u8; 4], usize) {
    match cp {
        0..0x80 => ([cp as u8, 0, 0, 0], 1),
        0x80..0x800 => ([0xC0 | (cp >> 6) as u8, 0x80 | (cp & 0x3F) as u8, 0, 0], 2),
        0x800..0x10000 => (
            [
                0xE0 | (cp >> 12) as u8,
                0x80 | ((cp >> 6) & 0x3F) as u8,
                0x80 | (cp & 0x3F) as u8,
                0,
            ],
            3,
        ),
        _ => (
            [
                0xF0 | (cp >> 18) as u8,
                0x80 | ((cp >> 12) & 0x3F) as u8,
                0x80 | ((cp >> 6) & 0x3F) as u8,
                0x80 | (cp & 0x3F) as u8,
            ],
            4,
        ),
    }
}

fn hex4(h: &[u8]) -> Option<u32> {
    let mut v = 0;
    for &c in h.get(..4)? {
        v = v << 4 | (c as char).to_digit(16)?;
    }
    Some(v)
}
