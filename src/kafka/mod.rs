//! Kafka: the consumer that feeds the pipeline (`cardinal run`), the producer that
//! publishes results to a topic, and `cardinal produce` for loading frames.
//!
//! Delivery: a frame's offset is committed only once every window it counts in has
//! been emitted *and* the results producer has flushed (every record acked). That is
//! at-least-once; results are keyed `WINDOW/START` so a compacted topic keeps the
//! latest version of each window, and unique counts are idempotent under replay.
//!
//! `run`, in the order a frame meets it: [`options`](self) (what was asked),
//! `client` (reaching the broker), `group` (assignments, and a topic shared with
//! another member), `feeder` (poll, batch, pause for alignment, decide the end),
//! `faults` (undecodable batches, stalls), then the pipeline, then `producer`
//! (results and dead letters) and `commit` (what is safe to commit, and when).
//! `tools`: `cardinal produce`, `consume` and topic creation.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;
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
use crate::checkpoint::{Checkpointing, InputPosition, StateDir};
use crate::client_config::{PropertiesFile, masked};
use crate::emitter::Record;
use crate::frame::Position;
use crate::metrics::Metrics;
use crate::parser::{FrameSpec, TsFrom, TsUnit, UidFrom};
use crate::pipeline::{
    self, CountConfig, CountReport, Feed, Hooks, PipelineError, Sinks, StateView,
};
use crate::sink::{Reject, Rejected, Results, SinkError};
use crate::source::{CHUNK_BYTES, Chunk, MAX_CHUNK_FRAMES, RecordFields};
use crate::watermark::WallClock;
use crate::window::Calendar;

mod client;
mod commit;
mod faults;
mod feeder;
mod group;
mod options;
mod producer;
mod run;
pub mod scale;
mod tools;

// Siblings see each other's items through these; the public ones are the API.
pub use client::ErrorContext;
use client::*;
use commit::*;
use faults::*;
use feeder::*;
use group::*;
pub use options::*;
pub use producer::*;
pub use run::*;
pub use tools::*;

#[cfg(test)]
mod tests {
    //! Error paths against librdkafka's in-process mock cluster. The real broker
    //! (Tansu) covers the happy paths in `tests/kafka.rs`.

    use super::*;
    use crate::aggregator::Settings;
    use crate::generator::{FrameGen, GenConfig};
    use crate::pipeline::CounterKind;
    use crate::window::{Calendar, Granularity};
    use rdkafka::mocking::MockCluster;
    use rdkafka::types::RDKafkaApiKey;

    /// Exact minute windows in UTC, one parser thread, frames read as `frames` says.
    fn minute_config(frames: crate::parser::FrameSpec) -> CountConfig {
        CountConfig {
            calendar: Calendar::utc(),
            settings: Settings {
                granularities: vec![Granularity::Minute],
                ..Settings::default()
            },
            counter: CounterKind::Exact,
            threads: 1,
            chunk_bytes: crate::source::CHUNK_BYTES,
            max_frame_bytes: crate::source::MAX_FRAME_BYTES,
            metrics: None,
            frames,
        }
    }

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
            exactly_once: false,
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
            scale_out: None,
        };
        let config = minute_config(crate::parser::FrameSpec::default());
        let mut sinks = Sinks {
            results: Vec::new(),
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
            self.0.lock().push(entry);
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
            exactly_once: false,
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
            scale_out: None,
        };
        let config = minute_config(
            crate::parser::FrameSpec::default().taking(UidFrom::Key, TsFrom::RecordTimestamp),
        );
        let collected = Collected::default();
        let mut sinks = Sinks {
            results: Vec::new(),
            rejects: vec![Box::new(collected.clone())],
        };
        let report = run_options_run(&run_opts, &config, &mut sinks).unwrap();
        assert_eq!(report.telemetry.frames_counted, 3);
        let rejected = collected.0.lock().clone();
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
