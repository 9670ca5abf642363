//! Helpers shared by the end-to-end tests: the binary, and exact answers computed
//! from the generator's ground truth (independently of Cardinal's parser).
// Each test crate uses its own subset of these helpers.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::process::Command;

use cardinal::generator::{FrameGen, GenConfig, Truth};
use cardinal::window::{Calendar, Granularity};

/// The binary under test. `CARDINAL_BIN` points the tests at another build, e.g.
/// an older commit's, to watch a new test fail where the behaviour was wrong.
pub fn cardinal() -> Command {
    Command::new(bin())
}

pub fn bin() -> String {
    std::env::var("CARDINAL_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_cardinal").to_string())
}

/// (window, start) -> unique users over the valid frames, in UTC.
pub fn expected_from_truth(
    cfg: &GenConfig,
    grans: &[Granularity],
) -> BTreeMap<(String, String), u64> {
    let cal = Calendar::utc();
    let mut sets: BTreeMap<(String, String), HashSet<String>> = BTreeMap::new();
    for f in FrameGen::new(cfg) {
        if let Truth::Valid { uid, ts } = f.truth {
            for g in grans {
                let w = cal.window(*g, ts);
                sets.entry((g.name().to_string(), cal.format(w.start)))
                    .or_default()
                    .insert(uid.clone());
            }
        }
    }
    sets.into_iter().map(|(k, v)| (k, v.len() as u64)).collect()
}
