//! What a person sees: a progress bar on a real terminal (tmux), and no control
//! codes at all when stderr is a pipe or a file.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

/// Sizes as indicatif's `{bytes}` writes them: binary prefixes, two decimals.
fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < units.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.2} {}", units[unit])
    }
}

fn frames(dir: &std::path::Path) -> (std::path::PathBuf, u64) {
    let path = dir.join("frames.json");
    let base = 1_468_244_340i64;
    let text: String = (0..30_000)
        .map(|i| {
            format!(
                "{{\"uid\":\"u{}\",\"ts\":{},\"pad\":\"{}\"}}\n",
                i % 500,
                base + i / 100,
                "x".repeat(40)
            )
        })
        .collect();
    std::fs::write(&path, &text).unwrap();
    (path, text.len() as u64)
}

fn tmux(args: &[&str]) -> String {
    let o = Command::new("tmux")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("tmux: {e} (scripts/test.sh installs it)"));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn count_on_a_terminal_draws_a_bar_over_the_files_size() {
    let dir = tempfile::tempdir().unwrap();
    let (path, size) = frames(dir.path());
    let session = format!("cardinal-test-{}", std::process::id());
    let socket = dir.path().join("tmux.sock");
    let socket = socket.to_str().unwrap();
    let command = format!(
        "{} count {} > /dev/null; echo EXIT=$?; sleep 60",
        common::bin(),
        path.display()
    );
    tmux(&[
        "-S",
        socket,
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "150",
        "-y",
        "10",
        &command,
    ]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let pane = loop {
        let pane = tmux(&["-S", socket, "capture-pane", "-p", "-t", &session]);
        if pane.contains("EXIT=") {
            break pane;
        }
        assert!(Instant::now() < deadline, "never finished: {pane}");
        std::thread::sleep(Duration::from_millis(200));
    };
    tmux(&["-S", socket, "kill-server"]);
    assert!(pane.contains("EXIT=0"), "{pane}");
    // The bar, complete, over the file's size; then the summary below it.
    let total = human(size);
    assert!(
        pane.contains(&format!("{total}/{total}")),
        "{total} in:\n{pane}"
    );
    assert!(pane.contains("[====="), "{pane}");
    assert!(pane.contains("30000 frames read"), "{pane}");
}

#[test]
fn a_pipe_gets_no_control_codes() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = frames(dir.path());
    let o = common::cardinal().arg("count").arg(&path).output().unwrap();
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("30000 frames read"), "{err}");
    assert!(
        !err.contains('\x1b') && !err.contains('\r'),
        "control codes on a pipe: {err:?}"
    );
}
