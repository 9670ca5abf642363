//! `run --rejects-topic`: the dead-letter topic, on the reference broker, Apache
//! Kafka (one KRaft node shared by this file's tests, each on topics and a group of
//! its own, `common::apache`). A dead-letter topic that refuses every record (as a
//! full or misconfigured one would) is one whose topic-level `max.message.bytes`
//! no record batch fits; on Tansu it was a schema no record met, and both refuse
//! every record of the topic alike. A hostile stream is produced frame by frame with librdkafka, each
//! frame's partition and offset taken from its delivery report and its fate
//! (counted, or rejected for a named reason) decided by the test, not by Cardinal.
//! Every frame must then be either counted (the results equal counts computed here
//! by integer arithmetic) or on the dead-letter topic exactly once, with its
//! original bytes and key and Kafka Connect's dead-letter headers.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::process::{Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::apache::{ApacheKafka, Names};
use common::cardinal;
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

const T0: i64 = 1_700_000_040; // the start of a minute

/// `Ok`: counted, as (uid, ts). `Err(reason)`: on the dead-letter topic.
type Fate = Result<(String, i64), &'static str>;

/// One frame as the test produced it, and what must become of it.
struct Sent {
    partition: i32,
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    fate: Fate,
}

/// Where a record landed (partition, offset), or why it did not.
type Delivery = Result<(i32, i64), String>;

/// Remembers where each record landed, by the index it was sent with.
#[derive(Default)]
struct Landed(Mutex<HashMap<usize, Delivery>>);

impl ClientContext for Landed {}
impl ProducerContext for Landed {
    type DeliveryOpaque = Box<usize>;
    fn delivery(&self, result: &DeliveryResult<'_>, index: Box<usize>) {
        let at = match result {
            Ok(m) => Ok((m.partition(), m.offset())),
            Err((e, _)) => Err(e.to_string()),
        };
        self.0.lock().unwrap().insert(*index, at);
    }
}

fn valid(uid: &str, ts: i64) -> Vec<u8> {
    format!(r#"{{"uid":"{uid}","ts":{ts},"page":"/home"}}"#).into_bytes()
}

/// The hostile stream, per partition in order: ordered valid frames from T0 over 20
/// minutes, with every kind of bad frame mixed in, a late frame (its minute is long
/// final when it comes, on both partitions) and a garbage timestamp far ahead.
fn hostile() -> Vec<Sent> {
    let mut out = Vec::new();
    let bad: [(&[u8], &str); 10] = [
        (br#"{"uid":"a","ts":1"#, "truncated"),
        (br#"{"uid":"a" "ts":1}"#, "malformed"),
        (b"{\"uid\":\"\xff\xfe\",\"ts\":1700000100}", "malformed"),
        (br#"[1,2,3]"#, "not_an_object"),
        (br#"{"ts":1700000100}"#, "missing_uid"),
        (br#"{"uid":"b"}"#, "missing_ts"),
        (br#"{"uid":"c","ts":"soon"}"#, "bad_ts"),
        (br#"{"uid":"d","ts":1.5}"#, "bad_ts"),
        (br#"{"uid":"","ts":1700000100}"#, "empty_uid"),
        (br#"{"uid":"e","uid":"f","ts":1700000100}"#, "duplicate_key"),
    ];
    for partition in 0..2 {
        let mut n = 0usize;
        let mut push = |value: Vec<u8>, fate: Fate| {
            // Every other record has a key: the dead-letter record keeps it, or has none.
            let key = n
                .is_multiple_of(2)
                .then(|| format!("key-{partition}-{n}").into_bytes());
            n += 1;
            out.push(Sent {
                partition,
                key,
                value,
                fate,
            });
        };
        for i in 0..600i64 {
            let ts = T0 + i * 2;
            let uid = format!("user-{}", (i * 7 + partition as i64) % 53);
            push(valid(&uid, ts), Ok((uid, ts)));
            if i % 50 == 25 {
                let (v, reason) = bad[(i as usize / 50 + partition as usize) % bad.len()];
                push(v.to_vec(), Err(reason));
            }
            if i == 300 {
                // Ten days ahead, then contradicted by every frame after it.
                push(valid("outlier-user", T0 + 864_000), Err("outlier"));
            }
            if i == 500 {
                // The first minute is final by now on both partitions (alignment keeps
                // them within 5 minutes of each other): late.
                push(valid("late-user", T0 + 3), Err("late"));
            }
        }
        push(Vec::new(), Err("empty"));
        push(valid("user-1", -5), Err("bad_ts"));
    }
    out
}

/// Produces the frames in order, each to its partition; returns (partition, offset) each.
fn produce(brokers: &str, topic: &str, frames: &[Sent]) -> Vec<(i32, i64)> {
    let producer: ThreadedProducer<Landed> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        // One request at a time: the order on each partition is the order sent.
        .set("max.in.flight.requests.per.connection", "1")
        .create_with_context(Landed::default())
        .unwrap();
    for (i, f) in frames.iter().enumerate() {
        let mut r = BaseRecord::with_opaque_to(topic, Box::new(i))
            .partition(f.partition)
            .payload(&f.value);
        if let Some(k) = &f.key {
            r = r.key(k);
        }
        producer.send(r).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let landed = producer.context().0.lock().unwrap();
    (0..frames.len())
        .map(|i| match &landed[&i] {
            Ok(at) => *at,
            Err(e) => panic!("frame {i} not delivered: {e}"),
        })
        .collect()
}

/// A dead-letter record as read back.
#[derive(Debug)]
struct Dead {
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    headers: BTreeMap<String, String>,
}

/// Every record of a one-partition topic, from the beginning to its end now.
fn read_topic(brokers: &str, topic: &str) -> Vec<Dead> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "dlq-reader")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "5")
        .create()
        .unwrap();
    let (_, high) = consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while (out.len() as i64) < high {
        assert!(Instant::now() < deadline, "read {} of {high}", out.len());
        let Some(m) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = m.unwrap();
        let mut headers = BTreeMap::new();
        if let Some(h) = m.headers() {
            for i in 0..h.count() {
                let h = h.get(i);
                let v = String::from_utf8(h.value.unwrap_or_default().to_vec()).unwrap();
                assert!(headers.insert(h.key.to_string(), v).is_none(), "{}", h.key);
            }
        }
        out.push(Dead {
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().unwrap_or_default().to_vec(),
            headers,
        });
    }
    out
}

/// A backfill of this test's `frames` topic, in its group `dlq-test`.
fn run(brokers: &str, names: &Names, extra: &[&str]) -> Output {
    let (frames, group) = (names.get("frames"), names.get("dlq-test"));
    let child = cardinal()
        .args(["run", "-b", brokers, "-t", &frames, "-g", &group])
        .args(["--until-end", "--windows", "minute", "--format", "json"])
        .args(["--stall-timeout", "30s", "-X", "session.timeout.ms=6000"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    common::output_within(child, Duration::from_secs(120))
}

#[test]
fn every_frame_is_counted_or_on_the_dead_letter_topic_once_with_its_headers() {
    let (kafka, names) = (ApacheKafka::shared(), Names::of_this_test());
    let brokers = kafka.addr().to_string();
    let (topic, dlq) = (names.get("frames"), names.get("dlq"));
    kafka.create_topic(&topic, 2, false);
    kafka.create_topic(&dlq, 1, false);
    let frames = hostile();
    let at = produce(&brokers, &topic, &frames);

    let o = run(&brokers, &names, &["--rejects-topic", &dlq]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "exit {:?}\n{stderr}", o.status);

    // Counted: exactly the frames the test says are valid and on time.
    let counted = frames.iter().filter_map(|f| f.fate.as_ref().ok());
    assert_eq!(
        common::minute_counts(&o.stdout),
        common::distinct_per_minute(counted.map(|(u, t)| (u.as_str(), *t))),
        "{stderr}"
    );

    // Rejected: each on the dead-letter topic once, where it came from.
    let dead = read_topic(&brokers, &dlq);
    let mut by_position: HashMap<(i32, i64), &Dead> = HashMap::new();
    for d in &dead {
        let h = &d.headers;
        assert_eq!(h.get("__connect.errors.topic"), Some(&topic), "{d:?}");
        let p: i32 = h["__connect.errors.partition"].parse().unwrap();
        let o: i64 = h["__connect.errors.offset"].parse().unwrap();
        assert!(!h["__connect.errors.exception.message"].is_empty(), "{d:?}");
        assert!(by_position.insert((p, o), d).is_none(), "twice: {d:?}");
    }
    let mut rejected = 0;
    for (f, (p, o)) in frames.iter().zip(&at) {
        let Err(reason) = f.fate else {
            assert!(
                !by_position.contains_key(&(*p, *o)),
                "counted yet dead-lettered: {p}@{o}"
            );
            continue;
        };
        rejected += 1;
        let d = by_position
            .get(&(*p, *o))
            .unwrap_or_else(|| panic!("{reason} frame {p}@{o} is not on the dead-letter topic"));
        assert_eq!(d.headers["cardinal.reason"], reason, "{p}@{o}: {d:?}");
        assert_eq!(d.value, f.value, "{p}@{o}: the original bytes");
        assert_eq!(d.key, f.key, "{p}@{o}: the original key");
    }
    assert_eq!(
        dead.len(),
        rejected,
        "nothing else is on the dead-letter topic"
    );
    assert!(
        rejected >= 2 * 15,
        "the stream is hostile enough: {rejected}"
    );

    // As documented: `consume --keys --headers` shows why each frame is there.
    let shown = cardinal()
        .args(["consume", "-b", &brokers, "-t", &dlq, "--keys", "--headers"])
        .output()
        .unwrap();
    assert!(shown.status.success(), "{shown:?}");
    let shown = String::from_utf8_lossy(&shown.stdout);
    eprintln!("{}", shown.lines().take(3).collect::<Vec<_>>().join("\n"));
    assert_eq!(shown.lines().count(), rejected, "{shown}");
    let late = shown
        .lines()
        .filter(|l| l.contains(r#""cardinal.reason":"late""#));
    assert_eq!(late.count(), 2, "{shown}");
}

#[test]
fn a_missing_dead_letter_topic_is_an_error_naming_it() {
    let (kafka, names) = (ApacheKafka::shared(), Names::of_this_test());
    let brokers = kafka.addr().to_string();
    kafka.create_topic(&names.get("frames"), 1, false);
    let missing = names.get("no-such-dlq");
    let o = run(
        &brokers,
        &names,
        &["--rejects-topic", &missing, "--timeout", "5s"],
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&missing), "{stderr}");
}

/// A dead-letter topic that refuses every record: no record batch fits its
/// size limit (a topic-level setting: the shared broker takes other topics' records).
fn refusing_dlq(kafka: &ApacheKafka, topic: &str) {
    kafka.create_topic_with(topic, 1, &[("max.message.bytes", "1")]);
}

/// The group's committed offset of `topic[partition]`, if any.
fn committed(brokers: &str, group: &str, topic: &str, partition: i32) -> Option<i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    let got = c.committed_offsets(tpl, Duration::from_secs(10)).ok()?;
    match got.find_partition(topic, partition)?.offset() {
        Offset::Offset(o) => Some(o),
        _ => None,
    }
}

#[test]
fn a_dead_letter_topic_that_refuses_writes_fails_the_run_and_no_commit_passes_its_frame() {
    // The broker refuses every record of `dlq` (no batch fits), as a full or
    // misconfigured dead-letter topic would.
    let (kafka, names) = (ApacheKafka::shared(), Names::of_this_test());
    let brokers = kafka.addr().to_string();
    let (topic, dlq, group) = (names.get("frames"), names.get("dlq"), names.get("dlq-test"));
    kafka.create_topic(&topic, 1, false);
    refusing_dlq(kafka, &dlq);
    // Ordered frames, one malformed frame deep in the stream.
    let mut frames: Vec<Sent> = (0..25_000i64)
        .map(|i| {
            let (uid, ts) = (format!("user-{}", i % 97), T0 + i / 10);
            Sent {
                partition: 0,
                key: None,
                value: valid(&uid, ts),
                fate: Ok((uid, ts)),
            }
        })
        .collect();
    frames.insert(
        20_000,
        Sent {
            partition: 0,
            key: None,
            value: br#"{"uid":"x" "ts":1}"#.to_vec(),
            fate: Err("malformed"),
        },
    );
    // A first run over the good start commits it, whatever the machine's speed: the
    // group has an offset before the bad frame arrives.
    let (first, rest) = frames.split_at(15_000);
    produce(&brokers, &topic, first);
    let o = run(&brokers, &names, &["--rejects-topic", &dlq]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let before = committed(&brokers, &group, &topic, 0).expect("the first run committed");
    assert!(before >= 15_000, "{before}");

    let at = produce(&brokers, &topic, rest);
    let bad_offset = at[5_000].1;
    let o = run(
        &brokers,
        &names,
        &["--rejects-topic", &dlq, "--checkpoint-interval", "1ms"],
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("topic {dlq}")),
        "the error names the topic: {stderr}"
    );
    let c = committed(&brokers, &group, &topic, 0);
    assert!(
        c.is_some_and(|c| c >= before && c <= bad_offset),
        "committed at {c:?}, outside {before}..={bad_offset}: past the offset whose \
         dead-letter record was refused, or back\n{stderr}"
    );
}

#[test]
fn a_dead_letter_topic_that_is_the_input_or_the_results_is_a_usage_error() {
    let names = Names::of_this_test();
    for extra in [
        &["--rejects-topic", &names.get("frames")][..],
        &["--rejects-topic", "out", "--results-topic", "out"][..],
    ] {
        // No broker is needed: the options are refused before any connection.
        let o = run("127.0.0.1:1", &names, extra);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {stderr}");
        assert!(stderr.contains("must differ from --topic"), "{stderr}");
    }
}

/// `count --rejects-topic`: partition 0's hostile stream as a file (one lane, so
/// the late and outlying frames are judged as on that partition), a few lines
/// ending in CRLF. Returns the file's lines' fates, by line number from 1.
fn hostile_file(path: &std::path::Path) -> Vec<(Vec<u8>, Fate)> {
    let mut lines = Vec::new();
    let mut text = Vec::new();
    for (i, f) in hostile()
        .into_iter()
        .filter(|f| f.partition == 0)
        .enumerate()
    {
        text.extend_from_slice(&f.value);
        text.extend_from_slice(if i % 97 == 3 { b"\r\n" } else { b"\n" });
        lines.push((f.value, f.fate));
    }
    std::fs::write(path, text).unwrap();
    lines
}

#[test]
fn count_puts_every_frame_it_does_not_count_on_the_dead_letter_topic_with_file_and_line() {
    let kafka = ApacheKafka::shared();
    let brokers = kafka.addr().to_string();
    let dlq = Names::of_this_test().get("dlq");
    kafka.create_topic(&dlq, 1, false);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hostile.json");
    let lines = hostile_file(&file);
    let name = file.to_str().unwrap();

    let o = cardinal()
        .args(["count", "--windows", "minute", "--format", "json"])
        .args(["--rejects-topic", &dlq, "-b", &brokers, "-X", "linger.ms=5"])
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "exit {:?}\n{stderr}", o.status);

    // Counted: exactly the lines the test says are valid and on time, and each of
    // those is a frame by serde_json's reading too.
    let counted: Vec<(&str, i64)> = lines
        .iter()
        .filter_map(|(v, f)| {
            let (uid, ts) = f.as_ref().ok()?;
            let json: serde_json::Value = serde_json::from_slice(v).unwrap();
            assert_eq!(
                (json["uid"].as_str(), json["ts"].as_i64()),
                (Some(uid.as_str()), Some(*ts))
            );
            Some((uid.as_str(), *ts))
        })
        .collect();
    assert_eq!(
        common::minute_counts(&o.stdout),
        common::distinct_per_minute(counted),
        "{stderr}"
    );

    // Not counted: each line on the topic once, with its file and line.
    let dead = read_topic(&brokers, &dlq);
    let mut by_line: HashMap<usize, &Dead> = HashMap::new();
    for d in &dead {
        let h = &d.headers;
        assert_eq!(
            h.get("cardinal.source").map(String::as_str),
            Some(name),
            "{d:?}"
        );
        assert!(!h.contains_key("__connect.errors.topic"), "{d:?}");
        assert!(!h["__connect.errors.exception.message"].is_empty(), "{d:?}");
        assert_eq!(d.key, None, "{d:?}");
        let line: usize = h["cardinal.line"].parse().unwrap();
        assert!(by_line.insert(line, d).is_none(), "twice: {d:?}");
    }
    let mut rejected = 0;
    for (i, (value, fate)) in lines.iter().enumerate() {
        let line = i + 1;
        let Err(reason) = fate else {
            assert!(
                !by_line.contains_key(&line),
                "counted yet dead-lettered: {line}"
            );
            continue;
        };
        rejected += 1;
        let d = by_line
            .get(&line)
            .unwrap_or_else(|| panic!("{reason} line {line} is not on the dead-letter topic"));
        assert_eq!(d.headers["cardinal.reason"], *reason, "line {line}: {d:?}");
        assert_eq!(
            &d.value, value,
            "line {line}: the original bytes, without CR"
        );
    }
    assert_eq!(dead.len(), rejected, "nothing else is on the topic");
    for reason in ["late", "outlier", "empty", "malformed", "bad_ts"] {
        assert!(
            dead.iter().any(|d| d.headers["cardinal.reason"] == reason),
            "the file is hostile enough: no {reason}"
        );
    }
}

#[test]
fn count_fails_naming_the_topic_and_broker_when_a_dead_letter_record_is_refused() {
    let (kafka, names) = (ApacheKafka::shared(), Names::of_this_test());
    let brokers = kafka.addr().to_string();
    let (dlq, missing) = (names.get("dlq"), names.get("no-such"));
    refusing_dlq(kafka, &dlq);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hostile.json");
    hostile_file(&file);
    let o = cardinal()
        .args(["count", "--rejects-topic", &dlq, "-b", &brokers])
        .args(["--timeout", "5s"])
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot write rejects to topic {dlq} on {brokers}")),
        "{stderr}"
    );
    // A topic that does not exist fails before counting, naming it.
    let o = cardinal()
        .args(["count", "--rejects-topic", &missing, "-b", &brokers])
        .args(["--timeout", "5s"])
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&missing), "{stderr}");
    assert!(o.stdout.is_empty(), "nothing counted");
}

#[test]
fn count_with_a_state_dir_checkpoints_no_line_whose_dead_letter_record_was_refused() {
    // The first dead-letter topic refuses every record: the run fails, and its
    // checkpoint must not pass a line whose record was lost. Resumed with one that
    // accepts them, every rejected line is on that topic.
    let (kafka, names) = (ApacheKafka::shared(), Names::of_this_test());
    let (refusing, accepting) = (names.get("dlq-refusing"), names.get("dlq"));
    refusing_dlq(kafka, &refusing);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hostile.json");
    let lines = hostile_file(&file);
    let state = dir.path().join("state");
    let count = |dlq: &str| {
        cardinal()
            .args(["count", "--windows", "minute", "--format", "json"])
            .args(["--rejects-topic", dlq, "-b", kafka.addr()])
            .args(["--timeout", "5s"])
            .args(["--state-dir", state.to_str().unwrap()])
            .args(["--checkpoint-interval", "0s"])
            .arg(&file)
            .output()
            .unwrap()
    };
    let o = count(&refusing);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("topic {refusing}")), "{stderr}");

    kafka.create_topic(&accepting, 1, false);
    let o = count(&accepting);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "exit {:?}\n{stderr}", o.status);
    let dead = read_topic(kafka.addr(), &accepting);
    let on_topic: std::collections::HashSet<usize> = dead
        .iter()
        .map(|d| d.headers["cardinal.line"].parse().unwrap())
        .collect();
    for (i, (_, fate)) in lines.iter().enumerate() {
        if let Err(reason) = fate {
            assert!(
                on_topic.contains(&(i + 1)),
                "{reason} line {} was lost: {stderr}",
                i + 1
            );
        }
    }
}
