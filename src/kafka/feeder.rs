//! The feeder thread: polls, batches messages into chunks, forwards assignments,
//! pauses partitions for watermark alignment, and decides when a backfill is done.

use super::*;

/// Where a bounded run ends: `(low, high)` per partition as of start, or a target
/// filled in later.
pub(super) struct EndOffsets {
    pub(super) at_start: Option<HashMap<i32, (i64, i64)>>,
    pub(super) target: Option<SharedOffsets>,
}

impl EndOffsets {
    pub(super) fn get(&self) -> Option<HashMap<i32, (i64, i64)>> {
        if let Some(e) = &self.at_start {
            return Some(e.clone());
        }
        let target = self.target.as_ref()?.lock().clone()?;
        Some(target.into_iter().map(|(p, high)| (p, (0, high))).collect())
    }
}

pub(super) fn unix_now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// What the feeder needs besides its consumer and the pipeline.
pub(super) struct FeederSettings {
    pub(super) end_offsets: EndOffsets,
    /// Counts the frames handed on, for a producer that paces itself on them.
    pub(super) fed: Option<Arc<AtomicU64>>,
    pub(super) max_frame: usize,
    /// What to keep of each record besides its value: its key for the dead-letter
    /// topic or as the uid, its timestamp as the ts.
    pub(super) keep: RecordFields,
    pub(super) stall: Stall,
    pub(super) shared: Shared,
}

/// The feeder thread: polls, batches messages into chunks, forwards assignments
/// and wall-clock ticks, and decides when a bounded run is complete.
pub(super) fn feed_from_kafka(
    consumer: &BaseConsumer<RunContext>,
    topic: Arc<str>,
    settings: FeederSettings,
    shutdown: &AtomicBool,
    feed: Feed,
) {
    let FeederSettings {
        end_offsets,
        fed,
        max_frame,
        keep,
        mut stall,
        mut shared,
    } = settings;
    const MAX_BATCH_WAIT: Duration = Duration::from_millis(20);
    const TICK: Duration = Duration::from_millis(100);
    let started = Instant::now();
    let now_ms = || started.elapsed().as_millis() as u64;
    let mut chunk = Chunk::records(topic.clone(), feed.pool().take(0)).keeping(keep);
    let mut batch_started = Instant::now();
    let mut last_tick = Instant::now();
    // Where each partition resumes, if a checkpoint said so, so that what is left to
    // read (the progress line, a partition restored at its end) counts from there.
    let mut positions: HashMap<i32, i64> = (consumer.context().positions.lock()).clone();
    let mut last_progress = Instant::now();
    let mut read = 0u64;
    let mut read_at_last_progress = 0u64;
    let mut finished: std::collections::HashSet<i32> = std::collections::HashSet::new();
    // Partitions the client said are at their end (`--until-end` asks it to): at or
    // past the end offsets taken at start, since the high watermark only grows.
    let mut at_eof: std::collections::HashSet<i32> = std::collections::HashSet::new();
    let mut ends_now = None;
    let mut others = OthersEnded::default();
    let mut paused_version = 0;
    let mut paused_now: Vec<i32> = Vec::new();
    // Per paused partition, the first offset set aside after the pause.
    let mut paused_from: HashMap<i32, i64> = HashMap::new();
    // A backfill reads the past: only a live run may trust frames for being recent.
    let trust_recent = end_offsets.at_start.is_none() && end_offsets.target.is_none();
    let mut bad_batches = BadBatches::default();
    loop {
        if shutdown.load(Ordering::Relaxed) {
            let _ = feed.chunk(chunk);
            tracing::info!(event = "shutdown_requested");
            feed.end(false);
            return;
        }
        match consumer.poll(Duration::from_millis(10)) {
            Some(Ok(msg)) => {
                stall.progress();
                let p = msg.partition();
                if !consumer.context().holding.load(Ordering::Relaxed) {
                    // Fetched before a pause or a revocation, or from a share of the
                    // topic: dropped, and read again from our position once the whole
                    // topic is ours.
                } else if paused_now.contains(&p) {
                    // Fetched before the pause took effect: set aside (not fed, not
                    // counted as read) and fetched again from here on resume.
                    paused_from.entry(p).or_insert(msg.offset());
                } else {
                    let (lane, offset) = (p as u32, msg.offset() as u64);
                    let key = if keep.keys { msg.key() } else { None };
                    let ts = if keep.timestamps {
                        msg.timestamp().to_millis()
                    } else {
                        None
                    };
                    let value = msg.payload();
                    chunk.push_kafka_record(lane, offset, key, ts, value, max_frame);
                    positions.insert(p, msg.offset() + 1);
                    at_eof.remove(&p);
                    // Shared at once: a rebalance inside the next poll must see it.
                    consumer
                        .context()
                        .positions
                        .lock()
                        .insert(p, msg.offset() + 1);
                    read += 1;
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                stall.progress();
                // Not while messages of it are set aside by a pause: they are read
                // again on resume, and the partition is not done until then.
                if end_offsets.at_start.is_some()
                    && !paused_from.contains_key(&p)
                    && !paused_now.contains(&p)
                {
                    at_eof.insert(p);
                }
            }
            Some(Err(e)) => {
                // librdkafka retries transient errors itself: say so once per interval.
                stall.error(&e);
                if matches!(e, KafkaError::MessageConsumptionFatal(_)) {
                    feed.fail(live(format!("fatal consumer error on {topic}: {e}")));
                    return;
                }
                let text = consumer.context().last_error.lock().take();
                if let KafkaError::MessageConsumption(code) = &e
                    && let Some(bad) = text.as_deref().and_then(|t| BadBatch::parse(*code, t))
                {
                    let assignment: Vec<i32> = consumer
                        .assignment()
                        .map(|tpl| {
                            tpl.elements_for_topic(&topic)
                                .iter()
                                .map(|e| e.partition())
                                .collect()
                        })
                        .unwrap_or_default();
                    let live_parts = assignment.into_iter().filter(|p| !finished.contains(p));
                    if let Some(why) = bad_batches.sighted(bad, live_parts, &positions, &topic) {
                        feed.fail(live(why));
                        return;
                    }
                }
            }
            None => {}
        }
        let scale = consumer.context().scale.as_deref();
        if let Some(scale) = scale {
            let revoked = std::mem::take(&mut *scale.revoked.lock());
            if !revoked.is_empty() {
                // What was read of them goes first, then the word that they are gone:
                // the pipeline releases them once it has counted all of it.
                if chunk.record_count() > 0 {
                    let next = Chunk::records(topic.clone(), feed.pool().take(0)).keeping(keep);
                    if !feed.chunk(std::mem::replace(&mut chunk, next)) {
                        return;
                    }
                }
                if !feed.revoked(revoked.iter().map(|p| *p as u32).collect()) {
                    return;
                }
            }
        }
        let assigned: Vec<i32> = std::mem::take(&mut *consumer.context().assigned.lock());
        if !assigned.is_empty() {
            if !feed.assigned(assigned.iter().map(|p| *p as u32).collect()) {
                return;
            }
            // A new assignment starts unpaused, at our positions: pause again what
            // alignment asks for.
            paused_now.clear();
            paused_from.clear();
            paused_version = u64::MAX;
            if let Some(scale) = scale {
                // A partition may come back from another owner, further on.
                for p in &assigned {
                    match consumer.context().positions.lock().get(p) {
                        Some(at) => positions.insert(*p, *at),
                        None => positions.remove(p),
                    };
                    finished.remove(p);
                    at_eof.remove(p);
                }
                // Frames its last owner had read but not counted: counted first.
                for (p, held) in std::mem::take(&mut *scale.refeed.lock()) {
                    for h in held {
                        let key = if keep.keys { h.key.as_deref() } else { None };
                        chunk.push_kafka_record(
                            p as u32,
                            h.offset,
                            key,
                            None,
                            Some(&h.raw),
                            max_frame,
                        );
                    }
                }
            }
        }
        if let Some((version, lanes)) = feed.paused().changed_since(paused_version) {
            paused_version = version;
            let want: Vec<i32> = lanes.into_iter().map(|l| l as i32).collect();
            align_partitions(consumer, &topic, &paused_now, &want, &mut paused_from);
            paused_now = want;
        }
        let tick = last_tick.elapsed() >= TICK;
        let mut done = Vec::new();
        if tick {
            if ends_now.is_none() || end_offsets.target.is_some() {
                ends_now = end_offsets.get();
            }
            if let Some(ends) = &ends_now {
                // A partition read to its end must not hold the others back.
                for (p, (low, high)) in ends {
                    if scale.is_some_and(|s| !s.owned.lock().contains_key(p)) {
                        continue;
                    }
                    let at_end = high <= low
                        || positions.get(p).is_some_and(|pos| pos >= high)
                        || at_eof.contains(p);
                    if at_end && finished.insert(*p) {
                        done.push(*p);
                    }
                }
            }
        }
        let full = chunk.data().len() >= CHUNK_BYTES || chunk.record_count() >= MAX_CHUNK_FRAMES;
        if full
            || !done.is_empty()
            || (chunk.record_count() > 0 && batch_started.elapsed() >= MAX_BATCH_WAIT)
        {
            let next = Chunk::records(topic.clone(), feed.pool().take(0)).keeping(keep);
            let records = chunk.record_count() as u64;
            chunk.clock = Some(WallClock {
                now: unix_now_secs(),
                trust_recent,
            });
            if !feed.chunk(std::mem::replace(&mut chunk, next)) {
                return;
            }
            if let Some(fed) = &fed {
                fed.fetch_add(records, Ordering::Relaxed);
            }
            batch_started = Instant::now();
        }
        if !done.is_empty() && !feed.lanes_done(done.iter().map(|p| *p as u32).collect()) {
            return;
        }
        if tick {
            last_tick = Instant::now();
            if let Some(why) = shared.check(consumer.context(), &topic) {
                feed.fail(live(why));
                return;
            }
            let holding = consumer.context().holding.load(Ordering::Relaxed);
            let behind = || {
                let ends = ends_now.iter().flatten();
                (ends.filter(|(p, _)| !finished.contains(*p)))
                    .filter(|(p, _)| scale.is_none_or(|s| s.owned.lock().contains_key(*p)))
                    .map(|(p, (_, end))| Behind {
                        partition: *p,
                        at: positions.get(p).copied(),
                        end: *end,
                    })
                    .collect()
            };
            if let Some(why) = stall.check(ends_now.is_some(), holding, behind) {
                feed.fail(live(why));
                return;
            }
            if consumer.context().holding.load(Ordering::Relaxed)
                && !feed.tick(
                    now_ms(),
                    Some(WallClock {
                        now: unix_now_secs(),
                        trust_recent,
                    }),
                )
            {
                return;
            }
            if last_progress.elapsed() >= Duration::from_secs(5) {
                let rate =
                    (read - read_at_last_progress) as f64 / last_progress.elapsed().as_secs_f64();
                last_progress = Instant::now();
                read_at_last_progress = read;
                match &ends_now {
                    // A bounded run says how far it has to go, on stderr, whatever the log level.
                    Some(ends) => {
                        let to_go: i64 = ends
                            .iter()
                            .map(|(p, (low, high))| {
                                high - positions.get(p).copied().unwrap_or(*low).max(*low)
                            })
                            .filter(|n| *n > 0)
                            .sum();
                        let eta = crate::progress::time_to_go(to_go as u64, rate);
                        crate::say!(
                            "cardinal: {topic}: {read} frames read, {rate:.0} frames/s, {to_go} to the end offsets ({eta})"
                        );
                    }
                    None => tracing::info!(
                        event = "progress",
                        frames_read = read,
                        frames_per_s = rate as u64
                    ),
                }
            }
            if let Some(ends) = &ends_now
                && match scale {
                    // Our share of the topic (what the group gives us now) is done,
                    // and every other partition's owner says it is read to its end:
                    // until then the group may still hand us one (a member that
                    // finished and left, or a partition a rebalance left to no one).
                    Some(scale) => {
                        let owned = scale.owned.lock();
                        let mine_done =
                            owned.keys().all(|p| finished.contains(p)) && paused_from.is_empty();
                        let mine: Vec<i32> = match mine_done {
                            true => owned.keys().copied().collect(),
                            false => Vec::new(),
                        };
                        drop(owned);
                        mine_done && others.ended(scale, ends.keys().copied(), &mine)
                    }
                    None => backfill_done(consumer, &topic, ends, &finished, &paused_from),
                }
            {
                if chunk.record_count() > 0 {
                    let _ = feed.chunk(chunk);
                }
                tracing::info!(event = "backfill_complete", frames_read = read);
                feed.end(true);
                return;
            }
        }
    }
}

/// Scale-out backfill: whether every partition held elsewhere is read to its end,
/// by its owner's lane record; asked at most twice a second (it reads the partials
/// topic), and the ones still going said once.
#[derive(Default)]
struct OthersEnded {
    last: Option<Instant>,
    said: bool,
}

impl OthersEnded {
    fn ended(
        &mut self,
        scale: &crate::kafka::scale::publish::ScaleState,
        partitions: impl Iterator<Item = i32>,
        mine: &[i32],
    ) -> bool {
        if self
            .last
            .is_some_and(|t| t.elapsed() < Duration::from_millis(500))
        {
            return false;
        }
        self.last = Some(Instant::now());
        let going = scale.not_ended(partitions.filter(|p| !mine.contains(p)));
        if !going.is_empty() && !self.said {
            self.said = true;
            tracing::info!(
                event = "backfill_waiting",
                partitions = ?going,
                "our partitions are read to their ends; staying in the group until these are too"
            );
        }
        going.is_empty()
    }
}

/// Pauses the partitions that watermark alignment wants paused and resumes the
/// others that were: reading speed must not decide what is late.
pub(super) fn align_partitions(
    consumer: &BaseConsumer<RunContext>,
    topic: &str,
    was: &[i32],
    want: &[i32],
    paused_from: &mut HashMap<i32, i64>,
) {
    let list = |parts: Vec<i32>| {
        let mut tpl = TopicPartitionList::new();
        for p in &parts {
            tpl.add_partition(topic, *p);
        }
        (parts, tpl)
    };
    let (pause, pause_tpl) = list(want.iter().filter(|p| !was.contains(p)).copied().collect());
    let (resume, resume_tpl) = list(was.iter().filter(|p| !want.contains(p)).copied().collect());
    if !pause.is_empty() {
        match consumer.pause(&pause_tpl) {
            Ok(()) => {
                tracing::info!(event = "partitions_paused", partitions = ?pause, "ahead of the slowest by more than --max-drift")
            }
            Err(e) => tracing::warn!(event = "pause_failed", partitions = ?pause, error = %e),
        }
    }
    if !resume.is_empty() {
        // Messages set aside while paused are read again, from the first of them.
        for p in &resume {
            if let Some(offset) = paused_from.remove(p)
                && let Err(e) =
                    consumer.seek(topic, *p, Offset::Offset(offset), Duration::from_secs(10))
            {
                tracing::warn!(event = "seek_failed", partition = p, offset, error = %e);
            }
        }
        match consumer.resume(&resume_tpl) {
            Ok(()) => tracing::info!(event = "partitions_resumed", partitions = ?resume),
            Err(e) => tracing::warn!(event = "resume_failed", partitions = ?resume, error = %e),
        }
    }
}

/// Every partition has been read up to its end offset (`finished`, kept by the
/// feeder), or started at or past it (committed offsets), leaving nothing to read.
pub(super) fn backfill_done(
    consumer: &BaseConsumer<RunContext>,
    topic: &str,
    ends: &HashMap<i32, (i64, i64)>,
    finished: &std::collections::HashSet<i32>,
    set_aside: &HashMap<i32, i64>,
) -> bool {
    let fetch_positions = consumer.position().ok();
    ends.iter().all(|(p, (_, high))| {
        // Messages set aside by a pause are still to be read, wherever the client is.
        !set_aside.contains_key(p)
            && (finished.contains(p)
                || fetch_positions
                    .as_ref()
                    .and_then(|tpl| tpl.find_partition(topic, *p))
                    .and_then(|e| e.offset().to_raw())
                    .is_some_and(|o| o >= *high))
    })
}
