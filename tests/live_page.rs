//! The `--http` live page in a real browser: headless Chromium loads it during a
//! run, its scripts fetch the chart and the state, and the numbers in the rendered
//! DOM must be the exact counts worked out from the frames. A screenshot is kept
//! in `target/test-artifacts/live-page.png`.

mod common;

use std::collections::BTreeMap;
use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Points `(window, start, users)` of the rendered DOM, read with Python's HTML parser.
const POINTS: &str = r#"
import json, sys
from html.parser import HTMLParser
points = []
class P(HTMLParser):
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "circle" and "data-users" in a:
            points.append([a["data-window"], a["data-start"], int(a["data-users"])])
P().feed(sys.stdin.read())
print(json.dumps(points))
"#;

fn get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    all.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

fn chromium(args: &[&str]) -> std::process::Output {
    Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .args(["--virtual-time-budget=5000", "--window-size=1000,1000"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("chromium: {e} (scripts/test.sh installs it)"))
}

#[test]
fn the_live_page_shows_the_final_windows_in_a_browser() {
    let base = 1_468_244_340i64; // 13:39:00Z
    let frames: Vec<(String, i64)> = (0..600)
        // Minute m has 10 + 5m users (more than 60 would need more frames).
        .map(|i| (format!("u{}", i % (10 + 5 * (i / 60))), base + i))
        .collect();
    let mut run = common::cardinal()
        .args([
            "count",
            "-",
            "--http",
            "127.0.0.1:0",
            "--windows",
            "minute,hour",
        ])
        .env("RUST_LOG", "cardinal=info")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(run.stderr.take().unwrap());
    let (addr, _) = common::http_address(&mut stderr);
    let mut stdin = run.stdin.take().unwrap();
    for (u, t) in &frames {
        writeln!(stdin, "{{\"uid\":\"{u}\",\"ts\":{t}}}").unwrap();
    }
    writeln!(stdin, "{{\"uid\":\n{{\"uid\":").unwrap(); // two truncated frames
    stdin.flush().unwrap();
    // stdin stays open: the run, and its page, go on until the test is done.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let state: serde_json::Value =
            serde_json::from_str(&get(&addr, "/api/state")).unwrap_or_default();
        if state["frames_counted"] == 600 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never counted everything: {state}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let url = format!("http://{addr}/");
    let dom = chromium(&["--dump-dom", &url]);
    assert!(
        dom.status.success(),
        "{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let artifacts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let png = artifacts.join("live-page.png");
    let _ = std::fs::remove_file(&png);
    let shot = chromium(&[&format!("--screenshot={}", png.display()), &url]);
    drop(stdin);
    assert!(run.wait().unwrap().success());
    assert!(
        shot.status.success(),
        "{}",
        String::from_utf8_lossy(&shot.stderr)
    );
    assert!(
        std::fs::metadata(&png).unwrap().len() > 10_000,
        "an empty screenshot"
    );

    let mut python = Command::new("python3")
        .args(["-c", POINTS])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    python.stdin.take().unwrap().write_all(&dom.stdout).unwrap();
    let parsed = python.wait_with_output().unwrap();
    let points: Vec<(String, String, u64)> = serde_json::from_slice(&parsed.stdout).unwrap();
    let shown: BTreeMap<i64, u64> = points
        .iter()
        .filter(|p| p.0 == "minute")
        .map(|p| (p.1.parse::<jiff::Timestamp>().unwrap().as_second(), p.2))
        .collect();
    // The watermark is at 594 s (the newest frame less 5 s): minutes 0-8 are final.
    let want: BTreeMap<i64, u64> =
        common::distinct_per_minute(frames.iter().map(|(u, t)| (u.as_str(), *t)))
            .into_iter()
            .filter(|(start, _)| start + 60 <= base + 594)
            .collect();
    assert_eq!(want.len(), 9);
    assert_eq!(shown, want, "the page against the frames");
    let page = String::from_utf8_lossy(&dom.stdout);
    assert!(page.contains(r#"<b id="counted">600</b>"#), "{page}");
    // The event-time lag in a unit a person reads: the watermark (base + 594) is
    // about ten years behind the wall clock.
    let lag = page
        .split_once(r#"<b id="lag">"#)
        .and_then(|(_, rest)| rest.split_once("</b>"))
        .map(|(text, _)| text.to_string())
        .unwrap_or_default();
    let years = (jiff::Timestamp::now().as_second() - (base + 594)) as f64 / (365.25 * 86400.0);
    let shown_years: f64 = lag
        .strip_suffix(" years")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("event-time lag {lag:?}, not in years"));
    assert!(
        (shown_years - years).abs() < 0.11,
        "{lag} against {years:.2} years"
    );
    assert!(
        page.contains("<tr><td>truncated</td><td>2</td></tr>"),
        "the rejects table: {page}"
    );
}
