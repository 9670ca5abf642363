//! Where a partition that comes to this process resumes: the latest `lane/P`
//! record on the partials topic. Its owner writes one at every checkpoint while it
//! holds the partition, and a last one, marked released, when it lets go (after a
//! rebalance took it, or on shutdown) once everything it read of it is counted.
//! The new owner waits for that release, or for the owner's silence to last a
//! session timeout (it has died: the group has evicted it), and starts at the
//! record's next offset with the frames it had read but not counted.

use super::records::{Entry, HeldRecord, LaneRecord, decode};
use super::*;

/// What the new owner of a partition does with its latest lane record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// No owner has written anything: start where `--from` says.
    Fresh,
    /// Start at this offset (`None`: where `--from` says), counting these first.
    At(Option<i64>, Vec<HeldRecord>),
    /// Its owner still holds it, or is letting it go: ask again shortly.
    Wait,
}

/// The rule. `releasing_here`: this process is letting the partition go itself
/// (a rebalance that gives it back at once); `silence`: how long an owner may say
/// nothing before it is taken for dead.
pub fn resume(
    record: Option<&LaneRecord>,
    me: &str,
    releasing_here: bool,
    now_ms: u64,
    silence: Duration,
) -> Resume {
    let Some(r) = record else {
        return Resume::Fresh;
    };
    let at = || Resume::At(r.next, r.held.clone());
    if r.instance == me {
        return if releasing_here { Resume::Wait } else { at() };
    }
    let silent_for = Duration::from_millis(now_ms.saturating_sub(r.at_ms));
    if r.released || r.ended || silent_for >= silence {
        at()
    } else {
        Resume::Wait
    }
}

/// The lane records of the partials topic, kept current by reading it on demand.
pub struct Handovers {
    consumer: BaseConsumer<ErrorContext>,
    topic: String,
    timeout: Duration,
    lanes: HashMap<i32, LaneRecord>,
}

impl Handovers {
    pub fn open(opts: &KafkaOptions, topic: &str) -> Result<Handovers, PipelineError> {
        const DEFAULTS: &[(&str, &str)] = &[
            ("enable.auto.commit", "false"),
            ("fetch.wait.max.ms", "5"),
            ("group.id", "cardinal-handovers"),
        ];
        let consumer: BaseConsumer<ErrorContext> = opts
            .config(DEFAULTS)
            .create_with_context(ErrorContext)
            .map_err(|e| opts.settings_error("handover consumer", DEFAULTS, e))?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Beginning)
            .map_err(|e| live(format!("cannot assign {topic}[0]: {e}")))?;
        consumer
            .assign(&tpl)
            .map_err(|e| live(format!("cannot assign {topic}[0]: {e}")))?;
        Ok(Handovers {
            consumer,
            topic: topic.to_string(),
            timeout: opts.timeout,
            lanes: HashMap::new(),
        })
    }

    /// Reads what was written since the last call, up to the end as of now.
    pub fn catch_up(&mut self) -> Result<(), String> {
        let (low, high) = self
            .consumer
            .fetch_watermarks(&self.topic, 0, self.timeout)
            .map_err(|e| format!("cannot read the end of {}[0]: {e}", self.topic))?;
        let deadline = Instant::now() + self.timeout;
        loop {
            let at = (self.consumer.position().ok())
                .and_then(|tpl| {
                    tpl.find_partition(&self.topic, 0)
                        .and_then(|e| e.offset().to_raw())
                })
                .unwrap_or(-1);
            if at >= high || high <= low.max(0) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{}[0] not read to its end ({high}) within {:?}",
                    self.topic, self.timeout
                ));
            }
            match self.consumer.poll(Duration::from_millis(50)) {
                Some(Ok(m)) => {
                    if let Ok(Entry::Lane(p, record)) =
                        decode(m.key().unwrap_or_default(), m.payload())
                    {
                        match record {
                            Some(r) => self.lanes.insert(p, r),
                            None => self.lanes.remove(&p),
                        };
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) | None => {}
                Some(Err(e)) => return Err(format!("cannot read {}: {e}", self.topic)),
            }
        }
    }

    pub fn lane(&self, partition: i32) -> Option<&LaneRecord> {
        self.lanes.get(&partition)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(instance: &str, at_ms: u64, released: bool) -> LaneRecord {
        LaneRecord {
            instance: instance.into(),
            at_ms,
            next: Some(42),
            held: vec![HeldRecord {
                offset: 40,
                key: None,
                raw: b"{}".to_vec(),
            }],
            watermark: None,
            closed_through: None,
            idle: false,
            quiet_ms: 0,
            ended: false,
            released,
        }
    }

    #[test]
    fn a_partition_moves_only_once_its_owner_lets_go_or_falls_silent() {
        let s = Duration::from_secs(10);
        let at = |r: &LaneRecord| Resume::At(r.next, r.held.clone());
        assert_eq!(resume(None, "b", false, 0, s), Resume::Fresh);
        // Another owner, still speaking: wait; released, or silent a session: take it.
        let held = record("a", 1_000, false);
        assert_eq!(resume(Some(&held), "b", false, 5_000, s), Resume::Wait);
        assert_eq!(resume(Some(&held), "b", false, 11_000, s), at(&held));
        let let_go = record("a", 1_000, true);
        assert_eq!(resume(Some(&let_go), "b", false, 1_001, s), at(&let_go));
        // Our own record: ours to take, unless our own release is still on its way.
        let ours = record("b", 1_000, false);
        assert_eq!(resume(Some(&ours), "b", true, 1_001, s), Resume::Wait);
        assert_eq!(resume(Some(&ours), "b", false, 1_001, s), at(&ours));
    }
}
