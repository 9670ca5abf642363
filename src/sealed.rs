//! The one file layout for state Cardinal writes and reads back (checkpoints,
//! partial results): a magic naming the kind of file, a format version, the
//! payload's length and its xxh3 checksum, then the payload. A file cut short, a
//! flipped bit or another kind of file is an error naming what is wrong, never a
//! payload decoded from garbage.

/// Magic (8) + version (4) + length (8) + checksum (8).
pub const HEADER: usize = 8 + 4 + 8 + 8;

/// `payload` behind its header.
pub fn seal(magic: &[u8; 8], version: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(magic);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// The version and the payload of a file sealed with `magic`, checked whole.
pub fn open<'a>(magic: &[u8; 8], what: &str, bytes: &'a [u8]) -> Result<(u32, &'a [u8]), String> {
    if bytes.len() < HEADER || &bytes[..8] != magic {
        return Err(format!("not a Cardinal {what} (bad magic or too short)"));
    }
    let u64_at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[i..i + 8]);
        u64::from_le_bytes(b)
    };
    let mut v = [0u8; 4];
    v.copy_from_slice(&bytes[8..12]);
    let version = u32::from_le_bytes(v);
    let len = u64_at(12);
    let payload = &bytes[HEADER..];
    if payload.len() as u64 != len {
        return Err(format!(
            "truncated: {} payload bytes, header says {len}",
            payload.len()
        ));
    }
    if xxhash_rust::xxh3::xxh3_64(payload) != u64_at(20) {
        return Err("checksum mismatch".into());
    }
    Ok((version, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_single_bit_flip_is_caught() {
        let sealed = seal(b"CARDTEST", 7, b"some payload of a few bytes");
        assert_eq!(
            open(b"CARDTEST", "test", &sealed),
            Ok((7, &b"some payload of a few bytes"[..]))
        );
        for bit in 0..sealed.len() * 8 {
            let mut bad = sealed.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            // The version field is not covered: a flip there changes the version,
            // which callers check.
            if (8..12).contains(&(bit / 8)) {
                continue;
            }
            assert!(
                open(b"CARDTEST", "test", &bad).is_err(),
                "bit {bit} let through"
            );
        }
        assert!(open(b"CARDTEST", "test", &sealed[..sealed.len() - 1]).is_err());
        assert!(open(b"OTHERONE", "test", &sealed).is_err());
    }
}
