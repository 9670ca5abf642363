//! Membership of the consumer group: assignments from our own positions, and what
//! to do when the group gives this process only a share of the topic.

use super::*;

/// Consumer callbacks: assigns partitions from our own positions when we have them
/// (so a rebalance that gives a partition back does not re-read what we counted),
/// and records assignments for the feeder to forward in order. A revoked partition
/// is not dropped from the watermark: it keeps holding results back until it goes
/// idle, so that a short rebalance that gives it back makes none of its frames late.
pub(super) struct RunContext {
    pub(super) topic: String,
    pub(super) from: StartFrom,
    pub(super) positions: Mutex<HashMap<i32, i64>>,
    pub(super) assigned: Mutex<Vec<i32>>,
    /// Whether the group has given us any partition. Wall-clock time is only passed
    /// on while it has: waiting for a rebalance (a restart waits out the dead
    /// member's session) must not make partitions look idle.
    pub(super) holding: AtomicBool,
    /// `--http`: consumer lag (from librdkafka's statistics), assignment, broker state.
    pub(super) metrics: Option<Arc<Metrics>>,
    /// Every partition of the topic. An assignment without all of them means another
    /// member of the group holds the rest: this process would count part of the
    /// stream and publish partial counts as if they were whole.
    pub(super) all_partitions: std::sync::OnceLock<Vec<i32>>,
    /// Since when, and with which partitions, the assignment has been incomplete.
    /// Its partitions are paused and nothing is counted until it is complete again.
    pub(super) incomplete: Mutex<Option<(Instant, Vec<i32>)>>,
    /// Whether this process has ever held every partition: the one that has keeps
    /// waiting for the newcomer to leave; a newcomer gives up.
    pub(super) ever_complete: AtomicBool,
    /// This process gave up waiting for the whole topic (the broker is fine).
    pub(super) gave_up_shared: AtomicBool,
    /// The text of the last error the client reported. rdkafka hands a consumer
    /// error to `poll` as a bare code, after passing its text here: the text is
    /// what says which batch could not be decoded.
    pub(super) last_error: Mutex<Option<String>>,
    /// `--scale-out`: partitions are shared with the group's other members.
    pub(super) scale: Option<Arc<scale::publish::ScaleState>>,
}

impl ClientContext for RunContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        client_log(level, fac, log_message);
    }
    fn error(&self, error: KafkaError, reason: &str) {
        client_error(&error, reason);
        *self.last_error.lock() = Some(reason.to_string());
        if let Some(m) = &self.metrics
            && error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown)
        {
            m.update_kafka(|k| k.broker_down = Some(reason.to_string()));
        }
    }
    fn stats(&self, stats: rdkafka::Statistics) {
        let Some(m) = &self.metrics else {
            return;
        };
        let positions = self.positions.lock();
        let mut lag = std::collections::BTreeMap::new();
        let mut commit_lag = std::collections::BTreeMap::new();
        if let Some(t) = stats.topics.get(&self.topic) {
            for (p, s) in &t.partitions {
                // -1 is librdkafka's unassigned pseudo-partition; others only while fetched.
                if *p < 0 || s.hi_offset < 0 || s.fetch_state == "none" {
                    continue;
                }
                let at = positions.get(p).copied().unwrap_or(s.app_offset);
                if at >= 0 {
                    lag.insert(*p, (s.hi_offset - at).max(0));
                }
                if s.committed_offset >= 0 {
                    commit_lag.insert(*p, (s.hi_offset - s.committed_offset).max(0));
                }
            }
        }
        let up = stats.brokers.values().any(|b| b.state == "UP");
        m.update_kafka(|k| {
            k.consumer_lag = lag;
            k.commit_lag = commit_lag;
            if up {
                k.broker_down = None;
            }
        });
    }
}

impl ConsumerContext for RunContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS if self.scale.is_some() => {
                self.take_over(consumer, tpl);
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS if self.scale.is_some() => {
                self.let_go(consumer, tpl);
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let positions = self.positions.lock();
                let mut parts = Vec::new();
                for elem in tpl.elements_for_topic(&self.topic) {
                    parts.push(elem.partition());
                }
                for p in &parts {
                    let offset = match (positions.get(p), self.from) {
                        (Some(pos), _) => Offset::Offset(*pos),
                        (None, StartFrom::Earliest) => Offset::Beginning,
                        (None, StartFrom::Latest) => Offset::End,
                        (None, StartFrom::Committed) => Offset::Stored,
                    };
                    let _ = tpl.set_partition_offset(&self.topic, *p, offset);
                }
                let complete = self
                    .all_partitions
                    .get()
                    .is_none_or(|all| all.iter().all(|p| parts.contains(p)));
                if let Err(e) = consumer.assign(tpl) {
                    tracing::error!(event = "assign_failed", error = %e);
                }
                let mut incomplete = self.incomplete.lock();
                if complete {
                    // librdkafka keeps a partition's pause across a reassignment: one
                    // paused while the topic was shared would never be read again.
                    if let Err(e) = consumer.resume(tpl) {
                        tracing::error!(event = "resume_failed", partitions = ?parts, error = %e);
                    }
                    tracing::info!(event = "partitions_assigned", partitions = ?parts);
                    *incomplete = None;
                    self.ever_complete.store(true, Ordering::Relaxed);
                } else {
                    // Paused at once, before a fetch can start: nothing of a share of
                    // the topic is counted, so nothing partial is ever published.
                    if let Err(e) = consumer.pause(tpl) {
                        tracing::error!(event = "pause_failed", partitions = ?parts, error = %e);
                    }
                    tracing::warn!(
                        event = "assignment_incomplete",
                        partitions = ?parts,
                        of = ?self.all_partitions.get(),
                        "another member of the consumer group holds the other partitions; \
                         not counting until this process holds them all"
                    );
                    let since = incomplete.as_ref().map_or_else(Instant::now, |(t, _)| *t);
                    *incomplete = Some((since, parts.clone()));
                }
                if let Some(m) = &self.metrics {
                    m.update_kafka(|k| k.assigned = if complete { parts.len() } else { 0 });
                }
                self.holding
                    .store(complete && !parts.is_empty(), Ordering::Relaxed);
                if complete {
                    self.assigned.lock().extend(parts);
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let parts: Vec<i32> = tpl
                    .elements_for_topic(&self.topic)
                    .iter()
                    .map(|e| e.partition())
                    .collect();
                tracing::info!(event = "partitions_revoked", partitions = ?parts);
                if let Some(m) = &self.metrics {
                    m.update_kafka(|k| k.assigned = 0);
                }
                self.holding.store(false, Ordering::Relaxed);
                if let Err(e) = consumer.unassign() {
                    tracing::error!(event = "unassign_failed", error = %e);
                }
            }
            other => tracing::error!(event = "rebalance_error", error = ?other),
        }
    }
}

impl RunContext {
    /// Scale-out: partitions given to us resume where their last owner let them go.
    fn take_over(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) {
        let scale = self.scale.as_ref().expect("scale-out");
        let parts: Vec<i32> = (tpl.elements_for_topic(&self.topic).iter())
            .map(|e| e.partition())
            .collect();
        let points = scale.resume_points(&parts);
        let mut positions = self.positions.lock();
        let mut owned = scale.owned.lock();
        let mut refeed = scale.refeed.lock();
        for p in &parts {
            let (next, held) = points.get(p).cloned().unwrap_or_default();
            let offset = match (next, self.from) {
                (Some(n), _) => Offset::Offset(n),
                (None, StartFrom::Earliest) => Offset::Beginning,
                (None, StartFrom::Latest) => Offset::End,
                (None, StartFrom::Committed) => Offset::Stored,
            };
            let _ = tpl.set_partition_offset(&self.topic, *p, offset);
            match next {
                Some(n) => positions.insert(*p, n),
                None => positions.remove(p),
            };
            owned.insert(*p, next);
            (scale.starts.lock()).insert(*p, next);
            if !held.is_empty() {
                refeed.push((*p, held));
            }
        }
        if let Err(e) = consumer.assign(tpl) {
            tracing::error!(event = "assign_failed", error = %e);
        }
        if let Err(e) = consumer.resume(tpl) {
            tracing::error!(event = "resume_failed", partitions = ?parts, error = %e);
        }
        tracing::info!(event = "partitions_assigned", partitions = ?parts, resume = ?points.iter().map(|(p, r)| (*p, r.0)).collect::<Vec<_>>());
        if let Some(m) = &self.metrics {
            m.update_kafka(|k| k.assigned = owned.len());
        }
        self.holding.store(!owned.is_empty(), Ordering::Relaxed);
        self.assigned.lock().extend(parts);
    }

    /// Scale-out: partitions taken from us are released once the pipeline has
    /// counted what was read of them (the feeder says so through it).
    fn let_go(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let scale = self.scale.as_ref().expect("scale-out");
        let parts: Vec<i32> = (tpl.elements_for_topic(&self.topic).iter())
            .map(|e| e.partition())
            .collect();
        tracing::info!(event = "partitions_revoked", partitions = ?parts);
        let mut owned = scale.owned.lock();
        for p in &parts {
            owned.remove(p);
        }
        (scale.releasing.lock()).extend(parts.iter().copied());
        (scale.revoked.lock()).extend(parts.iter().copied());
        if let Some(m) = &self.metrics {
            m.update_kafka(|k| k.assigned = owned.len());
        }
        self.holding.store(!owned.is_empty(), Ordering::Relaxed);
        if let Err(e) = consumer.unassign() {
            tracing::error!(event = "unassign_failed", error = %e);
        }
    }
}

/// The consumer group's session timeout, as configured (librdkafka's default: 45 s).
pub(super) fn session_timeout(opts: &KafkaOptions) -> Duration {
    let configured = opts
        .layered(CONSUMER_DEFAULTS)
        .filter(|(k, _, _)| *k == "session.timeout.ms")
        .last()
        .and_then(|(_, v, _)| v.parse().ok());
    Duration::from_millis(configured.unwrap_or(45_000))
}

/// After a crash (the last process on this state directory never left its group),
/// waits until that process's group session has expired before joining. A broker
/// then reassigns its partitions at once; Tansu, joined earlier, may hand them all
/// to the dead member and never take them back.
///
/// Not with static membership (`--instance-id`): the broker hands the dead member's
/// place, partitions and all, to the process that comes back under its id at once.
pub(super) fn wait_out_a_dead_member(dir: &StateDir, kafka: &KafkaOptions, shutdown: &AtomicBool) {
    let static_member = (kafka.layered(CONSUMER_DEFAULTS))
        .any(|(k, v, _)| k == "group.instance.id" && !v.is_empty());
    if static_member {
        return;
    }
    let session = session_timeout(kafka);
    let Some(end) = dir.dead_member_session_end(session + Duration::from_secs(1)) else {
        return;
    };
    let Ok(wait) = end.duration_since(std::time::SystemTime::now()) else {
        return;
    };
    tracing::warn!(
        event = "waiting_for_dead_member_session",
        wait_ms = wait.as_millis() as u64,
        "the last run on this --state-dir did not leave its consumer group; waiting for its session to expire"
    );
    let until = Instant::now() + wait;
    while Instant::now() < until && !shutdown.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The group has split the topic between this process and another member: what
/// the feeder does about it.
pub(super) struct Shared {
    pub(super) group: String,
    pub(super) give_up_after: Duration,
    pub(super) last_warning: Option<Instant>,
}

impl Shared {
    const WARN_EVERY: Duration = Duration::from_secs(30);

    /// Why the run must stop, if it has waited too long for the whole topic. A
    /// process that has held every partition waits for ever (the newcomer gives
    /// up and leaves); one that never has gives up.
    pub(super) fn check(&mut self, context: &RunContext, topic: &str) -> Option<String> {
        let incomplete = context.incomplete.lock();
        let (since, parts) = incomplete.as_ref()?;
        let all = context.all_partitions.get().cloned().unwrap_or_default();
        let waited = since.elapsed();
        if !context.ever_complete.load(Ordering::Relaxed) && waited >= self.give_up_after {
            context.gave_up_shared.store(true, Ordering::Relaxed);
            return Some(format!(
                "consumer group {:?} gave this process partitions {parts:?} of {topic}'s {all:?} for {} s: \
                 another member of the group holds the others. One `cardinal run` counts a whole topic \
                 (its counts would be partial otherwise): stop the other member of group {:?}, or give \
                 this run its own --group",
                self.group,
                waited.as_secs(),
                self.group
            ));
        }
        if self
            .last_warning
            .is_none_or(|t| t.elapsed() >= Self::WARN_EVERY)
        {
            self.last_warning = Some(Instant::now());
            tracing::warn!(
                event = "waiting_for_whole_topic",
                group = %self.group,
                partitions = ?parts,
                of = ?all,
                waited_s = waited.as_secs(),
                "another member of the group holds the other partitions; counting resumes when they come back"
            );
        }
        None
    }
}
