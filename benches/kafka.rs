//! Kafka end to end: `run` to the end of a topic against plain consume-only loops
//! over the same topic with the same client settings, alternated in one run (each
//! round starting with another): a thread per core round robin over split
//! partition queues, and the feeder's own single blocking poll loop, assigned every
//! partition or subscribed to a group as `run` is. The fastest is the ceiling: on
//! Tansu the subscribed loop, 50% faster than the assigned ones (see docs/guide/performance.md). Each round also runs `run` with the uid
//! and the ts taken from the record's key and timestamp (`--uid-from key --ts-from
//! record-timestamp`), on the same topic: what not parsing the JSON saves.
//!
//! The same frames are also produced in two other encodings (docs/REPORT.md,
//! section 1, end to end): only what is counted, the uid as the key and the ts as
//! the timestamp with an empty value (`run --uid-from key --ts-from
//! record-timestamp` reads that topic, and the subscribed loop gives its ceiling);
//! and a Protobuf envelope (uid, ts, the JSON payload as bytes), which Cardinal has
//! no source for: the subscribed loop decodes it with prost, the most a source for
//! it could reach.
//!
//! Needs Tansu (`scripts/kafka.sh install`). It uses Tansu's memory engine, the
//! fast one, which is only right for reading a topic sequentially from the start;
//! the end offsets come from the producer's delivery reports, not ListOffsets.
//!
//!     cargo bench --bench kafka -- [FRAMES] [ROUNDS]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use cardinal::aggregator::Settings;
use cardinal::emitter::Format;
use cardinal::generator::{FrameGen, GenConfig};
use cardinal::kafka::{self, DeliveryTracker, KafkaOptions, RunOptions, StartFrom, Until};
use cardinal::parser::{FrameSpec, TsFrom, TsUnit, UidFrom};
use cardinal::pipeline::{CountConfig, CounterKind, Sinks};
use cardinal::sink::ResultSink;
use cardinal::tansu::{Engine, Tansu};
use cardinal::window::{Calendar, Granularity};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const TOPIC: &str = "bench-frames";
/// The uid in the key, the ts in the timestamp, nothing in the value.
const KEYTS_TOPIC: &str = "bench-keyts";
/// A Protobuf envelope: uid, ts and the JSON payload as bytes.
const ENVELOPE_TOPIC: &str = "bench-envelope";

#[derive(Clone, PartialEq, prost::Message)]
struct Envelope {
    #[prost(string, tag = "1")]
    uid: String,
    #[prost(int64, tag = "2")]
    ts: i64,
    #[prost(bytes = "vec", tag = "3")]
    payload: Vec<u8>,
}

/// What a plain loop does with each message.
#[derive(Clone, Copy)]
enum Touch {
    /// Copies the payload once, as the feeder copies it into a chunk.
    Copy,
    /// Decodes a Protobuf envelope and hashes its uid.
    Envelope,
}
const PARTITIONS: i32 = 4;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let frames: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(300_000);
    let rounds: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(3);

    let broker = Tansu::start(Engine::Memory).expect("Tansu is needed: scripts/kafka.sh install");
    let addr = broker.addr().to_string();
    let opts = broker.options();
    for t in [TOPIC, KEYTS_TOPIC, ENVELOPE_TOPIC] {
        broker.create_topic(t, PARTITIONS, false).unwrap();
    }

    let started = Instant::now();
    // One producer per topic: a tracker records end offsets by partition only.
    let producer = || -> ThreadedProducer<DeliveryTracker> {
        kafka::producer_config(&opts)
            .create_with_context(DeliveryTracker::recording_ends())
            .unwrap()
    };
    let (keyts_producer, envelope_producer) = (producer(), producer());
    let producer = producer();
    let (mut bytes, mut envelope_bytes, mut keyts_bytes) = (0u64, 0u64, 0u64);
    let cfg = GenConfig {
        frames,
        ..GenConfig::default()
    };
    for f in FrameGen::new(&cfg) {
        // Keyed by uid and timestamped by ts, as `produce --key-field uid
        // --timestamp-field ts` does, so that `run` can also take both from the record.
        let key = kafka::root_key(&f.line, "uid").unwrap();
        let ms = kafka::root_timestamp_ms(&f.line, "ts", TsUnit::Seconds).unwrap();
        bytes += f.line.len() as u64;
        let record = BaseRecord::to(TOPIC)
            .key(&key)
            .timestamp(ms)
            .payload(&f.line);
        kafka::send_with_backpressure(&producer, record).unwrap();
        keyts_bytes += key.len() as u64;
        let record = BaseRecord::<[u8], [u8]>::to(KEYTS_TOPIC)
            .key(&key)
            .timestamp(ms);
        kafka::send_with_backpressure(&keyts_producer, record).unwrap();
        let envelope = prost::Message::encode_to_vec(&Envelope {
            uid: String::from_utf8(key.clone()).unwrap(),
            ts: ms / 1000,
            payload: f.line.clone(),
        });
        envelope_bytes += envelope.len() as u64;
        let record = BaseRecord::to(ENVELOPE_TOPIC)
            .key(&key)
            .timestamp(ms)
            .payload(&envelope);
        kafka::send_with_backpressure(&envelope_producer, record).unwrap();
    }
    let mut all_ends = Vec::new();
    for p in [&producer, &keyts_producer, &envelope_producer] {
        p.flush(Duration::from_secs(120)).unwrap();
        p.context().check().unwrap();
        all_ends.push(p.context().ends());
    }
    let [ends, keyts_ends, envelope_ends]: [HashMap<i32, i64>; 3] = all_ends.try_into().unwrap();
    println!(
        "produced {frames} frames into {PARTITIONS} partitions of three topics in {:.1}s: JSON {:.0} MB, keys only {:.1} MB, envelopes {:.0} MB; ends {ends:?}",
        started.elapsed().as_secs_f64(),
        bytes as f64 / 1e6,
        keyts_bytes as f64 / 1e6,
        envelope_bytes as f64 / 1e6,
    );

    let mut raw = Vec::new();
    let mut single = Vec::new();
    let mut subscribed = Vec::new();
    let mut run = Vec::new();
    let mut run_record = Vec::new();
    let mut keyts_loop = Vec::new();
    let mut keyts_run = Vec::new();
    let mut envelope_loop = Vec::new();
    let json = FrameSpec::default();
    let record = FrameSpec::default().taking(UidFrom::Key, TsFrom::RecordTimestamp);
    for round in 0..rounds {
        // Each round starts with a different contender: a broker that warms up (or
        // tires) over a round must not favour whoever runs in the same slot.
        for slot in 0..8 {
            let group = |name: &str| format!("bench-{name}-{round}");
            match (slot + round) % 8 {
                0 => raw.push(raw_consume(&addr, &ends, frames)),
                1 => single.push(poll_loop(&addr, TOPIC, &ends, frames, None, Touch::Copy)),
                // As `run` joins: a group subscription, not an assignment.
                4 => subscribed.push(poll_loop(
                    &addr,
                    TOPIC,
                    &ends,
                    frames,
                    Some(&group("sub")),
                    Touch::Copy,
                )),
                2 => run.push(cardinal_run(&opts, TOPIC, &ends, &group("run"), &json)),
                3 => run_record.push(cardinal_run(&opts, TOPIC, &ends, &group("record"), &record)),
                5 => keyts_loop.push(poll_loop(
                    &addr,
                    KEYTS_TOPIC,
                    &keyts_ends,
                    frames,
                    Some(&group("keyts-sub")),
                    Touch::Copy,
                )),
                6 => keyts_run.push(cardinal_run(
                    &opts,
                    KEYTS_TOPIC,
                    &keyts_ends,
                    &group("keyts-run"),
                    &record,
                )),
                _ => envelope_loop.push(poll_loop(
                    &addr,
                    ENVELOPE_TOPIC,
                    &envelope_ends,
                    frames,
                    Some(&group("envelope-sub")),
                    Touch::Envelope,
                )),
            }
        }
        println!(
            "round {round}: split queues {:.2}s, one poll loop {:.2}s, subscribed {:.2}s, run {:.2}s, run with uid and ts from the record {:.2}s; \
             key+timestamp topic: subscribed {:.2}s, run {:.2}s; envelope topic: subscribed and decoded {:.2}s",
            raw[round],
            single[round],
            subscribed[round],
            run[round],
            run_record[round],
            keyts_loop[round],
            keyts_run[round],
            envelope_loop[round]
        );
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (split_s, single_s) = (median(&mut raw), median(&mut single));
    let subscribed_s = median(&mut subscribed);
    println!(
        "split queues: {:.0} frames/s; one poll loop: {:.0} frames/s; the same loop subscribed to a group: {:.0} frames/s",
        frames as f64 / split_s,
        frames as f64 / single_s,
        frames as f64 / subscribed_s
    );
    // The ceiling is the fastest plain loop (on Tansu, the subscribed one: an
    // assignment from the beginning reads 35% slower there).
    let (raw_s, run_s) = (split_s.min(single_s).min(subscribed_s), median(&mut run));
    println!(
        "raw consume: {:.0} frames/s ({:.0} MB/s); cardinal run --until-end: {:.0} frames/s ({:.0} MB/s); run/raw = {:.0}%",
        frames as f64 / raw_s,
        bytes as f64 / 1e6 / raw_s,
        frames as f64 / run_s,
        bytes as f64 / 1e6 / run_s,
        100.0 * raw_s / run_s
    );
    let record_s = median(&mut run_record);
    println!(
        "--uid-from key --ts-from record-timestamp: {:.0} frames/s against {:.0} from the JSON ({:+.0}%)",
        frames as f64 / record_s,
        frames as f64 / run_s,
        100.0 * (run_s / record_s - 1.0)
    );
    let rate = |v: &mut Vec<f64>| frames as f64 / median(v);
    println!(
        "end to end by encoding (frames/s, medians): JSON value: run {:.0}, ceiling {:.0}; \
         key + timestamp, empty value: run {:.0}, ceiling {:.0}; Protobuf envelope: \
         decoded by a plain loop {:.0} (Cardinal has no source for it)",
        frames as f64 / run_s,
        frames as f64 / subscribed_s,
        rate(&mut keyts_run),
        rate(&mut keyts_loop),
        rate(&mut envelope_loop)
    );
}

/// The loop `run`'s feeder itself runs, with nothing behind it: one thread,
/// blocking polls of 10 ms on the main queue, each payload touched once. With a
/// group, it subscribes as `run` does (the time includes the join); otherwise it
/// is assigned every partition from the beginning.
fn poll_loop(
    addr: &str,
    topic: &str,
    ends: &HashMap<i32, i64>,
    frames: u64,
    group: Option<&str>,
    touch: Touch,
) -> f64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("group.id", group.unwrap_or("bench-poll"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("fetch.wait.max.ms", "5")
        .create()
        .unwrap();
    let started = Instant::now();
    if group.is_some() {
        consumer.subscribe(&[topic]).unwrap();
    } else {
        let mut tpl = TopicPartitionList::new();
        for p in ends.keys() {
            tpl.add_partition_offset(topic, *p, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&tpl).unwrap();
    }
    let mut next: HashMap<i32, i64> = HashMap::new();
    let (mut read, mut checksum, mut last_progress) = (0u64, 0u64, Instant::now());
    let mut copy: Vec<u8> = Vec::with_capacity(1 << 16);
    while ends
        .iter()
        .any(|(p, end)| next.get(p).copied().unwrap_or(0) < *end)
    {
        match consumer.poll(Duration::from_millis(10)) {
            Some(Ok(m)) => {
                use rdkafka::Message;
                // Copied once, as the feeder copies it into a chunk: summing every
                // byte cost more CPU than `run` spends, on cores the broker shares.
                let payload = m.payload().unwrap_or_default();
                match touch {
                    Touch::Copy => {
                        copy.clear();
                        copy.extend_from_slice(payload);
                        checksum = checksum.wrapping_add(copy.len() as u64);
                    }
                    Touch::Envelope => {
                        let e: Envelope = prost::Message::decode(payload).unwrap();
                        checksum = checksum
                            .wrapping_add(xxhash_rust::xxh3::xxh3_64(e.uid.as_bytes()))
                            .wrapping_add(e.ts as u64);
                    }
                }
                next.insert(m.partition(), m.offset() + 1);
                read += 1;
                last_progress = Instant::now();
            }
            _ => assert!(
                last_progress.elapsed() < Duration::from_secs(60),
                "partitions stopped at {next:?} of their ends"
            ),
        }
    }
    std::hint::black_box(checksum);
    assert_eq!(read, frames, "read every frame once");
    started.elapsed().as_secs_f64()
}

/// Meant as the ceiling: a plain consumer loop with the same client and the same
/// settings as `run` (its defaults, `fetch.wait.max.ms=5` above all): every
/// partition's queue split off and polled on its own thread (one per core), each
/// message's payload touched once, stopping at the end offsets. It fails, rather
/// than waits for ever, if a partition stops short of its end.
fn raw_consume(addr: &str, ends: &HashMap<i32, i64>, frames: u64) -> f64 {
    let consumer: Arc<BaseConsumer> = Arc::new(
        ClientConfig::new()
            .set("bootstrap.servers", addr)
            .set("group.id", "bench-raw")
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "5")
            .create()
            .unwrap(),
    );
    let mut tpl = TopicPartitionList::new();
    for p in ends.keys() {
        tpl.add_partition_offset(TOPIC, *p, Offset::Beginning)
            .unwrap();
    }
    let started = Instant::now();
    consumer.assign(&tpl).unwrap();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut shares: Vec<Vec<(i32, i64)>> = vec![Vec::new(); threads];
    for (i, (p, end)) in ends.iter().enumerate() {
        shares[i % threads].push((*p, *end));
    }
    let done = Arc::new(AtomicBool::new(false));
    let read: u64 = std::thread::scope(|scope| {
        let workers: Vec<_> = shares
            .into_iter()
            .map(|share| {
                let queues: Vec<_> = share
                    .iter()
                    .map(|(p, end)| (consumer.split_partition_queue(TOPIC, *p).unwrap(), *end))
                    .collect();
                scope.spawn(move || {
                    use rdkafka::Message;
                    let (mut read, mut checksum) = (0u64, 0u64);
                    let mut last_progress = Instant::now();
                    // Round robin over this thread's partitions, so that all of them
                    // keep fetching, as the client does for `run`.
                    let mut next: Vec<i64> = vec![0; queues.len()];
                    while queues.iter().zip(&next).any(|((_, end), n)| n < end) {
                        let mut got = false;
                        for (i, (queue, end)) in queues.iter().enumerate() {
                            if next[i] >= *end {
                                continue;
                            }
                            if let Some(Ok(m)) = queue.poll(Duration::ZERO) {
                                checksum = checksum
                                    .wrapping_add(m.payload().map_or(0, |b| b.len() as u64));
                                next[i] = m.offset() + 1;
                                read += 1;
                                got = true;
                            }
                        }
                        if got {
                            last_progress = Instant::now();
                        } else {
                            assert!(
                                last_progress.elapsed() < Duration::from_secs(60),
                                "partitions stopped at {next:?} of their ends"
                            );
                            std::thread::sleep(Duration::from_micros(200));
                        }
                    }
                    std::hint::black_box(checksum);
                    read
                })
            })
            .collect();
        // The main queue still has to be served, for the client's own events.
        let served = scope.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = consumer.poll(Duration::from_millis(50));
            }
        });
        let read = workers.into_iter().map(|w| w.join().unwrap()).sum();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        served.join().unwrap();
        read
    });
    assert_eq!(read, frames, "read every frame once");
    started.elapsed().as_secs_f64()
}

fn cardinal_run(
    opts: &KafkaOptions,
    topic: &str,
    ends: &HashMap<i32, i64>,
    round: &str,
    frames: &FrameSpec,
) -> f64 {
    let config = CountConfig {
        calendar: Calendar::utc(),
        settings: Settings {
            granularities: vec![Granularity::Minute, Granularity::Hour],
            ..Settings::default()
        },
        counter: CounterKind::Exact,
        threads: 2,
        chunk_bytes: cardinal::source::CHUNK_BYTES,
        max_frame_bytes: cardinal::source::MAX_FRAME_BYTES,
        metrics: None,
        frames: frames.clone(),
    };
    let run = RunOptions {
        exactly_once: false,
        kafka: opts.clone(),
        topic: topic.into(),
        group: round.into(),
        results_topic: None,
        rejects_topic: None,
        from: StartFrom::Earliest,
        until: Until::Target(Arc::new(Mutex::new(Some(ends.clone())))),
        commit_interval: Duration::from_secs(1),
        fed: None,
        state: None,
        stall_timeout: Duration::from_secs(60),
        scale_out: None,
    };
    let mut sinks = Sinks {
        results: vec![Box::new(ResultSink::new(
            Box::new(std::io::sink()),
            Format::Json,
        ))],
        rejects: Vec::new(),
    };
    let started = Instant::now();
    let report = kafka::run(&run, &config, &mut sinks, Arc::new(AtomicBool::new(false))).unwrap();
    assert_eq!(
        report.telemetry.frames_counted,
        ends.values().sum::<i64>() as u64
    );
    started.elapsed().as_secs_f64()
}
