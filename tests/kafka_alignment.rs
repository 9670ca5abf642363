//! Watermark alignment on the reference broker, Apache Kafka (one KRaft node shared
//! by this file's tests, each on a topic and group of its own, `common::apache`):
//! partitions read
//! at different speeds, or a producer whose clock is a day behind, must neither
//! make frames late nor keep windows open without bound. Expected counts are integer
//! arithmetic on the frames sent (a UTC minute is `ts / 60`).

mod common;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::apache::{ApacheKafka, Names};
use common::cardinal;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

/// The shared broker, this test's names, and its `frames` topic of `partitions`.
fn broker(partitions: i32) -> (&'static ApacheKafka, Names, String) {
    let (t, names) = (ApacheKafka::shared(), Names::of_this_test());
    let topic = names.get("frames");
    t.create_topic(&topic, partitions, false);
    (t, names, topic)
}

/// Sends `(partition, uid, ts)` frames to `topic` in order and waits for every ack.
fn send(t: &ApacheKafka, topic: &str, frames: &[(i32, String, i64)]) {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", t.addr())
        .set("linger.ms", "5")
        .create()
        .unwrap();
    for (partition, uid, ts) in frames {
        // About 1 KB, like real frames: fetches carry hundreds, not a whole partition.
        let payload = format!(
            r#"{{"uid":"{uid}","ts":{ts},"pad":"{}"}}"#,
            "x".repeat(1000)
        );
        let mut record = BaseRecord::<(), _>::to(topic)
            .partition(*partition)
            .payload(&payload);
        while let Err((_, back)) = p.send(record) {
            p.poll(Duration::from_millis(50));
            record = back;
        }
        p.poll(Duration::ZERO);
    }
    p.flush(Duration::from_secs(60)).unwrap();
}

fn expected(frames: &[(i32, String, i64)]) -> BTreeMap<i64, u64> {
    common::distinct_per_minute(frames.iter().map(|(_, u, t)| (u.as_str(), *t)))
}

/// "open at most N" from the run's summary.
fn most_open(stderr: &str) -> usize {
    stderr
        .split("open at most ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no summary in: {stderr}"))
}

#[test]
fn a_backfill_of_uneven_partitions_keeps_windows_bounded_and_counts_exactly() {
    let (t, names, topic) = broker(4);
    let base = 1_468_244_340i64;
    // Two hours of event time in every partition; partition 0 has ten times the
    // frames, so read at an even pace it would fall far behind the others.
    let mut frames = Vec::new();
    for i in 0..36_000 {
        frames.push((0, format!("a{}", i % 3000), base + i / 5));
    }
    for p in 1..4 {
        for i in 0..3600 {
            frames.push((p, format!("p{p}-{}", i % 300), base + 2 * i));
        }
    }
    send(t, &topic, &frames);
    let started = Instant::now();
    let o = cardinal()
        .args(["run", "-b", t.addr(), "-t", &topic, "--until-end"])
        .args(["-g", &names.get("aligned")])
        .args(["--format", "json", "--max-drift", "2m"])
        // Small enough that the partitions ahead are paused and resumed.
        .args(["--max-waiting", "1000"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{err}");
    assert!(err.contains("partitions_paused"), "{err}");
    // Reading speed decides nothing: no frame is late, the counts are exact.
    assert!(err.contains("late 0, outliers 0"), "{err}");
    assert_eq!(common::minute_counts(&o.stdout), expected(&frames));
    // Unaligned, the small partitions finish their two hours while partition 0 is
    // at a fraction, and nearly all 120 minutes are open at once (measured 87 to
    // 101). Aligned, the bound is the drift: two minutes, plus the one being
    // filled at each end and the lateness, whatever was fetched before a pause.
    let open = most_open(&err);
    println!(
        "at most {open} minute windows open, {:?}",
        started.elapsed()
    );
    assert!(open <= 5, "{open} minute windows open at once\n{err}");
}

#[test]
fn a_partition_a_day_behind_is_judged_against_the_stream_and_named() {
    let (t, names, topic) = broker(2);
    let base = 1_468_244_340i64;
    const DAY: i64 = 86_400;
    let mut frames = Vec::new();
    for i in 0..600 {
        frames.push((0, format!("u{}", i % 50), base + i));
        frames.push((1, format!("skewed{}", i % 50), base + i - DAY));
    }
    send(t, &topic, &frames);
    let dir = tempfile::tempdir().unwrap();
    let rejects = dir.path().join("rejects.jsonl");
    let mut live = cardinal()
        .args(["run", "-b", t.addr(), "-t", &topic])
        .args(["-g", &names.get("skewed"), "--format", "json"])
        .args([
            "--max-drift",
            "60s",
            "--drift-timeout",
            "3s",
            "--idle-timeout",
            "30s",
        ])
        .arg("--rejects")
        .arg(&rejects)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = live.stderr.take().unwrap();
    let logger = std::thread::spawn(move || {
        let mut all = String::new();
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
            let line = line.unwrap();
            if line.contains("partition_skewed") {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    // Partition 1 holds the stream back, then is given up on after --drift-timeout.
    let started = Instant::now();
    rx.recv_timeout(Duration::from_secs(60))
        .expect("partition 1 was never declared skewed");
    // What it sends from now on is judged against the stream: late.
    let more: Vec<_> = (600..650)
        .map(|i| (1, format!("skewed{}", i % 50), base + i - DAY))
        .collect();
    send(t, &topic, &more);
    std::thread::sleep(Duration::from_secs(3));
    common::sigterm(&live);
    let out = live.wait_with_output().unwrap();
    let err = logger.join().unwrap();
    assert!(out.status.success(), "{err}");
    assert!(err.contains("partition 1 stayed"), "{err}");
    let got = common::minute_counts(&out.stdout);
    let want = expected(&frames);
    // Partition 1 held the stream until it was given up on; then partition 0's
    // minutes came out, all but the open last one. Every one emitted is exact.
    let on_time = got.keys().filter(|s| **s >= base - 60).count();
    assert!(on_time + 1 >= 10, "{got:?} after {:?}", started.elapsed());
    for (start, users) in &got {
        assert_eq!(want.get(start), Some(users), "minute {start}");
    }
    // Partition 1's frames were judged against the stream: late, and written out.
    let late = std::fs::read_to_string(&rejects)
        .unwrap()
        .lines()
        .filter(|l| l.contains(r#""reason":"late""#) && l.contains(r#""partition":1"#))
        .count();
    assert_eq!(late, more.len(), "{err}");
}
