//! The windowed aggregator: assigns each frame to its window of every granularity,
//! keeps one distinct counter per open window, and emits a window's result as soon
//! as the watermark makes it final.
//!
//! Pure: it takes `(ts, key)` values and returns results; it reads no clock and does
//! no I/O. Open windows sit in a `BTreeMap` ordered by end, so advancing the
//! watermark pops the closed ones from the front.
//!
//! Emission rule:
//! - A window is emitted (version 1, `final: true`) when the watermark reaches its end.
//! - With grace `G`, it stays correctable until the watermark reaches `end + G`. A
//!   late frame that changes it marks it dirty, and the next watermark advance (or
//!   the end of input) emits a correction with the next version.
//! - A frame whose window is past `end + G` is late for that granularity and is
//!   reported back with the granularities it missed.
//! - `flush` (end of input) emits every open window as final.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::counter::{Counter, CounterState};
use crate::watermark::{
    Admission, Decisions, GuardConfig, Held, OutlierGuard, WallClock, Watermark,
};
use crate::window::{Calendar, Granularity, Span};

/// How the aggregator behaves; everything is in seconds.
#[derive(Debug, Clone)]
pub struct Settings {
    pub granularities: Vec<Granularity>,
    pub lateness: i64,
    pub grace: i64,
    pub guard: GuardConfig,
    /// A lane without frames for this long stops holding the watermark back.
    pub idle_timeout_ms: u64,
    /// Watermark alignment across lanes (Kafka partitions); `None` for one lane.
    pub alignment: Option<Alignment>,
    /// Emitted windows carry their counter's state (it costs a copy per window).
    pub keep_state: bool,
}

/// Watermark alignment, as Flink does it: lanes too far ahead of the slowest are
/// paused, so reading speed never decides what is late and open windows stay
/// bounded by the drift; a lane that stays too far behind anyway (a skewed clock)
/// is judged against the stream after a while instead of holding it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Alignment {
    /// Pause a lane whose watermark is this far ahead of the slowest (seconds);
    /// resume it at half of that.
    pub max_drift: i64,
    /// A lane behind all others by more than `max_drift` for this long (wall clock)
    /// is skewed: it stops holding the stream back and its frames are judged
    /// against the stream (late, if they are).
    pub drift_timeout_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            granularities: vec![Granularity::Minute],
            lateness: 5,
            grace: 0,
            guard: GuardConfig::default(),
            idle_timeout_ms: 30_000,
            alignment: None,
            keep_state: false,
        }
    }
}

/// One emitted window.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowResult {
    pub granularity: Granularity,
    pub span: Span,
    pub unique_users: u64,
    pub frames: u64,
    pub version: u32,
    pub is_final: bool,
    /// Relative standard error; `Some` for approximate counters.
    pub rse: Option<f64>,
    /// The counter itself, when [`Settings::keep_state`] asks for it (partial
    /// results to merge, sketches for downstream).
    pub state: Option<CounterState>,
}

/// A set of granularities, as a bitmask.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GranularitySet(u8);

impl GranularitySet {
    pub fn insert(&mut self, g: Granularity) {
        self.0 |= 1 << g as u8;
    }
    pub fn contains(&self, g: Granularity) -> bool {
        self.0 & (1 << g as u8) != 0
    }
    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }
    pub fn len(&self) -> usize {
        self.0.count_ones() as usize
    }
    pub fn iter(self) -> impl Iterator<Item = Granularity> {
        Granularity::ALL
            .into_iter()
            .filter(move |g| self.contains(*g))
    }
}

/// What happened to the frame just ingested.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Counted in every granularity.
    Counted,
    /// Too late for the granularities in `missed`; `counted` if it still counted
    /// for the others.
    Late {
        missed: GranularitySet,
        counted: bool,
    },
    /// Far ahead of the stream: held until the traffic confirms or contradicts it.
    Held,
    /// Outside the range of timestamps whose windows the calendar can represent.
    OutOfRange,
}

/// Results produced while ingesting, drained by the caller.
#[derive(Debug)]
pub struct Output<T> {
    pub windows: Vec<WindowResult>,
    /// Previously held frames that turned out late once released.
    pub late: Vec<(T, Verdict)>,
    /// Previously held frames that were released and counted.
    pub released_counted: u64,
    /// Held frames convicted as outliers: never counted.
    pub outliers: Vec<T>,
    /// Lanes just found skewed: `(lane, seconds behind the others)`.
    pub skewed: Vec<(usize, i64)>,
}

impl<T> Default for Output<T> {
    fn default() -> Self {
        Output {
            windows: Vec::new(),
            late: Vec::new(),
            released_counted: 0,
            outliers: Vec::new(),
            skewed: Vec::new(),
        }
    }
}

impl<T> Output<T> {
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
            && self.late.is_empty()
            && self.outliers.is_empty()
            && self.released_counted == 0
            && self.skewed.is_empty()
    }
    pub fn clear(&mut self) {
        self.windows.clear();
        self.late.clear();
        self.outliers.clear();
        self.released_counted = 0;
        self.skewed.clear();
    }
}

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

/// Ordered by end first, so the closed windows are always at the front.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct WindowId {
    end: i64,
    granularity: Granularity,
    start: i64,
}

#[derive(Debug)]
struct WindowState<C> {
    counter: C,
    frames: u64,
    version: u32,
    dirty: bool,
}

/// A frame held by the outlier guard.
#[derive(Debug)]
struct Pending<K, T> {
    key: K,
    pos: u64,
    tag: T,
}

/// One input lane: a file, or a Kafka partition. Each has its own event clock,
/// because partitions progress independently.
struct Lane<K, T> {
    watermark: Watermark,
    guard: OutlierGuard<Pending<K, T>>,
    /// Received a frame since the last heartbeat.
    seen_since_tick: bool,
    last_active_ms: Option<u64>,
    idle: bool,
    assigned: bool,
    /// `(position, end of the coarsest window)` where that end changes: the first
    /// position of a run whose window is still open cannot be committed yet.
    runs: VecDeque<(u64, i64)>,
    next_pos: Option<u64>,
    /// Live sources: `(wall clock, max trusted ts)` when the lane last proved to be
    /// caught up (its newest frame was recent). Its event time is then taken to
    /// advance with the wall clock while it is silent, so a sparse partition does
    /// not hold results back between its frames.
    anchor: Option<(i64, i64)>,
    /// Alignment: the source should not read this lane for now.
    paused: bool,
    /// Alignment: since when (wall ms) this lane has been too far behind the others.
    behind_since_ms: Option<u64>,
    /// Alignment gave up waiting for it: it no longer holds the stream back.
    skewed: bool,
    /// Alignment: `(ts, frame)` read before the pause took effect, too far ahead of
    /// the slowest lane to count yet. In position order; bounded by what was in
    /// flight between the source and here when the lane was paused.
    waiting: VecDeque<(i64, Pending<K, T>)>,
}

impl<K, T> Lane<K, T> {
    /// Holds the stream's watermark back: ours, speaking, and in step.
    fn holds_back(&self) -> bool {
        self.assigned && !self.idle && !self.skewed
    }

    /// The lane's watermark, extrapolated along the wall clock if it is caught up.
    fn watermark_at(&self, clock: Option<WallClock>) -> Option<i64> {
        let own = self.watermark.get();
        match (self.anchor, clock) {
            (Some((wall, ts)), Some(c)) if c.trust_recent => {
                let now_ts = ts.saturating_add(c.now.saturating_sub(wall).max(0));
                own.max(Some(now_ts.saturating_sub(self.watermark.lateness())))
            }
            _ => own,
        }
    }

    fn new(lateness: i64, guard: GuardConfig) -> Self {
        Lane {
            watermark: Watermark::new(lateness),
            guard: OutlierGuard::new(guard),
            seen_since_tick: false,
            last_active_ms: None,
            idle: false,
            assigned: true,
            runs: VecDeque::new(),
            next_pos: None,
            anchor: None,
            paused: false,
            behind_since_ms: None,
            skewed: false,
            waiting: VecDeque::new(),
        }
    }
}

/// The aggregator. `C` counts users; `T` tags held frames so that the caller can
/// report them (a source position, the raw bytes) when they come back.
///
/// Frames arrive on lanes (files: lane 0; Kafka: one per partition). The stream's
/// watermark is the minimum over the lanes that are active, never moves back, and
/// is restored with the rest of the state from a checkpoint.
pub struct Aggregator<C: Counter, T> {
    calendar: Calendar,
    settings: Settings,
    counter_config: C::Config,
    lanes: Vec<Lane<C::Key, T>>,
    /// The stream's watermark: what closes windows.
    stream_wm: Option<i64>,
    open: BTreeMap<WindowId, WindowState<C>>,
    /// Last window seen per granularity: consecutive frames almost always share it.
    span_cache: [Span; 6],
    released: Vec<(i64, Pending<C::Key, T>)>,
    outliers: Vec<Pending<C::Key, T>>,
    /// The largest `ts` whose windows the calendar can represent.
    max_ts: i64,
    /// The wall clock, for live sources: set before each batch of frames.
    clock: Option<WallClock>,
    /// Alignment: the slowest watermark among the lanes that hold the stream back.
    slowest: Option<i64>,
    /// Alignment: frames waiting on all lanes.
    waiting: usize,
}

impl<C: Counter, T> Aggregator<C, T> {
    pub fn new(calendar: Calendar, settings: Settings, counter_config: C::Config) -> Self {
        let mut granularities = settings.granularities.clone();
        granularities.sort();
        granularities.dedup();
        let mut settings = Settings {
            granularities,
            ..settings
        };
        if settings.granularities.is_empty() {
            settings.granularities.push(Granularity::Minute);
        }
        let max_ts = calendar.max_ts(&settings.granularities);
        Aggregator {
            calendar,
            settings,
            counter_config,
            lanes: Vec::new(),
            stream_wm: None,
            open: BTreeMap::new(),
            span_cache: [Span { start: 0, end: 0 }; 6],
            released: Vec::new(),
            outliers: Vec::new(),
            max_ts,
            clock: None,
            slowest: None,
            waiting: 0,
        }
    }

    /// The range of `ts` this aggregator can window: others are [`Verdict::OutOfRange`].
    pub fn ts_range(&self) -> (i64, i64) {
        (0, self.max_ts)
    }

    /// The wall clock for the frames that follow (live sources only; `None` for
    /// files and backfills, where it says nothing about event time).
    pub fn set_clock(&mut self, clock: Option<WallClock>) {
        self.clock = clock;
    }

    pub fn alignment(&self) -> Option<Alignment> {
        self.settings.alignment
    }

    pub fn calendar(&self) -> &Calendar {
        &self.calendar
    }

    /// The stream's watermark: windows ending at or before it are final.
    pub fn watermark(&self) -> Option<i64> {
        self.stream_wm
    }

    /// The highest trusted event time on any lane.
    pub fn max_trusted(&self) -> Option<i64> {
        self.lanes
            .iter()
            .filter_map(|l| l.watermark.max_trusted())
            .max()
    }

    pub fn open_windows(&self) -> usize {
        self.open.len()
    }

    /// Distinct users summed over the open windows (for metrics; O(open windows)).
    pub fn open_users(&self) -> u64 {
        self.open.values().map(|w| w.counter.count()).sum()
    }

    /// Each lane's watermark, for lanes that have one.
    pub fn lane_watermarks(&self) -> Vec<(usize, i64)> {
        (self.lanes.iter().enumerate())
            .filter_map(|(i, l)| l.watermark.get().map(|w| (i, w)))
            .collect()
    }

    fn ensure_lane(&mut self, lane: usize) {
        if lane >= self.lanes.len() {
            let (lateness, guard) = (self.settings.lateness, self.settings.guard);
            self.lanes.resize_with(lane + 1, || {
                let mut l = Lane::new(lateness, guard);
                l.assigned = false;
                l
            });
        }
        self.lanes[lane].assigned = true;
    }

    /// Ingests one frame from `lane` at source position `pos` (an offset or a line).
    /// `tag` is called only if the frame is held.
    #[inline]
    pub fn ingest(
        &mut self,
        lane: usize,
        pos: u64,
        ts: i64,
        key: C::Key,
        tag: impl FnOnce() -> T,
        out: &mut Output<T>,
    ) -> Verdict {
        self.ensure_lane(lane);
        let l = &mut self.lanes[lane];
        l.seen_since_tick = true;
        l.next_pos = Some(pos + 1);
        if !(0..=self.max_ts).contains(&ts) {
            return Verdict::OutOfRange;
        }
        let was_idle = std::mem::replace(&mut l.idle, false);
        if self.settings.alignment.is_some()
            && (!self.lanes[lane].waiting.is_empty() || !self.may_count_now(lane, ts))
        {
            let l = &mut self.lanes[lane];
            l.waiting.push_back((
                ts,
                Pending {
                    key,
                    pos,
                    tag: tag(),
                },
            ));
            // Stop the source at once: what it still sends for this lane waits too.
            l.paused = true;
            self.waiting += 1;
            self.release_waiting(false, out);
            return Verdict::Held;
        }
        let slowest = self.slowest;
        let verdict = self.admit(lane, pos, ts, key, tag, was_idle, out);
        if self.waiting > 0 && self.slowest != slowest {
            self.release_waiting(false, out);
        }
        verdict
    }

    /// The outlier guard, then the windows: what [`Aggregator::ingest`] does with a
    /// frame that alignment lets through.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn admit(
        &mut self,
        lane: usize,
        pos: u64,
        ts: i64,
        key: C::Key,
        tag: impl FnOnce() -> T,
        was_idle: bool,
        out: &mut Output<T>,
    ) -> Verdict {
        let l = &mut self.lanes[lane];
        let before = l.watermark.get();
        let admission = l.guard.admit(
            &mut l.watermark,
            ts,
            self.clock,
            || Pending {
                key,
                pos,
                tag: tag(),
            },
            Decisions {
                released: &mut self.released,
                outliers: &mut self.outliers,
            },
        );
        let moved = l.watermark.get() != before;
        if let (Some(c), Some(max)) = (self.clock, l.watermark.max_trusted())
            && c.trust_recent
            && max >= c.now.saturating_sub(self.settings.guard.max_ahead)
        {
            l.anchor = Some((c.now, max));
        }
        out.outliers.extend(self.outliers.drain(..).map(|p| p.tag));
        // Count first, close after: what this frame released is never late for it.
        let verdict = match admission {
            Admission::Trusted => self.count(lane, pos, ts, key),
            Admission::Held => Verdict::Held,
        };
        self.count_released(lane, out);
        if moved || was_idle {
            self.advance(out);
        }
        verdict
    }

    /// Alignment: whether a frame of `ts` on `lane` may be counted now. Not if the
    /// lane is ahead of the slowest and the frame beyond the slowest by more than
    /// the drift: counting it would open windows the slowest lane keeps open. The
    /// slowest lane, and a skewed one (judged against the stream), always may. A
    /// lane read to its end still waits: its frames are as far ahead as ever.
    fn may_count_now(&self, lane: usize, ts: i64) -> bool {
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
    fn release_waiting(&mut self, force: bool, out: &mut Output<T>) {
        while self.waiting > 0 {
            let next = (0..self.lanes.len())
                .filter_map(|i| self.lanes[i].waiting.front().map(|w| (w.0, i)))
                .filter(|&(ts, i)| force || self.may_count_now(i, ts))
                .min();
            let Some((_, lane)) = next else {
                break;
            };
            self.admit_waiting(lane, out);
            if !self.lanes[lane].assigned && self.lanes[lane].waiting.is_empty() {
                self.finish_lane(lane, out);
            }
        }
    }

    /// Counts (or holds, or finds late) the oldest waiting frame of `lane`.
    fn admit_waiting(&mut self, lane: usize, out: &mut Output<T>) {
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

    /// Wall-clock housekeeping, called periodically by live sources: lanes without
    /// frames for `idle_timeout` stop holding the watermark back, and when every
    /// lane has been quiet for lateness + idle timeout, all open windows are emitted.
    pub fn heartbeat(&mut self, now_ms: u64, out: &mut Output<T>) {
        let idle_ms = self.settings.idle_timeout_ms;
        let mut latest_activity = None;
        for l in self.lanes.iter_mut().filter(|l| l.assigned) {
            // A paused lane is silent because we asked it to be, not idle.
            if std::mem::take(&mut l.seen_since_tick) || l.paused {
                l.last_active_ms = Some(now_ms);
            }
            l.idle = l
                .last_active_ms
                .is_none_or(|t| now_ms.saturating_sub(t) >= idle_ms);
            latest_activity = latest_activity.max(l.last_active_ms);
        }
        self.align(now_ms, out);
        self.advance(out);
        self.release_waiting(false, out);
        let quiet_for = latest_activity.map(|t| now_ms.saturating_sub(t));
        let drain_after = idle_ms + self.settings.lateness.max(0) as u64 * 1000;
        if quiet_for.is_some_and(|q| q >= drain_after) && !self.open.is_empty() {
            self.emit_all_open(out);
        }
    }

    /// Alignment: pauses lanes too far ahead of the slowest, resumes them once it has
    /// caught up halfway, and gives up on a lane that stays too far behind.
    fn align(&mut self, now_ms: u64, out: &mut Output<T>) {
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
        let slowest = marks.iter().map(|m| m.1).min();
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
            let ahead = w - slowest.unwrap_or(w);
            l.paused = !l.waiting.is_empty()
                || if l.paused {
                    ahead > a.max_drift / 2
                } else {
                    ahead > a.max_drift
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

    /// A lane is ours now (an assigned partition). Until it delivers a frame or
    /// goes idle, it holds the watermark back: it may carry older frames.
    pub fn add_lane(&mut self, lane: usize) {
        self.ensure_lane(lane);
        let l = &mut self.lanes[lane];
        l.idle = false;
        l.seen_since_tick = true;
    }

    /// A lane has no more frames (a backfill read it to its end): it no longer
    /// holds the watermark back. Its held frames are judged now, as at the end of input.
    pub fn remove_lane(&mut self, lane: usize, out: &mut Output<T>) {
        let Some(l) = self.lanes.get_mut(lane) else {
            return;
        };
        l.assigned = false;
        self.advance(out);
        self.release_waiting(false, out);
        // Frames still waiting for the others are judged when they are released.
        if self.lanes[lane].waiting.is_empty() {
            self.finish_lane(lane, out);
        }
    }

    /// Judges the frames the outlier guard still holds on `lane`, as at the end of input.
    fn finish_lane(&mut self, lane: usize, out: &mut Output<T>) {
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
        self.advance(out);
    }

    /// The first position on `lane` that is not yet safe to commit: every frame
    /// before it has been rejected, or counted in windows that are final, and none
    /// is held by the outlier guard or waiting for alignment. `None` if the lane has
    /// seen nothing. This is the one place that decides what a commit may cover.
    pub fn safe_position(&self, lane: usize) -> Option<u64> {
        let l = self.lanes.get(lane)?;
        let open = l.runs.front().map(|r| r.0);
        let held = l.guard.held().map(|h| h.frame.pos).min();
        let waiting = l.waiting.front().map(|w| w.1.pos);
        [open, held, waiting]
            .into_iter()
            .flatten()
            .min()
            .or(l.next_pos)
    }

    /// End of input: resolves held frames, then emits every open window as final.
    pub fn flush(&mut self, out: &mut Output<T>) {
        self.release_waiting(true, out);
        for lane in 0..self.lanes.len() {
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
        self.emit_all_open(out);
    }

    /// Emits every open window as final and moves the watermark past them, so that
    /// a straggler can never produce a second, partial version 1.
    fn emit_all_open(&mut self, out: &mut Output<T>) {
        let mut last_end = None;
        while let Some((id, state)) = self.open.pop_first() {
            if state.version == 0 || state.dirty {
                out.windows.push(result(
                    &id,
                    &state,
                    state.version + 1,
                    self.settings.keep_state,
                ));
            }
            last_end = last_end.max(Some(id.end));
        }
        self.stream_wm = self.stream_wm.max(last_end);
        for l in &mut self.lanes {
            l.runs.clear();
        }
    }

    /// Recomputes the stream watermark from the lanes and closes what it passed.
    fn advance(&mut self, out: &mut Output<T>) {
        if self.settings.alignment.is_some() {
            // A lane that has not spoken yet may be anywhere: as Flink does, it
            // counts as the slowest until it speaks or goes idle.
            self.slowest = self
                .lanes
                .iter()
                .filter(|l| l.holds_back())
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
        if candidate > self.stream_wm {
            self.stream_wm = candidate;
            self.close_windows(out);
        }
    }

    fn count_released(&mut self, lane: usize, out: &mut Output<T>) {
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
    fn count(&mut self, lane: usize, pos: u64, ts: i64, key: C::Key) -> Verdict {
        let wm = self.stream_wm.unwrap_or(i64::MIN);
        let mut missed = GranularitySet::default();
        let mut coarsest_end = None;
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
            if span.end.saturating_add(self.settings.grace) <= wm {
                missed.insert(g);
                continue;
            }
            coarsest_end = Some(span.end);
            let id = WindowId {
                end: span.end,
                granularity: g,
                start: span.start,
            };
            let state = self.open.entry(id).or_insert_with(|| WindowState {
                counter: C::new(&self.counter_config),
                frames: 0,
                version: 0,
                dirty: false,
            });
            state.frames += 1;
            let changed = state.counter.insert(key);
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

    fn close_windows(&mut self, out: &mut Output<T>) {
        let Some(wm) = self.stream_wm else {
            return;
        };
        let grace = self.settings.grace;
        let mut expired = Vec::new();
        for (id, state) in self.open.range_mut(..) {
            if id.end > wm {
                break;
            }
            if state.version == 0 || state.dirty {
                state.version += 1;
                state.dirty = false;
                out.windows
                    .push(result(id, state, state.version, self.settings.keep_state));
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

/// The one place a window's result is made.
fn result<C: Counter>(
    id: &WindowId,
    state: &WindowState<C>,
    version: u32,
    keep_state: bool,
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
        state: keep_state.then(|| state.counter.save()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counter::Exact;
    use std::collections::{HashMap, HashSet};

    fn agg(grans: &[Granularity], lateness: i64, grace: i64) -> Aggregator<Exact, usize> {
        Aggregator::new(
            Calendar::utc(),
            Settings {
                granularities: grans.to_vec(),
                lateness,
                grace,
                guard: GuardConfig {
                    max_ahead: 600,
                    confirm: 4,
                },
                idle_timeout_ms: 10_000,
                alignment: None,
                keep_state: false,
            },
            (),
        )
    }

    fn feed(
        a: &mut Aggregator<Exact, usize>,
        frames: &[(i64, &str)],
    ) -> (Output<usize>, Vec<Verdict>) {
        let mut out = Output::default();
        let verdicts = frames
            .iter()
            .enumerate()
            .map(|(i, (ts, uid))| {
                a.ingest(0, i as u64, *ts, Exact::key(uid.as_bytes()), || i, &mut out)
            })
            .collect();
        (out, verdicts)
    }

    const M: i64 = 1_468_244_340; // 2016-07-11T13:39:00Z

    #[test]
    fn emits_a_minute_when_the_watermark_passes_its_end() {
        let mut a = agg(&[Granularity::Minute], 5, 0);
        let (out, _) = feed(
            &mut a,
            &[
                (M, "a"),
                (M + 1, "b"),
                (M + 2, "c"),
                (M + 3, "a"),
                (M + 64, "c"),
            ],
        );
        assert!(
            out.windows.is_empty(),
            "watermark {:?} is before the end",
            a.watermark()
        );
        let (out, _) = feed(&mut a, &[(M + 65, "d")]);
        assert_eq!(out.windows.len(), 1);
        let w = &out.windows[0];
        assert_eq!(
            (w.span.start, w.unique_users, w.frames, w.version),
            (M, 3, 4, 1)
        );
    }

    #[test]
    fn flush_emits_the_last_window_too() {
        let mut a = agg(&[Granularity::Minute, Granularity::Hour], 5, 0);
        let (mut out, _) = feed(
            &mut a,
            &[
                (M, "a"),
                (M + 1, "b"),
                (M + 2, "c"),
                (M + 3, "d"),
                (M + 70, "e"),
            ],
        );
        a.flush(&mut out);
        let got: Vec<_> = out
            .windows
            .iter()
            .map(|w| (w.granularity, w.span.start, w.unique_users))
            .collect();
        assert_eq!(
            got,
            vec![
                (Granularity::Minute, M, 4),
                (Granularity::Minute, M + 60, 1),
                (Granularity::Hour, M - 39 * 60, 5)
            ]
        );
    }

    #[test]
    fn late_frames_are_reported_per_granularity() {
        let mut a = agg(&[Granularity::Minute, Granularity::Hour], 5, 0);
        feed(
            &mut a,
            &[
                (M, "a"),
                (M + 1, "b"),
                (M + 2, "c"),
                (M + 3, "d"),
                (M + 70, "e"),
            ],
        );
        let (_, v) = feed(&mut a, &[(M + 10, "late")]);
        let mut missed = GranularitySet::default();
        missed.insert(Granularity::Minute);
        assert_eq!(
            v,
            vec![Verdict::Late {
                missed,
                counted: true
            }]
        );
        let mut out = Output::default();
        a.flush(&mut out);
        let hour = out
            .windows
            .iter()
            .find(|w| w.granularity == Granularity::Hour)
            .unwrap();
        assert_eq!(
            hour.unique_users, 6,
            "the late frame still counts for its open hour"
        );
    }

    #[test]
    fn epoch_zero_is_late_and_reopens_nothing() {
        let mut a = agg(&Granularity::ALL, 5, 0);
        feed(
            &mut a,
            &[(M, "a"), (M + 1, "b"), (M + 2, "c"), (M + 3, "d")],
        );
        let open = a.open_windows();
        let (out, v) = feed(&mut a, &[(0, "zero")]);
        assert!(matches!(v[0], Verdict::Late { missed, counted: false } if missed.len() == 6));
        assert!(out.windows.is_empty());
        assert_eq!(a.open_windows(), open);
    }

    #[test]
    fn grace_emits_versioned_corrections() {
        let mut a = agg(&[Granularity::Minute], 5, 30);
        feed(
            &mut a,
            &[(M, "a"), (M + 1, "b"), (M + 2, "c"), (M + 3, "d")],
        );
        let (out, _) = feed(&mut a, &[(M + 66, "x")]);
        assert_eq!(out.windows[0].version, 1);
        assert_eq!(out.windows[0].unique_users, 4);
        // Late but within grace: corrected at the next watermark advance.
        let (out, v) = feed(&mut a, &[(M + 30, "late-user"), (M + 30, "a")]);
        assert_eq!(v, vec![Verdict::Counted, Verdict::Counted]);
        assert!(out.windows.is_empty());
        let (out, _) = feed(&mut a, &[(M + 67, "y")]);
        let w = &out.windows[0];
        assert_eq!(
            (w.span.start, w.unique_users, w.frames, w.version),
            (M, 5, 6, 2)
        );
        // Past end + grace: late, and the window is gone.
        feed(&mut a, &[(M + 100, "z")]);
        let (_, v) = feed(&mut a, &[(M + 31, "too-late")]);
        assert!(matches!(v[0], Verdict::Late { .. }));
    }

    #[test]
    fn an_outlier_neither_counts_nor_closes_windows() {
        let mut a = agg(&[Granularity::Minute], 5, 0);
        let (out, v) = feed(
            &mut a,
            &[
                (M, "a"),
                (M + 1, "b"),
                (M + 2, "c"),
                (M + 3, "d"),
                (M + (1 << 28), "flip"),
            ],
        );
        assert_eq!(v[4], Verdict::Held);
        assert!(out.windows.is_empty());
        let (out, _) = feed(
            &mut a,
            &[(M + 4, "e"), (M + 5, "f"), (M + 6, "g"), (M + 7, "h")],
        );
        assert_eq!(out.outliers, vec![4]);
        let mut out = Output::default();
        a.flush(&mut out);
        assert_eq!(out.windows.len(), 1);
        assert_eq!(out.windows[0].unique_users, 8);
    }

    #[test]
    fn open_windows_stay_bounded_whatever_garbage_asks_for() {
        let mut a = agg(&Granularity::ALL, 5, 0);
        let mut x: u64 = 7;
        for i in 0..50_000i64 {
            let mut out = Output::default();
            a.ingest(0, 0, M + i / 100, i as u64, || 0, &mut out);
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            let garbage = (x >> 30) as i64 % 4_000_000_000;
            a.ingest(0, 0, garbage, i as u64, || 0, &mut out);
            assert!(a.open_windows() <= 6 + 6, "{} open", a.open_windows());
        }
    }

    fn lanes_agg() -> Aggregator<Exact, usize> {
        Aggregator::new(
            Calendar::utc(),
            Settings {
                granularities: vec![Granularity::Minute],
                lateness: 5,
                grace: 0,
                guard: GuardConfig {
                    max_ahead: 600,
                    confirm: 1,
                },
                idle_timeout_ms: 1000,
                alignment: None,
                keep_state: false,
            },
            (),
        )
    }

    #[test]
    fn the_slowest_active_lane_holds_the_watermark() {
        let mut a = lanes_agg();
        let mut out = Output::default();
        a.ingest(0, 0, M, 1, || 0, &mut out);
        a.ingest(1, 0, M, 2, || 0, &mut out);
        a.ingest(0, 1, M + 100, 3, || 0, &mut out);
        assert!(out.windows.is_empty(), "lane 1 is still at M");
        assert_eq!(a.watermark(), Some(M - 5));
        a.ingest(1, 1, M + 70, 4, || 0, &mut out);
        assert_eq!(out.windows.len(), 1);
        assert_eq!(out.windows[0].unique_users, 2);
    }

    #[test]
    fn an_idle_lane_stops_holding_results_back_and_quiet_streams_drain() {
        let mut a = lanes_agg();
        let mut out = Output::default();
        a.ingest(0, 0, M, 1, || 0, &mut out);
        a.ingest(1, 0, M, 2, || 0, &mut out);
        a.heartbeat(0, &mut out);
        a.ingest(0, 1, M + 100, 3, || 0, &mut out);
        a.heartbeat(500, &mut out);
        assert!(out.windows.is_empty());
        a.heartbeat(1200, &mut out);
        assert_eq!(out.windows.len(), 1, "lane 1 idle for 1.2 s > 1 s");
        // Nothing at all for idle + lateness: the last window goes out too.
        a.heartbeat(500 + 1000 + 5000, &mut out);
        assert_eq!(out.windows.len(), 2);
        // And a straggler for it is late, not a second version 1.
        let v = a.ingest(0, 2, M + 101, 9, || 0, &mut out);
        assert!(matches!(v, Verdict::Late { .. }));
    }

    #[test]
    fn safe_positions_wait_for_the_windows_their_frames_are_in() {
        let mut a = lanes_agg();
        let mut out = Output::default();
        assert_eq!(a.safe_position(0), None);
        a.ingest(0, 10, M, 1, || 0, &mut out);
        a.ingest(0, 11, M + 30, 2, || 0, &mut out);
        assert_eq!(a.safe_position(0), Some(10), "minute M is open");
        a.ingest(0, 12, M + 62, 3, || 0, &mut out);
        assert_eq!(a.safe_position(0), Some(10));
        a.ingest(0, 13, M + 66, 4, || 0, &mut out);
        assert_eq!(out.windows.len(), 1);
        assert_eq!(
            a.safe_position(0),
            Some(12),
            "frames 10 and 11 are in an emitted window"
        );
        a.flush(&mut out);
        assert_eq!(a.safe_position(0), Some(14));
    }

    #[test]
    fn a_restored_snapshot_carries_on_exactly_like_the_original() {
        let frames: Vec<(usize, i64, String)> = (0..5000)
            .map(|i| {
                (
                    i % 3,
                    M + i as i64 / 40 + if i % 7 == 0 { -3 } else { 0 },
                    format!("u{}", i % 800),
                )
            })
            .chain([(1, M + (1 << 29), "garbage".to_string())])
            .chain((5000..9000).map(|i| (i % 3, M + i as i64 / 40, format!("u{}", i % 900))))
            .collect();
        let run = |split: Option<usize>| {
            let mut a = agg(&[Granularity::Minute, Granularity::Hour], 5, 10);
            let mut out = Output::default();
            for (i, (lane, ts, uid)) in frames.iter().enumerate() {
                if Some(i) == split {
                    let snap = a.snapshot(|tag| *tag);
                    let bytes = postcard::to_stdvec(&snap).unwrap();
                    let back: Snapshot<usize> = postcard::from_bytes(&bytes).unwrap();
                    assert_eq!(back, snap);
                    a = Aggregator::restore(Calendar::utc(), a.settings.clone(), (), back, |tag| {
                        Some((Exact::key(frames[tag].2.as_bytes()), tag))
                    })
                    .unwrap();
                }
                a.ingest(
                    *lane,
                    i as u64,
                    *ts,
                    Exact::key(uid.as_bytes()),
                    || i,
                    &mut out,
                );
            }
            a.flush(&mut out);
            (out.windows, out.outliers)
        };
        let whole = run(None);
        for split in [1, 3, 2500, 5000, 5001, 5005, 8999] {
            assert_eq!(run(Some(split)), whole, "split at {split}");
        }
    }

    #[test]
    fn accepts_exactly_the_timestamps_whose_windows_can_be_represented() {
        // jiff's time ends at 9999-12-30T22:00:00Z, and civil time with 9999-12-31:
        // a window is representable if its end is. Worked out by hand from that.
        let table = [
            ("UTC", Granularity::Minute, "9999-12-30T21:59:59Z"),
            ("UTC", Granularity::Hour, "9999-12-30T21:59:59Z"),
            ("UTC", Granularity::Day, "9999-12-29T23:59:59Z"),
            ("UTC", Granularity::Week, "9999-12-26T23:59:59Z"),
            ("UTC", Granularity::Month, "9999-11-30T23:59:59Z"),
            ("UTC", Granularity::Year, "9998-12-31T23:59:59Z"),
            ("Asia/Tokyo", Granularity::Minute, "9999-12-30T21:59:59Z"),
            ("Asia/Tokyo", Granularity::Hour, "9999-12-30T21:59:59Z"),
            ("Asia/Tokyo", Granularity::Day, "9999-12-30T14:59:59Z"),
            ("Asia/Tokyo", Granularity::Week, "9999-12-26T14:59:59Z"),
            ("Asia/Tokyo", Granularity::Month, "9999-11-30T14:59:59Z"),
            ("Asia/Tokyo", Granularity::Year, "9998-12-31T14:59:59Z"),
            (
                "America/Los_Angeles",
                Granularity::Minute,
                "9999-12-30T21:59:59Z",
            ),
            (
                "America/Los_Angeles",
                Granularity::Hour,
                "9999-12-30T21:59:59Z",
            ),
            (
                "America/Los_Angeles",
                Granularity::Day,
                "9999-12-30T07:59:59Z",
            ),
            (
                "America/Los_Angeles",
                Granularity::Week,
                "9999-12-27T07:59:59Z",
            ),
            (
                "America/Los_Angeles",
                Granularity::Month,
                "9999-12-01T07:59:59Z",
            ),
            (
                "America/Los_Angeles",
                Granularity::Year,
                "9999-01-01T07:59:59Z",
            ),
        ];
        for (zone, g, last) in table {
            let last: i64 = last.parse::<jiff::Timestamp>().unwrap().as_second();
            let mut a: Aggregator<Exact, usize> = Aggregator::new(
                Calendar::for_zone(zone).unwrap(),
                Settings {
                    granularities: vec![g],
                    guard: GuardConfig {
                        max_ahead: 60,
                        confirm: 1,
                    },
                    ..Settings::default()
                },
                (),
            );
            assert_eq!(a.ts_range(), (0, last), "{zone} {g}");
            let mut out = Output::default();
            for ts in [-1, last + 1, i64::MAX] {
                let v = a.ingest(0, 0, ts, 1, || 0, &mut out);
                assert_eq!(v, Verdict::OutOfRange, "{zone} {g} at {ts}");
            }
            // The edges count, and their windows render.
            for ts in [0, last] {
                let mut a: Aggregator<Exact, usize> =
                    Aggregator::new(a.calendar().clone(), a.settings.clone(), ());
                assert_ne!(a.ingest(0, 0, ts, 1, || 0, &mut out), Verdict::OutOfRange);
                a.flush(&mut out);
                let w = out.windows.pop().unwrap();
                assert!(w.span.contains(ts), "{zone} {g} at {ts}");
                let end = a.calendar().format(w.span.end);
                assert!(end.parse::<jiff::Timestamp>().is_ok(), "{zone} {g}: {end}");
            }
        }
        // All six windows together: the strictest one rules.
        let a: Aggregator<Exact, usize> = Aggregator::new(
            Calendar::for_zone("Asia/Tokyo").unwrap(),
            Settings {
                granularities: Granularity::ALL.to_vec(),
                ..Settings::default()
            },
            (),
        );
        assert_eq!(
            a.ts_range().1,
            "9998-12-31T14:59:59Z"
                .parse::<jiff::Timestamp>()
                .unwrap()
                .as_second()
        );
    }

    #[test]
    fn a_held_frame_is_never_safe_to_commit() {
        let mut a = agg(&[Granularity::Minute], 5, 0);
        let mut out = Output::default();
        for (i, ts) in [M, M + 1, M + 2, M + 3].into_iter().enumerate() {
            a.ingest(0, 100 + i as u64, ts, 1, || i, &mut out);
        }
        assert_eq!(a.safe_position(0), Some(100));
        // Everything so far is final, and a far-future frame is held at 104.
        a.ingest(0, 104, M + 66, 2, || 4, &mut out);
        a.ingest(0, 105, M + 100_000, 3, || 5, &mut out);
        assert_eq!(out.windows.len(), 1);
        assert_eq!(a.safe_position(0), Some(104), "minute M+60 is open");
        a.ingest(0, 106, M + 130, 4, || 6, &mut out);
        assert_eq!(out.windows.len(), 2);
        assert_eq!(a.safe_position(0), Some(105), "105 is held, not counted");
    }

    /// The worst delay, in seconds, from a minute's end to its emission, on a
    /// simulated hour of wall clock: a busy lane (10 frames/s) beside a sparse one
    /// (a frame every two minutes), both stamped a second before they arrive.
    fn worst_emission_delay(live: bool) -> i64 {
        const T0: i64 = 1_700_000_040;
        let mut a: Aggregator<Exact, usize> = Aggregator::new(
            Calendar::utc(),
            Settings {
                idle_timeout_ms: 30_000,
                ..Settings::default()
            },
            (),
        );
        let mut out = Output::default();
        let mut worst = 0;
        for now in T0..T0 + 3600 {
            a.set_clock(live.then_some(WallClock {
                now,
                trust_recent: true,
            }));
            for i in 0..10 {
                a.ingest(0, 0, now - 1, i, || 0, &mut out);
            }
            if (now - T0) % 120 == 0 {
                a.ingest(1, 0, now - 1, 99, || 0, &mut out);
            }
            a.heartbeat(((now - T0) * 1000) as u64, &mut out);
            for w in out.windows.drain(..) {
                if w.span.end > T0 + 600 {
                    worst = worst.max(now - w.span.end);
                }
            }
        }
        worst
    }

    #[test]
    fn a_sparse_live_lane_does_not_hold_results_back() {
        let (counted_rule, wall_clock) = (worst_emission_delay(false), worst_emission_delay(true));
        println!(
            "worst emission delay: {counted_rule} s by frame count, {wall_clock} s with the wall clock"
        );
        // The lateness (5 s) is the least a minute can wait; a second more for the
        // frames' own delay.
        assert!(wall_clock <= 6, "with the wall clock: {wall_clock} s");
        assert!(
            counted_rule > 20,
            "without it the sparse lane holds minutes back: {counted_rule} s"
        );
    }

    fn aligned_agg() -> Aggregator<Exact, usize> {
        Aggregator::new(
            Calendar::utc(),
            Settings {
                granularities: vec![Granularity::Minute],
                idle_timeout_ms: 1000,
                guard: GuardConfig {
                    max_ahead: 600,
                    confirm: 1,
                },
                alignment: Some(Alignment {
                    max_drift: 300,
                    drift_timeout_ms: 5000,
                }),
                ..Settings::default()
            },
            (),
        )
    }

    #[test]
    fn a_lane_too_far_ahead_is_paused_until_the_slowest_catches_up_halfway() {
        let mut a = aligned_agg();
        let mut out = Output::default();
        a.ingest(0, 0, M, 1, || 0, &mut out);
        a.ingest(1, 0, M, 2, || 0, &mut out);
        a.heartbeat(0, &mut out);
        assert!(a.paused_lanes().is_empty());
        for t in (0..=301).step_by(60).chain([301]) {
            a.ingest(0, 1, M + t, 3, || 0, &mut out);
        }
        a.heartbeat(100, &mut out);
        assert_eq!(a.paused_lanes(), vec![0], "301 s ahead of lane 1");
        // Paused, lane 0 is silent for longer than the idle timeout, and not idle,
        // while lane 1 keeps delivering old frames.
        for now in (200..3000).step_by(100) {
            a.ingest(1, 1, M, 2, || 0, &mut out);
            a.heartbeat(now, &mut out);
        }
        assert_eq!(a.paused_lanes(), vec![0]);
        assert_eq!(a.watermark(), Some(M - 5), "lane 1 still holds the stream");
        a.ingest(1, 1, M + 100, 4, || 0, &mut out);
        a.heartbeat(3100, &mut out);
        assert_eq!(a.paused_lanes(), vec![0], "201 s ahead: not yet halfway");
        a.ingest(1, 2, M + 160, 5, || 0, &mut out);
        a.heartbeat(3200, &mut out);
        assert!(a.paused_lanes().is_empty(), "141 s ahead: resumed");
    }

    #[test]
    fn a_lane_that_stays_behind_is_skewed_and_judged_against_the_stream() {
        let mut a = aligned_agg();
        let mut out = Output::default();
        const DAY: i64 = 86_400;
        for i in 0..20 {
            a.ingest(0, i, M + i as i64 * 30, 1, || 0, &mut out);
            a.ingest(1, i, M + i as i64 * 30 - DAY, 2, || 0, &mut out);
            a.heartbeat(i * 500, &mut out);
        }
        // Lane 1 has been a day behind for more than the 5 s timeout.
        assert_eq!(out.skewed.len(), 1, "{:?}", out.skewed);
        assert_eq!(out.skewed[0].0, 1);
        assert!(out.skewed[0].1 >= DAY - 600);
        assert!(a.paused_lanes().is_empty(), "nobody waits for it any more");
        assert!(a.watermark().unwrap() > M, "the stream moved on without it");
        let v = a.ingest(1, 20, M + 600 - DAY, 3, || 0, &mut out);
        assert!(matches!(v, Verdict::Late { .. }), "{v:?}");
    }

    #[test]
    fn frames_read_before_a_pause_wait_so_windows_stay_within_the_drift() {
        // Lane 0 delivers two hours at once (as a fetch does) while lane 1 is at the
        // start; then lane 1 catches up. Every frame counts in the end, but no
        // window opens more than the drift (300 s) ahead of lane 1, and a commit
        // never passes a waiting frame.
        let lane0: Vec<(i64, String)> = (0..720)
            .map(|i| (M + 10 * i, format!("a{}", i % 40)))
            .collect();
        let lane1: Vec<(i64, String)> = (0..720)
            .map(|i| (M + 10 * i, format!("b{}", i % 30)))
            .collect();
        let run = |split: Option<usize>| {
            let mut a = aligned_agg();
            let mut out = Output::default();
            let mut most_open = 0;
            let key = |u: &String| Exact::key(u.as_bytes());
            a.ingest(1, 0, lane1[0].0, key(&lane1[0].1), || 0, &mut out);
            a.heartbeat(0, &mut out);
            let mut first_waiting = None;
            for (i, (ts, u)) in lane0.iter().enumerate() {
                let v = a.ingest(0, i as u64, *ts, key(u), || i, &mut out);
                if v == Verdict::Held && first_waiting.is_none() {
                    first_waiting = Some(i as u64);
                }
                most_open = most_open.max(a.open_windows());
            }
            let first_waiting = first_waiting.expect("lane 0 ran ahead");
            assert_eq!(a.safe_position(0), Some(0), "its windows are open");
            assert!(first_waiting <= 32, "{first_waiting}");
            assert_eq!(a.paused_lanes(), vec![0]);
            for (i, (ts, u)) in lane1.iter().enumerate().skip(1) {
                if Some(i) == split {
                    let snap = a.snapshot(|tag| *tag);
                    let bytes = postcard::to_stdvec(&snap).unwrap();
                    let back: Snapshot<usize> = postcard::from_bytes(&bytes).unwrap();
                    a = Aggregator::restore(Calendar::utc(), a.settings.clone(), (), back, |t| {
                        Some((key(&lane0[t].1), t))
                    })
                    .unwrap();
                }
                a.ingest(1, i as u64, *ts, key(u), || i, &mut out);
                a.heartbeat(i as u64, &mut out);
                most_open = most_open.max(a.open_windows());
                // A commit may cover only frames in windows that are final.
                let wm = a.watermark().unwrap_or(i64::MIN);
                let not_final = lane0
                    .iter()
                    .position(|(ts, _)| ts - ts.rem_euclid(60) + 60 > wm);
                let safe = a.safe_position(0).unwrap();
                assert!(
                    not_final.is_none_or(|j| safe <= j as u64),
                    "{safe} {not_final:?}"
                );
            }
            a.flush(&mut out);
            assert!(out.late.is_empty() && out.outliers.is_empty(), "{out:?}");
            // 300 s of drift is 5 minutes, plus the one being filled on each side.
            assert!(most_open <= 8, "{most_open} minute windows open at once");
            out.windows
        };
        let mut want: BTreeMap<i64, HashSet<&str>> = BTreeMap::new();
        for (ts, u) in lane0.iter().chain(&lane1) {
            want.entry(ts - ts.rem_euclid(60)).or_default().insert(u);
        }
        let whole = run(None);
        let got: BTreeMap<i64, u64> = whole
            .iter()
            .map(|w| (w.span.start, w.unique_users))
            .collect();
        let want: BTreeMap<i64, u64> = want.iter().map(|(m, u)| (*m, u.len() as u64)).collect();
        assert_eq!(got, want);
        assert_eq!(
            run(Some(300)),
            whole,
            "restored from a checkpoint with frames waiting"
        );
    }

    proptest::proptest! {
        /// The aggregator equals a naive group-by when frames are shuffled within the lateness.
        #[test]
        fn matches_a_naive_count_under_bounded_disorder(
            seed in 0u64..1_000_000,
            n in 1usize..3000,
            users in 1u64..500,
            lateness in 1i64..20,
            rate in 1i64..200,
            sparse in 0u64..4,
        ) {
            let mut rng = seed;
            let mut next = || { rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); rng >> 33 };
            // In-order event times, dense or with gaps of up to seconds, hours or
            // years, then each frame delayed by less than the lateness.
            let mut ts = M;
            let mut frames: Vec<(i64, i64, u64)> = (0..n as i64)
                .map(|i| {
                    ts += match sparse {
                        0 => i64::from(i % rate == 0),
                        1 => (next() % 300) as i64,
                        2 => (next() % 20_000) as i64,
                        _ => (next() % 100_000_000) as i64,
                    };
                    let delay = (next() % lateness as u64) as i64;
                    (ts + delay, ts, next() % users)
                })
                .collect();
            frames.sort_by_key(|f| f.0);
            let grans = Granularity::ALL;
            let mut a: Aggregator<Exact, usize> = Aggregator::new(
                Calendar::utc(),
                Settings { granularities: grans.to_vec(), lateness, ..Settings::default() },
                (),
            );
            let mut out = Output::default();
            for (i, (_, ts, uid)) in frames.iter().enumerate() {
                let v = a.ingest(0, i as u64, *ts, Exact::key(uid.to_string().as_bytes()), || i, &mut out);
                proptest::prop_assert!(!matches!(v, Verdict::Late { .. }), "frame within lateness was late");
            }
            a.flush(&mut out);
            proptest::prop_assert!(out.late.is_empty(), "released frames were late: {:?}", out.late);
            proptest::prop_assert!(out.outliers.is_empty(), "outliers in an ordered stream: {:?}", out.outliers);
            let cal = Calendar::utc();
            let mut naive: HashMap<(Granularity, i64), HashSet<u64>> = HashMap::new();
            for (_, ts, uid) in &frames {
                for g in grans {
                    naive.entry((g, cal.window(g, *ts).start)).or_default().insert(*uid);
                }
            }
            let got: HashMap<(Granularity, i64), u64> =
                out.windows.iter().map(|w| ((w.granularity, w.span.start), w.unique_users)).collect();
            proptest::prop_assert_eq!(got.len(), out.windows.len(), "each window emitted once");
            let want: HashMap<(Granularity, i64), u64> =
                naive.into_iter().map(|(k, v)| (k, v.len() as u64)).collect();
            proptest::prop_assert_eq!(got, want);
        }
    }
}
