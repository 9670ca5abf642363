//! Kafka: the consumer that feeds the pipeline (`cardinal run`), the producer that
//! publishes results to a topic, and `cardinal produce` for loading frames.
//!
//! Delivery: a frame's offset is committed only once every window it counts in has
//! been emitted *and* the results producer has flushed (every record acked). That is
//! at-least-once; results are keyed `WINDOW/START` so a compacted topic keeps the
//! latest version of each window, and unique counts are idempotent under replay.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};

use crate::aggregator::WindowResult;
use crate::checkpoint::{Checkpoint, Checkpointing, InputPosition, StateDir};
use crate::client_config::{PropertiesFile, masked};
use crate::emitter::Record;
use crate::metrics::Metrics;
use crate::parser::{TsFrom, TsUnit, UidFrom};
use crate::pipeline::{
    self, CountConfig, CountReport, Feed, Hooks, PipelineError, Sinks, StateView,
};
use crate::sink::{Position, Reject, Rejected, SinkError};
use crate::source::{CHUNK_BYTES, Chunk, RecordFields};
use crate::watermark::WallClock;
use crate::window::Calendar;

/// Connection settings shared by every command that talks to Kafka.
#[derive(Clone)]
pub struct KafkaOptions {
    pub brokers: String,
    /// `-F FILE` librdkafka properties, applied after Cardinal's defaults and
    /// before `properties`.
    pub client_config: Option<PropertiesFile>,
    /// `-X key=value` librdkafka properties, applied last so they win.
    pub properties: Vec<(String, String)>,
    /// How long to wait for the cluster before giving up with an error.
    pub timeout: Duration,
}

/// Never shows a secret, whatever prints the options.
impl std::fmt::Debug for KafkaOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaOptions")
            .field("brokers", &self.brokers)
            .field("client_config", &self.client_config)
            .field(
                "properties",
                &self
                    .properties
                    .iter()
                    .map(|(k, v)| (k.as_str(), masked(k, v)))
                    .collect::<Vec<_>>(),
            )
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl KafkaOptions {
    /// Options for `brokers`, with nothing else set.
    pub fn new(brokers: impl Into<String>, timeout: Duration) -> KafkaOptions {
        KafkaOptions {
            brokers: brokers.into(),
            client_config: None,
            properties: Vec::new(),
            timeout,
        }
    }

    /// Every property in the order it is applied, with where it came from:
    /// Cardinal's defaults, then the `-F` file, then `--brokers`, then `-X`.
    fn layered<'a>(
        &'a self,
        defaults: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = (&'a str, &'a str, Origin<'a>)> {
        let file = self.client_config.iter().flat_map(|f| {
            f.entries
                .iter()
                .map(move |(k, v, n)| (k.as_str(), v.as_str(), Origin::File(&f.path, *n)))
        });
        defaults
            .iter()
            .map(|(k, v)| (*k, *v, Origin::Default))
            .chain(file)
            .chain(std::iter::once((
                "bootstrap.servers",
                self.brokers.as_str(),
                Origin::Brokers,
            )))
            .chain(
                self.properties
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str(), Origin::Flag)),
            )
    }

    fn config(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut c = ClientConfig::new();
        // Warnings reach the client contexts (never through the `log` crate, which
        // is off here), so an error can say why a broker could not be reached.
        c.set_log_level(rdkafka::config::RDKafkaLogLevel::Warning);
        for (k, v, _) in self.layered(defaults) {
            c.set(k, v);
        }
        c
    }

    /// The effective settings as they may be logged: secrets masked.
    fn describe(&self, defaults: &[(&str, &str)]) -> String {
        let mut last: Vec<(&str, &str)> = Vec::new();
        for (k, v, _) in self.layered(defaults) {
            match last.iter_mut().find(|(key, _)| *key == k) {
                Some(entry) => entry.1 = v,
                None => last.push((k, v)),
            }
        }
        last.iter()
            .map(|(k, v)| format!("{k}={}", masked(k, v)))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// A client that could not be created, in words that name the property and
    /// where it was set, never its value: rdkafka's own message for a bad
    /// property quotes the value, which may be a password (even under a
    /// misspelt key, which no list of secret keys would recognise).
    fn settings_error(
        &self,
        what: &str,
        defaults: &[(&str, &str)],
        e: KafkaError,
    ) -> PipelineError {
        match e {
            KafkaError::ClientConfig(_, desc, key, value) => {
                let desc = if value.is_empty() {
                    desc
                } else {
                    desc.replace(&value, "…")
                };
                let origin = self
                    .layered(defaults)
                    .filter(|(k, _, _)| *k == key)
                    .last()
                    .map_or_else(String::new, |(_, _, o)| format!(" ({key}: {o})"));
                live(format!("bad Kafka {what} settings: {desc}{origin}"))
            }
            other => live(format!("bad Kafka {what} settings: {other}")),
        }
    }
}

/// Where a client property was set, for messages.
#[derive(Debug, Clone, Copy)]
enum Origin<'a> {
    Default,
    File(&'a std::path::Path, usize),
    Brokers,
    Flag,
}

impl std::fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Default => write!(f, "a default of Cardinal's"),
            Origin::File(path, line) => write!(f, "set in {} line {line}", path.display()),
            Origin::Brokers => write!(f, "from --brokers"),
            Origin::Flag => write!(f, "set with -X"),
        }
    }
}

/// Where `run` starts in partitions it has no position for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StartFrom {
    Earliest,
    Latest,
    /// The group's committed offset; earliest if there is none.
    Committed,
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub kafka: KafkaOptions,
    pub topic: String,
    pub group: String,
    pub results_topic: Option<String>,
    /// `--rejects-topic`: the dead-letter topic every frame not counted goes to.
    pub rejects_topic: Option<String>,
    pub from: StartFrom,
    pub until: Until,
    pub commit_interval: Duration,
    /// Counts the frames handed to the pipeline, for callers that pace a producer.
    pub fed: Option<Arc<AtomicU64>>,
    /// Checkpoint to (and resume from) a state directory.
    pub state: Option<StateOptions>,
    /// A bounded run that reads nothing for this long fails.
    pub stall_timeout: Duration,
}

/// End offsets per partition, set by whoever knows them.
pub type SharedOffsets = Arc<Mutex<Option<HashMap<i32, i64>>>>;

/// When `run` stops by itself.
#[derive(Debug, Clone)]
pub enum Until {
    /// Never: a live consumer, stopped by SIGINT or SIGTERM.
    Forever,
    /// `--until-end`: the end offsets as of start; everything is flushed as final.
    EndAtStart,
    /// Offsets set later by whoever produces the data (the demo knows them from
    /// its delivery reports, which is also right on brokers whose ListOffsets is not).
    Target(SharedOffsets),
}

/// Consumer defaults. `fetch.wait.max.ms` matters most: some brokers (Tansu) wait
/// at least half of it on every fetch, and librdkafka's 500 ms caps a consumer at
/// about 11k messages/s there. Real Kafka does not need it; `-X` overrides it.
const CONSUMER_DEFAULTS: &[(&str, &str)] = &[
    ("enable.auto.commit", "false"),
    ("enable.auto.offset.store", "false"),
    ("auto.offset.reset", "earliest"),
    ("fetch.wait.max.ms", "5"),
    ("session.timeout.ms", "10000"),
    ("partition.assignment.strategy", "range"),
];

/// Producer defaults for throughput: large batches, a short linger.
const PRODUCER_DEFAULTS: &[(&str, &str)] = &[
    ("linger.ms", "20"),
    ("batch.size", "1000000"),
    ("queue.buffering.max.kbytes", "1048576"),
    ("queue.buffering.max.messages", "1000000"),
    ("partitioner", "murmur2_random"),
    ("acks", "all"),
];

/// Consumer callbacks: assigns partitions from our own positions when we have them
/// (so a rebalance that gives a partition back does not re-read what we counted),
/// and records assignments for the feeder to forward in order. A revoked partition
/// is not dropped from the watermark: it keeps holding results back until it goes
/// idle, so that a short rebalance that gives it back makes none of its frames late.
struct RunContext {
    topic: String,
    from: StartFrom,
    positions: Mutex<HashMap<i32, i64>>,
    assigned: Mutex<Vec<i32>>,
    /// Whether the group has given us any partition. Wall-clock time is only passed
    /// on while it has: waiting for a rebalance (a restart waits out the dead
    /// member's session) must not make partitions look idle.
    holding: AtomicBool,
    /// `--http`: consumer lag (from librdkafka's statistics), assignment, broker state.
    metrics: Option<Arc<Metrics>>,
    /// Every partition of the topic. An assignment without all of them means another
    /// member of the group holds the rest: this process would count part of the
    /// stream and publish partial counts as if they were whole.
    all_partitions: std::sync::OnceLock<Vec<i32>>,
    /// Since when, and with which partitions, the assignment has been incomplete.
    /// Its partitions are paused and nothing is counted until it is complete again.
    incomplete: Mutex<Option<(Instant, Vec<i32>)>>,
    /// Whether this process has ever held every partition: the one that has keeps
    /// waiting for the newcomer to leave; a newcomer gives up.
    ever_complete: AtomicBool,
    /// This process gave up waiting for the whole topic (the broker is fine).
    gave_up_shared: AtomicBool,
    /// The text of the last error the client reported. rdkafka hands a consumer
    /// error to `poll` as a bare code, after passing its text here: the text is
    /// what says which batch could not be decoded.
    last_error: Mutex<Option<String>>,
}

impl ClientContext for RunContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        client_log(level, fac, log_message);
    }
    fn error(&self, error: KafkaError, reason: &str) {
        client_error(&error, reason);
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.to_string());
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
        let positions = self.positions.lock().expect("positions lock");
        let mut lag = std::collections::BTreeMap::new();
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
            }
        }
        let up = stats.brokers.values().any(|b| b.state == "UP");
        m.update_kafka(|k| {
            k.consumer_lag = lag;
            if up {
                k.broker_down = None;
            }
        });
    }
}

/// A client context that only remembers errors, for probes and simple consumers.
pub struct ErrorContext;

impl ClientContext for ErrorContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        client_log(level, fac, log_message);
    }
    fn error(&self, error: KafkaError, reason: &str) {
        client_error(&error, reason);
    }
}

impl ConsumerContext for ErrorContext {}

/// What librdkafka said went wrong lately (an SSL handshake, a refused
/// connection), a few distinct messages, so that "cannot reach Kafka" can say why.
static LAST_CLIENT_ERRORS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn remember_client_error(message: &str) {
    let mut all = LAST_CLIENT_ERRORS.lock().unwrap_or_else(|e| e.into_inner());
    if !all.iter().any(|m| m == message) {
        if all.len() == 3 {
            all.remove(0);
        }
        all.push(message.to_string());
    }
}

fn client_log(level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
    use rdkafka::config::RDKafkaLogLevel as L;
    if matches!(
        level,
        L::Emerg | L::Alert | L::Critical | L::Error | L::Warning
    ) {
        tracing::debug!(event = "client_log", facility = fac, message);
        remember_client_error(message);
    }
}

fn client_error(error: &KafkaError, reason: &str) {
    tracing::debug!(event = "client_error", error = %error, reason);
    remember_client_error(reason);
}

/// The last client error, as a clause for an error message.
fn last_client_error() -> String {
    let all = LAST_CLIENT_ERRORS.lock().unwrap_or_else(|e| e.into_inner());
    if all.is_empty() {
        String::new()
    } else {
        format!(" (the client said: {})", all.join("; "))
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
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let positions = self.positions.lock().expect("positions lock");
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
                let mut incomplete = self.incomplete.lock().expect("incomplete lock");
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
                    self.assigned.lock().expect("assigned lock").extend(parts);
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

/// Counts failed deliveries, so that nothing is committed past a lost result.
#[derive(Default)]
pub struct DeliveryTracker {
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
    /// Next offset per partition after the last delivered message, when asked for.
    ends: Option<Mutex<HashMap<i32, i64>>>,
}

impl ClientContext for DeliveryTracker {}

impl ProducerContext for DeliveryTracker {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let (Ok(msg), Some(ends)) = (result, &self.ends) {
            let mut ends = ends.lock().expect("ends lock");
            let end = ends.entry(msg.partition()).or_insert(0);
            *end = (*end).max(msg.offset() + 1);
        }
        if let Err((e, msg)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            let mut first = self.first_error.lock().expect("error lock");
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
            .map(|e| e.lock().expect("ends lock").clone())
            .unwrap_or_default()
    }

    /// Fails if any message could not be delivered.
    pub fn check(&self) -> Result<(), String> {
        match self.failed.load(Ordering::Relaxed) {
            0 => Ok(()),
            n => Err(format!(
                "{n} messages could not be delivered; first error: {}",
                self.first_error
                    .lock()
                    .expect("error lock")
                    .clone()
                    .unwrap_or_default()
            )),
        }
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
    topic: Arc<str>,
    brokers: Arc<str>,
    producer: Arc<ThreadedProducer<DeliveryTracker>>,
    timeout: Duration,
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

    fn error(&self, message: String) -> SinkError {
        SinkError::RejectsTopic {
            topic: self.topic.to_string(),
            brokers: self.brokers.to_string(),
            message,
        }
    }

    /// Waits until every record sent is acknowledged; fails if one was refused.
    pub fn acknowledge(&self) -> Result<(), SinkError> {
        let fail = |message| self.error(message);
        self.producer.flush(self.timeout).map_err(|e| {
            fail(format!(
                "dead-letter records not acknowledged within {:?}: {e}",
                self.timeout
            ))
        })?;
        self.producer.context().check().map_err(fail)
    }
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

fn header<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a str> {
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

fn live(msg: impl Into<String>) -> PipelineError {
    PipelineError::Live(msg.into())
}

/// Checks that the brokers answer and that `topic` exists; returns its partitions.
fn partitions_of<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    opts: &KafkaOptions,
    topic: &str,
) -> Result<Vec<i32>, PipelineError> {
    let md = consumer.fetch_metadata(Some(topic), opts.timeout).map_err(|e| {
        // The client's own errors and logs arrive as events on its queue: serve them,
        // so that the contexts record why (an SSL handshake, a refused connection).
        for _ in 0..5 {
            let _ = consumer.poll(Duration::from_millis(10));
        }
        live(format!(
            "cannot reach Kafka at {} within {:?}: {e}{}; check --brokers, that the broker is up, \
             and the security settings (-X security.protocol, ssl.*, sasl.*), or raise --timeout",
            opts.brokers,
            opts.timeout,
            last_client_error()
        ))
    })?;
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| {
            live(format!(
                "topic {topic:?} does not exist on {}",
                opts.brokers
            ))
        })?;
    if let Some(err) = t.error() {
        return Err(live(format!(
            "topic {topic:?} is not available on {}: {err:?}; create it first (Cardinal does not auto-create topics)",
            opts.brokers
        )));
    }
    if t.partitions().is_empty() {
        return Err(live(format!(
            "topic {topic:?} does not exist on {} (no partitions)",
            opts.brokers
        )));
    }
    Ok(t.partitions().iter().map(|p| p.id()).collect())
}

/// `cardinal run`: consume frames, count, publish, commit.
pub fn run(
    opts: &RunOptions,
    config: &CountConfig,
    sinks: &mut Sinks,
    shutdown: Arc<AtomicBool>,
) -> Result<CountReport, PipelineError> {
    // A checkpoint, if any, says where every partition it has seen resumes.
    let mut restored = None;
    let mut positions = HashMap::new();
    let checkpoints = match &opts.state {
        Some(st) => {
            let dir = StateDir::open(&st.dir).map_err(|e| live(e.to_string()))?;
            if let Some(cp) = dir
                .load(&st.identity, st.reset)
                .map_err(|e| live(e.to_string()))?
            {
                let InputPosition::Kafka { offsets } = &cp.input else {
                    return Err(live(format!(
                        "{} holds a checkpoint of files, not of Kafka",
                        st.dir.display()
                    )));
                };
                positions.extend(offsets.iter().copied());
                tracing::info!(event = "checkpoint_restored", offsets = ?offsets, windows = cp.state.windows.len());
                restored = Some(cp.state);
            }
            wait_out_a_dead_member(&dir, &opts.kafka, &shutdown);
            dir.mark_member().map_err(|e| live(e.to_string()))?;
            Some(Checkpointing::new(dir, st.identity.clone()).with_metrics(config.metrics.clone()))
        }
        None => None,
    };
    let context = RunContext {
        topic: opts.topic.clone(),
        from: opts.from,
        positions: Mutex::new(positions),
        assigned: Mutex::new(Vec::new()),
        holding: AtomicBool::new(false),
        metrics: config.metrics.clone(),
        all_partitions: std::sync::OnceLock::new(),
        incomplete: Mutex::new(None),
        ever_complete: AtomicBool::new(false),
        gave_up_shared: AtomicBool::new(false),
        last_error: Mutex::new(None),
    };
    if let Some(m) = &config.metrics {
        // Not ready until the group gives us partitions.
        m.update_kafka(|_| {});
    }
    let mut cfg = opts.kafka.config(CONSUMER_DEFAULTS);
    cfg.set("group.id", &opts.group);
    if config.metrics.is_some() && cfg.get("statistics.interval.ms").is_none() {
        // Consumer lag for the metrics comes from librdkafka's statistics.
        cfg.set("statistics.interval.ms", "1000");
    }
    tracing::debug!(
        event = "client_config",
        client = "consumer",
        settings = %opts.kafka.describe(CONSUMER_DEFAULTS)
    );
    let consumer: Arc<BaseConsumer<RunContext>> = Arc::new(
        cfg.create_with_context(context)
            .map_err(|e| opts.kafka.settings_error("consumer", CONSUMER_DEFAULTS, e))?,
    );
    let partitions = partitions_of(&consumer, &opts.kafka, &opts.topic)?;
    let _ = consumer.context().all_partitions.set(partitions.clone());
    let producer = match &opts.results_topic {
        Some(t) => {
            partitions_of(&consumer, &opts.kafka, t)?;
            tracing::debug!(
                event = "client_config",
                client = "producer",
                settings = %opts.kafka.describe(PRODUCER_DEFAULTS)
            );
            let p: ThreadedProducer<DeliveryTracker> = opts
                .kafka
                .config(PRODUCER_DEFAULTS)
                .create_with_context(DeliveryTracker::default())
                .map_err(|e| opts.kafka.settings_error("producer", PRODUCER_DEFAULTS, e))?;
            Some((t.clone(), p))
        }
        None => None,
    };
    let rejects = match &opts.rejects_topic {
        Some(t) => {
            let sink = TopicRejects::connect(&opts.kafka, t)?;
            sinks.rejects.push(Box::new(sink.clone()));
            Some(sink)
        }
        None => None,
    };
    let end_offsets = if matches!(opts.until, Until::EndAtStart) {
        let mut ends = HashMap::new();
        for p in &partitions {
            let (low, high) = consumer
                .fetch_watermarks(&opts.topic, *p, opts.kafka.timeout)
                .map_err(|e| {
                    live(format!(
                        "cannot read the end offsets of {}[{p}]: {e}",
                        opts.topic
                    ))
                })?;
            ends.insert(*p, (low, high));
        }
        tracing::info!(event = "backfill_target", topic = %opts.topic, ends = ?ends);
        Some(ends)
    } else {
        None
    };
    consumer
        .subscribe(&[&opts.topic])
        .map_err(|e| live(format!("cannot subscribe to {}: {e}", opts.topic)))?;

    let mut hooks = KafkaHooks {
        consumer: consumer.clone(),
        topic: opts.topic.clone(),
        producer,
        rejects,
        timeout: opts.kafka.timeout,
        session_timeout: session_timeout(&opts.kafka),
        commit_interval: opts.commit_interval,
        last_commit: Instant::now(),
        committed: HashMap::new(),
        commit_error: None,
        in_flight: None,
        checkpoints,
        metrics: config.metrics.clone(),
    };
    let feeder_consumer = consumer.clone();
    let topic: Arc<str> = Arc::from(opts.topic.as_str());
    let target = match &opts.until {
        Until::Target(t) => Some(t.clone()),
        _ => None,
    };
    let settings = FeederSettings {
        end_offsets: EndOffsets {
            at_start: end_offsets,
            target,
        },
        fed: opts.fed.clone(),
        max_frame: config.max_frame_bytes,
        keep: RecordFields {
            keys: opts.rejects_topic.is_some() || config.frames.uid_from() == UidFrom::Key,
            timestamps: config.frames.ts_from() == TsFrom::RecordTimestamp,
        },
        stall: Stall::new(opts.kafka.brokers.clone(), opts.stall_timeout),
        shared: Shared {
            group: opts.group.clone(),
            // Long enough for a crashed member's session to expire and its partitions
            // to come back; a live member of the group never lets them go.
            give_up_after: session_timeout(&opts.kafka) + Duration::from_secs(15),
            last_warning: None,
        },
    };
    let result = pipeline::run(config, sinks, &mut hooks, restored, move |feed| {
        feed_from_kafka(&feeder_consumer, topic, settings, &shutdown, feed)
    });
    consumer.unsubscribe();
    let mut report = match result {
        Ok(report) => report,
        Err(e) if consumer.context().gave_up_shared.load(Ordering::Relaxed) => {
            // The broker is fine: leave the group now, so that the member that stays
            // gets the whole topic back at once, not after our session expires.
            drop(hooks);
            drop(consumer);
            return Err(e);
        }
        Err(e) => {
            // Closing a consumer waits for the group leave, for ever if the broker is
            // gone (the error may be just that). The process is about to exit with
            // the error: leave the client to it rather than hang on the way out.
            std::mem::forget(hooks);
            std::mem::forget(consumer);
            return Err(e);
        }
    };
    if let Some(cp) = &hooks.checkpoints {
        report.checkpoint_summary = cp.summary();
        // The group was left cleanly: the next start has nothing to wait out.
        cp.dir.clear_member();
    }
    Ok(report)
}

/// The consumer group's session timeout, as configured (librdkafka's default: 45 s).
fn session_timeout(opts: &KafkaOptions) -> Duration {
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
fn wait_out_a_dead_member(dir: &StateDir, kafka: &KafkaOptions, shutdown: &AtomicBool) {
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

/// Where a bounded run ends: `(low, high)` per partition as of start, or a target
/// filled in later.
struct EndOffsets {
    at_start: Option<HashMap<i32, (i64, i64)>>,
    target: Option<SharedOffsets>,
}

impl EndOffsets {
    fn get(&self) -> Option<HashMap<i32, (i64, i64)>> {
        if let Some(e) = &self.at_start {
            return Some(e.clone());
        }
        let target = self.target.as_ref()?.lock().expect("target lock").clone()?;
        Some(target.into_iter().map(|(p, high)| (p, (0, high))).collect())
    }
}

fn unix_now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// What the feeder needs besides its consumer and the pipeline.
struct FeederSettings {
    end_offsets: EndOffsets,
    /// Counts the frames handed on, for a producer that paces itself on them.
    fed: Option<Arc<AtomicU64>>,
    max_frame: usize,
    /// What to keep of each record besides its value: its key for the dead-letter
    /// topic or as the uid, its timestamp as the ts.
    keep: RecordFields,
    stall: Stall,
    shared: Shared,
}

/// The group has split the topic between this process and another member: what
/// the feeder does about it.
struct Shared {
    group: String,
    give_up_after: Duration,
    last_warning: Option<Instant>,
}

impl Shared {
    const WARN_EVERY: Duration = Duration::from_secs(30);

    /// Why the run must stop, if it has waited too long for the whole topic. A
    /// process that has held every partition waits for ever (the newcomer gives
    /// up and leaves); one that never has gives up.
    fn check(&mut self, context: &RunContext, topic: &str) -> Option<String> {
        let incomplete = context.incomplete.lock().expect("incomplete lock");
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

/// The feeder thread: polls, batches messages into chunks, forwards assignments
/// and wall-clock ticks, and decides when a bounded run is complete.
fn feed_from_kafka(
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
    let mut positions: HashMap<i32, i64> = HashMap::new();
    let mut last_progress = Instant::now();
    let mut read = 0u64;
    let mut read_at_last_progress = 0u64;
    let mut finished: std::collections::HashSet<i32> = std::collections::HashSet::new();
    let mut ends_now = None;
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
                    let payload = msg.payload().unwrap_or(b"");
                    let (lane, offset) = (p as u32, msg.offset() as u64);
                    if keep == RecordFields::default() {
                        chunk.push_record(lane, offset, payload, max_frame);
                    } else {
                        let key = if keep.keys { msg.key() } else { None };
                        let ts = if keep.timestamps {
                            msg.timestamp().to_millis()
                        } else {
                            None
                        };
                        chunk.push_kafka_record(lane, offset, key, ts, payload, max_frame);
                    }
                    positions.insert(p, msg.offset() + 1);
                    // Shared at once: a rebalance inside the next poll must see it.
                    consumer
                        .context()
                        .positions
                        .lock()
                        .expect("positions lock")
                        .insert(p, msg.offset() + 1);
                    read += 1;
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) => stall.progress(),
            Some(Err(e)) => {
                // librdkafka retries transient errors itself: say so once per interval.
                stall.error(&e);
                if matches!(e, KafkaError::MessageConsumptionFatal(_)) {
                    feed.fail(live(format!("fatal consumer error on {topic}: {e}")));
                    return;
                }
                let text = consumer
                    .context()
                    .last_error
                    .lock()
                    .expect("error lock")
                    .take();
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
        let assigned: Vec<i32> =
            std::mem::take(&mut *consumer.context().assigned.lock().expect("assigned lock"));
        if !assigned.is_empty() {
            if !feed.assigned(assigned.iter().map(|p| *p as u32).collect()) {
                return;
            }
            // A new assignment starts unpaused, at our positions: pause again what
            // alignment asks for.
            paused_now.clear();
            paused_from.clear();
            paused_version = u64::MAX;
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
                    let at_end = high <= low || positions.get(p).is_some_and(|pos| pos >= high);
                    if at_end && finished.insert(*p) {
                        done.push(*p);
                    }
                }
            }
        }
        let full = chunk.data().len() >= CHUNK_BYTES || chunk.record_count() >= 4096;
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
            if let Some(why) = stall.check(ends_now.is_some(), holding) {
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
                        let eta = if rate > 0.0 {
                            to_go as f64 / rate
                        } else {
                            f64::INFINITY
                        };
                        crate::say!(
                            "cardinal: {topic}: {read} frames read, {rate:.0} frames/s, {to_go} to the end offsets (about {eta:.0} s)"
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
                && backfill_done(consumer, &topic, ends, &finished, &paused_from)
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

/// Pauses the partitions that watermark alignment wants paused and resumes the
/// others that were: reading speed must not decide what is late.
fn align_partitions(
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

/// A batch the client could not decode, as its error text describes it: librdkafka
/// names the codec and the offset, but the partition only travels with the error
/// event, which rdkafka does not pass on.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BadBatch {
    /// The attribute's codec number, when the error says it.
    codec: Option<u8>,
    offset: i64,
    text: String,
}

impl BadBatch {
    /// A decompression failure or an unsupported codec (`Decompression (codec 0x4)
    /// of message at 25 of 41 bytes failed: …`), or a batch that fails its CRC:
    /// errors that refetching the same bytes cannot cure.
    fn parse(code: RDKafkaErrorCode, text: &str) -> Option<BadBatch> {
        use RDKafkaErrorCode as C;
        if !matches!(code, C::BadCompression | C::NotImplemented | C::BadMessage) {
            return None;
        }
        let number_after = |marker: &str| -> Option<&str> {
            let rest = &text[text.find(marker)? + marker.len()..];
            let end = rest
                .find(|c: char| !c.is_ascii_alphanumeric())
                .unwrap_or(rest.len());
            Some(&rest[..end])
        };
        let codec = number_after("(codec 0x").and_then(|h| u8::from_str_radix(h, 16).ok());
        let offset = number_after("message at ")
            .or_else(|| number_after("offset "))
            .and_then(|n| n.parse().ok())?;
        Some(BadBatch {
            codec,
            offset,
            text: text.to_string(),
        })
    }

    fn codec_name(&self) -> String {
        match self.codec {
            Some(0) => "no compression".into(),
            Some(1) => "gzip".into(),
            Some(2) => "snappy".into(),
            Some(3) => "lz4".into(),
            Some(4) => "zstd".into(),
            Some(n) => format!("unknown codec {n}"),
            None => "codec not named by the client".into(),
        }
    }
}

/// Undecodable batches seen, by offset, until it is clear which partition holds
/// each: librdkafka fetches a bad batch again and again (and fails each time),
/// while healthy partitions move on.
#[derive(Default)]
struct BadBatches {
    seen: HashMap<i64, Sighting>,
}

struct Sighting {
    first: Instant,
    times: u32,
    /// Partitions that may hold the batch, with their positions when first seen.
    candidates: Vec<(i32, Option<i64>)>,
}

impl BadBatches {
    /// Enough sightings to name the partition: 2 over at least 1 s (so that a
    /// partition that merely passed through the same offset has moved on), or 5 s.
    const CONFIRM: Duration = Duration::from_secs(1);
    const GIVE_UP: Duration = Duration::from_secs(5);

    /// Another failure for `bad`, on one of `assigned` (not yet read to the end).
    /// Returns the error that ends the run once the partition is known.
    fn sighted(
        &mut self,
        bad: BadBatch,
        assigned: impl Iterator<Item = i32>,
        positions: &HashMap<i32, i64>,
        topic: &str,
    ) -> Option<String> {
        let now: Vec<(i32, Option<i64>)> =
            assigned.map(|p| (p, positions.get(&p).copied())).collect();
        let s = self.seen.entry(bad.offset).or_insert_with(|| {
            // The partition stuck at the batch has read up to it, or nothing yet; one
            // that started inside it (a committed offset mid-batch) is past it.
            let at: Vec<_> = now
                .iter()
                .filter(|(_, pos)| pos.is_none_or(|p| p == bad.offset))
                .copied()
                .collect();
            let candidates = if at.is_empty() {
                now.iter()
                    .filter(|(_, pos)| pos.is_some_and(|p| p > bad.offset))
                    .copied()
                    .collect()
            } else {
                at
            };
            Sighting {
                first: Instant::now(),
                times: 0,
                candidates,
            }
        });
        s.times += 1;
        // A partition that moved is not stuck.
        s.candidates
            .retain(|(p, pos)| now.iter().any(|(q, now_pos)| q == p && now_pos == pos));
        let waited = s.first.elapsed();
        let known = s.candidates.len() == 1 && s.times >= 2 && waited >= Self::CONFIRM;
        if !known && waited < Self::GIVE_UP {
            return None;
        }
        let parts: Vec<String> = s.candidates.iter().map(|(p, _)| p.to_string()).collect();
        let which = match parts.len() {
            0 => "an unknown partition".to_string(),
            1 => format!("partition {}", parts[0]),
            _ => format!("one of partitions {}", parts.join(", ")),
        };
        Some(format!(
            "cannot decode the batch at offset {} of {topic} ({which}, compressed with {}); \
             the client said: {}. Fetching it again cannot help: the producer used a codec this \
             build cannot read, or the batch is corrupt. Skipping it would lose its frames \
             silently; to skip it on purpose, commit an offset past it for the group",
            bad.offset,
            bad.codec_name(),
            bad.text
        ))
    }
}

/// Watches a consumer for outages: a bounded run that reads nothing for the stall
/// timeout fails, naming the cause; a live one logs once per interval and goes on.
struct Stall {
    brokers: String,
    timeout: Duration,
    last_progress: Instant,
    errors: u64,
    last_error: Option<String>,
    last_report: Option<Instant>,
}

impl Stall {
    const REPORT_EVERY: Duration = Duration::from_secs(30);

    fn new(brokers: String, timeout: Duration) -> Stall {
        Stall {
            brokers,
            timeout,
            last_progress: Instant::now(),
            errors: 0,
            last_error: None,
            last_report: None,
        }
    }

    fn progress(&mut self) {
        if self.errors > 0 {
            tracing::info!(
                event = "consumer_recovered",
                errors = self.errors,
                after_s = self.last_progress.elapsed().as_secs()
            );
            self.errors = 0;
            self.last_report = None;
        }
        self.last_progress = Instant::now();
    }

    fn error(&mut self, e: &KafkaError) {
        self.errors += 1;
        self.last_error = Some(e.to_string());
        if self
            .last_report
            .is_none_or(|t| t.elapsed() >= Self::REPORT_EVERY)
        {
            self.last_report = Some(Instant::now());
            tracing::warn!(
                event = "consumer_error",
                error = %e,
                errors_so_far = self.errors,
                "librdkafka retries by itself; reported once per {:?}",
                Self::REPORT_EVERY
            );
        }
    }

    /// For a bounded run that has read nothing for too long: why it cannot go on.
    fn check(&mut self, bounded: bool, holding: bool) -> Option<String> {
        let quiet = self.last_progress.elapsed();
        if !bounded || quiet < self.timeout {
            return None;
        }
        Some(if !holding {
            format!(
                "the backfill got no partition from the consumer group for {} s (--stall-timeout); \
                 another member may hold them, or the group coordinator at {} is stuck",
                quiet.as_secs(),
                self.brokers
            )
        } else {
            format!(
                "the backfill read nothing from {} for {} s (--stall-timeout){}",
                self.brokers,
                quiet.as_secs(),
                self.last_error
                    .as_ref()
                    .map(|e| format!("; last error: {e}"))
                    .unwrap_or_default()
            )
        })
    }
}

/// Every partition has been read up to its end offset (`finished`, kept by the
/// feeder), or started at or past it (committed offsets), leaving nothing to read.
fn backfill_done(
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

/// Where the answer to a commit under way arrives.
type CommitAnswer = std::sync::mpsc::Receiver<rdkafka::error::KafkaResult<()>>;

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
struct KafkaHooks {
    consumer: Arc<BaseConsumer<RunContext>>,
    topic: String,
    producer: Option<(String, ThreadedProducer<DeliveryTracker>)>,
    /// The dead-letter topic, flushed before every commit as the results are.
    rejects: Option<TopicRejects>,
    timeout: Duration,
    /// The group's session timeout: how long a rejoin may take to settle.
    session_timeout: Duration,
    commit_interval: Duration,
    last_commit: Instant,
    /// What was last sent per partition: not sent again until it moves.
    committed: HashMap<i32, i64>,
    /// The last commit's failure, if it failed (the next one retries it).
    commit_error: Option<String>,
    /// The commit under way, if any: what it sends, and where its answer arrives.
    in_flight: Option<(HashMap<i32, i64>, CommitAnswer)>,
    checkpoints: Option<Checkpointing>,
    metrics: Option<Arc<Metrics>>,
}

impl KafkaHooks {
    /// Results produced and not yet acknowledged, for the metrics.
    fn share_results(&self, produced: u64) {
        if let (Some(m), Some((_, p))) = (&self.metrics, &self.producer) {
            let unacked = p.in_flight_count().max(0) as u64;
            m.update_kafka(|k| {
                k.results_produced += produced;
                k.results_unacked = unacked;
            });
        }
    }
}

impl KafkaHooks {
    /// Flushes the results, checkpoints if asked, and returns the offset to commit
    /// for every partition this run has read. Every partition read, not only those
    /// assigned now: right after a rejoin the assignment can be empty, and a partition
    /// read then given away must still be committed where this run got to. (An older
    /// offset than another member's only makes it read again, never lose.)
    fn positions_to_commit(
        &mut self,
        state: &mut dyn StateView,
    ) -> Result<HashMap<i32, i64>, PipelineError> {
        // Results first: neither a checkpoint nor an offset may get ahead of what is acked.
        if let Some((topic, producer)) = &self.producer {
            producer.flush(self.timeout).map_err(|e| {
                live(format!(
                    "results to {topic} not acknowledged within {:?}: {e}",
                    self.timeout
                ))
            })?;
            producer.context().check().map_err(live)?;
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
                let checkpoint = Checkpoint {
                    identity: cp.identity.clone(),
                    written_unix_ms: crate::checkpoint::unix_ms(),
                    input: InputPosition::Kafka {
                        offsets: next.iter().map(|(p, o)| (*p as i32, *o as i64)).collect(),
                    },
                    state: state.checkpoint(!cp.dir.wants_whole()),
                };
                let stats = cp.dir.save(&checkpoint).map_err(|e| live(e.to_string()))?;
                cp.saved(stats);
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
    fn collect(&mut self, wait: Duration) -> bool {
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
                self.committed.extend(sent.iter().map(|(p, o)| (*p, *o)));
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
    fn commit(&mut self, state: &mut dyn StateView) -> Result<(), PipelineError> {
        if !self.collect(Duration::ZERO) {
            return Ok(());
        }
        let positions = self.positions_to_commit(state)?;
        let mut tpl = TopicPartitionList::new();
        let mut sent = HashMap::new();
        for (p, pos) in &positions {
            if self.committed.get(p) != Some(pos) {
                tpl.add_partition_offset(&self.topic, *p, Offset::Offset(*pos))
                    .map_err(|e| live(format!("bad offset {pos} for {}[{p}]: {e}", self.topic)))?;
                sent.insert(*p, *pos);
            }
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

    /// The group's committed offsets for `partitions`, read back from the broker.
    fn read_back(&self, partitions: &HashMap<i32, i64>) -> Result<HashMap<i32, i64>, String> {
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

impl Hooks for KafkaHooks {
    fn results(
        &mut self,
        windows: &[WindowResult],
        calendar: &Calendar,
    ) -> Result<(), PipelineError> {
        let Some((topic, producer)) = &self.producer else {
            return Ok(());
        };
        for w in windows {
            let record = Record::new(w, calendar);
            let key = record.key();
            let payload = serde_json::to_string(&record).expect("a record always serializes");
            send_with_backpressure(producer, BaseRecord::to(topic).key(&key).payload(&payload))
                .map_err(live)?;
        }
        self.share_results(windows.len() as u64);
        Ok(())
    }

    fn progress(
        &mut self,
        state: &mut dyn StateView,
        _now_ms: Option<u64>,
    ) -> Result<(), PipelineError> {
        // Only while the group has given us partitions: a commit sent before the join
        // completes waits (on Tansu, past a minute) and holds back the ones after it.
        let holding = self.consumer.context().holding.load(Ordering::Relaxed);
        if holding && self.last_commit.elapsed() >= self.commit_interval {
            self.last_commit = Instant::now();
            self.commit(state)?;
            self.share_results(0);
        }
        Ok(())
    }

    fn finished(
        &mut self,
        state: &mut dyn StateView,
        _complete: bool,
    ) -> Result<(), PipelineError> {
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
}

/// `--state-dir` for a run: where checkpoints go, and what they must match.
#[derive(Debug, Clone)]
pub struct StateOptions {
    pub dir: std::path::PathBuf,
    /// Discard an existing checkpoint instead of resuming from it.
    pub reset: bool,
    /// What the state depends on (inputs and counting options), checked on restore.
    pub identity: String,
}

/// `cardinal produce`: what was sent.
#[derive(Debug, Default)]
pub struct ProduceReport {
    pub messages: u64,
    pub bytes: u64,
    pub skipped_blank: u64,
    /// With a timestamp field: lines without a usable one, sent with the
    /// producer's clock as their timestamp.
    pub without_timestamp: u64,
}

/// What `cardinal produce` takes from each line besides its bytes.
#[derive(Debug, Clone, Default)]
pub struct RecordFrom<'a> {
    /// `--key-field`: the record's key.
    pub key_field: Option<&'a str>,
    /// `--timestamp-field` and `--timestamp-unit`: the record's timestamp.
    pub timestamp_field: Option<(&'a str, TsUnit)>,
}

/// Loads JSON lines into `topic`, keyed by a root-level field and timestamped
/// by another when asked.
pub fn produce(
    opts: &KafkaOptions,
    topic: &str,
    from: &RecordFrom<'_>,
    inputs: Vec<pipeline::OpenInput>,
) -> Result<ProduceReport, PipelineError> {
    tracing::debug!(
        event = "client_config",
        client = "producer",
        settings = %opts.describe(PRODUCER_DEFAULTS)
    );
    let producer: ThreadedProducer<DeliveryTracker> = opts
        .config(PRODUCER_DEFAULTS)
        .create_with_context(DeliveryTracker::default())
        .map_err(|e| opts.settings_error("producer", PRODUCER_DEFAULTS, e))?;
    let probe: BaseConsumer<ErrorContext> = opts
        .config(&[])
        .create_with_context(ErrorContext)
        .map_err(|e| opts.settings_error("client", &[], e))?;
    partitions_of(&probe, opts, topic)?;
    let mut report = ProduceReport::default();
    for input in inputs {
        let mut next_line = 1;
        for chunk in crate::source::Chunker::new(input.reader, &input.name, CHUNK_BYTES) {
            let chunk = chunk?;
            next_line = chunk.first_line.unwrap_or(next_line);
            for (_, index, line) in chunk.frames() {
                let line_no = next_line + index;
                if let Some(len) = chunk.oversized(index) {
                    return Err(live(format!(
                        "{}:{line_no}: a line of {len} bytes is over the {} byte frame limit",
                        input.name,
                        crate::source::MAX_FRAME_BYTES
                    )));
                }
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.iter().all(u8::is_ascii_whitespace) {
                    report.skipped_blank += 1;
                    continue;
                }
                let key = from.key_field.and_then(|f| root_key(line, f));
                let mut record = BaseRecord::to(topic).payload(line);
                if let Some(k) = &key {
                    record = record.key(k.as_slice());
                }
                if let Some((field, unit)) = from.timestamp_field {
                    match root_timestamp_ms(line, field, unit) {
                        Some(ms) => record = record.timestamp(ms),
                        None => report.without_timestamp += 1,
                    }
                }
                send_with_backpressure(&producer, record)
                    .map_err(|e| live(format!("{}:{line_no}: {e}", input.name)))?;
                report.messages += 1;
                report.bytes += line.len() as u64;
            }
            next_line += chunk.frames().count() as u64;
        }
    }
    producer
        .flush(opts.timeout.max(Duration::from_secs(30)))
        .map_err(|e| live(format!("messages to {topic} not acknowledged in time: {e}")))?;
    producer.context().check().map_err(live)?;
    Ok(report)
}

/// The key for `--key-field`: the root `uid` through Cardinal's parser, any other
/// root field as its raw JSON text (strings without quotes).
pub fn root_key(line: &[u8], field: &str) -> Option<Vec<u8>> {
    if field == "uid" {
        return crate::parser::parse_frame(line)
            .ok()
            .map(|f| f.uid.into_owned());
    }
    let v = sonic_rs::get(line, [field]).ok()?;
    let raw = v.as_raw_str();
    Some(
        raw.strip_prefix('"')
            .and_then(|s| s.strip_suffix('"'))
            .unwrap_or(raw)
            .as_bytes()
            .to_vec(),
    )
}

/// The record timestamp for `--timestamp-field`: the root field, an integer or a
/// string of digits in `unit`, in milliseconds (microseconds floored). `None` if
/// it is missing, not such a number, or beyond the year 9999.
pub fn root_timestamp_ms(line: &[u8], field: &str, unit: TsUnit) -> Option<i64> {
    let raw = root_key(line, field)?;
    if raw.is_empty() || raw.len() > 18 || !raw.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let v: i64 = std::str::from_utf8(&raw).ok()?.parse().ok()?;
    if v > unit.max_value() {
        return None;
    }
    Some(match unit {
        TsUnit::Seconds => v * 1000,
        TsUnit::Millis => v,
        TsUnit::Micros => v / 1000,
    })
}

/// Creates a topic (for the demo and tests). Existing topics are left alone.
pub fn create_topic(
    opts: &KafkaOptions,
    topic: &str,
    partitions: i32,
    compacted: bool,
) -> Result<(), PipelineError> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = opts
        .config(&[])
        .create()
        .map_err(|e| opts.settings_error("admin client", &[], e))?;
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    if compacted {
        new = new.set("cleanup.policy", "compact");
    }
    let rt = futures_executor::block_on(admin.create_topics(
        [&new],
        &AdminOptions::new().operation_timeout(Some(opts.timeout)),
    ))
    .map_err(|e| {
        live(format!(
            "cannot create topic {topic} on {}: {e}",
            opts.brokers
        ))
    })?;
    for r in rt {
        match r {
            Ok(_) => {}
            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => return Err(live(format!("cannot create topic {t}: {e}"))),
        }
    }
    Ok(())
}

/// One message read by `cardinal consume`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumed {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    /// The record's headers in order, as (name, value; `None` for a null value).
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub payload: Vec<u8>,
}

/// Reads every partition of `topic` from the beginning up to its end offsets as of
/// the call, without a consumer group (like `kcat -C -e`). For reading results back.
pub fn consume_to_end(
    opts: &KafkaOptions,
    topic: &str,
    mut each: impl FnMut(Consumed) -> bool,
) -> Result<u64, PipelineError> {
    const DEFAULTS: &[(&str, &str)] = &[
        ("enable.auto.commit", "false"),
        ("fetch.wait.max.ms", "5"),
        ("group.id", "cardinal-consume"),
    ];
    let consumer: BaseConsumer<ErrorContext> = opts
        .config(DEFAULTS)
        .create_with_context(ErrorContext)
        .map_err(|e| opts.settings_error("consumer", DEFAULTS, e))?;
    let partitions = partitions_of(&consumer, opts, topic)?;
    let mut tpl = TopicPartitionList::new();
    let mut remaining = HashMap::new();
    for p in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, opts.timeout)
            .map_err(|e| live(format!("cannot read the end offsets of {topic}[{p}]: {e}")))?;
        if high > low {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .map_err(|e| live(format!("cannot assign {topic}[{p}]: {e}")))?;
            remaining.insert(p, high);
        }
    }
    consumer
        .assign(&tpl)
        .map_err(|e| live(format!("cannot assign {topic}: {e}")))?;
    let mut read = 0;
    let mut last_message = Instant::now();
    while !remaining.is_empty() {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                last_message = Instant::now();
                read += 1;
                let done = remaining
                    .get(&m.partition())
                    .is_some_and(|high| m.offset() + 1 >= *high);
                if done {
                    remaining.remove(&m.partition());
                }
                let keep_going = each(Consumed {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    headers: m
                        .headers()
                        .map(|h| {
                            h.iter()
                                .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                                .collect()
                        })
                        .unwrap_or_default(),
                    payload: m.payload().unwrap_or_default().to_vec(),
                });
                if !keep_going {
                    break;
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) => {}
            Some(Err(e)) => return Err(live(format!("cannot read {topic}: {e}"))),
            None if last_message.elapsed() > opts.timeout => {
                return Err(live(format!(
                    "no message from {topic} for {:?} with partitions {:?} not read to their end",
                    opts.timeout,
                    remaining.keys().collect::<Vec<_>>()
                )));
            }
            None => {}
        }
    }
    Ok(read)
}

#[cfg(test)]
mod tests {
    //! Error paths against librdkafka's in-process mock cluster. The real broker
    //! (Tansu) covers the happy paths in `tests/kafka.rs`.

    use super::*;
    use crate::aggregator::Settings;
    use crate::emitter::Format;
    use crate::generator::{FrameGen, GenConfig};
    use crate::pipeline::CounterKind;
    use crate::sink::ResultSink;
    use crate::window::{Calendar, Granularity};
    use rdkafka::mocking::MockCluster;
    use rdkafka::types::RDKafkaApiKey;

    #[test]
    fn a_dead_letter_record_of_a_file_line_names_the_file_and_line() {
        // `count --rejects-topic`: the sink says where such a frame came from, and
        // does not pretend it had a partition.
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("dlq", 1, 1).unwrap();
        let opts = KafkaOptions::new(cluster.bootstrap_servers(), Duration::from_secs(10));
        let mut sink = TopicRejects::connect(&opts, "dlq").unwrap();
        let position = Position::Line {
            source: Arc::from("day-1.json"),
            line: 42,
        };
        sink.write(Rejected {
            reason: "truncated",
            detail: "ends inside the object",
            position: &position,
            key: None,
            raw: b"{\"uid\":\"a\"\r",
        })
        .unwrap();
        Reject::flush(&mut sink).unwrap();
        let mut got = Vec::new();
        consume_to_end(&opts, "dlq", |m| {
            got.push(m);
            true
        })
        .unwrap();
        assert_eq!(got.len(), 1);
        let h: HashMap<String, String> = got[0]
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), String::from_utf8(v.clone().unwrap()).unwrap()))
            .collect();
        let want: HashMap<String, String> = [
            ("cardinal.source", "day-1.json"),
            ("cardinal.line", "42"),
            ("cardinal.reason", "truncated"),
            (
                "__connect.errors.exception.message",
                "ends inside the object",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(h, want);
        assert_eq!(got[0].key, None);
        assert_eq!(
            got[0].payload, b"{\"uid\":\"a\"",
            "the CRLF's \\r is not the frame's"
        );
    }

    #[test]
    fn a_result_that_cannot_be_delivered_fails_the_run_and_commits_nothing_it_covers() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("frames", 2, 1).unwrap();
        cluster.create_topic("results", 1, 1).unwrap();
        let opts = KafkaOptions::new(cluster.bootstrap_servers(), Duration::from_secs(10));
        // A few minutes of event time, so that several minute windows close.
        let frames = GenConfig {
            frames: 3000,
            rate: 10.0,
            users: 300,
            ..GenConfig::default()
        };
        let producer: ThreadedProducer<DeliveryTracker> = producer_config(&opts)
            .create_with_context(DeliveryTracker::recording_ends())
            .unwrap();
        for f in FrameGen::new(&frames) {
            let key = root_key(&f.line, "uid").unwrap();
            send_with_backpressure(
                &producer,
                BaseRecord::to("frames").key(&key).payload(&f.line),
            )
            .unwrap();
        }
        producer.flush(Duration::from_secs(10)).unwrap();
        producer.context().check().unwrap();
        let ends = producer.context().ends();

        // From now on every produce request is refused, for good: no result can be acked.
        cluster.request_errors(
            RDKafkaApiKey::Produce,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 500],
        );
        let run = RunOptions {
            kafka: opts.clone(),
            topic: "frames".into(),
            group: "lost-results".into(),
            results_topic: Some("results".into()),
            rejects_topic: None,
            from: StartFrom::Earliest,
            until: Until::Target(Arc::new(Mutex::new(Some(ends)))),
            commit_interval: Duration::ZERO,
            fed: None,
            state: None,
            stall_timeout: Duration::from_secs(60),
        };
        let config = CountConfig {
            calendar: Calendar::utc(),
            settings: Settings {
                granularities: vec![Granularity::Minute],
                ..Settings::default()
            },
            counter: CounterKind::Exact,
            format: Format::Json,
            threads: 1,
            chunk_bytes: crate::source::CHUNK_BYTES,
            max_frame_bytes: crate::source::MAX_FRAME_BYTES,
            metrics: None,
            frames: crate::parser::FrameSpec::default(),
        };
        let mut sinks = Sinks {
            results: ResultSink::new(Box::new(std::io::sink())),
            rejects: Vec::new(),
        };
        // Either the delivery reports or the next send reports the refusal.
        let err = run_options_run(&run, &config, &mut sinks)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("could not be delivered") || err.contains("cannot produce to results"),
            "{err}"
        );

        // The first minute holds the first frame of every partition, and its result
        // was never acked: no partition may have an offset committed past 0.
        let probe: BaseConsumer = opts
            .config(&[("group.id", "lost-results"), ("session.timeout.ms", "6000")])
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition("frames", 0);
        tpl.add_partition("frames", 1);
        let committed = probe
            .committed_offsets(tpl, Duration::from_secs(10))
            .unwrap();
        for e in committed.elements() {
            let offset = e.offset().to_raw().unwrap_or(-1);
            assert!(
                offset <= 0,
                "partition {} committed at {offset}",
                e.partition()
            );
        }
    }

    #[test]
    fn undecodable_batches_are_read_from_the_clients_words() {
        let b = BadBatch::parse(
            RDKafkaErrorCode::BadCompression,
            "Decompression (codec 0x4) of message at 25 of 41 bytes failed: Local: Invalid compressed data",
        )
        .unwrap();
        assert_eq!(
            (b.codec, b.offset, b.codec_name().as_str()),
            (Some(4), 25, "zstd")
        );
        let b = BadBatch::parse(
            RDKafkaErrorCode::BadMessage,
            "MessageSet at offset 7 (120 bytes) failed CRC32C check (original 0x1 != calculated 0x2)",
        )
        .unwrap();
        assert_eq!((b.codec, b.offset), (None, 7));
        // Transient errors are librdkafka's to retry.
        assert!(BadBatch::parse(RDKafkaErrorCode::AllBrokersDown, "at offset 5").is_none());
    }

    #[test]
    fn a_bad_batch_is_on_the_partition_that_stays_at_its_offset() {
        let bad = BadBatch {
            codec: Some(1),
            offset: 25,
            text: "…".into(),
        };
        let mut seen = BadBatches::default();
        // Partitions 0 and 1 are both at offset 25 when it first fails.
        let mut pos = HashMap::from([(0, 25), (1, 25), (2, 90)]);
        assert_eq!(seen.sighted(bad.clone(), 0..3, &pos, "t"), None);
        // Partition 0 was only passing through.
        pos.insert(0, 31);
        std::thread::sleep(BadBatches::CONFIRM);
        let why = seen.sighted(bad, 0..3, &pos, "t").unwrap();
        assert!(
            why.contains("offset 25 of t (partition 1, compressed with gzip)"),
            "{why}"
        );
    }

    /// A rejected frame: reason, detail, key, value.
    type Rejection = (String, String, Option<Vec<u8>>, Vec<u8>);

    /// Rejected frames, for a test to look at.
    #[derive(Clone, Default)]
    struct Collected(Arc<Mutex<Vec<Rejection>>>);

    impl Reject for Collected {
        fn write(&mut self, f: Rejected<'_>) -> Result<(), SinkError> {
            let entry = (
                f.reason.to_string(),
                f.detail.to_string(),
                f.key.map(<[u8]>::to_vec),
                f.raw.to_vec(),
            );
            self.0.lock().unwrap().push(entry);
            Ok(())
        }
        fn flush(&mut self) -> Result<(), SinkError> {
            Ok(())
        }
    }

    #[test]
    fn a_record_without_a_timestamp_is_bad_ts_under_ts_from_record_timestamp() {
        // Tansu 0.6 cannot serve a record whose timestamp is -1 (its ListOffsets
        // fails converting it), so this case is tried on librdkafka's mock cluster.
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("frames", 1, 1).unwrap();
        let opts = KafkaOptions::new(cluster.bootstrap_servers(), Duration::from_secs(10));
        let producer: ThreadedProducer<DeliveryTracker> = producer_config(&opts)
            .create_with_context(DeliveryTracker::recording_ends())
            .unwrap();
        let t0 = 1_700_000_040_000i64;
        let records: [(&[u8], i64, &[u8]); 4] = [
            (b"a", t0, b"not json"),
            (b"b", -1, b"no timestamp"),
            (b"c", t0 + 1500, b""),
            (b"a", t0 + 2999, b"{"),
        ];
        for (key, ts, value) in records {
            let record = BaseRecord::to("frames")
                .key(key)
                .payload(value)
                .timestamp(ts);
            send_with_backpressure(&producer, record).unwrap();
        }
        producer.flush(Duration::from_secs(10)).unwrap();
        producer.context().check().unwrap();
        let run_opts = RunOptions {
            kafka: opts,
            topic: "frames".into(),
            group: "record-ts".into(),
            results_topic: None,
            rejects_topic: None,
            from: StartFrom::Earliest,
            until: Until::Target(Arc::new(Mutex::new(Some(producer.context().ends())))),
            commit_interval: Duration::ZERO,
            fed: None,
            state: None,
            stall_timeout: Duration::from_secs(60),
        };
        let config = CountConfig {
            calendar: Calendar::utc(),
            settings: Settings {
                granularities: vec![Granularity::Minute],
                ..Settings::default()
            },
            counter: CounterKind::Exact,
            format: Format::Json,
            threads: 1,
            chunk_bytes: crate::source::CHUNK_BYTES,
            max_frame_bytes: crate::source::MAX_FRAME_BYTES,
            metrics: None,
            frames: crate::parser::FrameSpec::default()
                .taking(UidFrom::Key, TsFrom::RecordTimestamp),
        };
        let collected = Collected::default();
        let mut sinks = Sinks {
            results: ResultSink::new(Box::new(std::io::sink())),
            rejects: vec![Box::new(collected.clone())],
        };
        let report = run_options_run(&run_opts, &config, &mut sinks).unwrap();
        assert_eq!(report.telemetry.frames_counted, 3);
        let rejected = collected.0.lock().unwrap().clone();
        assert_eq!(rejected.len(), 1, "{rejected:?}");
        let (reason, detail, key, value) = &rejected[0];
        assert_eq!(reason, "bad_ts");
        assert!(detail.contains("no timestamp"), "{detail}");
        assert_eq!(key.as_deref(), Some(&b"b"[..]));
        assert_eq!(value, b"no timestamp");
    }

    fn run_options_run(
        run_opts: &RunOptions,
        config: &CountConfig,
        sinks: &mut Sinks,
    ) -> Result<CountReport, PipelineError> {
        run(run_opts, config, sinks, Arc::new(AtomicBool::new(false)))
    }
}
