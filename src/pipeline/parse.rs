//! The parsing stage, on the worker threads: a chunk's frames into `(ts, key)`
//! pairs or the reason they cannot be counted. Pure: it sees bytes, not windows.

use std::any::Any;
use std::sync::mpsc::Receiver;

use parking_lot::Mutex;

use super::PipelineError;
use super::feed::Job;
use crate::counter::Counter;
use crate::parser::{self, FrameSpec, ParseError, TsFrom, UidFrom};
use crate::record::{self, RecordError};
use crate::source::Chunk;

/// Why a frame of a chunk could not be handed to the aggregator.
pub(super) enum Unparsed {
    Parse(ParseError),
    /// The record's key or timestamp cannot stand for the uid or the ts.
    Record(RecordError),
    /// Over the frame limit: its real length (the chunk holds its head).
    TooLarge(u64),
    /// A Kafka record with a null value, where its value was to be read.
    Tombstone,
    /// The parser failed on it (a bug): set aside so that the run goes on.
    Failed(String),
}

/// One parsed frame of a chunk.
pub(super) struct Entry<K> {
    pub start: u32,
    pub end: u32,
    pub lane: u32,
    pub pos: u64,
    pub parsed: Result<(i64, K), Unparsed>,
}

pub(super) struct ParsedChunk<K> {
    pub chunk: Chunk,
    pub entries: Vec<Entry<K>>,
}

/// Parses a chunk. A panic in the parser is a bug, but it must not take the run
/// down (under `run` that would be a crash loop on the same offset): the chunk is
/// parsed again frame by frame, and the frame that fails is set aside.
///
/// A frame over `max_frame` bytes is `too_large` whatever the source: the chunker
/// and the Kafka feeder cut the ones they see growing past it, but a line that
/// arrives whole within one read is only measured here.
pub(super) fn parse_chunk<C: Counter>(
    chunk: Chunk,
    spec: &FrameSpec,
    max_frame: usize,
) -> ParsedChunk<C::Key> {
    let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        parse_frames::<C>(&chunk, max_frame, |index, frame| {
            parse_one::<C>(&chunk, index, frame, spec)
        })
    }));
    let entries = match attempt {
        Ok(entries) => entries,
        Err(_) => parse_frames::<C>(&chunk, max_frame, |index, frame| {
            std::panic::catch_unwind(|| parse_one::<C>(&chunk, index, frame, spec)).unwrap_or_else(
                |panic| {
                    let what = panic_message(&*panic);
                    Err(Unparsed::Failed(format!("the parser failed: {what}")))
                },
            )
        }),
    };
    ParsedChunk { chunk, entries }
}

/// What a panic said, for a message.
pub(super) fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// A parser thread: parses the chunks it takes until the jobs end or the stage
/// stops listening. A panic outside [`parse_chunk`]'s own recovery is a bug too;
/// it becomes the run's error, naming the chunk, instead of a silent thread
/// whose missing answer the stage would wait for in vain.
pub(super) fn parse_jobs<K>(
    jobs: &Mutex<Receiver<Job<K>>>,
    parse: impl Fn(Chunk) -> ParsedChunk<K>,
) {
    loop {
        let job = jobs.lock().recv();
        let Ok((chunk, reply)) = job else { break };
        let at = format!("{} at byte {}", chunk.source, chunk.offset);
        let parsed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| parse(chunk)))
            .map_err(|panic| {
                PipelineError::Live(format!(
                    "a parser thread failed on the chunk of {at}: {} (a bug: please report it)",
                    panic_message(&*panic)
                ))
            });
        if reply.send(parsed).is_err() {
            break;
        }
    }
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
    // A null value is a compacted topic's delete marker, not an empty frame; it
    // stands for nothing only where the value is read.
    if chunk.tombstone(index)
        && (spec.uid_from(), spec.ts_from()) != (UidFrom::Key, TsFrom::RecordTimestamp)
    {
        return Err(Unparsed::Tombstone);
    }
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
    max_frame: usize,
    parse: impl Fn(usize, &[u8]) -> Result<(i64, C::Key), Unparsed>,
) -> Vec<Entry<C::Key>> {
    let mut entries = Vec::with_capacity(chunk.data().len() / 1024 + 1);
    let base = chunk.data().as_ptr() as usize;
    for (index, (lane, pos, frame)) in chunk.frames().enumerate() {
        // A UTF-8 byte order mark at the very start of a file or stdin is no part of
        // the first frame (Python's json accepts bytes that begin with one).
        let frame = match frame.strip_prefix(b"\xEF\xBB\xBF") {
            Some(rest) if index == 0 && chunk.offset == 0 && chunk.record_count() == 0 => rest,
            _ => frame,
        };
        let start = (frame.as_ptr() as usize - base) as u32;
        let parsed = match chunk.oversized(index as u64) {
            Some(len) => Err(Unparsed::TooLarge(len)),
            None if frame.len() > max_frame => Err(Unparsed::TooLarge(frame.len() as u64)),
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

/// Whether the first frame of an input looks like UTF-16, which every frame of it
/// is then rejected for: a byte order mark, or NUL in every other byte (ASCII in
/// UTF-16; a JSON frame never holds a NUL). Gives the encoding for `iconv -f` (it
/// reads a byte order mark itself) and what gave it away.
pub(super) fn utf16_sign(first: &[u8]) -> Option<(&'static str, &'static str)> {
    match first {
        [0xFF, 0xFE, ..] => return Some(("UTF-16", "byte order mark FF FE")),
        [0xFE, 0xFF, ..] => return Some(("UTF-16", "byte order mark FE FF")),
        _ => {}
    }
    let head = &first[..first.len().min(64) & !1];
    if head.len() < 4 {
        return None;
    }
    let pairs = || head.chunks_exact(2);
    if pairs().all(|p| p[0] != 0 && p[1] == 0) {
        Some(("UTF-16LE", "every other byte NUL"))
    } else if pairs().all(|p| p[0] == 0 && p[1] != 0) {
        Some(("UTF-16BE", "every other byte NUL"))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::utf16_sign;

    /// The encodings are made by the standard library's `encode_utf16`.
    #[test]
    fn utf16_is_told_by_its_byte_order_mark_or_its_nuls() {
        let frame = r#"{"uid":"a","ts":1468244340}"#;
        let le: Vec<u8> = frame.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let be: Vec<u8> = frame.encode_utf16().flat_map(u16::to_be_bytes).collect();
        let bom = |mark: [u8; 2], text: &[u8]| [&mark[..], text].concat();
        assert_eq!(
            utf16_sign(&bom([0xFF, 0xFE], &le)),
            Some(("UTF-16", "byte order mark FF FE"))
        );
        assert_eq!(
            utf16_sign(&bom([0xFE, 0xFF], &be)),
            Some(("UTF-16", "byte order mark FE FF"))
        );
        assert_eq!(utf16_sign(&le), Some(("UTF-16LE", "every other byte NUL")));
        assert_eq!(utf16_sign(&be), Some(("UTF-16BE", "every other byte NUL")));
        for utf8 in [frame, r#"{"uid":"ü","ts":1}"#, "", "{}", "\0"] {
            assert_eq!(utf16_sign(utf8.as_bytes()), None, "{utf8:?}");
        }
    }
}
