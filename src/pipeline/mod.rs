//! The pipeline: sources → parser → aggregator → emitter → sinks.
//!
//! A *feeder* thread (files, or a Kafka consumer) cuts its input into chunks and
//! hands them to a pool of parser threads. Aggregation must see frames in arrival
//! order (the watermark depends on it), so each chunk's parse result comes back
//! through its own one-shot channel, queued in feed order, and the aggregating
//! stage on the calling thread takes them in turn. Feeders can also queue wall-clock
//! ticks and lane revocations. All channels are bounded, so a slow sink slows the
//! feeder instead of filling memory.
//!
//! In the order a chunk meets them: `feed` (the feeder's handle and the typed
//! channels), `parse` (the worker threads), `stage` (the aggregating stage and
//! the hooks' view of it). This file holds what callers configure and implement:
//! [`CountConfig`], [`Sinks`], [`Hooks`], and the entry points.

mod feed;
mod parse;
mod stage;

use std::io::Read;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use parking_lot::Mutex;

use thiserror::Error;

use crate::aggregator::{Aggregator, Settings, Snapshot, WindowResult};
use crate::counter::{Counter, Exact, Hll, HllConfig};
use crate::emitter::Format;
use crate::frame::HeldFrame;
use crate::metrics::Metrics;
use crate::parser::{self, FrameSpec, UidFrom};
use crate::record;
use crate::sink::{Reject, Rejected, ResultSink, Results, SinkError};
use crate::source::{BufferPool, Chunker, SourceError};
use crate::telemetry::{Telemetry, Totals};
use crate::window::{Calendar, Granularity};

use feed::{Channels, Item, Job, Signal};
pub use feed::{Feed, PausedLanes};
use parse::parse_chunk;
use stage::Aggregate;

/// Which distinct counter to use, `--counter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterKind {
    Exact,
    Hll(HllConfig),
}

/// Everything the pipeline needs besides its inputs and sinks.
#[derive(Debug, Clone)]
pub struct CountConfig {
    pub calendar: Calendar,
    pub settings: Settings,
    pub counter: CounterKind,
    /// Parser threads.
    pub threads: usize,
    pub chunk_bytes: usize,
    /// Longer frames are skipped in constant memory and rejected as `too_large`.
    pub max_frame_bytes: usize,
    /// Where to publish metrics (`--http`), if anywhere.
    pub metrics: Option<Arc<Metrics>>,
    /// Which root keys hold the uid and the ts, and the ts unit.
    pub frames: FrameSpec,
}

/// What the chunks between the reader and the aggregating stage may hold, in
/// input bytes, whatever the thread count. With each chunk's parse results (at
/// most [`crate::source::MAX_CHUNK_FRAMES`] of them, tens of bytes each) and the
/// buffer pool, this bounds the memory a run uses besides its windows.
pub const IN_FLIGHT_BYTES: usize = 64 << 20;

/// How many chunks may be in flight: four per parser thread keep them busy, as
/// long as the byte budget allows. A chunk's buffer may grow to the frame limit
/// to hold one long line, so that is what each one is charged.
pub fn chunks_in_flight(threads: usize, chunk_bytes: usize, max_frame_bytes: usize) -> usize {
    let per_chunk = chunk_bytes.max(max_frame_bytes).max(1);
    (threads.saturating_mul(4))
        .min(IN_FLIGHT_BYTES / per_chunk)
        .max(2)
}

const METRICS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// An opened input: its name for messages, and its bytes.
pub struct OpenInput {
    pub name: String,
    pub reader: Box<dyn Read + Send>,
}

pub struct Sinks {
    /// Every sink results go to: stdout (first: when its reader goes away, the run
    /// stops quietly before the others see the batch), and the results topic.
    pub results: Vec<Box<dyn Results>>,
    /// Every sink a rejected frame goes to: none, the file, the topic, or both.
    pub rejects: Vec<Box<dyn Reject>>,
}

impl Sinks {
    /// Results as lines to `out`, rejects nowhere.
    pub fn lines(out: Box<dyn std::io::Write + Send>, format: Format) -> Sinks {
        Sinks {
            results: vec![Box::new(ResultSink::new(out, format))],
            rejects: Vec::new(),
        }
    }

    fn reject(&mut self, frame: Rejected<'_>) -> Result<(), SinkError> {
        for sink in &mut self.rejects {
            sink.write(frame)?;
        }
        Ok(())
    }
}

#[derive(Debug, Error)]
pub enum PipelineError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// A live source or sink failed (the message says which and why).
    #[error("{0}")]
    Live(String),
}

/// How the run ended, with its counters.
#[derive(Debug)]
pub struct CountReport {
    pub telemetry: Telemetry,
    /// The reader of the results went away before the end (`| head`).
    pub output_closed: bool,
    /// What checkpointing cost, if it was on: the hooks' line for the summary.
    pub checkpoint_summary: String,
}

/// What the hooks may ask of the aggregating stage, between two queue items.
pub trait StateView {
    /// The job's counters so far (restored ones included), for a checkpoint.
    fn totals(&self) -> Totals;
    /// The first position on `lane` not yet covered by final results.
    fn safe_position(&self, lane: usize) -> Option<u64>;
    /// Each lane's next position: what the state reflects.
    fn next_positions(&self) -> Vec<(usize, u64)>;
    /// For files: (input index, byte offset, next line) after the last chunk counted.
    fn file_position(&self) -> Option<(usize, u64, u64)>;
    /// The aggregator's state for a checkpoint: whole, or with `changes` only what
    /// changed since the previous one (when the aggregator kept track since then).
    fn checkpoint(&mut self, changes: bool) -> Snapshot<HeldFrame>;
    /// How many windows are open (of every granularity).
    fn open_windows(&self) -> usize;
    /// Scale-out: `lane` moves to another process; its frames not counted yet go
    /// with it (see `Aggregator::release_lane`).
    fn release_lane(&mut self, lane: usize) -> Vec<HeldFrame>;
    /// Lanes silent for the idle timeout: they do not hold results back.
    fn idle_lanes(&self) -> Vec<usize>;
    /// The stream's watermark: windows ending at or before it are final here.
    fn watermark(&self) -> Option<i64>;
    /// How long `lane` has been silent (ms), for the next owner's idle clock.
    fn quiet_ms(&self, lane: usize) -> u64;
    /// Scale-out: lanes taken over, with how long they had been silent (see
    /// `Aggregator::resume_quiet`).
    fn resume_quiet(&mut self, lanes: &[(usize, u64)]);
    /// Scale-out: the lanes other processes hold, with their reported watermarks
    /// (see `Aggregator::set_remote`).
    fn set_remote(&mut self, remote: &[(usize, Option<Option<i64>>)]);
    /// Per granularity, how far windows are published final (see
    /// `Aggregator::final_through`).
    fn final_through(&self) -> Vec<(Granularity, i64)>;
    /// An earlier run published these windows final (see `Aggregator::resume_after`).
    fn resume_after(&mut self, final_through: &[(Granularity, i64)]);
}

/// What a source does besides feeding frames: publish results, commit progress,
/// checkpoint. Called on the aggregating thread.
pub trait Hooks {
    /// Windows just emitted (already written to stdout).
    fn results(
        &mut self,
        _windows: &[WindowResult],
        _calendar: &Calendar,
    ) -> Result<(), PipelineError> {
        Ok(())
    }
    /// After every queue item.
    fn progress(
        &mut self,
        _state: &mut dyn StateView,
        _now_ms: Option<u64>,
    ) -> Result<(), PipelineError> {
        Ok(())
    }
    /// The lanes (partitions) ours now, before any of their frames.
    fn assigned(
        &mut self,
        _state: &mut dyn StateView,
        _lanes: &[u32],
    ) -> Result<(), PipelineError> {
        Ok(())
    }
    /// These lanes were read to their end (a backfill); what they held is counted.
    fn lanes_done(&mut self, _lanes: &[u32]) {}
    /// These lanes were taken away by a rebalance; all that was read of them is
    /// counted (or held) now.
    fn revoked(&mut self, _state: &mut dyn StateView, _lanes: &[u32]) -> Result<(), PipelineError> {
        Ok(())
    }
    /// The feed ended. `complete`: the input is exhausted and every window was
    /// emitted as final; otherwise the run was stopped and open windows stay open.
    fn finished(
        &mut self,
        _state: &mut dyn StateView,
        _complete: bool,
    ) -> Result<(), PipelineError> {
        Ok(())
    }
    /// What checkpointing cost over the run, a line for its summary (empty if off).
    fn checkpoint_summary(&self) -> String {
        String::new()
    }
}

/// No hooks: files and stdin.
pub struct NoHooks;
impl Hooks for NoHooks {}

/// Counts the inputs, in order, as one stream.
pub fn count(
    config: &CountConfig,
    inputs: Vec<OpenInput>,
    sinks: &mut Sinks,
) -> Result<CountReport, PipelineError> {
    count_from(config, inputs, sinks, &mut NoHooks, None, None)
}

/// Where to resume files: input index, byte offset in it, line number there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileResume {
    pub input: usize,
    pub offset: u64,
    pub next_line: u64,
}

/// What a run goes on from: a checkpoint's state, and the job's counters then.
pub struct Restored {
    pub state: Snapshot<HeldFrame>,
    /// `None` from a checkpoint that did not keep them (format 4 or older).
    pub totals: Option<Totals>,
}

/// Counts files with hooks (checkpoints), optionally resuming from a restored state.
/// A `shutdown` request stops between chunks, without emitting open windows.
pub fn count_from(
    config: &CountConfig,
    inputs: Vec<OpenInput>,
    sinks: &mut Sinks,
    hooks: &mut dyn Hooks,
    restore: Option<(Restored, FileResume)>,
    shutdown: Option<Arc<AtomicBool>>,
) -> Result<CountReport, PipelineError> {
    let chunk_bytes = config.chunk_bytes;
    let max_frame = config.max_frame_bytes;
    let (snapshot, resume) = match restore {
        Some((s, r)) => (Some(s), Some(r)),
        None => (None, None),
    };
    run_at(config, sinks, hooks, snapshot, resume, move |feed| {
        for (index, input) in inputs.into_iter().enumerate() {
            if resume.is_some_and(|r| index < r.input) {
                continue;
            }
            let stopping = || shutdown.as_ref().is_some_and(|s| s.load(Ordering::Relaxed));
            let resume_here = resume.filter(|r| r.input == index);
            let mut chunker =
                Chunker::with_pool(input.reader, &input.name, chunk_bytes, feed.pool().clone())
                    .input(index)
                    .max_frame(max_frame);
            if let Some(r) = resume_here
                && let Err(e) = chunker.skip_to(r.offset, r.next_line)
            {
                feed.fail(e.into());
                return;
            }
            for chunk in chunker {
                if stopping() {
                    feed.end(false);
                    return;
                }
                match chunk {
                    Ok(chunk) => {
                        if !feed.chunk(chunk) {
                            return;
                        }
                    }
                    Err(e) => {
                        feed.fail(e.into());
                        return;
                    }
                }
            }
        }
        feed.end(true);
    })
}

/// Runs the pipeline with `feeder` on its own thread, from a restored state if given.
pub fn run<F>(
    config: &CountConfig,
    sinks: &mut Sinks,
    hooks: &mut dyn Hooks,
    restore: Option<Restored>,
    feeder: F,
) -> Result<CountReport, PipelineError>
where
    F: FnOnce(Feed) + Send,
{
    run_at(config, sinks, hooks, restore, None, feeder)
}

/// [`run`] from a restored state taken at `at` in the files: until the first chunk
/// is counted, that is where a checkpoint puts the run (a run resumed at the end
/// of its input counts no chunk, and must still record that it finished).
fn run_at<F>(
    config: &CountConfig,
    sinks: &mut Sinks,
    hooks: &mut dyn Hooks,
    restore: Option<Restored>,
    at: Option<FileResume>,
    feeder: F,
) -> Result<CountReport, PipelineError>
where
    F: FnOnce(Feed) + Send,
{
    match config.counter {
        CounterKind::Exact => run_with::<Exact, F>(config, (), sinks, hooks, restore, at, feeder),
        CounterKind::Hll(h) => run_with::<Hll, F>(config, h, sinks, hooks, restore, at, feeder),
    }
}

fn run_with<C: Counter, F>(
    config: &CountConfig,
    counter_config: C::Config,
    sinks: &mut Sinks,
    hooks: &mut dyn Hooks,
    restore: Option<Restored>,
    at: Option<FileResume>,
    feeder: F,
) -> Result<CountReport, PipelineError>
where
    F: FnOnce(Feed) + Send,
{
    let threads = config.threads.max(1);
    let (restore, totals) = match restore {
        Some(r) => (Some(r.state), r.totals),
        None => (None, None),
    };
    let agg = match restore {
        None => Aggregator::new(
            config.calendar.clone(),
            config.settings.clone(),
            counter_config,
        ),
        // A held frame keeps its ts in the snapshot; its uid is found again the way
        // it was found the first time: in the record's key, or in the value.
        Some(snapshot) => Aggregator::restore(
            config.calendar.clone(),
            config.settings.clone(),
            counter_config,
            snapshot,
            |held: HeldFrame| {
                let key = match config.frames.uid_from() {
                    UidFrom::Key => C::key(record::uid_from_key(held.key.as_deref()).ok()?),
                    UidFrom::Json => C::key(
                        &parser::parse_frame_with(&held.raw, &config.frames)
                            .ok()?
                            .uid,
                    ),
                };
                Some((key, held))
            },
        )
        .map_err(|e| PipelineError::Live(format!("cannot restore the checkpoint: {e}")))?,
    };
    std::thread::scope(|scope| {
        let in_flight = chunks_in_flight(threads, config.chunk_bytes, config.max_frame_bytes);
        let (job_tx, job_rx) = mpsc::sync_channel::<Job<C::Key>>(in_flight / 2);
        let (order_tx, order_rx) = mpsc::sync_channel::<Item<C::Key>>(in_flight);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let pool = BufferPool::keeping(in_flight);
        let paused = PausedLanes::default();
        let failed = order_tx.clone();
        let feed = Feed::new(Channels { order_tx, job_tx }, pool.clone(), paused.clone());
        scope.spawn(move || {
            // A panic in the reader (a bug) ends the run with an error that says
            // so, after everything it queued, instead of taking the process down.
            if let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(|| feeder(feed))) {
                let why = parse::panic_message(&*panic);
                let _ = failed.send(Item::Signal(Signal::Failed(PipelineError::Live(format!(
                    "the input reader failed: {why} (a bug: please report it)"
                )))));
            }
        });
        for _ in 0..threads {
            let job_rx = job_rx.clone();
            let spec = &config.frames;
            let max_frame = config.max_frame_bytes;
            scope.spawn(move || {
                parse::parse_jobs(&job_rx, |chunk| parse_chunk::<C>(chunk, spec, max_frame))
            });
        }

        let mut stage = Aggregate::<C>::new(config, agg, sinks, hooks, pool, paused);
        if let Some(t) = &totals {
            stage.telemetry = Telemetry::resumed(t);
        }
        if let Some(at) = at {
            stage.resumed_at(at);
        }
        let output_closed = match stage.consume(order_rx) {
            Ok(()) => false,
            Err(PipelineError::Sink(SinkError::Closed)) => true,
            Err(e) => return Err(e),
        };
        Ok(CountReport {
            telemetry: stage.telemetry,
            output_closed,
            checkpoint_summary: hooks.checkpoint_summary(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Chunker;

    fn config() -> CountConfig {
        CountConfig {
            calendar: Calendar::utc(),
            settings: Settings::default(),
            counter: CounterKind::Exact,
            threads: 2,
            chunk_bytes: 1 << 10,
            max_frame_bytes: 1 << 20,
            metrics: None,
            frames: FrameSpec::default(),
        }
    }

    /// Issue 18: a thread that panicked outside `catch_unwind` took the run down
    /// through an `expect`; it must be the run's error, and the process go on.
    #[test]
    fn a_reader_that_panics_is_an_error_not_a_crash() {
        let mut sinks = Sinks::lines(Box::new(std::io::sink()), Format::Json);
        let got = run(&config(), &mut sinks, &mut NoHooks, None, |feed| {
            let data = b"{\"uid\":\"a\",\"ts\":1}\n".repeat(10);
            for chunk in Chunker::new(&data[..], "t", 64) {
                feed.chunk(chunk.unwrap());
            }
            panic!("boom in the reader");
        });
        match got {
            Err(PipelineError::Live(why)) => assert!(
                why.contains("the input reader failed: boom in the reader"),
                "{why}"
            ),
            other => panic!("not the reader's error: {:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn a_parser_thread_that_panics_answers_with_an_error_naming_the_chunk() {
        let (job_tx, job_rx) = mpsc::sync_channel::<Job<u64>>(4);
        let jobs = Mutex::new(job_rx);
        let mut replies = vec![];
        for offset in [0, 4096] {
            let mut chunk = Chunker::new(&b"{}\n"[..], "in.json", 64)
                .next()
                .unwrap()
                .unwrap();
            chunk.offset = offset;
            let (reply_tx, reply_rx) = mpsc::sync_channel(1);
            job_tx.send((chunk, reply_tx)).unwrap();
            replies.push(reply_rx);
        }
        drop(job_tx);
        parse::parse_jobs(&jobs, |chunk| {
            assert!(chunk.offset == 0, "boom at {}", chunk.offset);
            parse::ParsedChunk {
                chunk,
                entries: vec![],
            }
        });
        assert!(replies[0].recv().unwrap().is_ok(), "the first chunk parses");
        match replies[1].recv().unwrap() {
            Err(PipelineError::Live(why)) => assert!(
                why.contains("in.json at byte 4096") && why.contains("boom at 4096"),
                "{why}"
            ),
            other => panic!("not an error: {}", other.is_ok()),
        }
    }
}
