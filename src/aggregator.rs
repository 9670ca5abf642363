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

use std::collections::BTreeMap;

use crate::counter::Counter;
use crate::watermark::{Admission, GuardConfig, OutlierGuard, Watermark};
use crate::window::{Calendar, Granularity, Span};

/// How the aggregator behaves; everything is in seconds.
#[derive(Debug, Clone)]
pub struct Settings {
    pub granularities: Vec<Granularity>,
    pub lateness: i64,
    pub grace: i64,
    pub guard: GuardConfig,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            granularities: vec![Granularity::Minute],
            lateness: 5,
            grace: 0,
            guard: GuardConfig::default(),
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
}

impl<T> Default for Output<T> {
    fn default() -> Self {
        Output {
            windows: Vec::new(),
            late: Vec::new(),
            released_counted: 0,
            outliers: Vec::new(),
        }
    }
}

impl<T> Output<T> {
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
            && self.late.is_empty()
            && self.outliers.is_empty()
            && self.released_counted == 0
    }
    pub fn clear(&mut self) {
        self.windows.clear();
        self.late.clear();
        self.outliers.clear();
        self.released_counted = 0;
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
}

/// A frame held by the outlier guard.
#[derive(Debug)]
struct Pending<K, T> {
    key: K,
    tag: T,
}

/// The aggregator. `C` counts users; `T` tags held frames so that the caller can
/// report them (a source position, the raw bytes) when they come back.
pub struct Aggregator<C: Counter, T> {
    calendar: Calendar,
    settings: Settings,
    counter_config: C::Config,
    watermark: Watermark,
    guard: OutlierGuard<Pending<C::Key, T>>,
    open: BTreeMap<WindowId, WindowState<C>>,
    /// Last window seen per granularity: consecutive frames almost always share it.
    span_cache: [Span; 6],
    released: Vec<(i64, Pending<C::Key, T>)>,
    outliers: Vec<Pending<C::Key, T>>,
}

impl<C: Counter, T> Aggregator<C, T> {
    pub fn new(calendar: Calendar, settings: Settings, counter_config: C::Config) -> Self {
        let mut granularities = settings.granularities.clone();
        granularities.sort();
        granularities.dedup();
        let settings = Settings {
            granularities,
            ..settings
        };
        Aggregator {
            calendar,
            watermark: Watermark::new(settings.lateness),
            guard: OutlierGuard::new(settings.guard),
            settings,
            counter_config,
            open: BTreeMap::new(),
            span_cache: [Span { start: 0, end: 0 }; 6],
            released: Vec::new(),
            outliers: Vec::new(),
        }
    }

    pub fn calendar(&self) -> &Calendar {
        &self.calendar
    }

    pub fn watermark(&self) -> Watermark {
        self.watermark
    }

    pub fn open_windows(&self) -> usize {
        self.open.len()
    }

    /// Ingests one frame. `tag` is called only if the frame is held.
    #[inline]
    pub fn ingest(
        &mut self,
        ts: i64,
        key: C::Key,
        tag: impl FnOnce() -> T,
        out: &mut Output<T>,
    ) -> Verdict {
        let before = self.watermark.get();
        let admission = self.guard.admit(
            &mut self.watermark,
            ts,
            || Pending { key, tag: tag() },
            &mut self.released,
            &mut self.outliers,
        );
        out.outliers.extend(self.outliers.drain(..).map(|p| p.tag));
        if self.watermark.get() != before {
            self.close_windows(out);
        }
        let verdict = match admission {
            Admission::Trusted => self.count(ts, key),
            Admission::Held => Verdict::Held,
        };
        self.count_released(out);
        verdict
    }

    /// End of input: resolves held frames, then emits every open window as final.
    pub fn flush(&mut self, out: &mut Output<T>) {
        self.guard
            .finish(&mut self.watermark, &mut self.released, &mut self.outliers);
        out.outliers.extend(self.outliers.drain(..).map(|p| p.tag));
        self.count_released(out);
        while let Some((id, state)) = self.open.pop_first() {
            if state.version == 0 || state.dirty {
                out.windows.push(self.result(id, &state));
            }
        }
    }

    fn count_released(&mut self, out: &mut Output<T>) {
        if self.released.is_empty() {
            return;
        }
        // A jump moved the watermark: close what it closed before counting.
        self.close_windows(out);
        let released = std::mem::take(&mut self.released);
        for (ts, p) in released {
            match self.count(ts, p.key) {
                Verdict::Counted => out.released_counted += 1,
                late => out.late.push((p.tag, late)),
            }
        }
    }

    #[inline]
    fn count(&mut self, ts: i64, key: C::Key) -> Verdict {
        let wm = self.watermark.get().unwrap_or(i64::MIN);
        let mut missed = GranularitySet::default();
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
        let Some(wm) = self.watermark.get() else {
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
                out.windows.push(WindowResult {
                    granularity: id.granularity,
                    span: Span {
                        start: id.start,
                        end: id.end,
                    },
                    unique_users: state.counter.count(),
                    frames: state.frames,
                    version: state.version,
                    is_final: true,
                    rse: state.counter.rse(),
                });
            }
            if id.end.saturating_add(grace) <= wm {
                expired.push(*id);
            }
        }
        for id in expired {
            self.open.remove(&id);
        }
    }

    fn result(&self, id: WindowId, state: &WindowState<C>) -> WindowResult {
        WindowResult {
            granularity: id.granularity,
            span: Span {
                start: id.start,
                end: id.end,
            },
            unique_users: state.counter.count(),
            frames: state.frames,
            version: state.version + 1,
            is_final: true,
            rse: state.counter.rse(),
        }
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
            .map(|(i, (ts, uid))| a.ingest(*ts, Exact::key(uid.as_bytes()), || i, &mut out))
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
            a.watermark().get()
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
            a.ingest(M + i / 100, i as u64, || 0, &mut out);
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            let garbage = (x >> 30) as i64 % 4_000_000_000;
            a.ingest(garbage, i as u64, || 0, &mut out);
            assert!(a.open_windows() <= 6 + 6, "{} open", a.open_windows());
        }
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
        ) {
            let mut rng = seed;
            let mut next = || { rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); rng >> 33 };
            // In-order event times, then each frame delayed by less than the lateness.
            let mut frames: Vec<(i64, i64, u64)> = (0..n as i64)
                .map(|i| {
                    let ts = M + i / rate;
                    let delay = (next() % lateness as u64) as i64;
                    (ts + delay, ts, next() % users)
                })
                .collect();
            frames.sort_by_key(|f| f.0);
            let grans = [Granularity::Minute, Granularity::Hour, Granularity::Day];
            let mut a: Aggregator<Exact, usize> = Aggregator::new(
                Calendar::utc(),
                Settings { granularities: grans.to_vec(), lateness, grace: 0, guard: GuardConfig::default() },
                (),
            );
            let mut out = Output::default();
            for (i, (_, ts, uid)) in frames.iter().enumerate() {
                let v = a.ingest(*ts, Exact::key(uid.to_string().as_bytes()), || i, &mut out);
                proptest::prop_assert!(!matches!(v, Verdict::Late { .. }), "frame within lateness was late");
            }
            a.flush(&mut out);
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
