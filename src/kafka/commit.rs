//! What is safe to commit and when: results flushed, rejects acknowledged, the
//! checkpoint written, then offsets, one commit at a time.

use std::collections::BTreeMap;

use super::*;
use crate::window::Granularity;

/// Where the answer to a commit under way arrives.
pub(super) type CommitAnswer = std::sync::mpsc::Receiver<rdkafka::error::KafkaResult<()>>;

/// Publishes results and commits offsets that the published results cover.
///
/// One commit at a time, each a synchronous commit on a thread of its own, whose
/// answer is collected before the next is sent. librdkafka's asynchronous commits
/// are fire-and-forget here, and it keeps one that met a coordinator error to send it
/// again once the coordinator is back, possibly after a later commit (seen with the
/// mock cluster: a backfill's final commit of its end offsets acknowledged, then
/// overwritten by an older one). A synchronous commit on the pipeline's own thread
/// would keep the order but block it for as long as librdkafka retries a dead broker
/// (over a minute): here a periodic commit whose predecessor is still out is skipped.
pub(super) struct KafkaHooks {
    pub(super) consumer: Arc<BaseConsumer<RunContext>>,
    pub(super) topic: String,
    /// The results topic, acknowledged before every commit.
    pub(super) results: Option<ResultsTopic>,
    /// The dead-letter topic, flushed before every commit as the results are.
    pub(super) rejects: Option<TopicRejects>,
    pub(super) timeout: Duration,
    /// The group's session timeout: how long a rejoin may take to settle.
    pub(super) session_timeout: Duration,
    pub(super) commit_interval: Duration,
    pub(super) last_commit: Instant,
    /// What was last sent per partition: not sent again until it moves.
    /// With the metadata it went with: a position that stays (the hour it starts is
    /// open) is sent again when what is final has moved, or a restart would read a
    /// stale `final-through` there and publish a window twice.
    pub(super) committed: Sent,
    /// The last commit's failure, if it failed (the next one retries it).
    pub(super) commit_error: Option<String>,
    /// The commit under way, if any: what it sends, and where its answer arrives.
    pub(super) in_flight: Option<(Sent, CommitAnswer)>,
    pub(super) checkpoints: Option<Checkpointing>,
    /// The `--rejects` file, whose length each checkpoint records.
    pub(super) rejects_file: Option<crate::sink::RejectSink>,
    /// `--scale-out`: checkpoints go to the partials topic, results come from the merger.
    pub(super) scale: Option<scale::publish::Publisher>,
    /// `--exactly-once`: offsets go into the results producer's transaction, which
    /// each commit ends and opens anew.
    pub(super) transactional: bool,
}

/// Per partition, the offset a commit sent and the metadata it went with.
pub(super) type Sent = HashMap<i32, (i64, String)>;

impl KafkaHooks {
    /// Flushes the results, checkpoints if asked, and returns the offset to commit
    /// for every partition this run has read. Every partition read, not only those
    /// assigned now: right after a rejoin the assignment can be empty, and a partition
    /// read then given away must still be committed where this run got to. (An older
    /// offset than another member's only makes it read again, never lose.)
    pub(super) fn positions_to_commit(
        &mut self,
        state: &mut dyn StateView,
    ) -> Result<HashMap<i32, i64>, PipelineError> {
        // Results first: neither a checkpoint nor an offset may get ahead of what is acked.
        if let Some(results) = &self.results {
            results.acknowledge().map_err(live)?;
        }
        // Rejects too: a frame's offset must not be committed before its dead-letter
        // record is acknowledged, or a crash would lose it from both places.
        if let Some(rejects) = &self.rejects {
            rejects.acknowledge()?;
        }
        let next = state.next_positions();
        // With a checkpoint, the state covers everything read so far; without one,
        // only what final results cover is safe.
        match &mut self.checkpoints {
            Some(cp) => {
                let input = InputPosition::Kafka {
                    offsets: next.iter().map(|(p, o)| (*p as i32, *o as i64)).collect(),
                };
                let rejects_bytes = match &self.rejects_file {
                    Some(f) => Some(f.flushed_len()?),
                    None => None,
                };
                cp.save(input, rejects_bytes, state.totals(), |changes| {
                    state.checkpoint(changes)
                })
                .map_err(|e| live(e.to_string()))?;
                // A sign of life, for the next process on this directory after a crash.
                cp.dir.mark_member().map_err(|e| live(e.to_string()))?;
                Ok(next
                    .into_iter()
                    .map(|(p, o)| (p as i32, o as i64))
                    .collect())
            }
            None => Ok(next
                .into_iter()
                .filter_map(|(p, _)| Some((p as i32, state.safe_position(p)? as i64)))
                .collect()),
        }
    }

    /// Collects the answer to the commit under way, waiting at most `wait`; false if
    /// it is still out.
    pub(super) fn collect(&mut self, wait: Duration) -> bool {
        let Some((sent, answer)) = &self.in_flight else {
            return true;
        };
        let result = match answer.recv_timeout(wait) {
            Ok(r) => r,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => return false,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(KafkaError::Canceled),
        };
        match result {
            Ok(()) => {
                self.committed
                    .extend(sent.iter().map(|(p, o)| (*p, o.clone())));
                tracing::debug!(event = "offsets_committed", offsets = ?self.committed);
            }
            // Losing a partition mid-commit is normal during a rebalance: the next commit retries.
            Err(e) => {
                tracing::warn!(event = "commit_failed", error = %e);
                self.commit_error = Some(e.to_string());
            }
        }
        self.in_flight = None;
        true
    }

    /// Commits what `positions_to_commit` allows and the broker has not acknowledged,
    /// unless the previous commit is still out: then nothing (the next one covers it).
    /// A refused commit is remembered in `commit_error` and sent again next time.
    pub(super) fn commit(&mut self, state: &mut dyn StateView) -> Result<(), PipelineError> {
        if !self.collect(Duration::ZERO) {
            return Ok(());
        }
        let positions = self.positions_to_commit(state)?;
        let mut tpl = TopicPartitionList::new();
        let mut sent = HashMap::new();
        let metadata = final_through_metadata(&state.final_through());
        for (p, pos) in &positions {
            let now = (*pos, metadata.clone());
            if self.committed.get(p) != Some(&now) {
                tpl.add_partition_offset(&self.topic, *p, Offset::Offset(*pos))
                    .map_err(|e| live(format!("bad offset {pos} for {}[{p}]: {e}", self.topic)))?;
                if let Some(mut e) = tpl.find_partition(&self.topic, *p) {
                    e.set_metadata(&metadata);
                }
                sent.insert(*p, now);
            }
        }
        if self.transactional {
            return self.commit_transaction(&tpl, sent);
        }
        if tpl.count() == 0 {
            return Ok(());
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let consumer = self.consumer.clone();
        std::thread::Builder::new()
            .name("commit".into())
            .spawn(move || {
                let _ = tx.send(consumer.commit(&tpl, CommitMode::Sync));
            })
            .map_err(|e| live(format!("cannot start a commit thread: {e}")))?;
        self.in_flight = Some((sent, rx));
        Ok(())
    }

    /// `--exactly-once`: the offsets (with their metadata) join the transaction that
    /// holds the results produced since the last commit, and the transaction commits:
    /// a `read_committed` consumer sees those results exactly when the offsets that
    /// stop them being produced again are committed. Then the next one begins. Any
    /// failure ends the run: a restart's producer fences this one, and the broker
    /// aborts what it left open.
    fn commit_transaction(
        &mut self,
        tpl: &TopicPartitionList,
        sent: Sent,
    ) -> Result<(), PipelineError> {
        let Some(results) = &self.results else {
            return Ok(());
        };
        let failed = |what: &str, e: KafkaError| {
            live(format!(
                "--exactly-once: cannot {what} the transaction of {}: {e}",
                results.topic
            ))
        };
        if tpl.count() > 0 {
            let group = self
                .consumer
                .group_metadata()
                .ok_or_else(|| live("--exactly-once: the consumer has no group metadata yet"))?;
            (results.producer)
                .send_offsets_to_transaction(tpl, &group, self.timeout)
                .map_err(|e| failed("add the offsets to", e))?;
        }
        (results.producer)
            .commit_transaction(self.timeout)
            .map_err(|e| failed("commit", e))?;
        (results.producer)
            .begin_transaction()
            .map_err(|e| failed("begin", e))?;
        self.committed.extend(sent);
        tracing::debug!(event = "transaction_committed", offsets = ?self.committed);
        Ok(())
    }

    /// The group's committed offsets for `partitions`, read back from the broker.
    pub(super) fn read_back(
        &self,
        partitions: &HashMap<i32, i64>,
    ) -> Result<HashMap<i32, i64>, String> {
        let mut tpl = TopicPartitionList::new();
        for p in partitions.keys() {
            tpl.add_partition(&self.topic, *p);
        }
        let got = self
            .consumer
            .committed_offsets(tpl, self.timeout)
            .map_err(|e| format!("cannot read the committed offsets back: {e}"))?;
        Ok(got
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((e.partition(), o)),
                _ => None,
            })
            .collect())
    }
}

impl KafkaHooks {
    /// Scale-out: commits where each partition held stands (the partials topic is
    /// what a new owner resumes from; the group's offsets are for lag monitors).
    fn commit_held(&self, state: &dyn StateView, mode: CommitMode) {
        let Some(publisher) = &self.scale else {
            return;
        };
        let owned = publisher.state.owned.lock().clone();
        let next: HashMap<usize, u64> = state.next_positions().into_iter().collect();
        let mut tpl = TopicPartitionList::new();
        for (p, start) in owned {
            let at = next.get(&(p as usize)).map(|n| *n as i64).max(start);
            if let Some(at) = at {
                let _ = tpl.add_partition_offset(&self.topic, p, Offset::Offset(at));
            }
        }
        if tpl.count() > 0
            && let Err(e) = self.consumer.commit(&tpl, mode)
        {
            tracing::debug!(event = "commit_failed", error = %e);
        }
    }
}

/// What every commit carries besides the offset (its metadata, as Kafka Streams keeps
/// a partition's stream time there): per granularity, how far results were final
/// when the offset was taken, e.g. `cardinal final-through minute=1468244400,day=1468195200`.
/// A restart without a checkpoint replays from the offset, and must judge the
/// replayed frames of windows already published as late rather than publish those
/// windows again with only what was replayed.
const FINAL_THROUGH: &str = "cardinal final-through ";

fn final_through_metadata(through: &[(Granularity, i64)]) -> String {
    let list: Vec<String> = through.iter().map(|(g, t)| format!("{g}={t}")).collect();
    format!("{FINAL_THROUGH}{}", list.join(","))
}

/// What a commit's metadata says was final, if it is ours (unknown names are
/// left out: another version may know more granularities).
pub(super) fn final_through(metadata: &str) -> Vec<(Granularity, i64)> {
    let Some(list) = metadata.strip_prefix(FINAL_THROUGH) else {
        return Vec::new();
    };
    (list.split(','))
        .filter_map(|item| {
            let (g, t) = item.split_once('=')?;
            Some((g.parse().ok()?, t.parse().ok()?))
        })
        .collect()
}

impl KafkaHooks {
    /// Per granularity, the latest instant through which the committed offsets of
    /// `lanes` say results were published final. A partition whose offset did not
    /// move since keeps an older mark: the latest is what was published.
    fn committed_final_through(&self, lanes: &[u32]) -> Result<Vec<(Granularity, i64)>, String> {
        let mut tpl = TopicPartitionList::new();
        for l in lanes {
            tpl.add_partition(&self.topic, *l as i32);
        }
        let got = (self.consumer)
            .committed_offsets(tpl, self.timeout)
            .map_err(|e| format!("cannot read the committed offsets of {}: {e}", self.topic))?;
        let mut latest: BTreeMap<Granularity, i64> = BTreeMap::new();
        for e in got.elements() {
            for (g, t) in final_through(e.metadata()) {
                let at = latest.entry(g).or_insert(t);
                *at = (*at).max(t);
            }
        }
        Ok(latest.into_iter().collect())
    }
}

impl Hooks for KafkaHooks {
    fn assigned(&mut self, state: &mut dyn StateView, lanes: &[u32]) -> Result<(), PipelineError> {
        if let Some(p) = &mut self.scale {
            // Before any frame of them: the partitions held elsewhere hold us back.
            p.taken_over(state, lanes);
            return Ok(());
        }
        // A checkpoint restores the watermark with the windows; without one, the
        // committed offsets say how far results were already final.
        if self.checkpoints.is_none() && !lanes.is_empty() {
            let through = self.committed_final_through(lanes).map_err(live)?;
            if !through.is_empty() {
                tracing::info!(event = "resumed_after_published", final_through = ?through);
                state.resume_after(&through);
            }
        }
        Ok(())
    }

    fn lanes_done(&mut self, lanes: &[u32]) {
        if let Some(p) = &mut self.scale {
            p.lanes_done(lanes);
        }
    }

    fn revoked(&mut self, state: &mut dyn StateView, lanes: &[u32]) -> Result<(), PipelineError> {
        if let Some(p) = &mut self.scale {
            let lanes: Vec<i32> = lanes.iter().map(|l| *l as i32).collect();
            p.publish(state, scale::publish::Moment::Release, &lanes)
                .map_err(live)?;
            p.refresh_remote(state);
        }
        Ok(())
    }

    fn progress(
        &mut self,
        state: &mut dyn StateView,
        _now_ms: Option<u64>,
    ) -> Result<(), PipelineError> {
        if let Some(p) = &mut self.scale {
            if self.last_commit.elapsed() >= self.commit_interval {
                self.last_commit = Instant::now();
                p.publish(state, scale::publish::Moment::Running, &[])
                    .map_err(live)?;
                p.refresh_remote(state);
                self.commit_held(state, CommitMode::Async);
            }
            return Ok(());
        }
        // Only while the group has given us partitions: a commit sent before the join
        // completes waits (on Tansu, past a minute) and holds back the ones after it.
        let holding = self.consumer.context().holding.load(Ordering::Relaxed);
        if holding && self.last_commit.elapsed() >= self.commit_interval {
            self.last_commit = Instant::now();
            self.commit(state)?;
            if let Some(results) = &self.results {
                results.share(0);
            }
        }
        Ok(())
    }

    fn finished(&mut self, state: &mut dyn StateView, complete: bool) -> Result<(), PipelineError> {
        if let Some(p) = &mut self.scale {
            let moment = if complete {
                scale::publish::Moment::Complete
            } else {
                scale::publish::Moment::Stop
            };
            p.publish(state, moment, &[]).map_err(live)?;
            self.commit_held(state, CommitMode::Sync);
            return Ok(());
        }
        // The last commit must land, for every partition read: committed, then read
        // back from the broker, until both agree. A rejoin may be under way (the
        // assignment empty, the generation stale): serving the consumer lets it
        // settle, which takes up to a session timeout; an unreachable coordinator is
        // given --timeout. Then an error naming what could not be committed, rather
        // than a run that says it finished and leaves its group behind.
        let deadline = Instant::now() + self.timeout + self.session_timeout;
        let want = self.positions_to_commit(state)?;
        if want.is_empty() {
            return Ok(());
        }
        let mut attempt = 0u32;
        let missing = loop {
            attempt += 1;
            // Sent again whatever we believe landed: only the broker's word counts.
            // The commit still out lands first, whatever it says.
            let left = deadline.saturating_duration_since(Instant::now());
            if !self.collect(left) {
                break want.iter().map(|(p, o)| (*p, *o, None)).collect();
            }
            self.committed.clear();
            self.commit_error = None;
            self.commit(state)?;
            let left = deadline.saturating_duration_since(Instant::now());
            if !self.collect(left) {
                break want.iter().map(|(p, o)| (*p, *o, None)).collect();
            }
            let missing: Vec<(i32, i64, Option<i64>)> = match self.read_back(&want) {
                Ok(got) => want
                    .iter()
                    .filter(|(p, o)| got.get(p) != Some(o))
                    .map(|(p, o)| (*p, *o, got.get(p).copied()))
                    .collect(),
                Err(e) => {
                    self.commit_error.get_or_insert(e);
                    want.iter().map(|(p, o)| (*p, *o, None)).collect()
                }
            };
            if missing.is_empty() {
                tracing::debug!(event = "final_offsets_committed", offsets = ?want, attempts = attempt);
                return Ok(());
            }
            if Instant::now() >= deadline {
                break missing;
            }
            tracing::warn!(event = "final_commit_retry", attempt, missing = ?missing);
            // Serve the consumer meanwhile: a rebalance completes only through it.
            // Messages it hands over lie past what this run counted: dropped.
            let pause_until =
                Instant::now() + Duration::from_millis(100 * u64::from(attempt.min(10)));
            while Instant::now() < pause_until {
                let _ = self.consumer.poll(Duration::from_millis(20));
            }
        };
        let list: Vec<String> = missing
            .iter()
            .map(|(p, o, got)| match got {
                Some(g) => format!("{}[{p}] at {o} (the group has {g})", self.topic),
                None => format!("{}[{p}] at {o} (the group has none)", self.topic),
            })
            .collect();
        Err(live(format!(
            "cannot commit the final offsets of {} after {attempt} tries in {:?}: {}; last error: {}; \
             a rerun reads again from the last committed offsets (results are idempotent)",
            self.topic,
            self.timeout + self.session_timeout,
            list.join(", "),
            self.commit_error.take().unwrap_or_else(|| "none".into())
        )))
    }

    fn checkpoint_summary(&self) -> String {
        if let Some(p) = &self.scale {
            return p.summary();
        }
        self.checkpoints
            .as_ref()
            .map_or_else(String::new, Checkpointing::summary)
    }
}
