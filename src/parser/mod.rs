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
//! hot path: it classifies 64-byte blocks into bit masks with AVX2 (or SSE2), and
//! checks strings, escapes, control characters, numbers, bracket matching and the
//! token grammar with bit operations on whole blocks, UTF-8 with `simdutf8`.
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

#[cfg(target_arch = "x86_64")]
mod classify;
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

/// Largest accepted `ts`: 9999-12-31T23:59:59Z, the end of RFC 3339 time.
/// Anything later cannot be a click; anything earlier is the watermark's business.
pub const MAX_TS: i64 = 253_402_300_799;

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
}

/// Parses one frame. `line` excludes the line terminator; a trailing `\r` is allowed.
pub fn parse_frame(line: &[u8]) -> Result<Frame<'_>, ParseError> {
    #[cfg(target_arch = "x86_64")]
    if let Some(answer) = simd::parse(line) {
        return answer;
    }
    scalar::parse(line)
}

/// The byte-at-a-time parser that [`parse_frame`] falls back to: same answers,
/// several times slower. Public for the differential fuzz test only.
#[doc(hidden)]
pub fn parse_frame_scalar(line: &[u8]) -> Result<Frame<'_>, ParseError> {
    scalar::parse(line)
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

impl RootKey {
    /// `raw` is a key's string content as written, escapes included.
    #[inline(always)]
    fn classify(raw: &[u8]) -> RootKey {
        match raw {
            b"uid" => RootKey::Uid,
            b"ts" => RootKey::Ts,
            // A key spelled with escapes ("\u0075id") is still "uid". Decoded without
            // allocating, and only as far as it can still match.
            _ if raw.len() <= 18 && raw.contains(&b'\\') => Self::classify_escaped(raw),
            _ => RootKey::Other,
        }
    }

    fn classify_escaped(raw: &[u8]) -> RootKey {
        let mut out = [0u8; 3];
        let mut n = 0;
        let mut i = 0;
        while i < raw.len() {
            let c = match raw[i] {
                b'\\' => match raw.get(i + 1) {
                    Some(b'u') => match raw.get(i + 2..i + 6).and_then(hex4) {
                        Some(v) if v < 0x80 => {
                            i += 6;
                            v as u8
                        }
                        _ => return RootKey::Other,
                    },
                    // Only \u escapes can spell a letter of "uid" or "ts".
                    _ => return RootKey::Other,
                },
                b => {
                    i += 1;
                    b
                }
            };
            if n == out.len() {
                return RootKey::Other;
            }
            out[n] = c;
            n += 1;
        }
        match &out[..n] {
            b"uid" => RootKey::Uid,
            b"ts" => RootKey::Ts,
            _ => RootKey::Other,
        }
    }
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
#[inline(always)]
fn extract(
    line: &[u8],
    uid_at: Option<usize>,
    ts_at: Option<usize>,
) -> Result<Frame<'_>, ParseError> {
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
    let ts_at = ts_at.ok_or(ParseError::MissingTs)?;
    let ts = match line[ts_at] {
        b'"' => {
            let end = string_end(line, ts_at + 1).ok_or(ParseError::Truncated)?;
            let raw = &line[ts_at + 1..end];
            if raw.contains(&b'\\') {
                parse_seconds(&unescape(raw).ok_or(ParseError::BadTs)?)
            } else {
                parse_seconds(raw)
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
                _ => parse_seconds(&line[ts_at..ts_at + digits]),
            }
        }
        _ => Err(ParseError::BadTs),
    }?;
    Ok(Frame { uid, ts })
}

/// Digits only: no sign, no fraction, no exponent, no spaces; at most [`MAX_TS`].
fn parse_seconds(digits: &[u8]) -> Result<i64, ParseError> {
    if digits.is_empty() || digits.len() > 12 {
        return Err(ParseError::BadTs);
    }
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(ParseError::BadTs);
        }
        v = v * 10 + i64::from(d - b'0');
    }
    if v > MAX_TS {
        return Err(ParseError::BadTs);
    }
    Ok(v)
}

/// Decodes a JSON string's content (escapes included, quotes excluded) into WTF-8:
/// valid Unicode comes out as its UTF-8 bytes, and each escaped surrogate that is
/// not half of a high-low pair as the three-byte form of its code point (see the
/// module docs). `None` for an invalid escape; other bytes are copied as they are.
pub fn unescape(raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        let esc = *raw.get(i + 1)?;
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
                let hi = hex4(raw.get(i..i + 4)?)?;
                i += 4;
                let mut cp = hi;
                if (0xD800..0xDC00).contains(&hi)
                    && raw.get(i..i + 2) == Some(b"\\u")
                    && let Some(lo @ 0xDC00..0xE000) = raw.get(i + 2..i + 6).and_then(hex4)
                {
                    i += 6;
                    cp = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                }
                push_wtf8(&mut out, cp);
                continue;
            }
            _ => return None,
        };
        out.push(simple);
    }
    Some(out)
}

/// UTF-8's bit layout for any code point up to U+10FFFF, surrogates included.
fn push_wtf8(out: &mut Vec<u8>, cp: u32) {
    match cp {
        0..0x80 => out.push(cp as u8),
        0x80..0x800 => out.extend_from_slice(&[0xC0 | (cp >> 6) as u8, 0x80 | (cp & 0x3F) as u8]),
        0x800..0x10000 => out.extend_from_slice(&[
            0xE0 | (cp >> 12) as u8,
            0x80 | ((cp >> 6) & 0x3F) as u8,
            0x80 | (cp & 0x3F) as u8,
        ]),
        _ => out.extend_from_slice(&[
            0xF0 | (cp >> 18) as u8,
            0x80 | ((cp >> 12) & 0x3F) as u8,
            0x80 | ((cp >> 6) & 0x3F) as u8,
            0x80 | (cp & 0x3F) as u8,
        ]),
    }
}

fn hex4(h: &[u8]) -> Option<u32> {
    let mut v = 0;
    for &c in h.get(..4)? {
        v = v << 4 | (c as char).to_digit(16)?;
    }
    Some(v)
}
