//! The aggregator's state for a checkpoint, and its restoration: open windows with
//! their counters, and per lane its watermark, held and waiting frames, commit runs
//! and next position. A checkpoint is whole, or a change set on top of the previous
//! one: the lanes and every open window's figures, but of each counter only what
//! was added since (an exact year window over 10⁸ users would otherwise rewrite
//! 0.8 GB at every checkpoint). [`Snapshot::absorb`] folds a change set in.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::{Aggregator, Pending, Settings, WindowId, WindowState};
use crate::counter::{Counter, CounterState};
use crate::watermark::{Held, OutlierGuard, Watermark, Weigh};
use crate::window::{Calendar, Granularity, Span};

/// The most lanes a snapshot may name: a lane is a slot in a vector, and a Kafka
/// topic has far fewer partitions than this (a cluster's limit is about 10^5–10^6).
const MAX_LANES: usize = 1 << 20;

/// The aggregator's state in a checkpoint. `H` is the caller's form of a held frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot<H> {
    /// Whole, or only the changes since the previous snapshot.
    pub whole: bool,
    pub stream_wm: Option<i64>,
    pub windows: Vec<WindowSnapshot>,
    pub lanes: Vec<LaneSnapshot<H>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowSnapshot {
    pub granularity: Granularity,
    pub start: i64,
    pub end: i64,
    pub frames: u64,
    /// The last version emitted (0: not emitted yet).
    pub version: u32,
    pub dirty: bool,
    /// The counter (whole), or what was added to it since the previous snapshot
    /// (`None`: nothing). A window opened since then carries its whole counter.
    pub counter: Option<CounterState>,
    /// Opened since the previous snapshot.
    pub fresh: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LaneSnapshot<H> {
    pub index: usize,
    pub watermark: Watermark,
    pub held: Vec<Held<HeldSnapshot<H>>>,
    pub assigned: bool,
    pub runs: Vec<(u64, i64)>,
    pub next_pos: Option<u64>,
    /// Alignment: `(ts, frame)` waiting for the slowest lane.
    #[serde(default = "Vec::new")]
    pub waiting: Vec<(i64, HeldSnapshot<H>)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldSnapshot<H> {
    pub pos: u64,
    pub frame: H,
}

impl<H> Snapshot<H> {
    /// Folds in `changes`, the next snapshot of the same aggregator: windows it
    /// does not list have closed since, its lanes replace ours.
    pub fn absorb(&mut self, changes: Snapshot<H>) -> Result<(), String> {
        if changes.whole {
            *self = changes;
            return Ok(());
        }
        let mut before: HashMap<(Granularity, i64), WindowSnapshot> = (self.windows.drain(..))
            .map(|w| ((w.granularity, w.start), w))
            .collect();
        for mut w in changes.windows {
            let id = (w.granularity, w.start);
            match before.remove(&id) {
                Some(old) if !w.fresh => {
                    let mut counter = old.counter;
                    if let (Some(saved), Some(added)) = (&mut counter, w.counter) {
                        saved.absorb(added)?;
                    }
                    w.counter = counter;
                }
                None if !w.fresh => {
                    return Err(format!(
                        "changes to the {:?} window at {} that the checkpoint does not have",
                        w.granularity, w.start
                    ));
                }
                _ => {}
            }
            if w.counter.is_none() {
                return Err(format!(
                    "the {:?} window at {} has no counter",
                    w.granularity, w.start
                ));
            }
            w.fresh = false;
            self.windows.push(w);
        }
        self.stream_wm = changes.stream_wm;
        self.lanes = changes.lanes;
        Ok(())
    }
}

impl<C: Counter, T: Weigh> Aggregator<C, T> {
    /// The whole state. `held` turns a held frame's tag into something serializable
    /// (the caller keeps the raw frame there).
    pub fn snapshot<H>(&self, held: impl Fn(&T) -> H) -> Snapshot<H> {
        let windows = (self.open.iter())
            .map(|(id, w)| WindowSnapshot {
                granularity: id.granularity,
                start: id.start,
                end: id.end,
                frames: w.frames,
                version: w.version,
                dirty: w.dirty,
                counter: Some(w.counter.save()),
                fresh: false,
            })
            .collect();
        self.snapshot_with(true, windows, held)
    }

    /// A snapshot for a checkpoint: with `changes`, only what changed since the
    /// previous one (if there is one this aggregator kept track from; otherwise
    /// whole). From here on, counters record what is added for the next one.
    pub fn checkpoint<H>(&mut self, changes: bool, held: impl Fn(&T) -> H) -> Snapshot<H> {
        if !changes || !self.tracking {
            let whole = self.snapshot(held);
            for w in self.open.values_mut() {
                w.counter.mark_saved();
                w.fresh = false;
            }
            self.tracking = true;
            return whole;
        }
        let windows = (self.open.iter_mut())
            .map(|(id, w)| {
                let counter = if w.fresh {
                    w.counter.mark_saved();
                    Some(w.counter.save())
                } else {
                    w.counter.save_changes()
                };
                let fresh = std::mem::take(&mut w.fresh);
                WindowSnapshot {
                    granularity: id.granularity,
                    start: id.start,
                    end: id.end,
                    frames: w.frames,
                    version: w.version,
                    dirty: w.dirty,
                    counter,
                    fresh,
                }
            })
            .collect();
        self.snapshot_with(false, windows, held)
    }

    fn snapshot_with<H>(
        &self,
        whole: bool,
        windows: Vec<WindowSnapshot>,
        held: impl Fn(&T) -> H,
    ) -> Snapshot<H> {
        Snapshot {
            whole,
            stream_wm: self.stream_wm,
            windows,
            lanes: self
                .lanes
                .iter()
                .enumerate()
                .map(|(index, l)| LaneSnapshot {
                    index,
                    watermark: l.watermark,
                    held: l
                        .guard
                        .held()
                        .map(|h| Held {
                            ts: h.ts,
                            supported: h.supported,
                            contradicted: h.contradicted,
                            frame: HeldSnapshot {
                                pos: h.frame.pos,
                                frame: held(&h.frame.tag),
                            },
                        })
                        .collect(),
                    assigned: l.assigned,
                    runs: l.runs.iter().copied().collect(),
                    next_pos: l.next_pos,
                    waiting: l
                        .waiting
                        .iter()
                        .map(|(ts, p)| {
                            let frame = held(&p.tag);
                            (*ts, HeldSnapshot { pos: p.pos, frame })
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    /// Rebuilds an aggregator from [`Aggregator::snapshot`]. `unheld` recovers a held
    /// frame's key and tag (by parsing the raw frame again).
    pub fn restore<H>(
        calendar: Calendar,
        settings: Settings,
        counter_config: C::Config,
        snapshot: Snapshot<H>,
        unheld: impl Fn(H) -> Option<(C::Key, T)>,
    ) -> Result<Self, String> {
        if !snapshot.whole {
            return Err("a change set without the checkpoint it changes".into());
        }
        let mut agg = Aggregator::new(calendar, settings, counter_config);
        // A checkpoint passes its checksum and still may not be one we wrote (an
        // older build's bug, a hand-made file): nothing in it is trusted before it
        // is checked, so that a bad one is an error, never a panic or an abort.
        agg.check_snapshot(&snapshot)?;
        agg.stream_wm = snapshot.stream_wm;
        // The state is the checkpoint's: the next one can hold only what changes.
        agg.tracking = true;
        for w in snapshot.windows {
            let state = w.counter.ok_or("a window without its counter")?;
            let mut counter = C::load(state, &agg.counter_config)?;
            counter.mark_saved();
            agg.open.insert(
                WindowId {
                    end: w.end,
                    granularity: w.granularity,
                    start: w.start,
                },
                WindowState {
                    counter,
                    frames: w.frames,
                    version: w.version,
                    dirty: w.dirty,
                    fresh: false,
                },
            );
        }
        for l in snapshot.lanes {
            let mut held = Vec::new();
            for h in l.held {
                let (key, tag) = unheld(h.frame.frame)
                    .ok_or("a held frame in the checkpoint no longer parses")?;
                held.push(Held {
                    ts: h.ts,
                    supported: h.supported,
                    contradicted: h.contradicted,
                    frame: Pending {
                        key,
                        pos: h.frame.pos,
                        tag,
                    },
                });
            }
            let mut waiting = VecDeque::new();
            for (ts, h) in l.waiting {
                let (key, tag) =
                    unheld(h.frame).ok_or("a waiting frame in the checkpoint no longer parses")?;
                waiting.push_back((
                    ts,
                    Pending {
                        key,
                        pos: h.pos,
                        tag,
                    },
                ));
            }
            agg.waiting += waiting.len();
            agg.ensure_lane(l.index);
            let lane = &mut agg.lanes[l.index];
            lane.waiting = waiting;
            lane.watermark = l.watermark;
            lane.guard = OutlierGuard::restore(agg.settings.guard, held);
            lane.assigned = l.assigned;
            lane.runs = l.runs.into_iter().collect();
            lane.next_pos = l.next_pos;
            // Wall-clock idleness starts afresh: the restart itself was a pause.
            lane.seen_since_tick = l.assigned;
        }
        Ok(agg)
    }

    /// What [`Aggregator::restore`] checks before it trusts a snapshot: lane
    /// numbers a partition can have, windows that are this calendar's windows of
    /// their granularity, and frame times it can window.
    fn check_snapshot<H>(&self, snapshot: &Snapshot<H>) -> Result<(), String> {
        for w in &snapshot.windows {
            let real = (0..=self.max_ts)
                .contains(&w.start)
                .then(|| self.calendar.checked_window(w.granularity, w.start))
                .flatten();
            if real
                != Some(Span {
                    start: w.start,
                    end: w.end,
                })
            {
                return Err(format!(
                    "a {} window [{}, {}) that is not one of this calendar's",
                    w.granularity, w.start, w.end
                ));
            }
        }
        for l in &snapshot.lanes {
            if l.index >= MAX_LANES {
                return Err(format!(
                    "lane {} (at most {MAX_LANES} are possible)",
                    l.index
                ));
            }
            let times = (l.held.iter().map(|h| h.ts)).chain(l.waiting.iter().map(|w| w.0));
            for ts in times {
                if !(0..=self.max_ts).contains(&ts) {
                    return Err(format!(
                        "a frame of lane {} held at ts {ts}, out of range",
                        l.index
                    ));
                }
            }
        }
        Ok(())
    }

    /// Each lane's next position: where to resume reading after restoring a snapshot.
    pub fn next_positions(&self) -> Vec<(usize, u64)> {
        self.lanes
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.next_pos.map(|p| (i, p)))
            .collect()
    }
}
