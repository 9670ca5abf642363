//! Telemetry: the named events of a run, each counted and logged in one place, so
//! that the logs and the summary can never disagree.
//!
//! Hot-path events (a frame counted) only bump a counter; rare ones (a rejected,
//! late or outlying frame, a window emitted) also go to `tracing` at debug level,
//! so `RUST_LOG=cardinal=debug` shows every decision with its position.

use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::aggregator::WindowResult;
use crate::frame::Position;
use crate::reject::Reason;
use crate::window::GranularitySet;

/// Writes a message for a person to stderr. A lost line (stderr closed, full or
/// gone) is not a failure, and never a panic, unlike `eprintln!`.
pub fn to_stderr(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let _ = std::io::stderr().lock().write_fmt(args);
}

/// `eprintln!` that cannot panic: see [`to_stderr`].
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::telemetry::to_stderr(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `eprint!` that cannot panic: see [`to_stderr`].
#[macro_export]
macro_rules! say_raw {
    ($($arg:tt)*) => {
        $crate::telemetry::to_stderr(format_args!($($arg)*))
    };
}

/// Counters for one run. Everything the summary prints comes from here.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Telemetry {
    pub frames_received: u64,
    pub bytes_received: u64,
    pub frames_counted: u64,
    /// Rejections on sight (not late or outlying), indexed like [`Reason::ALL`].
    pub rejected: [u64; Reason::ALL.len()],
    /// Frames too late for at least one granularity.
    pub late: u64,
    /// Frames far ahead of the stream that the traffic never confirmed.
    pub outliers: u64,
    pub windows_emitted: u64,
    pub corrections_emitted: u64,
    /// The most windows open at once (all granularities), sampled as results go out.
    pub max_open_windows: usize,
    /// Frames read per Kafka partition (empty for files).
    pub read_by_partition: Vec<u64>,
    /// Late frames per granularity they missed, indexed like [`crate::window::Granularity::ALL`].
    pub late_by_window: [u64; 6],
    /// Windows emitted (first versions) per granularity.
    pub emitted_by_window: [u64; 6],
    /// Live runs: wall-clock seconds from a window's end to its first emission.
    pub emit_latency: Histogram,
    /// Resumed from a checkpoint: the frames and bytes read before, which the
    /// figures above include.
    pub resumed_with: Option<(u64, u64)>,
}

/// What a checkpoint keeps of the counters, so that a resumed job's summary
/// covers the whole job: every frame read is counted or rejected once, across
/// restarts. Reasons go by name, so that a reason added later reads as none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub frames_received: u64,
    pub bytes_received: u64,
    pub frames_counted: u64,
    pub rejected: Vec<(String, u64)>,
    pub late: u64,
    pub outliers: u64,
    pub windows_emitted: u64,
    pub corrections_emitted: u64,
    pub late_by_window: [u64; 6],
    pub emitted_by_window: [u64; 6],
}

impl Telemetry {
    /// The job's totals so far, for a checkpoint.
    pub fn totals(&self) -> Totals {
        Totals {
            frames_received: self.frames_received,
            bytes_received: self.bytes_received,
            frames_counted: self.frames_counted,
            rejected: (Reason::ALL.iter().zip(self.rejected))
                .filter(|(_, n)| *n > 0)
                .map(|(r, n)| (r.name().to_string(), n))
                .collect(),
            late: self.late,
            outliers: self.outliers,
            windows_emitted: self.windows_emitted,
            corrections_emitted: self.corrections_emitted,
            late_by_window: self.late_by_window,
            emitted_by_window: self.emitted_by_window,
        }
    }

    /// Counters that go on from a checkpoint's totals.
    pub fn resumed(t: &Totals) -> Telemetry {
        let mut rejected = [0; Reason::ALL.len()];
        for (name, n) in &t.rejected {
            if let Some(i) = Reason::ALL.iter().position(|r| r.name() == name) {
                rejected[i] = *n;
            }
        }
        Telemetry {
            frames_received: t.frames_received,
            bytes_received: t.bytes_received,
            frames_counted: t.frames_counted,
            rejected,
            late: t.late,
            outliers: t.outliers,
            windows_emitted: t.windows_emitted,
            corrections_emitted: t.corrections_emitted,
            late_by_window: t.late_by_window,
            emitted_by_window: t.emitted_by_window,
            resumed_with: Some((t.frames_received, t.bytes_received)),
            ..Telemetry::default()
        }
    }
}

/// A histogram with fixed buckets, for the metrics endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// Upper bounds, ascending; an implicit `+Inf` bucket follows.
    pub bounds: &'static [f64],
    /// Observations per bucket (not cumulative), one more than `bounds`.
    pub counts: Vec<u64>,
    pub sum: f64,
}

impl Histogram {
    /// Emission delays: the lateness plus the idle timeout are a few seconds to a
    /// minute; longer means a partition held results back.
    pub const EMIT_LATENCY: &'static [f64] = &[
        0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0,
    ];

    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
        }
    }

    pub fn observe(&mut self, v: f64) {
        let i = self.bounds.partition_point(|b| *b < v);
        self.counts[i] += 1;
        self.sum += v;
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new(Self::EMIT_LATENCY)
    }
}

impl Eq for Histogram {}

impl Telemetry {
    #[inline(always)]
    pub fn bytes_received(&mut self, n: usize) {
        self.bytes_received += n as u64;
    }

    #[inline(always)]
    pub fn frame_received(&mut self) {
        self.frames_received += 1;
    }

    /// A frame read from a Kafka partition (counted per partition for the metrics).
    #[inline(always)]
    pub fn frame_read_from(&mut self, partition: u32) {
        let p = partition as usize;
        if p >= self.read_by_partition.len() {
            self.read_by_partition.resize(p + 1, 0);
        }
        self.read_by_partition[p] += 1;
    }

    #[inline(always)]
    pub fn frame_counted(&mut self) {
        self.frames_counted += 1;
    }

    pub fn frame_rejected(&mut self, reason: Reason, position: &Position) {
        self.rejected[reason as usize] += 1;
        tracing::debug!(event = "frame_rejected", reason = reason.name(), %position);
    }

    /// A stage failed on a frame: a bug, worth a warning at any log level.
    pub fn frame_failed(&mut self, error: &str, position: &Position) {
        self.rejected[Reason::InternalError as usize] += 1;
        tracing::warn!(event = "frame_failed", error, %position);
    }

    /// `counted_elsewhere`: the frame still counted for the granularities it did not miss.
    pub fn frame_late(
        &mut self,
        missed: GranularitySet,
        counted_elsewhere: bool,
        position: &Position,
    ) {
        self.late += 1;
        for g in missed.iter() {
            self.late_by_window[g as usize] += 1;
        }
        if counted_elsewhere {
            self.frames_counted += 1;
        }
        tracing::debug!(event = "frame_late", missed = ?missed.iter().collect::<Vec<_>>(), %position);
    }

    pub fn frame_outlier(&mut self, position: &Position) {
        self.outliers += 1;
        tracing::debug!(event = "frame_outlier", %position);
    }

    #[inline]
    pub fn open_windows(&mut self, n: usize) {
        self.max_open_windows = self.max_open_windows.max(n);
    }

    /// An input that looks like UTF-16: each of its frames is rejected, and the
    /// rejects alone do not say why. Once per input, at its first frame.
    pub fn input_utf16(&mut self, input: &str, iconv: &str, evidence: &str) {
        tracing::warn!(
            event = "input_utf16",
            input,
            evidence,
            "input {input} looks like UTF-16 ({evidence}); Cardinal reads UTF-8: \
             convert with `iconv -f {iconv} -t UTF-8`"
        );
    }

    /// Alignment gave up on a lane (a partition) that stayed too far behind.
    pub fn lane_skewed(&mut self, lane: usize, behind_secs: i64) {
        tracing::warn!(
            event = "partition_skewed",
            partition = lane,
            behind_s = behind_secs,
            "partition {lane} stayed {behind_secs} s of event time behind the others for --drift-timeout; \
             it no longer holds results back, and its frames are judged against the stream (late ones are rejected)"
        );
    }

    /// `now`: the wall clock (unix seconds) of a live run, for the emission delay.
    pub fn window_emitted(&mut self, w: &WindowResult, now: Option<i64>) {
        if w.version > 1 {
            self.corrections_emitted += 1;
        } else {
            self.windows_emitted += 1;
            self.emitted_by_window[w.granularity as usize] += 1;
            if let Some(now) = now {
                self.emit_latency
                    .observe(now.saturating_sub(w.span.end).max(0) as f64);
            }
        }
        tracing::debug!(
            event = "window_emitted",
            window = w.granularity.name(),
            start = w.span.start,
            unique_users = w.unique_users,
            version = w.version
        );
    }

    /// Frames not counted, by reason, as the rejects file has them: late and
    /// outlying frames are counted apart from the rejections on sight.
    pub fn not_counted_by_reason(&self) -> impl Iterator<Item = (Reason, u64)> + '_ {
        Reason::ALL.iter().zip(self.rejected).map(|(r, n)| match r {
            Reason::Late => (*r, self.late),
            Reason::Outlier => (*r, self.outliers),
            _ => (*r, n),
        })
    }

    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().sum()
    }

    /// The end-of-run summary for stderr.
    pub fn summary(&self, elapsed: Duration) -> String {
        let secs = elapsed.as_secs_f64().max(1e-9);
        let mut s = String::new();
        let (before_frames, before_bytes) = self.resumed_with.unwrap_or((0, 0));
        let (frames, bytes) = (
            self.frames_received.saturating_sub(before_frames),
            self.bytes_received.saturating_sub(before_bytes),
        );
        if self.resumed_with.is_some() {
            let _ = writeln!(
                s,
                "cardinal: {} frames read ({:.1} MB) in all; resumed from a checkpoint, this run read {} ({:.1} MB) in {:.2}s: {:.0} frames/s, {:.1} MB/s",
                self.frames_received,
                self.bytes_received as f64 / 1e6,
                frames,
                bytes as f64 / 1e6,
                secs,
                frames as f64 / secs,
                bytes as f64 / 1e6 / secs,
            );
        } else {
            let _ = writeln!(
                s,
                "cardinal: {} frames read ({:.1} MB) in {:.2}s: {:.0} frames/s, {:.1} MB/s",
                frames,
                bytes as f64 / 1e6,
                secs,
                frames as f64 / secs,
                bytes as f64 / 1e6 / secs,
            );
        }
        let _ = writeln!(
            s,
            "  counted {}, rejected {}, late {}, outliers {}; windows emitted {}, corrections {}, open at most {}",
            self.frames_counted,
            self.rejected_total(),
            self.late,
            self.outliers,
            self.windows_emitted,
            self.corrections_emitted,
            self.max_open_windows,
        );
        let reasons: Vec<String> = Reason::ALL
            .iter()
            .zip(self.rejected)
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| format!("{} {n}", r.name()))
            .collect();
        if !reasons.is_empty() {
            let _ = writeln!(s, "  rejected by reason: {}", reasons.join(", "));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_lists_only_reasons_that_happened() {
        let mut t = Telemetry::default();
        t.frame_received();
        let at = |line| Position::Line {
            source: "f".into(),
            line,
        };
        t.frame_rejected(Reason::Truncated, &at(3));
        t.frame_rejected(Reason::Truncated, &at(4));
        let s = t.summary(Duration::from_secs(1));
        assert!(s.contains("rejected by reason: truncated 2"), "{s}");
        assert!(!s.contains("bad_ts"), "{s}");
    }
}
