//! Event time: the watermark, and the rule that keeps garbage timestamps from moving it.
//!
//! The watermark is the highest *trusted* `ts` seen, minus the allowed lateness.
//! A window is final once the watermark reaches its end.
//!
//! Trust rule (the [`OutlierGuard`]):
//! - A frame at most `max_ahead` beyond the highest trusted `ts` is trusted.
//! - A frame further ahead is *held* in a small buffer instead: it neither moves
//!   the watermark nor is counted yet.
//! - A held frame that sees `confirm` trusted frames arrive after it is an
//!   **outlier**: the bulk of the traffic did not follow it (a bit flip, a bad clock).
//! - When `confirm` frames are held at once, the bulk of the traffic *has* moved
//!   (a source came back after an outage, a backfill resumed after a gap). The
//!   trusted time jumps to the median of the held frames and they are replayed in
//!   arrival order, so every frame after a real jump is counted.
//! - Before the first trusted frame, the first `confirm` frames are held and the
//!   median picks the start, so garbage at the very start cannot pin the clock.
//!
//! The buffer never holds more than `confirm` frames, and a real jump is followed
//! after at most `confirm` frames.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

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
        self.max_trusted.map(|m| m - self.lateness)
    }

    pub fn max_trusted(&self) -> Option<i64> {
        self.max_trusted
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
    /// How many agreeing frames make a jump, and how many trusted frames convict an outlier.
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

#[derive(Debug)]
struct Held<P> {
    ts: i64,
    trusted_count_when_held: u64,
    payload: P,
}

/// What the guard decided about one frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// Count it now.
    Trusted,
    /// Kept aside; it comes back through `released` or `outliers` later.
    Held,
}

/// The trust rule. `P` is whatever the caller needs back for a held frame.
#[derive(Debug)]
pub struct OutlierGuard<P> {
    config: GuardConfig,
    held: VecDeque<Held<P>>,
    trusted_count: u64,
}

impl<P> OutlierGuard<P> {
    pub fn new(config: GuardConfig) -> Self {
        OutlierGuard {
            config,
            held: VecDeque::with_capacity(config.confirm),
            trusted_count: 0,
        }
    }

    pub fn held_len(&self) -> usize {
        self.held.len()
    }

    /// For checkpoints: the trusted-frame count and the held frames, oldest first,
    /// as `(ts, trusted count when held, payload)`.
    pub fn state(&self) -> (u64, impl Iterator<Item = (i64, u64, &P)>) {
        (
            self.trusted_count,
            self.held
                .iter()
                .map(|h| (h.ts, h.trusted_count_when_held, &h.payload)),
        )
    }

    /// Rebuilds a guard from [`OutlierGuard::state`].
    pub fn restore(
        config: GuardConfig,
        trusted_count: u64,
        held: impl IntoIterator<Item = (i64, u64, P)>,
    ) -> Self {
        OutlierGuard {
            config,
            held: held
                .into_iter()
                .map(|(ts, trusted_count_when_held, payload)| Held {
                    ts,
                    trusted_count_when_held,
                    payload,
                })
                .collect(),
            trusted_count,
        }
    }

    /// Classifies one frame against the watermark.
    ///
    /// `payload` is only built when the frame is held. Frames that a jump lets
    /// through are appended to `released` (in arrival order) and must be counted;
    /// frames convicted as outliers are appended to `outliers`.
    #[inline]
    pub fn admit(
        &mut self,
        wm: &mut Watermark,
        ts: i64,
        payload: impl FnOnce() -> P,
        released: &mut Vec<(i64, P)>,
        outliers: &mut Vec<P>,
    ) -> Admission {
        let trusted = match wm.max_trusted() {
            Some(m) => ts <= m.saturating_add(self.config.max_ahead),
            None => false,
        };
        if trusted {
            wm.observe(ts);
            self.trusted_count += 1;
            self.convict(outliers);
            return Admission::Trusted;
        }
        self.held.push_back(Held {
            ts,
            trusted_count_when_held: self.trusted_count,
            payload: payload(),
        });
        if self.held.len() >= self.config.confirm {
            self.jump(wm, released, outliers);
        }
        Admission::Held
    }

    /// End of input: held frames that make up most of the traffic since the first of
    /// them are a jump; the others are outliers.
    pub fn finish(
        &mut self,
        wm: &mut Watermark,
        released: &mut Vec<(i64, P)>,
        outliers: &mut Vec<P>,
    ) {
        let Some(first) = self.held.front() else {
            return;
        };
        let trusted_since = self.trusted_count - first.trusted_count_when_held;
        if wm.max_trusted().is_none() || (self.held.len() as u64) > trusted_since {
            self.jump(wm, released, outliers);
        }
        outliers.extend(self.held.drain(..).map(|h| h.payload));
    }

    fn convict(&mut self, outliers: &mut Vec<P>) {
        while let Some(h) = self.held.front() {
            if self.trusted_count - h.trusted_count_when_held < self.config.confirm as u64 {
                break;
            }
            outliers.push(self.held.pop_front().expect("front exists").payload);
        }
    }

    fn jump(&mut self, wm: &mut Watermark, released: &mut Vec<(i64, P)>, outliers: &mut Vec<P>) {
        let mut times: Vec<i64> = self.held.iter().map(|h| h.ts).collect();
        let mid = (times.len() - 1) / 2;
        let median = *times.select_nth_unstable(mid).1;
        wm.observe(median);
        // Replay in arrival order. Those still far ahead wait again, with a fresh count.
        let replay: Vec<Held<P>> = self.held.drain(..).collect();
        let limit = wm
            .max_trusted()
            .expect("just set")
            .saturating_add(self.config.max_ahead);
        for h in replay {
            if h.ts <= limit {
                wm.observe(h.ts);
                self.trusted_count += 1;
                released.push((h.ts, h.payload));
            } else {
                self.held.push_back(Held {
                    trusted_count_when_held: self.trusted_count,
                    ..h
                });
            }
        }
        self.convict(outliers);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Run {
        wm: Watermark,
        guard: OutlierGuard<i64>,
        counted: Vec<i64>,
        outliers: Vec<i64>,
    }

    impl Run {
        fn new(max_ahead: i64, confirm: usize) -> Run {
            Run {
                wm: Watermark::new(5),
                guard: OutlierGuard::new(GuardConfig { max_ahead, confirm }),
                counted: vec![],
                outliers: vec![],
            }
        }
        fn feed(&mut self, ts: i64) {
            let mut released = vec![];
            let a = self
                .guard
                .admit(&mut self.wm, ts, || ts, &mut released, &mut self.outliers);
            if a == Admission::Trusted {
                self.counted.push(ts);
            }
            self.counted.extend(released.into_iter().map(|(t, _)| t));
        }
        fn finish(&mut self) {
            let mut released = vec![];
            self.guard
                .finish(&mut self.wm, &mut released, &mut self.outliers);
            self.counted.extend(released.into_iter().map(|(t, _)| t));
        }
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
        // 4 held -> median 1001 -> the three real ones released; the garbage waits.
        assert_eq!(r.wm.max_trusted(), Some(1004));
        assert!(!r.counted.contains(&2_000_000_000));
        for t in 1005..1009 {
            r.feed(t);
        }
        assert_eq!(r.outliers, vec![2_000_000_000]);
        assert_eq!(r.counted.len(), 9);
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
    fn a_real_jump_is_followed_within_confirm_frames_and_nothing_is_lost() {
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
    fn held_frames_at_the_end_are_a_jump_only_if_they_are_most_of_the_traffic() {
        let mut r = Run::new(60, 8);
        for t in 0..50 {
            r.feed(1000 + t);
        }
        r.feed(5000);
        r.feed(5001);
        r.feed(1050);
        r.finish();
        assert_eq!(r.counted.len(), 53);
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
    }
}
