//! Hostile and unusual input through the real binary (issue 7): timestamps at the
//! edge of representable time, a full or closed stderr and stdout, slow and sparse
//! ordered streams, a line of tens of megabytes from a pipe, and options out of range.
//!
//! Expected counts are computed here by integer arithmetic on the frames written
//! (a UTC minute is `ts / 60`), never by Cardinal's own calendar.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

mod common;

use common::cardinal;
use serde_json::Value;

fn run(args: &[&str]) -> Output {
    cardinal().args(args).output().expect("cardinal runs")
}

/// `cardinal count --format json --rejects REJECTS FILE`.
fn count_json(file: &Path, rejects: &Path) -> Output {
    let (f, r) = (file.to_str().unwrap(), rejects.to_str().unwrap());
    run(&["count", "--format", "json", "--rejects", r, f])
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut f = std::fs::File::create(path).unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
}

fn frame(uid: &str, ts: i64) -> String {
    format!(r#"{{"uid":"{uid}","ts":{ts}}}"#)
}

/// The rejects file as (line, reason, detail).
fn rejects(path: &Path) -> Vec<(u64, String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["line"].as_u64().unwrap(),
                v["reason"].as_str().unwrap().to_string(),
                v["detail"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn secs(rfc3339: &str) -> i64 {
    rfc3339.parse::<jiff::Timestamp>().unwrap().as_second()
}

#[test]
fn timestamps_at_the_end_of_time_are_bad_ts_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    // The last representable second, worked out by hand from jiff's range (its time
    // ends at 9999-12-30T22:00:00Z, civil time with 9999-12-31), per window and zone.
    let cases = [
        ("year", "UTC", "9998-12-31T23:59:59Z"),
        ("minute", "UTC", "9999-12-30T21:59:59Z"),
        ("day", "Asia/Tokyo", "9999-12-30T14:59:59Z"),
        ("month", "America/Los_Angeles", "9999-12-01T07:59:59Z"),
        ("week", "Asia/Tokyo", "9999-12-26T14:59:59Z"),
    ];
    for (window, zone, last) in cases {
        let last = secs(last);
        let file = dir.path().join(format!("{window}.json"));
        // Sixteen beyond the range in a row: once believed as a jump, now each rejected.
        let mut lines = vec![frame("edge", last)];
        lines.extend((0..16).map(|i| frame(&format!("u{i}"), last + 1 + i)));
        lines.push(frame("zero", 0));
        write_lines(&file, &lines);
        let rj = dir.path().join(format!("{window}.rejects"));
        let o = run(&[
            "count",
            "--windows",
            window,
            "--tz",
            zone,
            "--format",
            "json",
            "--rejects",
            rj.to_str().unwrap(),
            file.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(0), "{window} {zone}: {}", stderr(&o));
        let r = rejects(&rj);
        let bad: Vec<u64> = r
            .iter()
            .filter(|(_, reason, _)| reason == "bad_ts")
            .map(|(line, _, _)| *line)
            .collect();
        assert_eq!(bad, (2..=17).collect::<Vec<_>>(), "{window} {zone}: {r:?}");
        assert!(
            r[0].2.contains(zone),
            "the detail names the zone: {}",
            r[0].2
        );
        let out = String::from_utf8_lossy(&o.stdout);
        let users: u64 = out
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["unique_users"]
                    .as_u64()
                    .unwrap()
            })
            .sum();
        // The edge frame and epoch zero are counted (zero may be late; it is not here:
        // both are counted at the end of input, each in its own window).
        assert_eq!(users + r.len() as u64 - 16, 2, "{window} {zone}: {out}");
    }
}

#[test]
fn a_full_or_closed_stderr_never_fails_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f.json");
    write_lines(
        &file,
        &(0..100)
            .map(|i| frame("u", 1_468_244_340 + i))
            .collect::<Vec<_>>(),
    );
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let o = cardinal()
        .env("RUST_LOG", "cardinal=debug")
        .args(["count", "--format", "json", file.to_str().unwrap()])
        .stderr(full)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        common::minute_counts(&o.stdout).values().sum::<u64>(),
        2,
        "results still written"
    );
    // The error path too: a missing file is exit 1, not a panic about stderr.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let o = cardinal()
        .args(["count", "/nonexistent/x.json"])
        .stderr(full)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    // A reader of stderr that went away.
    let mut child = cardinal()
        .env("RUST_LOG", "cardinal=debug")
        .args(["count", file.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn a_closed_stdout_is_an_error_naming_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f.json");
    write_lines(&file, &[frame("u", 1_468_244_340)]);
    let o = Command::new("sh")
        .args(["-c", r#"exec "$0" count "$1" >&-"#])
        .arg(common::bin())
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("stdout is closed"), "{}", stderr(&o));
    // A reader that goes away early stays a quiet success.
    let o = Command::new("sh")
        .args([
            "-c",
            r#""$0" count "$1" | head -c 1 >/dev/null; echo "${PIPESTATUS:-}""#,
        ])
        .arg(common::bin())
        .arg(&file)
        .output()
        .unwrap();
    assert!(o.status.success());
}

#[test]
fn slow_ordered_streams_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let base = 1_468_244_340;
    let mut streams: Vec<(String, Vec<i64>)> = [5, 10, 30, 60, 61, 3600, 86_400 * 45]
        .iter()
        .map(|gap| {
            (
                format!("gap{gap}"),
                (0..200).map(|i| base + gap * i).collect(),
            )
        })
        .collect();
    // One frame an hour for ten years.
    streams.push((
        "hourly".into(),
        (0..87_600).map(|i| base + 3600 * i).collect(),
    ));
    // A real three-hour gap, then one frame every five seconds.
    streams.push((
        "gap3h".into(),
        (0..100)
            .map(|i| base + i)
            .chain((0..100).map(|i| base + 100 + 3 * 3600 + 5 * i))
            .collect(),
    ));
    for (name, times) in streams {
        let frames: Vec<(String, i64)> = times
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("u{i}"), *t))
            .collect();
        let file = dir.path().join(format!("{name}.json"));
        write_lines(
            &file,
            &frames.iter().map(|(u, t)| frame(u, *t)).collect::<Vec<_>>(),
        );
        let rj = dir.path().join(format!("{name}.rejects"));
        let o = count_json(&file, &rj);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        assert_eq!(rejects(&rj), vec![], "{name}");
        assert_eq!(
            common::minute_counts(&o.stdout),
            common::distinct_per_minute(frames.iter().map(|(u, t)| (u.as_str(), *t))),
            "{name}"
        );
    }
}

#[test]
fn a_sparse_stream_with_a_bit_flip_rejects_only_the_flip() {
    let dir = tempfile::tempdir().unwrap();
    let base = 1_468_244_340;
    let mut frames: Vec<(String, i64)> =
        (0..300).map(|i| (format!("u{i}"), base + 90 * i)).collect();
    let flipped = frames[150].1 ^ (1 << 31);
    frames.insert(151, ("flip".into(), flipped));
    let file = dir.path().join("f.json");
    write_lines(
        &file,
        &frames.iter().map(|(u, t)| frame(u, *t)).collect::<Vec<_>>(),
    );
    let rj = dir.path().join("r.jsonl");
    let o = count_json(&file, &rj);
    assert!(o.status.success(), "{}", stderr(&o));
    let r = rejects(&rj);
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!((r[0].0, r[0].1.as_str()), (152, "outlier"));
    assert!(
        !r[0].2.contains("Some("),
        "a sentence, not debug text: {}",
        r[0].2
    );
    frames.remove(151);
    assert_eq!(
        common::minute_counts(&o.stdout),
        common::distinct_per_minute(frames.iter().map(|(u, t)| (u.as_str(), *t)))
    );
}

/// Peak RSS of a child in KiB, from wait4(2): per child, unlike RUSAGE_CHILDREN.
fn wait_with_peak_rss(child: &mut std::process::Child) -> (i32, i64) {
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the pid is our own unwaited child; both pointers are valid.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32);
    (libc::WEXITSTATUS(status), usage.ru_maxrss)
}

/// Issue 18: memory grew with lines per chunk times threads (100 MB of `{` lines
/// at `--threads 8` took 1.19 GB). 16 MB of them at 16 threads took about 1 GB.
#[test]
fn short_lines_at_many_threads_stay_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("braces.json");
    const LINES: usize = 8 << 20;
    std::fs::write(&file, b"{\n".repeat(LINES)).unwrap();
    let mut child = cardinal()
        .args(["count", "--threads", "16", "--format", "json"])
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut err, &mut s).unwrap();
        s
    });
    let (code, peak_kib) = wait_with_peak_rss(&mut child);
    let err = reader.join().unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(&format!("rejected {LINES},")),
        "every line rejected: {err}"
    );
    assert!(
        peak_kib < 200 << 10,
        "peak RSS {} MiB for 16 MB of input",
        peak_kib >> 10
    );
}

#[test]
fn a_huge_line_from_a_pipe_is_skipped_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let rj = dir.path().join("r.jsonl");
    let mut child = cardinal()
        .args([
            "count",
            "--format",
            "json",
            "--rejects",
            rj.to_str().unwrap(),
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut s).unwrap();
        s
    });
    const HUGE: usize = 64 << 20;
    writeln!(stdin, "{}", frame("a", 1_468_244_340)).unwrap();
    stdin.write_all(br#"{"uid":""#).unwrap();
    let piece = vec![b'x'; 4096];
    for _ in 0..HUGE / piece.len() {
        stdin.write_all(&piece).unwrap();
    }
    writeln!(stdin, r#"","ts":1468244341}}"#).unwrap();
    writeln!(stdin, "{}", frame("b", 1_468_244_342)).unwrap();
    drop(stdin);
    let (code, peak_kib) = wait_with_peak_rss(&mut child);
    let out = reader.join().unwrap();
    assert_eq!(code, 0);
    assert_eq!(
        common::minute_counts(&out).values().sum::<u64>(),
        2,
        "the frames around it count"
    );
    let r = rejects(&rj);
    assert_eq!(r.len(), 1);
    assert_eq!((r[0].0, r[0].1.as_str()), (2, "too_large"));
    let len = HUGE + br#"{"uid":"","ts":1468244341}"#.len();
    assert!(r[0].2.contains(&format!("{len} bytes")), "{}", r[0].2);
    let raw = std::fs::read_to_string(&rj).unwrap();
    let v: Value = serde_json::from_str(raw.lines().next().unwrap()).unwrap();
    assert_eq!(
        v["raw"].as_str().unwrap().len(),
        1024,
        "only its head is kept"
    );
    // The line is 64 MiB; what the process holds must not grow with it.
    assert!(peak_kib < 48 * 1024, "peak RSS {peak_kib} KiB");
}

#[test]
fn out_of_range_options_are_usage_errors_naming_the_option() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f.json");
    write_lines(&file, &[frame("u", 1_468_244_340)]);
    let f = file.to_str().unwrap();
    for (args, option, says) in [
        (vec!["--lateness", "-5s"], "--lateness", "negative"),
        (
            vec!["--lateness", "99999999999999"],
            "--lateness",
            "100 years",
        ),
        (
            vec!["--idle-timeout", "200000000000s"],
            "--idle-timeout",
            "100 years",
        ),
        (vec!["--threads", "100000"], "--threads", "1..=64"),
        (vec!["--max-frame-bytes", "1"], "--max-frame-bytes", "1KiB"),
    ] {
        let mut all = vec!["count"];
        all.extend(args.iter());
        all.push(f);
        let o = run(&all);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        let e = stderr(&o);
        assert!(e.contains(option) && e.contains(says), "{args:?}: {e}");
    }
}

/// Issue 18: a line over `--max-frame-bytes` that arrives whole within one read
/// (a file, where reads are large) was counted, while `run` rejected the same
/// data. One limit, whatever the source and wherever a line falls in a read.
#[test]
fn the_frame_limit_holds_for_lines_that_arrive_whole() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.json");
    let rj = dir.path().join("r.jsonl");
    const LIMIT: usize = 64 << 10;
    let padded = |uid: &str, ts: i64, size: usize| {
        let base = frame(uid, ts);
        let pad = size - base.len() - r#","pad":"""#.len();
        format!(r#"{{"uid":"{uid}","ts":{ts},"pad":"{}"}}"#, "p".repeat(pad))
    };
    let t = 1_468_244_340;
    let lines = vec![
        frame("a", t),
        padded("big1", t + 1, 100_000),
        frame("b", t + 2),
        padded("big2", t + 3, 500_000),
        padded("edge", t + 4, LIMIT), // exactly at the limit: counted
        padded("big3", t + 5, 900_000),
        frame("c", t + 6),
    ];
    // The reference: which lines are over the limit, by their length here.
    let over: Vec<(u64, usize)> = (lines.iter().enumerate())
        .filter(|(_, l)| l.len() > LIMIT)
        .map(|(i, l)| (i as u64 + 1, l.len()))
        .collect();
    assert_eq!(over.len(), 3);
    write_lines(&input, &lines);
    for source in ["file", "stdin"] {
        let (i, r) = (input.to_str().unwrap(), rj.to_str().unwrap());
        let mut args = vec!["count", "--format", "json", "--max-frame-bytes", "64KiB"];
        args.extend(["--rejects", r]);
        let o = if source == "file" {
            args.push(i);
            run(&args)
        } else {
            args.push("-");
            cardinal()
                .args(&args)
                .stdin(std::fs::File::open(&input).unwrap())
                .output()
                .unwrap()
        };
        assert!(o.status.success(), "{source}: {}", stderr(&o));
        assert_eq!(
            common::minute_counts(&o.stdout).values().sum::<u64>(),
            (lines.len() - over.len()) as u64,
            "{source}: only the lines within the limit count"
        );
        let got: Vec<(u64, String)> = rejects(&rj)
            .into_iter()
            .map(|(line, reason, detail)| {
                let len = over.iter().find(|o| o.0 == line).map_or(0, |o| o.1);
                assert!(detail.contains(&format!("{len} bytes")), "{detail}");
                (line, reason)
            })
            .collect();
        let want: Vec<(u64, String)> = over.iter().map(|o| (o.0, "too_large".into())).collect();
        assert_eq!(got, want, "{source}");
        let raw = std::fs::read_to_string(&rj).unwrap();
        for l in raw.lines() {
            let v: Value = serde_json::from_str(l).unwrap();
            assert!(
                v["raw"].as_str().unwrap().len() <= 1024,
                "only a head is kept"
            );
        }
    }
}

/// Issue 18: a frame with `ts` 0, or a month old, among a file's first frames
/// (before the outlier guard has a clock) opened a 1970 (or month-old) minute of
/// its own; from the 17th frame on the same frame was `late`. Either way it must
/// not make a window: the expected windows here are computed by integer division.
#[test]
fn a_garbage_timestamp_among_the_first_frames_opens_no_window() {
    let dir = tempfile::tempdir().unwrap();
    let t = 1_468_244_340;
    for garbage in [0, t - 30 * 86_400] {
        for at in [1usize, 5, 15, 30] {
            let mut lines: Vec<String> = (0..40).map(|i| frame(&format!("u{i}"), t + i)).collect();
            lines.insert(at, frame("g", garbage));
            let (input, rj) = (dir.path().join("in.json"), dir.path().join("r.jsonl"));
            write_lines(&input, &lines);
            let o = count_json(&input, &rj);
            assert!(o.status.success(), "{}", stderr(&o));
            let want: std::collections::BTreeMap<i64, u64> =
                [(t / 60 * 60, 40)].into_iter().collect();
            assert_eq!(
                common::minute_counts(&o.stdout),
                want,
                "garbage {garbage} at line {}",
                at + 1
            );
            let r = rejects(&rj);
            assert_eq!(r.len(), 1, "{r:?}");
            assert_eq!(r[0].0, at as u64 + 1);
            assert!(["outlier", "late"].contains(&r[0].1.as_str()), "{r:?}");
        }
    }
}

/// Issue 18, item 8: `count data.json --rejects data.json` emptied the input and
/// said "0 frames read". An output that is an input, under any name, is refused
/// before anything is opened for writing; the input stays byte for byte.
#[test]
fn an_output_that_is_an_input_is_refused_and_the_input_kept() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.json");
    let lines: Vec<String> = (0..10)
        .map(|i| frame(&format!("u{i}"), 1_468_244_340 + i))
        .collect();
    write_lines(&input, &lines);
    let before = std::fs::read(&input).unwrap();
    let link = dir.path().join("link.json");
    std::fs::hard_link(&input, &link).unwrap();
    let dotted = format!("{}/./in.json", dir.path().display());
    for output in [input.to_str().unwrap(), &dotted, link.to_str().unwrap()] {
        let o = run(&["count", "--rejects", output, input.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2), "{output}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains("--rejects") && err.contains("is the input"),
            "{err}"
        );
        assert_eq!(
            std::fs::read(&input).unwrap(),
            before,
            "{output}: the input was touched"
        );
    }
    // A results topic that is the frames topic: refused before any broker is asked.
    let o = run(&[
        "run",
        "-b",
        "127.0.0.1:1",
        "-t",
        "clicks",
        "--results-topic",
        "clicks",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--results-topic clicks must differ from --topic"),
        "{}",
        stderr(&o)
    );
}

/// Issue 18, item 9: `--partials-out` was only written at the end of input, so a
/// backfill into a directory that cannot take the file lost all its work. It is
/// checked at start: with an input that has not ended (a pipe left open), the run
/// fails at once, naming the directory.
#[test]
fn an_unwritable_partials_directory_fails_at_start_not_at_the_end() {
    // /proc exists, and no file can be created in it, even by root.
    let mut child = cardinal()
        .args(["count", "--partials-out", "/proc", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // It may have failed already: a closed pipe here is no error.
    let _ = writeln!(stdin, "{}", frame("a", 1_468_244_340));
    let out = common::output_within(child, std::time::Duration::from_secs(20));
    drop(stdin);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/proc"), "{err}");
}

/// Issue 18, item 12: `count` opened every input at once and failed on 1,100 files
/// under the default limit of 1,024 descriptors (a file a day for three years).
/// With the limit at 64, 300 files are counted whole: one frame each, a user each.
#[test]
fn many_more_files_than_descriptors_are_counted_one_at_a_time() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let t = 1_468_244_340;
    let files: Vec<String> = (0..300)
        .map(|i| {
            let p = dir.path().join(format!("day-{i:03}.json"));
            write_lines(&p, &[frame(&format!("u{i}"), t + i * 60)]);
            p.to_str().unwrap().to_string()
        })
        .collect();
    let mut cmd = cardinal();
    cmd.args(["count", "--format", "json"]).args(&files);
    // SAFETY: setrlimit is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 64,
                rlim_max: 64,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let counts = common::minute_counts(&o.stdout);
    assert_eq!(counts.len(), 300);
    assert!(counts.values().all(|c| *c == 1));
    // A missing file is still an error at start, naming it.
    let o = run(&["count", &files[0], "no-such-day.json"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("no-such-day.json"), "{}", stderr(&o));
    // Its cause once, not twice (issue 18's messages).
    assert_eq!(
        stderr(&o).matches("os error 2").count(),
        1,
        "{}",
        stderr(&o)
    );
    assert!(o.stdout.is_empty(), "nothing counted before the error");
}

/// Issue 18's messages: a UTF-8 byte order mark at the start of a file was
/// rejected as `not_an_object` (Python's json reads such bytes: the reference
/// here); `--format JSON` was refused while `--windows MINUTE` was accepted;
/// `--checkpoint-interval 0` was "not a duration"; `--http localhost:PORT` was
/// refused.
#[test]
fn small_things_a_user_types_are_understood() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("bom.json");
    let lines = [frame("a", 1_468_244_340), frame("b", 1_468_244_341)];
    let mut bytes = b"\xEF\xBB\xBF".to_vec();
    bytes.extend(lines.join("\n").as_bytes());
    bytes.push(b'\n');
    std::fs::write(&input, &bytes).unwrap();
    let py = Command::new("python3")
        .args(["-c", "import json,sys; d=open(sys.argv[1],'rb').read(); print(len([json.loads(l) for l in d.decode('utf-8-sig').splitlines()]))"])
        .arg(&input)
        .output()
        .unwrap();
    let valid: u64 = String::from_utf8_lossy(&py.stdout).trim().parse().unwrap();
    let o = run(&["count", "--format", "JSON", input.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        common::minute_counts(&o.stdout).values().sum::<u64>(),
        valid
    );
    let state = dir.path().join("state");
    let o = run(&[
        "count",
        "--checkpoint-interval",
        "0",
        "--state-dir",
        state.to_str().unwrap(),
        "--http",
        "localhost:0",
        input.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// Issue 18's messages: gzip was told by the name only, so a `.gz` file renamed,
/// or gzip bytes on stdin, were read as text and every line rejected. The frames
/// are counted whatever the name, and a plain file named `.gz` is read as text.
#[test]
fn gzip_is_told_by_its_bytes_not_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (0..50)
        .map(|i| frame(&format!("u{i}"), 1_468_244_340 + i))
        .collect();
    let text = lines.join("\n") + "\n";
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, text.as_bytes()).unwrap();
    let gz = gz.finish().unwrap();
    let renamed = dir.path().join("day.json");
    std::fs::write(&renamed, &gz).unwrap();
    let plain_gz = dir.path().join("plain.json.gz");
    std::fs::write(&plain_gz, &text).unwrap();
    let from_file = |p: &Path| run(&["count", "--format", "json", p.to_str().unwrap()]);
    let from_stdin = cardinal()
        .args(["count", "--format", "json", "-"])
        .stdin(std::fs::File::open(&renamed).unwrap())
        .output()
        .unwrap();
    for (what, o) in [
        ("renamed gzip", from_file(&renamed)),
        ("plain .gz", from_file(&plain_gz)),
        ("gzip on stdin", from_stdin),
    ] {
        assert!(o.status.success(), "{what}: {}", stderr(&o));
        assert_eq!(
            common::minute_counts(&o.stdout).values().sum::<u64>(),
            50,
            "{what}"
        );
    }
}

/// Issue 18's messages: a broken `.gz` was reported "at byte N" with N counted in
/// the decompressed bytes, which reads as the file's offset. Both are named now;
/// for a file cut short the compressed one is its length, and the decompressed one
/// what Python's zlib gets out of the same bytes.
#[test]
fn a_broken_gzip_names_both_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let text: String = (0..20_000)
        .map(|i| frame(&format!("u{i}"), 1_468_244_340 + i) + "\n")
        .collect();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, text.as_bytes()).unwrap();
    let gz = gz.finish().unwrap();
    let cut = dir.path().join("cut.json.gz");
    std::fs::write(&cut, &gz[..gz.len() / 2]).unwrap();
    let py = Command::new("python3")
        .args([
            "-c",
            "import sys,zlib; print(len(zlib.decompressobj(31).decompress(open(sys.argv[1],'rb').read())))",
        ])
        .arg(&cut)
        .output()
        .unwrap();
    let decompressed: u64 = String::from_utf8_lossy(&py.stdout).trim().parse().unwrap();
    assert!(decompressed > 0 && decompressed < text.len() as u64);
    let o = run(&["count", cut.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let want = format!(
        "at byte {} of the gzip file (byte {decompressed} of the decompressed stream)",
        gz.len() / 2
    );
    assert!(stderr(&o).contains(&want), "{want}\n{}", stderr(&o));
}

/// Issue 18's messages: a UTF-16 file had every line rejected and nothing said
/// why. A warning names the file once (it spans several chunks here), its frames
/// are still rejected, each one (as many as the file has `\n` bytes to split on),
/// and the `iconv` it suggests makes a file that counts every frame.
#[test]
fn a_utf16_input_is_named_once_with_how_to_convert_it() {
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (0..60_000)
        .map(|i| frame(&format!("u{i}"), 1_468_244_340 + i))
        .collect();
    let text = lines.join("\n") + "\n";
    let mut bytes = vec![0xFF, 0xFE];
    bytes.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
    let input = dir.path().join("excel-export.json");
    std::fs::write(&input, &bytes).unwrap();
    let plain = dir.path().join("plain.json");
    write_lines(&plain, &[frame("a", 1_468_244_340)]);
    let frames = bytes.split(|b| *b == b'\n').count() - usize::from(bytes.ends_with(b"\n"));
    assert!(bytes.len() > 2 << 20, "several chunks");

    let rejected = dir.path().join("rejects.jsonl");
    let (i, p) = (input.to_str().unwrap(), plain.to_str().unwrap());
    let o = run(&[
        "count",
        "--format",
        "json",
        "--rejects",
        rejected.to_str().unwrap(),
        i,
        p,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    let hint = format!(
        "input {i} looks like UTF-16 (byte order mark FF FE); Cardinal reads UTF-8: \
         convert with `iconv -f UTF-16 -t UTF-8`"
    );
    assert_eq!(err.matches("looks like UTF-16").count(), 1, "{err}");
    assert!(err.contains(&hint), "{err}");
    assert_eq!(rejects(&rejected).len(), frames);
    assert_eq!(common::minute_counts(&o.stdout).values().sum::<u64>(), 1);

    let converted = Command::new("iconv")
        .args(["-f", "UTF-16", "-t", "UTF-8", i])
        .output()
        .unwrap();
    assert!(converted.status.success());
    let utf8 = dir.path().join("converted.json");
    std::fs::write(&utf8, &converted.stdout).unwrap();
    let o = run(&["count", "--format", "json", utf8.to_str().unwrap()]);
    assert!(!stderr(&o).contains("UTF-16"), "{}", stderr(&o));
    assert_eq!(
        common::minute_counts(&o.stdout).values().sum::<u64>(),
        lines.len() as u64
    );
}
