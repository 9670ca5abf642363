//! The root keys the fast path has found, checked in batches for the uid and ts
//! keys; and the line with padding, so that blocks and keys can be read past its
//! end. The default names `uid` and `ts` are compared as one word each; other
//! names (`--uid-field`, `--ts-field`) as the key's bytes, after finding its end.

use super::positions::Positions;
use super::{FrameSpec, RootKey, skip_ws, string_end};

/// The line, readable 64 bytes past any position up to its end: the last bytes
/// are copied into a buffer padded with spaces (which add no structure).
///
/// Invariant, set up by [`Padded::new`] and kept by the fields being private:
/// `tail[..line.len() - start]` is `line[start..]`, and `start` is
/// `line.len().saturating_sub(128)`, so that every block from a position up to
/// `line.len() + 64` lies in `line` or in `tail`.
pub(super) struct Padded<'a> {
    line: &'a [u8],
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

    /// The line itself, without padding.
    #[inline(always)]
    pub fn line(&self) -> &'a [u8] {
        self.line
    }

    /// The 64 bytes from `at`, spaces past the end of the line, for any `at` up to
    /// 64 past the end (no caller reads further: blocks start before the end,
    /// and words a few bytes after a token in the line). Further on, it panics
    /// once the block would leave the padding: always for a line of 128 bytes or
    /// more, from 193 bytes past its start for a shorter one.
    #[inline(always)]
    pub fn block(&self, at: usize) -> &[u8; 64] {
        match self
            .line
            .get(at..)
            .and_then(|rest| rest.first_chunk::<64>())
        {
            Some(block) => block,
            // `at >= len - 63 > start` here, so `at - start` does not wrap, and
            // the chunk fits while `at <= len + 64` (at most 192 past `start`).
            None => self.tail[at - self.start..]
                .first_chunk::<64>()
                .expect("a block at most 64 bytes past the end of the line"),
        }
    }

    /// The 8 bytes from `at`, as a little-endian word; as [`Padded::block`].
    #[inline(always)]
    pub fn u64_at(&self, at: usize) -> u64 {
        let block = self.block(at);
        u64::from_le_bytes([
            block[0], block[1], block[2], block[3], block[4], block[5], block[6], block[7],
        ])
    }
}

/// Root keys, by the position of their opening quote, checked in batches: at
/// most [`RootKeys::BATCH`] waiting, so that a block's keys always fit.
pub(super) struct RootKeys {
    waiting: Positions<256>,
    found: Found,
}

/// What the root keys looked at so far hold.
#[derive(Default)]
pub(super) struct Found {
    /// Where the first uid and ts values start.
    pub uid_at: Option<usize>,
    pub ts_at: Option<usize>,
    /// How many uid and ts keys there were.
    pub uids: u32,
    pub tss: u32,
}

impl RootKeys {
    /// Keys waiting past this many are checked: a block adds at most 64.
    const BATCH: usize = 256 - 64;

    #[inline(always)]
    pub fn new() -> RootKeys {
        RootKeys {
            waiting: Positions::new(),
            found: Found::default(),
        }
    }

    /// Appends the bits of `keys` as positions of the block at `pos`, and checks
    /// the batch once it is full.
    #[inline(always)]
    pub fn push(&mut self, pos: usize, keys: u64, line: &Padded<'_>, spec: &FrameSpec) {
        self.waiting.push_bits(pos, keys);
        if self.waiting.len() > Self::BATCH {
            self.check(line, spec);
        }
    }

    /// Checks the keys still waiting, and says what all of them held.
    #[inline(always)]
    pub fn finish(mut self, line: &Padded<'_>, spec: &FrameSpec) -> Found {
        self.check(line, spec);
        self.found
    }

    /// Looks at each key: `"uid"` and `"ts"`, or a spelling with `\u` escapes
    /// that could still be one of them (rare, decoded then); under other names,
    /// every key is compared with them.
    #[inline(always)]
    fn check(&mut self, line: &Padded<'_>, spec: &FrameSpec) {
        if !spec.default_keys {
            return self.check_named(line.line(), spec);
        }
        const UID: u64 = u32::from_le_bytes(*b"uid\"") as u64;
        const TS: u64 = u32::from_le_bytes(*b"ts\"\0") as u64;
        let RootKeys { waiting, found } = self;
        for &at in waiting.as_slice() {
            let at = at as usize;
            let w = line.u64_at(at + 1);
            let b = w.to_le_bytes();
            let uid = w & 0xFFFF_FFFF == UID;
            let ts = w & 0xFF_FFFF == TS;
            let esc = |k: usize| b[k] == b'\\' && b[k + 1] == b'u';
            let escaped = esc(0)
                | ((b[0] == b'u') | (b[0] == b't')) & esc(1)
                | (b[0] == b'u') & (b[1] == b'i') & esc(2);
            if uid | ts | escaped {
                found.note(line.line(), at, uid, ts, spec);
            }
        }
        waiting.clear();
    }

    /// Every root key, compared with names other than the defaults.
    #[inline(never)]
    fn check_named(&mut self, line: &[u8], spec: &FrameSpec) {
        let RootKeys { waiting, found } = self;
        for &at in waiting.as_slice() {
            let at = at as usize;
            let Some(end) = string_end(line, at + 1) else {
                continue;
            };
            let key = spec.wanted(spec.classify(&line[at + 1..end]));
            if key != RootKey::Other {
                found.found(line, key, end);
            }
        }
        waiting.clear();
    }
}

impl Found {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every block up to 64 bytes past the end is the line's bytes, then spaces;
    /// one that would leave the padding panics rather than reading out of bounds.
    #[test]
    fn padded_blocks_are_the_line_then_spaces() {
        for len in 0..300 {
            let line: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            let padded = Padded::new(&line);
            for at in 0..=len + 64 {
                let want: Vec<u8> = (at..at + 64)
                    .map(|i| line.get(i).copied().unwrap_or(b' '))
                    .collect();
                assert_eq!(&padded.block(at)[..], &want[..], "len {len}, at {at}");
                let word = u64::from_le_bytes(want[..8].try_into().unwrap());
                assert_eq!(padded.u64_at(at), word);
            }
            let past = |at: usize| std::panic::catch_unwind(|| padded.block(at)[0]).is_err();
            assert!(past(len.max(128) + 65), "len {len}");
            assert!(past(len + 193), "len {len}");
        }
    }
}
