//! A list of byte positions in a fixed buffer that is never cleared: what the
//! fast path keeps of the brackets of a window and of the root keys it has yet
//! to look at. Its own module so that both users depend on it, and not on each
//! other.

use std::mem::MaybeUninit;

/// Up to `N` positions. Invariant: the first `len` entries are initialized, and
/// `len <= N`. Only [`Positions::push_bits`] writes entries and raises `len`, so
/// the invariant holds by construction, and reading them back needs no promise
/// from the caller.
pub(super) struct Positions<const N: usize> {
    at: [MaybeUninit<u32>; N],
    len: usize,
}

impl<const N: usize> Positions<N> {
    /// Empty. The buffer is left uninitialized: no need to clear kilobytes for
    /// every frame.
    #[inline(always)]
    pub fn new() -> Self {
        Positions {
            at: [MaybeUninit::uninit(); N],
            len: 0,
        }
    }

    #[inline(always)]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline(always)]
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Appends `pos` plus the index of each set bit of `bits`: four stores
    /// without a branch, since most blocks have fewer bits. Panics (and appends
    /// nothing) unless there is room for a whole block, `len + 64 <= N`: one
    /// bounds check for the block instead of one per store (a store each cost
    /// a compare and a branch, 9% of the fast path's instructions went here).
    #[inline(always)]
    pub fn push_bits(&mut self, pos: usize, bits: u64) {
        let len = self.len;
        let out: &mut [MaybeUninit<u32>; 64] = (&mut self.at[len..len + 64])
            .try_into()
            .expect("a range of 64 is 64 long");
        let mut b = bits;
        for slot in &mut out[..4] {
            slot.write((pos as u32).wrapping_add(b.trailing_zeros()));
            b &= b.wrapping_sub(1);
        }
        let mut i = 4;
        while b != 0 {
            out[i].write((pos as u32).wrapping_add(b.trailing_zeros()));
            b &= b - 1;
            i += 1;
        }
        // Entries `len..len + popcount` were all written just above (the first
        // four by the unconditional stores, the rest by the loop).
        self.len = len + bits.count_ones() as usize;
    }

    /// The positions pushed since the last [`clear`](Positions::clear).
    #[inline(always)]
    pub fn as_slice(&self) -> &[u32] {
        // SAFETY: by the type's invariant, `len <= N` and the first `len`
        // entries are initialized; `MaybeUninit<u32>` has the layout of `u32`.
        unsafe { std::slice::from_raw_parts(self.at.as_ptr().cast::<u32>(), self.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushes_positions_of_bits_in_order() {
        let mut p = Positions::<80>::new();
        p.push_bits(64, 0);
        assert_eq!(p.as_slice(), &[] as &[u32]);
        p.push_bits(64, 0b1010_0001);
        assert_eq!(p.as_slice(), &[64, 69, 71]);
        p.push_bits(0, u64::MAX);
        assert_eq!(p.len(), 67);
        assert_eq!(p.as_slice()[3..], (0..64).collect::<Vec<u32>>()[..]);
        p.clear();
        assert!(p.as_slice().is_empty());
    }

    #[test]
    fn a_push_past_the_end_panics_and_appends_nothing() {
        let mut p = Positions::<65>::new();
        p.push_bits(0, 0b11);
        let full = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            p.push_bits(0, u64::MAX);
        }));
        assert!(full.is_err());
        assert_eq!(p.as_slice(), &[0, 1]);
    }
}
