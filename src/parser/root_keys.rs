//! The root keys the fast path has found, checked in batches for the uid and ts
//! keys; and the line with padding, so that blocks and keys can be read past its
//! end. The default names `uid` and `ts` are compared as one word each; other
//! names (`--uid-field`, `--ts-field`) as the key's bytes, after finding its end.

use std::mem::MaybeUninit;

use super::simd::{push_bits, skip_ws};
use super::{FrameSpec, RootKey, string_end};

/// The line, readable 64 bytes past any position up to its end: the last bytes
/// are copied into a buffer padded with spaces (which add no structure).
pub(super) struct Padded<'a> {
    pub line: &'a [u8],
    start: usize,
    tail: [u8; 256],
}

impl<'a> Padded<'a> {
    pub fn new(line: &'a [u8]) -> Padded<'a> {
        let start = line.len().saturating_sub(128);
        let mut tail = [b' '; 256];
        tail[..line.len() - start].copy_from_slice(&line[start..]);
        Padded { line, start, tail }
    }

    /// 64 readable bytes from `at`, for `at` up to the line's length plus 64.
    #[inline(always)]
    pub fn at(&self, at: usize) -> *const u8 {
        if at + 64 <= self.line.len() {
            // SAFETY: in bounds, just checked.
            unsafe { self.line.as_ptr().add(at) }
        } else {
            // SAFETY: `at >= len - 63 >= start`, and `at - start + 64 <= 256`.
            unsafe { self.tail.as_ptr().add(at - self.start) }
        }
    }

    #[inline(always)]
    pub fn u64_at(&self, at: usize) -> u64 {
        // SAFETY: see `at`.
        unsafe { (self.at(at) as *const u64).read_unaligned() }
    }
}

/// Root keys, by the position of their opening quote, checked in batches.
pub(super) struct RootKeys {
    /// Only the first `len` entries are initialized.
    pub at: [MaybeUninit<u32>; 256],
    pub len: usize,
    pub uid_at: Option<usize>,
    pub ts_at: Option<usize>,
    pub uids: u32,
    pub tss: u32,
}

impl RootKeys {
    /// Appends the bits of `keys` as positions: four stores without a branch,
    /// since most blocks have fewer keys.
    #[inline(always)]
    pub fn push(&mut self, pos: usize, keys: u64) {
        push_bits(&mut self.at, &mut self.len, pos, keys);
    }

    /// Looks at each key: `"uid"` and `"ts"`, or a spelling with `\u` escapes
    /// that could still be one of them (rare, decoded then); under other names,
    /// every key is compared with them.
    #[inline(always)]
    pub fn check(&mut self, line: &Padded<'_>, spec: &FrameSpec) {
        if !spec.default_keys {
            return self.check_named(line.line, spec);
        }
        const UID: u64 = u32::from_le_bytes(*b"uid\"") as u64;
        const TS: u64 = u32::from_le_bytes(*b"ts\"\0") as u64;
        for i in 0..self.len {
            // SAFETY: `push` wrote every entry below `len`.
            let at = unsafe { self.at[i].assume_init() } as usize;
            let w = line.u64_at(at + 1);
            let b = w.to_le_bytes();
            let uid = w & 0xFFFF_FFFF == UID;
            let ts = w & 0xFF_FFFF == TS;
            let esc = |k: usize| b[k] == b'\\' && b[k + 1] == b'u';
            let escaped = esc(0)
                | ((b[0] == b'u') | (b[0] == b't')) & esc(1)
                | (b[0] == b'u') & (b[1] == b'i') & esc(2);
            if uid | ts | escaped {
                self.note(line.line, at, uid, ts, spec);
            }
        }
        self.len = 0;
    }

    /// Every root key, compared with names other than the defaults.
    #[inline(never)]
    fn check_named(&mut self, line: &[u8], spec: &FrameSpec) {
        for i in 0..self.len {
            // SAFETY: `push` wrote every entry below `len`.
            let at = unsafe { self.at[i].assume_init() } as usize;
            let Some(end) = string_end(line, at + 1) else {
                continue;
            };
            let key = spec.wanted(spec.classify(&line[at + 1..end]));
            if key != RootKey::Other {
                self.found(line, key, end);
            }
        }
        self.len = 0;
    }

    #[cold]
    fn note(&mut self, line: &[u8], at: usize, uid: bool, ts: bool, spec: &FrameSpec) {
        let (key, end) = if uid {
            (RootKey::Uid, at + 4)
        } else if ts {
            (RootKey::Ts, at + 3)
        } else {
            match string_end(line, at + 1) {
                Some(end) => (spec.classify(&line[at + 1..end]), end),
                None => (RootKey::Other, at),
            }
        };
        // A key the record provides instead is any other key.
        self.found(line, spec.wanted(key), end);
    }

    /// A root key that is `key`, whose closing quote is at `end`.
    #[inline]
    fn found(&mut self, line: &[u8], key: RootKey, end: usize) {
        // Past the colon (the grammar check makes sure it is there).
        let mut i = skip_ws(line, end + 1);
        if line.get(i) == Some(&b':') {
            i = skip_ws(line, i + 1);
        }
        let i = i.min(line.len().saturating_sub(1));
        match key {
            RootKey::Uid => {
                self.uids += 1;
                self.uid_at.get_or_insert(i);
            }
            RootKey::Ts => {
                self.tss += 1;
                self.ts_at.get_or_insert(i);
            }
            RootKey::Other => {}
        }
    }
}
