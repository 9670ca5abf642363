//! Compressed topics end to end. Frames are produced by librdkafka's own producer in
//! this process, with `compression.type` set as any client would set it, then
//! `cardinal run --until-end` must count them exactly (the expected counts come from
//! the frames the test wrote, by integer arithmetic).
//! - none, gzip, lz4, zstd and snappy on the reference broker, Apache Kafka (one
//!   KRaft node shared by this file's tests, each on topics of its own,
//!   `common::apache`), which keeps the producer's codec;
//! - snappy and zstd on librdkafka's mock cluster too, a second broker
//!   implementation (snappy was first tested there because Tansu's SQLite engine
//!   cannot serve snappy batches, see `/work/shared/kafka-broker.md`);
//! - a batch that cannot be decoded, written raw to the mock cluster (Apache Kafka,
//!   like Tansu, decompresses what it is given and refuses such a batch, so neither
//!   can hold one): the backfill must fail, naming the codec, the partition and the
//!   offset.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Output, Stdio};
use std::time::Duration;

use cardinal::kafka::{DeliveryTracker, send_with_backpressure};
use common::apache::{ApacheKafka, Names};
use common::cardinal;
use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};

/// Frames with some padding (so that batches compress), and the valid (uid, ts).
fn frames(seed: u64, n: usize) -> (Vec<String>, Vec<(String, i64)>) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(seed);
    let mut ts = 1_600_000_000i64;
    let (mut lines, mut valid) = (Vec::new(), Vec::new());
    for i in 0..n {
        ts += rng.random_range(0..2);
        let uid = format!("user-{}", rng.random_range(0..500));
        let pad = "click ".repeat(rng.random_range(5..40));
        lines.push(format!(
            r#"{{"event":"page_view","n":{i},"uid":"{uid}","ts":{ts},"pad":"{pad}"}}"#
        ));
        valid.push((uid, ts));
    }
    (lines, valid)
}

/// Produces `lines` to `topic` with `codec`, keyed by uid, partition by partition
/// as librdkafka's partitioner places them (or all to `partition` if given).
fn produce(brokers: &str, topic: &str, codec: &str, lines: &[String], partition: Option<i32>) {
    let producer: ThreadedProducer<DeliveryTracker> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("compression.type", codec)
        .set("linger.ms", "50")
        .set("batch.size", "1000000")
        .create_with_context(DeliveryTracker::default())
        .unwrap_or_else(|e| panic!("a {codec} producer: {e}"));
    for (i, line) in lines.iter().enumerate() {
        let key = format!("k{}", i % 97);
        let mut record = BaseRecord::to(topic).key(&key).payload(line);
        if let Some(p) = partition {
            record = record.partition(p);
        }
        send_with_backpressure(&producer, record).unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    producer.context().check().unwrap();
}

fn run_until_end(brokers: &str, topic: &str) -> Output {
    let child = cardinal()
        .args([
            "run",
            "-b",
            brokers,
            "-t",
            topic,
            "-g",
            &format!("g-{topic}"),
        ])
        .args(["--until-end", "--format", "json", "--stall-timeout", "30s"])
        .args(["-X", "session.timeout.ms=6000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    common::output_within(child, Duration::from_secs(120))
}

fn assert_counted_exactly(o: &Output, valid: &[(String, i64)], what: &str) {
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{what}: exit {:?}\n{stderr}", o.status);
    assert_eq!(
        common::minute_counts(&o.stdout),
        common::distinct_per_minute(valid.iter().map(|(u, t)| (u.as_str(), *t))),
        "{what}\n{stderr}"
    );
    assert!(
        stderr.contains(&format!("{} frames read", valid.len())),
        "{what}: {stderr}"
    );
}

/// The codecs Tansu served, now on Apache Kafka (the name is from then; snappy,
/// which Tansu could not serve, has its own test below).
#[test]
fn every_codec_tansu_serves_is_counted_exactly() {
    let (kafka, names) = (ApacheKafka::shared(), Names::of_this_test());
    for (k, codec) in ["none", "gzip", "lz4", "zstd"].into_iter().enumerate() {
        let topic = names.get(&format!("frames-{codec}"));
        kafka.create_topic(&topic, 3, false);
        let (lines, valid) = frames(k as u64, 6000);
        produce(kafka.addr(), &topic, codec, &lines, None);
        assert_counted_exactly(&run_until_end(kafka.addr(), &topic), &valid, codec);
    }
    // And through `cardinal produce`, compressing with -X as documented.
    let dir = tempfile::tempdir().unwrap();
    let (lines, valid) = frames(9, 3000);
    let file = dir.path().join("frames.json");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let produced = names.get("frames-produced-zstd");
    kafka.create_topic(&produced, 2, false);
    let o = cardinal()
        .args(["produce", "-b", kafka.addr(), "-t", &produced])
        .args(["-X", "compression.type=zstd", "--key-field", "uid"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_counted_exactly(
        &run_until_end(kafka.addr(), &produced),
        &valid,
        "cardinal produce -X compression.type=zstd",
    );
}

/// Snappy on Apache Kafka, whose log keeps snappy batches as produced.
#[test]
fn snappy_is_counted_exactly_on_apache_kafka() {
    let kafka = ApacheKafka::shared();
    let topic = Names::of_this_test().get("frames-snappy");
    kafka.create_topic(&topic, 3, false);
    let (lines, valid) = frames(11, 6000);
    produce(kafka.addr(), &topic, "snappy", &lines, None);
    assert_counted_exactly(&run_until_end(kafka.addr(), &topic), &valid, "snappy");
}

/// Snappy and zstd on a second broker implementation.
#[test]
fn snappy_and_zstd_are_counted_exactly_on_the_mock_cluster() {
    let cluster = MockCluster::new(1).unwrap();
    for (k, codec) in ["snappy", "zstd"].into_iter().enumerate() {
        let topic = format!("frames-{codec}");
        cluster.create_topic(&topic, 2, 1).unwrap();
        // Small: the mock cluster keeps 5 MiB per partition.
        let (lines, valid) = frames(3 + k as u64, 4000);
        produce(&cluster.bootstrap_servers(), &topic, codec, &lines, None);
        assert_counted_exactly(
            &run_until_end(&cluster.bootstrap_servers(), &topic),
            &valid,
            codec,
        );
    }
}

/// CRC-32C (Castagnoli), as Kafka's record batches carry it.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A v2 record batch that says it holds `records` records compressed with `codec`
/// (the attribute's low 3 bits), whose body is `body`: a valid CRC over bytes no
/// decompressor accepts.
fn record_batch(codec: i16, records: i32, body: &[u8]) -> Vec<u8> {
    let now = 1_600_000_000_000i64;
    let mut tail = Vec::new();
    tail.extend(codec.to_be_bytes());
    tail.extend((records - 1).to_be_bytes());
    tail.extend(now.to_be_bytes());
    tail.extend(now.to_be_bytes());
    tail.extend((-1i64).to_be_bytes()); // no producer id
    tail.extend((-1i16).to_be_bytes());
    tail.extend((-1i32).to_be_bytes());
    tail.extend(records.to_be_bytes());
    tail.extend(body);
    let mut batch = Vec::new();
    batch.extend(0i64.to_be_bytes()); // base offset: the broker assigns it
    batch.extend(((4 + 1 + 4 + tail.len()) as i32).to_be_bytes());
    batch.extend(0i32.to_be_bytes()); // partition leader epoch
    batch.push(2); // magic
    batch.extend(crc32c(&tail).to_be_bytes());
    batch.extend(tail);
    batch
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as i16).to_be_bytes());
    out.extend(s.as_bytes());
}

/// Appends `batch` to `topic`[`partition`] with a hand-written Produce request (v3),
/// since no client would write a batch it cannot read back; returns its offset.
fn produce_raw(addr: &str, topic: &str, partition: i32, batch: &[u8]) -> i64 {
    let mut req = Vec::new();
    req.extend(0i16.to_be_bytes()); // Produce
    req.extend(3i16.to_be_bytes());
    req.extend(1i32.to_be_bytes()); // correlation id
    put_str(&mut req, "cardinal-test");
    req.extend((-1i16).to_be_bytes()); // no transactional id
    req.extend((-1i16).to_be_bytes()); // acks=all
    req.extend(10_000i32.to_be_bytes());
    req.extend(1i32.to_be_bytes());
    put_str(&mut req, topic);
    req.extend(1i32.to_be_bytes());
    req.extend(partition.to_be_bytes());
    req.extend((batch.len() as i32).to_be_bytes());
    req.extend(batch);
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&(req.len() as i32).to_be_bytes()).unwrap();
    s.write_all(&req).unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut resp = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut resp).unwrap();
    // correlation id, 1 topic (name), 1 partition: id, error code, base offset.
    let name_len = i16::from_be_bytes([resp[8], resp[9]]) as usize;
    let p = 10 + name_len + 4;
    let error = i16::from_be_bytes([resp[p + 4], resp[p + 5]]);
    assert_eq!(error, 0, "the broker refused the raw batch");
    i64::from_be_bytes(resp[p + 6..p + 14].try_into().unwrap())
}

#[test]
fn an_undecodable_batch_fails_the_backfill_naming_codec_partition_and_offset() {
    for (codec, name) in [(4i16, "zstd"), (1, "gzip"), (6, "unknown codec 6")] {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("frames", 2, 1).unwrap();
        let brokers = cluster.bootstrap_servers();
        let (lines, _) = frames(5, 70);
        // Partition 0 is readable to its end; partition 1 has 25 good frames, the
        // bad batch, then more good frames that cannot be reached.
        produce(&brokers, "frames", "lz4", &lines[..40], Some(0));
        produce(&brokers, "frames", "none", &lines[40..65], Some(1));
        let offset = produce_raw(
            &brokers,
            "frames",
            1,
            &record_batch(codec, 3, b"these bytes are no compressed data at all"),
        );
        assert_eq!(offset, 25);
        produce(&brokers, "frames", "none", &lines[65..], Some(1));

        let o = run_until_end(&brokers, "frames");
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{name}: {stderr}");
        let error = stderr
            .lines()
            .find(|l| l.contains("cardinal: error:"))
            .unwrap_or_else(|| panic!("{name}: no error line: {stderr}"));
        eprintln!("{name}: {error}");
        for part in [name, "partition 1", "offset 25"] {
            assert!(error.contains(part), "{name}: no {part:?} in {error}");
        }
    }
}
