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
//!
//! Here: the types, a frame's way in (`ingest`, the guard) and what a commit may
//! cover. `windows` counts and closes, `lanes` keeps time and lanes (idleness,
//! lanes that end or move), `alignment` holds fast lanes back, `snapshot` saves
//! and restores it all.

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
}

mod alignment;
mod lanes;
mod snapshot;
#[cfg(test)]
mod tests;
mod windows;

pub use snapshot::{HeldSnapshot, LaneSnapshot, Snapshot, WindowSnapshot};
