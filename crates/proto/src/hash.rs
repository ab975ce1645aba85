//! A fast, fixed-key hasher for the core's maps keyed by node names.
//!
//! The core's maps are keyed by names that peers choose, but every table is bounded
//! (`neighbours_max`, `lsdb_entries_max`), so the hash-flooding defence of SipHash buys
//! little, while hashing is on the hot path of flooding. A fixed key also makes
//! iteration order a function of history alone, which the twin's determinism needs.

use std::hash::{BuildHasherDefault, Hasher};

/// Multiply-rotate hashing in the style of rustc's FxHasher.
#[derive(Clone, Copy, Debug, Default)]
pub struct FastHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FastHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.add(u64::from_le_bytes(chunk.try_into().expect("8-byte chunk")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(last));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A `HashMap` with [`FastHasher`].
pub type FastMap<K, V> = std::collections::HashMap<K, V, BuildHasherDefault<FastHasher>>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn equal_keys_hash_equal_and_differ_otherwise() {
        let build = BuildHasherDefault::<FastHasher>::default();
        let hash = |s: &str| build.hash_one(s);
        assert_eq!(hash("n0001"), hash("n0001"));
        assert_ne!(hash("n0001"), hash("n0002"));
        assert_ne!(hash("n00010000"), hash("n00010001"));
    }
}
