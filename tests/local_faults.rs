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
