//! The `count` pipeline: sources → parser → aggregator → emitter → sinks.
//!
//! Parsing is the expensive stage, so it runs on a pool of worker threads, one
//! chunk at a time. Aggregation must see frames in arrival order (the watermark
//! depends on it), so each chunk's parse result comes back through its own
//! one-shot channel, queued in read order: the aggregator waits on them in turn.
//! Channels are bounded, so a slow sink slows the reader instead of filling memory.

use std::io::Read;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use thiserror::Error;

use crate::aggregator::{Aggregator, Output, Settings, Verdict};
use crate::counter::{Counter, Exact, Hll, HllConfig};
use crate::emitter::{self, Format};
use crate::parser::{self, ParseError};
use crate::sink::{RejectSink, ResultSink, SinkError};
use crate::source::{BufferPool, Chunk, Chunker, SourceError};
use crate::telemetry::Telemetry;
use crate::window::Calendar;

/// Which distinct counter to use, `--counter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterKind {
    Exact,
    Hll(HllConfig),
}

/// Everything `count` needs besides its inputs and sinks.
#[derive(Debug, Clone)]
pub struct CountConfig {
    pub calendar: Calendar,
    pub settings: Settings,
    pub counter: CounterKind,
    pub format: Format,
    /// Parser threads.
    pub threads: usize,
    pub chunk_bytes: usize,
}

/// An opened input: its name for messages, and its bytes.
pub struct OpenInput {
    pub name: String,
    pub reader: Box<dyn Read + Send>,
}

pub struct Sinks {
    pub results: ResultSink,
    pub rejects: Option<RejectSink>,
}

#[derive(Debug, Error)]
pub enum PipelineError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Sink(#[from] SinkError),
}

/// How the run ended, with its counters.
#[derive(Debug)]
pub struct CountReport {
    pub telemetry: Telemetry,
    /// The reader of the results went away before the end (`| head`).
    pub output_closed: bool,
}

/// Counts the inputs, in order, as one stream.
pub fn count(
    config: &CountConfig,
    inputs: Vec<OpenInput>,
    sinks: &mut Sinks,
) -> Result<CountReport, PipelineError> {
    match config.counter {
        CounterKind::Exact => run::<Exact>(config, (), inputs, sinks),
        CounterKind::Hll(h) => run::<Hll>(config, h, inputs, sinks),
    }
}

/// One line of a parsed chunk.
struct Entry<K> {
    start: u32,
    end: u32,
    parsed: Result<(i64, K), ParseError>,
}

struct ParsedChunk<K> {
    chunk: Chunk,
    entries: Vec<Entry<K>>,
}

/// A frame held by the outlier guard, kept so it can be written out if rejected.
struct HeldFrame {
    source: Arc<str>,
    line: u64,
    raw: Box<[u8]>,
}

fn parse_chunk<C: Counter>(chunk: Chunk) -> ParsedChunk<C::Key> {
    let mut entries = Vec::with_capacity(chunk.data().len() / 1024 + 1);
    let base = chunk.data().as_ptr() as usize;
    for line in chunk.lines() {
        let start = (line.as_ptr() as usize - base) as u32;
        let parsed = parser::parse_frame(line).map(|f| (f.ts, C::key(&f.uid)));
        entries.push(Entry {
            start,
            end: start + line.len() as u32,
            parsed,
        });
    }
    ParsedChunk { chunk, entries }
}

type Job<K> = (Chunk, SyncSender<ParsedChunk<K>>);
type Ordered<K> = Result<Receiver<ParsedChunk<K>>, SourceError>;

fn run<C: Counter>(
    config: &CountConfig,
    counter_config: C::Config,
    inputs: Vec<OpenInput>,
    sinks: &mut Sinks,
) -> Result<CountReport, PipelineError> {
    let threads = config.threads.max(1);
    let chunk_bytes = config.chunk_bytes;
    std::thread::scope(|scope| {
        let (job_tx, job_rx) = mpsc::sync_channel::<Job<C::Key>>(threads * 2);
        let (order_tx, order_rx) = mpsc::sync_channel::<Ordered<C::Key>>(threads * 4);
        let job_rx = Arc::new(Mutex::new(job_rx));

        let pool = BufferPool::default();
        let reader_pool = pool.clone();
        scope.spawn(move || read_inputs::<C>(inputs, chunk_bytes, reader_pool, job_tx, order_tx));
        for _ in 0..threads {
            let job_rx = job_rx.clone();
            scope.spawn(move || {
                loop {
                    let job = job_rx.lock().expect("no worker panics holding it").recv();
                    let Ok((chunk, reply)) = job else { break };
                    if reply.send(parse_chunk::<C>(chunk)).is_err() {
                        break;
                    }
                }
            });
        }

        let mut stage = Aggregate::<C> {
            agg: Aggregator::new(
                config.calendar.clone(),
                config.settings.clone(),
                counter_config,
            ),
            out: Output::default(),
            rendered: String::new(),
            format: config.format,
            telemetry: Telemetry::default(),
            sinks,
            pool,
        };
        let result = stage.consume(order_rx);
        match result {
            Ok(()) => Ok(CountReport {
                telemetry: stage.telemetry,
                output_closed: false,
            }),
            Err(PipelineError::Sink(SinkError::Closed)) => Ok(CountReport {
                telemetry: stage.telemetry,
                output_closed: true,
            }),
            Err(e) => Err(e),
        }
    })
}

/// The reader thread: chunks every input in order and hands them out for parsing.
fn read_inputs<C: Counter>(
    inputs: Vec<OpenInput>,
    chunk_bytes: usize,
    pool: BufferPool,
    job_tx: SyncSender<Job<C::Key>>,
    order_tx: SyncSender<Ordered<C::Key>>,
) {
    for input in inputs {
        for chunk in Chunker::with_pool(input.reader, &input.name, chunk_bytes, pool.clone()) {
            match chunk {
                Ok(chunk) => {
                    let (reply_tx, reply_rx) = mpsc::sync_channel(1);
                    // Either send failing means the aggregator stopped: stop reading.
                    if order_tx.send(Ok(reply_rx)).is_err()
                        || job_tx.send((chunk, reply_tx)).is_err()
                    {
                        return;
                    }
                }
                Err(e) => {
                    let _ = order_tx.send(Err(e));
                    return;
                }
            }
        }
    }
}

/// The aggregating end of the pipeline, on the calling thread.
struct Aggregate<'s, C: Counter> {
    agg: Aggregator<C, HeldFrame>,
    out: Output<HeldFrame>,
    rendered: String,
    format: Format,
    telemetry: Telemetry,
    sinks: &'s mut Sinks,
    pool: BufferPool,
}

impl<C: Counter> Aggregate<'_, C> {
    fn consume(&mut self, order_rx: Receiver<Ordered<C::Key>>) -> Result<(), PipelineError> {
        for next in order_rx {
            let parsed = next?
                .recv()
                .expect("workers reply to every chunk they take");
            self.chunk(&parsed)?;
            parsed.chunk.recycle(&self.pool);
        }
        self.agg.flush(&mut self.out);
        self.drain_output()?;
        self.write_results()?;
        if let Some(r) = self.sinks.rejects.as_mut() {
            r.flush()?;
        }
        Ok(())
    }

    fn chunk(&mut self, parsed: &ParsedChunk<C::Key>) -> Result<(), PipelineError> {
        let chunk = &parsed.chunk;
        self.telemetry.bytes_received(chunk.data().len());
        for (i, e) in parsed.entries.iter().enumerate() {
            self.telemetry.frame_received();
            let line_no = chunk.first_line + i as u64;
            let raw = || &chunk.data()[e.start as usize..e.end as usize];
            match e.parsed {
                Ok((ts, key)) => {
                    let verdict = self.agg.ingest(
                        0,
                        line_no,
                        ts,
                        key,
                        || HeldFrame {
                            source: chunk.source.clone(),
                            line: line_no,
                            raw: raw().into(),
                        },
                        &mut self.out,
                    );
                    match verdict {
                        Verdict::Counted => self.telemetry.frame_counted(),
                        Verdict::Held => {}
                        late => self.late(late, &chunk.source, line_no, raw())?,
                    }
                    if !self.out.is_empty() {
                        self.drain_output()?;
                    }
                }
                Err(err) => {
                    self.telemetry
                        .frame_rejected(err.reason(), &chunk.source, line_no);
                    if let Some(r) = self.sinks.rejects.as_mut() {
                        r.write(err.reason(), err.to_string(), &chunk.source, line_no, raw())?;
                    }
                }
            }
        }
        Ok(self.write_results()?)
    }

    fn late(
        &mut self,
        verdict: Verdict,
        source: &str,
        line: u64,
        raw: &[u8],
    ) -> Result<(), SinkError> {
        let Verdict::Late { missed, counted } = verdict else {
            return Ok(());
        };
        self.telemetry.frame_late(missed, counted, source, line);
        if let Some(r) = self.sinks.rejects.as_mut() {
            let names: Vec<&str> = missed.iter().map(|g| g.name()).collect();
            let detail = format!("window already final: {}", names.join(","));
            r.write("late", detail, source, line, raw)?;
        }
        Ok(())
    }

    fn drain_output(&mut self) -> Result<(), SinkError> {
        for w in self.out.windows.drain(..) {
            self.telemetry.window_emitted(&w);
            emitter::render(self.format, &w, self.agg.calendar(), &mut self.rendered);
        }
        for _ in 0..self.out.released_counted {
            self.telemetry.frame_counted();
        }
        let late = std::mem::take(&mut self.out.late);
        for (held, verdict) in late {
            self.late(verdict, &held.source, held.line, &held.raw)?;
        }
        for held in std::mem::take(&mut self.out.outliers) {
            self.telemetry.frame_outlier(&held.source, held.line);
            if let Some(r) = self.sinks.rejects.as_mut() {
                let detail = format!(
                    "ts far ahead of the stream (trusted max {:?}) and never confirmed by other frames",
                    self.agg.max_trusted()
                );
                r.write("outlier", detail, &held.source, held.line, &held.raw)?;
            }
        }
        self.out.clear();
        Ok(())
    }

    fn write_results(&mut self) -> Result<(), SinkError> {
        if !self.rendered.is_empty() {
            self.sinks.results.write(&self.rendered)?;
            self.rendered.clear();
        }
        Ok(())
    }
}
