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

use crate::counter::{Counter, CounterState};
use crate::watermark::{
    Admission, Decisions, GuardConfig, OutlierGuard, WallClock, Watermark, Weigh,
};
use crate::window::{Calendar, Granularity, GranularitySet, Span};

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
    /// With `keep_state`, once checkpoints track changes: only what the counter
    /// gained since the last checkpoint (scale-out's change sets), not all of it.
    pub keep_changes: bool,
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
    /// Frames past the drift wait in the aggregator, which is what bounds the open
    /// windows. Lanes are paused only once this many frames wait (and resumed at
    /// half), to bound that memory: pausing at every frame past the drift made
    /// sparse partitions take turns one frame at a time.
    pub max_waiting: usize,
}

impl Alignment {
    /// About 32 MB of 2 KB frames.
    pub const MAX_WAITING: usize = 16_384;
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
            keep_changes: false,
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
    /// Opened since the last checkpoint: its change set is the whole counter.
    fresh: bool,
}

/// A frame not counted yet (held by the outlier guard, or waiting for alignment):
/// its counter key, its position, and the caller's tag (the pipeline's `HeldFrame`).
#[derive(Debug)]
struct Pending<K, T> {
    key: K,
    pos: u64,
    tag: T,
}

impl<K, T: Weigh> Weigh for Pending<K, T> {
    fn weight(&self) -> usize {
        self.tag.weight()
    }
}

/// One input lane: a file, or a Kafka partition. Each has its own event clock,
/// because partitions progress independently.
struct Lane<K, T> {
    watermark: Watermark,
    guard: OutlierGuard<Pending<K, T>>,
    /// Received a frame since the last heartbeat.
    seen_since_tick: bool,
    last_active_ms: Option<u64>,
    /// Scale-out: how long the partition had been silent under its last owner
    /// before `last_active_ms`, until it speaks.
    quiet_before_ms: u64,
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
    /// Read to its end while frames of it still wait for alignment: it holds the
    /// stream back until they are counted (see `Aggregator::remove_lane`).
    ended: bool,
    /// Alignment: since when (wall ms) this lane has been too far behind the others.
    behind_since_ms: Option<u64>,
    /// Alignment gave up waiting for it: it no longer holds the stream back.
    skewed: bool,
    /// Alignment: `(ts, frame)` read before the pause took effect, too far ahead of
    /// the slowest lane to count yet. In position order; bounded by what was in
    /// flight between the source and here when the lane was paused.
    waiting: VecDeque<(i64, Pending<K, T>)>,
    /// Scale-out: a partition another process holds, with the watermark its owner
    /// last reported (`None`: unknown yet). It holds the stream back as one of ours
    /// would, so this process never judges frames late that a single one would not.
    remote: Option<Option<i64>>,
}

impl<K, T> Lane<K, T> {
    /// Holds the stream's watermark back: ours, speaking, and in step.
    fn holds_back(&self) -> bool {
        self.remote.is_some() || (self.assigned && !self.idle && !self.skewed)
    }

    /// The lane's watermark, extrapolated along the wall clock if it is caught up.
    fn watermark_at(&self, clock: Option<WallClock>) -> Option<i64> {
        if let Some(reported) = self.remote {
            return reported;
        }
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
            quiet_before_ms: 0,
            idle: false,
            assigned: true,
            runs: VecDeque::new(),
            next_pos: None,
            anchor: None,
            paused: false,
            ended: false,
            behind_since_ms: None,
            skewed: false,
            waiting: VecDeque::new(),
            remote: None,
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
    /// Per granularity, the end of the latest window published final whose state
    /// is no longer held: emitted whole at the end of input, or by an earlier run
    /// (`resume_after`). A frame for such a window is late whatever the watermark.
    published: [Option<i64>; 6],
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
    /// Counters record their changes (since a checkpoint was taken or restored), so
    /// that the next checkpoint can hold only what changed.
    tracking: bool,
    /// The last heartbeat's time (monotonic ms).
    tick_ms: Option<u64>,
    /// Since when (heartbeat ms) the stream has wanted to pass idle lanes of ours.
    passing_since: Option<u64>,
}

/// How long idle lanes must stay silent once the stream wants to pass them (ms):
/// a partition silent for a while may deliver a burst fetched together with the
/// one that moves the others (a producer back after a pause, or a partition just
/// taken over), and its frames would be late for windows closed a moment before
/// they came. Twice librdkafka's longest fetch wait (`fetch.wait.max.ms`, 500 ms).
pub const SETTLE_MS: u64 = 1000;

/// A lane taken over is not idle here before it has been silent this long (ms,
/// at most half the idle timeout), whatever its last owner saw: a first fetch.
pub const FIRST_LOOK_MS: u64 = 2000;

impl<C: Counter, T: Weigh> Aggregator<C, T> {
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
            published: [None; 6],
            open: BTreeMap::new(),
            span_cache: [Span { start: 0, end: 0 }; 6],
            released: Vec::new(),
            outliers: Vec::new(),
            max_ts,
            clock: None,
            slowest: None,
            tick_ms: None,
            passing_since: None,
            waiting: 0,
            tracking: false,
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
        l.quiet_before_ms = 0;
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
            self.waiting += 1;
            // Past the budget, stop the source at once: what it still sends for
            // this lane waits too.
            if (self.settings.alignment).is_some_and(|a| self.waiting >= a.max_waiting) {
                l.paused = true;
            }
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
    fn finish_lane(&mut self, lane: usize, out: &mut Output<T>) {
        self.judge_held(lane, out);
        self.advance(out);
    }

    /// Judges the frames the outlier guard still holds on `lane`, as at the end of input.
    fn judge_held(&mut self, lane: usize, out: &mut Output<T>) {
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
            self.judge_held(lane, out);
        }
        self.emit_open_until(None, out);
    }

    /// Emits as final every open window (the end of input), or those ending by
    /// `over` (a quiet live stream), and records how far each granularity is
    /// published, so that a straggler can never produce a second, partial version 1.
    /// The watermark moves past the finest windows only: moving it past a year
    /// window would make every minute of that year late.
    fn emit_open_until(&mut self, over: Option<i64>, out: &mut Output<T>) {
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
    fn advance(&mut self, out: &mut Output<T>) {
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
    fn settled(&mut self, candidate: Option<i64>) -> Option<i64> {
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

    fn close_windows(&mut self, out: &mut Output<T>) {
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
    fn kept(&self) -> Option<bool> {
        (self.settings.keep_state).then_some(self.settings.keep_changes && self.tracking)
    }
}

/// The one place a window's result is made.
fn result<C: Counter>(
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

mod alignment;
mod snapshot;
#[cfg(test)]
mod tests;

pub use snapshot::{HeldSnapshot, LaneSnapshot, Snapshot, WindowSnapshot};
