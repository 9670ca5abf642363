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
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::aggregator::Snapshot;
use crate::frame::{HeldFrame, Position};

const MAGIC: &[u8; 8] = b"CARDCKPT";
/// 2: held frames carry the votes of later frames (supported, contradicted).
/// 3: chains of change sets.
const VERSION: u32 = 3;
const HEADER: usize = 8 + 4 + 8 + 8;
const FILE_NAME: &str = "checkpoint";

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

/// One file of a chain, as stored.
#[derive(Debug, Serialize, Deserialize)]
struct Link {
    /// The whole state's generation: which change sets belong to it.
    generation: u64,
    /// 0 for the whole state, n for the n-th change set on top of it.
    sequence: u64,
    checkpoint: Checkpoint,
}

/// A [`Link`] to write, without copying the state.
#[derive(Serialize)]
struct LinkRef<'a> {
    generation: u64,
    sequence: u64,
    checkpoint: &'a Checkpoint,
}

/// The chain on disk that the next change set extends.
#[derive(Debug, Clone, Copy)]
struct Chain {
    generation: u64,
    changes: u64,
    whole_bytes: u64,
    change_bytes: u64,
}

impl Chain {
    /// Past this, a change set costs more to restore than a whole state to write.
    const MAX_CHANGES: u64 = 1000;
}

/// A `--state-dir`, locked for as long as this value (or a clone) lives: two
/// processes writing one checkpoint would each overwrite the other's state.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
    _lock: Arc<File>,
    chain: Arc<Mutex<Option<Chain>>>,
}

impl StateDir {
    /// Creates the directory if needed and takes its lock.
    pub fn open(dir: &Path) -> Result<StateDir, CheckpointError> {
        fs::create_dir_all(dir).map_err(|e| CheckpointError::Io {
            path: dir.to_path_buf(),
            source: e,
        })?;
        let path = dir.join("lock");
        let mut lock = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err(&path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let holder = fs::read_to_string(&path).unwrap_or_default();
                return Err(CheckpointError::Locked {
                    path: dir.to_path_buf(),
                    holder: holder.trim().to_string(),
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(io_err(&path)(e)),
        }
        // Who holds it, for the error the next one gets.
        let pid = std::process::id().to_string();
        lock.set_len(0)
            .and_then(|_| lock.write_all(pid.as_bytes()))
            .and_then(|_| lock.flush())
            .map_err(io_err(&path))?;
        Ok(StateDir {
            dir: dir.to_path_buf(),
            _lock: Arc::new(lock),
            chain: Arc::new(Mutex::new(None)),
        })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    fn member_path(&self) -> PathBuf {
        self.dir.join("member")
    }

    /// If the last process on this directory died while in a consumer group (it never
    /// cleared its marker), the moment its group session ends at the latest: its last
    /// sign of life plus the session timeout. Joining before then lets some brokers
    /// (Tansu) hand every partition to the dead member.
    pub fn dead_member_session_end(&self, session: Duration) -> Option<SystemTime> {
        let touched = fs::metadata(self.member_path()).ok()?.modified().ok()?;
        Some(touched + session)
    }

    /// Marks this process as a group member, or refreshes the mark (at each checkpoint).
    pub fn mark_member(&self) -> Result<(), CheckpointError> {
        let path = self.member_path();
        fs::write(&path, std::process::id().to_string()).map_err(io_err(&path))
    }

    /// A clean exit: the group was left, nothing to wait out next time.
    pub fn clear_member(&self) {
        let _ = fs::remove_file(self.member_path());
    }

    /// The checkpoint for `identity`, if there is one: the whole state with every
    /// change set folded in. With `reset`, an existing checkpoint is discarded.
    pub fn load(&self, identity: &str, reset: bool) -> Result<Option<Checkpoint>, CheckpointError> {
        let path = self.path();
        *self.chain.lock().expect("chain lock") = None;
        if reset {
            self.remove_changes(|_, _| true)?;
            return match fs::remove_file(&path) {
                Ok(()) => {
                    tracing::warn!(event = "checkpoint_discarded", path = %path.display());
                    Ok(None)
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(CheckpointError::Io { path, source: e }),
            };
        }
        self.read_chain(Some(identity))
    }

    /// The checkpoint in this directory, whatever job wrote it (for inspection).
    pub fn inspect(&self) -> Result<Option<Checkpoint>, CheckpointError> {
        self.read_chain(None)
    }

    fn read_chain(&self, identity: Option<&str>) -> Result<Option<Checkpoint>, CheckpointError> {
        let path = self.path();
        let Some((whole, whole_bytes)) = self.read_link(&path, identity)? else {
            return Ok(None);
        };
        let generation = whole.generation;
        let mut checkpoint = whole.checkpoint;
        let mut chain = Chain {
            generation,
            changes: 0,
            whole_bytes,
            change_bytes: 0,
        };
        loop {
            let path = self.change_path(generation, chain.changes + 1);
            let Some((link, bytes)) = self.read_link(&path, identity)? else {
                break;
            };
            let corrupt = |why: String| CheckpointError::Corrupt {
                path: path.clone(),
                why,
            };
            if link.generation != generation || link.sequence != chain.changes + 1 {
                return Err(corrupt(format!(
                    "it says it is change {} of generation {}",
                    link.sequence, link.generation
                )));
            }
            checkpoint
                .state
                .absorb(link.checkpoint.state)
                .map_err(corrupt)?;
            checkpoint.input = link.checkpoint.input;
            checkpoint.written_unix_ms = link.checkpoint.written_unix_ms;
            chain.changes += 1;
            chain.change_bytes += bytes;
        }
        // Change sets past a gap belong to no chain: the next save would write
        // below them, and a later load would fold them in.
        self.remove_changes(|g, n| g != generation || n > chain.changes)?;
        *self.chain.lock().expect("chain lock") = Some(chain);
        Ok(Some(checkpoint))
    }

    /// One link of the chain, checked; `None` if the file does not exist.
    fn read_link(
        &self,
        path: &Path,
        identity: Option<&str>,
    ) -> Result<Option<(Link, u64)>, CheckpointError> {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(path)(e)),
        };
        let link = decode(&bytes).map_err(|why| CheckpointError::Corrupt {
            path: path.to_path_buf(),
            why,
        })?;
        if let Some(identity) = identity
            && link.checkpoint.identity != identity
        {
            return Err(CheckpointError::Foreign {
                path: path.to_path_buf(),
                found: link.checkpoint.identity,
                expected: identity.to_string(),
            });
        }
        Ok(Some((link, bytes.len() as u64)))
    }

    fn change_path(&self, generation: u64, sequence: u64) -> PathBuf {
        self.dir
            .join(format!("{FILE_NAME}.{generation}.{sequence}"))
    }

    /// Deletes the change sets for which `remove(generation, sequence)` holds.
    fn remove_changes(&self, remove: impl Fn(u64, u64) -> bool) -> Result<(), CheckpointError> {
        let entries = fs::read_dir(&self.dir).map_err(io_err(&self.dir))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("checkpoint.")) else {
                continue;
            };
            let Some((generation, sequence)) = rest.split_once('.') else {
                continue;
            };
            let (Ok(generation), Ok(sequence)) =
                (generation.parse::<u64>(), sequence.parse::<u64>())
            else {
                continue;
            };
            if remove(generation, sequence) {
                let path = entry.path();
                fs::remove_file(&path).map_err(io_err(&path))?;
            }
        }
        Ok(())
    }

    /// Whether the next save should be a whole state: there is no chain to extend,
    /// or its change sets add up to more than the whole state.
    pub fn wants_whole(&self) -> bool {
        (*self.chain.lock().expect("chain lock"))
            .is_none_or(|c| c.change_bytes >= c.whole_bytes || c.changes >= Chain::MAX_CHANGES)
    }

    /// Writes the next link atomically: temporary file, fsync, rename, fsync of the
    /// directory. A whole state starts a new generation and then deletes the old
    /// one's change sets.
    pub fn save(&self, checkpoint: &Checkpoint) -> Result<SaveStats, CheckpointError> {
        let started = Instant::now();
        let mut chain = self.chain.lock().expect("chain lock");
        let whole = checkpoint.state.whole;
        let (generation, sequence, path) = match (whole, *chain) {
            (true, previous) => {
                // Never a generation whose stale change sets may still lie about.
                let generation = previous.map_or(0, |c| c.generation + 1).max(unix_ms());
                (generation, 0, self.path())
            }
            (false, Some(c)) => (
                c.generation,
                c.changes + 1,
                self.change_path(c.generation, c.changes + 1),
            ),
            (false, None) => {
                return Err(CheckpointError::Write {
                    path: self.path(),
                    source: io::Error::other("a change set without a whole state to extend"),
                });
            }
        };
        let bytes = encode(&LinkRef {
            generation,
            sequence,
            checkpoint,
        });
        let tmp = self.dir.join(format!("{FILE_NAME}.tmp"));
        let failed = |source| CheckpointError::Write {
            path: path.clone(),
            source,
        };
        let mut f = File::create(&tmp).map_err(failed)?;
        f.write_all(&bytes).map_err(failed)?;
        f.sync_all().map_err(failed)?;
        drop(f);
        fs::rename(&tmp, &path).map_err(failed)?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(failed)?;
        let len = bytes.len() as u64;
        *chain = Some(match *chain {
            Some(c) if !whole => Chain {
                changes: sequence,
                change_bytes: c.change_bytes + len,
                ..c
            },
            _ => Chain {
                generation,
                changes: 0,
                whole_bytes: len,
                change_bytes: 0,
            },
        });
        if whole {
            // The new whole state is on disk: the old chain is no longer needed. A
            // crash before this leaves files that the next load ignores.
            self.remove_changes(|g, _| g != generation)?;
        }
        Ok(SaveStats {
            bytes: len,
            millis: started.elapsed().as_secs_f64() * 1000.0,
            whole,
        })
    }
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
        state: impl FnOnce(bool) -> Snapshot<HeldFrame>,
    ) -> Result<(), CheckpointError> {
        let checkpoint = Checkpoint {
            identity: self.identity.clone(),
            written_unix_ms: unix_ms(),
            input,
            state: state(!self.dir.wants_whole()),
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

fn encode(link: &LinkRef) -> Vec<u8> {
    let payload = postcard::to_stdvec(link).expect("a checkpoint always serializes");
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

fn decode(bytes: &[u8]) -> Result<Link, String> {
    if bytes.len() < HEADER || &bytes[..8] != MAGIC {
        return Err("not a Cardinal checkpoint (bad magic or too short)".into());
    }
    let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(format!(
            "format version {version}, this Cardinal reads version {VERSION}"
        ));
    }
    let len = u64_at(12) as usize;
    let payload = &bytes[HEADER..];
    if payload.len() != len {
        return Err(format!(
            "truncated: {} payload bytes, header says {len}",
            payload.len()
        ));
    }
    if xxhash_rust::xxh3::xxh3_64(payload) != u64_at(20) {
        return Err("checksum mismatch".into());
    }
    postcard::from_bytes(payload).map_err(|e| format!("cannot decode: {e}"))
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CheckpointError {
    let path = path.to_path_buf();
    move |e| CheckpointError::Io { path, source: e }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregator::{LaneSnapshot, WindowSnapshot};
    use crate::counter::CounterState;
    use crate::watermark::Watermark;
    use crate::window::Granularity;

    /// A held frame is written in checkpoint format 3's layout, and read back whole.
    #[test]
    fn held_frames_keep_the_stored_layout() {
        for (position, partition) in [
            (
                Position::Offset {
                    topic: "clicks".into(),
                    partition: 3,
                    offset: 77,
                },
                Some(3),
            ),
            (
                Position::Line {
                    source: "a.json".into(),
                    line: 77,
                },
                None,
            ),
        ] {
            let source = if partition.is_some() {
                "clicks"
            } else {
                "a.json"
            };
            let frame = HeldFrame {
                position,
                key: Some(b"k".to_vec().into()),
                raw: b"{}".to_vec().into(),
            };
            let stored = HeldRaw {
                source: source.into(),
                pos: 77,
                partition,
                key: Some(b"k".to_vec()),
                raw: b"{}".to_vec(),
            };
            let bytes = postcard::to_allocvec(&frame).unwrap();
            assert_eq!(bytes, postcard::to_allocvec(&stored).unwrap());
            assert_eq!(postcard::from_bytes::<HeldFrame>(&bytes).unwrap(), frame);
        }
    }

    fn sample() -> Checkpoint {
        Checkpoint {
            identity: "kafka topic=clicks group=g windows=minute".into(),
            written_unix_ms: 1,
            input: InputPosition::Kafka {
                offsets: vec![(0, 10), (1, 20)],
            },
            state: Snapshot {
                whole: true,
                stream_wm: Some(100),
                windows: vec![WindowSnapshot {
                    granularity: Granularity::Minute,
                    start: 60,
                    end: 120,
                    frames: 3,
                    version: 0,
                    dirty: false,
                    counter: Some(CounterState::Exact(vec![1, 2, 3])),
                    fresh: false,
                }],
                lanes: vec![LaneSnapshot {
                    index: 0,
                    watermark: Watermark::new(5),
                    held: vec![],
                    assigned: true,
                    runs: vec![(3, 120)],
                    next_pos: Some(10),
                    waiting: vec![],
                }],
            },
        }
    }

    #[test]
    fn a_failed_write_leaves_the_previous_checkpoint_intact() {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::open(dir.path()).unwrap();
        let first = sample();
        sd.save(&first).unwrap();
        // Something in the way of the temporary file: as good as a full disk, even for root.
        fs::create_dir(dir.path().join("checkpoint.tmp")).unwrap();
        let mut second = sample();
        second.written_unix_ms = 2;
        let e = sd.save(&second).unwrap_err().to_string();
        assert!(
            e.contains("cannot write checkpoint") && e.contains("previous checkpoint is intact"),
            "{e}"
        );
        assert_eq!(sd.load(&first.identity, false).unwrap(), Some(first));
    }

    /// A change set on top of `sample()`: one more user in its window, one new window.
    fn changes(users: Vec<u64>, offset: i64) -> Checkpoint {
        let mut cp = sample();
        cp.input = InputPosition::Kafka {
            offsets: vec![(0, offset), (1, 20)],
        };
        cp.state.whole = false;
        cp.state.windows[0].counter = Some(CounterState::Exact(users));
        cp.state.windows.push(WindowSnapshot {
            start: 120,
            end: 180,
            counter: Some(CounterState::Exact(vec![9])),
            fresh: true,
            ..cp.state.windows[0].clone()
        });
        cp
    }

    fn users(cp: &Checkpoint) -> Vec<Vec<u64>> {
        let mut out = Vec::new();
        for w in &cp.state.windows {
            let Some(CounterState::Exact(mut v)) = w.counter.clone() else {
                panic!("{w:?}")
            };
            v.sort();
            out.push(v);
        }
        out
    }

    #[test]
    fn a_chain_of_change_sets_loads_as_one_state_and_a_whole_save_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::open(dir.path()).unwrap();
        assert!(sd.wants_whole(), "nothing to extend yet");
        let id = sample().identity;
        let whole = sd.save(&sample()).unwrap();
        assert!(whole.whole);
        assert!(!sd.wants_whole());
        let first = sd.save(&changes(vec![4], 11)).unwrap();
        assert!(!first.whole);
        // The window opened in the first change set is not fresh in the second.
        let mut second = changes(vec![5, 6], 12);
        second.state.windows[1].fresh = false;
        second.state.windows[1].counter = None;
        sd.save(&second).unwrap();
        let names = |d: &Path| {
            let mut v: Vec<String> = (fs::read_dir(d).unwrap())
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| n.starts_with("checkpoint"))
                .collect();
            v.sort();
            v
        };
        assert_eq!(names(dir.path()).len(), 3, "{:?}", names(dir.path()));

        let again = StateDir::open(dir.path());
        assert!(again.is_err(), "still locked by sd");
        let loaded = sd.load(&id, false).unwrap().unwrap();
        assert!(loaded.state.whole);
        assert_eq!(users(&loaded), vec![vec![1, 2, 3, 4, 5, 6], vec![9]]);
        assert_eq!(
            loaded.input,
            InputPosition::Kafka {
                offsets: vec![(0, 12), (1, 20)]
            }
        );
        // Loading continues the chain: the next change set is the third.
        sd.save(&changes(vec![7], 13)).unwrap();
        assert_eq!(users(&sd.load(&id, false).unwrap().unwrap())[0].len(), 7);

        // A whole state starts over and the old chain's files go.
        let mut whole = sample();
        whole.state.windows[0].counter = Some(CounterState::Exact(vec![8]));
        sd.save(&whole).unwrap();
        assert_eq!(names(dir.path()), vec!["checkpoint".to_string()]);
        assert_eq!(sd.load(&id, false).unwrap(), Some(whole));
    }

    #[test]
    fn change_sets_past_a_gap_are_dropped_and_a_corrupt_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::open(dir.path()).unwrap();
        let id = sample().identity;
        sd.save(&sample()).unwrap();
        for (i, u) in [4, 5, 6].into_iter().enumerate() {
            let mut c = changes(vec![u], 11 + i as i64);
            if i > 0 {
                c.state.windows[1].fresh = false;
                c.state.windows[1].counter = None;
            }
            sd.save(&c).unwrap();
        }
        let link = |n: u64| {
            let g = sd.chain.lock().unwrap().unwrap().generation;
            sd.change_path(g, n)
        };
        let (second, third) = (link(2), link(3));
        let good = fs::read(&third).unwrap();
        fs::remove_file(&second).unwrap();
        let loaded = sd.load(&id, false).unwrap().unwrap();
        assert_eq!(users(&loaded)[0], vec![1, 2, 3, 4], "up to the gap");
        assert!(!third.exists(), "the orphan past the gap is gone");

        fs::write(&second, &good[..good.len() - 1]).unwrap();
        let e = sd.load(&id, false).unwrap_err().to_string();
        assert!(
            e.contains(&second.display().to_string()) && e.contains("truncated"),
            "{e}"
        );
        // --reset-state discards the whole chain.
        assert_eq!(sd.load(&id, true).unwrap(), None);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "only the lock"
        );
    }

    #[test]
    fn a_state_dir_has_one_user_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateDir::open(dir.path()).unwrap();
        let e = StateDir::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
        assert!(e.contains("in use by another Cardinal"), "{e}");
        drop(first);
        StateDir::open(dir.path()).expect("free again once the first is gone");
    }

    #[test]
    fn saves_and_loads_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::open(dir.path()).unwrap();
        assert_eq!(sd.load("x", false).unwrap(), None);
        let cp = sample();
        let stats = sd.save(&cp).unwrap();
        assert!(stats.bytes > HEADER as u64);
        assert_eq!(sd.load(&cp.identity, false).unwrap(), Some(cp.clone()));
        assert!(!dir.path().join("checkpoint.tmp").exists());
    }

    #[test]
    fn corrupt_truncated_and_foreign_checkpoints_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::open(dir.path()).unwrap();
        let cp = sample();
        sd.save(&cp).unwrap();
        let good = fs::read(sd.path()).unwrap();

        let mut flipped = good.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x40;
        fs::write(sd.path(), &flipped).unwrap();
        let e = sd.load(&cp.identity, false).unwrap_err().to_string();
        assert!(e.contains("checksum") && e.contains("--reset-state"), "{e}");

        fs::write(sd.path(), &good[..good.len() - 5]).unwrap();
        assert!(
            sd.load(&cp.identity, false)
                .unwrap_err()
                .to_string()
                .contains("truncated")
        );

        fs::write(sd.path(), b"{\"some\":\"json\"}").unwrap();
        assert!(
            sd.load(&cp.identity, false)
                .unwrap_err()
                .to_string()
                .contains("not a Cardinal checkpoint")
        );

        fs::write(sd.path(), &good).unwrap();
        let e = sd.load("kafka topic=other", false).unwrap_err().to_string();
        assert!(
            e.contains("another job") && e.contains("topic=other"),
            "{e}"
        );

        // --reset-state discards it.
        assert_eq!(sd.load("kafka topic=other", true).unwrap(), None);
        assert!(!sd.path().exists());
    }
}
