//! Distinct counters: one per open window.
//!
//! A frame's uid is hashed once into a [`Counter::Key`], and that key feeds the
//! counters of every granularity. Two kinds:
//! - [`Exact`] keeps the set of 64-bit xxh3 hashes of the uids. Two different uids
//!   collide with probability about n²/2⁶⁵: for 10⁸ distinct users in one window,
//!   below 3·10⁻⁴ that any two collide at all (then the count is one low).
//! - [`Hll`] is an Apache DataSketches HLL sketch, byte-compatible with the Java and
//!   C++ libraries (uids are hashed as raw UTF-8 bytes, as theirs are).

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

use datasketches::common::NumStdDev;
use datasketches::hash::value::raw_bytes;
use datasketches::hll::{Coupon, HllSketch, HllType, HllUnion};

/// What the aggregator needs from a distinct counter.
pub trait Counter: Sized + Send + 'static {
    /// The per-frame hash of a uid, computed once and shared by all granularities.
    type Key: Copy + Send + 'static;
    /// Settings shared by every counter of a run.
    type Config: Clone + Send + std::fmt::Debug + 'static;

    fn key(uid: &[u8]) -> Self::Key;
    fn new(config: &Self::Config) -> Self;
    /// Adds a user. Returns whether the count may have changed.
    fn insert(&mut self, key: Self::Key) -> bool;
    fn count(&self) -> u64;
    /// Relative standard error, for approximate counters.
    fn rse(&self) -> Option<f64>;
    /// The counter's state, for checkpoints.
    fn save(&self) -> CounterState;
    /// Rebuilds a counter from a checkpoint.
    fn load(state: CounterState, config: &Self::Config) -> Result<Self, String>;
    /// The union of `parts` (partial counts of disjoint frames) in one pass, as
    /// the counter's own library defines it; `None` if there are none.
    fn union(parts: Vec<Self>) -> Option<Self>;
}

/// A counter's checkpointed state.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum CounterState {
    /// The 64-bit uid hashes.
    Exact(Vec<u64>),
    /// A DataSketches HLL sketch in its standard binary format.
    Hll(Vec<u8>),
}

/// Hashes are already uniform: hashing them again would only cost time.
#[derive(Default, Clone, Copy)]
pub struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _bytes: &[u8]) {
        unreachable!("IdentityHasher only hashes u64 keys")
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// Exact distinct count over 64-bit uid hashes.
#[derive(Debug, Default, Clone)]
pub struct Exact {
    seen: HashSet<u64, BuildHasherDefault<IdentityHasher>>,
}

impl Counter for Exact {
    type Key = u64;
    type Config = ();

    #[inline(always)]
    fn key(uid: &[u8]) -> u64 {
        xxhash_rust::xxh3::xxh3_64(uid)
    }
    fn new(_: &()) -> Self {
        Exact::default()
    }
    #[inline(always)]
    fn insert(&mut self, key: u64) -> bool {
        self.seen.insert(key)
    }
    fn count(&self) -> u64 {
        self.seen.len() as u64
    }
    fn rse(&self) -> Option<f64> {
        None
    }
    fn save(&self) -> CounterState {
        CounterState::Exact(self.seen.iter().copied().collect())
    }
    fn union(parts: Vec<Self>) -> Option<Self> {
        let mut parts = parts.into_iter();
        let mut all = parts.next()?;
        for p in parts {
            all.seen.extend(p.seen);
        }
        Some(all)
    }
    fn load(state: CounterState, _: &()) -> Result<Self, String> {
        match state {
            CounterState::Exact(hashes) => Ok(Exact {
                seen: hashes.into_iter().collect(),
            }),
            CounterState::Hll(_) => {
                Err("the checkpoint holds HLL sketches, this run counts exactly".into())
            }
        }
    }
}

/// `--precision` for HLL: log2 of the number of registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HllConfig {
    pub lg_k: u8,
}

impl HllConfig {
    /// 2^14 registers: about 0.8% relative standard error.
    pub const DEFAULT_LG_K: u8 = 14;
    pub const MIN_LG_K: u8 = 4;
    pub const MAX_LG_K: u8 = 21;
}

impl Default for HllConfig {
    fn default() -> Self {
        HllConfig {
            lg_k: Self::DEFAULT_LG_K,
        }
    }
}

/// Apache DataSketches HLL sketch.
#[derive(Debug, Clone)]
pub struct Hll {
    sketch: HllSketch,
}

impl Counter for Hll {
    type Key = Coupon;
    type Config = HllConfig;

    #[inline(always)]
    fn key(uid: &[u8]) -> Coupon {
        Coupon::from_value(raw_bytes::from_slice(uid))
    }
    fn new(config: &HllConfig) -> Self {
        Hll {
            sketch: HllSketch::new(config.lg_k, HllType::Hll8).expect("lg_k validated by the CLI"),
        }
    }
    #[inline(always)]
    fn insert(&mut self, key: Coupon) -> bool {
        self.sketch.update_with_coupon(key);
        true
    }
    fn count(&self) -> u64 {
        self.sketch.estimate().round() as u64
    }
    /// The sketch's own one-sigma bound, so small (exact-mode) sketches report ~0.
    fn rse(&self) -> Option<f64> {
        let est = self.sketch.estimate();
        if est <= 0.0 {
            return Some(0.0);
        }
        Some((self.sketch.upper_bound(NumStdDev::One) / est - 1.0).max(0.0))
    }
    fn save(&self) -> CounterState {
        CounterState::Hll(self.sketch.serialize())
    }
    fn union(parts: Vec<Self>) -> Option<Self> {
        let lg_k = parts.first()?.sketch.lg_config_k();
        let mut union = HllUnion::new(lg_k).ok()?;
        for p in &parts {
            union.update(&p.sketch);
        }
        Some(Hll {
            sketch: union.to_sketch(HllType::Hll8),
        })
    }
    fn load(state: CounterState, config: &HllConfig) -> Result<Self, String> {
        match state {
            CounterState::Hll(bytes) => {
                let sketch =
                    HllSketch::deserialize(&bytes).map_err(|e| format!("bad HLL sketch: {e}"))?;
                if sketch.lg_config_k() != config.lg_k {
                    return Err(format!(
                        "the checkpoint's sketches have precision {}, this run asks for {}",
                        sketch.lg_config_k(),
                        config.lg_k
                    ));
                }
                Ok(Hll { sketch })
            }
            CounterState::Exact(_) => {
                Err("the checkpoint holds exact sets, this run counts with HLL".into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_counts_distinct_uids() {
        let mut c = Exact::new(&());
        for uid in ["a", "b", "a", "c", "b"] {
            c.insert(Exact::key(uid.as_bytes()));
        }
        assert_eq!(c.count(), 3);
        assert_eq!(c.rse(), None);
    }

    #[test]
    fn hll_is_within_three_sigma_and_states_its_error() {
        let cfg = HllConfig::default();
        let mut c = Hll::new(&cfg);
        let n = 200_000u64;
        for i in 0..n {
            c.insert(Hll::key(format!("user-{i}").as_bytes()));
        }
        let rse = c.rse().unwrap();
        assert!(rse > 0.0 && rse < 0.01, "rse {rse}");
        let err = (c.count() as f64 - n as f64).abs() / n as f64;
        assert!(err < 3.0 * rse, "error {err} vs rse {rse}");
    }

    #[test]
    fn counters_survive_save_and_load() {
        let mut e = Exact::new(&());
        let mut h = Hll::new(&HllConfig::default());
        for i in 0..10_000 {
            let uid = format!("u{i}");
            e.insert(Exact::key(uid.as_bytes()));
            h.insert(Hll::key(uid.as_bytes()));
        }
        assert_eq!(Exact::load(e.save(), &()).unwrap().count(), e.count());
        assert_eq!(
            Hll::load(h.save(), &HllConfig::default()).unwrap().count(),
            h.count()
        );
        assert!(Hll::load(e.save(), &HllConfig::default()).is_err());
        assert!(Hll::load(h.save(), &HllConfig { lg_k: 12 }).is_err());
    }

    #[test]
    fn hll_matches_datasketches_string_hashing() {
        // DataSketches Java/C++ hash strings as raw UTF-8 bytes; so must we.
        let mut ours = Hll::new(&HllConfig { lg_k: 12 });
        let mut theirs = HllSketch::new(12, HllType::Hll8).unwrap();
        for i in 0..5000 {
            let uid = format!("ü-{i}");
            ours.insert(Hll::key(uid.as_bytes()));
            theirs.update(raw_bytes::from_str(&uid));
        }
        assert_eq!(ours.save(), CounterState::Hll(theirs.serialize()));
    }
}
