//! `cardinal run --scale-out`: several processes in one consumer group share a
//! topic on the reference broker, Apache Kafka (one KRaft node shared by this
//! file's tests, each with topics and groups of its own, `GROUP.partials` and
//! `GROUP.merge` included, `common::apache`), whose group coordinator moves a dead member's partitions
//! when its session expires, while members leave, join and die. The results topic must hold what one process would publish: the exact
//! users and frames of every window, final. The expected figures come from the
//! generator's truth, grouped by Python's calendar (tests/common), not by Cardinal.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use cardinal::generator::GenConfig;
use cardinal::window::Granularity;
use common::apache::{ApacheKafka, Names};
use common::{Running, cardinal, stderr_lines};

const GRANS: [Granularity; 2] = [Granularity::Minute, Granularity::Hour];
/// The instances' session timeout: a killed one is taken for dead this long after.
const SESSION: Duration = Duration::from_secs(6);

/// (window, start) → (users, frames, final).
type Windows = BTreeMap<(String, String), (u64, u64, bool)>;

/// The shared broker, with this test's `frames` and `results` topics (named by
/// `names`, as are its groups).
struct Setup {
    kafka: &'static ApacheKafka,
    addr: String,
    names: Names,
    frames: String,
    results: String,
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(partitions: i32) -> Setup {
        let (kafka, names) = (ApacheKafka::shared(), Names::of_this_test());
        let (frames, results) = (names.get("frames"), names.get("results"));
        kafka.create_topic(&frames, partitions, false);
        kafka.create_topic(&results, 1, true);
        Setup {
            kafka,
            addr: kafka.addr().to_string(),
            names,
            frames,
            results,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn produce(&self, lines: &[&[u8]], name: &str) {
        let file = self.dir.path().join(name);
        std::fs::write(&file, [lines.join(&b'\n'), b"\n".to_vec()].concat()).unwrap();
        common::produce_keyed(&self.addr, &self.frames, &file);
    }

    /// A live instance of the test's group `g`.
    fn instance(&self, extra: &[&str]) -> Instance {
        let mut child = cardinal()
            .args(["run", "-b", &self.addr, "-t", &self.frames])
            .args(["-g", &self.names.get("g"), "--scale-out"])
            .args(["--results-topic", &self.results, "--format", "json"])
            .args(["--windows", "minute,hour", "--idle-timeout", "10s"])
            .args(["-X", &format!("session.timeout.ms={}", SESSION.as_millis())])
            .args(extra)
            .env("RUST_LOG", "cardinal=info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err = stderr_lines(&mut child);
        Instance {
            run: Running(child),
            err,
            log: String::new(),
        }
    }

    /// The latest record per window: (window, start) → (users, frames, final).
    fn results(&self) -> Windows {
        (common::latest_results(&self.addr, &self.results).into_iter())
            .map(|(k, v)| {
                let users = v["unique_users"].as_u64().unwrap();
                (
                    k,
                    (users, v["frames"].as_u64().unwrap(), v["final"] == true),
                )
            })
            .collect()
    }

    /// Waits (at most `within`) for the results topic to say `want`.
    fn await_results(&self, want: &Windows, within: Duration, logs: &mut [&mut Instance]) {
        let deadline = Instant::now() + within;
        let mut got = self.results();
        while &got != want && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(500));
            got = self.results();
        }
        if &got != want {
            let mut all = String::new();
            for i in logs.iter_mut() {
                i.drain();
                all.push_str(&i.log);
                all.push_str("-----\n");
            }
            let diff: Vec<_> = (want.iter())
                .filter(|(k, v)| got.get(*k) != Some(v))
                .map(|(k, v)| (k, v, got.get(k)))
                .collect();
            panic!(
                "results differ from the truth in {} of {} windows (window, want, got): {diff:?}\n{all}",
                diff.len(),
                want.len()
            );
        }
    }
}

struct Instance {
    run: Running,
    err: Receiver<String>,
    log: String,
}

impl Instance {
    /// Reads its log until `done` says so (90 s at most).
    fn wait_until(&mut self, what: &str, done: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(90);
        while !done(&self.log) {
            assert!(
                Instant::now() < deadline,
                "no {what} within 90 s:\n{}",
                self.log
            );
            if let Ok(line) = self.err.recv_timeout(Duration::from_millis(200)) {
                self.log.push_str(&line);
                self.log.push('\n');
            }
        }
    }

    fn wait_for(&mut self, needle: &str) {
        self.wait_until(needle, |log| log.contains(needle));
    }

    /// Waits for an assignment that gives it at least one partition.
    fn wait_for_partitions(&mut self) {
        self.wait_until("partition", |log| {
            (log.lines().rev())
                .find(|l| l.contains("partitions_assigned"))
                .is_some_and(|l| !l.contains("partitions=[]"))
        });
    }

    fn drain(&mut self) {
        self.log.extend(self.err.try_iter().map(|l| l + "\n"));
    }

    /// SIGTERM, then its exit code.
    fn stop(&mut self) -> Option<i32> {
        common::sigterm(&self.run.0);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(s) = self.run.0.try_wait().unwrap() {
                self.drain();
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.drain();
        panic!("no exit within 60 s of SIGTERM:\n{}", self.log);
    }
}

/// The generator's frames in three parts, and the exact answer over all of them.
fn frames_in_thirds(cfg: &GenConfig) -> (Vec<u8>, Windows) {
    let mut text = Vec::new();
    cardinal::generator::generate(cfg, &mut text).unwrap();
    let want = common::expected_windows(&common::valid_frames(cfg), &GRANS, "UTC")
        .into_iter()
        .map(|(k, w)| (k, (w.unique_users, w.frames, true)))
        .collect();
    (text, want)
}

fn lines(text: &[u8]) -> Vec<&[u8]> {
    (text.split(|b| *b == b'\n'))
        .filter(|l| !l.is_empty())
        .collect()
}

fn thirds(text: &[u8]) -> [Vec<&[u8]>; 3] {
    let lines = lines(text);
    let n = lines.len() / 3;
    [
        lines[..n].to_vec(),
        lines[n..2 * n].to_vec(),
        lines[2 * n..].to_vec(),
    ]
}

fn config(seed: u64) -> GenConfig {
    GenConfig {
        frames: 24_000,
        rate: 20.0,
        users: 1500,
        seed,
        disorder: 0.02,
        string_ts: 0.1,
        malformed: 0.005,
        ..GenConfig::default()
    }
}

#[test]
fn three_instances_one_leaving_and_one_joining_publish_what_one_would() {
    let s = Setup::new(6);
    let cfg = config(31);
    let (text, want) = frames_in_thirds(&cfg);
    let [first, second, third] = thirds(&text);
    s.produce(&first, "first.json");
    let mut a = s.instance(&[]);
    a.wait_for_partitions();
    let mut b = s.instance(&[]);
    b.wait_for_partitions();
    // Both count the first third; then one leaves mid-stream, cleanly.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(a.stop(), Some(0), "{}", a.log);
    assert!(a.log.contains("partitions_released"), "{}", a.log);
    s.produce(&second, "second.json");
    // A newcomer joins while the stream goes on.
    let mut c = s.instance(&[]);
    c.wait_for_partitions();
    s.produce(&third, "third.json");
    s.await_results(
        &want,
        Duration::from_secs(120),
        &mut [&mut a, &mut b, &mut c],
    );
    assert_eq!(b.stop(), Some(0), "{}", b.log);
    assert_eq!(c.stop(), Some(0), "{}", c.log);
    assert!(want.len() > 20, "{want:?}");
}

/// The first `ts` among `lines` (skipping the generator's malformed ones).
fn first_ts(lines: &[&[u8]]) -> i64 {
    (lines.iter())
        .filter_map(|l| serde_json::from_slice::<serde_json::Value>(l).ok())
        .find_map(|v| match &v["ts"] {
            serde_json::Value::Number(n) => n.as_i64(),
            serde_json::Value::String(s) => s.parse().ok(),
            _ => None,
        })
        .expect("a frame with a ts")
}

impl Setup {
    /// Three live members, the first the merger, each with partitions, after a
    /// few seconds of counting together.
    fn three_members(&self) -> [Instance; 3] {
        let mut a = self.instance(&[]);
        a.wait_for("merger_active");
        a.wait_for_partitions();
        let mut b = self.instance(&[]);
        b.wait_for_partitions();
        let mut c = self.instance(&[]);
        c.wait_for_partitions();
        std::thread::sleep(Duration::from_secs(3));
        [a, b, c]
    }

    /// Waits (at most `within`) until a minute window starting at or after `from`
    /// is published final with its exact figures: every partition, the moved ones
    /// too, has then been read past it.
    fn first_exact_minute_from(&self, from: i64, want: &Windows, within: Duration) {
        let started = Instant::now();
        let from = jiff::Timestamp::from_second(from).unwrap().to_string();
        loop {
            let got = self.results();
            let exact = (want.iter())
                .filter(|((w, start), _)| w == "minute" && *start >= from)
                .any(|(k, v)| got.get(k) == Some(v));
            if exact {
                return;
            }
            assert!(
                started.elapsed() < within,
                "no exact final minute from {from} within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// Issue 19: three members, one killed with SIGKILL and never restarted. Apache
/// Kafka's coordinator gives its partitions to the others when its session
/// expires; they resume from its last checkpoint and the results topic ends
/// exact and final. Prints how long after the kill the first result covering
/// frames produced after it (so the dead member's partitions too) was published.
#[test]
fn a_member_killed_and_never_restarted_is_taken_over_by_the_others() {
    let s = Setup::new(6);
    let cfg = config(53);
    let (text, want) = frames_in_thirds(&cfg);
    let [first, second, third] = thirds(&text);
    s.produce(&first, "first.json");
    let [mut a, mut b, mut c] = s.three_members();
    // Not the merger: this is about its partitions alone.
    c.run.0.kill().unwrap();
    let _ = c.run.0.wait();
    let killed = Instant::now();
    s.produce(&second, "second.json");
    // Two minutes into the second part: it needs every partition's frames.
    let from = first_ts(&second) + 120;
    s.first_exact_minute_from(from, &want, Duration::from_secs(150));
    println!(
        "kill to the first exact result past it: {:.1} s (session timeout {} s)",
        killed.elapsed().as_secs_f64(),
        SESSION.as_secs()
    );
    s.produce(&third, "third.json");
    s.await_results(
        &want,
        Duration::from_secs(150),
        &mut [&mut a, &mut b, &mut c],
    );
    for i in [&mut a, &mut b] {
        assert_eq!(i.stop(), Some(0), "{}", i.log);
    }
}

#[test]
fn an_instance_killed_and_restarted_loses_nothing_and_counts_nothing_twice() {
    let s = Setup::new(6);
    let cfg = config(47);
    let (text, want) = frames_in_thirds(&cfg);
    let [first, second, third] = thirds(&text);
    s.produce(&first, "first.json");
    // The first to start is the merger: the kill takes the merge step down too.
    let [mut a, mut b, mut c] = s.three_members();
    a.run.0.kill().unwrap();
    let _ = a.run.0.wait();
    let killed = Instant::now();
    s.produce(&second, "second.json");
    // Apache Kafka gives the dead member's partitions to the survivors when its
    // session expires, and they resume from its last checkpoint, its silence having
    // lasted a session timeout; the restart (a new instance) then rebalances again.
    // Waiting out the dead one's session before the restart was for Tansu, where one
    // that joins while it lives may get nothing (../shared/kafka-broker.md).
    std::thread::sleep((2 * SESSION).saturating_sub(killed.elapsed()));
    let mut a2 = s.instance(&[]);
    a2.wait_for_partitions();
    // By now every partition has been silent for longer than the idle timeout: the
    // third part comes as one burst to idle partitions, some of them just moved.
    // Whichever is read first must not close windows the others' frames are in
    // (CI once saw six windows published final without two partitions' share).
    s.produce(&third, "third.json");
    s.await_results(
        &want,
        Duration::from_secs(150),
        &mut [&mut a, &mut b, &mut c, &mut a2],
    );
    for i in [&mut b, &mut c, &mut a2] {
        assert_eq!(i.stop(), Some(0), "{}", i.log);
    }
}

/// Issue 19: three members count a live stream, a fourth joins while the three
/// are live (the group moves partitions to it), then the first, the merger,
/// leaves cleanly (its partitions and the merge move to the others); the results
/// topic ends exact and final. Prints how long the fourth took from its start to
/// its first partitions.
#[test]
fn a_fourth_member_joining_three_and_the_merger_leaving_publish_what_one_would() {
    let s = Setup::new(6);
    let cfg = config(61);
    let (text, want) = frames_in_thirds(&cfg);
    let [first, second, third] = thirds(&text);
    s.produce(&first, "first.json");
    let [mut a, mut b, mut c] = s.three_members();
    let joined = Instant::now();
    let mut d = s.instance(&[]);
    d.wait_for_partitions();
    println!(
        "the fourth member's start to its first partitions: {:.1} s",
        joined.elapsed().as_secs_f64()
    );
    s.produce(&second, "second.json");
    // Four count the second third together for a moment; then the merger leaves.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(a.stop(), Some(0), "{}", a.log);
    assert!(a.log.contains("partitions_released"), "{}", a.log);
    s.produce(&third, "third.json");
    s.await_results(
        &want,
        Duration::from_secs(150),
        &mut [&mut a, &mut b, &mut c, &mut d],
    );
    for i in [&mut b, &mut c, &mut d] {
        assert_eq!(i.stop(), Some(0), "{}", i.log);
    }
    assert!(want.len() > 20, "{want:?}");
}

/// A backfill shared by instances that start together, exact and HLL, in the
/// test's group `group`, to its topic `results`.
fn backfill(s: &Setup, group: &str, results: &str, extra: &[&str], n: usize) -> Vec<String> {
    let (group, results) = (s.names.get(group), s.names.get(results));
    let children: Vec<_> = (0..n)
        .map(|_| {
            cardinal()
                .args(["run", "-b", &s.addr, "-t", &s.frames, "-g", &group])
                .args(["--scale-out", "--results-topic", &results, "--until-end"])
                .args(["--windows", "minute,hour", "-X", "session.timeout.ms=6000"])
                // Many change sets per window, read in any order against the lanes.
                .args(["--checkpoint-interval", "200ms"])
                .args(extra)
                .env("RUST_LOG", "cardinal=info")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|c| {
            let o = common::output_within(c, Duration::from_secs(180));
            let log = String::from_utf8_lossy(&o.stderr).into_owned();
            assert!(o.status.success(), "{log}");
            log
        })
        .collect()
}

/// Every HLL window record of the partials topic, as `{window, start, sketch}` lines.
fn partial_sketches(s: &Setup, topic: &str, out: &Path) {
    use cardinal::counter::CounterState;
    use cardinal::kafka::scale::records::{Entry, decode};
    let mut lines = String::new();
    let opts = cardinal::kafka::KafkaOptions::new(s.addr.clone(), Duration::from_secs(30));
    cardinal::kafka::consume_to_end(&opts, topic, |m| {
        if let Ok(Entry::Window {
            record: Some(r), ..
        }) = decode(m.key.as_deref().unwrap_or_default(), Some(&m.payload))
            && let Some(CounterState::Hll(bytes)) = r.counter
        {
            use base64::Engine;
            let start = jiff::Timestamp::from_second(r.start).unwrap();
            lines.push_str(
                &serde_json::json!({
                    "window": r.granularity.name(),
                    "start": start.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
                    "sketch": base64::engine::general_purpose::STANDARD.encode(bytes),
                })
                .to_string(),
            );
            lines.push('\n');
        }
        true
    })
    .unwrap();
    std::fs::write(out, lines).unwrap();
}

/// `frames` generated frames on `partitions` partitions, backfilled by three
/// instances of group `exact`: the results topic must say what the generator did.
fn exact_backfill(partitions: i32, frames: u64, seed: u64) -> (Setup, Windows, Vec<String>) {
    let s = Setup::new(partitions);
    let cfg = GenConfig {
        frames,
        ..config(seed)
    };
    let (text, want) = frames_in_thirds(&cfg);
    s.produce(&lines(&text), "all.json");
    let logs = backfill(&s, "exact", "results", &[], 3);
    s.await_results(&want, Duration::from_secs(10), &mut []);
    (s, want, logs)
}

#[test]
fn a_shared_backfill_is_exact_and_its_hll_partials_union_in_apaches_library() {
    let (s, want, logs) = exact_backfill(6, 30_000, 53);
    assert!(
        logs.iter().any(|l| l.contains("merge_complete")),
        "one instance merged to the end: {logs:?}"
    );

    // HLL: the merged sketches are Apache's union of the instances' partial sketches.
    let hll = ["--counter", "hll", "--emit-sketch", "--format", "json"];
    let results_hll = s.names.get("results-hll");
    s.kafka.create_topic(&results_hll, 1, true);
    backfill(&s, "hll", "results-hll", &hll, 2);
    let merged = s.dir.path().join("merged.jsonl");
    let o = cardinal()
        .args(["consume", "-b", &s.addr, "-t", &results_hll])
        .arg("--latest-per-key")
        .output()
        .unwrap();
    let hll_lines: String = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.contains("\"sketch\""))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&merged, hll_lines).unwrap();
    let partials = s.dir.path().join("partials.jsonl");
    let hll_partials = format!("{}.partials", s.names.get("hll"));
    partial_sketches(&s, &hll_partials, &partials);
    let o = Command::new("python3")
        .args(["-c", common::HLL_UNION])
        .arg(&merged)
        .arg(&partials)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "python3 -m pip install datasketches (scripts/test.sh does)"
    );
    let rows: Vec<(String, String, u64, f64, f64, bool)> =
        serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rows.len(), want.len());
    for (window, start, users, ours_in_python, python_union, same_registers) in rows {
        assert_eq!(users, ours_in_python.round() as u64, "{window} {start}");
        assert!(same_registers, "{window} {start}");
        let exact = want[&(window.clone(), start.clone())].0 as f64;
        assert!(
            (python_union - users as f64).abs() <= 0.25 * 0.0082 * exact + 1.0,
            "{window} {start}: ours {users}, Apache's union {python_union}"
        );
    }
}

/// More instances than partitions: the one the group gives nothing waits until
/// every partition is read to its end, then exits (it may still be handed one);
/// so does one whose own share ends first. Nothing hangs, and the results are exact.
#[test]
fn a_backfill_with_more_instances_than_partitions_ends_and_is_exact() {
    let (_s, _, logs) = exact_backfill(2, 6_000, 59);
    assert!(
        logs.iter().any(|l| l.contains("backfill_waiting")),
        "an instance waited for partitions held elsewhere: {logs:?}"
    );
}
