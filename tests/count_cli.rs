//! End-to-end tests of `cardinal count`, `gen` and `demo` through the real binary,
//! checked against exact counts computed independently: which frames are valid
//! comes from serde_json or from the generator's own record of what each frame
//! really is, and which window a frame falls in from the reference calendar in
//! `common` (Python's `zoneinfo`), never from Cardinal's own code.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

mod common;

use cardinal::generator::{FrameGen, GenConfig, Truth};
use cardinal::window::Granularity;
use serde_json::Value;

use common::{Window, cardinal};

fn run(args: &[&str]) -> Output {
    cardinal().args(args).output().expect("cardinal runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The JSON records of an output, one per line.
fn records(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

fn key(v: &Value) -> (String, String) {
    (
        v["window"].as_str().unwrap().to_string(),
        v["start"].as_str().unwrap().to_string(),
    )
}

/// (window, start) -> unique users, from JSON output.
fn counts_from_output(stdout: &[u8]) -> BTreeMap<(String, String), u64> {
    let mut m = BTreeMap::new();
    for v in records(stdout) {
        assert_eq!(v["final"], true);
        let key = key(&v);
        let prev = m.insert(key.clone(), v["unique_users"].as_u64().unwrap());
        assert!(
            prev.is_none(),
            "window {key:?} emitted twice without --grace"
        );
    }
    m
}

/// (window, start) -> the whole window (end, unique users, frames), from JSON output
/// without corrections.
fn windows_from_output(stdout: &[u8]) -> BTreeMap<(String, String), Window> {
    let mut m = BTreeMap::new();
    for v in records(stdout) {
        assert_eq!(
            (&v["final"], &v["version"]),
            (&Value::Bool(true), &1.into())
        );
        let w = Window {
            end: v["end"].as_str().unwrap().to_string(),
            unique_users: v["unique_users"].as_u64().unwrap(),
            frames: v["frames"].as_u64().unwrap(),
        };
        let prev = m.insert(key(&v), w);
        assert!(prev.is_none(), "window {v} emitted twice without --grace");
    }
    m
}

/// (uid, ts) of every line of a file of clean frames, read with serde_json.
fn frames_in_file(path: &Path) -> Vec<(String, i64)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap();
            let ts = match &v["ts"] {
                Value::String(s) => s.parse::<i64>().unwrap(),
                n => n.as_i64().unwrap(),
            };
            (v["uid"].as_str().unwrap().to_string(), ts)
        })
        .collect()
}

/// The exact per-minute answer (UTC) computed with serde_json from a file of clean frames.
fn expected_from_file(path: &Path) -> BTreeMap<(String, String), u64> {
    common::unique_users(&common::expected_windows(
        &frames_in_file(path),
        &[Granularity::Minute],
        "UTC",
    ))
}

/// The numbers of the summary `count` prints on stderr (see `Telemetry::summary`).
#[derive(Debug, Default, PartialEq, Eq)]
struct Summary {
    read: u64,
    counted: u64,
    rejected: u64,
    late: u64,
    outliers: u64,
    windows: u64,
    corrections: u64,
}

fn summary(o: &Output) -> Summary {
    let text = stderr(o);
    let number_before = |line: &str, word: &str| -> u64 {
        let words: Vec<&str> = line
            .split(|c: char| c.is_whitespace() || c == ',' || c == ';' || c == ':')
            .filter(|w| !w.is_empty())
            .collect();
        let at = words
            .iter()
            .position(|w| *w == word)
            .unwrap_or_else(|| panic!("no {word:?} in {line:?}"));
        words[at - 1]
            .parse()
            .unwrap_or_else(|_| panic!("no number before {word:?} in {line:?}"))
    };
    let number_after = |line: &str, word: &str| -> u64 {
        let rest = &line[line
            .find(word)
            .unwrap_or_else(|| panic!("no {word:?} in {line:?}"))
            + word.len()..];
        rest.trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap_or_else(|_| panic!("no number after {word:?} in {line:?}"))
    };
    let read_line = text
        .lines()
        .find(|l| l.contains(" frames read"))
        .unwrap_or_else(|| panic!("no summary: {text}"));
    let counts_line = text
        .lines()
        .find(|l| l.trim_start().starts_with("counted "))
        .unwrap_or_else(|| panic!("no summary: {text}"));
    Summary {
        read: number_before(read_line, "frames"),
        counted: number_after(counts_line, "counted"),
        rejected: number_after(counts_line, "rejected"),
        late: number_after(counts_line, "late"),
        outliers: number_after(counts_line, "outliers"),
        windows: number_after(counts_line, "windows emitted"),
        corrections: number_after(counts_line, "corrections"),
    }
}

/// Every line of a rejects file.
fn rejects(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn gen_file(dir: &Path, name: &str, args: &[&str]) -> std::path::PathBuf {
    let p = dir.join(name);
    let mut full = vec!["gen", "-o", p.to_str().unwrap()];
    full.extend_from_slice(args);
    let o = run(&full);
    assert!(o.status.success(), "gen failed: {}", stderr(&o));
    p
}

#[test]
fn clean_frames_match_a_serde_json_reference() {
    let dir = tempfile::tempdir().unwrap();
    let file = gen_file(
        dir.path(),
        "clean.json",
        &["--frames", "60000", "--string-ts", "0.3", "--seed", "3"],
    );
    let o = run(&["count", "--format", "json", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let got = counts_from_output(&o.stdout);
    assert_eq!(got, expected_from_file(&file));
    assert!(got.len() >= 2, "several minutes: {got:?}");
    let summary = stderr(&o);
    assert!(summary.contains("60000 frames read"), "{summary}");
    assert!(summary.contains("counted 60000, rejected 0"), "{summary}");
}

#[test]
fn disorder_garbage_and_bad_frames_give_the_exact_answer_and_every_reject_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--frames",
        "80000",
        "--rate",
        "400",
        "--users",
        "5000",
        "--seed",
        "11",
        "--disorder",
        "0.3",
        "--max-delay",
        "5",
        "--string-ts",
        "0.2",
        "--crlf",
        "--bitflips",
        "0.002",
        "--malformed",
        "0.01",
    ];
    let file = gen_file(dir.path(), "messy.json", &args);
    let rejects_path = dir.path().join("rejects.jsonl");
    let o = run(&[
        "count",
        "--format",
        "json",
        "--windows",
        "minute,hour,day",
        "--rejects",
        rejects_path.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));

    let cfg = GenConfig {
        frames: 80000,
        rate: 400.0,
        users: 5000,
        seed: 11,
        disorder: 0.3,
        max_delay: 5,
        string_ts: 0.2,
        crlf: true,
        bitflips: 0.002,
        malformed: 0.01,
        ..GenConfig::default()
    };
    let want = common::expected_from_truth(
        &cfg,
        &[Granularity::Minute, Granularity::Hour, Granularity::Day],
    );
    assert_eq!(counts_from_output(&o.stdout), want);

    // Every frame that did not count is in the rejects file, with its line number,
    // under the reason the generator's truth implies: a bit flip moves `ts` by at
    // least 2^20 s (12 days), so a flip backwards is late for every window and a flip
    // forwards is an outlier; the rest of the damage is rejected on sight.
    let truth: Vec<Truth> = FrameGen::new(&cfg).map(|f| f.truth).collect();
    let valid = truth
        .iter()
        .filter(|t| matches!(t, Truth::Valid { .. }))
        .count() as u64;
    let flipped_back = |t: &Truth| matches!(t, Truth::BitFlipped { true_ts, written_ts, .. } if written_ts < true_ts);
    let flipped_ahead = |t: &Truth| matches!(t, Truth::BitFlipped { true_ts, written_ts, .. } if written_ts > true_ts);
    let malformed = truth.iter().filter(|t| **t == Truth::Malformed).count() as u64;
    let (back, ahead) = (
        truth.iter().filter(|t| flipped_back(t)).count() as u64,
        truth.iter().filter(|t| flipped_ahead(t)).count() as u64,
    );
    assert!(
        malformed > 0 && back > 0 && ahead > 0,
        "every kind of damage occurs"
    );
    let rejected = rejects(&rejects_path);
    assert_eq!(rejected.len() as u64, 80_000 - valid, "{}", stderr(&o));
    let mut by_reason: BTreeMap<String, u64> = BTreeMap::new();
    for r in &rejected {
        let line = r["line"].as_u64().unwrap() as usize;
        let reason = r["reason"].as_str().unwrap();
        let t = &truth[line - 1];
        match reason {
            "late" => assert!(flipped_back(t), "line {line} was {t:?}: {r}"),
            "outlier" => assert!(flipped_ahead(t), "line {line} was {t:?}: {r}"),
            _ => assert_eq!(*t, Truth::Malformed, "line {line}: {r}"),
        }
        assert!(r["raw"].is_string(), "{r}");
        *by_reason.entry(reason.to_string()).or_default() += 1;
    }
    let late = by_reason.remove("late").unwrap_or(0);
    let outliers = by_reason.remove("outlier").unwrap_or(0);
    let on_sight: u64 = by_reason.values().sum();
    assert_eq!((late, outliers, on_sight), (back, ahead, malformed));

    // The summary's numbers are those of the truth and of the rejects file.
    let s = summary(&o);
    assert_eq!(
        (s.read, s.counted, s.rejected, s.late, s.outliers),
        (80_000, valid, malformed, back, ahead),
        "{}",
        stderr(&o)
    );
    assert_eq!(s.windows, want.len() as u64);
    assert_eq!(s.corrections, 0);
}

#[test]
fn a_real_jump_in_event_time_is_followed_and_every_frame_counts() {
    let dir = tempfile::tempdir().unwrap();
    let file = gen_file(
        dir.path(),
        "gap.json",
        &[
            "--frames",
            "40000",
            "--seed",
            "5",
            "--gap-at",
            "0.5",
            "--gap-seconds",
            "10800",
        ],
    );
    let o = run(&["count", "--format", "json", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(counts_from_output(&o.stdout), expected_from_file(&file));
    assert!(
        stderr(&o).contains("counted 40000, rejected 0, late 0, outliers 0"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn stdin_and_gzip_give_the_same_answer_as_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let gen_args = ["--frames", "20000", "--rate", "200", "--seed", "9"];
    let plain = gen_file(dir.path(), "f.json", &gen_args);
    let gz = gen_file(dir.path(), "f.json.gz", &gen_args);
    let cfg = GenConfig {
        frames: 20_000,
        rate: 200.0,
        seed: 9,
        ..GenConfig::default()
    };
    let want = common::expected_from_truth(&cfg, &[Granularity::Minute]);
    assert!(want.len() >= 2, "several minutes: {want:?}");

    let from_file = run(&["count", "--format", "json", plain.to_str().unwrap()]);
    let from_gz = run(&["count", "--format", "json", gz.to_str().unwrap()]);
    let mut child = cardinal()
        .args(["count", "--format", "json", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let bytes = std::fs::read(&plain).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&bytes));
    let from_stdin = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    for (name, o) in [
        ("file", &from_file),
        ("gzip", &from_gz),
        ("stdin", &from_stdin),
    ] {
        assert_eq!(o.status.code(), Some(0), "{name}: {}", stderr(o));
        assert_eq!(counts_from_output(&o.stdout), want, "{name}");
        assert_eq!(summary(o).read, 20_000, "{name}: {}", stderr(o));
    }
    assert_eq!(from_file.stdout, from_gz.stdout);
    assert_eq!(from_file.stdout, from_stdin.stdout);
}

#[test]
fn hll_counts_are_within_their_stated_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = gen_file(
        dir.path(),
        "f.json",
        &[
            "--frames", "60000", "--rate", "200", "--users", "20000", "--seed", "2",
        ],
    );
    let cfg = GenConfig {
        frames: 60_000,
        rate: 200.0,
        users: 20_000,
        seed: 2,
        ..GenConfig::default()
    };
    let exact = common::expected_from_truth(&cfg, &[Granularity::Minute, Granularity::Hour]);
    assert!(exact.len() >= 5, "{exact:?}");
    let o = run(&[
        "count",
        "--format",
        "json",
        "--windows",
        "minute,hour",
        "--counter",
        "hll",
        file.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let mut seen = BTreeMap::new();
    for v in records(&o.stdout) {
        assert_eq!(v["approx"], true);
        let rse = v["rse"].as_f64().expect("approximate records state rse");
        assert!(
            rse > 0.0 && rse < 0.01,
            "default precision gives <= 1% rse, got {rse}"
        );
        let key = key(&v);
        let want = *exact
            .get(&key)
            .unwrap_or_else(|| panic!("{key:?} is not a window of the input: {v}"))
            as f64;
        let got = v["unique_users"].as_f64().unwrap();
        assert!(
            (got - want).abs() <= 4.0 * rse * want,
            "{key:?}: {got} vs exactly {want}, rse {rse}"
        );
        assert!(seen.insert(key, got).is_none(), "emitted twice: {v}");
    }
    assert_eq!(
        seen.keys().collect::<Vec<_>>(),
        exact.keys().collect::<Vec<_>>(),
        "every window of the input, once"
    );
}

#[test]
fn errors_name_the_file_or_option_with_the_documented_exit_status() {
    let o = run(&["count", "/definitely/not/here.json"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("/definitely/not/here.json"),
        "{}",
        stderr(&o)
    );

    let o = run(&["count", "--tz", "Mars/Olympus", "-"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--tz") && stderr(&o).contains("Mars/Olympus"),
        "{}",
        stderr(&o)
    );

    let o = run(&["count", "--windows", "minute,fortnight"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("fortnight"), "{}", stderr(&o));

    let o = run(&["count", "--lateness", "soon"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--lateness"), "{}", stderr(&o));
}

#[test]
fn bad_frames_never_stop_the_run_and_exit_zero() {
    let mut child = cardinal()
        .args(["count", "--format", "json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"uid\":\"a\",\"ts\":60}\nnot json\n{\"uid\":\"b\",\"ts\":61}\n{\"uid\":\"c\",\n[]\n{\"uid\":\"c\",\"ts\":62}")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let got = counts_from_output(&o.stdout);
    assert_eq!(
        got.values().copied().collect::<Vec<_>>(),
        vec![3],
        "the last line has no newline and still counts"
    );
    assert!(stderr(&o).contains("rejected 3"), "{}", stderr(&o));
}

#[test]
fn a_closed_stdout_is_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = gen_file(
        dir.path(),
        "f.json",
        &["--frames", "200000", "--rate", "100", "--seed", "4"],
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "'{}' count '{}' | head -n 1; echo \"status=${{PIPESTATUS[0]}}\"",
            env!("CARGO_BIN_EXE_cardinal"),
            file.display()
        ))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("minute"), "{text}");
    assert!(text.trim_end().ends_with("status=0"), "{text}");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("error"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn demo_runs_through_an_embedded_broker_and_publishes_the_exact_counts() {
    let o = run(&["demo", "--frames", "30000"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("mock cluster"),
        "the demo says which broker: {}",
        stderr(&o)
    );
    // The demo's frames are the generator's defaults but for their number
    // (`cli::demo`), counted per minute and hour in UTC.
    let cfg = GenConfig {
        frames: 30_000,
        ..GenConfig::default()
    };
    let want = common::expected_from_truth(&cfg, &[Granularity::Minute, Granularity::Hour]);
    assert!(
        want.contains_key(&("minute".to_string(), "2016-07-11T13:39:00Z".to_string())),
        "{want:?}"
    );
    let text = String::from_utf8_lossy(&o.stdout);
    // What the results topic holds: `KEY<TAB>JSON` lines, the latest per key.
    let published: String = text
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(key, json)| {
            let v: Value = serde_json::from_str(json).unwrap();
            assert_eq!(
                key,
                format!(
                    "{}/{}",
                    v["window"].as_str().unwrap(),
                    v["start"].as_str().unwrap()
                )
            );
            format!("{json}\n")
        })
        .collect();
    assert_eq!(
        counts_from_output(published.as_bytes()),
        want,
        "results topic"
    );
    // What the run printed as each window became final:
    // `WINDOW START .. END  unique_users=N frames=M`.
    let printed: BTreeMap<(String, String), u64> = text
        .lines()
        .filter(|l| !l.contains('\t'))
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let users = w
                .iter()
                .find_map(|f| f.strip_prefix("unique_users="))
                .unwrap_or_else(|| panic!("{l}"));
            ((w[0].to_string(), w[1].to_string()), users.parse().unwrap())
        })
        .collect();
    assert_eq!(printed, want, "printed results");
}

/// Latest (unique users, frames) per (window, start) from JSON output lines. A last
/// line without its newline (a process killed while writing it) is not a result.
fn latest_per_window(stdout: &[u8]) -> BTreeMap<(String, String), (u64, u64)> {
    let complete = match stdout.iter().rposition(|&b| b == b'\n') {
        Some(i) => &stdout[..=i],
        None => &[],
    };
    records(complete)
        .iter()
        .map(|v| {
            (
                key(v),
                (
                    v["unique_users"].as_u64().unwrap(),
                    v["frames"].as_u64().unwrap(),
                ),
            )
        })
        .collect()
}

#[test]
fn count_resumes_a_killed_backfill_from_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let file = gen_file(
        dir.path(),
        "big.json",
        &[
            "--frames",
            "300000",
            "--rate",
            "200",
            "--seed",
            "17",
            "--disorder",
            "0.1",
        ],
    );
    let cfg = GenConfig {
        frames: 300_000,
        rate: 200.0,
        seed: 17,
        disorder: 0.1,
        ..GenConfig::default()
    };
    // (unique users, frames) per window: frames counted twice after a resume would
    // show in `frames`, which unlike unique users is not idempotent.
    let want: BTreeMap<(String, String), (u64, u64)> = common::expected_windows(
        &common::valid_frames(&cfg),
        &[Granularity::Minute, Granularity::Hour],
        "UTC",
    )
    .into_iter()
    .map(|(k, w)| (k, (w.unique_users, w.frames)))
    .collect();
    let file_bytes = std::fs::read(&file).unwrap();
    let file = file.to_str().unwrap();

    let state = dir.path().join("state");
    let checkpoint = state.join("checkpoint");
    let state = state.to_str().unwrap();
    let args = [
        "count",
        "--format",
        "json",
        "--windows",
        "minute,hour",
        "--state-dir",
        state,
        "--checkpoint-interval",
        "0s",
        file,
    ];
    let out_path = dir.path().join("first.out");
    let mut first = cardinal()
        .args(args)
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill -9 once the checkpoint has been rewritten (each write renames a new file
    // into place, so its inode changes) and some results are out: by then the run
    // has progress to resume from, whatever the machine's speed. No sleeping: the
    // moment depends only on the run's own progress.
    use std::os::unix::fs::MetadataExt;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut first_inode = None;
    let finished_first = loop {
        if let Some(status) = first.try_wait().unwrap() {
            break Some(status);
        }
        let inode = std::fs::metadata(&checkpoint).ok().map(|m| m.ino());
        if first_inode.is_none() {
            first_inode = inode;
        }
        // A later checkpoint: the whole state rewritten, or a change set on top of it.
        let change_set = std::fs::read_dir(checkpoint.parent().unwrap())
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .any(|n| n.starts_with("checkpoint.") && n != "checkpoint.tmp");
        let rewritten = inode.is_some() && (inode != first_inode || change_set);
        let results_out = std::fs::read(&out_path).unwrap().contains(&b'\n');
        if rewritten && results_out {
            break None;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint was rewritten in 120 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    };
    let status = match finished_first {
        Some(status) => status,
        None => {
            let _ = first.kill(); // SIGKILL; a run that just finished stays finished
            first.wait().unwrap()
        }
    };
    let first_out = std::fs::read(&out_path).unwrap();

    if status.success() {
        // A very fast machine finished the whole backfill between two polls, before
        // the kill: nothing to resume. Its result must still be exact, and a second
        // run over the finished backfill does nothing.
        eprintln!("the backfill finished before it could be killed: resume not exercised");
        assert_eq!(latest_per_window(&first_out), want);
        let again = run(&args);
        assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
        assert!(again.stdout.is_empty(), "a finished backfill emits nothing");
    } else {
        // The normal case: killed mid-backfill. The resumed run reads exactly what
        // the checkpoint left: from its line, which starts at its byte offset.
        let cp = cardinal::checkpoint::StateDir::open(checkpoint.parent().unwrap())
            .unwrap()
            .inspect()
            .unwrap()
            .expect("a checkpoint");
        let cardinal::checkpoint::InputPosition::Files {
            input,
            offset,
            next_line,
            complete,
        } = cp.input
        else {
            panic!("a file checkpoint: {:?}", cp.input)
        };
        assert_eq!(input, 0);
        println!("killed with a checkpoint at line {next_line} (complete: {complete})");
        let line_start = file_bytes
            .split_inclusive(|&b| b == b'\n')
            .take(next_line as usize - 1)
            .map(|l| l.len() as u64)
            .sum::<u64>();
        assert_eq!(
            offset, line_start,
            "line {next_line} starts at byte {offset}"
        );
        let second = run(&args);
        assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
        if !complete {
            assert!(next_line > 1, "the checkpoint records progress");
            // The summary covers the whole job (every frame read once across the
            // kill) and says what this run read: the rest, from the checkpoint's line.
            let err = stderr(&second);
            assert_eq!(summary(&second).read, 300_000, "{err}");
            let this_run: u64 = (err.split("this run read ").nth(1))
                .and_then(|rest| rest.split(' ').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no \"this run read\" in {err}"));
            assert_eq!(
                this_run,
                300_000 - (next_line - 1),
                "resumed at line {next_line}, not restarted: {err}"
            );
        }
        let mut combined = first_out;
        let keep = combined
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        combined.truncate(keep);
        combined.extend_from_slice(&second.stdout);
        assert_eq!(latest_per_window(&combined), want);
    }

    // A corrupt checkpoint is refused, and --reset-state starts over.
    std::fs::write(&checkpoint, b"CARDCKPT garbage").unwrap();
    let refused = run(&args);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("corrupt") && stderr(&refused).contains("--reset-state"),
        "{}",
        stderr(&refused)
    );
    let mut reset = args.to_vec();
    reset.insert(1, "--reset-state");
    let again = run(&reset);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert_eq!(summary(&again).read, 300_000);
    assert_eq!(latest_per_window(&again.stdout), want);

    // Stdin cannot resume: a usage error.
    let o = run(&["count", "--state-dir", state, "-"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("stdin"), "{}", stderr(&o));
}

/// A small deterministic generator (xorshift64), for frames written by the tests.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Writes `{"uid":…,"ts":…}` lines.
fn write_frames(path: &Path, frames: &[(String, i64)]) {
    let text: String = frames
        .iter()
        .map(|(uid, ts)| format!("{{\"uid\":\"{uid}\",\"ts\":{ts}}}\n"))
        .collect();
    std::fs::write(path, text).unwrap();
}

#[test]
fn time_zones_follow_dst_against_an_independent_calendar() {
    // 2024-03-01 to 2024-11-10 UTC: both DST changes of New York (March 10,
    // November 3) and of Zurich (March 31, October 27), month ends, and weeks that
    // hold a DST change. A frame every 1..900 s, in order, plus frames on each side
    // of every half hour (UTC) within a day of each change: the changes themselves,
    // local midnights and hour starts in every zone here.
    let (from, to) = (1_709_251_200i64, 1_731_196_800i64);
    let changes = [
        1_710_054_000i64,
        1_711_846_800,
        1_729_990_800,
        1_730_613_600,
    ];
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let mut times = Vec::new();
    let mut t = from;
    while t < to {
        times.push(t);
        t += 1 + rng.below(900) as i64;
    }
    for c in changes {
        for half_hour in -52..=52 {
            let at = c + 1800 * half_hour;
            times.extend([at - 1, at, at + 1]);
        }
    }
    times.sort_unstable();
    let frames: Vec<(String, i64)> = times
        .into_iter()
        .map(|t| (format!("u{}", rng.below(5000)), t))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dst.json");
    write_frames(&file, &frames);

    let grans = [
        Granularity::Hour,
        Granularity::Day,
        Granularity::Week,
        Granularity::Month,
        Granularity::Year,
    ];
    let mut reference = HashMap::new();
    for tz in ["Europe/Zurich", "America/New_York", "Asia/Kolkata"] {
        let o = run(&[
            "count",
            "--format",
            "json",
            "--windows",
            "hour,day,week,month,year",
            "--tz",
            tz,
            // Frames up to 900 s apart, in order: none is a suspected garbage timestamp.
            "--max-ahead",
            "1h",
            file.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(0), "{tz}: {}", stderr(&o));
        let want = common::expected_windows(&frames, &grans, tz);
        let got = windows_from_output(&o.stdout);
        // Compared window by window, so that a failure names the first wrong one.
        for (k, w) in &want {
            assert_eq!(got.get(k), Some(w), "{tz}: {k:?}");
        }
        assert_eq!(got, want, "{tz}");
        let s = summary(&o);
        assert_eq!(
            (s.read, s.counted, s.rejected, s.late, s.outliers),
            (frames.len() as u64, frames.len() as u64, 0, 0, 0),
            "{tz}: {}",
            stderr(&o)
        );
        reference.insert(tz, want);
    }
    // The reference does see the changes: Zurich's October 27 lasts 25 hours and
    // has two 02:00 hours, New York's March 10 lasts 23 hours.
    let zurich = &reference["Europe/Zurich"];
    let day = |m: &BTreeMap<(String, String), Window>, start: &str| {
        m[&("day".to_string(), start.to_string())].end.clone()
    };
    assert_eq!(
        day(zurich, "2024-10-27T00:00:00+02:00"),
        "2024-10-28T00:00:00+01:00"
    );
    for start in ["2024-10-27T02:00:00+02:00", "2024-10-27T02:00:00+01:00"] {
        assert!(
            zurich.contains_key(&("hour".to_string(), start.to_string())),
            "{start}"
        );
    }
    let new_york = &reference["America/New_York"];
    assert_eq!(
        day(new_york, "2024-03-10T00:00:00-05:00"),
        "2024-03-11T00:00:00-04:00"
    );
}

/// Every record of `stdout` per (window, start), in output order.
fn versions_per_window(stdout: &[u8]) -> BTreeMap<(String, String), Vec<Value>> {
    let mut m: BTreeMap<(String, String), Vec<Value>> = BTreeMap::new();
    for v in records(stdout) {
        assert_eq!(v["final"], true, "{v}");
        m.entry(key(&v)).or_default().push(v);
    }
    m
}

#[test]
fn grace_corrects_windows_with_new_versions_and_rejects_what_comes_after_it() {
    // Minute windows, lateness 5 s, grace 60 s: a minute closes when a frame 5 s past
    // its end arrives, and takes corrections until one 65 s past its end arrives.
    // Every step below is at least 5 s from a boundary.
    let m = 1_700_000_040i64; // 2023-11-14T22:14:00Z, a minute start
    let frames: Vec<(&str, i64)> = vec![
        ("a", m + 1),
        ("b", m + 2),
        ("c", m + 10),
        ("x", m + 70),  // watermark m+65: minute m is final, version 1: a b c
        ("d", m + 20),  // late within grace
        ("y", m + 75),  // the watermark moves: version 2: a b c d
        ("e", m + 40),  // late within grace
        ("f", m + 50),  // late within grace
        ("z", m + 80),  // version 3: a b c d e f
        ("w", m + 130), // watermark m+125: minute m+60 final (x y z), minute m past grace
        ("g", m + 55),  // later than end + grace: rejected as late
        ("h", m + 100), // late for minute m+60, within its grace
        ("v", m + 140), // version 2 of minute m+60: x y z h
    ]; // end of input: minute m+120 (w v), version 1
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("grace.json");
    let owned: Vec<(String, i64)> = frames.iter().map(|(u, t)| (u.to_string(), *t)).collect();
    write_frames(&file, &owned);
    let rejects_path = dir.path().join("rejects.jsonl");
    let o = run(&[
        "count",
        "--format",
        "json",
        "--lateness",
        "5s",
        "--grace",
        "60s",
        // Trust the first frame at once (not the median of the first 16), and the
        // 60 s steps below: the stream's time is exactly the newest ts.
        "--confirm",
        "1",
        "--max-ahead",
        "1h",
        "--rejects",
        rejects_path.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    // The expected sequence, with each version's window computed by the reference
    // calendar from the frames it holds.
    let accepted = |lines: &[usize]| -> Vec<(String, i64)> {
        lines.iter().map(|&i| owned[i - 1].clone()).collect()
    };
    let expected: Vec<(&[usize], u64)> = vec![
        (&[1, 2, 3], 1),
        (&[1, 2, 3, 5], 2),
        (&[1, 2, 3, 5, 7, 8], 3),
        (&[4, 6, 9], 1),
        (&[4, 6, 9, 12], 2),
        (&[10, 13], 1),
    ];
    // (window, start, end, unique users, frames, version), in output order.
    let want: Vec<(String, String, String, u64, u64, u64)> = expected
        .iter()
        .map(|(lines, version)| {
            let w = common::expected_windows(&accepted(lines), &[Granularity::Minute], "UTC");
            assert_eq!(w.len(), 1, "one window per step");
            let ((window, start), w) = w.into_iter().next().unwrap();
            (window, start, w.end, w.unique_users, w.frames, *version)
        })
        .collect();
    let got: Vec<(String, String, String, u64, u64, u64)> = records(&o.stdout)
        .iter()
        .map(|v| {
            assert_eq!(v["final"], true, "{v}");
            (
                v["window"].as_str().unwrap().to_string(),
                v["start"].as_str().unwrap().to_string(),
                v["end"].as_str().unwrap().to_string(),
                v["unique_users"].as_u64().unwrap(),
                v["frames"].as_u64().unwrap(),
                v["version"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, want);

    let rejected = rejects(&rejects_path);
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert_eq!(
        (rejected[0]["reason"].as_str(), rejected[0]["line"].as_u64()),
        (Some("late"), Some(11))
    );
    let s = summary(&o);
    assert_eq!(
        (s.read, s.counted, s.late, s.windows, s.corrections),
        (13, 12, 1, 3, 3),
        "{}",
        stderr(&o)
    );
}

#[test]
fn grace_on_a_disordered_stream_follows_the_documented_rules() {
    // Frames up to 60 s late, lateness 5 s, grace 20 s, minute and hour windows, over
    // an hour boundary: some late frames correct their windows, others come after
    // the grace and are rejected as late (for the minute, some for the hour too).
    let cfg = GenConfig {
        frames: 40_000,
        rate: 50.0,
        users: 3000,
        start: 1_700_002_500,
        seed: 23,
        disorder: 0.2,
        max_delay: 60,
        ..GenConfig::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let file = gen_file(
        dir.path(),
        "late.json",
        &[
            "--frames",
            "40000",
            "--rate",
            "50",
            "--users",
            "3000",
            "--start",
            "1700002500",
            "--seed",
            "23",
            "--disorder",
            "0.2",
            "--max-delay",
            "60",
        ],
    );
    let rejects_path = dir.path().join("rejects.jsonl");
    let o = run(&[
        "count",
        "--format",
        "json",
        "--windows",
        "minute,hour",
        "--lateness",
        "5s",
        "--grace",
        "20s",
        "--rejects",
        rejects_path.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    // The documented rules (docs/guide/output.md, "When is a window emitted?"), applied to the
    // generator's truth: the watermark is the highest ts seen so far minus the
    // lateness; a window is final once the watermark reaches its end, and a frame
    // is late for it once the watermark reaches its end plus the grace.
    let (lateness, grace) = (5i64, 20i64);
    let frames = common::valid_frames(&cfg);
    assert_eq!(frames.len(), 40_000);
    let grans = [Granularity::Minute, Granularity::Hour];
    let cal = common::reference_windows("UTC", &grans, frames.iter().map(|f| f.1));
    let bounds = |g: Granularity, ts: i64| -> (String, i64) {
        let (start, end) = &cal[&(g, ts)];
        let end: jiff::Timestamp = end.parse().unwrap();
        (start.clone(), end.as_second())
    };
    // Per granularity, the frames that count; per window, those before it was final.
    let mut accepted: HashMap<Granularity, Vec<(String, i64)>> = HashMap::new();
    let mut before_final: HashMap<Granularity, Vec<(String, i64)>> = HashMap::new();
    let mut late_lines = Vec::new();
    let mut counted = 0u64;
    let mut newest = i64::MIN;
    for (i, (uid, ts)) in frames.iter().enumerate() {
        let watermark = newest.saturating_sub(lateness);
        let mut missed = 0;
        for g in grans {
            let (_, end) = bounds(g, *ts);
            if end + grace <= watermark {
                missed += 1;
            } else {
                accepted.entry(g).or_default().push((uid.clone(), *ts));
            }
            if end > watermark {
                before_final.entry(g).or_default().push((uid.clone(), *ts));
            }
        }
        if missed > 0 {
            late_lines.push(i as u64 + 1);
        }
        if missed < grans.len() {
            counted += 1;
        }
        newest = newest.max(*ts);
    }
    // Each granularity's windows over the frames that count for it, and over those
    // that arrived before the window was final (its first version).
    let per_granularity = |frames: &HashMap<Granularity, Vec<(String, i64)>>| {
        let mut m = BTreeMap::new();
        for g in grans {
            m.extend(common::expected_windows(&frames[&g], &[g], "UTC"));
        }
        m
    };
    let want = per_granularity(&accepted);
    let first_versions = per_granularity(&before_final);

    let got = versions_per_window(&o.stdout);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    let mut corrections = 0;
    for (k, versions) in &got {
        let field = |v: &Value, f: &str| v[f].as_u64().unwrap();
        // Versions 1, 2, 3…: each correction is the previous version + 1, and adds
        // frames (it is only emitted for new frames).
        for (i, v) in versions.iter().enumerate() {
            assert_eq!(field(v, "version"), i as u64 + 1, "{k:?}: {versions:?}");
            if i > 0 {
                let prev = &versions[i - 1];
                assert!(
                    field(v, "frames") > field(prev, "frames")
                        && field(v, "unique_users") >= field(prev, "unique_users"),
                    "{k:?}: {versions:?}"
                );
            }
            assert_eq!(v["end"].as_str().unwrap(), want[k].end, "{k:?}");
        }
        corrections += versions.len() - 1;
        // The highest version is the reference over every frame that counts.
        let last = versions.last().unwrap();
        assert_eq!(
            (field(last, "unique_users"), field(last, "frames")),
            (want[k].unique_users, want[k].frames),
            "{k:?}: {versions:?}"
        );
        // The first version holds what arrived before the window was final (a window
        // whose first frame came after that has no such version).
        if let Some(first) = first_versions.get(k) {
            assert_eq!(
                (
                    field(&versions[0], "unique_users"),
                    field(&versions[0], "frames")
                ),
                (first.unique_users, first.frames),
                "{k:?}: {versions:?}"
            );
        }
    }
    println!(
        "{} windows, {corrections} corrections, {} frames late",
        got.len(),
        late_lines.len()
    );
    assert!(
        corrections >= 5,
        "the stream exercises corrections: {corrections}"
    );
    assert!(
        late_lines.len() >= 5,
        "and frames after the grace: {}",
        late_lines.len()
    );

    // Rejected as late: exactly the frames after the grace of one of their windows.
    let rejected = rejects(&rejects_path);
    let mut got_late: Vec<u64> = rejected
        .iter()
        .map(|r| {
            assert_eq!(r["reason"], "late", "{r}");
            r["line"].as_u64().unwrap()
        })
        .collect();
    got_late.sort_unstable();
    assert_eq!(got_late, late_lines);
    let s = summary(&o);
    assert_eq!(
        (
            s.read,
            s.counted,
            s.rejected,
            s.late,
            s.outliers,
            s.corrections
        ),
        (
            40_000,
            counted,
            0,
            late_lines.len() as u64,
            0,
            corrections as u64
        ),
        "{}",
        stderr(&o)
    );
}

/// Frames as another producer writes them: the user in `user`, the time in
/// milliseconds (or microseconds) in `time`, with `uid` and `ts` keys that are now
/// decoys, escaped keys, digit strings, and bad times. Returns the lines and the
/// valid frames as (user, unix seconds), computed here by integer division.
fn other_shape_frames(per_second: i64, seed: u64) -> (Vec<String>, Vec<(String, i64)>) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(seed);
    let mut t_ms: i64 = 1_700_000_000_000;
    let (mut lines, mut valid) = (Vec::new(), Vec::new());
    for i in 0..4000 {
        t_ms += rng.random_range(0..120);
        let user = format!("u{}", rng.random_range(0..400));
        // Below the millisecond, for microseconds: floor division must drop it.
        let value = t_ms * per_second / 1000 + rng.random_range(0..per_second.max(1000) / 1000);
        let time = if i % 5 == 0 {
            format!("\"{value}\"")
        } else {
            value.to_string()
        };
        let user_key = if i % 7 == 0 { r"\u0075ser" } else { "user" };
        let line = if i % 2 == 0 {
            format!(
                r#"{{"uid":"decoy","ts":1,"m":{{"user":"nested","time":5}},"{user_key}":"{user}","time":{time}}}"#
            )
        } else {
            format!(r#"{{"time":{time},"ts":"x","{user_key}":"{user}"}}"#)
        };
        lines.push(line);
        valid.push((user, t_ms.div_euclid(1000)));
    }
    (lines, valid)
}

#[test]
fn other_field_names_and_millisecond_or_microsecond_timestamps_count_exactly() {
    let dir = tempfile::tempdir().unwrap();
    for (unit, per_second) in [("ms", 1000), ("us", 1_000_000)] {
        let (mut lines, valid) = other_shape_frames(per_second, 7);
        // Bad times, in the unit: negative, beyond 9999-12-31 in that unit, a fraction;
        // the last second of year 9999 itself, which no minute window can hold; and
        // a frame with only the old `uid` key.
        let last = 253_402_300_800 * per_second;
        let bad = [
            (format!(r#"{{"user":"b1","time":-{per_second}}}"#), "bad_ts"),
            (format!(r#"{{"user":"b2","time":{last}}}"#), "bad_ts"),
            (
                format!(r#"{{"user":"b3","time":{per_second}.5}}"#),
                "bad_ts",
            ),
            (format!(r#"{{"user":"b4","time":{}}}"#, last - 1), "bad_ts"),
            (
                format!(r#"{{"uid":"b5","time":{per_second}}}"#),
                "missing_uid",
            ),
        ];
        // In the middle of the stream: the bad ones must not disturb the rest.
        for (k, (line, _)) in bad.iter().enumerate() {
            lines.insert(1000 + k * 500, line.clone());
        }
        let file = dir.path().join(format!("frames-{unit}.json"));
        std::fs::write(&file, lines.join("\n") + "\n").unwrap();
        let rejects_file = dir.path().join(format!("rejects-{unit}.jsonl"));
        let o = run(&[
            "count",
            "--uid-field",
            "user",
            "--ts-field",
            "time",
            "--ts-unit",
            unit,
            "--format",
            "json",
            "--rejects",
            rejects_file.to_str().unwrap(),
            file.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(
            common::minute_counts(&o.stdout),
            common::distinct_per_minute(valid.iter().map(|(u, t)| (u.as_str(), *t))),
            "--ts-unit {unit}"
        );
        let got = rejects(&rejects_file);
        let reasons: Vec<&str> = got.iter().map(|r| r["reason"].as_str().unwrap()).collect();
        let want: Vec<&str> = bad.iter().map(|(_, r)| *r).collect();
        assert_eq!(reasons, want, "{got:?}");
        for r in &got {
            let detail = r["detail"].as_str().unwrap();
            match r["reason"].as_str().unwrap() {
                // Parser and calendar alike say which unit the value was read in.
                "bad_ts" => assert!(
                    detail.contains("time") && detail.contains(&format!("--ts-unit {unit}")),
                    "{detail}"
                ),
                _ => assert!(detail.contains("\"user\""), "{detail}"),
            }
        }
    }

    // One key cannot hold both; an empty name is no name.
    let o = run(&["count", "--uid-field", "id", "--ts-field", "id", "-"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--uid-field"), "{}", stderr(&o));
    let o = run(&["count", "--ts-field", "", "-"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--ts-field"), "{}", stderr(&o));
    let o = run(&["count", "--ts-unit", "ns", "-"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--ts-unit"), "{}", stderr(&o));
}
