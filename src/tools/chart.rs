//! Charts of results: one panel per granularity, unique users over window start,
//! corrections marked. `cardinal chart` draws results read back from JSON lines
//! (`count --format json`, or `consume` on the results topic); the `--http` live
//! page draws the windows emitted lately with the same code.
//!
//! Hand-written SVG rather than a plotting crate: each point carries its window,
//! start, users and version (`data-*` attributes and a `<title>` tooltip), so a
//! reader can hover for the exact number and a test can read the numbers back.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::BufRead;

use thiserror::Error;

use crate::emitter::Record;
use crate::window::Granularity;

#[derive(Debug, Error)]
pub enum ChartError {
    #[error("{source_name}:{line}: not a result record ({error})")]
    Record {
        source_name: String,
        line: u64,
        error: String,
    },
    #[error("cannot read {source_name}: {error}")]
    Read { source_name: String, error: String },
}

/// One point: the latest version of a window.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub start_unix: i64,
    pub start: String,
    pub users: u64,
    pub version: u32,
}

/// The latest version of each window, per granularity, in order of start.
pub type Series = BTreeMap<Granularity, Vec<Point>>;

/// Reads JSON result lines; blank lines are skipped, anything else must be a record.
pub fn read(reader: impl BufRead, source_name: &str) -> Result<Series, ChartError> {
    let mut records = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| ChartError::Read {
            source_name: source_name.to_string(),
            error: e.to_string(),
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |error: String| ChartError::Record {
            source_name: source_name.to_string(),
            line: i as u64 + 1,
            error,
        };
        let r: Record = serde_json::from_str(&line).map_err(|e| bad(e.to_string()))?;
        records.push(r);
    }
    series(&records).map_err(|(i, e)| ChartError::Record {
        source_name: source_name.to_string(),
        line: i as u64 + 1,
        error: e,
    })
}

/// Groups records into series, keeping each window's highest version. The error
/// names the index of the record that does not fit.
pub fn series(records: &[Record]) -> Result<Series, (usize, String)> {
    let mut latest: BTreeMap<(Granularity, i64), Point> = BTreeMap::new();
    for (i, r) in records.iter().enumerate() {
        let g: Granularity = r.window.parse().map_err(|e| (i, e))?;
        let start: jiff::Timestamp = r
            .start
            .parse()
            .map_err(|e| (i, format!("bad start {:?}: {e}", r.start)))?;
        let point = Point {
            start_unix: start.as_second(),
            start: r.start.clone(),
            users: r.unique_users,
            version: r.version,
        };
        let slot = latest.entry((g, point.start_unix)).or_insert(point.clone());
        if point.version >= slot.version {
            *slot = point;
        }
    }
    let mut out = Series::new();
    for ((g, _), p) in latest {
        out.entry(g).or_default().push(p);
    }
    Ok(out)
}

const WIDTH: f64 = 960.0;
const PANEL: f64 = 200.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 30.0;

/// The SVG: one panel per granularity present, stacked.
pub fn svg(series: &Series) -> String {
    let height = (series.len().max(1) as f64) * (PANEL + TOP + BOTTOM);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    if series.is_empty() {
        let _ = write!(s, r#"<text x="{LEFT}" y="{TOP}">no results yet</text>"#);
    }
    for (i, (g, points)) in series.iter().enumerate() {
        panel(&mut s, *g, points, i as f64 * (PANEL + TOP + BOTTOM));
    }
    s.push_str("</svg>\n");
    s
}

fn panel(s: &mut String, g: Granularity, points: &[Point], y0: f64) {
    let first = points.first().map_or(0, |p| p.start_unix);
    let last = points.last().map_or(0, |p| p.start_unix);
    let top_users = points.iter().map(|p| p.users).max().unwrap_or(0).max(1);
    let plot_w = WIDTH - LEFT - RIGHT;
    let x = |t: i64| {
        if last == first {
            LEFT + plot_w / 2.0
        } else {
            LEFT + (t - first) as f64 / (last - first) as f64 * plot_w
        }
    };
    let y = |u: u64| y0 + TOP + PANEL - u as f64 / top_users as f64 * PANEL;
    let corrections = points.iter().filter(|p| p.version > 1).count();
    let _ = write!(
        s,
        r#"<g class="panel" data-window="{name}"><text x="{LEFT}" y="{title_y}" font-weight="bold">{name}: unique users per window ({n} windows{corr})</text>"#,
        name = g.name(),
        title_y = y0 + TOP - 10.0,
        n = points.len(),
        corr = if corrections > 0 {
            format!(", {corrections} corrected")
        } else {
            String::new()
        },
    );
    // Axes, and the top of the y axis.
    let _ = write!(
        s,
        r##"<line x1="{LEFT}" y1="{b}" x2="{r}" y2="{b}" stroke="#888"/><line x1="{LEFT}" y1="{t}" x2="{LEFT}" y2="{b}" stroke="#888"/><text x="{lx}" y="{ty}" text-anchor="end">{top_users}</text><text x="{lx}" y="{b}" text-anchor="end">0</text>"##,
        b = y0 + TOP + PANEL,
        t = y0 + TOP,
        r = WIDTH - RIGHT,
        lx = LEFT - 6.0,
        ty = y0 + TOP + 4.0,
    );
    if let (Some(f), Some(l)) = (points.first(), points.last()) {
        let _ = write!(
            s,
            r#"<text x="{LEFT}" y="{ly}">{fs}</text><text x="{r}" y="{ly}" text-anchor="end">{ls}</text>"#,
            ly = y0 + TOP + PANEL + 18.0,
            r = WIDTH - RIGHT,
            fs = escape(&f.start),
            ls = escape(&l.start),
        );
    }
    let line: Vec<String> = points
        .iter()
        .map(|p| format!("{:.1},{:.1}", x(p.start_unix), y(p.users)))
        .collect();
    let _ = write!(
        s,
        r##"<polyline fill="none" stroke="#3366cc" stroke-width="1.5" points="{}"/>"##,
        line.join(" ")
    );
    for p in points {
        let (fill, r) = if p.version > 1 {
            ("#dd4444", 4.0)
        } else {
            ("#3366cc", 2.5)
        };
        let _ = write!(
            s,
            r#"<circle class="point" cx="{cx:.1}" cy="{cy:.1}" r="{r}" fill="{fill}" data-window="{w}" data-start="{st}" data-users="{u}" data-version="{v}"><title>{w} {st}: {u} users{corr}</title></circle>"#,
            cx = x(p.start_unix),
            cy = y(p.users),
            w = g.name(),
            st = escape(&p.start),
            u = p.users,
            v = p.version,
            corr = if p.version > 1 {
                format!(" (version {})", p.version)
            } else {
                String::new()
            },
        );
    }
    s.push_str("</g>");
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(window: &str, start: &str, users: u64, version: u32) -> Record {
        Record {
            window: window.into(),
            start: start.into(),
            end: start.into(),
            unique_users: users,
            frames: users,
            approx: false,
            is_final: true,
            version,
            rse: None,
            sketch: None,
        }
    }

    #[test]
    fn the_latest_version_of_each_window_is_drawn_and_marked() {
        let s = series(&[
            record("minute", "2016-07-11T13:40:00Z", 5, 1),
            record("minute", "2016-07-11T13:39:00Z", 7, 1),
            record("minute", "2016-07-11T13:39:00Z", 9, 2),
            record("hour", "2016-07-11T15:00:00+02:00", 12, 1),
        ])
        .unwrap();
        let m = &s[&Granularity::Minute];
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].users, m[0].version), (9, 2));
        let svg = svg(&s);
        assert!(
            svg.contains(r#"data-start="2016-07-11T13:39:00Z" data-users="9" data-version="2""#)
        );
        assert!(!svg.contains(r#"data-users="7""#));
        assert!(svg.contains("1 corrected"));
        assert_eq!(s[&Granularity::Hour][0].start_unix, 1_468_242_000);
    }

    #[test]
    fn a_line_that_is_not_a_record_is_named() {
        let e = read("{\"window\":\"minute\"}\n".as_bytes(), "r.jsonl").unwrap_err();
        assert!(
            e.to_string().starts_with("r.jsonl:1: not a result record"),
            "{e}"
        );
    }
}
