//! Checkpoints: the aggregator's state and the input positions it reflects, written
//! atomically to `--state-dir` so that a crash loses nothing and replays little.
//!
//! A checkpoint is a chain: a whole state in `DIR/checkpoint`, then change sets in
//! `DIR/checkpoint.G.1`, `.2`, … (G: the whole state's generation), each holding the
//! lanes, the positions and every open window's figures, but of each counter only
//! what was added since the previous link. So what a checkpoint writes grows with
//! what changed, not with the state. A whole state is written again once the change
//! sets add up to its size (restoring reads at most about twice the state), and the
//! older generation's files are deleted after it.
//!
//! File format (each file): the 8-byte magic `CARDCKPT`, a little-endian u32 format
//! version, a u64 payload length, the payload's xxh3-64 checksum, then the payload
//! (postcard). A write goes to a temporary file that is fsynced, renamed into place,
//! and the directory fsynced: a reader sees a link whole or not at all. A checkpoint
//! written for other inputs or other counting options is refused, as is a corrupt
//! link: Cardinal never silently starts from zero.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::aggregator::Snapshot;
use crate::frame::{HeldFrame, Position};
use crate::telemetry::Totals;

mod dir;
#[cfg(test)]
mod tests;

pub use dir::StateDir;

/// How a checkpoint stores a [`HeldFrame`]: the layout of checkpoint format 3,
/// kept apart from the type so that the type can change without the format.
/// (`HeldRef` writes it, this reads it; `Vec<u8>` and `&[u8]` encode alike.)
#[derive(Serialize, Deserialize)]
struct HeldRaw {
    source: String,
    /// Line number (files) or offset (Kafka).
    pos: u64,
    /// Kafka partition, if the frame came from Kafka.
    partition: Option<u32>,
    key: Option<Vec<u8>>,
    raw: Vec<u8>,
}

/// The same layout, borrowed, to write a frame without copying it.
#[derive(Serialize)]
struct HeldRef<'a> {
    source: &'a str,
    pos: u64,
    partition: Option<u32>,
    key: Option<&'a [u8]>,
    raw: &'a [u8],
}

impl Serialize for HeldFrame {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let (source, pos, partition) = match &self.position {
            Position::Line { source, line } => (source, *line, None),
            Position::Offset {
                topic,
                partition,
                offset,
            } => (topic, *offset, Some(*partition)),
        };
        HeldRef {
            source,
            pos,
            partition,
            key: self.key.as_deref(),
            raw: &self.raw,
        }
        .serialize(ser)
    }
}

impl<'de> Deserialize<'de> for HeldFrame {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<HeldFrame, D::Error> {
        HeldRaw::deserialize(de).map(HeldFrame::from)
    }
}

impl From<HeldRaw> for HeldFrame {
    fn from(h: HeldRaw) -> HeldFrame {
        let source: Arc<str> = h.source.into();
        let position = match h.partition {
            Some(partition) => Position::Offset {
                topic: source,
                partition,
                offset: h.pos,
            },
            None => Position::Line {
                source,
                line: h.pos,
            },
        };
        HeldFrame {
            position,
            key: h.key.map(Into::into),
            raw: h.raw.into(),
        }
    }
}

/// Where the inputs stood when the state was taken.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum InputPosition {
    /// Next offset to read, per partition.
    Kafka { offsets: Vec<(i32, i64)> },
    /// Files are read in order: everything before `offset` bytes (decompressed) of
    /// input number `input` has been counted; `next_line` is the line there.
    Files {
        input: usize,
        offset: u64,
        next_line: u64,
        /// Every input was read to its end and every window emitted.
        complete: bool,
    },
}

/// One checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// What the state depends on: inputs and counting options.
    pub identity: String,
    pub written_unix_ms: u64,
    pub input: InputPosition,
    pub state: Snapshot<HeldFrame>,
    /// How long the `--rejects` file was when this checkpoint was taken (flushed
    /// first): a resumed run cuts it back to this and appends, so the rejects of
    /// frames before the checkpoint stay and those after it are written once more.
    pub rejects_bytes: Option<u64>,
    /// The job's counters when this checkpoint was taken, for a resumed run's
    /// summary (`None` from a checkpoint before format 5).
    pub totals: Option<Totals>,
}

#[derive(Debug, Error)]
pub enum CheckpointError {
    #[error(
        "state directory {} is in use by another Cardinal (pid {holder}); two processes must not share a --state-dir",
        path.display()
    )]
    Locked { path: PathBuf, holder: String },
    /// The run stops (exit 1) rather than go on unprotected: a supervisor's restart
    /// resumes from the last good checkpoint, as Flink restarts a job whose
    /// checkpoints fail.
    #[error(
        "cannot write checkpoint {}: {source}. The previous checkpoint is intact and no offset \
         past it was committed; free the disk or fix the directory, then start again to resume from it",
        path.display()
    )]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot use state directory {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "checkpoint {} is corrupt ({why}); refusing to start from zero. Move it away, or pass --reset-state to discard it",
        path.display()
    )]
    Corrupt { path: PathBuf, why: String },
    #[error(
        "checkpoint {} was written for another job:\n  it has:    {found}\n  this run: {expected}\nUse another --state-dir, or pass --reset-state to discard it",
        path.display()
    )]
    Foreign {
        path: PathBuf,
        found: String,
        expected: String,
    },
}

/// What a save cost, for telemetry and the benchmark.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SaveStats {
    pub bytes: u64,
    pub millis: f64,
    /// A whole state, not a change set.
    pub whole: bool,
}

/// Checkpointing in progress, with what it has cost so far.
pub struct Checkpointing {
    pub dir: StateDir,
    pub identity: String,
    pub saves: u64,
    /// Saves that wrote a whole state (the others wrote change sets).
    pub whole_saves: u64,
    pub largest_bytes: u64,
    pub slowest_millis: f64,
    pub total_millis: f64,
    /// `--http`: checkpoint duration and size.
    pub metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
}

impl Checkpointing {
    pub fn with_metrics(self, metrics: Option<std::sync::Arc<crate::metrics::Metrics>>) -> Self {
        Checkpointing { metrics, ..self }
    }

    pub fn new(dir: StateDir, identity: String) -> Checkpointing {
        Checkpointing {
            dir,
            identity,
            saves: 0,
            whole_saves: 0,
            largest_bytes: 0,
            slowest_millis: 0.0,
            total_millis: 0.0,
            metrics: None,
        }
    }

    /// Writes a checkpoint of `input` and the state that reflects it: `state(changes)`
    /// gives the whole state, or with `changes` what changed since the last one, as
    /// the directory wants. The one writer for files and Kafka alike.
    pub fn save(
        &mut self,
        input: InputPosition,
        rejects_bytes: Option<u64>,
        totals: Totals,
        state: impl FnOnce(bool) -> Snapshot<HeldFrame>,
    ) -> Result<(), CheckpointError> {
        let checkpoint = Checkpoint {
            identity: self.identity.clone(),
            written_unix_ms: unix_ms(),
            input,
            state: state(!self.dir.wants_whole()),
            rejects_bytes,
            totals: Some(totals),
        };
        let stats = self.dir.save(&checkpoint)?;
        self.saved(stats);
        Ok(())
    }

    fn saved(&mut self, stats: SaveStats) {
        self.saves += 1;
        self.whole_saves += stats.whole as u64;
        self.total_millis += stats.millis;
        self.largest_bytes = self.largest_bytes.max(stats.bytes);
        self.slowest_millis = self.slowest_millis.max(stats.millis);
        if let Some(m) = &self.metrics {
            m.checkpoint_written(
                std::time::Duration::from_secs_f64(stats.millis / 1000.0),
                stats.bytes,
            );
        }
        tracing::debug!(
            event = "checkpoint_saved",
            bytes = stats.bytes,
            millis = stats.millis,
            whole = stats.whole
        );
    }

    pub fn summary(&self) -> String {
        if self.saves == 0 {
            return String::new();
        }
        format!(
            "  checkpoints: {} written to {} ({} whole, {} change sets), {:.1} ms on average, slowest {:.1} ms, largest {:.1} KB\n",
            self.saves,
            self.dir.path().display(),
            self.whole_saves,
            self.saves - self.whole_saves,
            self.total_millis / self.saves as f64,
            self.slowest_millis,
            self.largest_bytes as f64 / 1e3
        )
    }
}

pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
