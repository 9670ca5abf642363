//! Watermark alignment across lanes (Kafka partitions): which lanes to pause,
//! which frames wait for the slowest lane, when they are released, and when a
//! lane that stays behind is given up on as skewed.

use super::{Aggregator, Output, Pending, Verdict};
use crate::counter::Counter;
use crate::watermark::Weigh;

impl<C: Counter, T: Weigh> Aggregator<C, T> {
    /// Alignment: whether a frame of `ts` on `lane` may be counted now. Not if the
    /// lane is ahead of the slowest and the frame beyond the slowest by more than
    /// the drift: counting it would open windows the slowest lane keeps open. The
    /// slowest lane, and a skewed one (judged against the stream), always may. A
    /// lane read to its end still waits: its frames are as far ahead as ever.
    pub(super) fn may_count_now(&self, lane: usize, ts: i64) -> bool {
        let (Some(a), Some(slowest)) = (self.settings.alignment, self.slowest) else {
            return true;
        };
        let l = &self.lanes[lane];
        if l.skewed {
            return true;
        }
        match l.watermark_at(self.clock) {
            Some(own) => own <= slowest || ts <= slowest.saturating_add(a.max_drift),
            None => true,
        }
    }

    /// Counts the waiting frames that alignment now lets through (all of them if
    /// `force`), in event-time order across lanes, so that releasing one lane's
    /// frames never makes another's late.
    pub(super) fn release_waiting(&mut self, force: bool, out: &mut Output<T>) {
        while self.waiting > 0 {
            let next = (0..self.lanes.len())
                .filter_map(|i| self.lanes[i].waiting.front().map(|w| (w.0, i)))
                .filter(|&(ts, i)| force || self.may_count_now(i, ts))
                .min();
            let Some((_, lane)) = next else {
                break;
            };
            self.admit_waiting(lane, out);
            let l = &self.lanes[lane];
            if l.ended && l.waiting.is_empty() {
                self.settle_lane(lane, out);
            } else if !l.assigned && l.waiting.is_empty() {
                // Left with frames waiting before lanes kept holding back (a
                // checkpoint of an earlier version).
                self.finish_lane(lane, out);
            }
        }
    }

    /// Counts (or holds, or finds late) the oldest waiting frame of `lane`.
    pub(super) fn admit_waiting(&mut self, lane: usize, out: &mut Output<T>) {
        let Some((ts, p)) = self.lanes[lane].waiting.pop_front() else {
            return;
        };
        self.waiting -= 1;
        let Pending { key, pos, tag } = p;
        let mut tag = Some(tag);
        let verdict = self.admit(
            lane,
            pos,
            ts,
            key,
            || tag.take().expect("a frame is held at most once"),
            false,
            out,
        );
        match verdict {
            Verdict::Counted => out.released_counted += 1,
            Verdict::Held => {}
            other => out.late.extend(tag.map(|t| (t, other))),
        }
    }

    /// Alignment: pauses the lanes with frames waiting once too many wait, resumes
    /// them once half as many do, and gives up on a lane that stays too far behind.
    pub(super) fn align(&mut self, now_ms: u64, out: &mut Output<T>) {
        let Some(a) = self.settings.alignment else {
            return;
        };
        let clock = self.clock;
        let marks: Vec<(usize, i64)> = self
            .lanes
            .iter()
            .enumerate()
            .filter(|(_, l)| l.holds_back())
            .filter_map(|(i, l)| l.watermark_at(clock).map(|w| (i, w)))
            .collect();
        for (i, l) in self.lanes.iter_mut().enumerate() {
            let Some(w) = marks.iter().find(|m| m.0 == i).map(|m| m.1) else {
                l.paused = false;
                l.behind_since_ms = None;
                // A skewed lane that caught up with the stream holds it back again.
                if l.skewed && l.watermark.get() >= self.stream_wm.map(|s| s - a.max_drift) {
                    l.skewed = false;
                }
                continue;
            };
            let waiting = self.waiting;
            l.paused = !l.waiting.is_empty()
                && if l.paused {
                    waiting > a.max_waiting / 2
                } else {
                    waiting >= a.max_waiting
                };
            let others = marks.iter().filter(|m| m.0 != i).map(|m| m.1).min();
            let behind = others.map_or(0, |o| o - w);
            if behind > a.max_drift {
                let since = *l.behind_since_ms.get_or_insert(now_ms);
                if now_ms.saturating_sub(since) >= a.drift_timeout_ms {
                    l.skewed = true;
                    l.behind_since_ms = None;
                    out.skewed.push((i, behind));
                }
            } else {
                l.behind_since_ms = None;
            }
        }
    }

    /// The lanes the source should not read for now (watermark alignment).
    pub fn paused_lanes(&self) -> Vec<usize> {
        (0..self.lanes.len())
            .filter(|i| self.lanes[*i].paused)
            .collect()
    }
}
