//! The aggregator's whole state for a checkpoint, and its restoration: open
//! windows with their counters, and per lane its watermark, held and waiting
//! frames, commit runs and next position.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::{Aggregator, Pending, Settings, WindowId, WindowState};
use crate::counter::{Counter, CounterState};
use crate::watermark::{Held, OutlierGuard, Watermark};
use crate::window::{Calendar, Granularity};

/// The aggregator's state in a checkpoint. `H` is the caller's form of a held frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot<H> {
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
    pub counter: CounterState,
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

impl<C: Counter, T> Aggregator<C, T> {
    /// The whole state, for a checkpoint. `held` turns a held frame's tag into
    /// something serializable (the caller keeps the raw frame there).
    pub fn snapshot<H>(&self, held: impl Fn(&T) -> H) -> Snapshot<H> {
        Snapshot {
            stream_wm: self.stream_wm,
            windows: self
                .open
                .iter()
                .map(|(id, w)| WindowSnapshot {
                    granularity: id.granularity,
                    start: id.start,
                    end: id.end,
                    frames: w.frames,
                    version: w.version,
                    dirty: w.dirty,
                    counter: w.counter.save(),
                })
                .collect(),
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
        let mut agg = Aggregator::new(calendar, settings, counter_config);
        agg.stream_wm = snapshot.stream_wm;
        for w in snapshot.windows {
            let counter = C::load(w.counter, &agg.counter_config)?;
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

    /// Each lane's next position: where to resume reading after restoring a snapshot.
    pub fn next_positions(&self) -> Vec<(usize, u64)> {
        self.lanes
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.next_pos.map(|p| (i, p)))
            .collect()
    }
}
