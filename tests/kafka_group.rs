//! Two `cardinal run`s in one consumer group, on the reference broker, Apache
//! Kafka (one KRaft node shared by this file's tests, each on topics and groups of
//! its own, `common::apache`): its group coordinator is the one production runs
//! against. One process counts a whole topic: a second member of its group would
//! hold a share of the partitions and publish partial counts under the same keys
//! as whole ones. The expected counts come from the generator's truth, grouped
//! without Cardinal's calendar code (tests/common).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use cardinal::generator::GenConfig;
use cardinal::window::Granularity;
use common::apache::{ApacheKafka, Names};
use common::{Running, cardinal, stderr_lines, wait_for};

fn produce(addr: &str, topic: &str, lines: &[&str], dir: &Path, name: &str) {
    let file = dir.join(name);
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    common::produce_keyed(addr, topic, &file);
}

/// The latest record per key of the results topic: (window, start) → (users, final).
fn latest(addr: &str, topic: &str) -> BTreeMap<(String, String), (u64, bool)> {
    (common::latest_results(addr, topic).into_iter())
        .map(|(k, v)| (k, (v["unique_users"].as_u64().unwrap(), v["final"] == true)))
        .collect()
}

#[test]
fn a_second_run_in_the_group_never_publishes_partial_counts() {
    let (kafka, names) = (ApacheKafka::shared(), Names::of_this_test());
    let addr = kafka.addr().to_string();
    let (frames, results, group) = (
        names.get("frames"),
        names.get("results"),
        names.get("split"),
    );
    kafka.create_topic(&frames, 4, false);
    kafka.create_topic(&results, 1, false);
    let dir = tempfile::tempdir().unwrap();
    let cfg = GenConfig {
        frames: 6000,
        rate: 50.0,
        users: 800,
        seed: 21,
        ..GenConfig::default()
    };
    let mut text = Vec::new();
    cardinal::generator::generate(&cfg, &mut text).unwrap();
    let text = String::from_utf8(text).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let (first, second) = lines.split_at(lines.len() / 2);
    produce(&addr, &frames, first, dir.path(), "first.json");

    let run = |session_ms: &str| {
        cardinal()
            .args(["run", "-b", &addr, "-t", &frames, "-g", &group])
            .args(["--results-topic", &results, "--format", "json"])
            .args(["--windows", "minute,hour", "--idle-timeout", "2s"])
            .args(["-X", &format!("session.timeout.ms={session_ms}")])
            .env("RUST_LOG", "cardinal=info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut first_run = Running(run("6000"));
    let first_err = stderr_lines(&mut first_run.0);
    let mut first_log = String::new();
    wait_for(
        &first_err,
        &mut first_log,
        "partitions_assigned",
        Duration::from_secs(60),
    );

    // The second member joins: the group splits the partitions between the two.
    let mut second_run = Running(run("6000"));
    let second_err = stderr_lines(&mut second_run.0);
    let mut second_log = String::new();
    wait_for(
        &second_err,
        &mut second_log,
        "assignment_incomplete",
        Duration::from_secs(60),
    );
    // Frames that arrive while the topic is split: whoever counts them must count all.
    produce(&addr, &frames, second, dir.path(), "second.json");

    // The newcomer gives up once a crashed member's session would have expired.
    let joined = Instant::now();
    let mut status = None;
    while joined.elapsed() < Duration::from_secs(90) {
        if let Some(s) = second_run.0.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut second_stdout = String::new();
    if status.is_some() {
        use std::io::Read;
        let mut out = second_run.0.stdout.take().unwrap();
        out.read_to_string(&mut second_stdout).unwrap();
    }
    drop(second_run);
    second_log.extend(second_err.try_iter().map(|l| l + "\n"));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(1),
        "the second member must stop:\n{second_log}"
    );
    assert!(
        second_log.contains("another member of the group holds the others")
            && second_log.contains(&format!("\"{group}\"")),
        "the error names the group and why:\n{second_log}"
    );
    assert!(
        second_stdout.is_empty(),
        "the second member published nothing: {second_stdout}"
    );

    // The first member gets the whole topic back and counts every frame once.
    let want: BTreeMap<_, _> =
        common::expected_from_truth(&cfg, &[Granularity::Minute, Granularity::Hour])
            .into_iter()
            .map(|(k, n)| (k, (n, true)))
            .collect();
    assert!(!want.is_empty());
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut got = latest(&addr, &results);
    while got != want && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        got = latest(&addr, &results);
    }
    common::sigterm(&first_run.0);
    let _ = first_run.0.wait();
    first_log.extend(first_err.try_iter().map(|l| l + "\n"));
    assert!(
        first_log.contains("assignment_incomplete"),
        "the topic was split while the first member ran:\n{first_log}"
    );
    assert_eq!(got, want, "{first_log}");
}

/// Two groups publishing to one results topic overwrite each other's windows: a
/// run names another group it finds there, and says nothing of its own.
#[test]
fn a_run_names_another_group_that_published_to_its_results_topic() {
    let (kafka, names) = (ApacheKafka::shared(), Names::of_this_test());
    let addr = kafka.addr().to_string();
    let (frames, results) = (names.get("frames"), names.get("results"));
    kafka.create_topic(&frames, 2, false);
    kafka.create_topic(&results, 1, true);
    let dir = tempfile::tempdir().unwrap();
    let cfg = GenConfig {
        frames: 300,
        seed: 5,
        ..GenConfig::default()
    };
    let mut text = Vec::new();
    cardinal::generator::generate(&cfg, &mut text).unwrap();
    let text = String::from_utf8(text).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    produce(&addr, &frames, &lines, dir.path(), "frames.json");
    let backfill = |group: &str| {
        let child = cardinal()
            .args(["run", "-b", &addr, "-t", &frames, "-g", group])
            .args(["--until-end", "--results-topic", &results])
            .env("RUST_LOG", "cardinal=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let o = common::output_within(child, Duration::from_secs(120));
        let log = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{log}");
        log
    };
    let (nightly, adhoc) = (names.get("nightly"), names.get("adhoc"));
    let first = backfill(&nightly);
    assert!(!first.contains("results_topic_shared"), "{first}");
    assert!(!latest(&addr, &results).is_empty());
    let again = backfill(&nightly);
    assert!(!again.contains("results_topic_shared"), "its own: {again}");
    let other = backfill(&adhoc);
    assert!(
        other.contains("results_topic_shared") && other.contains(&format!("other_group={nightly}")),
        "{other}"
    );
}
