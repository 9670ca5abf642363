//! A frame outside the parser: where it came from ([`Position`]), and the frame kept
//! whole ([`HeldFrame`]) while its fate waits on later frames.
//!
//! The outlier guard holds a frame until later ones vote on its timestamp, and
//! alignment makes a frame wait for slower partitions. Until then the frame is
//! neither counted nor committed, so it travels with everything needed to count it
//! after a restart (its raw bytes, and the record key that may be its uid) or to
//! write it to the rejects (its position too). Checkpoints store it in
//! `checkpoint::HeldRaw`, their own stable layout.

use std::fmt;
use std::sync::Arc;

/// Where a frame came from: a line of a file, or an offset in a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    Line {
        source: Arc<str>,
        line: u64,
    },
    Offset {
        topic: Arc<str>,
        partition: u32,
        offset: u64,
    },
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Line { source, line } => write!(f, "{source}:{line}"),
            Position::Offset {
                topic,
                partition,
                offset,
            } => write!(f, "{topic}[{partition}]@{offset}"),
        }
    }
}

/// A frame that is neither counted nor rejected yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldFrame {
    pub position: Position,
    /// The Kafka record's key, when the run keeps it: the uid under `--uid-from
    /// key`, and the dead-letter record's key.
    pub key: Option<Box<[u8]>>,
    pub raw: Box<[u8]>,
}

impl crate::watermark::Weigh for HeldFrame {
    fn weight(&self) -> usize {
        self.raw.len() + self.key.as_ref().map_or(0, |k| k.len())
    }
}
