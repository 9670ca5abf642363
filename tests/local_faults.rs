//! Local faults through the real binary (issue 8): two processes on one state
//! directory, a checkpoint that cannot be written, a run that fails inside the demo.

use std::process::Stdio;
use std::time::{Duration, Instant};

mod common;

use common::cardinal;

#[test]
fn a_second_process_on_the_same_state_dir_is_refused_with_the_first_ones_pid() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("frames.fifo");
    let state = dir.path().join("state");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    // The first one takes the directory, then waits for its input to be written.
    let first = cardinal()
        .arg("count")
        .arg("--state-dir")
        .arg(&state)
        .arg(&fifo)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lock = state.join("lock");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(&lock).unwrap_or_default().trim() != first.id().to_string() {
        assert!(
            Instant::now() < deadline,
            "the first process never took the lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = cardinal()
        .arg("count")
        .arg("--state-dir")
        .arg(&state)
        .arg(&fifo)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("pid {}", first.id())), "{err}");
    // The first one is unharmed: give it its frames.
    std::fs::write(&fifo, "{\"uid\":\"a\",\"ts\":1468244340}\n").unwrap();
    let out = first.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("unique_users=1"));
}

#[test]
fn a_checkpoint_that_cannot_be_written_stops_the_run_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    // In the way of the temporary checkpoint: as good as a full disk, even for root.
    std::fs::create_dir_all(state.join("checkpoint.tmp")).unwrap();
    let file = dir.path().join("f.json");
    let lines: String = (0..5000)
        .map(|i| format!("{{\"uid\":\"u{i}\",\"ts\":{}}}\n", 1_468_244_340 + i / 10))
        .collect();
    std::fs::write(&file, lines).unwrap();
    let o = cardinal()
        .arg("count")
        .arg("--state-dir")
        .arg(&state)
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot write checkpoint") && err.contains(state.to_str().unwrap()),
        "{err}"
    );
}

#[test]
fn a_demo_whose_run_fails_exits_1_with_the_error() {
    // Results go to stdout as each window closes; /dev/full refuses the first one,
    // while the demo's producer, which paces itself on the run, is still producing.
    let stdout = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let child = cardinal()
        .args(["demo", "--frames", "100000"])
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Before the fix, the producer waited for ever on a run that had stopped.
    let o = common::output_within(child, Duration::from_secs(120));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot write results") && err.contains("No space left on device"),
        "{err}"
    );
}

fn text_lines(path: &std::path::Path) -> u64 {
    std::fs::read(path)
        .unwrap()
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .count() as u64
}

/// Issue 18, item 7: a `--state-dir` run that resumed created `--rejects` anew,
/// losing every reject written before the checkpoint (16,000 of 49,969 after a
/// SIGTERM, 24,348 after kill -9). Killed mid-run (SIGTERM, then SIGKILL) and
/// resumed, the rejects file must name every invalid line exactly once: the
/// invalid lines are the ones this test wrote so.
#[test]
fn a_resumed_run_keeps_the_rejects_written_before_its_checkpoint() {
    for signal in ["TERM", "KILL"] {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.json");
        let (state, rejects) = (dir.path().join("state"), dir.path().join("r.jsonl"));
        let (text, invalid) = common::frames_with_every_seventh_invalid(200_000);
        // Lines are 1-based.
        let invalid: Vec<u64> = invalid.into_iter().map(|i| i + 1).collect();
        std::fs::write(&input, text).unwrap();
        let args = |c: &mut std::process::Command| {
            c.arg("count")
                .arg("--state-dir")
                .arg(&state)
                .args(["--checkpoint-interval", "0s", "--rejects"])
                .arg(&rejects)
                .arg(&input)
                .stdout(Stdio::null())
                .stderr(Stdio::null());
        };
        let mut first = cardinal();
        args(&mut first);
        let mut first = first.spawn().unwrap();
        // A tenth of the rejects written, and checkpoints since.
        let finished = common::until_under_way(&mut first, &rejects, 300_000, &state);
        if finished.is_none() {
            let _ = std::process::Command::new("kill")
                .args([&format!("-{signal}"), &first.id().to_string()])
                .status();
            first.wait().unwrap();
        }
        let mut again = cardinal();
        args(&mut again);
        let o = again.stderr(Stdio::piped()).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{err}");
        if finished.is_none() {
            // The summary covers the whole job, not only the resumed run: every
            // line read once, and counted or rejected once.
            let total = text_lines(&input);
            let valid = total - invalid.len() as u64;
            assert!(
                err.contains(&format!("{total} frames read"))
                    && err.contains("in all; resumed from a checkpoint"),
                "{signal}: {err}"
            );
            assert!(
                err.contains(&format!("counted {valid}, rejected {},", invalid.len())),
                "{signal}: {err}"
            );
        }
        let lines: Vec<u64> = std::fs::read_to_string(&rejects)
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["line"].as_u64().unwrap()
            })
            .collect();
        let mut sorted = lines.clone();
        sorted.sort_unstable();
        assert_eq!(
            sorted.len(),
            invalid.len(),
            "{signal}: rejects kept once each"
        );
        assert_eq!(sorted, invalid, "{signal}");
    }
}

/// Checkpoints of format version 3 (before the rejects file's length was
/// recorded) still load: `tests/fixtures/checkpoint-v3` was written by the
/// version-3 build, counting its `in.json` to the end. Refusing it would make every
/// upgrade discard its users' state.
#[test]
fn a_checkpoint_of_the_previous_format_still_loads() {
    let dir = tempfile::tempdir().unwrap();
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/checkpoint-v3");
    std::fs::create_dir(dir.path().join("state")).unwrap();
    std::fs::copy(
        fixture.join("checkpoint"),
        dir.path().join("state/checkpoint"),
    )
    .unwrap();
    std::fs::copy(fixture.join("in.json"), dir.path().join("in.json")).unwrap();
    let o = cardinal()
        .current_dir(dir.path())
        .args(["count", "--state-dir", "state", "in.json"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("counted to the end"), "{err}");
    assert!(o.stdout.is_empty(), "nothing counted again");
}

/// Issue 18, item 5: a checkpoint belonged to a file *name*. `cur.json` replaced
/// by other data of the same size resumed at the old offset and mixed both, and
/// `./in.json` was refused as another job than `in.json`. Inputs are known by what
/// they are: the same file under another name resumes, other data is refused.
#[test]
fn a_checkpoint_belongs_to_the_file_not_to_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let write = |uids: [&str; 2]| {
        let text: String = (uids.iter().enumerate())
            .map(|(i, u)| format!("{{\"uid\":\"{u}\",\"ts\":{}}}\n", 1_468_244_340 + i))
            .collect();
        // A new file in place of the old, as a log rotation or a copy does.
        let tmp = dir.path().join("cur.json.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.path().join("cur.json")).unwrap();
    };
    let count = |name: &str| {
        cardinal()
            .current_dir(dir.path())
            .args(["count", "--state-dir", "state", name])
            .output()
            .unwrap()
    };
    write(["a", "b"]);
    let first = count("cur.json");
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    // The same file, by another name: the checkpoint is its own (counted to the end).
    let same = count("./cur.json");
    let err = String::from_utf8_lossy(&same.stderr);
    assert!(
        same.status.success() && err.contains("counted to the end"),
        "{err}"
    );
    // Other data of the same size under the same name: not this checkpoint's input.
    write(["c", "d"]);
    let other = count("cur.json");
    let err = String::from_utf8_lossy(&other.stderr);
    assert_eq!(other.status.code(), Some(1), "{err}");
    assert!(err.contains("written for another job"), "{err}");
}

/// A backfill killed after its last chunk's checkpoint but before the one that
/// says it finished: the next run resumes at the end, reads nothing, and prints
/// what was still open; it must also record that it finished, so that the run
/// after it has nothing to do (it used to print the same windows on every rerun).
/// The kill lands there for sure: the run's stdout is a pipe nobody reads, so the
/// end of input blocks in its flush, after the last chunk's checkpoint.
#[test]
fn a_backfill_killed_at_its_end_is_finished_by_the_next_run_once() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.json");
    let lines: String = (0..2000)
        .map(|i| {
            format!(
                "{{\"uid\":\"u{}\",\"ts\":{}}}\n",
                i % 37,
                1_700_000_000 + 60 * i
            )
        })
        .collect();
    std::fs::write(&input, lines).unwrap();
    let state = dir.path().join("state");
    let run = || {
        let mut c = cardinal();
        c.args(["count", "--format", "json", "--lateness", "3000000000s"])
            .arg("--state-dir")
            .arg(&state)
            .args(["--checkpoint-interval", "0s"])
            .arg(&input);
        c
    };
    let mut blocked = run()
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !state.join("checkpoint").exists() {
        assert!(Instant::now() < deadline, "no checkpoint was ever written");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Time to fill the pipe (2,000 records of about 180 B: more than its 64 KiB).
    std::thread::sleep(Duration::from_secs(1));
    blocked.kill().unwrap();
    blocked.wait().unwrap();

    let first = run().output().unwrap();
    assert!(first.status.success(), "{first:?}");
    let printed = String::from_utf8_lossy(&first.stdout).lines().count();
    assert!(printed > 0, "the resumed run printed nothing: {first:?}");
    for again in 0..2 {
        let out = run().output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).lines().count(),
            0,
            "rerun {again} after the finished one printed windows again: {stderr}"
        );
        assert!(stderr.contains("nothing to do"), "{stderr}");
    }
}
