//! Frame parser: pulls the root-level `uid` and `ts` out of one JSON frame.
//!
//! This is the hot path, so it is hand-written rather than built on a DOM or a
//! serde model. It walks the root object key by key and skips every other value
//! without decoding it: nested objects and arrays are skipped by the structural
//! scanner in [`skip`], strings with `memchr`. That is also what makes decoys safe:
//! a nested `"uid"` or `"ts"` is never looked at as a key.
//!
//! What is validated: the root object's syntax, the `uid` and `ts` values, and
//! the structure of every nested value (balanced brackets, terminated strings),
//! which is what catches truncated frames. Nested scalars (`tru`, `1.2.3`) are
//! not validated: that would cost throughput and never changes a count.
//!
//! Root `uid` and `ts` are taken from their first occurrence: once both are found,
//! the rest of the frame is only checked for structure (as sonic-rs's `get_many`
//! also takes the first). Other keys may repeat freely.

use std::borrow::Cow;

use thiserror::Error;

/// The two root-level fields Cardinal counts by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The `uid` string, unescaped. Borrowed unless it contained escapes.
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
}

impl ParseError {
    /// Stable machine-readable name, used in rejects files and in the summary.
    pub fn reason(&self) -> &'static str {
        match self {
            ParseError::Empty => "empty",
            ParseError::NotAnObject(_) => "not_an_object",
            ParseError::Truncated => "truncated",
            ParseError::Malformed(_) => "malformed",
            ParseError::MissingUid => "missing_uid",
            ParseError::MissingTs => "missing_ts",
            ParseError::UidNotString => "uid_not_string",
            ParseError::EmptyUid => "empty_uid",
            ParseError::BadTs => "bad_ts",
        }
    }
}

/// All reasons, in the order the summary prints them.
pub const ALL_REASONS: [&str; 9] = [
    "empty",
    "not_an_object",
    "truncated",
    "malformed",
    "missing_uid",
    "missing_ts",
    "uid_not_string",
    "empty_uid",
    "bad_ts",
];

/// Parses one frame. `line` excludes the line terminator; a trailing `\r` is allowed.
pub fn parse_frame(line: &[u8]) -> Result<Frame<'_>, ParseError> {
    let mut p = Cursor { buf: line, pos: 0 };
    p.skip_ws();
    match p.peek() {
        None => return Err(ParseError::Empty),
        Some(b'{') => p.pos += 1,
        Some(_) => return Err(ParseError::NotAnObject(first_char(&line[p.pos..]))),
    }
    let mut uid: Option<Cow<'_, [u8]>> = None;
    let mut ts: Option<Result<i64, ParseError>> = None;

    p.skip_ws();
    if p.peek() == Some(b'}') {
        p.pos += 1;
    } else {
        loop {
            p.skip_ws();
            p.expect(b'"')?;
            let key_start = p.pos;
            let key_end = skip::string_body(line, p.pos).ok_or(ParseError::Truncated)?;
            p.pos = key_end + 1;
            let key = RootKey::classify(&line[key_start..key_end]);
            p.skip_ws();
            p.expect(b':')?;
            p.skip_ws();
            match key {
                RootKey::Uid => uid = Some(p.uid_value()?),
                RootKey::Ts => ts = Some(p.ts_value()?),
                RootKey::Other => p.skip_value()?,
            }
            p.skip_ws();
            match p.next_byte()? {
                b',' if uid.is_some() && ts.is_some() => {
                    // Both fields found: the rest only has to be well-formed, which
                    // the block scanner checks far faster than key-by-key parsing.
                    p.pos = skip::close_of(line, p.pos, 1).ok_or(ParseError::Truncated)?;
                    break;
                }
                b',' => continue,
                b'}' => break,
                _ => return Err(ParseError::Malformed(p.pos - 1)),
            }
        }
    }
    p.skip_ws();
    if p.pos != line.len() {
        return Err(ParseError::Malformed(p.pos));
    }
    let uid = uid.ok_or(ParseError::MissingUid)?;
    if uid.is_empty() {
        // DataSketches skips empty strings too; a blank id names nobody.
        return Err(ParseError::EmptyUid);
    }
    let ts = ts.ok_or(ParseError::MissingTs)??;
    Ok(Frame { uid, ts })
}

fn first_char(rest: &[u8]) -> char {
    String::from_utf8_lossy(&rest[..rest.len().min(4)])
        .chars()
        .next()
        .unwrap_or('?')
}

enum RootKey {
    Uid,
    Ts,
    Other,
}

impl RootKey {
    fn classify(raw: &[u8]) -> RootKey {
        match raw {
            b"uid" => RootKey::Uid,
            b"ts" => RootKey::Ts,
            // A key spelled with escapes ("\u0075id") is still "uid"; rare, so decode only then.
            _ if raw.contains(&b'\\') => match unescape(raw).as_deref() {
                Some(b"uid") => RootKey::Uid,
                Some(b"ts") => RootKey::Ts,
                _ => RootKey::Other,
            },
            _ => RootKey::Other,
        }
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    #[inline(always)]
    fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    #[inline(always)]
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    #[inline(always)]
    fn next_byte(&mut self) -> Result<u8, ParseError> {
        let b = self.peek().ok_or(ParseError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    #[inline(always)]
    fn expect(&mut self, want: u8) -> Result<(), ParseError> {
        if self.next_byte()? == want {
            Ok(())
        } else {
            Err(ParseError::Malformed(self.pos - 1))
        }
    }

    fn skip_value(&mut self) -> Result<(), ParseError> {
        let start = self.pos;
        self.pos = match self.peek().ok_or(ParseError::Truncated)? {
            b'"' => skip::string_body(self.buf, start + 1).ok_or(ParseError::Truncated)? + 1,
            b'{' | b'[' => skip::container(self.buf, start).ok_or(ParseError::Truncated)?,
            b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => skip::scalar(self.buf, start),
            _ => return Err(ParseError::Malformed(start)),
        };
        Ok(())
    }

    fn uid_value(&mut self) -> Result<Cow<'a, [u8]>, ParseError> {
        if self.peek() != Some(b'"') {
            // Still has to be well-formed, so that a truncated frame says "truncated".
            self.skip_value()?;
            return Err(ParseError::UidNotString);
        }
        let start = self.pos + 1;
        let end = skip::string_body(self.buf, start).ok_or(ParseError::Truncated)?;
        self.pos = end + 1;
        let raw = &self.buf[start..end];
        if raw.contains(&b'\\') {
            unescape(raw)
                .map(Cow::Owned)
                .ok_or(ParseError::Malformed(start))
        } else {
            Ok(Cow::Borrowed(raw))
        }
    }

    /// Returns the outer error for syntax problems and the inner one for a bad value,
    /// so that a bad `ts` does not hide a truncated frame.
    fn ts_value(&mut self) -> Result<Result<i64, ParseError>, ParseError> {
        let start = self.pos;
        let digits = match self.peek().ok_or(ParseError::Truncated)? {
            b'"' => {
                let end = skip::string_body(self.buf, start + 1).ok_or(ParseError::Truncated)?;
                self.pos = end + 1;
                &self.buf[start + 1..end]
            }
            _ => {
                self.skip_value()?;
                &self.buf[start..self.pos]
            }
        };
        Ok(parse_seconds(digits))
    }
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

/// Decodes JSON string escapes. `None` for an invalid escape.
/// Lone surrogates become U+FFFD, as in most decoders, so that such a uid is still countable.
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
                let c = if (0xD800..0xDC00).contains(&hi) {
                    let low = if raw.get(i..i + 2) == Some(b"\\u") {
                        raw.get(i + 2..i + 6).and_then(hex4)
                    } else {
                        None
                    };
                    match low {
                        Some(lo @ 0xDC00..0xE000) => {
                            i += 6;
                            char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))
                        }
                        _ => None,
                    }
                } else {
                    char::from_u32(hi)
                };
                let mut utf8 = [0u8; 4];
                out.extend_from_slice(
                    c.unwrap_or(char::REPLACEMENT_CHARACTER)
                        .encode_utf8(&mut utf8)
                        .as_bytes(),
                );
                continue;
            }
            _ => return None,
        };
        out.push(simple);
    }
    Some(out)
}

fn hex4(h: &[u8]) -> Option<u32> {
    let s = std::str::from_utf8(h).ok()?;
    u32::from_str_radix(s, 16).ok()
}

/// Skipping values without decoding them.
mod skip {
    /// Given the index just after an opening quote, returns the index of the closing quote.
    #[inline(always)]
    pub fn string_body(buf: &[u8], mut pos: usize) -> Option<usize> {
        loop {
            let rel = memchr::memchr2(b'"', b'\\', buf.get(pos..)?)?;
            let at = pos + rel;
            if buf[at] == b'"' {
                return Some(at);
            }
            pos = at + 2;
        }
    }

    /// Numbers and literals end at the next delimiter.
    #[inline(always)]
    pub fn scalar(buf: &[u8], mut pos: usize) -> usize {
        while let Some(&b) = buf.get(pos) {
            if matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                break;
            }
            pos += 1;
        }
        pos
    }

    /// Given the index of `{` or `[`, returns the index just past its matching close.
    /// Only bracket balance is checked, not whether `{` closes with `}`.
    #[inline]
    pub fn container(buf: &[u8], start: usize) -> Option<usize> {
        close_of(buf, start, 0)
    }

    /// From `pos`, outside any string and `depth` brackets deep, returns the index
    /// just past the bracket that closes depth 1.
    #[inline]
    pub fn close_of(buf: &[u8], pos: usize, depth: usize) -> Option<usize> {
        #[cfg(target_arch = "x86_64")]
        {
            super::simd::close_of(buf, pos, depth as i64)
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            close_of_scalar(buf, pos, depth)
        }
    }

    #[cfg(test)]
    pub fn container_scalar(buf: &[u8], start: usize) -> Option<usize> {
        close_of_scalar(buf, start, 0)
    }

    #[cfg_attr(target_arch = "x86_64", allow(dead_code))]
    pub fn close_of_scalar(buf: &[u8], start: usize, mut depth: usize) -> Option<usize> {
        let mut pos = start;
        while pos < buf.len() {
            match buf[pos] {
                b'"' => {
                    pos = string_body(buf, pos + 1)? + 1;
                    continue;
                }
                b'{' | b'[' => depth += 1,
                b'}' | b']' => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(pos + 1);
                    }
                }
                _ => {}
            }
            pos += 1;
        }
        None
    }
}

/// A 64-byte-block structural scanner in the style of simdjson. It finds where a
/// nested value ends without visiting its bytes one by one. SSE2 is the x86_64
/// baseline; AVX2 with carry-less multiply is used when the CPU has it.
#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    struct Masks {
        quote: u64,
        backslash: u64,
        open: u64,
        close: u64,
    }

    /// How to classify a block and take a prefix XOR, per instruction set.
    trait Isa {
        unsafe fn classify(block: &[u8; 64]) -> Masks;
        unsafe fn prefix_xor(x: u64) -> u64;
    }

    struct Sse2;
    struct Avx2;

    impl Isa for Sse2 {
        #[inline(always)]
        unsafe fn classify(block: &[u8; 64]) -> Masks {
            // SAFETY: SSE2 is baseline on x86_64; loads are unaligned and in bounds.
            unsafe {
                let q = _mm_set1_epi8(b'"' as i8);
                let bs = _mm_set1_epi8(b'\\' as i8);
                // `[` 0x5B and `{` 0x7B differ only in bit 0x20, as do `]` 0x5D and `}` 0x7D.
                let fold = _mm_set1_epi8(0x20);
                let op = _mm_set1_epi8(b'{' as i8);
                let cl = _mm_set1_epi8(b'}' as i8);
                let mut m = Masks {
                    quote: 0,
                    backslash: 0,
                    open: 0,
                    close: 0,
                };
                for i in 0..4 {
                    let v = _mm_loadu_si128(block.as_ptr().add(i * 16) as *const __m128i);
                    let f = _mm_or_si128(v, fold);
                    let sh = i * 16;
                    m.quote |= (_mm_movemask_epi8(_mm_cmpeq_epi8(v, q)) as u16 as u64) << sh;
                    m.backslash |= (_mm_movemask_epi8(_mm_cmpeq_epi8(v, bs)) as u16 as u64) << sh;
                    m.open |= (_mm_movemask_epi8(_mm_cmpeq_epi8(f, op)) as u16 as u64) << sh;
                    m.close |= (_mm_movemask_epi8(_mm_cmpeq_epi8(f, cl)) as u16 as u64) << sh;
                }
                m
            }
        }

        #[inline(always)]
        unsafe fn prefix_xor(mut x: u64) -> u64 {
            x ^= x << 1;
            x ^= x << 2;
            x ^= x << 4;
            x ^= x << 8;
            x ^= x << 16;
            x ^= x << 32;
            x
        }
    }

    impl Isa for Avx2 {
        #[inline(always)]
        unsafe fn classify(block: &[u8; 64]) -> Masks {
            // SAFETY: only called from `close_of_avx2`, entered after feature detection.
            unsafe {
                let q = _mm256_set1_epi8(b'"' as i8);
                let bs = _mm256_set1_epi8(b'\\' as i8);
                let fold = _mm256_set1_epi8(0x20);
                let op = _mm256_set1_epi8(b'{' as i8);
                let cl = _mm256_set1_epi8(b'}' as i8);
                let lo = _mm256_loadu_si256(block.as_ptr() as *const __m256i);
                let hi = _mm256_loadu_si256(block.as_ptr().add(32) as *const __m256i);
                let mask = |v: __m256i, c: __m256i| {
                    _mm256_movemask_epi8(_mm256_cmpeq_epi8(v, c)) as u32 as u64
                };
                let (flo, fhi) = (_mm256_or_si256(lo, fold), _mm256_or_si256(hi, fold));
                Masks {
                    quote: mask(lo, q) | mask(hi, q) << 32,
                    backslash: mask(lo, bs) | mask(hi, bs) << 32,
                    open: mask(flo, op) | mask(fhi, op) << 32,
                    close: mask(flo, cl) | mask(fhi, cl) << 32,
                }
            }
        }

        #[inline(always)]
        unsafe fn prefix_xor(x: u64) -> u64 {
            // SAFETY: as above; carry-less multiply by all ones is a prefix XOR.
            unsafe {
                let v = _mm_set_epi64x(0, x as i64);
                let ones = _mm_set1_epi8(-1);
                _mm_cvtsi128_si64(_mm_clmulepi64_si128(v, ones, 0)) as u64
            }
        }
    }

    /// Bits of characters escaped by a backslash (simdjson's odd-run trick).
    #[inline(always)]
    fn escaped(backslash: u64, prev_escaped: &mut u64) -> u64 {
        let backslash = backslash & !*prev_escaped;
        let follows_escape = (backslash << 1) | *prev_escaped;
        const EVEN: u64 = 0x5555_5555_5555_5555;
        let odd_starts = backslash & !EVEN & !follows_escape;
        let (seq_even, overflow) = odd_starts.overflowing_add(backslash);
        let invert = seq_even << 1;
        *prev_escaped = overflow as u64;
        (EVEN ^ invert) & follows_escape
    }

    /// See `skip::close_of`.
    pub fn close_of(buf: &[u8], start: usize, depth: i64) -> Option<usize> {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("pclmulqdq") {
            // SAFETY: the features were just detected.
            unsafe { close_of_avx2(buf, start, depth) }
        } else {
            // SAFETY: SSE2 is baseline on x86_64.
            unsafe { close_of_with::<Sse2>(buf, start, depth) }
        }
    }

    #[target_feature(enable = "avx2,pclmulqdq")]
    unsafe fn close_of_avx2(buf: &[u8], start: usize, depth: i64) -> Option<usize> {
        // SAFETY: the caller checked the features; the body is inlined with them enabled.
        unsafe { close_of_with::<Avx2>(buf, start, depth) }
    }

    #[inline(always)]
    unsafe fn close_of_with<I: Isa>(buf: &[u8], start: usize, mut depth: i64) -> Option<usize> {
        let mut pos = start;
        let mut in_string: u64 = 0; // all ones while a string spans the block boundary
        let mut prev_escaped: u64 = 0;
        let mut tail = [b' '; 64];
        while pos < buf.len() {
            let n = (buf.len() - pos).min(64);
            let chunk: &[u8; 64] = if n == 64 {
                buf[pos..pos + 64].try_into().expect("64 bytes")
            } else {
                // Padding with spaces adds no structure.
                tail[..n].copy_from_slice(&buf[pos..]);
                &tail
            };
            // SAFETY: forwarded from the caller's feature guarantee.
            let m = unsafe { I::classify(chunk) };
            let esc = escaped(m.backslash, &mut prev_escaped);
            let quotes = m.quote & !esc;
            // SAFETY: as above.
            let string_mask = unsafe { I::prefix_xor(quotes) } ^ in_string;
            in_string = ((string_mask as i64) >> 63) as u64;
            let open = m.open & !string_mask;
            let close = m.close & !string_mask;
            // Depth can only reach zero at a closing bracket, so only those are
            // visited, with the opens before each counted by popcount: no
            // unpredictable open-or-close branch per bracket.
            if depth <= close.count_ones() as i64 {
                let mut closes = close;
                let mut closed = 0i64;
                while closes != 0 {
                    let bit = closes.trailing_zeros();
                    closed += 1;
                    let opened = (open & ((1u64 << bit) - 1)).count_ones() as i64;
                    if depth + opened - closed == 0 {
                        return Some(pos + bit as usize + 1);
                    }
                    closes &= closes - 1;
                }
            }
            depth += open.count_ones() as i64 - close.count_ones() as i64;
            pos += 64;
        }
        None
    }

    #[cfg(test)]
    pub fn close_of_sse2(buf: &[u8], start: usize, depth: i64) -> Option<usize> {
        // SAFETY: SSE2 is baseline on x86_64.
        unsafe { close_of_with::<Sse2>(buf, start, depth) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> (String, i64) {
        let f = parse_frame(line.as_bytes()).unwrap_or_else(|e| panic!("{line}: {e}"));
        (String::from_utf8(f.uid.into_owned()).unwrap(), f.ts)
    }

    fn err(line: &str) -> ParseError {
        parse_frame(line.as_bytes()).expect_err(line)
    }

    #[test]
    fn plain_frame() {
        assert_eq!(
            ok(r#"{"uid":"abc","ts":1468244384}"#),
            ("abc".into(), 1468244384)
        );
    }

    #[test]
    fn string_ts_and_any_key_order() {
        assert_eq!(
            ok(r#"{"ts":"1468244384","uid":"u1"}"#),
            ("u1".into(), 1468244384)
        );
    }

    #[test]
    fn whitespace_and_crlf() {
        assert_eq!(ok(" { \"uid\" : \"a\" ,\t\"ts\" : 5 } \r"), ("a".into(), 5));
    }

    #[test]
    fn nested_decoys_are_ignored() {
        let line = r#"{"meta":{"uid":"decoy","ts":1,"deeper":[{"uid":"x"}]},"ts":100,"arr":[1,{"ts":2},"uid"],"uid":"real"}"#;
        assert_eq!(ok(line), ("real".into(), 100));
    }

    #[test]
    fn decoy_keys_inside_strings() {
        let line = r#"{"note":"\"uid\":\"fake\",\"ts\":1","uid":"real","ts":7}"#;
        assert_eq!(ok(line), ("real".into(), 7));
    }

    #[test]
    fn brackets_and_escapes_inside_nested_strings() {
        let line = r#"{"a":{"s":"}]\\","t":"\\\"}{","u":["]","\\\\"]},"uid":"u","ts":3}"#;
        assert_eq!(ok(line), ("u".into(), 3));
    }

    #[test]
    fn uid_escapes_and_unicode_are_decoded() {
        assert_eq!(
            ok(r#"{"uid":"a\"b\\c\n\u00e9\ud83d\ude00","ts":1}"#).0,
            "a\"b\\c\né😀"
        );
        assert_eq!(ok(r#"{"uid":"grüße 日本","ts":1}"#).0, "grüße 日本");
        // The same user written two ways is one user.
        assert_eq!(ok(r#"{"uid":"\u0061b","ts":1}"#).0, "ab");
    }

    #[test]
    fn escaped_root_key_is_still_the_key() {
        assert_eq!(ok(r#"{"\u0075id":"x","ts":9}"#), ("x".into(), 9));
    }

    #[test]
    fn repeated_keys_first_uid_and_ts_win() {
        assert_eq!(
            ok(r#"{"a":1,"a":{"b":2},"uid":"x","ts":1,"uid":"y","ts":2,"a":[]}"#),
            ("x".into(), 1)
        );
        // Still fully checked for structure after both are found.
        assert_eq!(
            err(r#"{"uid":"x","ts":1,"a":[{"b":2]"#),
            ParseError::Truncated
        );
        assert!(matches!(
            err(r#"{"uid":"x","ts":1,"a":2} z"#),
            ParseError::Malformed(_)
        ));
    }

    #[test]
    fn all_value_kinds_are_skipped() {
        let line =
            r#"{"n":-1.5e3,"t":true,"f":false,"z":null,"e":{},"ea":[],"s":"x","uid":"u","ts":1}"#;
        assert_eq!(ok(line), ("u".into(), 1));
    }

    #[test]
    fn rejects_non_objects() {
        assert_eq!(err("[1,2]"), ParseError::NotAnObject('['));
        assert_eq!(err("\"uid\""), ParseError::NotAnObject('"'));
        assert_eq!(err("hello"), ParseError::NotAnObject('h'));
        assert_eq!(err("   "), ParseError::Empty);
        assert_eq!(err(""), ParseError::Empty);
    }

    #[test]
    fn rejects_missing_fields() {
        assert_eq!(err(r#"{"ts":1}"#), ParseError::MissingUid);
        assert_eq!(err(r#"{"uid":"a"}"#), ParseError::MissingTs);
        assert_eq!(err(r#"{}"#), ParseError::MissingUid);
        assert_eq!(err(r#"{"x":{"uid":"a","ts":1}}"#), ParseError::MissingUid);
    }

    #[test]
    fn rejects_bad_ts() {
        for ts in [
            r#""12a""#,
            "-5",
            "1.5",
            "1e9",
            r#""""#,
            "null",
            "true",
            r#"" 1""#,
            "253402300800",
            "{}",
        ] {
            assert_eq!(
                err(&format!(r#"{{"uid":"a","ts":{ts}}}"#)),
                ParseError::BadTs,
                "{ts}"
            );
        }
    }

    #[test]
    fn rejects_non_string_uid() {
        assert_eq!(err(r#"{"uid":12,"ts":1}"#), ParseError::UidNotString);
        assert_eq!(
            err(r#"{"uid":{"id":"a"},"ts":1}"#),
            ParseError::UidNotString
        );
        assert_eq!(err(r#"{"uid":"","ts":1}"#), ParseError::EmptyUid);
    }

    #[test]
    fn every_prefix_of_a_frame_is_rejected_as_truncated_or_malformed() {
        let line = r#"{"a":{"b":[1,"x\"y",{"c":"}"}]},"uid":"u\\","ts":"12","z":[[[]]]}"#;
        ok(line);
        for cut in 1..line.len() {
            let e = err(&line[..cut]);
            assert!(
                matches!(
                    e,
                    ParseError::Truncated | ParseError::Malformed(_) | ParseError::BadTs
                ),
                "prefix {cut}: {e:?}"
            );
        }
    }

    #[test]
    fn rejects_trailing_garbage() {
        assert!(matches!(
            err(r#"{"uid":"a","ts":1} x"#),
            ParseError::Malformed(_)
        ));
        assert!(matches!(
            err(r#"{"uid":"a","ts":1}{}"#),
            ParseError::Malformed(_)
        ));
        assert!(matches!(
            err(r#"{"uid":"a" "ts":1}"#),
            ParseError::Malformed(_)
        ));
    }

    #[test]
    fn long_nested_values_cross_simd_blocks() {
        let filler = "é\\\"]}".repeat(40);
        let nested = format!(r#"{{"k":[{{"s":"{filler}"}},"{filler}",[{{"uid":"no"}}]]}}"#);
        let line = format!(r#"{{"x":{nested},"uid":"yes","y":{nested},"ts":42}}"#);
        assert_eq!(ok(&line), ("yes".into(), 42));
    }

    /// Random JSON (decoys included), serialized by serde_json: our answer must equal
    /// the root fields as serde_json reads them back, and every prefix must be rejected.
    mod reference {
        use super::super::*;
        use proptest::prelude::*;
        use serde_json::{Map, Value};

        fn value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(Value::from),
                any::<f64>()
                    .prop_filter("finite", |f| f.is_finite())
                    .prop_map(Value::from),
                "(\\PC|[\"\\\\\n\t{}\\[\\]])*".prop_map(Value::String),
                Just(Value::String("\"uid\":\"fake\",\"ts\":1".into())),
            ];
            leaf.prop_recursive(4, 64, 8, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                    prop::collection::vec(
                        (
                            prop_oneof![
                                Just("uid".to_string()),
                                Just("ts".to_string()),
                                "\\PC{0,8}"
                            ],
                            inner
                        ),
                        0..6
                    )
                    .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
                ]
            })
        }

        proptest! {
            #[test]
            fn agrees_with_serde_json(
                before in prop::collection::vec(("[a-z]{1,6}", value()), 0..4),
                after in prop::collection::vec(("[a-z]{1,6}", value()), 0..4),
                uid in "\\PC{1,12}",
                ts in 0i64..=MAX_TS,
                ts_as_string in any::<bool>(),
                uid_first in any::<bool>(),
            ) {
                let mut parts: Vec<String> = before.iter()
                    .filter(|(k, _)| k != "uid" && k != "ts")
                    .map(|(k, v)| format!("{}:{}", Value::from(k.as_str()), v)).collect();
                let u = format!("\"uid\":{}", Value::from(uid.as_str()));
                let t = if ts_as_string { format!("\"ts\":\"{ts}\"") } else { format!("\"ts\":{ts}") };
                if uid_first { parts.push(u); parts.push(t); } else { parts.push(t); parts.push(u); }
                parts.extend(after.iter().filter(|(k, _)| k != "uid" && k != "ts")
                    .map(|(k, v)| format!("{}:{}", Value::from(k.as_str()), v)));
                let line = format!("{{{}}}", parts.join(","));
                let reference: Value = serde_json::from_str(&line).unwrap();
                let f = parse_frame(line.as_bytes()).unwrap();
                prop_assert_eq!(f.uid.as_ref(), reference["uid"].as_str().unwrap().as_bytes());
                prop_assert_eq!(f.ts, ts);
                for cut in (1..line.len()).step_by(7) {
                    prop_assert!(parse_frame(&line.as_bytes()[..cut]).is_err());
                }
            }

            #[test]
            fn simd_and_scalar_skips_agree(v in value()) {
                let text = serde_json::to_string(&v).unwrap();
                let b = text.as_bytes();
                if b[0] == b'{' || b[0] == b'[' {
                    prop_assert_eq!(skip::container(b, 0), Some(b.len()));
                    #[cfg(target_arch = "x86_64")]
                    prop_assert_eq!(super::super::simd::close_of_sse2(b, 0, 0), Some(b.len()));
                    prop_assert_eq!(skip::container_scalar(b, 0), Some(b.len()));
                    prop_assert_eq!(skip::container(&b[..b.len() - 1], 0), None);
                }
            }
        }
    }
}
