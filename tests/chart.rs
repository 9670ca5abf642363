//! `cardinal chart`: the SVG is read back with Python's XML parser, and its points
//! must be the exact counts worked out from the frames, corrections included.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

/// `(window, start, users, version)` of every point, read with xml.etree.
const POINTS: &str = r#"
import json, sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
out = []
for c in root.iter('{http://www.w3.org/2000/svg}circle'):
    out.append([c.get('data-window'), c.get('data-start'), int(c.get('data-users')), int(c.get('data-version'))])
print(json.dumps(out))
"#;

#[test]
fn the_chart_shows_each_windows_latest_count_and_marks_corrections() {
    let base = 1_468_244_340i64; // 13:39:00Z
    let mut frames: Vec<(String, i64)> = (0..300)
        .map(|i| (format!("u{}", i % 45), base + i))
        .collect();
    // Late for minute 0, within --grace: a correction, version 2, with one more user.
    frames.push(("straggler".into(), base + 10));
    let input: String = frames
        .iter()
        .map(|(u, t)| format!("{{\"uid\":\"{u}\",\"ts\":{t}}}\n"))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let mut count = common::cardinal()
        .args(["count", "-", "--format", "json", "--windows", "minute,hour"])
        .args(["--grace", "10m"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    count
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let results = count.wait_with_output().unwrap();
    assert!(results.status.success());
    let svg = dir.path().join("chart.svg");
    let mut chart = common::cardinal()
        .args(["chart", "-", "-o"])
        .arg(&svg)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    chart
        .stdin
        .take()
        .unwrap()
        .write_all(&results.stdout)
        .unwrap();
    assert!(chart.wait().unwrap().success());

    let o = Command::new("python3")
        .args(["-c", POINTS])
        .arg(&svg)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let points: Vec<(String, String, u64, u32)> = serde_json::from_slice(&o.stdout).unwrap();
    let minutes: BTreeMap<i64, u64> = points
        .iter()
        .filter(|p| p.0 == "minute")
        .map(|p| (p.1.parse::<jiff::Timestamp>().unwrap().as_second(), p.2))
        .collect();
    let want = common::distinct_per_minute(frames.iter().map(|(u, t)| (u.as_str(), *t)));
    assert_eq!(minutes, want);
    let corrected: Vec<_> = points.iter().filter(|p| p.3 > 1).collect();
    assert_eq!(corrected.len(), 1, "{points:?}");
    assert_eq!(corrected[0].1, "2016-07-11T13:39:00Z");
    // The hour 13:00 holds frames 13:39:00-13:43:59; all of them are in one hour.
    let hours: Vec<_> = points.iter().filter(|p| p.0 == "hour").collect();
    assert_eq!(hours.len(), 1);
    assert_eq!(hours[0].2, 46, "u0..u44 and the straggler");
}

#[test]
fn png_is_refused_with_a_way_out() {
    let o = common::cardinal()
        .args(["chart", "-", "-o", "chart.png"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("only SVG") && err.contains("rsvg-convert"),
        "{err}"
    );
}
