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
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use thiserror::Error;

use crate::watermark::WallClock;

/// Target chunk size: large enough to amortise hand-offs between threads, small
/// enough that several fit in cache-friendly flight.
pub const CHUNK_BYTES: usize = 1 << 20;

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

    /// [`Input::open`], adding the bytes read from disk (before decompression) to `read`.
    pub fn open_counted(
        &self,
        read: Option<Arc<AtomicU64>>,
    ) -> Result<Box<dyn Read + Send>, SourceError> {
        match self {
            Input::Stdin => Ok(match read {
                Some(r) => Box::new(Counted::new(io::stdin(), r)),
                None => Box::new(io::stdin()),
            }),
            Input::File(p) => {
                let f = File::open(p).map_err(|e| SourceError::Open {
                    path: p.clone(),
                    source: e,
                })?;
                let f: Box<dyn Read + Send> = match read {
                    Some(r) => Box::new(Counted::new(f, r)),
                    None => Box::new(f),
                };
                if is_gzip(p) {
                    Ok(Box::new(flate2::read::MultiGzDecoder::new(
                        io::BufReader::with_capacity(1 << 16, f),
                    )))
                } else {
                    Ok(f)
                }
            }
        }
    }
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

fn is_gzip(p: &Path) -> bool {
    p.extension().is_some_and(|e| e.eq_ignore_ascii_case("gz"))
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
}

/// A batch of frames: whole lines from one input, or records (Kafka messages)
/// whose bounds are given explicitly because a message may contain newlines.
#[derive(Debug)]
pub struct Chunk {
    /// The input's name (a file, or a topic), shared by all its chunks.
    pub source: Arc<str>,
    /// 1-based number of the first line, on the first chunk of an input (or where it
    /// resumes); `None` when it follows on from the previous chunk. Counting lines is
    /// left to the aggregating stage, which sees chunks in order anyway.
    pub first_line: Option<u64>,
    /// Byte offset of the chunk in the (decompressed) input.
    pub offset: u64,
    /// Which input of the run (files are read in order).
    pub input: usize,
    /// Live sources only: the wall clock once every frame of the chunk had arrived.
    pub clock: Option<WallClock>,
    buf: Vec<u8>,
    len: usize,
    records: Option<Vec<Record>>,
    /// Frames over the limit, by index in the chunk, with their real length: the
    /// chunk holds only their first [`OVERSIZED_HEAD`] bytes.
    oversized: Vec<(u64, u64)>,
    /// Bytes of input the chunk stands for (more than its data if a frame was cut).
    input_bytes: u64,
    /// What is kept of each record besides its value (see [`RecordFields`]).
    keep: RecordFields,
    /// Kafka record keys when kept: one (start, end) in `key_buf` per record,
    /// [`NO_KEY`] for a record without one.
    keys: Vec<(u32, u32)>,
    key_buf: Vec<u8>,
    /// Kafka record timestamps (milliseconds) when kept: one per record.
    timestamps: Vec<Option<i64>>,
}

/// Which of a Kafka record's own fields a chunk keeps besides its value: only
/// those a stage wants, since a copy per record is otherwise wasted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordFields {
    /// The key: for a dead-letter record, or as the uid (`--uid-from key`).
    pub keys: bool,
    /// The timestamp, as the ts (`--ts-from record-timestamp`).
    pub timestamps: bool,
}

/// The span of a record without a key.
const NO_KEY: (u32, u32) = (u32::MAX, u32::MAX);

/// Where one record of a chunk is, and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    pub start: u32,
    pub end: u32,
    /// The lane (Kafka partition) it arrived on.
    pub lane: u32,
    /// Its position in the lane (Kafka offset).
    pub pos: u64,
}

impl Chunk {
    /// A chunk of records appended one by one (see [`Chunk::push_record`]).
    pub fn records(source: Arc<str>, mut buf: Vec<u8>) -> Chunk {
        buf.clear();
        Chunk {
            source,
            first_line: None,
            clock: None,
            offset: 0,
            input: 0,
            buf,
            len: 0,
            records: Some(Vec::new()),
            oversized: Vec::new(),
            input_bytes: 0,
            keep: RecordFields::default(),
            keys: Vec::new(),
            key_buf: Vec::new(),
            timestamps: Vec::new(),
        }
    }

    /// Keeps these fields of the records pushed with [`Chunk::push_kafka_record`].
    pub fn keeping(mut self, fields: RecordFields) -> Chunk {
        self.keep = fields;
        self
    }

    /// Appends one Kafka record: its value, and its key (`None`: it has none) and
    /// timestamp in milliseconds (`None`: not available) if the chunk keeps them.
    #[inline]
    pub fn push_kafka_record(
        &mut self,
        lane: u32,
        pos: u64,
        key: Option<&[u8]>,
        timestamp_ms: Option<i64>,
        payload: &[u8],
        max_frame: usize,
    ) {
        if self.keep.keys {
            let span = match key {
                Some(key) => {
                    let start = self.key_buf.len() as u32;
                    self.key_buf.extend_from_slice(key);
                    (start, self.key_buf.len() as u32)
                }
                None => NO_KEY,
            };
            self.keys.push(span);
        }
        if self.keep.timestamps {
            self.timestamps.push(timestamp_ms);
        }
        self.push_record(lane, pos, payload, max_frame);
    }

    /// The key of record `index`, if the chunk keeps keys and it had one.
    #[inline]
    pub fn key(&self, index: usize) -> Option<&[u8]> {
        let &(start, end) = self.keys.get(index)?;
        (start, end)
            .ne(&NO_KEY)
            .then(|| &self.key_buf[start as usize..end as usize])
    }

    /// The timestamp (milliseconds) of record `index`, if the chunk keeps them and
    /// it had one.
    #[inline]
    pub fn timestamp(&self, index: usize) -> Option<i64> {
        self.timestamps.get(index).copied().flatten()
    }

    /// Appends one record (a Kafka message payload); one over `max_frame` bytes
    /// is kept as its head only, and parsed as `too_large`.
    pub fn push_record(&mut self, lane: u32, pos: u64, payload: &[u8], max_frame: usize) {
        let start = self.buf.len();
        let records = self.records.get_or_insert_with(Vec::new);
        if payload.len() > max_frame {
            self.oversized
                .push((records.len() as u64, payload.len() as u64));
            self.buf
                .extend_from_slice(&payload[..OVERSIZED_HEAD.min(payload.len())]);
        } else {
            self.buf.extend_from_slice(payload);
        }
        self.input_bytes += payload.len() as u64;
        self.len = self.buf.len();
        records.push(Record {
            start: start as u32,
            end: self.len as u32,
            lane,
            pos,
        });
    }

    pub fn record_count(&self) -> usize {
        self.records.as_ref().map_or(0, Vec::len)
    }

    /// The real length of frame `index` if it was over the limit (and cut to its head).
    #[inline]
    pub fn oversized(&self, index: u64) -> Option<u64> {
        if self.oversized.is_empty() {
            return None;
        }
        self.oversized
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, len)| *len)
    }

    /// Bytes of input this chunk stands for: where the next one starts.
    pub fn input_bytes(&self) -> u64 {
        self.input_bytes
    }

    /// Every frame with its lane and position: records as given, or lines (lane 0,
    /// position = index of the line in this chunk, from 0).
    pub fn frames(&self) -> Box<dyn Iterator<Item = (u32, u64, &[u8])> + '_> {
        match &self.records {
            Some(records) => Box::new(records.iter().map(|r| {
                (
                    r.lane,
                    r.pos,
                    &self.data()[r.start as usize..r.end as usize],
                )
            })),
            None => Box::new(self.lines().enumerate().map(|(i, l)| (0, i as u64, l))),
        }
    }

    /// Complete lines, each ending in `\n` except perhaps the input's last.
    pub fn data(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Lines without their terminator (`\r` is left for the parser, which allows it).
    pub fn lines(&self) -> impl Iterator<Item = &[u8]> {
        let data = self.data();
        let mut start = 0;
        let mut ends = memchr::memchr_iter(b'\n', data);
        std::iter::from_fn(move || match ends.next() {
            Some(end) => {
                let line = &data[start..end];
                start = end + 1;
                Some(line)
            }
            // The input's last line may lack its newline.
            None if start < data.len() => {
                let line = &data[start..];
                start = data.len();
                Some(line)
            }
            None => None,
        })
    }

    /// Gives the chunk's memory back for the next chunk to reuse.
    pub fn recycle(self, pool: &BufferPool) {
        pool.put(self.buf);
    }
}

/// Chunk buffers are recycled rather than freed: a fresh megabyte costs page
/// faults and zeroing on every chunk, which showed up as a third of the time.
#[derive(Debug, Clone, Default)]
pub struct BufferPool {
    free: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl BufferPool {
    pub fn take(&self, size: usize) -> Vec<u8> {
        let recycled = self.free.lock().expect("pool lock").pop();
        match recycled {
            Some(b) if b.len() >= size => b,
            _ => vec![0; size],
        }
    }

    fn put(&self, buf: Vec<u8>) {
        let mut free = self.free.lock().expect("pool lock");
        // Bounded: the pipeline never has more than a few dozen chunks in flight.
        if free.len() < 64 {
            free.push(buf);
        }
    }
}

/// Cuts a reader into chunks of whole lines.
pub struct Chunker<R> {
    reader: R,
    source: Arc<str>,
    pool: BufferPool,
    /// Always fully initialised; `filled` bytes of it are data.
    cur: Vec<u8>,
    filled: usize,
    /// The line number to put on the next chunk, if it starts a numbering.
    next_line: Option<u64>,
    offset: u64,
    chunk_bytes: usize,
    eof: bool,
    input: usize,
    max_frame: usize,
    /// `cur[..scanned]` has been searched for newlines; the last one found is at `last_nl`.
    scanned: usize,
    last_nl: Option<usize>,
    /// Skipping the rest of a line over the limit: its head and its length so far.
    skipping: Option<(Vec<u8>, u64)>,
}

impl<R: Read> Chunker<R> {
    /// Lines longer than this are skipped and handed on as `too_large`.
    pub fn max_frame(mut self, bytes: usize) -> Self {
        self.max_frame = bytes.max(1);
        self
    }

    /// Tags chunks with the input's index in the run.
    pub fn input(mut self, index: usize) -> Self {
        self.input = index;
        self
    }

    /// Resumes at a checkpointed position: skips `offset` bytes (decompressed bytes
    /// for `.gz`, which cannot seek) and numbers lines from `next_line`.
    pub fn skip_to(&mut self, offset: u64, next_line: u64) -> Result<(), SourceError> {
        let skipped =
            io::copy(&mut (&mut self.reader).take(offset), &mut io::sink()).map_err(|e| {
                SourceError::Read {
                    name: self.source.to_string(),
                    offset: 0,
                    source: e,
                }
            })?;
        if skipped < offset {
            return Err(SourceError::Read {
                name: self.source.to_string(),
                offset,
                source: io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "the checkpoint is at byte {offset} but the input has only {skipped}: is it the same file?"
                    ),
                ),
            });
        }
        self.offset = offset;
        self.next_line = Some(next_line);
        Ok(())
    }

    pub fn new(reader: R, source: &str, chunk_bytes: usize) -> Self {
        Self::with_pool(reader, source, chunk_bytes, BufferPool::default())
    }

    pub fn with_pool(reader: R, source: &str, chunk_bytes: usize, pool: BufferPool) -> Self {
        Chunker {
            reader,
            source: Arc::from(source),
            cur: Vec::new(),
            pool,
            filled: 0,
            next_line: Some(1),
            offset: 0,
            chunk_bytes,
            eof: false,
            input: 0,
            max_frame: MAX_FRAME_BYTES,
            scanned: 0,
            last_nl: None,
            skipping: None,
        }
    }

    fn cut(&mut self, upto: usize) -> Chunk {
        let mut next = self.pool.take(self.chunk_bytes.max(self.filled - upto));
        next[..self.filled - upto].copy_from_slice(&self.cur[upto..self.filled]);
        let buf = std::mem::replace(&mut self.cur, next);
        self.filled -= upto;
        // What is left holds no newline that was found: callers cut just after the last one.
        self.scanned = self.scanned.saturating_sub(upto);
        self.last_nl = self.last_nl.and_then(|n| n.checked_sub(upto));
        self.line_chunk(buf, upto, Vec::new(), upto as u64)
    }

    /// A chunk of lines that stands for the next `input_bytes` of input.
    fn line_chunk(
        &mut self,
        buf: Vec<u8>,
        len: usize,
        oversized: Vec<(u64, u64)>,
        input_bytes: u64,
    ) -> Chunk {
        let chunk = Chunk {
            source: self.source.clone(),
            first_line: self.next_line.take(),
            clock: None,
            offset: self.offset,
            input: self.input,
            buf,
            len,
            records: None,
            oversized,
            input_bytes,
            keep: RecordFields::default(),
            keys: Vec::new(),
            key_buf: Vec::new(),
            timestamps: Vec::new(),
        };
        self.offset += input_bytes;
        chunk
    }

    /// The chunk that stands for one oversized line: its head, and its real length.
    fn oversized_chunk(&mut self, head: Vec<u8>, len: u64, newline: bool) -> Chunk {
        let mut buf = self.pool.take(0);
        buf.clear();
        buf.extend_from_slice(&head);
        let input_bytes = len + u64::from(newline);
        let data = buf.len();
        self.line_chunk(buf, data, vec![(0, len)], input_bytes)
    }

    /// Reads on while skipping an oversized line; `Some` once it has ended.
    fn skip_oversized(&mut self) -> Option<Result<Chunk, SourceError>> {
        if self.eof {
            let (head, len) = self.skipping.take()?;
            return Some(Ok(self.oversized_chunk(head, len, false)));
        }
        self.filled = 0;
        let n = match self.read_more() {
            Ok(n) => n,
            Err(e) => return Some(Err(e)),
        };
        let newline = memchr::memchr(b'\n', &self.cur[..n]);
        let (_, len) = self.skipping.as_mut()?;
        match newline {
            Some(i) => {
                *len += i as u64;
                let (head, len) = self.skipping.take()?;
                self.cur.copy_within(i + 1..n, 0);
                self.filled = n - i - 1;
                self.scanned = 0;
                self.last_nl = None;
                Some(Ok(self.oversized_chunk(head, len, true)))
            }
            None => {
                *len += n as u64;
                self.eof = n == 0;
                None
            }
        }
    }

    /// One read into the free part of the buffer, retrying interrupts.
    fn read_more(&mut self) -> Result<usize, SourceError> {
        loop {
            match self.reader.read(&mut self.cur[self.filled..]) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.eof = true;
                    let offset = self.offset + self.filled as u64;
                    self.filled = 0;
                    self.skipping = None;
                    return Err(SourceError::Read {
                        name: self.source.to_string(),
                        offset,
                        source: e,
                    });
                }
            }
        }
    }
}

impl<R: Read> Iterator for Chunker<R> {
    type Item = Result<Chunk, SourceError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.cur.is_empty() {
            self.cur = self.pool.take(self.chunk_bytes);
        }
        loop {
            if self.skipping.is_some() {
                match self.skip_oversized() {
                    Some(done) => return Some(done),
                    None => continue,
                }
            }
            if self.eof {
                if self.filled == 0 {
                    return None;
                }
                return Some(Ok(self.cut(self.filled)));
            }
            if self.filled == self.cur.len() {
                // A line longer than the buffer (but within the limit): grow it.
                let grown = (self.cur.len() * 2).max(4096);
                self.cur.resize(grown, 0);
            }
            let room = self.cur.len() - self.filled;
            let n = match self.read_more() {
                Ok(n) => n,
                Err(e) => return Some(Err(e)),
            };
            self.filled += n;
            if n == 0 {
                self.eof = true;
                continue;
            }
            // Only the new bytes are searched: a long line read in small pieces
            // must not be scanned again on every read.
            if let Some(i) = memchr::memrchr(b'\n', &self.cur[self.scanned..self.filled]) {
                self.last_nl = Some(self.scanned + i);
            }
            self.scanned = self.filled;
            let line_start = self.last_nl.map_or(0, |i| i + 1);
            if self.filled - line_start > self.max_frame {
                if line_start > 0 {
                    // Complete lines first; the long one moves to the front.
                    return Some(Ok(self.cut(line_start)));
                }
                let head = self.cur[..OVERSIZED_HEAD.min(self.filled)].to_vec();
                self.skipping = Some((head, self.filled as u64));
                self.filled = 0;
                self.scanned = 0;
                continue;
            }
            let full = self.filled >= self.chunk_bytes;
            let short_read = n < room;
            if (full || short_read) && line_start > 0 {
                return Some(Ok(self.cut(line_start)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that returns at most `step` bytes per read, like a pipe.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn collect(data: &[u8], step: usize, chunk: usize) -> Vec<(u64, String)> {
        let mut out = vec![];
        let mut line = 0;
        for c in Chunker::new(Trickle { data, step }, "t", chunk) {
            let c = c.unwrap();
            if let Some(first) = c.first_line {
                line = first;
            }
            for l in c.lines() {
                out.push((line, String::from_utf8(l.to_vec()).unwrap()));
                line += 1;
            }
        }
        out
    }

    #[test]
    fn lines_and_numbers_survive_any_read_pattern() {
        let text = "a\nbb\n\nccc\r\ndddd\nlast-without-newline";
        let want: Vec<(u64, String)> = text
            .split('\n')
            .enumerate()
            .map(|(i, l)| (i as u64 + 1, l.to_string()))
            .collect();
        for step in [1, 2, 3, 7, 100] {
            for chunk in [1, 4, 16, 1024] {
                assert_eq!(
                    collect(text.as_bytes(), step, chunk),
                    want,
                    "step {step} chunk {chunk}"
                );
            }
        }
    }

    /// Absolute line numbers from chunks, as the aggregating stage computes them.
    fn numbered(chunks: impl Iterator<Item = Chunk>) -> Vec<(u64, Vec<u8>)> {
        let mut line = 0;
        let mut out = vec![];
        for c in chunks {
            if let Some(first) = c.first_line {
                line = first;
            }
            for (_, _, l) in c.frames() {
                out.push((line, l.to_vec()));
                line += 1;
            }
        }
        out
    }

    #[test]
    fn line_numbers_do_not_depend_on_chunk_sizes_and_resume_where_told() {
        let text: String = (0..500)
            .map(|i| format!("{{\"n\":{}}}\n", "x".repeat(i % 37)))
            .collect::<String>()
            + "tail";
        let reference = numbered(Chunker::new(text.as_bytes(), "f", 1 << 20).map(Result::unwrap));
        assert_eq!(reference.len(), 501);
        assert_eq!(reference[500], (501, b"tail".to_vec()));
        for chunk in [1, 7, 64] {
            let got = numbered(Chunker::new(text.as_bytes(), "f", chunk).map(Result::unwrap));
            assert_eq!(got, reference, "chunk size {chunk}");
        }
        let second_line = text.find('\n').unwrap() as u64 + 1;
        let mut resumed = Chunker::new(text.as_bytes(), "f", 64);
        resumed.skip_to(second_line, 2).unwrap();
        let rest = numbered(resumed.map(Result::unwrap));
        assert_eq!(rest, reference[1..]);
    }

    #[test]
    fn trailing_newline_makes_no_extra_line() {
        assert_eq!(collect(b"x\ny\n", 100, 1024).len(), 2);
        assert!(collect(b"", 100, 1024).is_empty());
    }

    #[test]
    fn offsets_point_at_each_chunk() {
        let text = b"one\ntwo\nthree\n";
        let chunks: Vec<Chunk> = Chunker::new(
            Trickle {
                data: text,
                step: 4,
            },
            "t",
            4,
        )
        .map(Result::unwrap)
        .collect();
        for c in &chunks {
            assert_eq!(
                &text[c.offset as usize..c.offset as usize + c.data().len()],
                c.data()
            );
        }
    }

    #[test]
    fn gzip_is_decompressed_and_missing_files_are_named() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.json.gz");
        let mut enc =
            flate2::write::GzEncoder::new(File::create(&p).unwrap(), flate2::Compression::fast());
        enc.write_all(b"{\"uid\":\"a\",\"ts\":1}\n").unwrap();
        enc.finish().unwrap();
        let mut s = String::new();
        Input::File(p)
            .open()
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "{\"uid\":\"a\",\"ts\":1}\n");
        let missing = Input::File(dir.path().join("nope.json"));
        let err = missing.open().err().unwrap().to_string();
        assert!(err.contains("nope.json"), "{err}");
    }
}
