//! The merge step: one process of the group (the one the consumer group
//! `GROUP.merge` gives the partials topic's only partition) reads every instance's
//! window change sets and lane records, unions each window's users, sums its
//! frames over the instances, and publishes the window to the results topic once
//! every partition of the input is past it, as one instance would have: version 1,
//! then one more version per correction within `--grace`. What it published goes
//! back to the partials topic (`pub/…`), so a merger that takes over rebuilds from
//! the topic and carries on with the next version. The merge adds at most one
//! checkpoint interval to when a window is published, plus a poll.

use super::records::{self, Entry, LaneRecord, Published};
use super::*;
use crate::counter::Counter;
use crate::window::{Granularity, Span};

/// A window as merged so far.
struct Merging<C> {
    end: i64,
    counter: Option<C>,
    /// Each instance's frames in the window, the latest it said.
    frames: HashMap<String, u64>,
    /// The partials topic's records for it, removed once it expires.
    keys: Vec<String>,
    published: Option<Published>,
}

/// The merger's state: pure, fed records, asked what to publish.
pub struct Merge<C: Counter> {
    config: C::Config,
    grace: i64,
    keep_state: bool,
    windows: HashMap<(Granularity, i64), Merging<C>>,
    lanes: HashMap<i32, LaneRecord>,
    /// Every partition of the input topic.
    partitions: Vec<i32>,
}

/// What one evaluation decided.
#[derive(Default)]
pub struct Decided {
    /// Results to publish, with what to remember of each.
    pub results: Vec<(WindowResult, String, Published)>,
    /// Records of expired windows, to delete (tombstones).
    pub expired: Vec<String>,
}

impl<C: Counter> Merge<C> {
    pub fn new(config: C::Config, grace: i64, keep_state: bool, partitions: &[i32]) -> Merge<C> {
        Merge {
            config,
            grace,
            keep_state,
            windows: HashMap::new(),
            lanes: HashMap::new(),
            partitions: partitions.to_vec(),
        }
    }

    /// Folds in one record of the partials topic (`value` `None`: a tombstone).
    pub fn apply(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), String> {
        match records::decode(key, value)? {
            Entry::Lane(p, Some(r)) => {
                self.lanes.insert(p, r);
            }
            Entry::Lane(p, None) => {
                self.lanes.remove(&p);
            }
            Entry::Window {
                granularity,
                start,
                record: Some(r),
            } => {
                let id = (granularity, start);
                if !self.windows.contains_key(&id)
                    && self
                        .final_through()
                        .is_some_and(|c| r.end.saturating_add(self.grace) <= c)
                {
                    // A window already gone: nothing may reopen it. (Judged over
                    // every partition: the lanes heard so far may all have ended.)
                    return Ok(());
                }
                let w = self.windows.entry(id).or_insert_with(|| Merging {
                    end: r.end,
                    counter: None,
                    frames: HashMap::new(),
                    keys: Vec::new(),
                    published: None,
                });
                if let Some(state) = r.counter {
                    let added = C::load(state, &self.config)?;
                    let parts = w.counter.take().into_iter().chain([added]).collect();
                    // A counter that will not union is an error naming the record,
                    // never a window that silently loses its users.
                    w.counter = Some(C::union(parts).ok_or_else(|| {
                        format!("the {granularity} window at {start}: its counter does not union")
                    })?);
                }
                let f = w.frames.entry(r.instance).or_default();
                *f = (*f).max(r.frames);
                w.keys.push(String::from_utf8_lossy(key).into_owned());
            }
            Entry::Window { record: None, .. } => {}
            Entry::Published {
                granularity,
                start,
                published,
            } => match published {
                Some(p) => {
                    if let Some(w) = self.windows.get_mut(&(granularity, start)) {
                        w.published = Some(p);
                    }
                }
                None => {
                    self.windows.remove(&(granularity, start));
                }
            },
        }
        Ok(())
    }

    /// Every window ending at or before this is final for every partition: one
    /// read to its end holds nothing back, and one that no instance has spoken for
    /// holds everything back. An idle one holds back as far as its owner had
    /// closed: the frames that move the others may have come with a burst of its
    /// own that its owner has yet to read, and its owner passes it only once it
    /// has stayed silent since (`aggregator::SETTLE_MS`). When every partition is
    /// idle, the most advanced owner speaks for all.
    pub fn final_through(&self) -> Option<i64> {
        let all = &self.partitions;
        // The least closed of all partitions not ended; `None` inside: unknown.
        let mut least: Option<Option<i64>> = None;
        let mut any_active = false;
        let mut quiet: Option<i64> = None;
        let mut all_ended = true;
        for p in all {
            let r = self.lanes.get(p)?;
            if r.ended {
                continue;
            }
            all_ended = false;
            any_active |= !r.idle;
            if r.idle {
                quiet = quiet.max(r.closed_through);
            }
            least = Some(least.map_or(r.closed_through, |l| l.min(r.closed_through)));
        }
        if all.is_empty() {
            None
        } else if any_active {
            least.flatten()
        } else if all_ended {
            Some(i64::MAX)
        } else {
            quiet
        }
    }

    /// Partitions of `partitions` no instance has written a lane record for.
    pub fn unheard(&self) -> Vec<i32> {
        (self.partitions.iter())
            .filter(|p| !self.lanes.contains_key(p))
            .copied()
            .collect()
    }

    /// Every partition of the input read to its end (a backfill).
    pub fn all_ended(&self) -> bool {
        (self.partitions.iter()).all(|p| self.lanes.get(p).is_some_and(|r| r.ended))
    }

    /// Windows not published as they stand.
    pub fn unpublished(&self) -> usize {
        (self.windows.values())
            .filter(|w| w.published.map(|p| (p.users, p.frames)) != Some(figures(w)))
            .count()
    }

    /// What to publish now, and what has expired; remembers both as done.
    pub fn decide(&mut self) -> Decided {
        let mut decided = Decided::default();
        let Some(through) = self.final_through() else {
            return decided;
        };
        let mut ready: Vec<(i64, Granularity, i64)> = (self.windows.iter())
            .filter(|(_, w)| w.end <= through)
            .map(|((g, s), w)| (w.end, *g, *s))
            .collect();
        ready.sort();
        for (end, granularity, start) in ready {
            let w = self
                .windows
                .get_mut(&(granularity, start))
                .expect("ready window");
            let (users, frames) = figures(w);
            if w.published.map(|p| (p.users, p.frames)) != Some((users, frames)) {
                let version = w.published.map_or(1, |p| p.version.saturating_add(1));
                let published = Published {
                    version,
                    users,
                    frames,
                };
                w.published = Some(published);
                let result = WindowResult {
                    granularity,
                    span: Span { start, end },
                    unique_users: users,
                    frames,
                    version,
                    is_final: true,
                    rse: w.counter.as_ref().and_then(C::rse),
                    state: (self.keep_state)
                        .then(|| w.counter.as_ref().map(C::save))
                        .flatten(),
                };
                decided.results.push((
                    result,
                    records::published_key(granularity, start),
                    published,
                ));
            }
            if end.saturating_add(self.grace) <= through {
                let w = self
                    .windows
                    .remove(&(granularity, start))
                    .expect("ready window");
                decided.expired.extend(w.keys);
                decided
                    .expired
                    .push(records::published_key(granularity, start));
            }
        }
        decided
    }
}

fn figures<C: Counter>(w: &Merging<C>) -> (u64, u64) {
    (
        w.counter.as_ref().map_or(0, C::count),
        // Saturating: the figures come from records another process wrote.
        (w.frames.values()).fold(0u64, |a, f| a.saturating_add(*f)),
    )
}

/// What the merger thread needs.
pub struct MergerSettings {
    pub kafka: KafkaOptions,
    pub partials: String,
    pub group: String,
    pub partitions: Vec<i32>,
    pub results: ResultsTopic,
    pub producer: Arc<ThreadedProducer<DeliveryTracker>>,
    pub calendar: Calendar,
    pub grace: i64,
    pub keep_state: bool,
    pub until_end: bool,
    /// Set when the process stops (a signal), or when it no longer needs a merger.
    pub stop: Arc<AtomicBool>,
}

/// The merger thread, and whether the group has made it the merger.
pub struct MergerHandle {
    pub thread: std::thread::JoinHandle<Result<MergeReport, String>>,
    pub active: Arc<AtomicBool>,
    pub stop: Arc<AtomicBool>,
}

#[derive(Debug, Default, Clone)]
pub struct MergeReport {
    pub published: u64,
    pub records_read: u64,
    pub bytes_read: u64,
    pub rebuilds: u64,
    /// Time spent folding records into windows, and deciding and publishing them:
    /// where the merge's cost sits (the rest is waiting for records).
    pub applying: Duration,
    pub publishing: Duration,
}

impl MergeReport {
    pub fn summary(&self) -> String {
        format!(
            "merge: {} records ({} bytes) read in {} rebuilds, {:.2} s applying them, \
             {:.2} s deciding and publishing {} windows",
            self.records_read,
            self.bytes_read,
            self.rebuilds,
            self.applying.as_secs_f64(),
            self.publishing.as_secs_f64(),
            self.published
        )
    }
}

struct MergeContext {
    active: Arc<AtomicBool>,
    generation: AtomicU64,
    topic: String,
}

impl ClientContext for MergeContext {}

impl ConsumerContext for MergeContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                // Rebuilt from the start of the topic: its state is in the records.
                let parts: Vec<i32> = (tpl.elements_for_topic(&self.topic).iter())
                    .map(|e| e.partition())
                    .collect();
                for p in &parts {
                    let _ = tpl.set_partition_offset(&self.topic, *p, Offset::Beginning);
                }
                if let Err(e) = consumer.assign(tpl) {
                    tracing::error!(event = "assign_failed", client = "merger", error = %e);
                }
                self.active.store(!parts.is_empty(), Ordering::SeqCst);
                if !parts.is_empty() {
                    tracing::info!(event = "merger_active", topic = %self.topic);
                }
            }
            _ => {
                self.active.store(false, Ordering::SeqCst);
                let _ = consumer.unassign();
            }
        }
    }
}

/// Starts the merger thread for counter `C`.
pub fn spawn<C: Counter>(
    s: MergerSettings,
    config: C::Config,
) -> Result<MergerHandle, PipelineError> {
    let active = Arc::new(AtomicBool::new(false));
    let ctx = MergeContext {
        active: active.clone(),
        generation: AtomicU64::new(0),
        topic: s.partials.clone(),
    };
    let mut cfg = s.kafka.config(CONSUMER_DEFAULTS);
    cfg.set("group.id", &s.group);
    let consumer: BaseConsumer<MergeContext> = cfg.create_with_context(ctx).map_err(|e| {
        s.kafka
            .settings_error("merger consumer", CONSUMER_DEFAULTS, e)
    })?;
    consumer
        .subscribe(&[&s.partials])
        .map_err(|e| live(format!("cannot subscribe to {}: {e}", s.partials)))?;
    let stop = s.stop.clone();
    let thread = std::thread::Builder::new()
        .name("merger".into())
        .spawn(move || merge_loop::<C>(consumer, s, config))
        .map_err(|e| live(format!("cannot start the merger thread: {e}")))?;
    Ok(MergerHandle {
        thread,
        active,
        stop,
    })
}

fn merge_loop<C: Counter>(
    consumer: BaseConsumer<MergeContext>,
    s: MergerSettings,
    config: C::Config,
) -> Result<MergeReport, String> {
    let mut report = MergeReport::default();
    let mut merge = Merge::<C>::new(config.clone(), s.grace, s.keep_state, &s.partitions);
    let mut seen = u64::MAX;
    let mut last = Instant::now();
    let mut bad_records = 0u64;
    // Partitions no instance has spoken for hold every window back: said once.
    let mut unheard_since: Option<Instant> = None;
    let mut said_unheard = false;
    while !s.stop.load(Ordering::Relaxed) {
        let generation = consumer.context().generation.load(Ordering::SeqCst);
        if generation != seen {
            seen = generation;
            merge = Merge::new(config.clone(), s.grace, s.keep_state, &s.partitions);
            report.rebuilds += 1;
        }
        let caught_up = match consumer.poll(Duration::from_millis(50)) {
            Some(Ok(m)) => {
                report.records_read += 1;
                report.bytes_read += (m.key_len() + m.payload_len()) as u64;
                let applying = Instant::now();
                let applied = merge.apply(m.key().unwrap_or_default(), m.payload());
                report.applying += applying.elapsed();
                if let Err(e) = applied {
                    bad_records += 1;
                    if bad_records == 1 {
                        tracing::warn!(event = "partials_record_unreadable", topic = %s.partials, offset = m.offset(), error = %e);
                    }
                }
                false
            }
            Some(Err(KafkaError::PartitionEOF(_))) | None => true,
            Some(Err(e)) => {
                tracing::warn!(event = "merger_consume_error", topic = %s.partials, error = %e);
                true
            }
        };
        let active = consumer.context().active.load(Ordering::SeqCst);
        if active && (caught_up || last.elapsed() >= Duration::from_millis(500)) {
            last = Instant::now();
            let unheard = merge.unheard();
            if unheard.is_empty() {
                unheard_since = None;
            } else if unheard_since.get_or_insert_with(Instant::now).elapsed()
                >= Duration::from_secs(30)
                && !said_unheard
            {
                said_unheard = true;
                tracing::warn!(
                    event = "partitions_unheard",
                    partitions = ?unheard,
                    topic = %s.partials,
                    "no instance has checkpointed these partitions for 30 s, and no window \
                     is published until one does: is a member of the group running \
                     without --scale-out, or is none running?"
                );
            }
            let publishing = Instant::now();
            let decided = merge.decide();
            publish(&s, decided, &mut report)?;
            report.publishing += publishing.elapsed();
            if s.until_end && caught_up && merge.all_ended() && merge.unpublished() == 0 {
                tracing::info!(event = "merge_complete", published = report.published);
                break;
            }
        }
    }
    Ok(report)
}

fn publish(s: &MergerSettings, decided: Decided, report: &mut MergeReport) -> Result<(), String> {
    if decided.results.is_empty() && decided.expired.is_empty() {
        return Ok(());
    }
    let mut results = s.results.clone();
    let windows: Vec<WindowResult> = decided.results.iter().map(|r| r.0.clone()).collect();
    results
        .write(&windows, &s.calendar)
        .map_err(|e| e.to_string())?;
    // Results first: a mark must never claim what the results topic has not got.
    results.acknowledge()?;
    report.published += windows.len() as u64;
    for (_, key, published) in &decided.results {
        send_with_backpressure(
            &s.producer,
            BaseRecord::to(&s.partials)
                .key(key.as_bytes())
                .payload(&records::encode(published)),
        )?;
    }
    for key in &decided.expired {
        send_with_backpressure(
            &s.producer,
            BaseRecord::<[u8], [u8]>::to(&s.partials).key(key.as_bytes()),
        )?;
    }
    acknowledged(
        &s.producer,
        s.results.timeout,
        &format!("marks to {}", s.partials),
    )?;
    tracing::debug!(
        event = "merged_published",
        windows = windows.len(),
        expired = decided.expired.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counter::{CounterState, Exact};
    use records::{WindowRecord, encode, lane_key, window_key};

    fn lane(instance: &str, through: Option<i64>, ended: bool) -> Vec<u8> {
        lane_record(instance, through, ended, false)
    }

    fn idle_lane(instance: &str, through: Option<i64>) -> Vec<u8> {
        lane_record(instance, through, false, true)
    }

    fn lane_record(instance: &str, through: Option<i64>, ended: bool, idle: bool) -> Vec<u8> {
        encode(&LaneRecord {
            instance: instance.into(),
            at_ms: 0,
            next: Some(1),
            held: Vec::new(),
            watermark: through,
            closed_through: through,
            idle,
            quiet_ms: 0,
            ended,
            released: false,
        })
    }

    fn window(m: &mut Merge<Exact>, instance: &str, seq: u64, users: &[u64], frames: u64) {
        minute(m, instance, seq, 0, users, frames);
    }

    /// A change set of the minute starting at `start`.
    fn minute(
        m: &mut Merge<Exact>,
        instance: &str,
        seq: u64,
        start: i64,
        users: &[u64],
        frames: u64,
    ) {
        let r = WindowRecord {
            instance: instance.into(),
            granularity: Granularity::Minute,
            start,
            end: start + 60,
            frames,
            counter: Some(CounterState::Exact(users.to_vec())),
        };
        m.apply(window_key(&r, seq).as_bytes(), Some(&encode(&r)))
            .unwrap();
    }

    #[test]
    fn frame_counts_from_records_saturate_instead_of_overflowing() {
        // Issue 18, item 14: frames from GROUP.partials records were added without
        // an overflow check (a panic in a debug build, a wrap in a release one).
        let mut m = Merge::<Exact>::new((), 0, false, &[0, 1]);
        window(&mut m, "a", 1, &[1], u64::MAX);
        window(&mut m, "b", 1, &[2], 5);
        m.apply(lane_key(0).as_bytes(), Some(&lane("a", Some(61), false)))
            .unwrap();
        m.apply(lane_key(1).as_bytes(), Some(&lane("b", Some(61), false)))
            .unwrap();
        let d = m.decide();
        assert_eq!(d.results[0].0.frames, u64::MAX);
        assert_eq!(d.results[0].0.unique_users, 2);
    }

    #[test]
    fn a_window_is_published_once_every_partition_is_past_it_then_corrected() {
        let mut m = Merge::<Exact>::new((), 30, false, &[0, 1]);
        // Instance a holds partition 0, b partition 1; their users overlap.
        window(&mut m, "a", 1, &[1, 2, 3], 4);
        window(&mut m, "b", 1, &[3, 4], 2);
        m.apply(lane_key(0).as_bytes(), Some(&lane("a", Some(60), false)))
            .unwrap();
        assert!(m.decide().results.is_empty(), "partition 1 unheard");
        m.apply(lane_key(1).as_bytes(), Some(&lane("b", Some(59), false)))
            .unwrap();
        assert!(m.decide().results.is_empty(), "partition 1 not past");
        m.apply(lane_key(1).as_bytes(), Some(&lane("b", Some(61), false)))
            .unwrap();
        let d = m.decide();
        assert_eq!(d.results.len(), 1);
        let r = &d.results[0].0;
        assert_eq!((r.unique_users, r.frames, r.version), (4, 6, 1));
        assert!(d.expired.is_empty(), "within grace");
        assert!(m.decide().results.is_empty(), "published once");
        // A late frame on b within grace: a new user, its frames said again whole.
        window(&mut m, "b", 2, &[5], 3);
        let d = m.decide();
        let r = &d.results[0].0;
        assert_eq!((r.unique_users, r.frames, r.version), (5, 7, 2));
        // Past the grace, the window expires: its records are deleted, and a
        // straggler cannot reopen it.
        m.apply(lane_key(0).as_bytes(), Some(&lane("a", Some(90), false)))
            .unwrap();
        m.apply(lane_key(1).as_bytes(), Some(&lane("b", None, true)))
            .unwrap();
        let d = m.decide();
        assert!(d.results.is_empty());
        assert_eq!(d.expired.len(), 4, "three window records and the mark");
        window(&mut m, "c", 1, &[9], 1);
        assert!(m.decide().results.is_empty());
    }

    #[test]
    fn a_change_set_read_after_other_partitions_ended_still_counts() {
        // Partition 0 is read to its end first; partition 1's owner has not spoken
        // yet, so no window is gone, and its change sets must count.
        let mut m = Merge::<Exact>::new((), 0, false, &[0, 1]);
        m.apply(lane_key(0).as_bytes(), Some(&lane("a", None, true)))
            .unwrap();
        window(&mut m, "b", 1, &[1, 2], 2);
        m.apply(lane_key(1).as_bytes(), Some(&lane("b", Some(60), false)))
            .unwrap();
        let d = m.decide();
        assert_eq!(d.results.len(), 1);
        assert_eq!((d.results[0].0.unique_users, d.results[0].0.frames), (2, 2));
    }

    #[test]
    fn an_idle_partition_holds_back_as_far_as_its_owner_closed_until_all_are_idle() {
        let mut m = Merge::<Exact>::new((), 0, false, &[0, 1]);
        window(&mut m, "a", 1, &[1], 1);
        m.apply(lane_key(0).as_bytes(), Some(&lane("a", Some(30), false)))
            .unwrap();
        m.apply(lane_key(1).as_bytes(), Some(&idle_lane("b", Some(30))))
            .unwrap();
        // A burst moves partition 0 past the window; partition 1's share of it may
        // not be read yet, though its last record said idle.
        m.apply(lane_key(0).as_bytes(), Some(&lane("a", Some(120), false)))
            .unwrap();
        assert!(m.decide().results.is_empty(), "b has not closed the window");
        window(&mut m, "b", 1, &[2], 1);
        m.apply(lane_key(1).as_bytes(), Some(&lane("b", Some(120), false)))
            .unwrap();
        let d = m.decide();
        assert_eq!((d.results[0].0.unique_users, d.results[0].0.frames), (2, 2));
        // Every partition idle: the most advanced owner speaks for all.
        minute(&mut m, "a", 2, 120, &[3], 1);
        m.apply(lane_key(0).as_bytes(), Some(&idle_lane("a", Some(200))))
            .unwrap();
        assert!(m.decide().results.is_empty(), "b active at 120");
        m.apply(lane_key(1).as_bytes(), Some(&idle_lane("b", Some(130))))
            .unwrap();
        assert_eq!(m.decide().results.len(), 1);
    }

    #[test]
    fn a_merger_that_takes_over_carries_on_from_what_was_published() {
        let mut m = Merge::<Exact>::new((), 0, false, &[0]);
        window(&mut m, "a", 1, &[1, 2], 2);
        let mark = Published {
            version: 3,
            users: 2,
            frames: 2,
        };
        m.apply(
            records::published_key(Granularity::Minute, 0).as_bytes(),
            Some(&encode(&mark)),
        )
        .unwrap();
        m.apply(lane_key(0).as_bytes(), Some(&lane("a", Some(30), false)))
            .unwrap();
        window(&mut m, "a", 2, &[7], 3);
        m.apply(lane_key(0).as_bytes(), Some(&lane("a", Some(60), false)))
            .unwrap();
        let d = m.decide();
        let r = &d.results[0].0;
        assert_eq!((r.unique_users, r.frames, r.version), (3, 3, 4));
    }
}
