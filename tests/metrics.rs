//! `--http` on the reference broker, Apache Kafka (one KRaft node shared by this
//! file's tests, each on a topic and group of its own, `common::apache`), whose
//! consumer lag is real: `/metrics` is fetched and parsed
//! by Python's `prometheus_client` (an independent parser), and its values are
//! checked against what the test sent and against the rejects file; `/healthz` and
//! `/readyz` answer as a Kubernetes probe expects.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::apache::{ApacheKafka, Names};
use common::cardinal;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

/// Fetches `url` and parses it with `prometheus_client`: `(name, labels) → value`.
/// Sample names are as exposed (`…_total`, `…_bucket`).
const SCRAPE: &str = r#"
import json, sys, urllib.request
from prometheus_client.parser import text_string_to_metric_families
text = urllib.request.urlopen(sys.argv[1], timeout=5).read().decode()
out = []
for family in text_string_to_metric_families(text):
    for s in family.samples:
        out.append([s.name, s.labels, s.value])
print(json.dumps(out))
"#;

/// HTTP status of `url`, as Python's urllib sees it.
const STATUS: &str = r#"
import sys, urllib.request, urllib.error
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=5).status)
except urllib.error.HTTPError as e:
    print(e.code)
"#;

type Samples = BTreeMap<(String, BTreeMap<String, String>), f64>;

fn python(script: &str, url: &str) -> Result<String, String> {
    let o = Command::new("python3")
        .args(["-c", script, url])
        .output()
        .map_err(|e| e.to_string())?;
    if !o.status.success() {
        return Err(String::from_utf8_lossy(&o.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
}

fn scrape(addr: &str) -> Result<Samples, String> {
    let json = python(SCRAPE, &format!("http://{addr}/metrics"))?;
    let rows: Vec<(String, BTreeMap<String, String>, f64)> =
        serde_json::from_str(&json).map_err(|e| format!("{e}: {json}"))?;
    Ok(rows.into_iter().map(|(n, l, v)| ((n, l), v)).collect())
}

fn get(s: &Samples, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    s.get(&(name.to_string(), labels)).copied()
}

/// Rejects per reason, as the rejects file has them and as `/metrics` says.
fn rejects_by_reason(
    rejects: &std::path::Path,
    samples: &Samples,
) -> (BTreeMap<String, f64>, BTreeMap<String, f64>) {
    let mut in_file: BTreeMap<String, f64> = BTreeMap::new();
    for line in std::fs::read_to_string(rejects).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        *in_file
            .entry(v["reason"].as_str().unwrap().to_string())
            .or_default() += 1.0;
    }
    let in_metrics = samples
        .iter()
        .filter(|((n, _), v)| n == "cardinal_frames_rejected_total" && **v > 0.0)
        .map(|((_, l), v)| (l["reason"].clone(), *v))
        .collect();
    (in_file, in_metrics)
}

#[test]
fn metrics_match_what_was_sent_and_the_rejects_file() {
    if python("import prometheus_client", "").is_err() {
        panic!("python3 -m pip install prometheus_client (scripts/test.sh does)");
    }
    let (t, names) = (ApacheKafka::shared(), Names::of_this_test());
    let (frames, group) = (names.get("frames"), names.get("g"));
    t.create_topic(&frames, 3, false);
    let base = 1_468_244_340i64;
    // 600 valid frames over 10 minutes, spread over 3 partitions unevenly, and
    // frames that are rejected for known reasons.
    let mut sent: Vec<(i32, String)> = Vec::new();
    for i in 0..600i64 {
        let p = (i % 5).min(2) as i32;
        sent.push((p, format!(r#"{{"uid":"u{}","ts":{}}}"#, i % 70, base + i)));
    }
    for _ in 0..4 {
        sent.push((1, r#"{"uid":"x"}"#.to_string())); // missing_ts
    }
    for _ in 0..3 {
        sent.push((2, "[1,2]".to_string())); // not_an_object
    }
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", t.addr())
        .create()
        .unwrap();
    for (partition, payload) in &sent {
        let mut record = BaseRecord::<(), _>::to(&frames)
            .partition(*partition)
            .payload(payload);
        while let Err((_, back)) = p.send(record) {
            p.poll(Duration::from_millis(50));
            record = back;
        }
    }
    p.flush(Duration::from_secs(30)).unwrap();
    let per_partition = |want: i32| sent.iter().filter(|(p, _)| *p == want).count() as f64;

    let dir = tempfile::tempdir().unwrap();
    let rejects = dir.path().join("rejects.jsonl");
    let mut run = cardinal()
        .args(["run", "-b", t.addr(), "-t", &frames, "-g", &group])
        .args(["--from", "earliest"])
        .args([
            "--http",
            "127.0.0.1:0",
            "--format",
            "json",
            "--idle-timeout",
            "1h",
            "--status-interval",
            "1s",
        ])
        .arg("--rejects")
        .arg(&rejects)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(run.stderr.take().unwrap());
    let (addr, mut log) = common::http_address(&mut stderr);
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    let logger = std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    // Live, the run never ends: wait until it has read everything.
    let deadline = Instant::now() + Duration::from_secs(90);
    let samples = loop {
        let s = scrape(&addr).unwrap();
        let lag_done = (0..3).all(|p| {
            get(
                &s,
                "cardinal_consumer_lag",
                &[("partition", &p.to_string())],
            ) == Some(0.0)
        });
        if get(&s, "cardinal_frames_read_total", &[]) == Some(sent.len() as f64) && lag_done {
            break s;
        }
        assert!(Instant::now() < deadline, "never caught up: {s:?}");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(
        python(STATUS, &format!("http://{addr}/healthz")).unwrap(),
        "200"
    );
    assert_eq!(
        python(STATUS, &format!("http://{addr}/readyz")).unwrap(),
        "200"
    );
    assert_eq!(
        python(STATUS, &format!("http://{addr}/nope")).unwrap(),
        "404"
    );
    // The live status line says the same, once caught up.
    let status_line = loop {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("no status line with every frame counted in: {log}"));
        log.push_str(&line);
        log.push('\n');
        if line.contains("event=\"status\"") && line.contains(" counted=600") {
            break line;
        }
    };
    assert!(status_line.contains(" lag=0 "), "{status_line}");
    // The committed offsets trail the read position by the frames of windows still
    // open (committed once final): that lag is what Kafka's own tools show for the
    // group, partition by partition.
    let (mut ours, mut broker) = (BTreeMap::new(), BTreeMap::new());
    for _ in 0..60 {
        let s = scrape(&addr).unwrap();
        ours = (0..3)
            .map(|p| {
                let lag = get(
                    &s,
                    "cardinal_consumer_commit_lag",
                    &[("partition", &p.to_string())],
                );
                (p, lag.map(|l| l as i64))
            })
            .collect();
        broker = t.group_lag(&group, &frames);
        if ours == broker {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(ours, broker, "commit lag: ours, then the broker's");
    assert!(
        broker.values().any(|l| l.is_some_and(|l| l > 0)),
        "open windows keep some frames uncommitted: {broker:?}"
    );
    common::sigterm(&run);
    let status = run.wait().unwrap();
    logger.join().unwrap();
    log.extend(lines.try_iter().map(|l| l + "\n"));
    assert!(status.success(), "{log}");

    for p in 0..3 {
        let label = p.to_string();
        assert_eq!(
            get(
                &samples,
                "cardinal_partition_frames_read_total",
                &[("partition", &label)]
            ),
            Some(per_partition(p)),
            "partition {p}"
        );
    }
    assert_eq!(
        get(&samples, "cardinal_frames_counted_total", &[]),
        Some(600.0)
    );
    assert_eq!(
        get(&samples, "cardinal_assigned_partitions", &[]),
        Some(3.0)
    );
    // Rejects by reason: as sent, and as the rejects file says.
    let (in_file, in_metrics) = rejects_by_reason(&rejects, &samples);
    let want: BTreeMap<String, f64> = [
        ("missing_ts".to_string(), 4.0),
        ("not_an_object".to_string(), 3.0),
    ]
    .into();
    assert_eq!(in_metrics, want);
    assert_eq!(in_file, want);
    // Ten minutes of frames: the first nine are final (the last one's end, at
    // 600 s, is past the watermark at 590 s).
    assert_eq!(
        get(
            &samples,
            "cardinal_windows_emitted_total",
            &[("window", "minute")]
        ),
        Some(9.0)
    );
    // Each partition's watermark is its newest ts less the 5 s lateness; the
    // stream's is the slowest of them (no partition goes idle within the hour).
    let newest = |p: i64| (0..600).filter(|i| (i % 5).min(2) == p).max().unwrap() + base;
    assert_eq!(
        get(&samples, "cardinal_watermark_seconds", &[]),
        Some((newest(0) - 5) as f64)
    );
    for p in 0..3 {
        assert!(
            get(
                &samples,
                "cardinal_partition_watermark_seconds",
                &[("partition", &p.to_string())]
            )
            .is_some(),
            "{samples:?}"
        );
    }
    assert_eq!(get(&samples, "cardinal_open_windows", &[]), Some(1.0));
    assert_eq!(
        get(&samples, "cardinal_open_window_users", &[]),
        Some(60.0),
        "the last minute holds u0..u69 at seconds 540..599: 60 distinct"
    );
}

#[test]
fn late_frames_are_counted_by_window_and_by_reason_as_in_the_rejects_file() {
    let base = 1_468_244_340i64;
    let mut lines: Vec<String> = (0..200)
        .map(|i| format!(r#"{{"uid":"u{}","ts":{}}}"#, i % 30, base + i))
        .collect();
    // Minute 0 is final by now (the watermark is at 194 s): late for minutes.
    lines.extend((0..3).map(|i| format!(r#"{{"uid":"late{i}","ts":{base}}}"#)));
    lines.extend((0..2).map(|_| r#"{"uid":"#.to_string())); // truncated
    let dir = tempfile::tempdir().unwrap();
    let rejects = dir.path().join("rejects.jsonl");
    let mut run = cardinal()
        .args([
            "count",
            "-",
            "--http",
            "127.0.0.1:0",
            "--windows",
            "minute,hour",
        ])
        .arg("--rejects")
        .arg(&rejects)
        .env("RUST_LOG", "cardinal=info")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(run.stderr.take().unwrap());
    let (addr, _) = common::http_address(&mut stderr);
    let mut stdin = run.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, (lines.join("\n") + "\n").as_bytes()).unwrap();
    // stdin stays open, so the run (and its server) goes on until the test is done.
    let deadline = Instant::now() + Duration::from_secs(60);
    let samples = loop {
        let s = scrape(&addr).unwrap();
        if get(&s, "cardinal_frames_read_total", &[]) == Some(lines.len() as f64) {
            break s;
        }
        assert!(Instant::now() < deadline, "never read everything: {s:?}");
        std::thread::sleep(Duration::from_millis(300));
    };
    drop(stdin);
    assert!(run.wait().unwrap().success());
    let (in_file, in_metrics) = rejects_by_reason(&rejects, &samples);
    let want: BTreeMap<String, f64> =
        [("late".to_string(), 3.0), ("truncated".to_string(), 2.0)].into();
    assert_eq!(in_metrics, want);
    assert_eq!(in_file, want);
    assert_eq!(
        get(
            &samples,
            "cardinal_frames_late_total",
            &[("window", "minute")]
        ),
        Some(3.0)
    );
    assert_eq!(
        get(
            &samples,
            "cardinal_frames_late_total",
            &[("window", "hour")]
        ),
        Some(0.0),
        "the hour is still open: they count there"
    );
    // Counted: the 200 in order, and the 3 late ones in their hour.
    assert_eq!(
        get(&samples, "cardinal_frames_counted_total", &[]),
        Some(203.0)
    );
    assert_eq!(
        get(
            &samples,
            "cardinal_windows_emitted_total",
            &[("window", "minute")]
        ),
        Some(3.0),
        "minutes 0-2 end by 180 s, before the watermark at 194 s"
    );
}
