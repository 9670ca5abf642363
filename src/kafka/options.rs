//! Connection settings, what `run` is asked to do, and the client defaults.

use super::*;

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
    pub(super) fn layered<'a>(
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

    pub(super) fn config(&self, defaults: &[(&str, &str)]) -> ClientConfig {
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
    pub(super) fn describe(&self, defaults: &[(&str, &str)]) -> String {
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
    pub(super) fn settings_error(
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
pub(super) enum Origin<'a> {
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
    /// `--scale-out`: share the topic with the group's other members.
    pub scale_out: Option<ScaleOutOptions>,
    /// `--exactly-once`: results and offsets in one transaction per commit.
    pub exactly_once: bool,
}

/// `--scale-out`'s settings.
#[derive(Debug, Clone)]
pub struct ScaleOutOptions {
    /// `--emit-sketch`: the merged results carry their sketches.
    pub emit_sketch: bool,
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
pub(super) const CONSUMER_DEFAULTS: &[(&str, &str)] = &[
    ("enable.auto.commit", "false"),
    ("enable.auto.offset.store", "false"),
    ("auto.offset.reset", "earliest"),
    ("fetch.wait.max.ms", "5"),
    ("session.timeout.ms", "10000"),
    ("partition.assignment.strategy", "range"),
];

/// Producer defaults for throughput: large batches, a short linger.
pub(super) const PRODUCER_DEFAULTS: &[(&str, &str)] = &[
    ("linger.ms", "20"),
    ("batch.size", "1000000"),
    ("queue.buffering.max.kbytes", "1048576"),
    ("queue.buffering.max.messages", "1000000"),
    ("partitioner", "murmur2_random"),
    ("acks", "all"),
];

/// `--state-dir` for a run: where checkpoints go, and what they must match.
#[derive(Debug, Clone)]
pub struct StateOptions {
    pub dir: std::path::PathBuf,
    /// Discard an existing checkpoint instead of resuming from it.
    pub reset: bool,
    /// What the state depends on (inputs and counting options), checked on restore.
    pub identity: String,
    /// The `--rejects` file, opened without truncating it: cut back to the length
    /// the restored checkpoint recorded (to nothing without one), and measured at
    /// every checkpoint.
    pub rejects_file: Option<crate::sink::RejectSink>,
}
