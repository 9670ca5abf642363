//! `cardinal demo`: the main job, end to end, on built-in data with nothing to set up.
//!
//! Generated frames are produced into a broker, `run` consumes them to the end and
//! publishes results to a results topic, which is then read back and printed. The
//! broker is librdkafka's in-process mock cluster unless `--broker tansu` asks for a
//! Tansu broker (which must be installed: `scripts/kafka.sh install`) or `--broker
//! apache` for an Apache Kafka that is already running (`scripts/kafka.sh start`),
//! on topics of the demo's own so that a second demo never mixes with the first.
//!
//! The mock cluster keeps only 5 MiB per partition and drops older data without an
//! error, so the producer is paced to stay a bounded number of frames ahead of the
//! consumer, and the run ends at the offsets the producer's delivery reports gave.

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};

use crate::generator::{FrameGen, GenConfig};
use crate::kafka::{
    self, DeliveryTracker, KafkaOptions, RunOptions, SharedOffsets, StartFrom, Until,
};
use crate::pipeline::{CountConfig, Sinks};
use crate::tansu::{Engine, Tansu};
use crate::telemetry::Telemetry;

/// Which broker the demo uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DemoBroker {
    /// librdkafka's in-process mock cluster.
    Embedded,
    /// A Tansu broker (SQLite engine) started for the demo and stopped after it.
    Tansu,
    /// A running Apache Kafka at 127.0.0.1:$KAFKA_PORT (9092 by default), such as
    /// `scripts/kafka.sh start` starts; the demo's topics stay there afterwards.
    Apache,
}

const FRAMES_TOPIC: &str = "clicks";
const RESULTS_TOPIC: &str = "unique-users";
const PARTITIONS: i32 = 4;
/// At most this many frames produced but not yet consumed: about 3 MB per partition,
/// inside the mock cluster's 5 MiB.
const MAX_LAG: u64 = 6_000;

/// A running broker and how to reach it; stops it when dropped (not one it found).
enum Broker {
    Embedded(MockCluster<'static, rdkafka::producer::DefaultProducerContext>),
    Tansu(Tansu),
    Apache(String),
}

/// The demo's two topics.
struct Topics {
    frames: String,
    results: String,
}

impl Broker {
    fn start(kind: DemoBroker) -> Result<(Broker, Topics)> {
        let fixed = Topics {
            frames: FRAMES_TOPIC.into(),
            results: RESULTS_TOPIC.into(),
        };
        match kind {
            DemoBroker::Embedded => {
                let cluster =
                    MockCluster::new(1).context("cannot start the embedded Kafka mock cluster")?;
                cluster.create_topic(&fixed.frames, PARTITIONS, 1)?;
                cluster.create_topic(&fixed.results, 1, 1)?;
                Ok((Broker::Embedded(cluster), fixed))
            }
            DemoBroker::Tansu => {
                let tansu = Tansu::start(Engine::Sqlite)?;
                tansu.create_topic(&fixed.frames, PARTITIONS, false)?;
                tansu.create_topic(&fixed.results, 1, true)?;
                Ok((Broker::Tansu(tansu), fixed))
            }
            DemoBroker::Apache => {
                let port = std::env::var("KAFKA_PORT").unwrap_or_else(|_| "9092".into());
                let addr = format!("127.0.0.1:{port}");
                let opts = options(&addr);
                let run = crate::checkpoint::unix_ms();
                let topics = Topics {
                    frames: format!("{FRAMES_TOPIC}-demo-{run}"),
                    results: format!("{RESULTS_TOPIC}-demo-{run}"),
                };
                kafka::create_topic(&opts, &topics.frames, PARTITIONS, false)
                    .and_then(|()| kafka::create_topic(&opts, &topics.results, 1, true))
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "no Apache Kafka to use at {addr} ({e}); start one with \
                             `scripts/kafka.sh start apache`, or leave out --broker for the \
                             embedded one"
                        )
                    })?;
                Ok((Broker::Apache(addr), topics))
            }
        }
    }

    fn addr(&self) -> String {
        match self {
            Broker::Embedded(c) => c.bootstrap_servers(),
            Broker::Tansu(t) => t.addr().to_string(),
            Broker::Apache(addr) => addr.clone(),
        }
    }

    fn describe(&self) -> String {
        match self {
            Broker::Embedded(c) => format!(
                "librdkafka's embedded mock cluster at {}",
                c.bootstrap_servers()
            ),
            Broker::Tansu(t) => format!("Tansu (SQLite engine) at {}", t.addr()),
            Broker::Apache(addr) => format!("Apache Kafka at {addr}"),
        }
    }
}

fn options(addr: &str) -> KafkaOptions {
    KafkaOptions::new(addr, Duration::from_secs(10))
}

/// Runs the demo; returns the run's counters.
pub fn run(
    kind: DemoBroker,
    frames: GenConfig,
    config: &CountConfig,
    sinks: &mut Sinks,
) -> Result<Telemetry> {
    let (broker, topics) = Broker::start(kind)?;
    crate::say!("cardinal demo: broker: {}", broker.describe());
    let opts = options(&broker.addr());
    let target: SharedOffsets = Arc::new(Mutex::new(None));
    let fed = Arc::new(AtomicU64::new(0));
    let run_opts = RunOptions {
        exactly_once: false,
        kafka: opts.clone(),
        topic: topics.frames.clone(),
        group: format!("cardinal-demo-{}", topics.frames),
        results_topic: Some(topics.results.clone()),
        rejects_topic: None,
        from: StartFrom::Earliest,
        until: Until::Target(target.clone()),
        commit_interval: Duration::from_secs(1),
        fed: Some(fed.clone()),
        state: None,
        stall_timeout: Duration::from_secs(60),
        scale_out: None,
    };

    let run_ended = Arc::new(AtomicBool::new(false));
    let producer = {
        let opts = opts.clone();
        let fed = fed.clone();
        let target = target.clone();
        let run_ended = run_ended.clone();
        let topic = topics.frames.clone();
        std::thread::spawn(move || produce_paced(&opts, &topic, frames, &fed, &target, &run_ended))
    };
    let report = kafka::run(&run_opts, config, sinks, Arc::new(AtomicBool::new(false)));
    // The producer paces itself on the run: a run that failed must not leave it waiting.
    run_ended.store(true, Ordering::Relaxed);
    let produced = producer
        .join()
        .map_err(|_| anyhow::anyhow!("the demo producer failed"))?;
    let report = report?;
    let produced = produced?;
    crate::say!(
        "cardinal demo: produced {produced} frames to topic {} ({PARTITIONS} partitions)",
        topics.frames
    );

    let mut published = Vec::new();
    kafka::consume_to_end(&opts, &topics.results, |m| {
        published.push((m.key.unwrap_or_default(), m.payload));
        true
    })?;
    crate::say!(
        "cardinal demo: topic {} holds {} result records, keyed WINDOW/START:",
        topics.results,
        published.len()
    );
    let mut out = std::io::stdout().lock();
    for (key, value) in &published {
        let line = writeln!(
            out,
            "{}\t{}",
            String::from_utf8_lossy(key),
            String::from_utf8_lossy(value)
        );
        match line {
            Ok(()) => {}
            // A reader that went away (`| head`) is not an error.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => break,
            Err(e) => return Err(e).context("cannot write to stdout"),
        }
    }
    Ok(report.telemetry)
}

/// Produces the generated frames keyed by uid, never more than [`MAX_LAG`] ahead of
/// the consumer, then publishes the end offsets its delivery reports gave.
fn produce_paced(
    opts: &KafkaOptions,
    topic: &str,
    frames: GenConfig,
    fed: &AtomicU64,
    target: &Mutex<Option<HashMap<i32, i64>>>,
    run_ended: &AtomicBool,
) -> Result<u64> {
    let producer: ThreadedProducer<DeliveryTracker> = kafka::producer_config(opts)
        .create_with_context(DeliveryTracker::recording_ends())
        .context("cannot create the demo producer")?;
    let mut produced = 0u64;
    for frame in FrameGen::new(&frames) {
        while produced.saturating_sub(fed.load(Ordering::Relaxed)) >= MAX_LAG {
            if run_ended.load(Ordering::Relaxed) {
                anyhow::bail!("the run ended before every frame was produced");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let key = kafka::root_key(&frame.line, "uid");
        let mut record = BaseRecord::to(topic).payload(&frame.line);
        if let Some(k) = &key {
            record = record.key(k.as_slice());
        }
        kafka::send_with_backpressure(&producer, record).map_err(anyhow::Error::msg)?;
        produced += 1;
    }
    producer
        .flush(Duration::from_secs(30))
        .context("the demo frames were not acknowledged")?;
    producer.context().check().map_err(anyhow::Error::msg)?;
    *target.lock() = Some(producer.context().ends());
    Ok(produced)
}
