//! Event time: the watermark, and the rule that keeps garbage timestamps from moving it.
//!
//! The watermark is the highest *trusted* `ts` seen, minus the allowed lateness.
//! A window is final once the watermark reaches its end.
//!
//! Trust rule (the [`OutlierGuard`]):
//! - A frame at most `reach` beyond the highest trusted `ts` is trusted, where the
//!   reach is the larger of `max_ahead` and the lateness (a frame no further ahead
//!   than a frame may be late cannot be told from ordinary disorder).
//! - A frame further ahead is *held* in a small buffer instead: it neither moves
//!   the watermark nor is counted yet.
//! - Every later frame either *supports* a held frame (it is at or after it, give or
//!   take the lateness) or *contradicts* it (it is earlier than that). A held frame
//!   contradicted by `confirm` frames is an **outlier**: the traffic went on without
//!   it (a bit flip, a bad clock). In a stream whose disorder stays within the
//!   lateness, nothing is ever contradicted, whatever its rate or its gaps.
//! - Whenever the trusted time moves, held frames within reach of it are released.
//! - When `confirm` frames are held at once, the stream has moved (a source came
//!   back after an outage, a sparse stream took its next step): the trusted time
//!   moves to the median of the held frames, and every held frame within reach is
//!   released, in arrival order.
//! - Released frames are handed back to be counted *before* the caller lets the
//!   watermark close anything, so the frames that prove a jump are never late.
//! - Before the first trusted frame, the first `confirm` frames are held and the
//!   median picks the start, so garbage at the very start cannot pin the clock; one
//!   far *behind* the others that came after a frame it is late for is an outlier
//!   too (see [`OutlierGuard::convict_stragglers_behind`]).
//! - With a wall clock (a live Kafka run), a frame more than `max_ahead` in the
//!   future is an outlier at once, and a frame within `max_ahead` of now is trusted
//!   at once, so a sparse live partition is never held back by the frame count.
//!
//! The buffer never holds more than `confirm` frames, nor (by more than one
//! frame) [`MAX_HELD_BYTES`]: whichever fills first makes the jump. Frames that
//! more later frames contradicted than supported are convicted before a jump
//! that bytes force, so a few huge garbage frames cannot move the clock.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// How many median absolute deviations below the held frames' median, beyond the
/// reach, a frame held at the start must lie to be garbage (see
/// [`OutlierGuard::convict_stragglers_behind`]). Sparse streams spread evenly stay
/// within two; a flipped bit moves a timestamp by years.
const STRAGGLER_SPREADS: i64 = 8;

/// What one guard may hold, in bytes of frames. Full at this, as at `confirm`
/// frames. At the default limits (16 frames of at most 1 MiB) the count always
/// fills first; this binds only when `--confirm` or `--max-frame-bytes` is raised.
pub const MAX_HELD_BYTES: usize = 16 << 20;

/// How much memory a held frame keeps, for [`MAX_HELD_BYTES`].
pub trait Weigh {
    fn weight(&self) -> usize;
}

/// Test and benchmark tags stand for no bytes.
impl Weigh for usize {
    fn weight(&self) -> usize {
        0
    }
}

impl Weigh for () {
    fn weight(&self) -> usize {
        0
    }
}

/// Highest trusted event time minus lateness. `None` until the first trusted frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermark {
    max_trusted: Option<i64>,
    lateness: i64,
}

impl Watermark {
    pub fn new(lateness_secs: i64) -> Watermark {
        Watermark {
            max_trusted: None,
            lateness: lateness_secs,
        }
    }

    /// Windows ending at or before this instant are final.
    pub fn get(&self) -> Option<i64> {
        self.max_trusted.map(|m| m.saturating_sub(self.lateness))
    }

    pub fn max_trusted(&self) -> Option<i64> {
        self.max_trusted
    }

    pub fn lateness(&self) -> i64 {
        self.lateness
    }

    /// Records a trusted timestamp. Returns whether the watermark moved.
    #[inline]
    pub fn observe(&mut self, ts: i64) -> bool {
        match self.max_trusted {
            Some(m) if ts <= m => false,
            _ => {
                self.max_trusted = Some(ts);
                true
            }
        }
    }
}

/// Settings of the trust rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardConfig {
    /// How far beyond the highest trusted `ts` a frame may be and still be trusted.
    pub max_ahead: i64,
    /// How many held frames make a jump, and how many contradicting frames convict an outlier.
    pub confirm: usize,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            max_ahead: 60,
            confirm: 16,
        }
    }
}

/// The wall clock, for live sources only: files and backfills have none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WallClock {
    /// Unix seconds when the frames at hand had all been received.
    pub now: i64,
    /// Trust frames within `max_ahead` of now at once (a live run, not a backfill).
    pub trust_recent: bool,
}

/// A frame the guard holds, with the verdicts of the frames that came after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held<P> {
    pub ts: i64,
    /// Later frames at or after `ts - lateness`.
    pub supported: u32,
    /// Later frames before `ts - lateness`.
    pub contradicted: u32,
    pub frame: P,
}

/// What the guard decided about one frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// Count it now.
    Trusted,
    /// Kept aside, or convicted at once; it comes back through `released` or `outliers`.
    Held,
}

/// Where the guard's decisions go: frames to count now, in order, and outliers.
pub struct Decisions<'a, P> {
    pub released: &'a mut Vec<(i64, P)>,
    pub outliers: &'a mut Vec<P>,
}

/// The trust rule. `P` is whatever the caller needs back for a held frame.
#[derive(Debug)]
pub struct OutlierGuard<P> {
    config: GuardConfig,
    held: VecDeque<Held<P>>,
}

impl<P> OutlierGuard<P> {
    pub fn new(config: GuardConfig) -> Self {
        OutlierGuard {
            config,
            held: VecDeque::with_capacity(config.confirm),
        }
    }

    pub fn held_len(&self) -> usize {
        self.held.len()
    }

    /// For checkpoints: the held frames, oldest first.
    pub fn held(&self) -> impl Iterator<Item = &Held<P>> {
        self.held.iter()
    }

    /// The held frames, oldest first, taken out (a lane that moves away).
    pub fn into_held(self) -> Vec<Held<P>> {
        self.held.into()
    }

    /// Rebuilds a guard from [`OutlierGuard::held`].
    pub fn restore(config: GuardConfig, held: impl IntoIterator<Item = Held<P>>) -> Self {
        OutlierGuard {
            config,
            held: held.into_iter().collect(),
        }
    }
}

impl<P: Weigh> OutlierGuard<P> {
    fn reach(&self, wm: &Watermark) -> i64 {
        self.config.max_ahead.max(wm.lateness())
    }

    /// Classifies one frame against the watermark.
    ///
    /// `payload` is only built when the frame is held. Frames released by this
    /// frame are appended to `released` (in arrival order) and must be counted
    /// before the watermark closes anything; convicted frames go to `outliers`.
    #[inline]
    pub fn admit(
        &mut self,
        wm: &mut Watermark,
        ts: i64,
        clock: Option<WallClock>,
        payload: impl FnOnce() -> P,
        to: Decisions<'_, P>,
    ) -> Admission {
        if let Some(c) = clock
            && ts > c.now.saturating_add(self.config.max_ahead)
        {
            // From the future by this machine's clock: no later frame can vouch for it.
            to.outliers.push(payload());
            return Admission::Held;
        }
        let reach = self.reach(wm);
        if !self.held.is_empty() {
            self.judge_held_by(ts, wm.lateness(), to.outliers);
        }
        let trusted = wm
            .max_trusted()
            .is_some_and(|m| ts <= m.saturating_add(reach))
            || clock.is_some_and(|c| c.trust_recent && ts >= c.now - self.config.max_ahead);
        if trusted {
            if wm.observe(ts) && !self.held.is_empty() {
                self.release_within_reach(wm, to.released);
            }
            return Admission::Trusted;
        }
        self.held.push_back(Held {
            ts,
            supported: 0,
            contradicted: 0,
            frame: payload(),
        });
        if self.held_bytes() >= MAX_HELD_BYTES {
            self.convict_contradicted(to.outliers);
        }
        if self.held.len() >= self.config.confirm || self.held_bytes() >= MAX_HELD_BYTES {
            if wm.max_trusted().is_none() {
                self.convict_stragglers_behind(wm, to.outliers);
            }
            self.jump(wm, to.released);
        }
        Admission::Held
    }

    fn held_bytes(&self) -> usize {
        self.held.iter().map(|h| h.frame.weight()).sum()
    }

    /// Held frames that more later frames contradicted than supported: when bytes,
    /// not `confirm` frames, fill the buffer, the evidence so far decides, so that
    /// a few huge garbage frames cannot make the jump to their own time.
    fn convict_contradicted(&mut self, outliers: &mut Vec<P>) {
        let (convicted, kept) = std::mem::take(&mut self.held)
            .into_iter()
            .partition::<VecDeque<_>, _>(|h| h.contradicted > h.supported);
        self.held = kept;
        outliers.extend(convicted.into_iter().map(|h| h.frame));
    }

    /// End of input: a held frame that more later frames support than contradict
    /// is counted (the stream moved, or this was its last step); the others are outliers.
    pub fn finish(&mut self, wm: &mut Watermark, to: Decisions<'_, P>) {
        if wm.max_trusted().is_none() {
            self.convict_stragglers_behind(wm, to.outliers);
        }
        let mut kept = VecDeque::new();
        for h in self.held.drain(..) {
            // The frame supports itself.
            if h.supported + 1 >= h.contradicted {
                kept.push_back(h);
            } else {
                to.outliers.push(h.frame);
            }
        }
        for h in kept {
            wm.observe(h.ts);
            to.released.push((h.ts, h.frame));
        }
    }

    /// A new frame at `ts` speaks for or against every frame held before it.
    fn judge_held_by(&mut self, ts: i64, lateness: i64, outliers: &mut Vec<P>) {
        let confirm = self.config.confirm as u32;
        let mut i = 0;
        while i < self.held.len() {
            let h = &mut self.held[i];
            if ts < h.ts.saturating_sub(lateness) {
                h.contradicted += 1;
                if h.contradicted >= confirm {
                    let h = self.held.remove(i).expect("index in range");
                    outliers.push(h.frame);
                    continue;
                }
            } else {
                h.supported += 1;
            }
            i += 1;
        }
    }

    /// Releases, in arrival order, every held frame within reach of the trusted time,
    /// for as long as releasing them moves it further.
    fn release_within_reach(&mut self, wm: &mut Watermark, released: &mut Vec<(i64, P)>) {
        let reach = self.reach(wm);
        loop {
            let Some(limit) = wm.max_trusted().map(|m| m.saturating_add(reach)) else {
                return;
            };
            let before = self.held.len();
            let mut keep = VecDeque::with_capacity(before);
            for h in self.held.drain(..) {
                if h.ts <= limit {
                    wm.observe(h.ts);
                    released.push((h.ts, h.frame));
                } else {
                    keep.push_back(h);
                }
            }
            self.held = keep;
            if self.held.len() == before || self.held.is_empty() {
                return;
            }
        }
    }

    /// Before the stream has a trusted time, the held frames are all it has. A frame
    /// far *behind* them is garbage too (a bit flip to 1970, a month-old clock), but
    /// no later frame can contradict it as one ahead is contradicted. It is convicted
    /// when it lies further below the median than the held frames' own spread
    /// (`STRAGGLER_SPREADS` median absolute deviations) plus the reach, *and* came
    /// after a frame it is late for: later in the stream it would be `late`; here it
    /// would open a window of its own. The very first frame is never convicted: an
    /// ordered stream may start with any gap, and loses nothing, whatever its gaps.
    fn convict_stragglers_behind(&mut self, wm: &Watermark, outliers: &mut Vec<P>) {
        if self.held.len() < 3 {
            return;
        }
        let times: Vec<i64> = self.held.iter().map(|h| h.ts).collect();
        let median = median(times.clone());
        let mad = median_of_deviations(times, median);
        let reach = self.reach(wm);
        let floor = median
            .saturating_sub(reach)
            .saturating_sub(mad.saturating_mul(STRAGGLER_SPREADS));
        let plausible = median.saturating_add(reach);
        let mut ahead = i64::MIN;
        let mut keep = VecDeque::with_capacity(self.held.len());
        for h in self.held.drain(..) {
            let late_for_earlier = h.ts < ahead.saturating_sub(wm.lateness());
            if h.ts < floor && late_for_earlier {
                outliers.push(h.frame);
                continue;
            }
            if h.ts <= plausible {
                ahead = ahead.max(h.ts);
            }
            keep.push_back(h);
        }
        self.held = keep;
    }

    fn jump(&mut self, wm: &mut Watermark, released: &mut Vec<(i64, P)>) {
        let median = median(self.held.iter().map(|h| h.ts).collect());
        wm.observe(median);
        self.release_within_reach(wm, released);
    }
}

/// The lower median of a non-empty list.
fn median(mut times: Vec<i64>) -> i64 {
    let mid = (times.len() - 1) / 2;
    *times.select_nth_unstable(mid).1
}

/// The (lower) median absolute deviation of `times` from `center`.
fn median_of_deviations(times: Vec<i64>, center: i64) -> i64 {
    median(times.iter().map(|t| t.abs_diff(center) as i64).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds a guard and checks, frame by frame, that nothing it lets through is
    /// behind the watermark as it stood when that frame arrived (so never late).
    struct Run {
        wm: Watermark,
        guard: OutlierGuard<i64>,
        clock: Option<WallClock>,
        counted: Vec<i64>,
        outliers: Vec<i64>,
    }

    impl Run {
        fn new(max_ahead: i64, confirm: usize) -> Run {
            Run {
                wm: Watermark::new(5),
                guard: OutlierGuard::new(GuardConfig { max_ahead, confirm }),
                clock: None,
                counted: vec![],
                outliers: vec![],
            }
        }
        fn feed(&mut self, ts: i64) {
            let before = self.wm.get().unwrap_or(i64::MIN);
            let mut released = vec![];
            let to = Decisions {
                released: &mut released,
                outliers: &mut self.outliers,
            };
            if self.guard.admit(&mut self.wm, ts, self.clock, || ts, to) == Admission::Trusted {
                released.insert(0, (ts, ts));
            }
            for (t, _) in released {
                assert!(t >= before, "{t} let through behind the watermark {before}");
                self.counted.push(t);
            }
        }
        fn finish(&mut self) {
            let mut released = vec![];
            let to = Decisions {
                released: &mut released,
                outliers: &mut self.outliers,
            };
            self.guard.finish(&mut self.wm, to);
            self.counted.extend(released.into_iter().map(|(t, _)| t));
        }
    }

    impl Weigh for i64 {
        fn weight(&self) -> usize {
            0
        }
    }

    /// A frame of `.1` bytes at ts `.0`.
    impl Weigh for (i64, usize) {
        fn weight(&self) -> usize {
            self.1
        }
    }

    type Sized = (i64, usize);

    /// Feeds `(ts, bytes)` frames to a guard; what it counted, what it convicted,
    /// and the most bytes it held at once.
    fn feed_sized(confirm: usize, frames: &[Sized]) -> (Vec<Sized>, Vec<Sized>, usize) {
        let mut guard = OutlierGuard::new(GuardConfig {
            max_ahead: 60,
            confirm,
        });
        let mut wm = Watermark::new(5);
        let (mut counted, mut outliers, mut most) = (vec![], vec![], 0);
        for &f in frames {
            let mut released = vec![];
            let to = Decisions {
                released: &mut released,
                outliers: &mut outliers,
            };
            if guard.admit(&mut wm, f.0, None, || f, to) == Admission::Trusted {
                counted.push(f);
            }
            counted.extend(released.into_iter().map(|(_, f)| f));
            most = most.max(guard.held().map(|h| h.frame.1).sum());
        }
        let mut released = vec![];
        let to = Decisions {
            released: &mut released,
            outliers: &mut outliers,
        };
        guard.finish(&mut wm, to);
        counted.extend(released.into_iter().map(|(_, f)| f));
        (counted, outliers, most)
    }

    /// Issue 18: `--confirm 100000` with 1 MiB frames could hold 100 GB per lane.
    #[test]
    fn the_guard_holds_no_more_than_its_byte_limit_and_loses_nothing() {
        const MIB: usize = 1 << 20;
        // A stream that jumps a day ahead after 10 frames: every later frame is
        // held until the buffer is full, and then the jump is made.
        let frames: Vec<(i64, usize)> = (0..10)
            .map(|i| (1_000 + i, MIB))
            .chain((0..100).map(|i| (90_000 + i, MIB)))
            .collect();
        let (counted, outliers, most) = feed_sized(100_000, &frames);
        assert!(
            most <= MAX_HELD_BYTES + MIB,
            "held {most} bytes at once, limit {MAX_HELD_BYTES}"
        );
        assert!(outliers.is_empty(), "{} frames convicted", outliers.len());
        let mut all = counted.clone();
        all.sort();
        assert_eq!(all, frames, "every frame counted once");
    }

    /// The byte limit must not let a few huge garbage frames jump the clock: the
    /// frames that came after them already spoke against them.
    #[test]
    fn huge_garbage_frames_that_fill_the_buffer_are_outliers_not_a_jump() {
        const MIB: usize = 1 << 20;
        let mut frames = vec![];
        for i in 0..40 {
            frames.push((1_000 + i, 100));
            if i % 10 == 5 {
                // A flipped bit sends a 9 MiB frame a year ahead.
                frames.push((1_000 + 31_536_000, 9 * MIB));
            }
        }
        let (counted, outliers, _) = feed_sized(100_000, &frames);
        assert_eq!(
            outliers.iter().filter(|f| f.1 == 9 * MIB).count(),
            4,
            "the garbage frames"
        );
        assert_eq!(counted.len(), 40, "every ordinary frame counted");
        assert!(counted.iter().all(|f| f.1 == 100));
    }

    #[test]
    fn watermark_is_max_minus_lateness_and_never_goes_back() {
        let mut wm = Watermark::new(5);
        assert_eq!(wm.get(), None);
        assert!(wm.observe(100));
        assert!(!wm.observe(90));
        assert_eq!(wm.get(), Some(95));
    }

    #[test]
    fn startup_median_ignores_garbage_first_frame() {
        let mut r = Run::new(60, 4);
        for ts in [2_000_000_000, 1000, 1001, 1002, 1003, 1004] {
            r.feed(ts);
        }
        assert_eq!(r.wm.max_trusted(), Some(1004));
        assert_eq!(
            r.outliers,
            vec![2_000_000_000],
            "four later frames contradict it"
        );
        assert_eq!(r.counted, vec![1000, 1001, 1002, 1003, 1004]);
    }

    #[test]
    fn a_frame_far_behind_the_first_ones_is_an_outlier_not_a_window_of_its_own() {
        // Issue 18: ts 0 (or a month old) among the first `confirm` frames was
        // released with them and opened a 1970 window; from the 17th frame on the
        // same frame is late. At every place among the first frames but the very
        // first (see `convict_stragglers_behind`), and at the end of a short input.
        let t = 1_468_244_340;
        for garbage in [0, t - 30 * 86_400] {
            for at in 1..8 {
                let mut frames: Vec<i64> = (0..8).map(|i| t + i).collect();
                frames.insert(at, garbage);
                let mut r = Run::new(60, 8);
                for ts in &frames {
                    r.feed(*ts);
                }
                r.feed(t + 9);
                r.finish();
                assert_eq!(r.outliers, vec![garbage], "garbage {garbage} at {at}");
                assert_eq!(r.counted.len(), 9, "garbage {garbage} at {at}");
                // Fewer frames than `confirm`: judged at the end of input.
                let mut r = Run::new(60, 16);
                for ts in &frames {
                    r.feed(*ts);
                }
                r.finish();
                assert_eq!(r.outliers, vec![garbage], "short input, garbage at {at}");
            }
        }
    }

    #[test]
    fn a_sparse_start_loses_no_frame_to_the_straggler_rule() {
        // One frame every ten minutes, or with gaps growing from seconds to an hour:
        // the first frames lie far below the median, but within the frames' spread.
        let even: Vec<i64> = (0..40).map(|i| 1_000_000 + 600 * i).collect();
        let growing: Vec<i64> = (0..40).map(|i| 1_000_000 + i * i * 90).collect();
        // A first click, then a burst two minutes later: in order, so not late.
        let burst: Vec<i64> = [1_000_000]
            .into_iter()
            .chain((0..30).map(|i| 1_000_120 + i / 20))
            .collect();
        for frames in [even, growing, burst] {
            let mut r = Run::new(60, 16);
            for ts in &frames {
                r.feed(*ts);
            }
            r.finish();
            assert!(r.outliers.is_empty(), "{:?}", r.outliers);
            assert_eq!(r.counted.len(), frames.len());
        }
    }

    #[test]
    fn single_far_future_frame_is_an_outlier_and_does_not_move_the_watermark() {
        let mut r = Run::new(60, 8);
        for t in 0..20 {
            r.feed(1000 + t);
        }
        r.feed(1000 + (1 << 30));
        for t in 20..40 {
            r.feed(1000 + t);
        }
        assert_eq!(r.wm.max_trusted(), Some(1039));
        assert_eq!(r.outliers, vec![1000 + (1 << 30)]);
        assert_eq!(r.counted.len(), 40);
    }

    #[test]
    fn a_real_jump_counts_every_frame_that_proves_it() {
        let mut r = Run::new(60, 8);
        for t in 0..100 {
            r.feed(1000 + t / 10);
        }
        for t in 0..100 {
            r.feed(1000 + 3 * 3600 + t / 10);
        }
        r.finish();
        assert_eq!(r.counted.len(), 200);
        assert!(r.outliers.is_empty());
        assert_eq!(r.wm.max_trusted(), Some(1000 + 3 * 3600 + 9));
    }

    #[test]
    fn a_frame_just_past_reach_is_released_when_the_stream_catches_up() {
        // 161 is beyond 100 + 60 when it comes, but 159 makes it plausible.
        let mut r = Run::new(60, 4);
        for t in [100, 100, 100, 100, 161, 159] {
            r.feed(t);
        }
        assert_eq!(r.guard.held_len(), 0);
        assert_eq!(r.counted, vec![100, 100, 100, 100, 159, 161]);
    }

    #[test]
    fn held_frames_at_the_end_count_unless_later_frames_contradict_them() {
        let mut r = Run::new(60, 8);
        for t in 0..50 {
            r.feed(1000 + t);
        }
        r.feed(5000);
        r.feed(5001);
        r.feed(1050);
        r.finish();
        assert_eq!(
            r.counted.len(),
            53,
            "one straggler does not outvote two frames"
        );
        let mut r = Run::new(60, 8);
        for t in 0..50 {
            r.feed(1000 + t);
        }
        r.feed(5000);
        for t in 0..3 {
            r.feed(1050 + t);
        }
        r.finish();
        assert_eq!(r.outliers, vec![5000]);
        assert_eq!(r.counted.len(), 53);
    }

    #[test]
    fn the_held_buffer_stays_bounded_under_a_storm_of_garbage() {
        let mut r = Run::new(60, 16);
        let mut x: u64 = 42;
        for i in 0..100_000i64 {
            r.feed(1_000_000 + i / 1000);
            if i % 3 == 0 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                r.feed(1_000_000 + (1i64 << (20 + (x >> 59) % 10)) + (x % 1000) as i64);
            }
            assert!(r.guard.held_len() <= 16);
        }
        assert_eq!(r.wm.max_trusted(), Some(1_000_000 + 99));
        assert_eq!(r.counted.len(), 100_000);
    }

    #[test]
    fn a_sparse_stream_with_one_bit_flip_loses_only_the_flip() {
        for gap in [61, 3600, 86_400 * 30] {
            let mut r = Run::new(60, 16);
            let times: Vec<i64> = (0..200).map(|i| 1_400_000_000 + i * gap).collect();
            for (i, t) in times.iter().enumerate() {
                r.feed(*t);
                if i == 100 {
                    r.feed(t ^ (1 << 31));
                }
            }
            r.finish();
            assert_eq!(r.counted, times, "gap {gap}");
            assert_eq!(r.outliers, vec![times[100] ^ (1 << 31)], "gap {gap}");
        }
    }

    #[test]
    fn the_wall_clock_convicts_the_future_and_trusts_the_present() {
        let mut r = Run::new(60, 16);
        let now = 1_700_000_000;
        r.clock = Some(WallClock {
            now,
            trust_recent: true,
        });
        r.feed(now - 10);
        assert_eq!(r.counted, vec![now - 10], "near now: trusted at once");
        r.feed(now + 3600);
        assert_eq!(
            r.outliers,
            vec![now + 3600],
            "from the future: an outlier at once"
        );
        // A sparse live stream: one frame every two minutes, each counted on arrival.
        for i in 1..10 {
            r.clock = Some(WallClock {
                now: now + 120 * i,
                trust_recent: true,
            });
            r.feed(now + 120 * i - 2);
            assert_eq!(r.guard.held_len(), 0);
        }
        assert_eq!(r.counted.len(), 10);
        // A backfill keeps the frame-count rule: the same sparse frame is held.
        r.clock = Some(WallClock {
            now: now + 2000,
            trust_recent: false,
        });
        r.feed(now + 1999);
        assert_eq!(r.guard.held_len(), 1);
    }

    proptest::proptest! {
        /// In-order streams with gaps from none to years, disordered within the
        /// lateness, lose nothing: no outlier, nothing let through behind the watermark.
        #[test]
        fn ordered_streams_with_any_gaps_are_all_counted(
            seed in 0u64..u64::MAX,
            n in 1usize..400,
            confirm in 1usize..20,
        ) {
            let mut rng = seed | 1;
            let mut next = || { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; rng };
            let mut t: i64 = 1_000_000_000;
            let mut times = Vec::with_capacity(n);
            for _ in 0..n {
                t += match next() % 6 {
                    0 => 0,
                    1 => (next() % 5) as i64,
                    2 => (next() % 120) as i64,
                    3 => (next() % 10_000) as i64,
                    4 => (next() % 40_000_000) as i64,
                    _ => 1,
                };
                times.push(t);
            }
            // Shuffle within the lateness: each frame delayed by less than 5 s of event time.
            let mut keyed: Vec<(i64, i64)> =
                times.iter().map(|&t| (t + (next() % 5) as i64, t)).collect();
            keyed.sort();
            let mut r = Run::new(60, confirm);
            for (_, t) in &keyed {
                r.feed(*t);
            }
            r.finish();
            proptest::prop_assert!(r.outliers.is_empty(), "outliers {:?}", r.outliers);
            let mut counted = r.counted.clone();
            counted.sort();
            proptest::prop_assert_eq!(counted, times);
        }
    }
}
