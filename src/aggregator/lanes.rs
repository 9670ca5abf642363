//! Lanes over time: idleness and the wall clock, and lanes that come, end, move
//! to another process or are held there (scale-out).

use super::*;

impl<C: Counter, T: Weigh> Aggregator<C, T> {
    /// Wall-clock housekeeping, called periodically by live sources: lanes without
    /// frames for `idle_timeout` stop holding the watermark back, and when every
    /// lane has been quiet for lateness + idle timeout, all open windows are emitted.
    pub fn heartbeat(&mut self, now_ms: u64, out: &mut Output<T>) {
        let idle_ms = self.settings.idle_timeout_ms;
        self.tick_ms = Some(now_ms);
        let mut least_quiet: Option<u64> = None;
        for l in self.lanes.iter_mut().filter(|l| l.assigned) {
            // A paused lane is silent because we asked it to be, not idle; nor is
            // one whose frames wait for alignment (it may have been read to its end).
            if l.paused || !l.waiting.is_empty() {
                l.quiet_before_ms = 0;
            }
            if std::mem::take(&mut l.seen_since_tick) || l.paused || !l.waiting.is_empty() {
                l.last_active_ms = Some(now_ms);
            }
            let quiet = (l.last_active_ms)
                .map(|t| now_ms.saturating_sub(t).saturating_add(l.quiet_before_ms));
            l.idle = quiet.is_none_or(|q| q >= idle_ms);
            if let Some(q) = quiet {
                least_quiet = Some(least_quiet.map_or(q, |m| m.min(q)));
            }
        }
        self.align(now_ms, out);
        self.advance(out);
        self.release_waiting(false, out);
        // Partitions other processes hold and still speak for keep the stream going.
        let remote_active = self.lanes.iter().any(|l| l.remote.is_some());
        let quiet_for = least_quiet.filter(|_| !remote_active);
        let drain_after = idle_ms + self.settings.lateness.max(0) as u64 * 1000;
        // A quiet stream: the open windows go out. Live, only those the wall clock
        // has passed (less the lateness): a day is not over after a quiet minute,
        // and stays open for the frames still to come that day; it goes out once its
        // end has passed, at a later heartbeat of the same quiet. Without a wall
        // clock (a replay of the past), every window goes out; a coarse one may not
        // be over then, and later frames are late for it alone (`published`).
        if quiet_for.is_some_and(|q| q >= drain_after) && !self.open.is_empty() {
            let over = (self.clock.filter(|c| c.trust_recent))
                .map(|c| c.now.saturating_sub(self.settings.lateness.max(0)));
            self.emit_open_until(over, out);
        }
    }

    /// A lane is ours now (an assigned partition). Until it delivers a frame or
    /// goes idle, it holds the watermark back: it may carry older frames.
    pub fn add_lane(&mut self, lane: usize) {
        self.ensure_lane(lane);
        let l = &mut self.lanes[lane];
        l.remote = None;
        l.idle = false;
        l.ended = false;
        l.seen_since_tick = true;
    }

    /// A lane has no more frames (a backfill read it to its end). Once none of its
    /// frames waits for alignment, what its guard holds is judged, as at the end of
    /// input, and it stops holding the watermark back.
    pub fn remove_lane(&mut self, lane: usize, out: &mut Output<T>) {
        if lane >= self.lanes.len() {
            return;
        }
        // Frames of it still waiting for alignment are released as the other lanes
        // catch up, and it keeps holding the stream back until then: leaving now
        // would let the watermark pass what it has yet to count.
        if !self.lanes[lane].waiting.is_empty() {
            self.lanes[lane].ended = true;
            return;
        }
        self.settle_lane(lane, out);
    }

    /// Scale-out: `lane` is about to move to another process. Its frames waiting for
    /// alignment are counted now, and what its guard holds is judged, as at its
    /// end: a handover then carries no frame.
    pub fn settle_before_release(&mut self, lane: usize, out: &mut Output<T>) {
        if lane >= self.lanes.len() {
            return;
        }
        while !self.lanes[lane].waiting.is_empty() {
            self.admit_waiting(lane, out);
        }
        self.judge_held(lane, out);
    }

    /// Scale-out: `lane` moves to another process. Its frames not counted yet (held
    /// by the outlier guard, or waiting for alignment) go with it, in position order,
    /// and it stops holding the stream back here. Its next position stays, for the
    /// handover.
    pub fn release_lane(&mut self, lane: usize) -> Vec<(u64, T)> {
        let Some(l) = self.lanes.get_mut(lane) else {
            return Vec::new();
        };
        let config = self.settings.guard;
        let guard = std::mem::replace(&mut l.guard, OutlierGuard::new(config));
        self.waiting -= l.waiting.len();
        let mut frames: Vec<(u64, T)> = (guard.into_held().into_iter())
            .map(|h| (h.frame.pos, h.frame.tag))
            .chain(l.waiting.drain(..).map(|(_, p)| (p.pos, p.tag)))
            .collect();
        frames.sort_by_key(|f| f.0);
        l.assigned = false;
        l.ended = false;
        l.paused = false;
        l.runs.clear();
        l.anchor = None;
        l.remote = None;
        frames
    }

    /// Per granularity, the instant through which its windows are published final:
    /// the watermark, or later where windows were emitted ahead of it (the end of
    /// input emits every open window). What a restart without a checkpoint needs.
    pub fn final_through(&self) -> Vec<(Granularity, i64)> {
        (self.settings.granularities.iter())
            .filter_map(|&g| Some((g, self.stream_wm.max(self.published[g as usize])?)))
            .collect()
    }

    /// An earlier run published, per granularity, every window ending at or before
    /// the instant given (a restart without a checkpoint learns it from the committed
    /// offsets, see [`Aggregator::final_through`]). A frame for one of those windows
    /// is late, as it was for that run, instead of opening a fresh window that would
    /// be published as final with only the frames replayed since. Never moves back.
    pub fn resume_after(&mut self, final_through: &[(Granularity, i64)]) {
        let ours = |g: &Granularity| self.settings.granularities.contains(g);
        for (g, t) in final_through.iter().filter(|(g, _)| ours(g)) {
            let p = &mut self.published[*g as usize];
            *p = (*p).max(Some(*t));
        }
        // Every granularity is final at least through the earliest of them.
        let through = (final_through.iter())
            .filter(|(g, _)| ours(g))
            .map(|(_, t)| *t)
            .min();
        self.stream_wm = self.stream_wm.max(through);
    }

    /// Scale-out: the partitions other processes hold, each with the watermark its
    /// owner reported, or `None` if it holds nothing back (idle, or read to its
    /// end). Lanes of ours are left alone; remote lanes not listed stop holding back.
    pub fn set_remote(&mut self, remote: &[(usize, Option<Option<i64>>)]) {
        for l in self.lanes.iter_mut() {
            l.remote = None;
        }
        for (lane, mark) in remote {
            if *lane >= self.lanes.len() {
                let (lateness, guard) = (self.settings.lateness, self.settings.guard);
                self.lanes.resize_with(lane + 1, || {
                    let mut l = Lane::new(lateness, guard);
                    l.assigned = false;
                    l
                });
            }
            let l = &mut self.lanes[*lane];
            if !l.assigned {
                l.remote = *mark;
            }
        }
    }

    /// A partition taken over had been silent for `quiet_ms` under its last owner:
    /// its idle clock goes on from there rather than restarting, so a partition
    /// that moves often (a group rebalancing again and again) still goes idle, and
    /// the windows it would hold open for ever still close. Frames void it.
    /// It is not idle before a first look of its own ([`FIRST_LOOK_MS`]).
    pub fn resume_quiet(&mut self, lane: usize, quiet_ms: u64) {
        let idle_ms = self.settings.idle_timeout_ms;
        let first_look = FIRST_LOOK_MS.min(idle_ms / 2);
        if let Some(l) = self.lanes.get_mut(lane) {
            l.quiet_before_ms = quiet_ms.min(idle_ms - first_look);
        }
    }

    /// How long a lane of ours has been silent, as of the last heartbeat.
    pub fn quiet_ms(&self, lane: usize) -> u64 {
        match (self.lanes.get(lane), self.tick_ms) {
            // Spoken since (which voids the last owner's silence), or just taken over.
            (Some(l), _) if l.seen_since_tick => l.quiet_before_ms,
            (Some(l), Some(now)) => (l.last_active_ms).map_or(0, |t| {
                (now.saturating_sub(t)).saturating_add(l.quiet_before_ms)
            }),
            _ => 0,
        }
    }

    /// Lanes of ours that have been silent for the idle timeout.
    pub fn idle_lanes(&self) -> Vec<usize> {
        (self.lanes.iter().enumerate())
            .filter(|(_, l)| l.assigned && l.idle)
            .map(|(i, _)| i)
            .collect()
    }

    /// A lane read to its end with nothing waiting: what its guard holds is judged
    /// while it still holds the stream back, and only then does the watermark move
    /// on without it. The other way round, the frames the guard held (a sparse
    /// lane's last ones, held for being far apart) were late for the windows the
    /// lane's own leaving had closed.
    pub(super) fn settle_lane(&mut self, lane: usize, out: &mut Output<T>) {
        self.judge_held(lane, out);
        let l = &mut self.lanes[lane];
        l.assigned = false;
        l.ended = false;
        self.advance(out);
        self.release_waiting(false, out);
    }

    /// A lane read to its end: its held frames are judged, and the watermark moves.
    pub(super) fn finish_lane(&mut self, lane: usize, out: &mut Output<T>) {
        self.judge_held(lane, out);
        self.advance(out);
    }

    /// Judges the frames the outlier guard still holds on `lane`, as at the end of input.
    pub(super) fn judge_held(&mut self, lane: usize, out: &mut Output<T>) {
        let l = &mut self.lanes[lane];
        l.guard.finish(
            &mut l.watermark,
            Decisions {
                released: &mut self.released,
                outliers: &mut self.outliers,
            },
        );
        out.outliers.extend(self.outliers.drain(..).map(|p| p.tag));
        self.count_released(lane, out);
    }
}
