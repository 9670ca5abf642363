//! The byte-at-a-time parser: the definition of what [`super::parse_frame`] accepts,
//! the path on other architectures and for very deep frames, and the one place that
//! reports syntax errors, with the offset of the first byte that cannot belong to a
//! valid frame.
//!
//! It is an explicit-stack automaton rather than a recursive descent, so nesting
//! depth costs a bit per level instead of a stack frame.

use super::{Frame, FrameSpec, ParseError, RootKey, extract, first_char};

pub(super) fn parse<'a>(line: &'a [u8], spec: &FrameSpec) -> Result<Frame<'a>, ParseError> {
    let mut p = Parser { buf: line, pos: 0 };
    p.skip_ws();
    match p.peek() {
        None => return Err(ParseError::Empty),
        Some(b'{') => {}
        Some(_) => return Err(ParseError::NotAnObject(first_char(&line[p.pos..]))),
    }
    let root = p.document(spec)?;
    if let Some(key) = root.duplicate {
        return Err(ParseError::DuplicateKey(key));
    }
    extract(line, root.uid_at, root.ts_at, spec)
}

/// Where the root's `uid` and `ts` values start (first occurrence), and the first
/// of them seen twice.
#[derive(Default)]
struct RootFields {
    uid_at: Option<usize>,
    ts_at: Option<usize>,
    uid_seen: bool,
    ts_seen: bool,
    duplicate: Option<&'static str>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Expect {
    Value,
    ValueOrClose,
    Key,
    KeyOrClose,
    Colon,
    CommaOrClose,
}

/// Container kinds, one bit per level (1 = object), spilling every 64 levels.
#[derive(Default)]
struct Stack {
    bits: u64,
    depth: usize,
    spill: Vec<u64>,
}

impl Stack {
    fn push(&mut self, object: bool) {
        if self.depth > 0 && self.depth.is_multiple_of(64) {
            self.spill.push(self.bits);
            self.bits = 0;
        }
        self.bits = self.bits << 1 | u64::from(object);
        self.depth += 1;
    }

    fn pop(&mut self) {
        self.bits >>= 1;
        self.depth -= 1;
        if self.depth > 0 && self.depth.is_multiple_of(64) {
            self.bits = self.spill.pop().expect("spilled level");
        }
    }

    fn in_object(&self) -> bool {
        self.bits & 1 == 1
    }
}

struct Parser<'a> {
    buf: &'a [u8],
    pos: usize,
}

type Res<T> = Result<T, ParseError>;

impl Parser<'_> {
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

    /// The byte at `at`, or `truncated` at the end of the line.
    #[inline(always)]
    fn at(&self, at: usize) -> Res<u8> {
        self.buf.get(at).copied().ok_or(ParseError::Truncated)
    }

    /// From the root's `{` to the end of the line.
    fn document(&mut self, spec: &FrameSpec) -> Res<RootFields> {
        let mut root = RootFields::default();
        let mut stack = Stack::default();
        let mut expect = Expect::Value;
        // The root key whose value comes next.
        let mut pending = RootKey::Other;
        loop {
            self.skip_ws();
            let at = self.pos;
            let c = self.at(at)?;
            let close = match expect {
                Expect::Colon if c == b':' => {
                    self.pos += 1;
                    expect = Expect::Value;
                    continue;
                }
                Expect::KeyOrClose if c == b'}' => true,
                Expect::Key | Expect::KeyOrClose if c == b'"' => {
                    let end = self.string()?;
                    if stack.depth == 1 {
                        pending = spec.wanted(spec.classify(&self.buf[at + 1..end]));
                        root.key(pending);
                    }
                    expect = Expect::Colon;
                    continue;
                }
                Expect::ValueOrClose if c == b']' => true,
                Expect::Value | Expect::ValueOrClose => {
                    if stack.depth == 1 {
                        match pending {
                            RootKey::Uid => _ = root.uid_at.get_or_insert(at),
                            RootKey::Ts => _ = root.ts_at.get_or_insert(at),
                            RootKey::Other => {}
                        }
                        pending = RootKey::Other;
                    }
                    match c {
                        b'{' | b'[' => {
                            stack.push(c == b'{');
                            self.pos += 1;
                            expect = if c == b'{' {
                                Expect::KeyOrClose
                            } else {
                                Expect::ValueOrClose
                            };
                            continue;
                        }
                        b'"' => _ = self.string()?,
                        b'-' | b'0'..=b'9' => self.number()?,
                        b't' => self.literal(b"true")?,
                        b'f' => self.literal(b"false")?,
                        b'n' => self.literal(b"null")?,
                        _ => return Err(ParseError::Malformed(at)),
                    }
                    expect = Expect::CommaOrClose;
                    continue;
                }
                Expect::CommaOrClose if c == b',' => {
                    self.pos += 1;
                    expect = if stack.in_object() {
                        Expect::Key
                    } else {
                        Expect::Value
                    };
                    continue;
                }
                Expect::CommaOrClose => c == b'}' || c == b']',
                _ => false,
            };
            if !close || stack.in_object() != (c == b'}') {
                return Err(ParseError::Malformed(at));
            }
            stack.pop();
            self.pos += 1;
            if stack.depth == 0 {
                break;
            }
            expect = Expect::CommaOrClose;
        }
        self.skip_ws();
        if self.pos != self.buf.len() {
            return Err(ParseError::Malformed(self.pos));
        }
        Ok(root)
    }

    /// At an opening quote: checks the string, returns the index of its closing quote
    /// and moves past it.
    fn string(&mut self) -> Res<usize> {
        let buf = self.buf;
        let mut i = self.pos + 1;
        loop {
            while buf.get(i).is_some_and(|&b| PLAIN[usize::from(b)]) {
                i += 1;
            }
            match self.at(i)? {
                b'"' => {
                    self.pos = i + 1;
                    return Ok(i);
                }
                b'\\' => match self.at(i + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                    b'u' => {
                        for h in i + 2..i + 6 {
                            if !self.at(h)?.is_ascii_hexdigit() {
                                return Err(ParseError::Malformed(h));
                            }
                        }
                        i += 6;
                    }
                    _ => return Err(ParseError::Malformed(i + 1)),
                },
                0..=0x1F => return Err(ParseError::Malformed(i)),
                _ => i = self.utf8_char(i)?,
            }
        }
    }

    /// At a non-ASCII byte: checks one UTF-8 sequence (Unicode table 3-7) and
    /// returns the index after it.
    fn utf8_char(&self, i: usize) -> Res<usize> {
        let (len, lo, hi) = match self.buf[i] {
            0xC2..=0xDF => (2, 0x80, 0xBF),
            0xE0 => (3, 0xA0, 0xBF),
            0xE1..=0xEC | 0xEE..=0xEF => (3, 0x80, 0xBF),
            0xED => (3, 0x80, 0x9F),
            0xF0 => (4, 0x90, 0xBF),
            0xF1..=0xF3 => (4, 0x80, 0xBF),
            0xF4 => (4, 0x80, 0x8F),
            _ => return Err(ParseError::Malformed(i)),
        };
        for k in 1..len {
            let (lo, hi) = if k == 1 { (lo, hi) } else { (0x80, 0xBF) };
            if !(lo..=hi).contains(&self.at(i + k)?) {
                return Err(ParseError::Malformed(i + k));
            }
        }
        Ok(i + len)
    }

    fn number(&mut self) -> Res<()> {
        let mut i = self.pos;
        if self.buf[i] == b'-' {
            i += 1;
        }
        match self.at(i)? {
            b'0' => i += 1,
            b'1'..=b'9' => i = self.digits(i),
            _ => return Err(ParseError::Malformed(i)),
        }
        if self.peek_at(i) == Some(b'.') {
            i = self.some_digits(i + 1)?;
        }
        if let Some(b'e' | b'E') = self.peek_at(i) {
            i += 1;
            if let Some(b'+' | b'-') = self.peek_at(i) {
                i += 1;
            }
            i = self.some_digits(i)?;
        }
        // Whatever follows (`1x`, a leading zero's `01`) is the grammar's business.
        self.pos = i;
        Ok(())
    }

    fn peek_at(&self, i: usize) -> Option<u8> {
        self.buf.get(i).copied()
    }

    fn digits(&self, mut i: usize) -> usize {
        while self.peek_at(i).is_some_and(|b| b.is_ascii_digit()) {
            i += 1;
        }
        i
    }

    /// At least one digit.
    fn some_digits(&self, i: usize) -> Res<usize> {
        if !self.at(i)?.is_ascii_digit() {
            return Err(ParseError::Malformed(i));
        }
        Ok(self.digits(i))
    }

    fn literal(&mut self, word: &[u8]) -> Res<()> {
        for (k, &w) in word.iter().enumerate() {
            if self.at(self.pos + k)? != w {
                return Err(ParseError::Malformed(self.pos + k));
            }
        }
        self.pos += word.len();
        Ok(())
    }
}

impl RootFields {
    fn key(&mut self, key: RootKey) {
        let (seen, name) = match key {
            RootKey::Uid => (&mut self.uid_seen, "uid"),
            RootKey::Ts => (&mut self.ts_seen, "ts"),
            RootKey::Other => return,
        };
        if *seen {
            self.duplicate.get_or_insert(name);
        }
        *seen = true;
    }
}

/// String bytes that need no attention: printable ASCII but the quote and backslash.
static PLAIN: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0x20;
    while b < 0x80 {
        t[b] = b != b'"' as usize && b != b'\\' as usize;
        b += 1;
    }
    t
};
