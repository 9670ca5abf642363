//! Windows: counting a frame into every granularity, closing what the watermark
//! has passed, and emitting what a quiet stream or the end of input makes final.

use super::*;

impl<C: Counter, T: Weigh> Aggregator<C, T> {
    /// End of input: resolves held frames, then emits every open window as final.
    pub fn flush(&mut self, out: &mut Output<T>) {
        self.release_waiting(true, out);
        for lane in 0..self.lanes.len() {
            self.judge_held(lane, out);
        }
        self.emit_open_until(None, out);
    }

    /// Emits as final every open window (the end of input), or those ending by
    /// `over` (a quiet live stream), and records how far each granularity is
    /// published, so that a straggler can never produce a second, partial version 1.
    /// The watermark moves past the finest windows only: moving it past a year
    /// window would make every minute of that year late.
    pub(super) fn emit_open_until(&mut self, over: Option<i64>, out: &mut Output<T>) {
        let kept = self.kept();
        let due: Vec<WindowId> = (self.open.keys())
            .filter(|id| over.is_none_or(|t| id.end <= t))
            .copied()
            .collect();
        if due.is_empty() {
            return;
        }
        for id in due {
            let Some(mut state) = self.open.remove(&id) else {
                continue;
            };
            if state.version == 0 || state.dirty {
                let version = state.version + 1;
                out.windows.push(result(&id, &mut state, version, kept));
            }
            let p = &mut self.published[id.granularity as usize];
            *p = (*p).max(Some(id.end));
        }
        let finest = self.settings.granularities[0];
        self.stream_wm = self.stream_wm.max(self.published[finest as usize]);
        // What a commit may cover: every frame of a window still open stays uncommitted.
        let still_open = self.open.keys().map(|id| id.end).min();
        for l in &mut self.lanes {
            match still_open {
                None => l.runs.clear(),
                Some(_) => {
                    let through = self.stream_wm.unwrap_or(i64::MIN);
                    while l.runs.front().is_some_and(|r| r.1 <= through) {
                        l.runs.pop_front();
                    }
                }
            }
        }
    }

    /// Recomputes the stream watermark from the lanes and closes what it passed.
    pub(super) fn advance(&mut self, out: &mut Output<T>) {
        if self.settings.alignment.is_some() {
            // A lane that has not spoken yet may be anywhere: as Flink does, it
            // counts as the slowest until it speaks or goes idle. Partitions held by
            // other processes do not pause ours: their watermarks come a checkpoint
            // late, and both sides would crawl at one --max-drift per checkpoint.
            self.slowest = self
                .lanes
                .iter()
                .filter(|l| l.holds_back() && l.remote.is_none())
                .map(|l| l.watermark_at(self.clock).unwrap_or(i64::MIN))
                .min();
        }
        let active = self
            .lanes
            .iter()
            .filter(|l| l.holds_back())
            .map(|l| l.watermark_at(self.clock));
        // A lane without any trusted frame yet cannot say how far the stream is.
        let min_active = if active.clone().any(|w| w.is_none()) {
            None
        } else {
            active.flatten().min()
        };
        let candidate = min_active.or_else(|| {
            // Every lane is idle: the most advanced one speaks for the stream.
            let any_active = self.lanes.iter().any(|l| l.holds_back());
            if any_active {
                None
            } else {
                self.lanes.iter().filter_map(|l| l.watermark.get()).max()
            }
        });
        let candidate = self.settled(candidate);
        if candidate > self.stream_wm {
            self.stream_wm = candidate;
            self.close_windows(out);
        }
    }

    /// `candidate`, unless it passes idle lanes of ours that have not yet stayed
    /// silent for [`SETTLE_MS`] since the stream first wanted to pass them: then only
    /// as far as the slowest of them. Each pass waits anew, since the frames that
    /// move the stream again may have come with theirs.
    pub(super) fn settled(&mut self, candidate: Option<i64>) -> Option<i64> {
        let Some(now) = self.tick_ms else {
            return candidate;
        };
        let clock = self.clock;
        let in_the_way = (self.lanes.iter())
            .filter(|l| l.assigned && l.idle && !l.skewed && l.remote.is_none())
            .map(|l| l.watermark_at(clock))
            .filter(|mark| *mark < candidate)
            .min();
        let Some(floor) = in_the_way else {
            self.passing_since = None;
            return candidate;
        };
        match self.passing_since {
            Some(since) if now >= since.saturating_add(SETTLE_MS) => {
                self.passing_since = None;
                candidate
            }
            Some(_) => floor,
            None => {
                self.passing_since = Some(now);
                floor
            }
        }
    }

    pub(super) fn count_released(&mut self, lane: usize, out: &mut Output<T>) {
        if self.released.is_empty() {
            return;
        }
        // Counted before the stream's watermark moves on: they are never late for
        // their own release. (The lane's watermark has moved; the stream's has not.)
        let released = std::mem::take(&mut self.released);
        for (ts, p) in released {
            match self.count(lane, p.pos, ts, p.key) {
                Verdict::Counted => out.released_counted += 1,
                late => out.late.push((p.tag, late)),
            }
        }
    }

    #[inline]
    pub(super) fn count(&mut self, lane: usize, pos: u64, ts: i64, key: C::Key) -> Verdict {
        let wm = self.stream_wm.unwrap_or(i64::MIN);
        let mut missed = GranularitySet::default();
        let mut coarsest_end = None;
        // A finer window that already held this user: every frame that put the user
        // there lay inside it, so each coarser window containing it holds the user
        // too (windows close in order of their ends, coarser ones last). Most
        // frames come from users seen in the same minute: one lookup, not six.
        let mut seen_in: Option<Span> = None;
        for i in 0..self.settings.granularities.len() {
            let g = self.settings.granularities[i];
            let cached = self.span_cache[g as usize];
            let span = if cached.contains(ts) {
                cached
            } else {
                let s = self.calendar.window(g, ts);
                self.span_cache[g as usize] = s;
                s
            };
            if span.end.saturating_add(self.settings.grace) <= wm
                || self.published[g as usize].is_some_and(|p| span.end <= p)
            {
                missed.insert(g);
                continue;
            }
            coarsest_end = Some(span.end);
            let id = WindowId {
                end: span.end,
                granularity: g,
                start: span.start,
            };
            let state = self.open.entry(id).or_insert_with(|| {
                let mut counter = C::new(&self.counter_config);
                if self.tracking {
                    counter.mark_saved();
                }
                WindowState {
                    counter,
                    frames: 0,
                    version: 0,
                    dirty: false,
                    fresh: true,
                }
            });
            state.frames += 1;
            let contains_seen = seen_in.is_some_and(|f| span.start <= f.start && f.end <= span.end);
            let changed = !contains_seen && state.counter.insert(key);
            if !changed && seen_in.is_none() {
                seen_in = Some(span);
            }
            if span.end <= wm {
                // Closed but within grace: a correction, emitted at the next advance.
                state.dirty |= changed || state.version > 0;
            }
        }
        if let Some(end) = coarsest_end {
            let runs = &mut self.lanes[lane].runs;
            if runs.back().is_none_or(|r| r.1 != end) {
                runs.push_back((pos, end));
            }
        }
        if missed.is_empty() {
            Verdict::Counted
        } else {
            Verdict::Late {
                missed,
                counted: missed.len() < self.settings.granularities.len(),
            }
        }
    }

    pub(super) fn close_windows(&mut self, out: &mut Output<T>) {
        let Some(wm) = self.stream_wm else {
            return;
        };
        let grace = self.settings.grace;
        let kept = self.kept();
        let mut expired = Vec::new();
        for (id, state) in self.open.range_mut(..) {
            if id.end > wm {
                break;
            }
            if state.version == 0 || state.dirty {
                state.version += 1;
                state.dirty = false;
                let version = state.version;
                out.windows.push(result(id, state, version, kept));
            }
            if id.end.saturating_add(grace) <= wm {
                expired.push(*id);
            }
        }
        for id in expired {
            self.open.remove(&id);
        }
        for l in &mut self.lanes {
            while l.runs.front().is_some_and(|r| r.1 <= wm) {
                l.runs.pop_front();
            }
        }
    }
}

impl<C: Counter, T: Weigh> Aggregator<C, T> {
    /// What an emitted window carries of its counter: nothing (`None`), all of it
    /// (`Some(false)`), or what it gained since the last checkpoint (`Some(true)`).
    pub(super) fn kept(&self) -> Option<bool> {
        (self.settings.keep_state).then_some(self.settings.keep_changes && self.tracking)
    }
}

/// The one place a window's result is made.
pub(super) fn result<C: Counter>(
    id: &WindowId,
    state: &mut WindowState<C>,
    version: u32,
    kept: Option<bool>,
) -> WindowResult {
    WindowResult {
        granularity: id.granularity,
        span: Span {
            start: id.start,
            end: id.end,
        },
        unique_users: state.counter.count(),
        frames: state.frames,
        version,
        is_final: true,
        rse: state.counter.rse(),
        state: match kept {
            None => None,
            Some(false) => Some(state.counter.save()),
            Some(true) => state.counter.save_changes(),
        },
    }
}
