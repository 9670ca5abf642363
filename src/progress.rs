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
