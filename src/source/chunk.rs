//! A chunk: whole lines of a file, or records of a Kafka batch, with where they
//! came from, handed from the source to the parser threads.

use super::*;

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
    pub(super) buf: Vec<u8>,
    pub(super) len: usize,
    pub(super) records: Option<Vec<Record>>,
    /// Frames over the limit, by index in the chunk, with their real length: the
    /// chunk holds only their first [`OVERSIZED_HEAD`] bytes.
    pub(super) oversized: Vec<(u64, u64)>,
    /// Records with a null value (Kafka tombstones), by index in the chunk: they
    /// stand in it as empty values, and are rejected as what they are.
    pub(super) tombstones: Vec<u64>,
    /// Bytes of input the chunk stands for (more than its data if a frame was cut).
    pub(super) input_bytes: u64,
    /// What is kept of each record besides its value (see [`RecordFields`]).
    pub(super) keep: RecordFields,
    /// Kafka record keys when kept: one (start, end) in `key_buf` per record,
    /// [`NO_KEY`] for a record without one.
    pub(super) keys: Vec<(u32, u32)>,
    pub(super) key_buf: Vec<u8>,
    /// Kafka record timestamps (milliseconds) when kept: one per record.
    pub(super) timestamps: Vec<Option<i64>>,
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
            tombstones: Vec::new(),
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

    /// Appends one Kafka record: its value (`None`: null, a tombstone), and its key
    /// (`None`: it has none) and timestamp in milliseconds (`None`: not available)
    /// if the chunk keeps them.
    #[inline]
    pub fn push_kafka_record(
        &mut self,
        lane: u32,
        pos: u64,
        key: Option<&[u8]>,
        timestamp_ms: Option<i64>,
        payload: Option<&[u8]>,
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
        if payload.is_none() {
            self.tombstones.push(self.record_count() as u64);
        }
        self.push_record(lane, pos, payload.unwrap_or_default(), max_frame);
    }

    /// Whether record `index` had a null value (a Kafka tombstone).
    #[inline]
    pub fn tombstone(&self, index: usize) -> bool {
        !self.tombstones.is_empty() && self.tombstones.contains(&(index as u64))
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
