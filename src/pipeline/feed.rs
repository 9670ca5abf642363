//! The feeder's handle on the pipeline: chunks go to the parser threads, and
//! every chunk's receipt, with ticks, assignments and the end, goes to the
//! aggregating stage in the order they were fed.

use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, SyncSender};

use parking_lot::Mutex;

use super::PipelineError;
use super::parse::ParsedChunk;
use crate::source::{BufferPool, Chunk};
use crate::watermark::WallClock;

/// A parser thread's answer for one chunk: its frames, or why it failed on it.
pub(super) type Parsed<K> = Result<ParsedChunk<K>, PipelineError>;

/// What the feeder queues for the aggregating stage, in order.
pub(super) enum Item<K> {
    /// A chunk being parsed: its result arrives on this one-shot channel.
    Chunk(Receiver<Parsed<K>>),
    Signal(Signal),
}

/// Everything but chunks: the same for every counter.
pub(super) enum Signal {
    Tick(u64, Option<WallClock>),
    Assigned(Vec<u32>),
    LanesDone(Vec<u32>),
    /// Taken from us by a rebalance: everything read of them was fed before this.
    Revoked(Vec<u32>),
    End {
        complete: bool,
    },
    Failed(PipelineError),
}

/// A chunk for a parser thread, and where to send its result.
pub(super) type Job<K> = (Chunk, SyncSender<Parsed<K>>);

/// The stage's two channels, typed by the counter's key.
pub(super) struct Channels<K> {
    pub order_tx: SyncSender<Item<K>>,
    pub job_tx: SyncSender<Job<K>>,
}

/// What a [`Feed`] needs of [`Channels`]. A feeder is written once for every
/// counter, whose keys differ in type, so it sees the channels through this.
trait Queue: Send {
    fn chunk(&self, chunk: Chunk) -> bool;
    fn signal(&self, signal: Signal) -> bool;
}

impl<K: Send + 'static> Queue for Channels<K> {
    fn chunk(&self, chunk: Chunk) -> bool {
        let (reply_tx, reply_rx) = mpsc::sync_channel(1);
        self.order_tx.send(Item::Chunk(reply_rx)).is_ok()
            && self.job_tx.send((chunk, reply_tx)).is_ok()
    }

    fn signal(&self, signal: Signal) -> bool {
        self.order_tx.send(Item::Signal(signal)).is_ok()
    }
}

/// The lanes the aggregating stage wants the source to stop reading for now
/// (watermark alignment), with a version so the feeder sees changes cheaply.
#[derive(Debug, Clone, Default)]
pub struct PausedLanes(Arc<Mutex<(u64, Vec<u32>)>>);

impl PausedLanes {
    pub(super) fn set(&self, lanes: Vec<u32>) {
        let mut g = self.0.lock();
        if g.1 != lanes {
            g.0 += 1;
            g.1 = lanes;
        }
    }

    /// The lanes to pause, if they changed since `version` (start from 0).
    pub fn changed_since(&self, version: u64) -> Option<(u64, Vec<u32>)> {
        let g = self.0.lock();
        (g.0 != version).then(|| (g.0, g.1.clone()))
    }
}

/// The feeder's handle: every method returns `false` once the pipeline has stopped.
pub struct Feed {
    queue: Box<dyn Queue>,
    pool: BufferPool,
    paused: PausedLanes,
}

impl Feed {
    pub(super) fn new<K: Send + 'static>(
        channels: Channels<K>,
        pool: BufferPool,
        paused: PausedLanes,
    ) -> Feed {
        Feed {
            queue: Box::new(channels),
            pool,
            paused,
        }
    }

    /// Lanes to stop reading for now, as the aggregating stage decides.
    pub fn paused(&self) -> &PausedLanes {
        &self.paused
    }

    /// Chunk buffers to reuse.
    pub fn pool(&self) -> &BufferPool {
        &self.pool
    }

    pub fn chunk(&self, chunk: Chunk) -> bool {
        self.queue.chunk(chunk)
    }

    /// Wall-clock time: monotonic milliseconds, for idle lanes and quiet streams,
    /// and for live sources the clock that bounds event time.
    pub fn tick(&self, now_ms: u64, clock: Option<WallClock>) -> bool {
        self.queue.signal(Signal::Tick(now_ms, clock))
    }

    /// These lanes (partitions) are ours now: hold results back until they speak.
    pub fn assigned(&self, lanes: Vec<u32>) -> bool {
        self.queue.signal(Signal::Assigned(lanes))
    }

    /// These lanes have nothing more to say (a backfill read them to their end).
    pub fn lanes_done(&self, lanes: Vec<u32>) -> bool {
        self.queue.signal(Signal::LanesDone(lanes))
    }

    /// These lanes were taken away (a rebalance); all that was read of them has
    /// been fed before this.
    pub fn revoked(&self, lanes: Vec<u32>) -> bool {
        self.queue.signal(Signal::Revoked(lanes))
    }

    /// No more input. `complete`: flush every window as final.
    pub fn end(&self, complete: bool) {
        let _ = self.queue.signal(Signal::End { complete });
    }

    pub fn fail(&self, e: PipelineError) {
        let _ = self.queue.signal(Signal::Failed(e));
    }
}
