//! The instance's side of scale-out: what the group's callbacks, the feeder and
//! the commit owner share ([`ScaleState`]), and the checkpoint that goes to the
//! partials topic instead of results ([`Publisher`]): the windows' change sets
//! first, then a lane record per partition held, on one partition in that order.

use std::collections::{BTreeMap, HashSet};

use super::handover::{Handovers, Resume, resume};
use super::records::{self, HeldRecord, LaneRecord, WindowRecord};
use super::*;
use crate::counter::CounterState;
use crate::frame::HeldFrame;
use crate::window::Granularity;

/// Hashes per window record: an exact change set is cut into records of at most
/// about 500 KB, under every broker's default message size.
const HASHES_PER_RECORD: usize = 50_000;
/// A lane record carries its uncounted frames up to this many bytes (a broker
/// refuses records over 1 MB by default).
const HELD_BYTES_PER_RECORD: usize = 512 * 1024;

/// What the consumer's callbacks, the feeder and the commit owner share.
pub struct ScaleState {
    pub instance: String,
    pub handovers: Mutex<Handovers>,
    /// Partitions held now, with the offset each started at here.
    pub owned: Mutex<BTreeMap<i32, Option<i64>>>,
    /// Where each partition ever held here started (a partition that was read
    /// nothing of here is handed over from there).
    pub starts: Mutex<HashMap<i32, Option<i64>>>,
    /// Taken by a rebalance, not yet released (their frames may still be on the way).
    pub releasing: Mutex<HashSet<i32>>,
    /// Taken by a rebalance: the feeder hands the pipeline what it read of them, then says so.
    pub revoked: Mutex<Vec<i32>>,
    /// Frames a handover brought, for the feeder to count first.
    pub refeed: Mutex<Vec<(i32, Vec<HeldRecord>)>>,
    /// How long an owner may say nothing about a partition before it is taken for dead.
    pub silence: Duration,
    pub shutdown: Arc<AtomicBool>,
}

impl ScaleState {
    /// Of `partitions`, those whose latest lane record does not say read to its end.
    pub fn not_ended(&self, partitions: impl Iterator<Item = i32>) -> Vec<i32> {
        let mut handovers = self.handovers.lock();
        if let Err(e) = handovers.catch_up() {
            tracing::warn!(event = "handover_read_failed", error = %e);
        }
        let mut going: Vec<i32> = partitions
            .filter(|p| !handovers.lane(*p).is_some_and(|r| r.ended))
            .collect();
        going.sort_unstable();
        going
    }

    /// Where each of `parts` resumes, waiting for the owners to let go (or for
    /// their silence to last `silence`). Called in the rebalance callback.
    pub fn resume_points(&self, parts: &[i32]) -> HashMap<i32, (Option<i64>, Vec<HeldRecord>)> {
        let started = Instant::now();
        let mut found = HashMap::new();
        let mut pending: Vec<i32> = parts.to_vec();
        let mut said = false;
        loop {
            let mut handovers = self.handovers.lock();
            if let Err(e) = handovers.catch_up() {
                tracing::warn!(event = "handover_read_failed", error = %e);
            }
            let releasing = self.releasing.lock().clone();
            let now = crate::checkpoint::unix_ms();
            let give_up = started.elapsed() >= self.silence + Duration::from_secs(5)
                || self.shutdown.load(Ordering::Relaxed);
            pending.retain(|p| {
                let record = handovers.lane(*p);
                match resume(record, &self.instance, releasing.contains(p), now, self.silence) {
                    Resume::Fresh => {
                        found.insert(*p, (None, Vec::new()));
                        false
                    }
                    Resume::At(next, held) => {
                        found.insert(*p, (next, held));
                        false
                    }
                    Resume::Wait if give_up => {
                        let r = record.expect("waiting on a record");
                        tracing::warn!(
                            event = "handover_timeout",
                            partition = p,
                            owner = %r.instance,
                            "the partition's last owner neither let it go nor fell silent; taking it from its last checkpoint"
                        );
                        found.insert(*p, (r.next, r.held.clone()));
                        false
                    }
                    Resume::Wait => true,
                }
            });
            drop(handovers);
            if pending.is_empty() {
                return found;
            }
            if !said {
                said = true;
                tracing::info!(event = "handover_wait", partitions = ?pending, "waiting for the partitions' last owners to let them go");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A results sink that keeps the windows an instance closes, counter and all, for
/// the next checkpoint: under scale-out they are partial, never results.
#[derive(Clone, Default)]
pub struct ClosedWindows(pub Arc<Mutex<Vec<WindowResult>>>);

impl Results for ClosedWindows {
    fn write(&mut self, windows: &[WindowResult], _: &Calendar) -> Result<(), SinkError> {
        self.0.lock().extend_from_slice(windows);
        Ok(())
    }
}

/// Writes an instance's checkpoints to the partials topic.
pub struct Publisher {
    pub state: Arc<ScaleState>,
    pub topic: Arc<str>,
    pub producer: Arc<ThreadedProducer<DeliveryTracker>>,
    pub closed: ClosedWindows,
    pub timeout: Duration,
    /// Every partition of the input topic.
    pub partitions: Vec<i32>,
    seq: u64,
    /// The frames last written per window, so that a window whose frames moved
    /// without a new user is written too.
    frames: HashMap<(Granularity, i64), u64>,
    /// Partitions read to their end (a backfill), as the pipeline learnt it.
    ended: HashSet<i32>,
    pub bytes: u64,
    pub records: u64,
    pub checkpoints: u64,
}

/// Why a checkpoint is written, which decides what its lane records say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    /// While counting: the partitions held stay held.
    Running,
    /// These partitions go (a rebalance took them).
    Release,
    /// The run stops: every partition held goes.
    Stop,
    /// A backfill read everything: every partition held is at its end.
    Complete,
}

impl Publisher {
    pub fn new(
        state: Arc<ScaleState>,
        topic: &str,
        producer: Arc<ThreadedProducer<DeliveryTracker>>,
        closed: ClosedWindows,
        timeout: Duration,
        partitions: Vec<i32>,
    ) -> Publisher {
        Publisher {
            state,
            topic: Arc::from(topic),
            producer,
            closed,
            timeout,
            partitions,
            seq: 0,
            frames: HashMap::new(),
            ended: HashSet::new(),
            bytes: 0,
            records: 0,
            checkpoints: 0,
        }
    }

    /// Tells the pipeline how far the partitions held elsewhere are, from their
    /// owners' latest lane records: a partition no one has spoken for yet holds
    /// everything back, an idle or finished one nothing.
    pub fn refresh_remote(&mut self, view: &mut dyn StateView) {
        let owned = self.state.owned.lock().clone();
        let mut handovers = self.state.handovers.lock();
        if let Err(e) = handovers.catch_up() {
            tracing::warn!(event = "handover_read_failed", error = %e);
            return;
        }
        let marks: Vec<(usize, Option<Option<i64>>)> = (self.partitions.iter())
            .filter(|p| !owned.contains_key(p))
            .map(|p| {
                let mark = match handovers.lane(*p) {
                    None => Some(None),
                    Some(r) if r.ended || r.idle => None,
                    Some(r) => Some(r.watermark),
                };
                (*p as usize, mark)
            })
            .collect();
        drop(handovers);
        view.set_remote(&marks);
    }

    /// Partitions just taken over: their idle clocks go on from their last owners'
    /// (those it found idle stay idle). Not the time no one read them: no one saw
    /// it silent then, and frames may be waiting.
    pub fn taken_over(&mut self, view: &mut dyn StateView, lanes: &[u32]) {
        let handovers = self.state.handovers.lock();
        let quiet: Vec<(usize, u64)> = (lanes.iter())
            .filter_map(|l| {
                let r = handovers.lane(*l as i32)?;
                Some((*l as usize, if r.idle { u64::MAX } else { r.quiet_ms }))
            })
            .collect();
        drop(handovers);
        view.resume_quiet(&quiet);
        self.refresh_remote(view);
    }

    pub fn lanes_done(&mut self, lanes: &[u32]) {
        self.ended.extend(lanes.iter().map(|l| *l as i32));
    }

    /// One checkpoint: window change sets, then lane records, all acknowledged.
    /// With `Release`, `release` are let go; they leave the pipeline's state here.
    pub fn publish(
        &mut self,
        view: &mut dyn StateView,
        moment: Moment,
        release: &[i32],
    ) -> Result<(), String> {
        let me = self.state.instance.clone();
        let mut out: Vec<(String, Vec<u8>)> = Vec::new();
        let closed = std::mem::take(&mut *self.closed.0.lock());
        for w in closed {
            self.window(
                &mut out,
                &me,
                w.granularity,
                w.span.start,
                w.span.end,
                w.frames,
                w.state,
            );
        }
        let snapshot = view.checkpoint(true);
        let open: HashSet<(Granularity, i64)> = snapshot
            .windows
            .iter()
            .map(|w| (w.granularity, w.start))
            .collect();
        for w in &snapshot.windows {
            let moved = self.frames.get(&(w.granularity, w.start)) != Some(&w.frames);
            if w.counter.is_some() || moved {
                let counter = w.counter.clone();
                self.window(
                    &mut out,
                    &me,
                    w.granularity,
                    w.start,
                    w.end,
                    w.frames,
                    counter,
                );
            }
        }
        self.frames.retain(|k, _| open.contains(k));
        let owned = self.state.owned.lock().clone();
        let starts = self.state.starts.lock().clone();
        let next: HashMap<i32, i64> = (view.next_positions().into_iter())
            .map(|(l, p)| (l as i32, p as i64))
            .collect();
        let idle: HashSet<i32> = view.idle_lanes().into_iter().map(|l| l as i32).collect();
        // How far this owner has emitted: past the watermark where a quiet spell or
        // the end of input emitted every open window, coarse ones included (the
        // merger waits for every owner to pass a window's end before publishing it).
        let closed_through = (view.final_through().into_iter())
            .map(|(_, t)| t)
            .max()
            .max(view.watermark());
        let now = crate::checkpoint::unix_ms();
        let mut lanes: Vec<(i32, bool)> = match moment {
            Moment::Release => release.iter().map(|p| (*p, true)).collect(),
            Moment::Stop => owned.keys().map(|p| (*p, true)).collect(),
            Moment::Running | Moment::Complete => owned.keys().map(|p| (*p, false)).collect(),
        };
        if moment == Moment::Release {
            lanes.extend(
                (owned.keys())
                    .filter(|p| !release.contains(p))
                    .map(|p| (*p, false)),
            );
        }
        // Before any is released (and the revoked ones are no longer in `owned`).
        let quiet: HashMap<i32, u64> = (lanes.iter())
            .map(|(p, _)| (*p, view.quiet_ms(*p as usize)))
            .collect();
        for (p, released) in lanes {
            let lane = snapshot.lanes.iter().find(|l| l.index == p as usize);
            let (held, waiting_empty) = if released {
                (view.release_lane(p as usize), true)
            } else {
                let held = lane.map_or_else(Vec::new, |l| {
                    let mut frames: Vec<HeldFrame> = (l.held.iter().map(|h| h.frame.frame.clone()))
                        .chain(l.waiting.iter().map(|w| w.1.frame.clone()))
                        .collect();
                    frames.sort_by_key(offset_of);
                    frames
                });
                (held, lane.is_none_or(|l| l.waiting.is_empty()))
            };
            let ended = moment == Moment::Complete || (self.ended.contains(&p) && waiting_empty);
            let start = starts.get(&p).copied().flatten();
            let mut next = next.get(&p).copied().max(start);
            let mut held: Vec<HeldRecord> = (held.into_iter())
                .map(|f| HeldRecord {
                    offset: offset_of(&f),
                    key: f.key.map(|k| k.to_vec()),
                    raw: f.raw.to_vec(),
                })
                .collect();
            if held.iter().map(|h| h.raw.len()).sum::<usize>() > HELD_BYTES_PER_RECORD {
                // Too many to carry: the next owner reads again from the first of
                // them (frames counted after it would be counted again, users not).
                if released {
                    tracing::warn!(
                        event = "handover_rewound",
                        partition = p,
                        frames = held.len()
                    );
                } else {
                    tracing::debug!(
                        event = "handover_rewound",
                        partition = p,
                        frames = held.len()
                    );
                }
                next = held.iter().map(|h| h.offset as i64).min().or(next);
                held.clear();
            }
            let record = LaneRecord {
                instance: me.clone(),
                at_ms: now,
                next,
                held,
                watermark: lane.and_then(|l| l.watermark.get()),
                closed_through: if ended {
                    Some(i64::MAX)
                } else {
                    closed_through
                },
                idle: idle.contains(&p),
                quiet_ms: quiet.get(&p).copied().unwrap_or(0),
                ended,
                released,
            };
            out.push((records::lane_key(p), records::encode(&record)));
        }
        for (key, value) in &out {
            self.bytes += (key.len() + value.len()) as u64;
            send_with_backpressure(
                &self.producer,
                BaseRecord::to(&self.topic)
                    .key(key.as_bytes())
                    .payload(value),
            )?;
        }
        self.records += out.len() as u64;
        self.checkpoints += 1;
        acknowledged(
            &self.producer,
            self.timeout,
            &format!("partials to {}", self.topic),
        )?;
        if !release.is_empty() || moment == Moment::Stop {
            let mut releasing = self.state.releasing.lock();
            match moment {
                Moment::Stop => releasing.clear(),
                _ => releasing.retain(|p| !release.contains(p)),
            }
            let gone: Vec<i32> = match moment {
                Moment::Stop => owned.keys().copied().collect(),
                _ => release.to_vec(),
            };
            tracing::info!(event = "partitions_released", partitions = ?gone, moment = ?moment);
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn window(
        &mut self,
        out: &mut Vec<(String, Vec<u8>)>,
        me: &str,
        granularity: Granularity,
        start: i64,
        end: i64,
        frames: u64,
        counter: Option<CounterState>,
    ) {
        self.frames.insert((granularity, start), frames);
        let pieces: Vec<Option<CounterState>> = match counter {
            Some(CounterState::Exact(hashes)) if hashes.len() > HASHES_PER_RECORD => hashes
                .chunks(HASHES_PER_RECORD)
                .map(|c| Some(CounterState::Exact(c.to_vec())))
                .collect(),
            other => vec![other],
        };
        for counter in pieces {
            self.seq += 1;
            let record = WindowRecord {
                instance: me.to_string(),
                granularity,
                start,
                end,
                frames,
                counter,
            };
            out.push((
                records::window_key(&record, self.seq),
                records::encode(&record),
            ));
        }
    }

    pub fn summary(&self) -> String {
        format!(
            "partials: {} checkpoints, {} records, {} bytes to {}",
            self.checkpoints, self.records, self.bytes, self.topic
        )
    }
}

fn offset_of(f: &HeldFrame) -> u64 {
    match f.position {
        crate::frame::Position::Offset { offset, .. } => offset,
        crate::frame::Position::Line { line, .. } => line,
    }
}
