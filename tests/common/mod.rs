//! Helpers shared by the end-to-end tests: the binary, and exact answers computed
//! independently of Cardinal: which frames are valid comes from the generator's
//! ground truth (or from serde_json), and which window a timestamp falls in comes
//! from a separate implementation of the calendar, in Python (`zoneinfo`), not from
//! Cardinal's own `window` module.
// Each test crate uses its own subset of these helpers.
#![allow(dead_code)]

pub mod apache;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::Write;
use std::process::{Command, Stdio};

use cardinal::generator::{FrameGen, GenConfig, Truth};
use cardinal::window::Granularity;

/// The binary under test. `CARDINAL_BIN` points the tests at another build, e.g.
/// an older commit's, to watch a new test fail where the behaviour was wrong.
pub fn cardinal() -> Command {
    Command::new(bin())
}

/// `cardinal produce` of `file` to `topic`, keyed by `uid`; panics with its stderr.
pub fn produce_keyed(addr: &str, topic: &str, file: &std::path::Path) {
    let o = cardinal()
        .args(["produce", "-b", addr, "-t", topic, "--key-field", "uid"])
        .arg(file)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// The latest record per key of a results topic, by (window, start).
pub fn latest_results(
    addr: &str,
    topic: &str,
) -> std::collections::BTreeMap<(String, String), serde_json::Value> {
    let o = cardinal()
        .args(["consume", "-b", addr, "-t", topic, "--latest-per-key"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"));
            let key = (
                v["window"].as_str().unwrap().to_string(),
                v["start"].as_str().unwrap().to_string(),
            );
            (key, v)
        })
        .collect()
}

pub fn bin() -> String {
    std::env::var("CARDINAL_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_cardinal").to_string())
}

/// The reference calendar, `scripts/reference_calendar.py` (shared with the
/// scenario runner): for each timestamp on stdin, one line per granularity,
/// `TS GRANULARITY START END`. Written from the definitions, not from Cardinal's
/// code; the script's header says which.
fn reference_calendar() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/reference_calendar.py")
}

/// (granularity, ts) -> (start, end) of the window containing `ts` in zone `tz`,
/// from the reference calendar.
pub fn reference_windows(
    tz: &str,
    grans: &[Granularity],
    timestamps: impl IntoIterator<Item = i64>,
) -> HashMap<(Granularity, i64), (String, String)> {
    let ts: BTreeSet<i64> = timestamps.into_iter().collect();
    let names: Vec<&str> = grans.iter().map(|g| g.name()).collect();
    let mut child = Command::new("python3")
        .arg(reference_calendar())
        .args([tz, &names.join(",")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (with zoneinfo) computes the reference calendar");
    let input: String = ts.iter().map(|t| format!("{t}\n")).collect();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "the reference calendar failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let by_name: HashMap<&str, Granularity> = grans.iter().map(|g| (g.name(), *g)).collect();
    let mut windows = HashMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let [t, g, start, end] = f[..] else {
            panic!("reference calendar line {line:?}")
        };
        windows.insert(
            (by_name[g], t.parse().unwrap()),
            (start.to_string(), end.to_string()),
        );
    }
    assert_eq!(windows.len(), ts.len() * grans.len());
    windows
}

/// One window of the reference answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub end: String,
    pub unique_users: u64,
    pub frames: u64,
}

/// (window, start) -> the exact window over `frames` (uid, ts), in zone `tz`.
pub fn expected_windows(
    frames: &[(String, i64)],
    grans: &[Granularity],
    tz: &str,
) -> BTreeMap<(String, String), Window> {
    let cal = reference_windows(tz, grans, frames.iter().map(|f| f.1));
    let mut acc: BTreeMap<(String, String), (String, HashSet<&str>, u64)> = BTreeMap::new();
    for (uid, ts) in frames {
        for g in grans {
            let (start, end) = &cal[&(*g, *ts)];
            let w = acc
                .entry((g.name().to_string(), start.clone()))
                .or_insert_with(|| (end.clone(), HashSet::new(), 0));
            assert_eq!(&w.0, end, "one end per window");
            w.1.insert(uid);
            w.2 += 1;
        }
    }
    acc.into_iter()
        .map(|(k, (end, users, frames))| {
            (
                k,
                Window {
                    end,
                    unique_users: users.len() as u64,
                    frames,
                },
            )
        })
        .collect()
}

/// (window, start) -> unique users.
pub fn unique_users(
    windows: &BTreeMap<(String, String), Window>,
) -> BTreeMap<(String, String), u64> {
    windows
        .iter()
        .map(|(k, w)| (k.clone(), w.unique_users))
        .collect()
}

/// The generator's valid frames, (uid, ts), in order.
pub fn valid_frames(cfg: &GenConfig) -> Vec<(String, i64)> {
    FrameGen::new(cfg)
        .filter_map(|f| match f.truth {
            Truth::Valid { uid, ts } => Some((uid, ts)),
            _ => None,
        })
        .collect()
}

/// (window, start) -> unique users over the generator's valid frames, in zone `tz`.
pub fn expected_from_truth_in(
    cfg: &GenConfig,
    grans: &[Granularity],
    tz: &str,
) -> BTreeMap<(String, String), u64> {
    unique_users(&expected_windows(&valid_frames(cfg), grans, tz))
}

/// (window, start) -> unique users over the generator's valid frames, in UTC.
pub fn expected_from_truth(
    cfg: &GenConfig,
    grans: &[Granularity],
) -> BTreeMap<(String, String), u64> {
    expected_from_truth_in(cfg, grans, "UTC")
}

/// Minute start (unix seconds) -> unique users, from JSON result lines (a
/// `KEY\tJSON` line, as `consume --keys` prints, is read too).
pub fn minute_counts(stdout: &[u8]) -> std::collections::BTreeMap<i64, u64> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let json = l.split_once('\t').map_or(l, |(_, v)| v);
            let v: serde_json::Value = serde_json::from_str(json).unwrap();
            assert_eq!(v["window"], "minute", "{l}");
            let start: jiff::Timestamp = v["start"].as_str().unwrap().parse().unwrap();
            (start.as_second(), v["unique_users"].as_u64().unwrap())
        })
        .collect()
}

/// Distinct users per UTC minute of `(uid, ts)` pairs, by integer arithmetic:
/// a reference that shares nothing with Cardinal's calendar.
pub fn distinct_per_minute<'a>(
    frames: impl IntoIterator<Item = (&'a str, i64)>,
) -> std::collections::BTreeMap<i64, u64> {
    let mut sets: std::collections::BTreeMap<i64, std::collections::HashSet<&str>> =
        std::collections::BTreeMap::new();
    for (uid, ts) in frames {
        sets.entry(ts - ts.rem_euclid(60)).or_default().insert(uid);
    }
    sets.into_iter().map(|(k, v)| (k, v.len() as u64)).collect()
}

/// Asks a child to stop gracefully (SIGTERM), as an operator or a supervisor would.
pub fn sigterm(child: &std::process::Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -TERM {}", child.id());
}

/// Waits for a child like `wait_with_output`, but fails the test (killing the
/// child) after `limit`, so that a hang is a failure, not a stuck CI run.
pub fn output_within(
    mut child: std::process::Child,
    limit: std::time::Duration,
) -> std::process::Output {
    use std::io::Read;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "still running after {limit:?}: {}",
                String::from_utf8_lossy(&err.join().unwrap())
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    std::process::Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// Reads a child's stderr until Cardinal logs where `--http` listens (`--http
/// 127.0.0.1:0` picks a free port), and returns that address and the lines read.
pub fn http_address(stderr: &mut impl std::io::BufRead) -> (String, String) {
    let mut log = String::new();
    loop {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap() == 0 {
            panic!("cardinal exited without serving: {log}");
        }
        log.push_str(&line);
        if let Some(rest) = line.split("event=\"http_listening\" addr=").nth(1) {
            return (rest.trim().to_string(), log);
        }
    }
}

/// Each stderr line of `child` as it comes, on a channel; all of them kept in the
/// returned log as well.
pub fn stderr_lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(stderr).map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// A child process killed when the test ends, even by a panic.
pub struct Running(pub std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn wait_for(
    rx: &std::sync::mpsc::Receiver<String>,
    log: &mut String,
    needle: &str,
    within: std::time::Duration,
) {
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(std::time::Duration::from_millis(200)) {
            log.push_str(&line);
            log.push('\n');
            if line.contains(needle) {
                return;
            }
        }
    }
    panic!("no {needle:?} within {within:?}:\n{log}");
}

/// For each window of the first file (merged results with sketches): our estimate,
/// the estimate of our sketch as Apache's Python package reads it, and the
/// package's union of the sketches of the other files' records of that window.
pub const HLL_UNION: &str = r#"
import base64, json, sys
import datasketches as ds
merged = [json.loads(l) for l in open(sys.argv[1])]
shares = [[json.loads(l) for l in open(p)] for p in sys.argv[2:]]
out = []
for m in merged:
    key = (m["window"], m["start"])
    u = ds.hll_union(14)
    for share in shares:
        for r in share:
            if (r["window"], r["start"]) == key:
                u.update(ds.hll_sketch.deserialize(base64.b64decode(r["sketch"])))
    ours = ds.hll_sketch.deserialize(base64.b64decode(m["sketch"]))
    theirs = u.get_result(ds.tgt_hll_type.HLL_8)
    mode = lambda s: [l for l in str(s).splitlines() if "Current Mode" in l][0]
    if mode(ours) != mode(theirs):
        same = False
    elif "HLL" in mode(ours):
        # Bytes 8-15 hold the HIP accumulator, an estimator's state, not a register.
        a, b = bytes(ours.serialize_updatable()), bytes(theirs.serialize_updatable())
        same = len(a) == len(b) and a[:8] == b[:8] and a[16:] == b[16:]
    else:
        # Lists and sets of coupons: the table's layout depends on insertion order,
        # the estimate only on the coupons.
        same = ours.get_estimate() == theirs.get_estimate()
    same_registers = same
    out.append([m["window"], m["start"], m["unique_users"], ours.get_estimate(), theirs.get_estimate(), same_registers])
print(json.dumps(out))
"#;

/// `n` lines of about 330 bytes, ordered, fifty a second, where every seventh is
/// cut short (`{"uid":`, rejected as truncated): the text, and the 0-based
/// indexes of the invalid lines, the reference a rejects file is checked against.
pub fn frames_with_every_seventh_invalid(n: u64) -> (String, Vec<u64>) {
    let pad = "p".repeat(300);
    let mut invalid = Vec::new();
    let mut text = String::new();
    for i in 0..n {
        if i % 7 == 3 {
            invalid.push(i);
            text.push_str("{\"uid\":\n");
        } else {
            let ts = 1_468_244_340 + i / 50;
            text.push_str(&format!(
                "{{\"uid\":\"u{i}\",\"ts\":{ts},\"pad\":\"{pad}\"}}\n"
            ));
        }
    }
    (text, invalid)
}

/// Waits until `child` has written more than `bytes` to `file` and a checkpoint
/// exists in `state`: well under way, whatever the machine's speed (a moment
/// chosen by the run's own progress, not by a sleep). `Some` if it finished first.
pub fn until_under_way(
    child: &mut std::process::Child,
    file: &std::path::Path,
    bytes: u64,
    state: &std::path::Path,
) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            eprintln!("finished before it was under way: the restart is not exercised");
            return Some(status);
        }
        let written = std::fs::metadata(file).is_ok_and(|m| m.len() > bytes);
        if written && state.join("checkpoint").exists() {
            return None;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} did not pass {bytes} bytes in 120 s",
            file.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}
