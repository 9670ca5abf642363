//! `cardinal run`, `produce` and `consume` against the reference broker, Apache
//! Kafka (a KRaft node on a free port, `common::apache`): one shared by the tests of
//! this file, each on topics and groups named after it, and one of its own for a
//! test that kills or restarts it. Its jars come from Maven Central through
//! `scripts/kafka.sh install` (scripts/test.sh does).

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use cardinal::generator::GenConfig;
use cardinal::tansu::{Engine, Tansu};
use cardinal::window::Granularity;
use common::apache::{ApacheKafka, Names};
use common::cardinal;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::Value;

/// A test's broker: the Apache Kafka this file's tests share, one of the test's own
/// (killed when dropped) for a test that kills or restarts it, or Tansu where a
/// test needs what only Tansu does (a schema that refuses some records of a topic).
/// Topics and groups are named with [`Broker::name`], the test's own.
struct Broker {
    kafka: Kafka,
    addr: String,
    names: Names,
}

enum Kafka {
    Shared(&'static ApacheKafka),
    Own(ApacheKafka),
    Tansu(Tansu),
}

impl Broker {
    /// The Apache Kafka every test of this file shares.
    fn shared() -> Broker {
        let kafka = ApacheKafka::shared();
        Broker {
            addr: kafka.addr().to_string(),
            kafka: Kafka::Shared(kafka),
            names: Names::of_this_test(),
        }
    }

    /// An Apache Kafka of this test's own, which it may kill or restart.
    fn own() -> Broker {
        let kafka = ApacheKafka::start();
        Broker {
            addr: kafka.addr().to_string(),
            kafka: Kafka::Own(kafka),
            names: Names::of_this_test(),
        }
    }

    /// `name` as this test's topic or group (prefixed with the test's name).
    fn name(&self, name: &str) -> String {
        self.names.get(name)
    }

    fn apache(&mut self) -> &mut ApacheKafka {
        match &mut self.kafka {
            Kafka::Own(k) => k,
            _ => panic!("this test needs an Apache Kafka of its own (Broker::own)"),
        }
    }

    /// A one-partition compacted topic, as a results topic should be.
    fn kafka_topic_compacted(&self, name: &str) {
        match &self.kafka {
            Kafka::Shared(k) => k.create_topic(name, 1, true),
            Kafka::Own(k) => k.create_topic(name, 1, true),
            Kafka::Tansu(t) => t.create_topic(name, 1, true).unwrap(),
        }
    }

    fn create_topic(&self, name: &str, partitions: i32) {
        match &self.kafka {
            Kafka::Shared(k) => k.create_topic(name, partitions, false),
            Kafka::Own(k) => k.create_topic(name, partitions, false),
            Kafka::Tansu(t) => t.create_topic(name, partitions, false).unwrap(),
        }
    }

    /// The shared broker with this test's 4-partition `frames` topic and
    /// one-partition result topics (each `name`d).
    fn with_topics(results: &[&str]) -> Broker {
        let b = Broker::shared();
        b.create_topic(&b.name("frames"), 4);
        for r in results {
            b.create_topic(&b.name(r), 1);
        }
        b
    }
}

fn ok(o: Output) -> Output {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn write_frames(dir: &Path, cfg: &GenConfig) -> PathBuf {
    let path = dir.join("frames.json");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    cardinal::generator::generate(cfg, &mut f).unwrap();
    path
}

fn produce(b: &Broker, topic: &str, file: &Path) {
    ok(cardinal()
        .args(["produce", "-b", &b.addr, "-t", topic, "--key-field", "uid"])
        .arg(file)
        .output()
        .unwrap());
}

fn expected(cfg: &GenConfig, grans: &[Granularity]) -> BTreeMap<(String, String), u64> {
    common::expected_from_truth(cfg, grans)
}

fn counts(lines: &str) -> BTreeMap<(String, String), u64> {
    lines
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let json = l.split_once('\t').map_or(l, |(_, v)| v);
            let v: Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{l}: {e}"));
            assert_eq!(v["final"], true);
            (
                (
                    v["window"].as_str().unwrap().into(),
                    v["start"].as_str().unwrap().into(),
                ),
                v["unique_users"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn results_topic(b: &Broker, topic: &str) -> String {
    let o = ok(cardinal()
        .args([
            "consume",
            "-b",
            &b.addr,
            "-t",
            topic,
            "--keys",
            "--latest-per-key",
        ])
        .output()
        .unwrap());
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn four_partitions_through_a_results_topic_give_the_exact_count() {
    let b = Broker::with_topics(&["results"]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = GenConfig {
        frames: 30_000,
        rate: 200.0,
        users: 3000,
        seed: 21,
        string_ts: 0.2,
        malformed: 0.01,
        ..GenConfig::default()
    };
    let (frames, results) = (b.name("frames"), b.name("results"));
    let frames_file = write_frames(dir.path(), &cfg);
    produce(&b, &frames, &frames_file);
    let o = ok(cardinal()
        .args(["run", "-b", &b.addr, "-t", &frames, "-g", &b.name("g")])
        .args(["--results-topic", &results, "--until-end"])
        .args(["--windows", "minute,hour", "--format", "json"])
        .output()
        .unwrap());
    let want = expected(&cfg, &[Granularity::Minute, Granularity::Hour]);
    assert_eq!(counts(&String::from_utf8_lossy(&o.stdout)), want, "stdout");
    let published = results_topic(&b, &results);
    assert_eq!(counts(&published), want, "results topic");
    // Keys are WINDOW/START.
    for line in published.lines() {
        let (key, json) = line.split_once('\t').unwrap();
        let v: Value = serde_json::from_str(json).unwrap();
        assert_eq!(
            key,
            format!(
                "{}/{}",
                v["window"].as_str().unwrap(),
                v["start"].as_str().unwrap()
            )
        );
    }
    // `produce` skips blank lines (a message cannot be "nothing"); everything else arrives.
    let non_blank = std::fs::read(&frames_file)
        .unwrap()
        .split(|&b| b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .count();
    let summary = String::from_utf8_lossy(&o.stderr);
    assert!(
        summary.contains(&format!("{non_blank} frames read")),
        "{summary}"
    );
}

#[test]
fn a_clean_stop_resumes_from_committed_offsets() {
    let b = Broker::with_topics(&["results"]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = GenConfig {
        frames: 24_000,
        rate: 100.0,
        users: 2000,
        seed: 8,
        ..GenConfig::default()
    };
    let all = write_frames(dir.path(), &cfg);
    let text = std::fs::read_to_string(&all).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let first = dir.path().join("first.json");
    let second = dir.path().join("second.json");
    std::fs::write(&first, lines[..12_000].join("\n") + "\n").unwrap();
    std::fs::write(&second, lines[12_000..].join("\n") + "\n").unwrap();

    let (frames, results, group) = (b.name("frames"), b.name("results"), b.name("resume"));

    // A live run over the first half, stopped with SIGTERM once it has published.
    produce(&b, &frames, &first);
    let first_ends = end_offsets(&b, &frames, 4);
    assert_eq!(first_ends.iter().sum::<i64>(), 12_000);
    let mut live = cardinal()
        .args(["run", "-b", &b.addr, "-t", &frames, "-g", &group])
        .args(["--results-topic", &results])
        .args(["--format", "json", "--checkpoint-interval", "0s"])
        .env("RUST_LOG", "cardinal=info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(live.stdout.take().unwrap());
    let mut first_result = String::new();
    stdout.read_line(&mut first_result).unwrap();
    assert!(
        first_result.contains("\"window\":\"minute\""),
        "{first_result}"
    );
    std::thread::sleep(Duration::from_secs(2));
    common::sigterm(&live);
    let out = live.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "SIGTERM is a clean stop: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // What the stop committed, read back from the broker: some progress on every
    // partition (a minute was final, and every partition holds frames of it, so
    // every partition moved), and never past what was there to read.
    let committed_at_stop: Vec<i64> = (0..4)
        .map(|p| {
            committed(&b, &group, &frames, p)
                .unwrap_or_else(|| panic!("nothing committed on partition {p}"))
        })
        .collect();
    for p in 0..4 {
        assert!(
            committed_at_stop[p] > 0 && committed_at_stop[p] <= first_ends[p],
            "partition {p}: committed {committed_at_stop:?}, ends {first_ends:?}"
        );
    }
    // Frames of a minute that was never emitted are not committed. (A live run emits
    // its last minute only after 35 s without frames, far longer than this one ran
    // after its first result, but a machine slow enough to get there has emitted
    // every window and may commit everything.)
    let last_ts = cardinal::generator::FrameGen::new(&cfg)
        .take(12_000)
        .filter_map(|f| match f.truth {
            cardinal::generator::Truth::Valid { ts, .. } => Some(ts),
            _ => None,
        })
        .max()
        .unwrap();
    let emitted_last_minute = (first_result.clone() + &String::from_utf8_lossy(&out.stdout))
        .lines()
        .any(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let end: jiff::Timestamp = v["end"].as_str().unwrap().parse().unwrap();
            end.as_second() > last_ts
        });
    if !emitted_last_minute {
        assert!(
            committed_at_stop.iter().sum::<i64>() < 12_000,
            "the last minute was still open: {committed_at_stop:?}"
        );
    }

    // The second half, then a backfill from the committed offsets of the same group:
    // it reads exactly from the committed offsets to the ends, and commits the ends.
    produce(&b, &frames, &second);
    let ends = end_offsets(&b, &frames, 4);
    assert_eq!(ends.iter().sum::<i64>(), 24_000);
    let o = ok(cardinal()
        .args(["run", "-b", &b.addr, "-t", &frames, "-g", &group])
        .args(["--results-topic", &results])
        .args(["--until-end", "--format", "json"])
        .output()
        .unwrap());
    let summary = String::from_utf8_lossy(&o.stderr);
    let read: i64 = summary
        .lines()
        .find(|l| l.contains("frames read"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{summary}"));
    let unread: i64 = (0..4).map(|p| ends[p] - committed_at_stop[p]).sum();
    assert_eq!(
        read, unread,
        "resumed from the committed offsets {committed_at_stop:?} to the ends {ends:?}: {summary}"
    );
    let committed_at_end: Vec<Option<i64>> =
        (0..4).map(|p| committed(&b, &group, &frames, p)).collect();
    assert_eq!(
        committed_at_end,
        ends.iter().map(|e| Some(*e)).collect::<Vec<_>>(),
        "a finished backfill commits everything it read"
    );
    assert_eq!(
        counts(&results_topic(&b, &results)),
        expected(&cfg, &[Granularity::Minute])
    );
}

/// The end (high watermark) offset of each of the first `partitions` of `topic`.
fn end_offsets(b: &Broker, topic: &str, partitions: i32) -> Vec<i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &b.addr)
        .create()
        .unwrap();
    (0..partitions)
        .map(|p| {
            c.fetch_watermarks(topic, p, Duration::from_secs(10))
                .unwrap()
                .1
        })
        .collect()
}

#[test]
fn one_instance_survives_a_rebalance() {
    let b = Broker::with_topics(&[]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = GenConfig {
        frames: 60_000,
        rate: 300.0,
        users: 5000,
        seed: 13,
        ..GenConfig::default()
    };
    // The first half of the frames before the rebalance, the second after it, so
    // that the run must read on after it whatever the machine's speed.
    let all = std::fs::read_to_string(write_frames(dir.path(), &cfg)).unwrap();
    let lines: Vec<&str> = all.lines().collect();
    let (first, second) = lines.split_at(lines.len() / 2);
    let halves = [
        dir.path().join("first.json"),
        dir.path().join("second.json"),
    ];
    std::fs::write(&halves[0], first.join("\n") + "\n").unwrap();
    std::fs::write(&halves[1], second.join("\n") + "\n").unwrap();
    let (frames, group) = (b.name("frames"), b.name("rebalance"));
    produce(&b, &frames, &halves[0]);
    // A live run, so that it cannot finish before the rebalance (a backfill of
    // these frames once did, on a quiet machine, and the test saw no rebalance);
    // wall-clock quiet emits its last windows.
    let mut run = cardinal()
        .args(["run", "-b", &b.addr, "-t", &frames, "-g", &group])
        .args(["--format", "json", "--windows", "minute,hour"])
        .args(["--idle-timeout", "8s", "-X", "session.timeout.ms=6000"])
        .env("RUST_LOG", "cardinal=info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(run.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    // A second member joins the group for a few seconds, then leaves gracefully.
    std::thread::sleep(Duration::from_millis(500));
    let other: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &b.addr)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .set("partition.assignment.strategy", "range")
        .create()
        .unwrap();
    other.subscribe(&[&frames]).unwrap();
    let joined = Instant::now();
    while joined.elapsed() < Duration::from_secs(4) {
        // Poll to take part in the group, but never count or commit anything.
        let _ = other.poll(Duration::from_millis(100));
    }
    other.unsubscribe();
    drop(other);
    produce(&b, &frames, &halves[1]);

    let want = expected(&cfg, &[Granularity::Minute, Granularity::Hour]);
    let mut got = String::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while counts(&got).len() < want.len() && Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            got.push_str(&line);
            got.push('\n');
        }
    }
    common::sigterm(&run);
    let o = run.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(
        stderr.contains("partitions_revoked"),
        "the second member caused a rebalance:\n{stderr}"
    );
    assert_eq!(counts(&got), want, "{stderr}");
}

#[test]
fn an_unreachable_broker_fails_fast_and_names_it() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let started = Instant::now();
    let o = cardinal()
        .args(["run", "-b", &addr, "-t", "frames", "--timeout", "3s"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains(&addr) && stderr.contains("cannot reach"),
        "{stderr}"
    );
}

#[test]
fn a_missing_topic_is_a_clear_error() {
    let b = Broker::shared();
    let missing = b.name("no-such-topic");
    let o = cardinal()
        .args(["run", "-b", &b.addr, "-t", &missing, "-g", &b.name("g")])
        .args(["--timeout", "5s"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains(&missing), "{stderr}");
    let o = cardinal()
        .args(["produce", "-b", &b.addr, "-t", &missing, "--timeout", "5s"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains(&missing));
}

/// Latest record per key on a results topic, as (window, start) -> (unique_users, frames).
fn latest(b: &Broker, topic: &str) -> BTreeMap<String, (u64, u64, bool)> {
    results_topic(b, topic)
        .lines()
        .map(|l| {
            let (key, json) = l.split_once('\t').unwrap();
            let v: Value = serde_json::from_str(json).unwrap();
            (
                key.to_string(),
                (
                    v["unique_users"].as_u64().unwrap(),
                    v["frames"].as_u64().unwrap(),
                    v["final"] == true,
                ),
            )
        })
        .collect()
}

#[test]
fn kill_nine_after_checkpoints_loses_nothing_and_counts_nothing_twice() {
    kill_nine_loop(None);
}

/// The same with static membership (`--instance-id`): a restart takes the dead
/// member's place at once instead of waiting out its session.
#[test]
fn kill_nine_with_an_instance_id_loses_nothing_and_counts_nothing_twice() {
    kill_nine_loop(Some("member-1"));
}

fn kill_nine_loop(instance_id: Option<&str>) {
    let b = Broker::with_topics(&["results-ref", "results-killed"]);
    let (frames, results_ref, results_killed) = (
        b.name("frames"),
        b.name("results-ref"),
        b.name("results-killed"),
    );
    let (group_ref, group_killed) = (b.name("ref"), b.name("killed"));
    let dir = tempfile::tempdir().unwrap();
    let cfg = GenConfig {
        frames: 200_000,
        rate: 500.0,
        users: 20_000,
        seed: 99,
        disorder: 0.1,
        max_delay: 3,
        ..GenConfig::default()
    };
    produce(&b, &frames, &write_frames(dir.path(), &cfg));
    let common = [
        "--until-end",
        "--windows",
        "minute,hour",
        "--format",
        "json",
        "--idle-timeout",
        "60s",
        "-X",
        "session.timeout.ms=6000",
    ];
    ok(cardinal()
        .args(["run", "-b", &b.addr, "-t", &frames, "-g", &group_ref])
        .args(["--results-topic", &results_ref])
        .args(common)
        .output()
        .unwrap());

    let state = dir.path().join("state");
    let killed_run = || {
        let mut c = cardinal();
        c.args(["run", "-b", &b.addr, "-t", &frames, "-g", &group_killed])
            .args(["--results-topic", &results_killed])
            .args(["--checkpoint-interval", "500ms"])
            .args(common)
            .arg("--state-dir")
            .arg(&state)
            .args(
                instance_id
                    .map(|id| ["--instance-id", id])
                    .into_iter()
                    .flatten(),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    };
    let progress = || -> i64 {
        (0..4)
            .map(|p| committed(&b, &group_killed, &frames, p).unwrap_or(0))
            .sum()
    };
    // Each run is killed only after it has checkpointed (and so committed) progress
    // of its own, at a deterministic "random" moment up to 1.5 s after that.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut back_to_work = Vec::new();
    for _ in 0..5 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let before = progress();
        let started = Instant::now();
        let mut child = killed_run().spawn().unwrap();
        loop {
            if progress() > before {
                back_to_work.push(started.elapsed());
                break;
            }
            if child.try_wait().unwrap().is_some() {
                break; // it finished the backfill first
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "a restarted instance made no progress in 60 s: {back_to_work:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(x % 1500));
        let _ = child.kill(); // SIGKILL
        child.wait().unwrap();
    }
    // A restart waits out the dead member's session (6 s here) before it joins, then
    // gets every partition: back to work within that plus a rebalance and a checkpoint
    // (measured 5-11 s alone, 17-27 s on a loaded machine). Not stuck is what the
    // loop above asserts (60 s); how fast depends on the machine, so it is printed.
    println!(
        "time from restart to the first committed progress (--instance-id {instance_id:?}): \
         {back_to_work:?}"
    );
    let last = killed_run().stderr(Stdio::piped()).output().unwrap();
    assert!(
        last.status.success(),
        "{}",
        String::from_utf8_lossy(&last.stderr)
    );

    let reference = latest(&b, &results_ref);
    let killed = latest(&b, &results_killed);
    assert!(reference.len() >= 8, "{reference:?}");
    assert!(killed.values().all(|v| v.2), "every window ends final");
    assert_eq!(
        killed, reference,
        "the killed-and-restarted run converges to the uninterrupted one"
    );
    let truth = expected(&cfg, &[Granularity::Minute, Granularity::Hour]);
    let got: BTreeMap<(String, String), u64> = killed
        .iter()
        .map(|(k, v)| {
            let (w, s) = k.split_once('/').unwrap();
            ((w.to_string(), s.to_string()), v.0)
        })
        .collect();
    assert_eq!(got, truth);
}

/// Every record of a results topic as a `read_committed` consumer sees it:
/// (key, version, unique_users, frames, final).
fn committed_records(b: &Broker, topic: &str) -> Vec<(String, u64, u64, u64, bool)> {
    let o = ok(cardinal()
        .args(["consume", "-b", &b.addr, "-t", topic, "--keys"])
        .args(["-X", "isolation.level=read_committed"])
        .output()
        .unwrap());
    (String::from_utf8(o.stdout).unwrap().lines())
        .map(|l| {
            let (key, json) = l.split_once('\t').unwrap();
            let v: Value = serde_json::from_str(json).unwrap();
            let n = |f: &str| v[f].as_u64().unwrap();
            (
                key.to_string(),
                n("version"),
                n("unique_users"),
                n("frames"),
                v["final"] == true,
            )
        })
        .collect()
}

/// Issue 19: with `--exactly-once` the results and the offsets that stop them being
/// produced again commit in one transaction, so a `read_committed` consumer sees
/// each version of each window once, however often the run is killed (without
/// it, the results since the last commit are produced again after a restart).
#[test]
fn exactly_once_results_are_read_once_across_kill_nine() {
    let b = Broker::with_topics(&["results-eos"]);
    let (frames, results, group) = (b.name("frames"), b.name("results-eos"), b.name("eos"));
    let dir = tempfile::tempdir().unwrap();
    let cfg = GenConfig {
        frames: 150_000,
        rate: 500.0,
        users: 20_000,
        seed: 7,
        disorder: 0.1,
        max_delay: 3,
        ..GenConfig::default()
    };
    produce(&b, &frames, &write_frames(dir.path(), &cfg));
    let run = || {
        let mut c = cardinal();
        c.args(["run", "-b", &b.addr, "-t", &frames, "-g", &group])
            .args(["--results-topic", &results, "--exactly-once", "--until-end"])
            .args(["--windows", "minute,hour", "--format", "json"])
            .args([
                "--checkpoint-interval",
                "300ms",
                "-X",
                "session.timeout.ms=6000",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    };
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut kills = 0;
    for _ in 0..8 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let before = committed_records(&b, &results).len();
        let mut child = run().spawn().unwrap();
        // Killed at a "random" moment once it has published something of its own.
        let started = Instant::now();
        while committed_records(&b, &results).len() == before
            && started.elapsed() < Duration::from_secs(60)
            && child.try_wait().unwrap().is_none()
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(x % 400));
        if child.try_wait().unwrap().is_none() {
            kills += 1;
        }
        let _ = child.kill();
        child.wait().unwrap();
    }
    let last = run().stderr(Stdio::piped()).output().unwrap();
    assert!(
        last.status.success(),
        "{}",
        String::from_utf8_lossy(&last.stderr)
    );
    assert!(kills > 0, "no run was killed mid-way");

    let records = committed_records(&b, &results);
    let mut seen = BTreeMap::new();
    for (key, version, ..) in &records {
        *seen.entry((key.clone(), *version)).or_insert(0) += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "seen more than once (key, version): {twice:?}"
    );
    let truth = expected(&cfg, &[Granularity::Minute, Granularity::Hour]);
    let got: BTreeMap<(String, String), u64> = (records.iter())
        .map(|(key, _, users, _, fin)| {
            assert!(fin, "{key} not final");
            let (w, s) = key.split_once('/').unwrap();
            ((w.to_string(), s.to_string()), *users)
        })
        .collect();
    assert_eq!(got, truth, "after {kills} kills");
}

#[test]
fn an_exactly_once_run_needs_a_results_topic_and_no_state_dir() {
    for (extra, why) in [
        (&["--exactly-once"][..], "needs --results-topic"),
        (
            &[
                "--exactly-once",
                "--results-topic",
                "r",
                "--state-dir",
                "/tmp/x",
            ][..],
            "--state-dir",
        ),
    ] {
        let o = cardinal()
            .args(["run", "-b", "127.0.0.1:1", "-t", "frames"])
            .args(extra)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{extra:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(why), "{err}");
    }
}

/// Issue 19: `demo --broker apache` goes through a running Apache Kafka, on topics
/// of its own, so that it can run twice on one broker and say the same twice.
#[test]
fn the_demo_runs_on_a_running_apache_kafka_twice_alike() {
    let b = Broker::shared();
    let port = b.addr.rsplit(':').next().unwrap().to_string();
    let truth = expected(
        &GenConfig {
            frames: 20_000,
            ..GenConfig::default()
        },
        &[Granularity::Minute, Granularity::Hour],
    );
    for round in 0..2 {
        let o = ok(cardinal()
            .args(["demo", "--broker", "apache", "--frames", "20000"])
            .env("KAFKA_PORT", &port)
            .output()
            .unwrap());
        // What it read back from its results topic: `KEY<TAB>JSON` lines.
        let records: String = (String::from_utf8_lossy(&o.stdout).lines())
            .filter(|l| l.contains('\t'))
            .map(|l| format!("{l}\n"))
            .collect();
        let got = counts(&records);
        assert_eq!(got, truth, "round {round}");
    }
}

#[test]
fn sigterm_checkpoints_commits_and_exits_zero() {
    let b = Broker::with_topics(&[]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = GenConfig {
        frames: 20_000,
        rate: 100.0,
        users: 2000,
        seed: 5,
        ..GenConfig::default()
    };
    let frames = b.name("frames");
    produce(&b, &frames, &write_frames(dir.path(), &cfg));
    let state = dir.path().join("state");
    let mut live = cardinal()
        .args(["run", "-b", &b.addr, "-t", &frames, "-g", &b.name("term")])
        .args(["--format", "json"])
        .arg("--state-dir")
        .arg(&state)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(live.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(first.contains("\"window\""), "{first}");
    common::sigterm(&live);
    let out = live.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cp = cardinal::checkpoint::StateDir::open(&state)
        .unwrap()
        .inspect()
        .unwrap()
        .expect("a checkpoint was written at shutdown");
    let cardinal::checkpoint::InputPosition::Kafka { offsets } = cp.input else {
        panic!("a Kafka checkpoint")
    };
    let read: i64 = offsets.iter().map(|(_, o)| o).sum();
    assert!(read > 0, "{offsets:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("checkpoints:"));
}

#[test]
fn when_frames_stop_the_open_windows_are_emitted_after_idle_timeout_plus_lateness() {
    let b = Broker::with_topics(&[]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = GenConfig {
        frames: 3000,
        rate: 20.0,
        users: 500,
        seed: 3,
        ..GenConfig::default()
    };
    let frames = b.name("frames");
    produce(&b, &frames, &write_frames(dir.path(), &cfg));
    let want = expected(&cfg, &[Granularity::Minute]);
    let mut live = cardinal()
        .args(["run", "-b", &b.addr, "-t", &frames, "-g", &b.name("quiet")])
        .args(["--format", "json"])
        .args(["--idle-timeout", "2s", "--lateness", "1s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Live mode never reaches an end of input: only wall-clock quiet can emit the
    // last minute, whose end no frame passes.
    let stdout = BufReader::new(live.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let mut got = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while counts(&got).len() < want.len() && Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            got.push_str(&line);
            got.push('\n');
        }
    }
    let _ = live.kill();
    let _ = live.wait();
    assert_eq!(counts(&got), want);
}

/// Sends each `(partition, payload)` to `topic`, in order, and waits for every ack.
fn produce_to_partitions(b: &Broker, topic: &str, frames: &[(i32, String)]) {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &b.addr)
        .set("linger.ms", "5")
        .create()
        .unwrap();
    for (partition, payload) in frames {
        let mut record = BaseRecord::<(), _>::to(topic)
            .partition(*partition)
            .payload(payload);
        while let Err((e, back)) = p.send(record) {
            assert!(
                matches!(
                    e.rdkafka_error_code(),
                    Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                ),
                "{e}"
            );
            p.poll(Duration::from_millis(50));
            record = back;
        }
        p.poll(Duration::ZERO);
    }
    p.flush(Duration::from_secs(60)).unwrap();
}

#[test]
fn a_sparse_partition_beside_a_busy_one_loses_no_frame() {
    let b = Broker::shared();
    let frames = b.name("frames");
    b.create_topic(&frames, 2);
    let base = 1_468_244_340i64;
    // Partition 0: a frame a second. Partition 1: a frame every 90 s, more than
    // --max-ahead apart, with one bit-flipped timestamp among them.
    let busy: Vec<(String, i64)> = (0..3000)
        .map(|i| (format!("b{}", i % 500), base + i))
        .collect();
    let sparse: Vec<(String, i64)> = (0..34).map(|i| (format!("s{i}"), base + 90 * i)).collect();
    let flip = sparse[20].1 ^ (1 << 31);
    let frame = |(u, t): &(String, i64)| format!(r#"{{"uid":"{u}","ts":{t}}}"#);
    let mut records: Vec<(i32, String)> = busy.iter().map(|f| (0, frame(f))).collect();
    let mut on_one: Vec<(i32, String)> = sparse.iter().map(|f| (1, frame(f))).collect();
    on_one.insert(21, (1, frame(&("flip".to_string(), flip))));
    records.extend(on_one);
    produce_to_partitions(&b, &frames, &records);

    let dir = tempfile::tempdir().unwrap();
    let rejects = dir.path().join("rejects.jsonl");
    let o = ok(cardinal()
        .args(["run", "-b", &b.addr, "-t", &frames, "-g", &b.name("g")])
        .args(["--until-end", "--format", "json"])
        .arg("--rejects")
        .arg(&rejects)
        .output()
        .unwrap());
    let rejected: Vec<Value> = std::fs::read_to_string(&rejects)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        rejected.len(),
        1,
        "{rejected:?}\nstderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(rejected[0]["reason"], "outlier");
    assert_eq!(
        (
            rejected[0]["partition"].as_u64(),
            rejected[0]["offset"].as_u64()
        ),
        (Some(1), Some(21))
    );
    let want =
        common::distinct_per_minute(busy.iter().chain(&sparse).map(|(u, t)| (u.as_str(), *t)));
    let got = common::minute_counts(&o.stdout);
    assert_eq!(got, want);
}

/// The group's committed offset for `topic[partition]`, if any.
fn committed(b: &Broker, group: &str, topic: &str, partition: i32) -> Option<i64> {
    use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &b.addr)
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
fn a_held_frame_is_never_committed_and_a_restart_counts_it() {
    let b = Broker::shared();
    let (frames, group) = (b.name("frames"), b.name("held"));
    b.create_topic(&frames, 1);
    let base = 1_468_244_340i64;
    // Fifty ordinary frames, then five a day ahead: held by the outlier guard (fewer
    // than --confirm), after a quiet period has emitted every open window.
    let times: Vec<i64> = (0..50)
        .map(|i| base + i)
        .chain((0..5).map(|i| base + 86_400 + i))
        .collect();
    let records: Vec<(i32, String)> = times
        .iter()
        .enumerate()
        .map(|(i, t)| (0, format!(r#"{{"uid":"u{i}","ts":{t}}}"#)))
        .collect();
    produce_to_partitions(&b, &frames, &records);

    let live = cardinal()
        .args(["run", "-b", &b.addr, "-t", &frames, "-g", &group])
        .args([
            "--format",
            "json",
            "--idle-timeout",
            "2s",
            "--checkpoint-interval",
            "200ms",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once the quiet period (idle timeout + lateness) has emitted the first fifty
    // frames' windows, everything before the held frames is safe; they are not.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut at_50_since = None;
    loop {
        let c = committed(&b, &group, &frames, 0);
        assert!(
            c.is_none_or(|c| c <= 50),
            "committed {c:?}: past the held frame at offset 50"
        );
        if c == Some(50) {
            let since = *at_50_since.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_secs(2) {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "never committed up to the held frames: {c:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    common::sigterm(&live);
    let first = live.wait_with_output().unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(
        committed(&b, &group, &frames, 0),
        Some(50),
        "SIGTERM commits no further"
    );

    // A restart without --state-dir reads the held frames again and counts them.
    let second = ok(cardinal()
        .args(["run", "-b", &b.addr, "-t", &frames, "-g", &group])
        .args(["--until-end", "--format", "json"])
        .output()
        .unwrap());
    let mut got = common::minute_counts(&first.stdout);
    got.extend(common::minute_counts(&second.stdout));
    let mut want: BTreeMap<i64, u64> = BTreeMap::new();
    for t in &times {
        *want.entry(t - t.rem_euclid(60)).or_default() += 1;
    }
    assert_eq!(got, want);
}

/// Starts a backfill of `frames` and returns it once it has published a result
/// (so it is reading), with its stdout reader.
fn backfill_under_way(
    b: &Broker,
    extra: &[&str],
) -> (
    std::process::Child,
    BufReader<std::process::ChildStdout>,
    String,
) {
    let mut run = cardinal()
        .args(["run", "-b", &b.addr, "-t", &b.name("frames")])
        .args(["-g", &b.name("g"), "--until-end", "--format", "json"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(run.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(first.contains("\"window\""), "{first}");
    (run, stdout, first)
}

#[test]
fn a_backfill_whose_broker_dies_fails_naming_it() {
    let mut b = Broker::own();
    let frames = b.name("frames");
    b.create_topic(&frames, 2);
    let dir = tempfile::tempdir().unwrap();
    let cfg = GenConfig {
        frames: 60_000,
        rate: 50.0,
        users: 1000,
        seed: 5,
        ..GenConfig::default()
    };
    produce(&b, &frames, &write_frames(dir.path(), &cfg));
    let (run, stdout, _) = backfill_under_way(&b, &["--stall-timeout", "5s"]);
    b.apache().kill();
    let killed_at = Instant::now();
    // Keep reading its results: a reader that goes away would end the run quietly.
    let reader = std::thread::spawn(move || std::io::copy(&mut { stdout }, &mut std::io::sink()));
    let out = common::output_within(run, Duration::from_secs(90));
    let _ = reader.join();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&b.addr) && err.contains("--stall-timeout"),
        "{err}"
    );
    // It waited for the deadline, not for ever (and not for nothing).
    let waited = killed_at.elapsed();
    assert!(
        waited >= Duration::from_secs(4) && waited < Duration::from_secs(60),
        "{waited:?}"
    );
    // One warning per interval, not one per retry.
    let warnings = err.matches("consumer_error").count();
    assert!(warnings <= 2, "{warnings} consumer_error lines:\n{err}");
}

#[test]
fn a_flapping_broker_mid_backfill_loses_nothing() {
    let mut b = Broker::own();
    let frames = b.name("frames");
    b.create_topic(&frames, 2);
    let dir = tempfile::tempdir().unwrap();
    let cfg = GenConfig {
        frames: 60_000,
        rate: 50.0,
        users: 1000,
        seed: 6,
        ..GenConfig::default()
    };
    produce(&b, &frames, &write_frames(dir.path(), &cfg));
    let (mut run, mut stdout, first) = backfill_under_way(&b, &[]);
    // A flapping broker: down and up three times.
    for _ in 0..3 {
        b.apache().restart();
        std::thread::sleep(Duration::from_millis(700));
    }
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let status = run.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut run.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "{err}");
    assert_eq!(
        counts(&(first + &rest)),
        expected(&cfg, &[Granularity::Minute])
    );
}

/// Every frame of `topic` as (partition, offset, ts), read back from the broker and
/// parsed with serde_json.
fn frames_by_position(b: &Broker, topic: &str, partitions: i32) -> Vec<(i32, i64, i64)> {
    use rdkafka::Message;
    use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &b.addr)
        .set("group.id", "read-back")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "5")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in 0..partitions {
        let (_, high) = c
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .unwrap();
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
        ends.insert(p, high);
    }
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while out.len() < ends.values().sum::<i64>() as usize {
        assert!(Instant::now() < deadline, "read {} of {ends:?}", out.len());
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            let m = m.unwrap();
            let v: Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
            let ts = v["ts"]
                .as_i64()
                .or_else(|| v["ts"].as_str().and_then(|s| s.parse().ok()))
                .unwrap();
            out.push((m.partition(), m.offset(), ts));
        }
    }
    out
}

#[test]
fn a_results_topic_that_refuses_writes_fails_the_run_and_commits_no_frame_of_a_lost_result() {
    // Tansu validates the results topic's records against a JSON schema that refuses
    // the result of one minute, so the topic stops taking writes mid-run. Apache
    // Kafka has no per-record refusal to offer (its limits refuse every record alike),
    // so this test stays on Tansu.
    let refused = "2016-07-11T13:44:00Z";
    let schema = serde_json::json!({
        "type": "object",
        "properties": {"value": {
            "type": "object",
            "not": {"properties": {"start": {"const": refused}}, "required": ["start"]}
        }}
    });
    let tansu = Tansu::start_with_schemas(Engine::Sqlite, &[("results", &schema.to_string())])
        .unwrap_or_else(|e| panic!("{e} (scripts/test.sh installs it)"));
    let addr = tansu.addr().to_string();
    let b = Broker {
        kafka: Kafka::Tansu(tansu),
        addr,
        names: Names::of_this_test(),
    };
    b.create_topic("frames", 4);
    b.create_topic("results", 1);
    let dir = tempfile::tempdir().unwrap();
    // 13:39:44 to about 13:50: the minutes before 13:44 are published, 13:44 is refused.
    let cfg = GenConfig {
        frames: 6000,
        rate: 10.0,
        users: 500,
        seed: 31,
        ..GenConfig::default()
    };
    // The frames before 13:43 first, and the rest once the group has committed
    // some: on a loaded machine the run could otherwise reach the refused minute
    // before its first commit landed, and the check below would check nothing.
    let all = std::fs::read_to_string(write_frames(dir.path(), &cfg)).unwrap();
    let cut = refused.parse::<jiff::Timestamp>().unwrap().as_second() - 60;
    let (early, late): (Vec<&str>, Vec<&str>) = all.lines().partition(|l| {
        serde_json::from_str::<Value>(l)
            .ok()
            .and_then(|v| v["ts"].as_i64().or_else(|| v["ts"].as_str()?.parse().ok()))
            .is_some_and(|ts| ts < cut)
    });
    let part = |name: &str, lines: &[&str]| {
        let path = dir.path().join(name);
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        produce(&b, "frames", &path);
    };
    part("early.json", &early);
    let child = cardinal()
        .args(["run", "-b", &b.addr, "-t", "frames", "-g", "refused"])
        .args(["--results-topic", "results", "--idle-timeout", "1h"])
        // A commit after every batch: the minutes before the refused one are committed.
        .args(["--windows", "minute", "--checkpoint-interval", "1ms"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while (0..4).all(|p| committed(&b, "refused", "frames", p).unwrap_or(0) == 0) {
        assert!(Instant::now() < deadline, "no commit within 120 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    part("late.json", &late);
    let o = common::output_within(child, Duration::from_secs(180));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("topic results") || err.contains("results to results"),
        "the error names the topic: {err}"
    );

    // What reached the results topic, by minute start (unix seconds).
    let published: std::collections::BTreeSet<i64> =
        common::minute_counts(results_topic(&b, "results").as_bytes())
            .into_keys()
            .collect();
    let refused_start = refused.parse::<jiff::Timestamp>().unwrap().as_second();
    assert!(!published.contains(&refused_start), "{published:?}");
    assert!(
        published.iter().any(|m| *m < refused_start),
        "minutes before it were published: {published:?}"
    );
    // No committed offset passes a frame whose minute did not reach the topic, and
    // the minutes that did were committed (else this checks nothing).
    let frames = frames_by_position(&b, "frames", 4);
    assert_eq!(frames.len(), 6000);
    let mut progress = 0;
    for p in 0..4 {
        let c = committed(&b, "refused", "frames", p).unwrap_or(0);
        progress += c;
        for (_, offset, ts) in frames.iter().filter(|f| f.0 == p && f.1 < c) {
            assert!(
                published.contains(&(ts - ts.rem_euclid(60))),
                "frames[{p}] committed at {c}, past offset {offset} (ts {ts}) whose minute was never published"
            );
        }
    }
    assert!(progress > 0, "nothing committed before the refusal");
}

/// Runs a backfill of 200 frames twice with `args`: the first counts them exactly,
/// the second starts at the end offsets, so it has nothing to read. It must finish
/// at once and count nothing twice; it used to wait for a message that would never
/// come, and fail after --stall-timeout.
fn rerun_at_the_end(args: &[&str]) {
    let b = Broker::shared();
    let (frames, group) = (b.name("frames"), b.name("again"));
    b.create_topic(&frames, 2);
    let base = 1_468_244_340i64;
    let sent: Vec<(String, i64)> = (0..200)
        .map(|i| (format!("u{}", i % 17), base + i))
        .collect();
    let records: Vec<(i32, String)> = (sent.iter().enumerate())
        .map(|(i, (u, t))| (i as i32 % 2, format!(r#"{{"uid":"{u}","ts":{t}}}"#)))
        .collect();
    produce_to_partitions(&b, &frames, &records);
    let run = || {
        cardinal()
            .args(["run", "-b", &b.addr, "-t", &frames, "-g", &group])
            .arg("--until-end")
            .args(["--format", "json", "--stall-timeout", "20s"])
            .args(args)
            .output()
            .unwrap()
    };
    let first = ok(run());
    assert_eq!(
        common::minute_counts(&first.stdout),
        common::distinct_per_minute(sent.iter().map(|(u, t)| (u.as_str(), *t)))
    );
    let second = run();
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert!(
        common::minute_counts(&second.stdout).is_empty(),
        "counted again: {}",
        String::from_utf8_lossy(&second.stdout)
    );
}

/// A checkpoint at the end offsets: the run was killed after its last checkpoint,
/// before it exited (seen in the kill -9 test), or simply ran again.
#[test]
fn a_backfill_restarted_at_its_end_offsets_finishes_and_counts_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    rerun_at_the_end(&["--state-dir", dir.path().to_str().unwrap()]);
}

/// The same without a checkpoint: the group's committed offsets stand at the end.
#[test]
fn a_backfill_rerun_from_committed_offsets_at_the_end_finishes_and_counts_nothing() {
    rerun_at_the_end(&[]);
}

/// Issue 18, item 1: `run` without `--state-dir`, run to the end, then run again
/// on more frames. The first frame after the restart belongs to a minute already
/// published final; it opened a fresh minute published as `final`, version 1, with
/// one user, and the hour was republished with only what came after the restart.
/// The expected latest value of every window is computed here from the frames.
#[test]
fn a_restart_never_republishes_a_final_window_with_less() {
    let b = Broker::shared();
    let (frames, results) = (b.name("frames"), b.name("results"));
    b.create_topic(&frames, 1);
    b.kafka_topic_compacted(&results);
    let dir = tempfile::tempdir().unwrap();
    let m0 = 1_468_242_000i64; // 2016-07-11T13:00:00Z, an hour's start
    let frame = |uid: &str, ts: i64| format!(r#"{{"uid":"{uid}","ts":{ts}}}"#);
    let write = |name: &str, lines: &[String]| {
        let path = dir.path().join(name);
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        path
    };
    // Minutes 0 to 2 of the hour, sixty users each, one frame a second.
    let first: Vec<(String, i64)> = (0..180).map(|i| (format!("a{i}"), m0 + i)).collect();
    // The straggler (minute 1, a new user), then minute 4: sixty more users.
    let second: Vec<(String, i64)> = std::iter::once(("straggler".to_string(), m0 + 90))
        .chain((0..60).map(|i| (format!("b{i}"), m0 + 240 + i)))
        .collect();
    let lines = |fs: &[(String, i64)]| fs.iter().map(|(u, t)| frame(u, *t)).collect::<Vec<_>>();
    let rejects = dir.path().join("rejects.jsonl");
    let run = || {
        ok(cardinal()
            .args(["run", "-b", &b.addr, "-t", &frames])
            .args(["-g", &b.name("restart")])
            .args(["--results-topic", &results, "--until-end"])
            .args(["--windows", "minute,hour", "--rejects"])
            .arg(&rejects)
            .output()
            .unwrap())
    };
    produce(&b, &frames, &write("first.json", &lines(&first)));
    run();
    let after_first = common::latest_results(&b.addr, &results);
    produce(&b, &frames, &write("second.json", &lines(&second)));
    run();
    let latest = common::latest_results(&b.addr, &results);

    // The reference: each run publishes, at its end, every window it saw; a window
    // published final is never published again with less, and the straggler's
    // minute and hour were final before it came.
    let label = |ts: i64| {
        jiff::Timestamp::from_second(ts)
            .unwrap()
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    };
    let mut want: BTreeMap<(String, String), u64> = BTreeMap::new();
    for m in 0..3 {
        want.insert(("minute".into(), label(m0 + 60 * m)), 60);
    }
    want.insert(("minute".into(), label(m0 + 240)), 60);
    want.insert(("hour".into(), label(m0)), 180);
    let got: BTreeMap<(String, String), u64> = (latest.iter())
        .map(|(k, v)| (k.clone(), v["unique_users"].as_u64().unwrap()))
        .collect();
    assert_eq!(got, want);
    assert_eq!(
        after_first.len(),
        4,
        "three minutes and the hour: {after_first:?}"
    );
    for (k, v) in &after_first {
        assert_eq!(latest[k]["version"], v["version"], "{k:?} published again");
    }
    // The straggler is rejected as late, for both windows, not dropped silently.
    let rejects = std::fs::read_to_string(&rejects).unwrap();
    let straggler: Vec<&str> = rejects
        .lines()
        .filter(|l| l.contains("straggler"))
        .collect();
    assert_eq!(straggler.len(), 1, "{rejects}");
    assert!(straggler[0].contains("\"late\""), "{}", straggler[0]);
}

/// Issue 18, item 7, on Kafka: `run --state-dir --rejects FILE` killed with
/// SIGKILL and restarted created the rejects file anew, losing the rejects of
/// every frame before the checkpoint. Each invalid record (every seventh, written
/// so here) must be in the file exactly once after the restart.
#[test]
fn a_restarted_run_keeps_the_rejects_written_before_its_checkpoint() {
    let b = Broker::shared();
    let frames = b.name("frames");
    b.create_topic(&frames, 1);
    let dir = tempfile::tempdir().unwrap();
    let (text, invalid) = common::frames_with_every_seventh_invalid(60_000);
    let invalid: Vec<i64> = invalid.into_iter().map(|i| i as i64).collect();
    let input = dir.path().join("frames.json");
    std::fs::write(&input, text).unwrap();
    ok(cardinal()
        .args(["produce", "-b", &b.addr, "-t", &frames])
        .arg(&input)
        .output()
        .unwrap());
    let (state, rejects) = (dir.path().join("state"), dir.path().join("r.jsonl"));
    let run = || {
        let mut c = cardinal();
        c.args(["run", "-b", &b.addr, "-t", &frames, "-g", &b.name("rj")])
            .arg("--until-end")
            .args([
                "--checkpoint-interval",
                "1ms",
                "-X",
                "session.timeout.ms=6000",
            ])
            .arg("--state-dir")
            .arg(&state)
            .arg("--rejects")
            .arg(&rejects)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    };
    let mut first = run().spawn().unwrap();
    // A third of the rejects written, and checkpoints since.
    let finished = common::until_under_way(&mut first, &rejects, 500_000, &state);
    if finished.is_none() {
        let _ = first.kill(); // SIGKILL
        first.wait().unwrap();
    }
    let o = common::output_within(
        run().stderr(Stdio::piped()).spawn().unwrap(),
        Duration::from_secs(120),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut offsets: Vec<i64> = std::fs::read_to_string(&rejects)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["offset"].as_i64().unwrap()
        })
        .collect();
    offsets.sort_unstable();
    assert_eq!(offsets.len(), invalid.len(), "each reject once");
    assert_eq!(offsets, invalid);
}

/// Issue 18, item 6: a `--state-dir` checkpoint written with the uid from the
/// JSON was resumed with `--uid-from key` (and the ts from the record), mixing
/// hashes of two kinds of user in one window. The restart is refused, naming both
/// settings side by side.
#[test]
fn a_restart_that_takes_the_uid_from_elsewhere_is_refused() {
    let b = Broker::with_topics(&[]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = GenConfig {
        frames: 500,
        seed: 3,
        ..GenConfig::default()
    };
    let frames = b.name("frames");
    produce(&b, &frames, &write_frames(dir.path(), &cfg));
    let state = dir.path().join("state");
    let run = |extra: &[&str]| {
        cardinal()
            .args(["run", "-b", &b.addr, "-t", &frames, "-g", &b.name("ident")])
            .arg("--until-end")
            .arg("--state-dir")
            .arg(&state)
            .args(extra)
            .output()
            .unwrap()
    };
    ok(run(&[]));
    for (extra, named) in [
        (&["--uid-from", "key"][..], "uid_from=key"),
        (
            &["--ts-from", "record-timestamp"][..],
            "ts_from=record-timestamp",
        ),
    ] {
        let o = run(extra);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{extra:?}: {err}");
        assert!(
            err.contains("written for another job") && err.contains(named),
            "{err}"
        );
    }
}
