//! What goes on the partials topic, `GROUP.partials` (one partition, compacted, in
//! postcard). Three kinds of record, told apart by their keys:
//! - `win/WINDOW/START/INSTANCE/SEQ`: users an instance added to a window since its
//!   previous record of that window (the whole counter for an HLL sketch), and the
//!   instance's frames in it so far. Unions do not mind overlap, so these are
//!   change sets that the merger folds in: what a checkpoint writes grows with what
//!   changed, not with the state.
//! - `lane/PARTITION`: where the partition's owner has got to (its next offset and
//!   the frames it read but has not counted yet), how far its windows are final,
//!   and whether it has let the partition go. A partition that moves resumes from
//!   the latest of these, with no frame replayed and none counted twice.
//! - `pub/WINDOW/START`: what the merger last published for a window, so that a
//!   merger that takes over carries on with the next version.
//!
//! An instance writes a checkpoint's window records before its lane records, on the
//! one partition, so whoever reads a lane record has read what it covers.

use serde::{Deserialize, Serialize};

use crate::counter::CounterState;
use crate::window::Granularity;

/// A partition's progress, from its owner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LaneRecord {
    pub instance: String,
    /// The owner's wall clock (unix ms) when it wrote this: an owner that has said
    /// nothing for a session timeout has lost the partition.
    pub at_ms: u64,
    /// The next offset to read; `None` if the owner read nothing of it.
    pub next: Option<i64>,
    /// Frames before `next` not counted yet (held by the outlier guard, or waiting
    /// for alignment): the next owner counts them.
    pub held: Vec<HeldRecord>,
    /// The partition's own watermark: other instances hold their windows open for it.
    pub watermark: Option<i64>,
    /// Every window ending at or before this is final for this partition.
    pub closed_through: Option<i64>,
    /// Silent for the idle timeout: it holds no window back.
    pub idle: bool,
    /// How long it had been silent (ms): the next owner's idle clock goes on from
    /// there, so a partition that keeps moving still goes idle.
    pub quiet_ms: u64,
    /// A backfill read it to its end offset: it holds no window back.
    pub ended: bool,
    /// Its owner has let it go (rebalance, shutdown): the next owner may start.
    pub released: bool,
}

/// A frame that travels with a partition, uncounted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldRecord {
    pub offset: u64,
    pub key: Option<Vec<u8>>,
    pub raw: Vec<u8>,
}

/// What an instance added to a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowRecord {
    pub instance: String,
    pub granularity: Granularity,
    pub start: i64,
    pub end: i64,
    /// The instance's frames in the window so far (all its partitions).
    pub frames: u64,
    /// Users added since the instance's previous record of this window (`None`:
    /// none, only frames of users it had).
    pub counter: Option<CounterState>,
}

/// What the merger last published for a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    pub version: u32,
    pub users: u64,
    pub frames: u64,
}

/// A record of the partials topic, decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    Lane(i32, Option<LaneRecord>),
    Window {
        granularity: Granularity,
        start: i64,
        record: Option<WindowRecord>,
    },
    Published {
        granularity: Granularity,
        start: i64,
        published: Option<Published>,
    },
}

pub fn lane_key(partition: i32) -> String {
    format!("lane/{partition}")
}

pub fn window_key(r: &WindowRecord, seq: u64) -> String {
    format!(
        "win/{}/{}/{}/{seq}",
        r.granularity.name(),
        r.start,
        r.instance
    )
}

pub fn published_key(granularity: Granularity, start: i64) -> String {
    format!("pub/{}/{start}", granularity.name())
}

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("a partials record always serializes")
}

/// Decodes a record; `value` is `None` for a tombstone.
pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<Entry, String> {
    let key = std::str::from_utf8(key).map_err(|_| "a key that is not UTF-8".to_string())?;
    let mut parts = key.split('/');
    let bad = || format!("an unknown key {key:?}");
    let kind = parts.next().ok_or_else(bad)?;
    let value_of = |v: &[u8]| format!("a bad value under {key:?}: {}", v.len());
    match kind {
        "lane" => {
            let p = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
            let record = match value {
                Some(v) => Some(postcard::from_bytes(v).map_err(|_| value_of(v))?),
                None => None,
            };
            Ok(Entry::Lane(p, record))
        }
        "win" | "pub" => {
            let granularity: Granularity =
                (parts.next().and_then(|g| g.parse().ok())).ok_or_else(bad)?;
            let start: i64 = parts.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
            if kind == "win" {
                let record = match value {
                    Some(v) => Some(postcard::from_bytes(v).map_err(|_| value_of(v))?),
                    None => None,
                };
                Ok(Entry::Window {
                    granularity,
                    start,
                    record,
                })
            } else {
                let published = match value {
                    Some(v) => Some(postcard::from_bytes(v).map_err(|_| value_of(v))?),
                    None => None,
                };
                Ok(Entry::Published {
                    granularity,
                    start,
                    published,
                })
            }
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_record_reads_back_under_its_key() {
        let w = WindowRecord {
            instance: "host-1-2".into(),
            granularity: Granularity::Hour,
            start: 3600,
            end: 7200,
            frames: 7,
            counter: Some(CounterState::Exact(vec![1, 2, 3])),
        };
        let key = window_key(&w, 4);
        assert_eq!(key, "win/hour/3600/host-1-2/4");
        assert_eq!(
            decode(key.as_bytes(), Some(&encode(&w))).unwrap(),
            Entry::Window {
                granularity: Granularity::Hour,
                start: 3600,
                record: Some(w)
            }
        );
        let lane = LaneRecord {
            instance: "a".into(),
            at_ms: 5,
            next: Some(10),
            held: vec![HeldRecord {
                offset: 8,
                key: None,
                raw: b"{}".to_vec(),
            }],
            watermark: Some(50),
            closed_through: Some(60),
            idle: false,
            quiet_ms: 0,
            ended: false,
            released: true,
        };
        assert_eq!(
            decode(lane_key(3).as_bytes(), Some(&encode(&lane))).unwrap(),
            Entry::Lane(3, Some(lane))
        );
        assert_eq!(
            decode(published_key(Granularity::Minute, 60).as_bytes(), None).unwrap(),
            Entry::Published {
                granularity: Granularity::Minute,
                start: 60,
                published: None
            }
        );
        assert!(decode(b"other/1", None).is_err());
    }
}
