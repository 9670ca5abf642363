//! Producing: delivery tracking, backpressure, and the two topics Cardinal writes:
//! results ([`ResultsTopic`]) and dead letters ([`TopicRejects`]).

use super::*;

/// Counts failed deliveries, so that nothing is committed past a lost result.
#[derive(Default)]
pub struct DeliveryTracker {
    pub(super) failed: AtomicU64,
    pub(super) first_error: Mutex<Option<String>>,
    /// Next offset per partition after the last delivered message, when asked for.
    pub(super) ends: Option<Mutex<HashMap<i32, i64>>>,
}

impl ClientContext for DeliveryTracker {}

impl ProducerContext for DeliveryTracker {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let (Ok(msg), Some(ends)) = (result, &self.ends) {
            let mut ends = ends.lock();
            let end = ends.entry(msg.partition()).or_insert(0);
            *end = (*end).max(msg.offset() + 1);
        }
        if let Err((e, msg)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            let mut first = self.first_error.lock();
            first.get_or_insert_with(|| {
                format!(
                    "{} (topic {}, partition {})",
                    e,
                    msg.topic(),
                    msg.partition()
                )
            });
        }
    }
}

impl DeliveryTracker {
    /// A tracker that also remembers the end offset of every partition written to.
    pub fn recording_ends() -> DeliveryTracker {
        DeliveryTracker {
            ends: Some(Mutex::new(HashMap::new())),
            ..DeliveryTracker::default()
        }
    }

    /// Next offset per partition after the last delivered message.
    pub fn ends(&self) -> HashMap<i32, i64> {
        self.ends
            .as_ref()
            .map(|e| e.lock().clone())
            .unwrap_or_default()
    }

    /// Fails if any message could not be delivered.
    pub fn check(&self) -> Result<(), String> {
        match self.failed.load(Ordering::Relaxed) {
            0 => Ok(()),
            n => Err(format!(
                "{n} messages could not be delivered; first error: {}",
                self.first_error.lock().clone().unwrap_or_default()
            )),
        }
    }
}

/// The results topic (`--results-topic`): each window as a JSON record keyed
/// `WINDOW/START`, so that a compacted topic keeps each window's latest version.
/// One handle is a sink of the pipeline; a clone stays with the commit owner,
/// which has every record acknowledged before it commits an offset the record
/// covers ([`KafkaHooks::positions_to_commit`]).
#[derive(Clone)]
pub struct ResultsTopic {
    pub(super) topic: Arc<str>,
    /// The consumer group, named on every record (see [`GROUP_HEADER`]).
    pub(super) group: Arc<str>,
    pub(super) producer: Arc<ThreadedProducer<DeliveryTracker>>,
    pub(super) timeout: Duration,
    pub(super) metrics: Option<Arc<Metrics>>,
}

impl ResultsTopic {
    /// Waits until every record sent is acknowledged; fails if one was refused.
    pub fn acknowledge(&self) -> Result<(), String> {
        acknowledged(
            &self.producer,
            self.timeout,
            &format!("results to {}", self.topic),
        )
    }

    /// Publishes the number of records produced since the last call, and how many
    /// are still unacknowledged, to the metrics.
    pub(super) fn share(&self, produced: u64) {
        if let Some(m) = &self.metrics {
            let unacked = self.producer.in_flight_count().max(0) as u64;
            m.update_kafka(|k| {
                k.results_produced += produced;
                k.results_unacked = unacked;
            });
        }
    }
}

impl Results for ResultsTopic {
    fn write(&mut self, windows: &[WindowResult], calendar: &Calendar) -> Result<(), SinkError> {
        for w in windows {
            let record = Record::new(w, calendar);
            let key = record.key();
            let payload = serde_json::to_string(&record).expect("a record always serializes");
            let headers = OwnedHeaders::new().insert(header(GROUP_HEADER, &self.group));
            send_with_backpressure(
                &self.producer,
                BaseRecord::to(&self.topic)
                    .key(&key)
                    .payload(&payload)
                    .headers(headers),
            )
            .map_err(SinkError::ResultsTopic)?;
        }
        self.share(windows.len() as u64);
        Ok(())
    }
}

/// The dead-letter topic (`--rejects-topic`): every frame not counted is produced
/// there with its original bytes as the value, its Kafka key if it had one, and
/// headers after Kafka Connect's dead-letter convention, so that tools written for
/// Connect's dead-letter queues can read it. The offsets of its frames are committed
/// only once it has acknowledged them (see [`KafkaHooks::positions_to_commit`]).
/// Frames of files (`count --rejects-topic`) carry `cardinal.source` and
/// `cardinal.line` instead of the topic, partition and offset.
#[derive(Clone)]
pub struct TopicRejects {
    pub(super) topic: Arc<str>,
    pub(super) brokers: Arc<str>,
    pub(super) producer: Arc<ThreadedProducer<DeliveryTracker>>,
    pub(super) timeout: Duration,
}

impl TopicRejects {
    /// A producer to `topic`, which must exist (checked now, within `opts.timeout`).
    pub fn connect(opts: &KafkaOptions, topic: &str) -> Result<TopicRejects, PipelineError> {
        let probe: BaseConsumer<ErrorContext> = opts
            .config(&[])
            .create_with_context(ErrorContext)
            .map_err(|e| opts.settings_error("client", &[], e))?;
        partitions_of(&probe, opts, topic)?;
        tracing::debug!(
            event = "client_config",
            client = "dead-letter producer",
            settings = %opts.describe(PRODUCER_DEFAULTS)
        );
        let producer: ThreadedProducer<DeliveryTracker> = opts
            .config(PRODUCER_DEFAULTS)
            .create_with_context(DeliveryTracker::default())
            .map_err(|e| opts.settings_error("producer", PRODUCER_DEFAULTS, e))?;
        Ok(TopicRejects {
            topic: Arc::from(topic),
            brokers: Arc::from(opts.brokers.as_str()),
            producer: Arc::new(producer),
            timeout: opts.timeout,
        })
    }

    pub(super) fn error(&self, message: String) -> SinkError {
        SinkError::RejectsTopic {
            topic: self.topic.to_string(),
            brokers: self.brokers.to_string(),
            message,
        }
    }

    /// Waits until every record sent is acknowledged; fails if one was refused.
    pub fn acknowledge(&self) -> Result<(), SinkError> {
        acknowledged(&self.producer, self.timeout, "dead-letter records")
            .map_err(|message| self.error(message))
    }
}

/// Waits until every record `producer` sent is acknowledged, for at most `timeout`;
/// fails if one was not, or was refused. `what` names the records in the message.
pub(super) fn acknowledged(
    producer: &ThreadedProducer<DeliveryTracker>,
    timeout: Duration,
    what: &str,
) -> Result<(), String> {
    producer
        .flush(timeout)
        .map_err(|e| format!("{what} not acknowledged within {timeout:?}: {e}"))?;
    producer.context().check()
}

impl Reject for TopicRejects {
    fn write(&mut self, frame: Rejected<'_>) -> Result<(), SinkError> {
        let mut raw = frame.raw;
        let (partition, offset, line);
        let mut headers = OwnedHeaders::new_with_capacity(6);
        match frame.position {
            Position::Offset {
                topic,
                partition: p,
                offset: o,
            } => {
                (partition, offset) = (p.to_string(), o.to_string());
                headers = headers
                    .insert(header("__connect.errors.topic", topic))
                    .insert(header("__connect.errors.partition", &partition))
                    .insert(header("__connect.errors.offset", &offset));
            }
            Position::Line { source, line: l } => {
                // A line's `\r` is part of its CRLF terminator, not of the frame.
                raw = raw.strip_suffix(b"\r").unwrap_or(raw);
                line = l.to_string();
                headers = headers
                    .insert(header("cardinal.source", source))
                    .insert(header("cardinal.line", &line));
            }
        }
        headers = headers
            .insert(header("__connect.errors.exception.message", frame.detail))
            .insert(header("cardinal.reason", frame.reason));
        let mut record = BaseRecord::to(&self.topic).payload(raw).headers(headers);
        if let Some(key) = frame.key {
            record = record.key(key);
        }
        send_with_backpressure(&self.producer, record).map_err(|message| self.error(message))
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.acknowledge()
    }
}

/// The header that names the group on each results record: two groups publishing
/// to one results topic would overwrite each other's windows, and this finds them.
pub const GROUP_HEADER: &str = "cardinal.group";

/// Reads the latest record of each partition of the results topic and warns,
/// naming it, of every other group that wrote there (`results_topic_shared`). At
/// start, within a few seconds at most: it never fails the run.
pub(super) fn warn_if_results_shared(opts: &KafkaOptions, topic: &str, group: &str) {
    let mut opts = opts.clone();
    opts.timeout = opts.timeout.min(Duration::from_secs(5));
    let mut others: std::collections::BTreeMap<String, (i32, i64)> = Default::default();
    let read = consume_latest(&opts, topic, |c| {
        let named = (c.headers.iter()).find(|(k, _)| k == GROUP_HEADER);
        if let Some((_, Some(other))) = named {
            let other = String::from_utf8_lossy(other).into_owned();
            if other != group {
                others.insert(other, (c.partition, c.offset));
            }
        }
        true
    });
    if let Err(e) = read {
        tracing::debug!(event = "results_topic_unchecked", topic, error = %e);
    }
    for (other, (partition, offset)) in others {
        tracing::warn!(
            event = "results_topic_shared",
            topic,
            other_group = %other,
            partition,
            offset,
            "another group published to this results topic; two groups running at once \
             overwrite each other's windows: give each group its own results topic"
        );
    }
}

pub(super) fn header<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a str> {
    Header {
        key,
        value: Some(value),
    }
}

/// The producer settings Cardinal uses, with `-X` overrides applied.
pub fn producer_config(opts: &KafkaOptions) -> ClientConfig {
    opts.config(PRODUCER_DEFAULTS)
}

/// Sends, waiting while librdkafka's local queue is full instead of failing.
pub fn send_with_backpressure<K, P>(
    producer: &ThreadedProducer<DeliveryTracker>,
    mut record: BaseRecord<'_, K, P>,
) -> Result<(), String>
where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                std::thread::sleep(Duration::from_millis(2));
            }
            Err((e, back)) => return Err(format!("cannot produce to {}: {e}", back.topic)),
        }
    }
}
