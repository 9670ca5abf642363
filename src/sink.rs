//! Sinks: where results and rejected frames go. One trait per role: [`Results`]
//! for final windows, [`Reject`] for frames not counted.
//!
//! [`ResultSink`] renders results as text or JSON lines and flushes after each
//! batch, so a window appears the moment it is final. A closed stdout (`| head`) is
//! not an error: the sink reports it and the run stops quietly. `run
//! --results-topic` adds the results topic (`kafka::ResultsTopic`). Every rejected, late or
//! outlying frame goes to each [`Reject`] sink asked for, so that nothing is
//! dropped silently: [`RejectSink`] writes it as a JSON line with its reason, its
//! position and the raw frame; `run --rejects-topic` and `count --rejects-topic`
//! produce it to a dead-letter topic (`kafka::TopicRejects`).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use serde::Serialize;
use thiserror::Error;

use crate::aggregator::WindowResult;
use crate::emitter::{self, Format};
use crate::frame::Position;
use crate::window::Calendar;

#[derive(Debug, Error)]
pub enum SinkError {
    /// The reader went away (`cardinal count | head`): stop, successfully.
    #[error("output closed by the reader")]
    Closed,
    #[error("cannot write results: {0}")]
    Results(io::Error),
    /// The results topic refused a record, or did not acknowledge it in time.
    #[error("{0}")]
    ResultsTopic(String),
    #[error("cannot write rejects to {}: {source}", path.display())]
    Rejects { path: PathBuf, source: io::Error },
    /// The dead-letter topic refused a record, or did not acknowledge it in time.
    #[error("cannot write rejects to topic {topic} on {brokers}: {message}")]
    RejectsTopic {
        topic: String,
        brokers: String,
        message: String,
    },
}

/// One frame that was not counted, as every reject sink sees it.
#[derive(Debug, Clone, Copy)]
pub struct Rejected<'a> {
    /// The reason's stable name (`late`, `malformed`, ...).
    pub reason: &'a str,
    /// Human-readable detail, e.g. the granularities a late frame missed.
    pub detail: &'a str,
    pub position: &'a Position,
    /// The Kafka record's key, when the frame came from Kafka with one.
    pub key: Option<&'a [u8]>,
    /// The frame as read (its first KiB if it was `too_large`).
    pub raw: &'a [u8],
}

/// Where rejected frames go: a file (`--rejects`) or a topic (`--rejects-topic`).
/// A sink may buffer; `flush` makes everything written so far durable (the file
/// flushed, the topic's records acknowledged), and is called at the end of a run.
pub trait Reject: Send {
    fn write(&mut self, frame: Rejected<'_>) -> Result<(), SinkError>;
    fn flush(&mut self) -> Result<(), SinkError>;
}

/// Where final windows go, a batch at a time as they become final: stdout
/// ([`ResultSink`]) and the results topic (`kafka::ResultsTopic`).
pub trait Results: Send {
    fn write(&mut self, windows: &[WindowResult], calendar: &Calendar) -> Result<(), SinkError>;
}

/// Writes results as lines to any writer, usually stdout.
pub struct ResultSink {
    out: BufWriter<Box<dyn Write + Send>>,
    format: Format,
    rendered: String,
}

impl ResultSink {
    pub fn new(out: Box<dyn Write + Send>, format: Format) -> ResultSink {
        ResultSink {
            out: BufWriter::with_capacity(1 << 16, out),
            format,
            rendered: String::new(),
        }
    }

    pub fn stdout(format: Format) -> ResultSink {
        ResultSink::new(Box::new(io::stdout()), format)
    }
}

impl Results for ResultSink {
    /// Renders the windows and flushes them, so each is seen as soon as it is final.
    fn write(&mut self, windows: &[WindowResult], calendar: &Calendar) -> Result<(), SinkError> {
        self.rendered.clear();
        for w in windows {
            emitter::render(self.format, w, calendar, &mut self.rendered);
        }
        self.out
            .write_all(self.rendered.as_bytes())
            .and_then(|_| self.out.flush())
            .map_err(result_error)
    }
}

fn result_error(e: io::Error) -> SinkError {
    if e.kind() == io::ErrorKind::BrokenPipe {
        SinkError::Closed
    } else {
        SinkError::Results(e)
    }
}

/// One line of the rejects file. Files give `line`; Kafka gives `partition` and `offset`.
#[derive(Debug, Serialize, PartialEq)]
pub struct RejectRecord<'a> {
    /// `late`, `outlier`, or a parse reason such as `truncated`.
    pub reason: &'a str,
    /// Human-readable detail, e.g. the granularities a late frame missed.
    pub detail: String,
    /// The file, or the topic.
    pub source: &'a str,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub line: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub partition: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub offset: Option<u64>,
    /// The Kafka record's key, lossily decoded as UTF-8, when the run kept keys
    /// (`--uid-from key`, or a dead-letter topic as well) and the record had one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub key: Option<String>,
    /// The frame as read, lossily decoded as UTF-8.
    pub raw: String,
}

/// Writes rejected frames as JSON lines, if `--rejects` was given.
impl std::fmt::Debug for RejectSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RejectSink({})", self.path.display())
    }
}

#[derive(Clone)]
pub struct RejectSink {
    path: PathBuf,
    /// Shared with the checkpoint hooks, which flush it and note its length before
    /// each checkpoint (see [`RejectSink::flushed_len`]).
    out: Arc<Mutex<BufWriter<File>>>,
}

impl RejectSink {
    pub fn create(path: &Path) -> Result<RejectSink, SinkError> {
        let f = File::create(path).map_err(|e| SinkError::Rejects {
            path: path.to_path_buf(),
            source: e,
        })?;
        Ok(RejectSink::over(path, f))
    }

    /// Goes on with a file that a checkpointed run wrote: what it holds past
    /// `bytes` (the length the checkpoint recorded) is the rejects of frames after
    /// the checkpoint, which the resumed run reads and rejects again, so it is cut;
    /// the rest is kept, and the run appends. A file shorter than that (rotated,
    /// or truncated by hand) is appended to as it is.
    pub fn resume(path: &Path, bytes: u64) -> Result<RejectSink, SinkError> {
        let err = |e| SinkError::Rejects {
            path: path.to_path_buf(),
            source: e,
        };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(err)?;
        if f.metadata().map_err(err)?.len() > bytes {
            f.set_len(bytes).map_err(err)?;
        }
        io::Seek::seek(&mut f, io::SeekFrom::End(0)).map_err(err)?;
        Ok(RejectSink::over(path, f))
    }

    fn over(path: &Path, f: File) -> RejectSink {
        RejectSink {
            path: path.to_path_buf(),
            out: Arc::new(Mutex::new(BufWriter::with_capacity(1 << 16, f))),
        }
    }

    /// Cuts the file back to `bytes` if it is longer (a restored checkpoint's
    /// length), and goes on at its end: [`RejectSink::resume`] for a sink opened
    /// before the checkpoint was read.
    pub fn cut_back(&self, bytes: u64) -> Result<(), SinkError> {
        let err = |e| SinkError::Rejects {
            path: self.path.clone(),
            source: e,
        };
        let mut out = self.out.lock();
        out.flush().map_err(err)?;
        let f = out.get_mut();
        if f.metadata().map_err(err)?.len() > bytes {
            f.set_len(bytes).map_err(err)?;
        }
        io::Seek::seek(f, io::SeekFrom::End(0)).map_err(err)?;
        Ok(())
    }

    /// Flushes, and says how long the file is: what a checkpoint records.
    pub fn flushed_len(&self) -> Result<u64, SinkError> {
        let err = |e| SinkError::Rejects {
            path: self.path.clone(),
            source: e,
        };
        let mut out = self.out.lock();
        out.flush().map_err(err)?;
        io::Seek::stream_position(out.get_mut()).map_err(err)
    }
}

impl Reject for RejectSink {
    fn write(&mut self, frame: Rejected<'_>) -> Result<(), SinkError> {
        let Rejected {
            reason,
            detail,
            position,
            key,
            raw,
        } = frame;
        let detail = detail.to_string();
        let key = key.map(|k| String::from_utf8_lossy(k).into_owned());
        let raw = String::from_utf8_lossy(raw.strip_suffix(b"\r").unwrap_or(raw)).into_owned();
        let rec = match position {
            Position::Line { source, line } => RejectRecord {
                reason,
                detail,
                source,
                line: Some(*line),
                partition: None,
                offset: None,
                key,
                raw,
            },
            Position::Offset {
                topic,
                partition,
                offset,
            } => RejectRecord {
                reason,
                detail,
                source: topic,
                line: None,
                partition: Some(*partition),
                offset: Some(*offset),
                key,
                raw,
            },
        };
        let mut out = self.out.lock();
        serde_json::to_writer(&mut *out, &rec)
            .map_err(io::Error::from)
            .and_then(|_| out.write_all(b"\n"))
            .map_err(|e| SinkError::Rejects {
                path: self.path.clone(),
                source: e,
            })
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        let mut out = self.out.lock();
        out.flush().map_err(|e| SinkError::Rejects {
            path: self.path.clone(),
            source: e,
        })
    }
}
