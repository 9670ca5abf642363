//! Emitter: renders a window result as one line of text or JSON.
//!
//! The JSON field names are a public contract (see docs/guide/output.md): `window`, `start`,
//! `end`, `unique_users`, `frames`, `approx`, `final`, `version`, and `rse` for
//! approximate counts. `start` and `end` are RFC 3339, `Z` in UTC.

use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64_STANDARD;
use serde::Serialize;

use crate::aggregator::WindowResult;
use crate::counter::CounterState;
use crate::window::Calendar;

/// Output format, `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One readable line per window.
    Text,
    /// One JSON object per line.
    Json,
}

/// The public JSON record. Field order is the documented order.
#[derive(Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct Record {
    pub window: String,
    pub start: String,
    pub end: String,
    pub unique_users: u64,
    pub frames: u64,
    pub approx: bool,
    #[serde(rename = "final")]
    pub is_final: bool,
    pub version: u32,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rse: Option<f64>,
    /// `--emit-sketch`: the window's DataSketches HLL sketch, standard binary, base64.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sketch: Option<String>,
}

impl Record {
    pub fn new(w: &WindowResult, cal: &Calendar) -> Record {
        Record {
            window: w.granularity.name().to_string(),
            start: cal.format(w.span.start),
            end: cal.format(w.span.end),
            unique_users: w.unique_users,
            frames: w.frames,
            approx: w.rse.is_some(),
            is_final: w.is_final,
            version: w.version,
            rse: w.rse.map(|r| (r * 1e6).round() / 1e6),
            sketch: match &w.state {
                Some(CounterState::Hll(bytes)) => Some(BASE64_STANDARD.encode(bytes)),
                _ => None,
            },
        }
    }

    /// The key a compacted topic keeps the latest version under: `WINDOW/START`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.window, self.start)
    }
}

/// Renders `w` into `out`, followed by a newline.
pub fn render(format: Format, w: &WindowResult, cal: &Calendar, out: &mut String) {
    let r = Record::new(w, cal);
    match format {
        Format::Json => {
            out.push_str(&serde_json::to_string(&r).expect("a record always serializes"));
        }
        Format::Text => {
            let _ = write!(
                out,
                "{:<6} {} .. {}  unique_users={:<8} frames={}",
                r.window, r.start, r.end, r.unique_users, r.frames
            );
            if let Some(rse) = r.rse {
                let _ = write!(out, "  approx ±{:.2}%", rse * 100.0);
            }
            if r.version > 1 {
                let _ = write!(out, "  correction v{}", r.version);
            }
        }
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::{Granularity, Span};

    fn result(rse: Option<f64>) -> WindowResult {
        WindowResult {
            granularity: Granularity::Minute,
            span: Span {
                start: 1_468_244_340,
                end: 1_468_244_400,
            },
            unique_users: 16193,
            frames: 16250,
            version: 1,
            is_final: true,
            rse,
            state: None,
        }
    }

    #[test]
    fn json_matches_the_documented_example() {
        let mut s = String::new();
        render(Format::Json, &result(None), &Calendar::utc(), &mut s);
        assert_eq!(
            s,
            "{\"window\":\"minute\",\"start\":\"2016-07-11T13:39:00Z\",\"end\":\"2016-07-11T13:40:00Z\",\"unique_users\":16193,\"frames\":16250,\"approx\":false,\"final\":true,\"version\":1}\n"
        );
    }

    #[test]
    fn approximate_records_carry_rse_and_zone_offsets() {
        let mut s = String::new();
        let cal = Calendar::for_zone("Europe/Zurich").unwrap();
        render(Format::Json, &result(Some(0.0081234567)), &cal, &mut s);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["approx"], true);
        assert_eq!(v["rse"], 0.008123);
        assert_eq!(v["start"], "2016-07-11T15:39:00+02:00");
    }

    #[test]
    fn text_is_one_readable_line() {
        let mut s = String::new();
        render(Format::Text, &result(None), &Calendar::utc(), &mut s);
        assert!(
            s.starts_with(
                "minute 2016-07-11T13:39:00Z .. 2016-07-11T13:40:00Z  unique_users=16193"
            ),
            "{s}"
        );
        assert_eq!(s.lines().count(), 1);
    }
}
