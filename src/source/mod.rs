//! Sources: where frames come from, cut into chunks of whole lines.
//!
//! A chunk is the unit of parallel parsing. Files are read in large chunks for
//! throughput; a slow source (a pipe, a terminal) yields whatever complete lines it
//! has as soon as a read comes back short, so `tail -f | cardinal count` reports
//! without waiting for a full chunk. `.gz` files are decompressed on the fly.
//!
//! A line longer than the frame limit (`--max-frame-bytes`) is never held whole:
//! its first KiB is kept for the rejects record, the rest is skipped as it is
//! read, so memory and time stay linear whatever the input holds.

use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use thiserror::Error;

use crate::watermark::WallClock;

mod chunk;
mod chunker;
#[cfg(test)]
mod tests;

pub use chunk::{Chunk, Record, RecordFields};
pub use chunker::Chunker;

/// Target chunk size: large enough to amortise hand-offs between threads, small
/// enough that several fit in cache-friendly flight.
pub const CHUNK_BYTES: usize = 1 << 20;

/// The most frames a chunk holds, whatever their size. A chunk's parse results
/// take tens of bytes per frame, so a megabyte of empty lines would otherwise
/// turn into tens of megabytes per chunk in flight; at 2 KB frames a full chunk
/// holds about 500 and this never binds.
pub const MAX_CHUNK_FRAMES: usize = 4096;

/// The default frame limit: Kafka's default largest message.
pub const MAX_FRAME_BYTES: usize = 1 << 20;

/// How much of an oversized frame is kept, to show in the rejects record.
pub const OVERSIZED_HEAD: usize = 1024;

/// Where an input comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Stdin,
    File(PathBuf),
}

/// A file opened when it is first read (see [`Input::open_later`]).
struct Deferred {
    input: Input,
    read: Option<Arc<AtomicU64>>,
    inner: Option<Box<dyn Read + Send>>,
}

impl Read for Deferred {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let inner = match &mut self.inner {
            Some(inner) => inner,
            None => {
                let opened = (self.input.open_counted(self.read.take()))
                    .map_err(|e| io::Error::other(e.to_string()))?;
                self.inner.insert(opened)
            }
        };
        inner.read(buf)
    }
}

impl Input {
    /// `-` means stdin, as in most Unix tools.
    pub fn from_arg(arg: &str) -> Input {
        if arg == "-" {
            Input::Stdin
        } else {
            Input::File(PathBuf::from(arg))
        }
    }

    /// How the input is named in errors, summaries and rejects.
    pub fn name(&self) -> String {
        match self {
            Input::Stdin => "<stdin>".to_string(),
            Input::File(p) => p.display().to_string(),
        }
    }

    /// Opens the input, decompressing `.gz` files.
    pub fn open(&self) -> Result<Box<dyn Read + Send>, SourceError> {
        self.open_counted(None)
    }

    /// The size on disk, for progress; `None` for stdin.
    pub fn size(&self) -> Option<u64> {
        match self {
            Input::Stdin => None,
            Input::File(p) => std::fs::metadata(p).ok().map(|m| m.len()),
        }
    }

    /// [`Input::open_counted`], but the file is only checked now (opened and closed:
    /// a missing or unreadable file fails at start, named) and opened again when it
    /// is first read, so that a run over thousands of files holds one descriptor at
    /// a time, whatever the descriptor limit.
    pub fn open_later(
        &self,
        read: Option<Arc<AtomicU64>>,
    ) -> Result<Box<dyn Read + Send>, SourceError> {
        // Only a regular file can be opened twice for the same bytes: a FIFO or a
        // device is opened once, now (opening it to check would consume its writer).
        let regular = match self {
            Input::Stdin => false,
            Input::File(p) => std::fs::metadata(p).is_ok_and(|m| m.is_file()),
        };
        if !regular {
            return self.open_counted(read);
        }
        drop(self.open_counted(None)?);
        Ok(Box::new(Deferred {
            input: self.clone(),
            read,
            inner: None,
        }))
    }

    /// [`Input::open`], adding the bytes read from disk (before decompression) to `read`.
    pub fn open_counted(
        &self,
        read: Option<Arc<AtomicU64>>,
    ) -> Result<Box<dyn Read + Send>, SourceError> {
        let raw: Box<dyn Read + Send> = match self {
            Input::Stdin => match read {
                Some(r) => Box::new(Counted::new(io::stdin(), r)),
                None => Box::new(io::stdin()),
            },
            Input::File(p) => {
                let f = File::open(p).map_err(|e| SourceError::Open {
                    path: p.clone(),
                    source: e,
                })?;
                match read {
                    Some(r) => Box::new(Counted::new(f, r)),
                    None => Box::new(f),
                }
            }
        };
        Ok(Box::new(GzipOrPlain::Undecided(
            io::BufReader::with_capacity(1 << 16, raw),
        )))
    }
}

/// gzip is told by its first two bytes (1f 8b), not by a name: a `.gz` file
/// renamed, or `cat day.json.gz |` on stdin, is still decompressed. Decided at the
/// first read, so that opening an input never waits for its first bytes.
enum GzipOrPlain {
    Undecided(io::BufReader<Box<dyn Read + Send>>),
    Plain(io::BufReader<Box<dyn Read + Send>>),
    Gzip(flate2::bufread::MultiGzDecoder<Consumed<io::BufReader<Box<dyn Read + Send>>>>),
}

impl Read for GzipOrPlain {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let raw = match self {
            GzipOrPlain::Plain(r) => return r.read(buf),
            GzipOrPlain::Gzip(r) => {
                // The chunker only knows decompressed bytes; where the file itself
                // broke is the one offset a user can look at with a hex editor.
                return r.read(buf).map_err(|e| {
                    let compressed = r.get_ref().consumed;
                    io::Error::new(
                        e.kind(),
                        GzipError {
                            compressed,
                            source: e,
                        },
                    )
                });
            }
            GzipOrPlain::Undecided(raw) => raw,
        };
        // An error here (an interrupt) leaves it undecided, to be asked again.
        let gzip = io::BufRead::fill_buf(raw)?.starts_with(&[0x1f, 0x8b]);
        let placeholder = io::BufReader::new(Box::new(io::empty()) as Box<dyn Read + Send>);
        let raw = std::mem::replace(raw, placeholder);
        *self = if gzip {
            GzipOrPlain::Gzip(flate2::bufread::MultiGzDecoder::new(Consumed {
                inner: raw,
                consumed: 0,
            }))
        } else {
            GzipOrPlain::Plain(raw)
        };
        self.read(buf)
    }
}

/// A buffered reader that knows how many of its bytes its user has consumed: the
/// decoder's position in the compressed file, whatever it holds in its buffer.
struct Consumed<R> {
    inner: R,
    consumed: u64,
}

impl<R: io::BufRead> Read for Consumed<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.consumed += n as u64;
        Ok(n)
    }
}

impl<R: io::BufRead> io::BufRead for Consumed<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        self.consumed += amt as u64;
        self.inner.consume(amt)
    }
}

/// A read error inside a gzip stream, with how far into the file it came.
#[derive(Debug, Error)]
#[error("{source}")]
struct GzipError {
    compressed: u64,
    source: io::Error,
}

/// A reader that adds what it reads to a shared count (a progress bar's position).
pub struct Counted<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R> Counted<R> {
    pub fn new(inner: R, read: Arc<AtomicU64>) -> Self {
        Counted { inner, read }
    }
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

#[derive(Debug, Error)]
pub enum SourceError {
    #[error("cannot open {}: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot read {name} at byte {offset}: {source}")]
    Read {
        name: String,
        offset: u64,
        source: io::Error,
    },
    /// Both offsets: the decompressed one is where the frames stop, the compressed
    /// one where the file is broken; either alone reads as the other.
    #[error(
        "cannot read {name}: {source} at byte {compressed} of the gzip file \
         (byte {offset} of the decompressed stream)"
    )]
    ReadGzip {
        name: String,
        offset: u64,
        compressed: u64,
        source: io::Error,
    },
}

impl SourceError {
    /// A read error at `offset` bytes of `name`'s (decompressed) stream.
    pub(crate) fn read(name: &str, offset: u64, e: io::Error) -> SourceError {
        let name = name.to_string();
        match e.downcast::<GzipError>() {
            Ok(GzipError { compressed, source }) => SourceError::ReadGzip {
                name,
                offset,
                compressed,
                source,
            },
            Err(source) => SourceError::Read {
                name,
                offset,
                source,
            },
        }
    }
}

/// Chunk buffers are recycled rather than freed: a fresh megabyte costs page
/// faults and zeroing on every chunk, which showed up as a third of the time.
/// It keeps no more buffers than the pipeline has chunks in flight, so that what
/// it holds is within the same bound.
#[derive(Debug, Clone)]
pub struct BufferPool {
    free: Arc<Mutex<Vec<Vec<u8>>>>,
    keep: usize,
}

impl Default for BufferPool {
    fn default() -> Self {
        BufferPool::keeping(64)
    }
}

impl BufferPool {
    /// A pool that keeps at most `keep` free buffers.
    pub fn keeping(keep: usize) -> Self {
        BufferPool {
            free: Arc::default(),
            keep,
        }
    }

    pub fn take(&self, size: usize) -> Vec<u8> {
        let recycled = self.free.lock().pop();
        match recycled {
            Some(b) if b.len() >= size => b,
            _ => vec![0; size],
        }
    }

    fn put(&self, buf: Vec<u8>) {
        let mut free = self.free.lock();
        if free.len() < self.keep {
            free.push(buf);
        }
    }
}
