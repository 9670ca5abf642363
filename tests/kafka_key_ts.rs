//! `run --uid-from key` and `--ts-from record-timestamp` on the reference broker,
//! Apache Kafka (one KRaft node shared by this file's tests, each on topics and
//! groups of its own, `common::apache`). Records are produced here with librdkafka, key, timestamp and
//! value set by the test; each record's fate (counted as (uid, ts), or rejected
//! for a named reason) is decided by the test, not by Cardinal. The counts must
//! equal those computed independently (the generator's truth through the reference
//! calendar, or integer arithmetic), and every rejected record must be on the
//! dead-letter topic once, with its original value and key and the right reason.

mod common;

use std::collections::HashMap;
use std::process::{Output, Stdio};
use std::time::Duration;

use cardinal::generator::GenConfig;
use cardinal::kafka::{DeliveryTracker, consume_to_end};
use cardinal::window::Granularity;
use common::apache::{ApacheKafka, Names};
use common::cardinal;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};

/// One record as the test writes it, and what must become of it.
struct Rec {
    partition: i32,
    key: Option<Vec<u8>>,
    /// Milliseconds; `None` lets the producer stamp it with its clock.
    timestamp: Option<i64>,
    value: Vec<u8>,
    /// `Ok`: counted as (uid, ts). `Err(reason)`: rejected.
    fate: Result<(String, i64), &'static str>,
}

impl Rec {
    fn new(partition: i32, key: Option<&[u8]>, timestamp: Option<i64>, value: &[u8]) -> Rec {
        Rec {
            partition,
            key: key.map(<[u8]>::to_vec),
            timestamp,
            value: value.to_vec(),
            fate: Err("unset"),
        }
    }

    fn counted(mut self, uid: &str, ts: i64) -> Rec {
        self.fate = Ok((uid.to_string(), ts));
        self
    }

    fn rejected(mut self, reason: &'static str) -> Rec {
        self.fate = Err(reason);
        self
    }
}

/// Produces the records in order, each to its partition, one request at a time
/// (so each partition holds them in the order sent).
fn produce(brokers: &str, topic: &str, records: &[Rec]) {
    let producer: ThreadedProducer<DeliveryTracker> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .set("max.in.flight.requests.per.connection", "1")
        .create_with_context(DeliveryTracker::default())
        .unwrap();
    for r in records {
        let mut b = BaseRecord::to(topic)
            .partition(r.partition)
            .payload(&r.value);
        if let Some(k) = &r.key {
            b = b.key(k);
        }
        if let Some(t) = r.timestamp {
            b = b.timestamp(t);
        }
        cardinal::kafka::send_with_backpressure(&producer, b).unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    producer.context().check().unwrap();
}

/// This test's `frames` and `dlq` topics on the shared broker.
struct Topics {
    kafka: &'static ApacheKafka,
    names: Names,
}

impl Topics {
    fn brokers(&self) -> &str {
        self.kafka.addr()
    }

    fn frames(&self) -> String {
        self.names.get("frames")
    }

    fn dlq(&self) -> String {
        self.names.get("dlq")
    }
}

fn run(t: &Topics, windows: &str, extra: &[&str]) -> Output {
    run_in("key-ts", t, windows, extra)
}

/// A backfill of the test's `frames`, rejects to its `dlq`, in its group `group`.
fn run_in(group: &str, t: &Topics, windows: &str, extra: &[&str]) -> Output {
    let child = cardinal()
        .args(["run", "-b", t.brokers(), "-t", &t.frames()])
        .args(["-g", &t.names.get(group)])
        .args(["--until-end", "--windows", windows, "--format", "json"])
        .args(["--rejects-topic", &t.dlq(), "--stall-timeout", "30s"])
        .args(["-X", "session.timeout.ms=6000"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    common::output_within(child, Duration::from_secs(180))
}

/// This test's 2-partition `frames` topic, holding `records`, and its `dlq`, on
/// the shared broker.
///
/// Kafka 4 refuses records stamped more than an hour ahead of its clock by default
/// (`log.message.timestamp.after.max.ms`); the tests' records are stamped by them,
/// some in the year 9999, for Cardinal to judge, so both topics take any timestamp
/// (the topic-level `message.timestamp.after.max.ms`, as the broker-level setting
/// was when each test had a broker of its own).
fn broker_with(records: &[Rec]) -> Topics {
    let t = Topics {
        kafka: ApacheKafka::shared(),
        names: Names::of_this_test(),
    };
    let any_time = i64::MAX.to_string();
    let configs = [("message.timestamp.after.max.ms", any_time.as_str())];
    t.kafka.create_topic_with(&t.frames(), 2, &configs);
    t.kafka.create_topic_with(&t.dlq(), 1, &configs);
    produce(t.brokers(), &t.frames(), records);
    t
}

/// Every rejected record is on the dead-letter topic once, with its value, its key
/// and its reason; nothing else is. Values identify records (the tests make the
/// rejected ones unique). Returns each one's detail, by value.
fn check_dead_letters(t: &Topics, records: &[Rec]) -> HashMap<Vec<u8>, String> {
    // Value -> (key, reason, detail).
    type Dead = (Option<Vec<u8>>, String, String);
    let mut dead: HashMap<Vec<u8>, Dead> = HashMap::new();
    consume_to_end(
        &cardinal::kafka::KafkaOptions::new(t.brokers(), Duration::from_secs(30)),
        &t.dlq(),
        |m| {
            let header = |name: &str| {
                m.headers
                    .iter()
                    .find(|(k, _)| k == name)
                    .and_then(|(_, v)| v.clone())
                    .map(|v| String::from_utf8(v).unwrap())
                    .unwrap_or_default()
            };
            let entry = (
                m.key.clone(),
                header("cardinal.reason"),
                header("__connect.errors.exception.message"),
            );
            assert!(
                dead.insert(m.payload.clone(), entry).is_none(),
                "twice: {:?}",
                String::from_utf8_lossy(&m.payload)
            );
            true
        },
    )
    .unwrap();
    let mut rejected = 0;
    for r in records {
        let Err(reason) = r.fate else { continue };
        rejected += 1;
        let value = String::from_utf8_lossy(&r.value);
        let (key, got, detail) = dead
            .get(&r.value)
            .unwrap_or_else(|| panic!("{value:?} ({reason}) is not on the dead-letter topic"));
        assert_eq!(got, reason, "{value:?}: {detail}");
        assert_eq!(key, &r.key, "{value:?}: the original key");
        assert!(!detail.is_empty(), "{value:?}");
    }
    assert_eq!(dead.len(), rejected, "nothing else is dead-lettered");
    dead.into_iter()
        .map(|(v, (_, _, detail))| (v, detail))
        .collect()
}

fn ok(o: &Output) -> String {
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "exit {:?}\n{stderr}", o.status);
    stderr
}

/// (window, start) -> unique users, from JSON result lines.
fn counts(stdout: &[u8]) -> std::collections::BTreeMap<(String, String), u64> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["final"], true, "{l}");
            (
                (
                    v["window"].as_str().unwrap().to_string(),
                    v["start"].as_str().unwrap().to_string(),
                ),
                v["unique_users"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn uid_from_the_key_and_ts_from_the_record_timestamp_count_values_that_are_not_json() {
    let cfg = GenConfig {
        frames: 6_000,
        rate: 20.0,
        users: 400,
        seed: 77,
        disorder: 0.05,
        max_delay: 3,
        ..GenConfig::default()
    };
    let truth = common::valid_frames(&cfg);
    assert_eq!(truth.len(), 6_000);
    // Values that no JSON parser accepts (and one that would be a frame of other
    // users and times): with both fields from the record they are never parsed.
    let junk = |i: usize| -> Vec<u8> {
        match i % 5 {
            0 => Vec::new(),
            1 => b"\xff\xfe not UTF-8".to_vec(),
            2 => br#"{"uid":"decoy","ts":1}"#.to_vec(),
            3 => b"{\"uid\":".to_vec(),
            _ => format!("plain text {i}").into_bytes(),
        }
    };
    let mut records = Vec::new();
    for (i, (uid, ts)) in truth.iter().enumerate() {
        let p = (i % 2) as i32;
        // Milliseconds within the second: floored away.
        let ms = ts * 1000 + (i as i64 * 37) % 1000;
        records.push(Rec::new(p, Some(uid.as_bytes()), Some(ms), &junk(i)).counted(uid, *ts));
        if i % 1000 == 500 {
            let ms = ts * 1000;
            let n = i / 1000;
            let bad = |what: &str| format!("bad {what} {n}").into_bytes();
            records.extend([
                Rec::new(p, None, Some(ms), &bad("no key")).rejected("missing_uid"),
                Rec::new(p, Some(b""), Some(ms), &bad("empty key")).rejected("empty_uid"),
                Rec::new(p, Some(b"u\xff"), Some(ms), &bad("key not UTF-8"))
                    .rejected("uid_not_string"),
                // A record without a timestamp (-1), or before 1970, was left out for
                // Tansu 0.6, which fails on it (see the unit test in src/kafka.rs).
                // 9999-12-31T23:59:59.999: a valid ts, but its hour cannot end.
                Rec::new(p, Some(b"u1"), Some(253_402_300_799_999), &bad("year 9999"))
                    .rejected("bad_ts"),
            ]);
        }
    }
    let t = broker_with(&records);

    let o = run(
        &t,
        "minute,hour",
        &["--uid-from", "key", "--ts-from", "record-timestamp"],
    );
    let stderr = ok(&o);
    let grans = [Granularity::Minute, Granularity::Hour];
    assert_eq!(
        counts(&o.stdout),
        common::expected_from_truth(&cfg, &grans),
        "{stderr}"
    );
    let details = check_dead_letters(&t, &records);
    let year_9999 = &details[&b"bad year 9999 0"[..]];
    assert!(
        year_9999.contains("record's timestamp") && year_9999.contains("record-timestamp"),
        "{year_9999}"
    );
}

#[test]
fn uid_from_the_key_with_ts_from_the_json() {
    const T0: i64 = 1_700_000_040;
    let mut records = Vec::new();
    for i in 0..3_000i64 {
        let (p, ts) = ((i % 2) as i32, T0 + i / 5);
        let uid = format!("user-{}", i * 7 % 211);
        // The JSON's uid is a decoy (and may be anything); the record timestamp is
        // an hour off: neither may be used.
        let decoy = match i % 3 {
            0 => r#""uid":"decoy","#.to_string(),
            1 => r#""uid":17,"#.to_string(),
            _ => String::new(),
        };
        let value = format!(r#"{{{decoy}"ts":{ts},"n":{i}}}"#);
        let off = Some((ts + 3600) * 1000);
        records.push(Rec::new(p, Some(uid.as_bytes()), off, value.as_bytes()).counted(&uid, ts));
        if i % 500 == 250 {
            let v = |s: &str| s.replace("N", &i.to_string()).into_bytes();
            records.extend([
                Rec::new(p, None, off, &v(r#"{"ts":1700000100,"n":"no key N"}"#))
                    .rejected("missing_uid"),
                Rec::new(p, Some(b""), off, &v(r#"{"ts":1700000100,"n":"empty N"}"#))
                    .rejected("empty_uid"),
                // The JSON still decides for the ts, and the line must be valid.
                Rec::new(p, Some(b"u1"), off, &v(r#"{"uid":"a","n":"no ts N"}"#))
                    .rejected("missing_ts"),
                Rec::new(p, Some(b"u1"), off, &v(r#"{"ts":1.5,"n":"ts N"}"#)).rejected("bad_ts"),
                Rec::new(p, Some(b"u1"), off, &v(r#"{"ts":1700000100 "n":"N"}"#))
                    .rejected("malformed"),
            ]);
        }
    }
    let t = broker_with(&records);
    let dir = tempfile::tempdir().unwrap();
    let rejects = dir.path().join("rejects.jsonl");
    let o = run(
        &t,
        "minute",
        &["--uid-from", "key", "--rejects", rejects.to_str().unwrap()],
    );
    let stderr = ok(&o);
    // The rejects file has the key too, when the record had one.
    let lines = std::fs::read_to_string(&rejects).unwrap();
    for l in lines.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let want = match v["reason"].as_str().unwrap() {
            "missing_uid" => serde_json::Value::Null,
            "empty_uid" => "".into(),
            _ => "u1".into(),
        };
        assert_eq!(v["key"], want, "{l}");
    }
    let counted = records.iter().filter_map(|r| r.fate.as_ref().ok());
    assert_eq!(
        common::minute_counts(&o.stdout),
        common::distinct_per_minute(counted.map(|(u, t)| (u.as_str(), *t))),
        "{stderr}"
    );
    check_dead_letters(&t, &records);
}

#[test]
fn uid_from_the_json_with_ts_from_the_record_timestamp() {
    const T0: i64 = 1_700_000_040;
    let mut records = Vec::new();
    for i in 0..3_000i64 {
        let (p, ts) = ((i % 2) as i32, T0 + i / 5);
        let uid = format!("user-{}", i * 7 % 211);
        // The JSON's ts is a decoy of any type or missing, the key another user.
        let decoy = match i % 3 {
            0 => r#","ts":1"#,
            1 => r#","ts":"soon""#,
            _ => "",
        };
        let value = format!(r#"{{"uid":"{uid}"{decoy},"n":{i}}}"#);
        let ms = Some(ts * 1000 + 999);
        records.push(Rec::new(p, Some(b"decoy"), ms, value.as_bytes()).counted(&uid, ts));
        if i % 500 == 250 {
            let v = |s: &str| s.replace("N", &i.to_string()).into_bytes();
            records.extend([
                Rec::new(
                    p,
                    None,
                    Some(253_402_300_799_999),
                    &v(r#"{"uid":"a","n":"N"}"#),
                )
                .rejected("bad_ts"),
                Rec::new(p, None, ms, &v(r#"{"n":"no uid N"}"#)).rejected("missing_uid"),
                Rec::new(p, None, ms, &v(r#"{"uid":"","n":"N"}"#)).rejected("empty_uid"),
                Rec::new(p, None, ms, &v(r#"{"uid":"a","n":"N""#)).rejected("truncated"),
            ]);
        }
    }
    let t = broker_with(&records);
    let o = run(&t, "minute", &["--ts-from", "record-timestamp"]);
    let stderr = ok(&o);
    let counted = records.iter().filter_map(|r| r.fate.as_ref().ok());
    assert_eq!(
        common::minute_counts(&o.stdout),
        common::distinct_per_minute(counted.map(|(u, t)| (u.as_str(), *t))),
        "{stderr}"
    );
    check_dead_letters(&t, &records);
}

/// What the hooks saw when a run stopped: its checkpoint.
#[derive(Default)]
struct Stopped(Option<cardinal::aggregator::Snapshot<cardinal::frame::HeldFrame>>);

impl cardinal::pipeline::Hooks for Stopped {
    fn finished(
        &mut self,
        state: &mut dyn cardinal::pipeline::StateView,
        _complete: bool,
    ) -> Result<(), cardinal::pipeline::PipelineError> {
        self.0 = Some(state.checkpoint(false));
        Ok(())
    }
}

/// A writer the test reads back.
#[derive(Clone, Default)]
struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// With `--uid-from key --ts-from record-timestamp` and `--state-dir`: frames the
/// outlier guard holds when a run stops are checkpointed with their keys, and a
/// restart counts them under those keys. Driven through the pipeline itself, with
/// records whose values are not JSON at all, so nothing but the key can name them.
#[test]
fn frames_held_at_a_stop_are_counted_after_a_restart_under_their_keys() {
    use cardinal::aggregator::Settings;
    use cardinal::emitter::Format;
    use cardinal::parser::{FrameSpec, TsFrom, UidFrom};
    use cardinal::pipeline::{self, CountConfig, CounterKind, Sinks};
    use cardinal::sink::ResultSink;
    use cardinal::source::{CHUNK_BYTES, Chunk, MAX_FRAME_BYTES, RecordFields};
    use cardinal::watermark::GuardConfig;
    use cardinal::window::Calendar;

    const T: i64 = 1_468_244_400; // 2016-07-11T13:40:00Z
    const LATER: i64 = T + 7200; // two hours on: past --max-ahead, so held
    let out = Shared::default();
    let config = CountConfig {
        calendar: Calendar::utc(),
        settings: Settings {
            granularities: vec![Granularity::Minute],
            guard: GuardConfig {
                max_ahead: 600,
                confirm: 4,
            },
            ..Settings::default()
        },
        counter: CounterKind::Exact,
        threads: 1,
        chunk_bytes: CHUNK_BYTES,
        max_frame_bytes: MAX_FRAME_BYTES,
        metrics: None,
        frames: FrameSpec::default().taking(UidFrom::Key, TsFrom::RecordTimestamp),
    };
    let records = |from: u64, frames: Vec<(String, i64)>| {
        move |feed: pipeline::Feed| {
            let keep = RecordFields {
                keys: true,
                timestamps: true,
            };
            let mut chunk = Chunk::records("frames".into(), Vec::new()).keeping(keep);
            for (i, (uid, ts)) in frames.iter().enumerate() {
                let value = Some(&b"not json, and no uid in it"[..]);
                let key = Some(uid.as_bytes());
                chunk.push_kafka_record(0, from + i as u64, key, Some(ts * 1000), value, 1 << 20);
            }
            feed.assigned(vec![0]);
            feed.chunk(chunk);
            // The first run is stopped (SIGTERM), the second reads to the end.
            feed.end(from > 0);
        }
    };
    // A minute of frames, then three users two hours on: too few to be believed yet.
    let mut first: Vec<(String, i64)> = (0..60).map(|i| (format!("u{i}"), T + i)).collect();
    first.extend((0..3).map(|i| (format!("held-{i}"), LATER + i)));
    let mut sinks = Sinks {
        results: vec![Box::new(ResultSink::new(
            Box::new(out.clone()),
            Format::Json,
        ))],
        rejects: Vec::new(),
    };
    let mut stopped = Stopped::default();
    pipeline::run(&config, &mut sinks, &mut stopped, None, records(0, first)).unwrap();
    let snapshot = stopped.0.expect("the stopped run's state");
    let held: Vec<_> = (snapshot.lanes.iter())
        .flat_map(|l| &l.held)
        .map(|h| h.frame.frame.key.clone())
        .collect();
    assert_eq!(held.len(), 3, "the three frames two hours on are held");
    assert!(
        held.iter().all(Option::is_some),
        "kept with their keys: {held:?}"
    );

    // The restart gets more frames from two hours on: now the held ones are believed.
    let second: Vec<(String, i64)> = (0..5)
        .map(|i| (format!("more-{i}"), LATER + 10 + i))
        .collect();
    let mut sinks = Sinks {
        results: vec![Box::new(ResultSink::new(
            Box::new(out.clone()),
            Format::Json,
        ))],
        rejects: Vec::new(),
    };
    let mut finished = Stopped::default();
    pipeline::run(
        &config,
        &mut sinks,
        &mut finished,
        Some(pipeline::Restored {
            state: snapshot,
            totals: None,
        }),
        records(63, second),
    )
    .unwrap();
    let results = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    let minute = |start: i64| {
        common::minute_counts(results.as_bytes())
            .get(&(start - start.rem_euclid(60)))
            .copied()
    };
    assert_eq!(minute(T), Some(60), "{results}");
    // held-0..2 and more-0..4, all in the minute two hours on.
    assert_eq!(minute(LATER), Some(8), "{results}");
}

#[test]
fn produce_sets_the_key_and_the_timestamp_from_the_frame_and_both_ways_count_the_same() {
    let cfg = GenConfig {
        frames: 4_000,
        rate: 20.0,
        users: 300,
        seed: 5,
        string_ts: 0.3,
        ..GenConfig::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("frames.json");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
    cardinal::generator::generate(&cfg, &mut f).unwrap();
    drop(f);
    let t = broker_with(&[]);
    let produced = cardinal()
        .args(["produce", "-b", t.brokers(), "-t", &t.frames()])
        .args(["--key-field", "uid", "--timestamp-field", "ts"])
        .arg(&file)
        .output()
        .unwrap();
    let said = ok(&produced);
    assert!(!said.contains("without a usable"), "{said}");
    let want = common::expected_from_truth(&cfg, &[Granularity::Minute]);
    let from_record = run(
        &t,
        "minute",
        &["--uid-from", "key", "--ts-from", "record-timestamp"],
    );
    let stderr = ok(&from_record);
    assert_eq!(counts(&from_record.stdout), want, "{stderr}");
    let from_json = run_in("json-json", &t, "minute", &[]);
    let stderr = ok(&from_json);
    assert_eq!(counts(&from_json.stdout), want, "{stderr}");
}
