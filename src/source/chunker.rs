//! Cutting a reader into chunks of whole lines: large reads for files, short ones
//! handed on at once for pipes, and lines over the frame limit skipped as they are
//! read.

use super::*;

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
    /// `cur[..scanned]` has been searched for newlines; the last one found is at
    /// `last_nl`, and `lines` were found.
    scanned: usize,
    last_nl: Option<usize>,
    lines: usize,
    /// `cur[..consumed]` went out in chunks cut at the line limit; the rest moves
    /// to the front before the next read.
    consumed: usize,
    /// Cut a chunk after this many lines, however few bytes they are.
    max_lines: usize,
    /// Skipping the rest of a line over the limit: its head and its length so far.
    skipping: Option<(Vec<u8>, u64)>,
}

impl<R: Read> Chunker<R> {
    /// Lines longer than this are skipped and handed on as `too_large`.
    pub fn max_frame(mut self, bytes: usize) -> Self {
        self.max_frame = bytes.max(1);
        self
    }

    /// Cuts chunks after `lines` lines at most (default [`MAX_CHUNK_FRAMES`]).
    pub fn max_lines(mut self, lines: usize) -> Self {
        self.max_lines = lines.max(1);
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
        let skipped = io::copy(&mut (&mut self.reader).take(offset), &mut io::sink())
            .map_err(|e| SourceError::read(&self.source, 0, e))?;
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
            lines: 0,
            consumed: 0,
            max_lines: MAX_CHUNK_FRAMES,
            skipping: None,
        }
    }

    /// Searches the bytes read since the last search for newlines. `Some` with
    /// where to cut once the chunk holds `max_lines` lines: the search stops
    /// there, and the rest is searched again after the cut.
    fn scan(&mut self) -> Option<usize> {
        let from = self.scanned;
        for i in memchr::memchr_iter(b'\n', &self.cur[from..self.filled]) {
            self.last_nl = Some(from + i);
            self.lines += 1;
            if self.lines == self.max_lines {
                self.scanned = from + i + 1;
                return Some(self.scanned);
            }
        }
        self.scanned = self.filled;
        None
    }

    /// A chunk of `cur[consumed..upto]`, the lines up to the line limit. They are
    /// copied out rather than the rest moved: a megabyte of short lines makes
    /// hundreds of such chunks, and moving the rest each time would be quadratic.
    fn cut_lines(&mut self, upto: usize) -> Chunk {
        let len = upto - self.consumed;
        let mut buf = self.pool.take(len);
        buf[..len].copy_from_slice(&self.cur[self.consumed..upto]);
        self.consumed = upto;
        self.lines = 0;
        self.line_chunk(buf, len, Vec::new(), len as u64)
    }

    /// Moves what is left after [`Self::cut_lines`] to the front, once, before reading on.
    fn compact(&mut self) {
        let by = std::mem::take(&mut self.consumed);
        if by > 0 {
            self.cur.copy_within(by..self.filled, 0);
            self.filled -= by;
            self.scanned -= by;
            self.last_nl = self.last_nl.and_then(|n| n.checked_sub(by));
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
        self.lines = 0;
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
            tombstones: Vec::new(),
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
                self.lines = 0;
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
                    return Err(SourceError::read(&self.source, offset, e));
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
        // Lines left over from a cut at the line limit may fill the next chunk.
        if let Some(upto) = self.scan() {
            return Some(Ok(self.cut_lines(upto)));
        }
        loop {
            self.compact();
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
            if let Some(upto) = self.scan() {
                return Some(Ok(self.cut_lines(upto)));
            }
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
