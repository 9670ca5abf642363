//! The fast path: validation with bit operations on 64-byte blocks, in the style
//! of simdjson's stage 1, where the grammar check (its stage 2) is also done on
//! whole blocks of bits rather than token by token.
//!
//! A line is taken in windows of up to 32 blocks, in three passes each:
//! 1. [`scan_block`]: [`classify`](super::classify) turns the block into bit
//!    masks (quotes, backslashes, whitespace, structurals, digits, ...), and,
//!    with carries from block to block, come:
//!    - strings: the escaped characters (simdjson's odd-backslash trick), then the
//!      inside of strings by prefix XOR of the other quotes; no control characters
//!      there, only valid escapes, four hex digits after each `\u`;
//!    - tokens: structurals outside strings, strings by their opening quote,
//!      scalars by their first byte; control characters other than whitespace
//!      outside strings are errors;
//!    - numbers: every run that starts with a digit or `-` is checked against the
//!      number grammar all at once, with shifted masks (with AVX-512, the rules on
//!      each byte and its neighbours come from the [`Lookback`] instead, and only
//!      one `.` and one exponent per number are left to masks); literals are rare
//!      and compared a word at a time.
//! 2. [`Nesting::step`]: the brackets, one at a time but without branches, with a
//!    one-bit-per-level stack: they must match, and where the innermost container
//!    changes between object and array, or enters or leaves the root, is noted.
//! 3. [`grammar`]: every token but the root's `{` follows exactly one other, and
//!    what kind that one is (`{` or `[`, `:`, `,`, a key, a value) says what the
//!    token may be. For each kind, one addition runs a carry from each such token
//!    over the gap to the next token ([`next_token`]), so that all successors are
//!    checked at once.
//!
//! Keys directly in the root whose first byte is `u`, `t` or `\` are listed, and
//! after the last window each is compared with `"uid"` and `"ts"`, or decoded if
//! it uses `\u` escapes early enough to spell either. Under other field names
//! (`--uid-field`, `--ts-field`) every root key is listed and compared.
//!
//! SSE2 is the x86_64 baseline; AVX2 (with carry-less multiply and BMI) is used
//! when the CPU has it, and AVX-512 (F and BW) over that. With SSE2 or AVX2, UTF-8
//! is checked over the whole line by `simdutf8` first. With AVX-512, blocks are
//! classified by compares straight into mask registers, and UTF-8 is checked in
//! the first pass, block by block, along with the number rules ([`Lookback`]):
//! there, vector instructions are nearly free, as the scalar bit arithmetic of the
//! rest is what limits the speed (without the UTF-8 check the pass is no faster).
//!
//! The answer is `None` unless the line is one valid JSON object, at most 64 levels
//! deep, whose root has neither `uid` nor `ts` twice: the scalar parser then gives
//! the verdict, with the exact error.

use std::mem::MaybeUninit;
use std::sync::OnceLock;

use super::classify::{Avx2, Avx512, Isa, Lookback, Masks, Sse2};
use super::positions::Positions;
use super::root_keys::{Padded, RootKeys};
use super::{Frame, FrameSpec, ParseError, extract, skip_ws};

/// One of the paths below, as a pointer: `unsafe`, since the AVX ones may only
/// run on a CPU with their features.
type ParseFn =
    for<'a, 'b> unsafe fn(&'a [u8], &'b FrameSpec) -> Option<Result<Frame<'a>, ParseError>>;

/// The fastest path this CPU can run, chosen once per process by [`detect`].
static PATH: OnceLock<ParseFn> = OnceLock::new();

pub(super) fn parse<'a>(line: &'a [u8], spec: &FrameSpec) -> Option<Result<Frame<'a>, ParseError>> {
    let path = PATH.get_or_init(detect);
    // SAFETY: `PATH` is private to this module and only ever set by `detect`,
    // which returns a path whose features it has just detected on this CPU.
    unsafe { path(line, spec) }
}

/// The fastest path the CPU has the features for. The features were detected for
/// every frame before (up to twelve `is_x86_feature_detected!` a frame, each an
/// atomic load and a test, on a CPU with AVX2 but not AVX-512).
fn detect() -> ParseFn {
    if has_avx512() {
        parse_avx512
    } else if has_avx2() {
        parse_avx2
    } else {
        parse_sse2
    }
}

/// AVX2 with carry-less multiply, and the bit-manipulation instructions that come
/// with them on every such CPU (`tzcnt`, `blsr`, `shlx`, `popcnt`).
pub(super) fn has_avx2() -> bool {
    std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("pclmulqdq")
        && std::is_x86_feature_detected!("bmi1")
        && std::is_x86_feature_detected!("bmi2")
        && std::is_x86_feature_detected!("popcnt")
}

/// The AVX2 path.
///
/// # Safety
///
/// The CPU must have the features of [`has_avx2`] (check with it).
#[target_feature(enable = "avx2,pclmulqdq,bmi1,bmi2,popcnt")]
pub(super) unsafe fn parse_avx2<'a>(
    line: &'a [u8],
    spec: &FrameSpec,
) -> Option<Result<Frame<'a>, ParseError>> {
    // SAFETY: the caller guarantees the CPU has `Avx2`'s features; the body is
    // inlined with them enabled.
    unsafe { parse_with::<Avx2>(line, spec) }
}

/// AVX-512 with byte compares into mask registers (BW), on top of AVX2's set.
pub(super) fn has_avx512() -> bool {
    has_avx2()
        && std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512bw")
}

/// The AVX-512 path.
///
/// # Safety
///
/// The CPU must have the features of [`has_avx512`] (check with it).
#[target_feature(enable = "avx512f,avx512bw,avx2,pclmulqdq,bmi1,bmi2,popcnt")]
pub(super) unsafe fn parse_avx512<'a>(
    line: &'a [u8],
    spec: &FrameSpec,
) -> Option<Result<Frame<'a>, ParseError>> {
    // SAFETY: the caller guarantees the CPU has `Avx512`'s features; the body is
    // inlined with them enabled.
    unsafe { parse_with::<Avx512>(line, spec) }
}

/// The SSE2 path, which every x86_64 CPU can run.
pub(super) fn parse_sse2<'a>(
    line: &'a [u8],
    spec: &FrameSpec,
) -> Option<Result<Frame<'a>, ParseError>> {
    // SAFETY: SSE2 is in the x86_64 baseline, so every CPU this runs on has it.
    unsafe { parse_with::<Sse2>(line, spec) }
}

/// What is carried from one block to the next.
#[derive(Default)]
struct Carry {
    /// All ones while a string spans the block boundary.
    in_string: u64,
    prev_escaped: u64,
    /// The previous block's masks, for checks that look one to four bytes back.
    unicode_escapes: u64,
    scalar: u64,
    digits: u64,
    exps: u64,
    puncts: u64,
    minus_starts: u64,
    zero_starts: u64,
    /// 1 when a number runs on into this block.
    number: u64,
    // `next_token` carries.
    after_dot: u64,
    after_exp: u64,
}

/// The container stack, one bit per level (1 for an object).
#[derive(Default)]
struct Nesting {
    stack: u64,
    depth: i64,
    deepest: i64,
    /// Whether the innermost container is an object, and whether it is the root.
    in_object: u64,
    at_root: u64,
    /// Where the root object closes, `usize::MAX` until it does.
    root_end: usize,
    errors: u64,
}

/// For each token start in `from` (a subset of `tokens`), the start of the token
/// that follows it. Adding `from << 1` to the gaps runs a carry from each source
/// over the gap after it, and the carry stops at the next token. `pending` carries
/// a source still waiting for its successor into the next block.
#[inline(always)]
fn next_token(from: u64, tokens: u64, pending: &mut u64) -> u64 {
    let (sum, overflow) = (!tokens).overflowing_add(from << 1 | *pending);
    *pending = from >> 63 | u64::from(overflow);
    sum & tokens
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

/// `x` moved one byte on, with the previous block's last bit coming in.
#[inline(always)]
fn shifted(x: u64, prev: u64) -> u64 {
    x << 1 | prev >> 63
}

/// Blocks per window: a window is classified, then its brackets walked, then its
/// grammar checked, each in a loop of its own (fewer live values, no branchy walk
/// interleaved with the bit arithmetic).
const WINDOW: usize = 32;

/// What the first pass keeps of each block for the third.
#[derive(Clone, Copy, Default)]
struct Tokens {
    all: u64,
    strings: u64,
    scalars: u64,
    colons: u64,
    commas: u64,
    opens: u64,
    closes: u64,
    key_start: u64,
}

/// The fast path with the instruction set `I`.
///
/// # Safety
///
/// The CPU must have `I`'s features (see [`Isa`]).
#[inline(always)]
unsafe fn parse_with<'a, I: Isa>(
    line: &'a [u8],
    spec: &FrameSpec,
) -> Option<Result<Frame<'a>, ParseError>> {
    // Leading whitespace, then the root's `{`: anything else is for the scalar
    // parser to name (empty, not an object).
    if line.get(skip_ws(line, 0)) != Some(&b'{')
        || !I::Lookback::BY_BLOCK && simdutf8::basic::from_utf8(line).is_err()
    {
        return None;
    }
    let mut lookback = I::Lookback::default();
    prefetch(&line[..line.len().min(WINDOW * 64)]);
    let padded = Padded::new(line);
    let mut c = Carry::default();
    let mut g = GrammarCarry::default();
    let mut n = Nesting {
        root_end: usize::MAX,
        ..Nesting::default()
    };
    // Other names than `uid` and `ts` need every root key looked at: the
    // classifier's first-byte filter knows only those two.
    let all_keys = if spec.default_keys { 0 } else { !0 };
    let mut root = RootKeys::new();
    // Every check ORs its offending bits in here; the verdict waits for the end.
    let mut errors: u64 = 0;
    // Written by the first pass before the third reads them: no need to clear
    // 2 KB for every frame.
    let mut tokens = [MaybeUninit::<Tokens>::uninit(); WINDOW];
    let mut toggles = [(0u64, 0u64); WINDOW];
    // Room for every bit of a window, and the four unconditional stores after
    // the last; never cleared, only what was pushed is read.
    let mut brackets = Positions::<{ WINDOW * 64 + 8 }>::new();
    let mut window = 0;
    while window < line.len() {
        let blocks = (line.len() - window).div_ceil(64).min(WINDOW);
        if window > 0 {
            prefetch(&line[window..line.len().min(window + WINDOW * 64)]);
        }
        brackets.clear();
        for (k, t) in tokens[..blocks].iter_mut().enumerate() {
            let pos = window + 64 * k;
            // SAFETY: our caller guarantees the CPU has `I`'s features.
            let t = t.write(unsafe {
                let (utf8, number_rules) = lookback.check(padded.block(pos), padded.block(pos + 1));
                errors |= utf8;
                scan_block::<I>(&padded, pos, &mut c, &mut errors, number_rules)
            });
            brackets.push_bits(pos, t.opens | t.closes);
        }
        toggles[..blocks].fill((0, 0));
        for &at in brackets.as_slice() {
            n.step(line, at as usize, window, &mut toggles);
        }
        for k in 0..blocks {
            let pos = window + 64 * k;
            // SAFETY: the first pass wrote `tokens[..blocks]`; our caller
            // guarantees the CPU has `I`'s features.
            let (e, root_keys) = unsafe {
                grammar::<I>(
                    tokens[k].assume_init_ref(),
                    toggles[k],
                    pos,
                    &n,
                    &mut g,
                    all_keys,
                )
            };
            errors |= e;
            root.push(pos, root_keys, &padded, spec);
        }
        window += blocks * 64;
    }
    let root = root.finish(&padded, spec);
    if errors | n.errors | c.in_string != 0
        // SAFETY: our caller guarantees the CPU has `I`'s features.
        || !unsafe { lookback.complete() }
        || n.root_end == usize::MAX
        || n.deepest > 64
        || root.uids > 1
        || root.tss > 1
    {
        return None;
    }
    Some(extract(line, root.uid_at, root.ts_at, spec))
}

/// Asks for all the cache lines of `bytes` at once. A line to parse is often not
/// in cache yet (frames come from the network, or one after another from a
/// large buffer), and the first pass, with its long chains per block, keeps few
/// loads in flight: it waited for one miss after another. `simdutf8`'s pass over
/// the whole line, on the AVX2 and SSE2 paths, had been fetching it ahead.
#[inline(always)]
fn prefetch(bytes: &[u8]) {
    use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
    let p = bytes.as_ptr().cast::<i8>();
    for at in (0..bytes.len())
        .step_by(64)
        .chain(bytes.len().checked_sub(1))
    {
        // SAFETY: a prefetch of an address in `bytes` (SSE, baseline on
        // x86_64); it never faults, and reads nothing the program sees.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(at)) };
    }
}

/// First pass over a block: strings, escapes, control characters, tokens,
/// numbers and literals.
///
/// # Safety
///
/// The CPU must have `I`'s features.
#[inline(always)]
unsafe fn scan_block<I: Isa>(
    padded: &Padded<'_>,
    pos: usize,
    c: &mut Carry,
    errors: &mut u64,
    number_rules: u64,
) -> Tokens {
    // SAFETY: our caller guarantees the CPU has `I`'s features.
    let m = unsafe { I::classify(padded.block(pos)) };

    // Strings: from each opening quote up to, not including, its closing quote.
    let esc = escaped(m.backslash, &mut c.prev_escaped);
    let quotes = m.quote & !esc;
    // SAFETY: as above.
    let strings = unsafe { I::prefix_xor(quotes) } ^ c.in_string;
    c.in_string = ((strings as i64) >> 63) as u64;
    // Control characters: never in a string, only whitespace outside. After a
    // backslash, only `"\/bfnrtu`; after `\u` (the escapable byte with bits 0x01
    // and 0x40), four hex digits.
    let ue = esc & m.bit0 & m.bit6;
    let p = c.unicode_escapes;
    let need_hex = ue << 1 | ue << 2 | ue << 3 | ue << 4 | p >> 63 | p >> 62 | p >> 61 | p >> 60;
    c.unicode_escapes = ue;
    let mut e = m.ctrl & (strings | !m.ws) | esc & !m.escape | need_hex & !m.hex;

    // Tokens: structurals outside strings, strings by their opening quote, scalars
    // by their first byte. Bits 0x01 and 0x02 tell the structurals apart: `,` 00,
    // `:` 10, `{[` 11, `}]` 01.
    let strs = quotes & strings;
    let scalar = !(m.op | m.ws | strings | quotes);
    let scalars = scalar & !shifted(scalar, c.scalar);
    c.scalar = scalar;
    let ops = m.op & !strings;

    // Numbers and literals.
    let minus = m.punct & !m.bit6 & m.bit0 & !m.bit1;
    let starts = scalars & (m.digit | minus);
    e |= if I::Lookback::BY_BLOCK {
        check_number_runs(&m, scalar, starts, number_rules, c)
    } else {
        check_numbers(&m, scalar, starts, minus, c)
    };
    let mut literals = scalars & !starts;
    while literals != 0 {
        e |= u64::from(!literal_ok(
            padded,
            pos + literals.trailing_zeros() as usize,
        ));
        literals &= literals - 1;
    }
    *errors |= e;
    Tokens {
        all: ops | strs | scalars,
        strings: strs,
        scalars,
        colons: ops & !m.bit0 & m.bit1,
        commas: ops & !m.bit0 & !m.bit1,
        opens: ops & m.bit0 & m.bit1,
        closes: ops & m.bit0 & !m.bit1,
        key_start: m.key_start,
    }
}

/// `next_token` carries of the grammar pass, and where the previous block left
/// the nesting masks.
#[derive(Default)]
struct GrammarCarry {
    in_object: u64,
    at_root: u64,
    after_open: u64,
    after_comma: u64,
    after_colon: u64,
    after_key: u64,
    after_value: u64,
}

/// Third pass over a block: what may follow each kind of token. In an object,
/// after `{` or `,` comes a key, and only keys are followed by `:`. Returns error
/// bits and the keys directly in the root: those that may begin `uid`, `ts` or an
/// escape, or all of them when `all_keys` is all ones.
///
/// # Safety
///
/// The CPU must have `I`'s features.
#[inline(always)]
unsafe fn grammar<I: Isa>(
    t: &Tokens,
    toggles: (u64, u64),
    pos: usize,
    n: &Nesting,
    g: &mut GrammarCarry,
    all_keys: u64,
) -> (u64, u64) {
    // Whether each position is directly in an object (before the bracket at that
    // position, if any, takes effect), and directly in the root.
    // SAFETY: our caller guarantees the CPU has `I`'s features.
    let after = unsafe { I::prefix_xor(toggles.0) } ^ 0u64.wrapping_sub(g.in_object);
    let in_object = shifted(after, 0u64.wrapping_sub(g.in_object));
    g.in_object = after >> 63;
    // SAFETY: as above.
    let at_root = unsafe { I::prefix_xor(toggles.1) } ^ 0u64.wrapping_sub(g.at_root);
    g.at_root = at_root >> 63;

    let values = t.strings | t.scalars | t.opens;
    let after_open = next_token(t.opens, t.all, &mut g.after_open);
    let after_comma = next_token(t.commas, t.all, &mut g.after_comma);
    let after_colon = next_token(t.colons, t.all, &mut g.after_colon);
    let keys = (after_open | after_comma) & in_object & t.strings;
    let after_key = next_token(keys, t.all, &mut g.after_key);
    let value_ends = (t.strings & !keys) | t.scalars | t.closes;
    let after_value = next_token(value_ends, t.all, &mut g.after_value);
    let member = (in_object & t.strings) | (!in_object & values);
    let mut errors = after_open & !(member | t.closes)
        | after_comma & !member
        | after_colon & !values
        | after_key & !t.colons
        | after_value & !(t.commas | t.closes);
    // Nothing after the root object.
    if n.root_end < pos + 64 {
        let bit = n.root_end.saturating_sub(pos);
        let after_root = if n.root_end < pos { !0 } else { !0 << bit << 1 };
        errors |= t.all & after_root;
    }
    // Only keys whose first byte could begin `uid`, `ts` or an escape need a look
    // (a key at the end of the block, whose first byte is in the next, always does).
    (
        errors,
        keys & at_root & (t.key_start >> 1 | 1 << 63 | all_keys),
    )
}

/// [`check_numbers`] where the rules on each byte and its neighbours came from
/// the [`Lookback`] (`rules`): what is left is which bytes are in numbers, and
/// one `.` and one exponent per number, in that order.
#[inline(always)]
fn check_number_runs(m: &Masks, scalar: u64, starts: u64, rules: u64, c: &mut Carry) -> u64 {
    let (sum, o1) = scalar.overflowing_add(starts);
    let (sum, o2) = sum.overflowing_add(c.number);
    c.number = u64::from(o1 | o2);
    let number = (sum ^ scalar) & scalar;
    let punct = m.punct & number;
    let exps = punct & m.bit6;
    let dots = punct & !m.bit6 & !m.bit0;
    let stops = dots | exps | !number;
    rules & number
        | next_token(dots, stops, &mut c.after_dot) & dots
        | next_token(exps, stops, &mut c.after_exp) & (dots | exps)
}

/// The number grammar, `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`, on every
/// scalar run that starts with a digit or `-`, all at once. Returns error bits.
/// Bits 0x01, 0x02 and 0x40 tell the punctuation apart: `eE` have 0x40, `.` has
/// neither 0x40 nor 0x01, `+` `-` have 0x01 and differ in 0x02.
#[inline(always)]
fn check_numbers(m: &Masks, scalar: u64, starts: u64, minus: u64, c: &mut Carry) -> u64 {
    // Fill each number run from its first byte to its last: the carry of the
    // addition runs through the run.
    let (sum, o1) = scalar.overflowing_add(starts);
    let (sum, o2) = sum.overflowing_add(c.number);
    c.number = u64::from(o1 | o2);
    let number = (sum ^ scalar) & scalar;
    let punct = m.punct & number;
    let exps = punct & m.bit6;
    let dots = punct & !m.bit6 & !m.bit0;
    let signs = punct & !m.bit6 & m.bit0;
    let after_exp = shifted(exps, c.exps);
    let zero_starts = ((starts & m.digit) | shifted(starts & minus, c.minus_starts)) & m.zero;
    let mut errors = number & !(m.digit | m.punct)
        // `.` and an exponent come after a digit, a sign after an exponent or
        // (`-`) first,
        | (dots | exps) & !shifted(m.digit, c.digits)
        | signs & !(after_exp | (starts & minus))
        // and is followed by a digit, but an exponent may be by a sign;
        | shifted(punct, c.puncts) & !m.digit & !(after_exp & m.punct & !m.bit6 & m.bit0)
        // the integer part has no leading zero.
        | shifted(zero_starts, c.zero_starts) & m.digit;
    // One `.` and one exponent, in that order: from each, the next of either
    // (or the end of the number) must not be a `.`, nor an exponent after one.
    let stops = dots | exps | !number;
    errors |= next_token(dots, stops, &mut c.after_dot) & dots;
    errors |= next_token(exps, stops, &mut c.after_exp) & (dots | exps);
    c.digits = m.digit;
    c.exps = exps;
    c.puncts = punct;
    c.minus_starts = starts & minus;
    c.zero_starts = zero_starts;
    errors
}

impl Nesting {
    /// The bracket at `at`, in the window starting at `window`: the stack, and the
    /// toggles of `in_object` and `at_root` at its position. No branches.
    #[inline(always)]
    fn step(&mut self, line: &[u8], at: usize, window: usize, toggles: &mut [(u64, u64)]) {
        let c = line[at];
        // `{[` have bit 0x02, `}]` not; `{}` have bit 0x20, `[]` not.
        let open = u64::from((c >> 1) & 1);
        let object = u64::from((c >> 5) & 1);
        // A bracket after the root closed, or a close that does not match.
        let closed = u64::from(self.root_end != usize::MAX);
        self.errors |= closed | (!open & (self.stack ^ object) & 1);
        self.stack = if open == 1 {
            self.stack << 1 | object
        } else {
            self.stack >> 1
        };
        self.depth += 2 * open as i64 - 1;
        self.deepest = self.deepest.max(self.depth);
        let in_object = self.stack & 1;
        let at_root = u64::from(self.depth == 1);
        let t = &mut toggles[(at - window) >> 6];
        t.0 ^= (in_object ^ self.in_object) << (at & 63);
        t.1 ^= (at_root ^ self.at_root) << (at & 63);
        self.in_object = in_object;
        self.at_root = at_root;
        if self.depth == 0 {
            self.root_end = self.root_end.min(at);
        }
    }
}

/// A scalar starting at `at` that is not a number must be `true`, `false` or
/// `null`, followed by a byte that ends a scalar. One word read from the padded
/// line compares it (the padding is spaces, which end a scalar as the end of the
/// line does), inlined: a call per literal (and one to `memcmp`) cost 10% on the
/// AVX-512 path, likely because no vector register lives through a call, so the
/// first pass kept its tables and the previous block in memory around it.
#[inline(always)]
fn literal_ok(padded: &Padded<'_>, at: usize) -> bool {
    let w = padded.u64_at(at);
    let (word, len) = match w as u8 {
        b't' => (u32::from_le_bytes(*b"true") as u64, 4),
        b'f' => (u64::from_le_bytes(*b"false\0\0\0"), 5),
        b'n' => (u32::from_le_bytes(*b"null") as u64, 4),
        _ => return false,
    };
    let next = (w >> (8 * len)) as u8;
    w & ((1 << (8 * len)) - 1) == word
        && matches!(
            next,
            b' ' | b'\t' | b'\n' | b'\r' | b'{' | b'}' | b'[' | b']' | b':' | b',' | b'"'
        )
}
