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
    /// The state as it is now has been saved: from here on, record what is added,
    /// for [`Counter::save_changes`]. Until the first call nothing is recorded, so a
    /// run without checkpoints pays nothing.
    fn mark_saved(&mut self);
    /// What was added since the last [`Counter::mark_saved`] or `save_changes`, as a
    /// state that [`CounterState::absorb`] adds to the saved one; `None` if nothing.
    /// This is what makes a checkpoint grow with what changed, not with the state.
    fn save_changes(&mut self) -> Option<CounterState>;
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

impl CounterState {
    /// Adds `changes` (from [`Counter::save_changes`]) to this saved state.
    pub fn absorb(&mut self, changes: CounterState) -> Result<(), String> {
        match (self, changes) {
            (CounterState::Exact(all), CounterState::Exact(added)) => all.extend(added),
            // An HLL sketch's changes are the whole (small) sketch: it replaces.
            (CounterState::Hll(all), CounterState::Hll(now)) => *all = now,
            _ => return Err("a change set of another counter kind".into()),
        }
        Ok(())
    }
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
    /// The hashes added since the last checkpoint, once checkpoints are taken.
    added: Option<Vec<u64>>,
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
        let new = self.seen.insert(key);
        if new && let Some(added) = &mut self.added {
            added.push(key);
        }
        new
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
    fn mark_saved(&mut self) {
        self.added = Some(Vec::new());
    }
    fn save_changes(&mut self) -> Option<CounterState> {
        let added = std::mem::take(self.added.as_mut()?);
        (!added.is_empty()).then_some(CounterState::Exact(added))
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
                added: None,
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
    /// Updated since the last checkpoint.
    changed: bool,
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
            changed: false,
        }
    }
    #[inline(always)]
    fn insert(&mut self, key: Coupon) -> bool {
        self.sketch.update_with_coupon(key);
        self.changed = true;
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
    fn mark_saved(&mut self) {
        self.changed = false;
    }
    fn save_changes(&mut self) -> Option<CounterState> {
        std::mem::take(&mut self.changed).then(|| self.save())
    }
    fn union(parts: Vec<Self>) -> Option<Self> {
        let lg_k = parts.first()?.sketch.lg_config_k();
        let mut union = HllUnion::new(lg_k).ok()?;
        for p in &parts {
            union.update(&p.sketch);
        }
        Some(Hll {
            sketch: union.to_sketch(HllType::Hll8),
            changed: true,
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
                Ok(Hll {
                    sketch,
                    changed: false,
                })
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

    /// The saved state plus each change set equals the counter: what an incremental
    /// checkpoint restores. Compared with an independent set of the uids.
    #[test]
    fn changes_absorbed_into_the_saved_state_give_the_whole() {
        let mut e = Exact::new(&());
        let mut h = Hll::new(&HllConfig { lg_k: 10 });
        let mut truth = HashSet::new();
        for i in 0..100 {
            let uid = format!("u{i}");
            e.insert(Exact::key(uid.as_bytes()));
            h.insert(Hll::key(uid.as_bytes()));
            truth.insert(uid);
        }
        let (mut es, mut hs) = (e.save(), h.save());
        e.mark_saved();
        h.mark_saved();
        assert_eq!(e.save_changes(), None, "nothing added yet");
        assert_eq!(h.save_changes(), None);
        for round in 0..3 {
            for i in 0..50 {
                // Half of them seen before: only new hashes are changes.
                let uid = format!("u{}", 75 + round * 40 + i);
                e.insert(Exact::key(uid.as_bytes()));
                h.insert(Hll::key(uid.as_bytes()));
                truth.insert(uid);
            }
            let added = e.save_changes().unwrap();
            let CounterState::Exact(hashes) = &added else {
                panic!()
            };
            assert!(hashes.len() <= 50, "only what is new: {}", hashes.len());
            es.absorb(added).unwrap();
            hs.absorb(h.save_changes().unwrap()).unwrap();
        }
        assert_eq!(Exact::load(es, &()).unwrap().count(), truth.len() as u64);
        assert_eq!(
            Hll::load(hs, &HllConfig { lg_k: 10 }).unwrap().count(),
            h.count()
        );
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
