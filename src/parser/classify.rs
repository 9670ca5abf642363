//! Byte classification of 64-byte blocks into bit masks, one bit per byte, with
//! SSE2 (the x86_64 baseline), AVX2 or AVX-512. Everything else in the fast path
//! works on these masks.
//!
//! Each mask costs a movemask per 32 (or 16) bytes, the scarcest resource here, so
//! there are few: besides the character classes, three raw bits of each byte tell
//! the structurals apart (`:` `,` `{[` `}]`) and the punctuation of numbers
//! (`.` `+` `-` `eE`), and the backslash escapes `\u` from `\/`. AVX-512 compares
//! write the masks directly, one per block.
//!
//! With AVX-512, the checks that need the bytes around each byte (UTF-8, and the
//! number grammar byte by byte) are done here too, on vectors: [`Lookback`].

use std::arch::x86_64::*;

/// One bit per byte of a block.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Masks {
    pub quote: u64,
    pub backslash: u64,
    /// Space, tab, line feed, carriage return.
    pub ws: u64,
    /// Below 0x20.
    pub ctrl: u64,
    /// `{}[]:,` (and, from the AVX2 table, the control characters 0x0C and 0x1A).
    pub op: u64,
    /// Bits 0x01, 0x02 and 0x40 of each byte.
    pub bit0: u64,
    pub bit1: u64,
    pub bit6: u64,
    pub digit: u64,
    pub zero: u64,
    /// `.`, `+`, `-`, `e`, `E`.
    pub punct: u64,
    /// A character that may follow a backslash: `"\/bfnrtu`.
    pub escape: u64,
    pub hex: u64,
    /// `u`, `t` or `\`: how a root key that may be `uid` or `ts` starts.
    pub key_start: u64,
}

/// How to classify a block and take a prefix XOR, per instruction set.
///
/// # Safety
///
/// Each implementation is compiled for the CPU features of its instruction set
/// (SSE2: the x86_64 baseline; AVX2: `avx2,pclmulqdq,bmi1,bmi2,popcnt`;
/// AVX-512: those and `avx512f,avx512bw`), and running an instruction the CPU
/// lacks is undefined behaviour. So the methods are `unsafe fn`: the caller must
/// make sure the CPU has the features, by detecting them (`simd::has_avx2`,
/// `simd::has_avx512`) before entering the `#[target_feature]` function that
/// calls them. The obligation is the caller's, not the implementor's, which is
/// why the methods are unsafe rather than the trait: an `unsafe trait` would
/// make implementing it the promise, and calling its methods safe.
///
/// Blocks are passed as `&[u8; 64]`, so that they are readable is the type's
/// business, not part of the contract.
pub(super) trait Isa {
    /// The checks that look at bytes of the blocks around each one: UTF-8 and
    /// the number grammar byte by byte, where the instruction set makes them
    /// cheap (else the line is validated as UTF-8 first, and numbers with
    /// shifted masks).
    type Lookback: Lookback;
    /// The masks of `block`.
    ///
    /// # Safety
    ///
    /// The CPU must have this instruction set's features (see [`Isa`]).
    unsafe fn classify(block: &[u8; 64]) -> Masks;
    /// Each bit of `x` XORed with all those below it.
    ///
    /// # Safety
    ///
    /// As [`Isa::classify`].
    unsafe fn prefix_xor(x: u64) -> u64;
}

/// See [`Isa::Lookback`]. Called on the blocks of a line in order.
pub(super) trait Lookback: Default {
    /// Whether `check` does anything.
    const BY_BLOCK: bool;
    /// Two masks: nonzero where the block, after those before it, is not valid
    /// UTF-8; and the bytes that would be errors in a number, from them and the
    /// bytes around them (see [`Avx512Lookback::check`]). `next` is the 64 bytes
    /// from the block's second byte.
    ///
    /// # Safety
    ///
    /// The CPU must have the features of the [`Isa`] whose `Lookback` this is.
    unsafe fn check(&mut self, block: &[u8; 64], next: &[u8; 64]) -> (u64, u64);
    /// Whether the last block did not end inside a UTF-8 sequence.
    ///
    /// # Safety
    ///
    /// As [`Lookback::check`].
    unsafe fn complete(&self) -> bool;
}

/// UTF-8 validation of the whole line first, with `simdutf8`, and numbers with
/// shifted masks.
#[derive(Default)]
pub(super) struct NoLookback;

impl Lookback for NoLookback {
    const BY_BLOCK: bool = false;
    #[inline(always)]
    unsafe fn check(&mut self, _: &[u8; 64], _: &[u8; 64]) -> (u64, u64) {
        (0, 0)
    }
    #[inline(always)]
    unsafe fn complete(&self) -> bool {
        true
    }
}

/// Hides where a mask came from. Without it, LLVM sees the movemasks as vectors of
/// booleans and carries the bit arithmetic that follows into the vector domain,
/// where it scalarizes it byte by byte: several times slower.
#[inline(always)]
fn opaque(mut x: u64) -> u64 {
    // SAFETY: an empty instruction template; the value goes through unchanged.
    unsafe {
        std::arch::asm!("/* {0} */", inout(reg) x, options(pure, nomem, nostack, preserves_flags))
    };
    x
}

pub(super) struct Sse2;
pub(super) struct Avx2;
pub(super) struct Avx512;

impl Isa for Sse2 {
    type Lookback = NoLookback;

    #[inline(always)]
    unsafe fn classify(block: &[u8; 64]) -> Masks {
        // SAFETY: SSE2 is baseline on x86_64; the loads read `block`'s 64 bytes,
        // 16 at a time.
        unsafe {
            let splat = |c: u8| _mm_set1_epi8(c as i8);
            let eq = |v, c: u8| _mm_cmpeq_epi8(v, splat(c));
            let or = |a, b| _mm_or_si128(a, b);
            let in_range = |v, lo: u8, len: u8| {
                let x = _mm_sub_epi8(v, splat(lo));
                _mm_cmpeq_epi8(_mm_min_epu8(x, splat(len - 1)), x)
            };
            let mut m = Masks::default();
            for i in 0..4 {
                let v = _mm_loadu_si128(block.as_ptr().add(i * 16) as *const __m128i);
                let bits = |x: __m128i| opaque((_mm_movemask_epi8(x) as u16 as u64) << (i * 16));
                let folded = or(v, splat(0x20));
                let digit = in_range(v, b'0', 10);
                let escape = [b'"', b'\\', b'/', b'b', b'f', b'n', b'r', b't', b'u']
                    .iter()
                    .fold(_mm_setzero_si128(), |acc, &c| or(acc, eq(v, c)));
                let punct = or(
                    or(eq(v, b'.'), eq(v, b'+')),
                    or(eq(v, b'-'), eq(folded, b'e')),
                );
                let ops = or(
                    or(eq(v, b':'), eq(v, b',')),
                    or(eq(folded, b'{'), eq(folded, b'}')),
                );
                m.quote |= bits(eq(v, b'"'));
                m.backslash |= bits(eq(v, b'\\'));
                m.ws |= bits(or(
                    or(eq(v, b' '), eq(v, b'\t')),
                    or(eq(v, b'\n'), eq(v, b'\r')),
                ));
                m.ctrl |= bits(in_range(v, 0, 0x20));
                m.op |= bits(ops);
                // Shifting 16-bit lanes left by k brings each byte's bit 7-k to its top.
                m.bit0 |= bits(_mm_slli_epi16(v, 7));
                m.bit1 |= bits(_mm_slli_epi16(v, 6));
                m.bit6 |= bits(_mm_slli_epi16(v, 1));
                m.digit |= bits(digit);
                m.zero |= bits(eq(v, b'0'));
                m.punct |= bits(punct);
                m.escape |= bits(escape);
                m.hex |= bits(or(digit, in_range(folded, b'a', 6)));
                m.key_start |= bits(or(or(eq(v, b'u'), eq(v, b't')), eq(v, b'\\')));
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
    type Lookback = NoLookback;

    #[inline(always)]
    unsafe fn classify(block: &[u8; 64]) -> Masks {
        // SAFETY: the caller guarantees the CPU has AVX2 (see `Isa`); the loads
        // read `block`'s 64 bytes, 32 at a time.
        unsafe {
            // Macros rather than closures: a closure would not inherit the AVX2
            // target feature, and its intrinsics would not be inlined.
            macro_rules! splat {
                ($c:expr) => {
                    _mm256_set1_epi8($c as i8)
                };
            }
            macro_rules! eq {
                ($v:expr, $c:expr) => {
                    _mm256_cmpeq_epi8($v, splat!($c))
                };
            }
            macro_rules! or {
                ($a:expr, $b:expr) => {
                    _mm256_or_si256($a, $b)
                };
            }
            macro_rules! in_range {
                ($v:expr, $lo:expr, $len:expr) => {{
                    let x = _mm256_sub_epi8($v, splat!($lo));
                    _mm256_cmpeq_epi8(_mm256_min_epu8(x, splat!($len - 1)), x)
                }};
            }
            macro_rules! mm {
                ($x:expr) => {
                    opaque(_mm256_movemask_epi8($x) as u32 as u64)
                };
            }
            // simdjson's tables: a byte is whitespace iff it equals the entry at its
            // low nibble (bytes >= 0x80 look up 0), and an operator iff, with bit
            // 0x20 set, it equals its entry in the second table. The latter also
            // takes 0x0C and 0x1A for `,` and `:`: control characters, an error
            // wherever they are.
            let ws_table = _mm256_setr_epi8(
                32, 100, 100, 100, 17, 100, 113, 2, 100, 9, 10, 112, 100, 13, 100, 100, //
                32, 100, 100, 100, 17, 100, 113, 2, 100, 9, 10, 112, 100, 13, 100, 100,
            );
            let op_table = _mm256_setr_epi8(
                0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 58, 123, 44, 125, 0, 0, //
                0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 58, 123, 44, 125, 0, 0,
            );
            // Escapable characters by nibble: a byte is one iff the entries at its
            // low and high nibbles share a bit (1: high nibble 2, `"` `/`; 2: high
            // 5, `\`; 4: high 6, `b` `f` `n`; 8: high 7, `r` `t` `u`).
            let esc_low = _mm256_setr_epi8(
                0, 0, 13, 0, 8, 8, 4, 0, 0, 0, 0, 0, 2, 0, 4, 1, //
                0, 0, 13, 0, 8, 8, 4, 0, 0, 0, 0, 0, 2, 0, 4, 1,
            );
            let esc_high = _mm256_setr_epi8(
                0, 0, 1, 0, 0, 2, 4, 8, 0, 0, 0, 0, 0, 0, 0, 0, //
                0, 0, 1, 0, 0, 2, 4, 8, 0, 0, 0, 0, 0, 0, 0, 0,
            );
            macro_rules! half {
                ($off:expr) => {{
                    let v = _mm256_loadu_si256(block.as_ptr().add($off) as *const __m256i);
                    let folded = or!(v, splat!(0x20));
                    let digit = in_range!(v, b'0', 10);
                    let high = _mm256_and_si256(_mm256_srli_epi16(v, 4), splat!(0x0F));
                    let not_escape = _mm256_cmpeq_epi8(
                        _mm256_and_si256(
                            _mm256_shuffle_epi8(esc_low, v),
                            _mm256_shuffle_epi8(esc_high, high),
                        ),
                        _mm256_setzero_si256(),
                    );
                    let punct = or!(
                        or!(eq!(v, b'.'), eq!(v, b'+')),
                        or!(eq!(v, b'-'), eq!(folded, b'e'))
                    );
                    [
                        mm!(eq!(v, b'"')),
                        mm!(eq!(v, b'\\')),
                        mm!(_mm256_cmpeq_epi8(_mm256_shuffle_epi8(ws_table, v), v)),
                        mm!(in_range!(v, 0, 0x20)),
                        mm!(_mm256_cmpeq_epi8(_mm256_shuffle_epi8(op_table, v), folded)),
                        // Shifting 16-bit lanes left by k brings each byte's bit 7-k
                        // to its top.
                        mm!(_mm256_slli_epi16(v, 7)),
                        mm!(_mm256_slli_epi16(v, 6)),
                        mm!(_mm256_slli_epi16(v, 1)),
                        mm!(digit),
                        mm!(eq!(v, b'0')),
                        mm!(punct),
                        !mm!(not_escape),
                        mm!(or!(digit, in_range!(folded, b'a', 6))),
                        mm!(or!(or!(eq!(v, b'u'), eq!(v, b't')), eq!(v, b'\\'))),
                    ]
                }};
            }
            let lo = half!(0);
            let hi = half!(32);
            let m = |i: usize| lo[i] & 0xFFFF_FFFF | hi[i] << 32;
            Masks {
                quote: m(0),
                backslash: m(1),
                ws: m(2),
                ctrl: m(3),
                op: m(4),
                bit0: m(5),
                bit1: m(6),
                bit6: m(7),
                digit: m(8),
                zero: m(9),
                punct: m(10),
                escape: m(11),
                hex: m(12),
                key_start: m(13),
            }
        }
    }

    #[inline(always)]
    unsafe fn prefix_xor(x: u64) -> u64 {
        // SAFETY: the caller guarantees the CPU has AVX2's set, `pclmulqdq`
        // included; carry-less multiply by all ones is a prefix XOR.
        unsafe {
            let v = _mm_set_epi64x(0, x as i64);
            let ones = _mm_set1_epi8(-1);
            _mm_cvtsi128_si64(_mm_clmulepi64_si128(v, ones, 0)) as u64
        }
    }
}

/// AVX-512BW compares write one bit per byte straight into a mask register: no
/// movemask, and the whole block in one vector. Same tables as AVX2, repeated in
/// all four 128-bit lanes.
impl Isa for Avx512 {
    type Lookback = Avx512Lookback;

    #[inline(always)]
    unsafe fn classify(block: &[u8; 64]) -> Masks {
        // SAFETY: the caller guarantees the CPU has AVX-512 F and BW (see `Isa`);
        // the load reads `block`'s 64 bytes.
        unsafe {
            macro_rules! splat {
                ($c:expr) => {
                    _mm512_set1_epi8($c as i8)
                };
            }
            macro_rules! eq {
                ($v:expr, $c:expr) => {
                    _mm512_cmpeq_epi8_mask($v, splat!($c))
                };
            }
            macro_rules! in_range {
                ($v:expr, $lo:expr, $len:expr) => {
                    _mm512_cmplt_epu8_mask(_mm512_sub_epi8($v, splat!($lo)), splat!($len))
                };
            }
            macro_rules! table {
                ($($x:expr),*) => {
                    _mm512_broadcast_i32x4(_mm_setr_epi8($($x),*))
                };
            }
            let ws_table = table!(
                32, 100, 100, 100, 17, 100, 113, 2, 100, 9, 10, 112, 100, 13, 100, 100
            );
            let op_table = table!(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 58, 123, 44, 125, 0, 0);
            let esc_low = table!(0, 0, 13, 0, 8, 8, 4, 0, 0, 0, 0, 0, 2, 0, 4, 1);
            let esc_high = table!(0, 0, 1, 0, 0, 2, 4, 8, 0, 0, 0, 0, 0, 0, 0, 0);
            let v = _mm512_loadu_si512(block.as_ptr() as *const __m512i);
            let folded = _mm512_or_si512(v, splat!(0x20));
            let high = _mm512_and_si512(_mm512_srli_epi16(v, 4), splat!(0x0F));
            let digit = in_range!(v, b'0', 10);
            let backslash = eq!(v, b'\\');
            let escape = _mm512_test_epi8_mask(
                _mm512_shuffle_epi8(esc_low, v),
                _mm512_shuffle_epi8(esc_high, high),
            );
            Masks {
                quote: eq!(v, b'"'),
                backslash,
                ws: _mm512_cmpeq_epi8_mask(_mm512_shuffle_epi8(ws_table, v), v),
                ctrl: _mm512_cmplt_epu8_mask(v, splat!(0x20)),
                op: _mm512_cmpeq_epi8_mask(_mm512_shuffle_epi8(op_table, v), folded),
                bit0: _mm512_test_epi8_mask(v, splat!(0x01)),
                bit1: _mm512_test_epi8_mask(v, splat!(0x02)),
                bit6: _mm512_test_epi8_mask(v, splat!(0x40)),
                digit,
                zero: eq!(v, b'0'),
                punct: eq!(v, b'.') | eq!(v, b'+') | eq!(v, b'-') | eq!(folded, b'e'),
                escape,
                hex: digit | in_range!(folded, b'a', 6),
                key_start: eq!(v, b'u') | eq!(v, b't') | backslash,
            }
        }
    }

    #[inline(always)]
    unsafe fn prefix_xor(x: u64) -> u64 {
        // SAFETY: the caller guarantees AVX-512's features, which include AVX2's.
        unsafe { Avx2::prefix_xor(x) }
    }
}

/// UTF-8 validation in the loop that classifies, on the block already in cache:
/// the lookup algorithm of Keiser and Lemire ("Validating UTF-8 in less than one
/// instruction per byte"), with `simdutf8`'s tables, on 64 bytes at a time; and
/// the number grammar as rules on each byte and its neighbours. Vector
/// instructions come nearly free here, as the scalar bit arithmetic of the other
/// checks is what limits the speed: without the UTF-8 check the fast path was no
/// faster, without the number check (as shifted masks) 19% faster.
pub(super) struct Avx512Lookback {
    /// The previous block.
    prev: __m512i,
}

impl Default for Avx512Lookback {
    fn default() -> Self {
        // SAFETY: zeroing needs no CPU feature beyond the baseline (the vector
        // type is only a value here). NUL bytes before the line are neither
        // UTF-8 lead bytes nor part of a number.
        unsafe { std::mem::zeroed() }
    }
}

impl Lookback for Avx512Lookback {
    const BY_BLOCK: bool = true;

    /// The number rules, for each byte that turns out to be in a number (a
    /// scalar starting with a digit or `-`; the caller masks the others out).
    /// The byte before a number is never part of a scalar, so `-` after a byte
    /// that is not a number character starts the number.
    /// - only `0-9 . + - e E`;
    /// - `.` and `eE` after a digit;
    /// - `+-` after `eE`, or `-` first;
    /// - `. + - e E` followed by a digit, but `eE` may be by a sign;
    /// - a `0` that begins the integer part (first, or after a first `-`; not
    ///   after a sign that follows `eE`) not followed by a digit.
    ///
    /// One `.` and one exponent per number, in that order, is left to the caller.
    #[inline(always)]
    unsafe fn check(&mut self, block: &[u8; 64], next: &[u8; 64]) -> (u64, u64) {
        // SAFETY: the caller guarantees the CPU has AVX-512 F and BW (see
        // `Lookback::check`); the loads read `block` and `next`, 64 bytes each.
        unsafe {
            const TOO_SHORT: i8 = 1 << 0;
            const TOO_LONG: i8 = 1 << 1;
            const OVERLONG_3: i8 = 1 << 2;
            const SURROGATE: i8 = 1 << 4;
            const OVERLONG_2: i8 = 1 << 5;
            const TWO_CONTS: i8 = (1u8 << 7) as i8;
            const TOO_LARGE: i8 = 1 << 3;
            const TOO_LARGE_1000: i8 = 1 << 6;
            const OVERLONG_4: i8 = 1 << 6;
            const CARRY: i8 = TOO_SHORT | TOO_LONG | TWO_CONTS;
            macro_rules! table {
                ($($x:expr),* $(,)?) => {
                    _mm512_broadcast_i32x4(_mm_setr_epi8($($x),*))
                };
            }
            macro_rules! splat {
                ($c:expr) => {
                    _mm512_set1_epi8($c as i8)
                };
            }
            let byte_1_high_table = table!(
                TOO_LONG,
                TOO_LONG,
                TOO_LONG,
                TOO_LONG,
                TOO_LONG,
                TOO_LONG,
                TOO_LONG,
                TOO_LONG,
                TWO_CONTS,
                TWO_CONTS,
                TWO_CONTS,
                TWO_CONTS,
                TOO_SHORT | OVERLONG_2,
                TOO_SHORT,
                TOO_SHORT | OVERLONG_3 | SURROGATE,
                TOO_SHORT | TOO_LARGE | TOO_LARGE_1000 | OVERLONG_4,
            );
            const L: i8 = CARRY | TOO_LARGE | TOO_LARGE_1000;
            let byte_1_low_table = table!(
                CARRY | OVERLONG_3 | OVERLONG_2 | OVERLONG_4,
                CARRY | OVERLONG_2,
                CARRY,
                CARRY,
                CARRY | TOO_LARGE,
                L,
                L,
                L,
                L,
                L,
                L,
                L,
                L,
                L | SURROGATE,
                L,
                L,
            );
            const C: i8 = TOO_LONG | OVERLONG_2 | TWO_CONTS;
            let byte_2_high_table = table!(
                TOO_SHORT,
                TOO_SHORT,
                TOO_SHORT,
                TOO_SHORT,
                TOO_SHORT,
                TOO_SHORT,
                TOO_SHORT,
                TOO_SHORT,
                C | OVERLONG_3 | TOO_LARGE_1000 | OVERLONG_4,
                C | OVERLONG_3 | TOO_LARGE,
                C | SURROGATE | TOO_LARGE,
                C | SURROGATE | TOO_LARGE,
                TOO_SHORT,
                TOO_SHORT,
                TOO_SHORT,
                TOO_SHORT,
            );
            let nibble = splat!(0x0F);
            let shr4 = |v| _mm512_and_si512(_mm512_srli_epi16(v, 4), nibble);
            let input = _mm512_loadu_si512(block.as_ptr() as *const __m512i);
            // The previous 16 bytes of each 16-byte lane: the last lane of the
            // previous block, then this block's first three.
            let before = _mm512_alignr_epi64(input, self.prev, 6);
            let prev1 = _mm512_alignr_epi8(input, before, 15);
            let prev2 = _mm512_alignr_epi8(input, before, 14);
            let prev3 = _mm512_alignr_epi8(input, before, 13);
            self.prev = input;
            let special = _mm512_and_si512(
                _mm512_and_si512(
                    _mm512_shuffle_epi8(byte_1_high_table, shr4(prev1)),
                    _mm512_shuffle_epi8(byte_1_low_table, _mm512_and_si512(prev1, nibble)),
                ),
                _mm512_shuffle_epi8(byte_2_high_table, shr4(input)),
            );
            // Third and fourth bytes of a sequence must be continuations.
            let must23 = _mm512_cmpge_epu8_mask(prev2, splat!(0xE0u8))
                | _mm512_cmpge_epu8_mask(prev3, splat!(0xF0u8));
            let must23_80 = _mm512_maskz_mov_epi8(must23, splat!(0x80u8));
            let utf8 = _mm512_test_epi8_mask(_mm512_xor_si512(must23_80, special), splat!(0xFFu8));

            let after = _mm512_loadu_si512(next.as_ptr() as *const __m512i);
            let digit = |v| _mm512_cmplt_epu8_mask(_mm512_sub_epi8(v, splat!(b'0')), splat!(10));
            let exp = |v| _mm512_cmpeq_epi8_mask(_mm512_or_si512(v, splat!(0x20)), splat!(b'e'));
            let eq = |v, c: u8| _mm512_cmpeq_epi8_mask(v, splat!(c));
            let (c_digit, c_exp, c_dot) = (digit(input), exp(input), eq(input, b'.'));
            let (c_minus, c_sign) = (eq(input, b'-'), eq(input, b'-') | eq(input, b'+'));
            let (p_digit, p_exp) = (digit(prev1), exp(prev1));
            let p_sign = eq(prev1, b'-') | eq(prev1, b'+');
            let p_other = !(p_digit | p_exp | p_sign | eq(prev1, b'.'));
            let (n_digit, n_sign) = (digit(after), eq(after, b'-') | eq(after, b'+'));
            let punct = c_dot | c_exp | c_sign;
            let number = !(c_digit | punct)
                | (c_dot | c_exp) & !p_digit
                | c_sign & !p_exp & !(c_minus & p_other)
                | punct & !n_digit & !(c_exp & n_sign)
                | eq(input, b'0') & n_digit & (p_other | eq(prev1, b'-') & !exp(prev2));
            (utf8, number)
        }
    }

    #[inline(always)]
    unsafe fn complete(&self) -> bool {
        // SAFETY: the caller guarantees the CPU has AVX-512 F and BW.
        unsafe {
            // The last three bytes, if they begin a sequence too long for them.
            let max = _mm512_set_epi64(0xBFDF_EFFF_FFFF_FFFFu64 as i64, -1, -1, -1, -1, -1, -1, -1);
            _mm512_test_epi8_mask(_mm512_subs_epu8(self.prev, max), _mm512_set1_epi8(-1)) == 0
        }
    }
}
