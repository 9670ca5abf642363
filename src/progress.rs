//! Progress for a person: a bar on a terminal for `count` (bytes of the inputs,
//! compressed bytes for `.gz`) and `run --until-end` (messages up to the end of
//! each partition), and a one-line status in the log at an interval for a live
//! `run`. It reads the copy of the telemetry that the aggregating stage shares
//! about once a second ([`Metrics`]), so it costs the hot path nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::metrics::Metrics;

/// What progress is measured against.
pub enum Goal {
    /// Files: bytes read from disk (`read`, fed by [`Counted`] readers) out of `total`
    /// (`None` with stdin among the inputs).
    Bytes {
        total: Option<u64>,
        read: Arc<AtomicU64>,
    },
    /// A backfill: frames read, out of frames read plus the consumer lag.
    Backfill,
    /// A live run: a status line in the log every `every`.
    Live { every: Duration },
}

/// Draws until dropped.
pub struct Progress {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Progress {
    /// The bar goes to stderr only if it is a terminal; the status line to the log.
    pub fn start(goal: Goal, metrics: Arc<Metrics>) -> Progress {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || match goal {
                Goal::Live { every } => status_lines(&metrics, every, &stopping),
                goal => bar(goal, &metrics, &stopping),
            })
            .ok();
        Progress { stop, thread }
    }

    /// Whether a bar would be seen: stderr is a terminal.
    pub fn on_terminal() -> bool {
        std::io::IsTerminal::is_terminal(&std::io::stderr())
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

const TICK: Duration = Duration::from_millis(100);

fn bar(goal: Goal, metrics: &Metrics, stop: &AtomicBool) {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(10));
    let template = match &goal {
        Goal::Bytes { total: Some(_), .. } => {
            "{elapsed_precise} [{wide_bar}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}"
        }
        Goal::Bytes { total: None, .. } => {
            "{elapsed_precise} {spinner} {bytes} {bytes_per_sec} {msg}"
        }
        _ => "{elapsed_precise} [{wide_bar}] {human_pos}/{human_len} frames, ETA {eta} {msg}",
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    if let Goal::Bytes { total: Some(t), .. } = goal {
        bar.set_length(t);
    }
    let started = Instant::now();
    let mut last_message = None;
    loop {
        let done = stop.load(Ordering::Relaxed);
        let stage = metrics.stage();
        let frames = stage.telemetry.frames_received;
        match &goal {
            Goal::Bytes { read, .. } => bar.set_position(read.load(Ordering::Relaxed)),
            _ => {
                let lag: i64 = metrics.kafka().map_or(0, |k| k.consumer_lag.values().sum());
                bar.set_length(frames + lag.max(0) as u64);
                bar.set_position(frames);
            }
        }
        if last_message.is_none_or(|t: Instant| t.elapsed() >= Duration::from_secs(1)) || done {
            last_message = Some(Instant::now());
            let secs = started.elapsed().as_secs_f64().max(1e-3);
            bar.set_message(format!(
                "{} frames/s, {} rejected",
                (frames as f64 / secs) as u64,
                stage
                    .telemetry
                    .not_counted_by_reason()
                    .map(|(_, n)| n)
                    .sum::<u64>()
            ));
        }
        if done {
            break;
        }
        std::thread::sleep(TICK);
    }
    bar.finish();
}

fn status_lines(metrics: &Metrics, every: Duration, stop: &AtomicBool) {
    let mut last = (Instant::now(), 0u64);
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(TICK);
        if last.0.elapsed() < every {
            continue;
        }
        let stage = metrics.stage();
        let frames = stage.telemetry.frames_received;
        let rate = (frames - last.1.min(frames)) as f64 / last.0.elapsed().as_secs_f64();
        last = (Instant::now(), frames);
        // Unknown until librdkafka's first statistics arrive.
        let lag = metrics
            .kafka()
            .filter(|k| !k.consumer_lag.is_empty())
            .map(|k| k.consumer_lag.values().sum::<i64>().to_string());
        let watermark = stage
            .watermark
            .and_then(|w| jiff::Timestamp::from_second(w).ok())
            .map(|t| t.to_string());
        tracing::info!(
            event = "status",
            frames_per_s = rate as u64,
            lag = %lag.as_deref().unwrap_or("unknown"),
            watermark = watermark.as_deref().unwrap_or("none"),
            open_windows = stage.open_windows,
            counted = stage.telemetry.frames_counted,
        );
    }
}

/// How long `to_go` more frames take at `rate` frames per second, for a person: a
/// stalled or unmeasured rate has no answer (not "inf s"), and beyond a week the
/// rate says nothing about when it ends.
pub(crate) fn time_to_go(to_go: u64, rate: f64) -> String {
    const WEEK: f64 = 7.0 * 86_400.0;
    if to_go == 0 {
        return "about 0 s".into();
    }
    if !(rate.is_finite() && rate > 0.0) {
        return "time to go unknown".into();
    }
    let secs = to_go as f64 / rate;
    match secs {
        s if !s.is_finite() || s > WEEK => "more than a week to go".into(),
        s if s < 100.0 => format!("about {s:.0} s"),
        s if s < 100.0 * 60.0 => format!("about {:.0} min", s / 60.0),
        s => format!("about {:.0} h", s / 3600.0),
    }
}

#[cfg(test)]
mod tests {
    use super::time_to_go;

    /// Issue 18's messages: a backfill whose rate was 0 printed "about inf s".
    /// Expected times are worked out by hand from the frames and the rate.
    #[test]
    fn time_to_go_is_never_inf_nan_or_absurd() {
        assert_eq!(time_to_go(1_000, 10.0), "about 2 min");
        assert_eq!(time_to_go(990, 10.0), "about 99 s");
        assert_eq!(time_to_go(36_000, 10.0), "about 60 min");
        assert_eq!(time_to_go(360_000, 10.0), "about 10 h");
        assert_eq!(time_to_go(0, 0.0), "about 0 s");
        for rate in [0.0, -5.0, f64::NAN, f64::NEG_INFINITY] {
            assert_eq!(time_to_go(1_000, rate), "time to go unknown", "{rate}");
        }
        // A week is 604,800 s: at one frame a second, that many frames and one more.
        assert_eq!(time_to_go(604_800, 1.0), "about 168 h");
        let slow = [(604_801, 1.0), (1, 1e-300), (u64::MAX, f64::MIN_POSITIVE)];
        for (to_go, rate) in slow {
            assert_eq!(
                time_to_go(to_go, rate),
                "more than a week to go",
                "{to_go} at {rate}"
            );
        }
        assert_eq!(time_to_go(u64::MAX, f64::INFINITY), "time to go unknown");
    }
}
