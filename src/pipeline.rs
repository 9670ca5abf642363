//! The pipeline: sources → parser → aggregator → emitter → sinks.
//!
//! A *feeder* thread (files, or a Kafka consumer) cuts its input into chunks and
//! hands them to a pool of parser threads. Aggregation must see frames in arrival
//! order (the watermark depends on it), so each chunk's parse result comes back
//! through its own one-shot channel, queued in feed order, and the aggregating
//! stage on the calling thread takes them in turn. Feeders can also queue wall-clock
//! ticks and lane revocations. All channels are bounded, so a slow sink slows the
//! feeder instead of filling memory.

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use thiserror::Error;

use crate::aggregator::{Aggregator, Output, Settings, Snapshot, Verdict, WindowResult};
use crate::checkpoint::HeldRaw;
use crate::counter::{Counter, Exact, Hll, HllConfig};
use crate::emitter::{self, Format};
use crate::metrics::{Metrics, StageView};
use crate::parser::{self, FrameSpec, ParseError, TsFrom, UidFrom};
use crate::record::{self, RecordError};
use crate::reject::Reason;
use crate::sink::{Position, Reject, Rejected, ResultSink, SinkError};
use crate::source::{BufferPool, Chunk, Chunker, SourceError};
use crate::telemetry::Telemetry;
use crate::watermark::WallClock;
use crate::window::Calendar;

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
    pub format: Format,
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

const METRICS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// An opened input: its name for messages, and its bytes.
pub struct OpenInput {
    pub name: String,
    pub reader: Box<dyn Read + Send>,
}

pub struct Sinks {
    pub results: ResultSink,
    /// Every sink a rejected frame goes to: none, the file, the topic, or both.
    pub rejects: Vec<Box<dyn Reject>>,
}

impl Sinks {
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
    /// What checkpointing cost, if it was on (a line for the summary).
    pub checkpoint_summary: String,
}

/// What the hooks may ask of the aggregating stage, between two queue items.
pub trait StateView {
    /// The first position on `lane` not yet covered by final results.
    fn safe_position(&self, lane: usize) -> Option<u64>;
    /// Each lane's next position: what the state reflects.
    fn next_positions(&self) -> Vec<(usize, u64)>;
    /// For files: (input index, byte offset, next line) after the last chunk counted.
    fn file_position(&self) -> Option<(usize, u64, u64)>;
    /// The aggregator's state for a checkpoint: whole, or with `changes` only what
    /// changed since the previous one (when the aggregator kept track since then).
    fn checkpoint(&mut self, changes: bool) -> Snapshot<HeldRaw>;
    /// How many windows are open (of every granularity).
    fn open_windows(&self) -> usize;
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
    /// The feed ended. `complete`: the input is exhausted and every window was
    /// emitted as final; otherwise the run was stopped and open windows stay open.
    fn finished(
        &mut self,
        _state: &mut dyn StateView,
        _complete: bool,
    ) -> Result<(), PipelineError> {
        Ok(())
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

/// Counts files with hooks (checkpoints), optionally resuming from a restored state.
/// A `shutdown` request stops between chunks, without emitting open windows.
pub fn count_from(
    config: &CountConfig,
    inputs: Vec<OpenInput>,
    sinks: &mut Sinks,
    hooks: &mut dyn Hooks,
    restore: Option<(Snapshot<HeldRaw>, FileResume)>,
    shutdown: Option<Arc<AtomicBool>>,
) -> Result<CountReport, PipelineError> {
    let chunk_bytes = config.chunk_bytes;
    let max_frame = config.max_frame_bytes;
    let (snapshot, resume) = match restore {
        Some((s, r)) => (Some(s), Some(r)),
        None => (None, None),
    };
    run(config, sinks, hooks, snapshot, move |feed| {
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
    restore: Option<Snapshot<HeldRaw>>,
    feeder: F,
) -> Result<CountReport, PipelineError>
where
    F: FnOnce(Feed) + Send,
{
    match config.counter {
        CounterKind::Exact => run_with::<Exact, F>(config, (), sinks, hooks, restore, feeder),
        CounterKind::Hll(h) => run_with::<Hll, F>(config, h, sinks, hooks, restore, feeder),
    }
}

/// Why a frame of a chunk could not be handed to the aggregator.
enum Unparsed {
    Parse(ParseError),
    /// The record's key or timestamp cannot stand for the uid or the ts.
    Record(RecordError),
    /// Over the frame limit: its real length (the chunk holds its head).
    TooLarge(u64),
    /// The parser failed on it (a bug): set aside so that the run goes on.
    Failed(String),
}

/// One parsed frame of a chunk.
struct Entry<K> {
    start: u32,
    end: u32,
    lane: u32,
    pos: u64,
    parsed: Result<(i64, K), Unparsed>,
}

struct ParsedChunk<K> {
    chunk: Chunk,
    entries: Vec<Entry<K>>,
}

/// A frame held by the outlier guard, kept so it can be written out if rejected.
struct HeldFrame {
    position: Position,
    /// The Kafka record's key, when kept: the uid (`--uid-from key`), and the
    /// dead-letter record's key.
    key: Option<Box<[u8]>>,
    raw: Box<[u8]>,
}

/// Parses a chunk. A panic in the parser is a bug, but it must not take the run
/// down (under `run` that would be a crash loop on the same offset): the chunk is
/// parsed again frame by frame, and the frame that fails is set aside.
fn parse_chunk<C: Counter>(chunk: Chunk, spec: &FrameSpec) -> ParsedChunk<C::Key> {
    let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        parse_frames::<C>(&chunk, |index, frame| {
            parse_one::<C>(&chunk, index, frame, spec)
        })
    }));
    let entries = match attempt {
        Ok(entries) => entries,
        Err(_) => parse_frames::<C>(&chunk, |index, frame| {
            std::panic::catch_unwind(|| parse_one::<C>(&chunk, index, frame, spec)).unwrap_or_else(
                |panic| {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".into());
                    Err(Unparsed::Failed(format!("the parser failed: {what}")))
                },
            )
        }),
    };
    ParsedChunk { chunk, entries }
}

/// The ts and counter key of frame `index` of `chunk`: from its JSON, or from its
/// Kafka record's key and timestamp where the spec says so. With both from the
/// record, the value is not parsed at all (it may be anything).
#[inline]
fn parse_one<C: Counter>(
    chunk: &Chunk,
    index: usize,
    frame: &[u8],
    spec: &FrameSpec,
) -> Result<(i64, C::Key), Unparsed> {
    match (spec.uid_from(), spec.ts_from()) {
        (UidFrom::Json, TsFrom::Json) => parser::parse_frame_with(frame, spec)
            .map(|f| (f.ts, C::key(&f.uid)))
            .map_err(Unparsed::Parse),
        (UidFrom::Key, TsFrom::RecordTimestamp) => {
            let uid = record::uid_from_key(chunk.key(index)).map_err(Unparsed::Record)?;
            let ts = record::ts_from_record(chunk.timestamp(index)).map_err(Unparsed::Record)?;
            Ok((ts, C::key(uid)))
        }
        (uid_from, ts_from) => {
            // One field from the record: the value is still a whole valid frame
            // for the other, checked first, as a frame of JSON alone would be.
            let f = parser::parse_frame_with(frame, spec).map_err(Unparsed::Parse)?;
            let uid = match uid_from {
                UidFrom::Key => record::uid_from_key(chunk.key(index)).map_err(Unparsed::Record)?,
                UidFrom::Json => &f.uid,
            };
            let ts = match ts_from {
                TsFrom::RecordTimestamp => {
                    record::ts_from_record(chunk.timestamp(index)).map_err(Unparsed::Record)?
                }
                TsFrom::Json => f.ts,
            };
            Ok((ts, C::key(uid)))
        }
    }
}

fn parse_frames<C: Counter>(
    chunk: &Chunk,
    parse: impl Fn(usize, &[u8]) -> Result<(i64, C::Key), Unparsed>,
) -> Vec<Entry<C::Key>> {
    let mut entries = Vec::with_capacity(chunk.data().len() / 1024 + 1);
    let base = chunk.data().as_ptr() as usize;
    for (index, (lane, pos, frame)) in chunk.frames().enumerate() {
        let start = (frame.as_ptr() as usize - base) as u32;
        let parsed = match chunk.oversized(index as u64) {
            Some(len) => Err(Unparsed::TooLarge(len)),
            None => parse(index, frame),
        };
        entries.push(Entry {
            start,
            end: start + frame.len() as u32,
            lane,
            pos,
            parsed,
        });
    }
    entries
}

/// What the feeder queues for the aggregating stage, in order.
enum Item {
    Chunk(Receiver<Box<dyn std::any::Any + Send>>),
    Tick(u64, Option<WallClock>),
    Assigned(Vec<u32>),
    LanesDone(Vec<u32>),
    End { complete: bool },
    Failed(PipelineError),
}

/// The lanes the aggregating stage wants the source to stop reading for now
/// (watermark alignment), with a version so the feeder sees changes cheaply.
#[derive(Debug, Clone, Default)]
pub struct PausedLanes(Arc<Mutex<(u64, Vec<u32>)>>);

impl PausedLanes {
    fn set(&self, lanes: Vec<u32>) {
        let mut g = self.0.lock().expect("paused lanes lock");
        if g.1 != lanes {
            g.0 += 1;
            g.1 = lanes;
        }
    }

    /// The lanes to pause, if they changed since `version` (start from 0).
    pub fn changed_since(&self, version: u64) -> Option<(u64, Vec<u32>)> {
        let g = self.0.lock().expect("paused lanes lock");
        (g.0 != version).then(|| (g.0, g.1.clone()))
    }
}

/// The feeder's handle: every method returns `false` once the pipeline has stopped.
pub struct Feed {
    order_tx: SyncSender<Item>,
    job_tx: SyncSender<(Chunk, SyncSender<Box<dyn std::any::Any + Send>>)>,
    pool: BufferPool,
    paused: PausedLanes,
}

impl Feed {
    /// Lanes to stop reading for now, as the aggregating stage decides.
    pub fn paused(&self) -> &PausedLanes {
        &self.paused
    }

    /// Chunk buffers to reuse.
    pub fn pool(&self) -> &BufferPool {
        &self.pool
    }

    pub fn chunk(&self, chunk: Chunk) -> bool {
        let (reply_tx, reply_rx) = mpsc::sync_channel(1);
        self.order_tx.send(Item::Chunk(reply_rx)).is_ok()
            && self.job_tx.send((chunk, reply_tx)).is_ok()
    }

    /// Wall-clock time: monotonic milliseconds, for idle lanes and quiet streams,
    /// and for live sources the clock that bounds event time.
    pub fn tick(&self, now_ms: u64, clock: Option<WallClock>) -> bool {
        self.order_tx.send(Item::Tick(now_ms, clock)).is_ok()
    }

    /// These lanes (partitions) are ours now: hold results back until they speak.
    pub fn assigned(&self, lanes: Vec<u32>) -> bool {
        self.order_tx.send(Item::Assigned(lanes)).is_ok()
    }

    /// These lanes have nothing more to say (a backfill read them to their end).
    pub fn lanes_done(&self, lanes: Vec<u32>) -> bool {
        self.order_tx.send(Item::LanesDone(lanes)).is_ok()
    }

    /// No more input. `complete`: flush every window as final.
    pub fn end(&self, complete: bool) {
        let _ = self.order_tx.send(Item::End { complete });
    }

    pub fn fail(&self, e: PipelineError) {
        let _ = self.order_tx.send(Item::Failed(e));
    }
}

fn run_with<C: Counter, F>(
    config: &CountConfig,
    counter_config: C::Config,
    sinks: &mut Sinks,
    hooks: &mut dyn Hooks,
    restore: Option<Snapshot<HeldRaw>>,
    feeder: F,
) -> Result<CountReport, PipelineError>
where
    F: FnOnce(Feed) + Send,
{
    let threads = config.threads.max(1);
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
            |held: HeldRaw| {
                let key = match config.frames.uid_from() {
                    UidFrom::Key => C::key(record::uid_from_key(held.key.as_deref()).ok()?),
                    UidFrom::Json => C::key(
                        &parser::parse_frame_with(&held.raw, &config.frames)
                            .ok()?
                            .uid,
                    ),
                };
                Some((
                    key,
                    HeldFrame {
                        position: held.position(),
                        key: held.key.map(Into::into),
                        raw: held.raw.into(),
                    },
                ))
            },
        )
        .map_err(|e| PipelineError::Live(format!("cannot restore the checkpoint: {e}")))?,
    };
    std::thread::scope(|scope| {
        let (job_tx, job_rx) =
            mpsc::sync_channel::<(Chunk, SyncSender<Box<dyn std::any::Any + Send>>)>(threads * 2);
        let (order_tx, order_rx) = mpsc::sync_channel::<Item>(threads * 4);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let pool = BufferPool::default();
        let paused = PausedLanes::default();
        let feed = Feed {
            order_tx,
            job_tx,
            pool: pool.clone(),
            paused: paused.clone(),
        };
        scope.spawn(move || feeder(feed));
        for _ in 0..threads {
            let job_rx = job_rx.clone();
            let spec = &config.frames;
            scope.spawn(move || {
                loop {
                    let job = job_rx.lock().expect("no worker panics holding it").recv();
                    let Ok((chunk, reply)) = job else { break };
                    if reply.send(Box::new(parse_chunk::<C>(chunk, spec))).is_err() {
                        break;
                    }
                }
            });
        }

        let mut stage = Aggregate::<C> {
            agg,
            file_position: None,
            next_line: 1,
            out: Output::default(),
            rendered: String::new(),
            emitted: Vec::new(),
            format: config.format,
            max_frame_bytes: config.max_frame_bytes,
            spec: &config.frames,
            windows_named: config
                .settings
                .granularities
                .iter()
                .map(|g| g.name())
                .collect::<Vec<_>>()
                .join(","),
            telemetry: Telemetry::default(),
            clock_now: None,
            metrics: config.metrics.clone(),
            metrics_shared: None,
            sinks,
            pool,
            paused,
            hooks,
        };
        let result = stage.consume(order_rx);
        match result {
            Ok(()) => Ok(CountReport {
                telemetry: stage.telemetry,
                output_closed: false,
                checkpoint_summary: String::new(),
            }),
            Err(PipelineError::Sink(SinkError::Closed)) => Ok(CountReport {
                telemetry: stage.telemetry,
                output_closed: true,
                checkpoint_summary: String::new(),
            }),
            Err(e) => Err(e),
        }
    })
}

/// The aggregating stage as the hooks see it.
struct View<'a, C: Counter> {
    agg: &'a mut Aggregator<C, HeldFrame>,
    file_position: Option<(usize, u64, u64)>,
}

impl<C: Counter> StateView for View<'_, C> {
    fn safe_position(&self, lane: usize) -> Option<u64> {
        self.agg.safe_position(lane)
    }
    fn next_positions(&self) -> Vec<(usize, u64)> {
        self.agg.next_positions()
    }
    fn file_position(&self) -> Option<(usize, u64, u64)> {
        self.file_position
    }
    fn checkpoint(&mut self, changes: bool) -> Snapshot<HeldRaw> {
        (self.agg).checkpoint(changes, |h| {
            HeldRaw::new(&h.position, h.key.as_deref(), &h.raw)
        })
    }
    fn open_windows(&self) -> usize {
        self.agg.open_windows()
    }
}

/// The aggregating end of the pipeline, on the calling thread.
struct Aggregate<'s, C: Counter> {
    agg: Aggregator<C, HeldFrame>,
    file_position: Option<(usize, u64, u64)>,
    /// Line number of the next line of the current input.
    next_line: u64,
    out: Output<HeldFrame>,
    rendered: String,
    emitted: Vec<WindowResult>,
    format: Format,
    /// The enabled windows, for messages.
    windows_named: String,
    max_frame_bytes: usize,
    /// The frames' field names and ts unit, for messages.
    spec: &'s FrameSpec,
    telemetry: Telemetry,
    /// The wall clock of a live run (unix seconds), for emission delays.
    clock_now: Option<i64>,
    metrics: Option<Arc<Metrics>>,
    metrics_shared: Option<std::time::Instant>,
    sinks: &'s mut Sinks,
    pool: BufferPool,
    paused: PausedLanes,
    hooks: &'s mut dyn Hooks,
}

impl<C: Counter> Aggregate<'_, C> {
    fn consume(&mut self, order_rx: Receiver<Item>) -> Result<(), PipelineError> {
        let mut now_ms = None;
        loop {
            let item = if self.metrics.is_some() {
                // A quiet input must not leave the metrics behind what was counted.
                match order_rx.recv_timeout(METRICS_EVERY) {
                    Ok(item) => item,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        self.share_metrics(false);
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match order_rx.recv() {
                    Ok(item) => item,
                    Err(_) => break,
                }
            };
            match item {
                Item::Chunk(rx) => {
                    let parsed = rx.recv().expect("workers reply to every chunk they take");
                    let parsed = parsed
                        .downcast::<ParsedChunk<C::Key>>()
                        .expect("parsed with this counter's key");
                    self.chunk(&parsed)?;
                    self.share_paused();
                    self.telemetry.open_windows(self.agg.open_windows());
                    let c = &parsed.chunk;
                    if c.record_count() == 0 {
                        self.next_line += parsed.entries.len() as u64;
                        self.file_position =
                            Some((c.input, c.offset + c.input_bytes(), self.next_line));
                    }
                    parsed.chunk.recycle(&self.pool);
                }
                Item::Tick(now, clock) => {
                    now_ms = Some(now);
                    self.set_clock(clock);
                    self.agg.heartbeat(now, &mut self.out);
                    self.share_paused();
                    self.drain_output()?;
                }
                Item::Assigned(lanes) => {
                    for lane in lanes {
                        self.agg.add_lane(lane as usize);
                    }
                }
                Item::LanesDone(lanes) => {
                    for lane in lanes {
                        self.agg.remove_lane(lane as usize, &mut self.out);
                    }
                    self.drain_output()?;
                }
                Item::End { complete } => {
                    if complete {
                        self.agg.flush(&mut self.out);
                        self.drain_output()?;
                    }
                    self.publish()?;
                    for r in &mut self.sinks.rejects {
                        r.flush()?;
                    }
                    self.share_metrics(true);
                    let mut view = View {
                        agg: &mut self.agg,
                        file_position: self.file_position,
                    };
                    return self.hooks.finished(&mut view, complete);
                }
                Item::Failed(e) => return Err(e),
            }
            self.publish()?;
            self.share_metrics(false);
            let mut view = View {
                agg: &mut self.agg,
                file_position: self.file_position,
            };
            self.hooks.progress(&mut view, now_ms)?;
        }
        // The feeder went away without saying why: treat as stopped, not complete.
        Err(PipelineError::Live(
            "the input feeder stopped unexpectedly".into(),
        ))
    }

    /// Copies the counters and gauges for the metrics endpoint, about once a second.
    fn share_metrics(&mut self, now: bool) {
        let Some(m) = &self.metrics else {
            return;
        };
        if !now
            && self
                .metrics_shared
                .is_some_and(|t| t.elapsed() < METRICS_EVERY)
        {
            return;
        }
        self.metrics_shared = Some(std::time::Instant::now());
        m.publish_stage(StageView {
            telemetry: self.telemetry.clone(),
            watermark: self.agg.watermark(),
            lane_watermarks: self.agg.lane_watermarks(),
            open_windows: self.agg.open_windows(),
            open_users: self.agg.open_users(),
        });
    }

    fn set_clock(&mut self, clock: Option<WallClock>) {
        self.agg.set_clock(clock);
        self.clock_now = clock.filter(|c| c.trust_recent).map(|c| c.now);
    }

    /// Tells the feeder which lanes alignment wants paused: after every chunk, so a
    /// lane that ran ahead stops being read at once, not at the next tick.
    fn share_paused(&self) {
        if self.agg.alignment().is_some() {
            let lanes = self.agg.paused_lanes().into_iter().map(|l| l as u32);
            self.paused.set(lanes.collect());
        }
    }

    fn chunk(&mut self, parsed: &ParsedChunk<C::Key>) -> Result<(), PipelineError> {
        let chunk = &parsed.chunk;
        self.telemetry.bytes_received(chunk.input_bytes() as usize);
        self.set_clock(chunk.clock);
        let is_records = chunk.record_count() > 0;
        // Lines carry their index in the chunk; the line number is counted here.
        let line_base = match chunk.first_line {
            Some(first) if !is_records => {
                self.next_line = first;
                first
            }
            _ if is_records => 0,
            _ => self.next_line,
        };
        for (index, e) in parsed.entries.iter().enumerate() {
            self.telemetry.frame_received();
            if is_records {
                self.telemetry.frame_read_from(e.lane);
            }
            let pos = e.pos + line_base;
            let raw = || &chunk.data()[e.start as usize..e.end as usize];
            let record_key = || chunk.key(index);
            let position = || {
                if is_records {
                    Position::Offset {
                        topic: chunk.source.clone(),
                        partition: e.lane,
                        offset: pos,
                    }
                } else {
                    Position::Line {
                        source: chunk.source.clone(),
                        line: pos,
                    }
                }
            };
            match &e.parsed {
                &Ok((ts, key)) => {
                    let verdict = self.agg.ingest(
                        e.lane as usize,
                        pos,
                        ts,
                        key,
                        || HeldFrame {
                            position: position(),
                            key: record_key().map(Into::into),
                            raw: raw().into(),
                        },
                        &mut self.out,
                    );
                    match verdict {
                        Verdict::Counted => self.telemetry.frame_counted(),
                        Verdict::Held => {}
                        Verdict::OutOfRange => {
                            let (lo, hi) = self.agg.ts_range();
                            let unit = self.spec.unit();
                            let field = self.spec.ts_field();
                            let detail = if self.spec.ts_from() == TsFrom::RecordTimestamp {
                                format!(
                                    "the record's timestamp, {ts} s (floored from milliseconds, \
                                     --ts-from record-timestamp), is outside {lo}..={hi} s, the range \
                                     whose windows ({}) can be represented in {}",
                                    self.windows_named,
                                    self.agg.calendar().zone_name()
                                )
                            } else if unit == parser::TsUnit::Seconds {
                                format!(
                                    "{field} {ts} is outside {lo}..={hi}, the range whose windows \
                                     ({}) can be represented in {}",
                                    self.windows_named,
                                    self.agg.calendar().zone_name()
                                )
                            } else {
                                format!(
                                    "{field} {ts} s (read in {}, --ts-unit {}) is outside {lo}..={hi} s, \
                                     the range whose windows ({}) can be represented in {}",
                                    unit.words(),
                                    unit.name(),
                                    self.windows_named,
                                    self.agg.calendar().zone_name()
                                )
                            };
                            self.reject(Reason::BadTs, detail, &position(), record_key(), raw())?;
                        }
                        late => self.late(late, &position(), record_key(), raw())?,
                    }
                    if !self.out.is_empty() {
                        self.drain_output()?;
                    }
                }
                Err(Unparsed::Parse(err)) => self.reject(
                    err.into(),
                    err.describe(self.spec),
                    &position(),
                    record_key(),
                    raw(),
                )?,
                Err(Unparsed::Record(err)) => {
                    self.reject(err.into(), err.describe(), &position(), record_key(), raw())?
                }
                Err(Unparsed::TooLarge(len)) => {
                    let detail = format!(
                        "a frame of {len} bytes, over --max-frame-bytes ({}); its first {} bytes are kept",
                        self.max_frame_bytes,
                        raw().len()
                    );
                    self.reject(Reason::TooLarge, detail, &position(), record_key(), raw())?
                }
                Err(Unparsed::Failed(what)) => {
                    let position = position();
                    self.telemetry.frame_failed(what, &position);
                    self.sinks.reject(Rejected {
                        reason: Reason::InternalError.name(),
                        detail: what,
                        position: &position,
                        key: record_key(),
                        raw: raw(),
                    })?;
                }
            }
        }
        Ok(())
    }

    fn reject(
        &mut self,
        reason: Reason,
        detail: String,
        position: &Position,
        key: Option<&[u8]>,
        raw: &[u8],
    ) -> Result<(), SinkError> {
        self.telemetry.frame_rejected(reason, position);
        self.sinks.reject(Rejected {
            reason: reason.name(),
            detail: &detail,
            position,
            key,
            raw,
        })
    }

    fn late(
        &mut self,
        verdict: Verdict,
        position: &Position,
        key: Option<&[u8]>,
        raw: &[u8],
    ) -> Result<(), SinkError> {
        let Verdict::Late { missed, counted } = verdict else {
            return Ok(());
        };
        self.telemetry.frame_late(missed, counted, position);
        if !self.sinks.rejects.is_empty() {
            let names: Vec<&str> = missed.iter().map(|g| g.name()).collect();
            let detail = format!("window already final: {}", names.join(","));
            self.sinks.reject(Rejected {
                reason: Reason::Late.name(),
                detail: &detail,
                position,
                key,
                raw,
            })?;
        }
        Ok(())
    }

    fn drain_output(&mut self) -> Result<(), SinkError> {
        for (lane, behind) in self.out.skewed.drain(..) {
            self.telemetry.lane_skewed(lane, behind);
        }
        self.telemetry.open_windows(self.agg.open_windows());
        for w in self.out.windows.drain(..) {
            self.telemetry.window_emitted(&w, self.clock_now);
            emitter::render(self.format, &w, self.agg.calendar(), &mut self.rendered);
            self.emitted.push(w);
        }
        for _ in 0..self.out.released_counted {
            self.telemetry.frame_counted();
        }
        let late = std::mem::take(&mut self.out.late);
        for (held, verdict) in late {
            self.late(verdict, &held.position, held.key.as_deref(), &held.raw)?;
        }
        for held in std::mem::take(&mut self.out.outliers) {
            self.telemetry.frame_outlier(&held.position);
            if !self.sinks.rejects.is_empty() {
                let detail = match self.agg.max_trusted() {
                    Some(max) => format!(
                        "ts far ahead of the stream, whose latest trusted ts was {max} ({}), \
                         and contradicted by the frames that followed",
                        self.agg.calendar().format(max)
                    ),
                    None => "ts far from every other frame of the stream".to_string(),
                };
                self.sinks.reject(Rejected {
                    reason: Reason::Outlier.name(),
                    detail: &detail,
                    position: &held.position,
                    key: held.key.as_deref(),
                    raw: &held.raw,
                })?;
            }
        }
        self.out.clear();
        Ok(())
    }

    /// Writes what was emitted since the last call to stdout and the hooks.
    fn publish(&mut self) -> Result<(), PipelineError> {
        if !self.rendered.is_empty() {
            self.sinks.results.write(&self.rendered)?;
            self.rendered.clear();
        }
        if !self.emitted.is_empty() {
            if let Some(m) = &self.metrics {
                let cal = self.agg.calendar();
                m.windows_emitted(self.emitted.iter().map(|w| emitter::Record::new(w, cal)));
            }
            self.hooks.results(&self.emitted, self.agg.calendar())?;
            self.emitted.clear();
        }
        Ok(())
    }
}
