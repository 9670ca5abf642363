//! Calendar windows: which minute, hour, day, ISO week, month and year a timestamp
//! falls in, in a given time zone.
//!
//! Windows are half-open `[start, end)` in unix seconds. Minute and hour windows
//! start where the local clock shows a whole minute or hour, or where the zone's
//! offset changes, so an hour can be cut short by a 30-minute DST change. Day and
//! longer windows start at local midnight and follow DST, so a day can last 23 or
//! 25 hours; weeks are ISO weeks starting on Monday. The calendar arithmetic is
//! jiff's; the UTC minute, hour, day and week fast paths are plain integer
//! arithmetic because every frame asks for them.

use std::fmt;
use std::str::FromStr;

use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan, Zoned};
use serde::{Deserialize, Serialize};

/// A window length. The order is the emission order for windows that end together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Granularity {
    Minute,
    Hour,
    Day,
    Week,
    Month,
    Year,
}

impl Granularity {
    pub const ALL: [Granularity; 6] = [
        Granularity::Minute,
        Granularity::Hour,
        Granularity::Day,
        Granularity::Week,
        Granularity::Month,
        Granularity::Year,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Granularity::Minute => "minute",
            Granularity::Hour => "hour",
            Granularity::Day => "day",
            Granularity::Week => "week",
            Granularity::Month => "month",
            Granularity::Year => "year",
        }
    }
}

impl fmt::Display for Granularity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Granularity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Granularity::ALL
            .into_iter()
            .find(|g| g.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                format!(
                    "unknown window {s:?}: expected one of minute, hour, day, week, month, year"
                )
            })
    }
}

/// A half-open interval of unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Span {
    pub start: i64,
    pub end: i64,
}

impl Span {
    #[inline(always)]
    pub fn contains(&self, ts: i64) -> bool {
        self.start <= ts && ts < self.end
    }
}

/// Window arithmetic in one time zone.
#[derive(Debug, Clone)]
pub struct Calendar {
    tz: TimeZone,
    utc: bool,
}

const DAY: i64 = 86_400;

impl Calendar {
    pub fn utc() -> Calendar {
        Calendar {
            tz: TimeZone::UTC,
            utc: true,
        }
    }

    /// `name` is an IANA zone such as `Europe/Zurich`, or `UTC`.
    pub fn for_zone(name: &str) -> Result<Calendar, jiff::Error> {
        let tz = TimeZone::get(name)?;
        let utc = tz.iana_name() == Some("UTC") || tz.iana_name() == Some("Etc/UTC");
        Ok(Calendar { tz, utc })
    }

    pub fn zone_name(&self) -> &str {
        self.tz.iana_name().unwrap_or("UTC")
    }

    /// The largest `ts` whose windows of every granularity in `grans` can be
    /// represented, start and end, in this zone (jiff's range ends late in 9999).
    /// The smallest is 0: every zone can represent the windows of the epoch.
    pub fn max_ts(&self, grans: &[Granularity]) -> i64 {
        let ok = |ts: i64| grans.iter().all(|&g| self.checked_window(g, ts).is_some());
        // Representability is monotone in ts: a window fails only when its end
        // runs past the end of jiff's time, and later windows end later.
        let (mut lo, mut hi) = (0i64, crate::parser::MAX_TS + 1);
        if ok(crate::parser::MAX_TS) {
            return crate::parser::MAX_TS;
        }
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if ok(mid) { lo = mid } else { hi = mid }
        }
        lo
    }

    /// The window of granularity `g` that contains `ts`, if it can be represented.
    pub fn checked_window(&self, g: Granularity, ts: i64) -> Option<Span> {
        let span = if self.utc && g <= Granularity::Week {
            self.window(g, ts)
        } else {
            self.window_zoned(g, ts)?
        };
        let fits = |t: i64| Timestamp::from_second(t).is_ok();
        (fits(span.start) && fits(span.end)).then_some(span)
    }

    /// The window of granularity `g` that contains `ts`. `ts` must be within
    /// `0..=max_ts(..)` for `g`, which the aggregator checks before it asks.
    pub fn window(&self, g: Granularity, ts: i64) -> Span {
        if self.utc {
            match g {
                Granularity::Minute => return fixed(ts, 60, 0),
                Granularity::Hour => return fixed(ts, 3600, 0),
                Granularity::Day => return fixed(ts, DAY, 0),
                // 1970-01-01 was a Thursday: Mondays are 4 days after multiples of 7 days.
                Granularity::Week => return fixed(ts, 7 * DAY, 4 * DAY),
                Granularity::Month | Granularity::Year => {}
            }
        }
        self.window_zoned(g, ts)
            .expect("ts within the calendar's range, checked by the aggregator")
    }

    fn window_zoned(&self, g: Granularity, ts: i64) -> Option<Span> {
        match g {
            Granularity::Minute => return self.clock_window(ts, 60),
            Granularity::Hour => return self.clock_window(ts, 3600),
            _ => {}
        }
        let w = self.date_window(g, ts)?;
        // Where the clock goes back across midnight (America/St_Johns at 00:01 until
        // 2011, Antarctica/Casey from 02:00 to 23:00 in 2010), the instants after the
        // first midnight read the previous date again. They belong to the day that
        // has begun, so that days tile time and each contains its instants.
        if ts >= w.end {
            self.date_window(g, w.end)
        } else {
            Some(w)
        }
    }

    /// The day, week, month or year of `ts`'s local date, from the first instant of
    /// its first date to the first instant of the next one's.
    fn date_window(&self, g: Granularity, ts: i64) -> Option<Span> {
        let zdt = Timestamp::from_second(ts).ok()?.to_zoned(self.tz.clone());
        let secs = |z: &Zoned| z.timestamp().as_second();
        let midnight = |d: jiff::civil::Date| {
            d.to_zoned(self.tz.clone())
                .and_then(|z| z.start_of_day())
                .map(|z| secs(&z))
                .ok()
        };
        Some(match g {
            // Not dates: the clock's (callers go there directly).
            Granularity::Minute => return self.clock_window(ts, 60),
            Granularity::Hour => return self.clock_window(ts, 3600),
            Granularity::Day => {
                let d = zdt.date();
                Span {
                    start: midnight(d)?,
                    end: midnight(d.tomorrow().ok()?)?,
                }
            }
            Granularity::Week => {
                let d = zdt.date();
                let monday = d
                    .checked_sub(i64::from(d.weekday().to_monday_zero_offset()).days())
                    .ok()?;
                Span {
                    start: midnight(monday)?,
                    end: midnight(monday.checked_add(7.days()).ok()?)?,
                }
            }
            Granularity::Month => {
                let first = zdt.date().first_of_month();
                Span {
                    start: midnight(first)?,
                    end: midnight(first.checked_add(1.month()).ok()?)?,
                }
            }
            Granularity::Year => {
                let first = zdt.date().first_of_year();
                Span {
                    start: midnight(first)?,
                    end: midnight(first.checked_add(1.year()).ok()?)?,
                }
            }
        })
    }

    /// A minute (`len` 60) or hour (`len` 3600) window in a zone. Its boundaries are
    /// the instants at which the local clock reads a whole minute (hour), and the
    /// instants at which the zone's UTC offset changes: the window runs from the
    /// latest boundary at or before `ts` to the earliest one after it. Between two
    /// offset changes the clock is `ts + offset`, so the clock's boundaries come from
    /// the offset at `ts`, and the changes nearest `ts` cut them short. With
    /// whole-hour DST this gives both 02:00 hours of a fall-back and skips the
    /// spring-forward hour; a 30-minute change (Australia/Lord_Howe) cuts an hour
    /// at the half hour; an offset with seconds (Africa/Monrovia, -00:44:30 until
    /// 1972) starts its minutes where its clock reads :00 seconds.
    fn clock_window(&self, ts: i64, len: i64) -> Option<Span> {
        let at = Timestamp::from_second(ts).ok()?;
        let off = i64::from(self.tz.to_offset(at).seconds());
        let start = ts - (ts + off).rem_euclid(len);
        let end = start + len;
        Some(Span {
            start: self.offset_change_in(start, ts).unwrap_or(start),
            end: self.offset_change_after(ts, end).unwrap_or(end),
        })
    }

    /// The latest instant in `(after, ts]` at which the zone's offset changes.
    /// jiff lists every transition of the tz database, some of which change only the
    /// abbreviation or the DST flag: those are no boundary.
    fn offset_change_in(&self, after: i64, ts: i64) -> Option<i64> {
        // `preceding` yields transitions strictly before its argument.
        let past = Timestamp::from_second(ts.checked_add(1)?).ok()?;
        self.tz
            .preceding(past)
            .take_while(|tr| tr.timestamp().as_second() > after)
            .find(|tr| self.changes_offset(tr))
            .map(|tr| tr.timestamp().as_second())
    }

    /// The earliest instant in `(ts, before)` at which the zone's offset changes.
    fn offset_change_after(&self, ts: i64, before: i64) -> Option<i64> {
        self.tz
            .following(Timestamp::from_second(ts).ok()?)
            .take_while(|tr| tr.timestamp().as_second() < before)
            .find(|tr| self.changes_offset(tr))
            .map(|tr| tr.timestamp().as_second())
    }

    fn changes_offset(&self, tr: &jiff::tz::TimeZoneTransition<'_>) -> bool {
        let before = Timestamp::from_second(tr.timestamp().as_second() - 1);
        before.is_ok_and(|b| self.tz.to_offset(b) != tr.offset())
    }

    /// RFC 3339: `Z` in UTC, the zone's offset at that instant otherwise. RFC 3339
    /// offsets are whole minutes, so where the zone's offset has seconds (local mean
    /// times, e.g. Africa/Monrovia's -00:44:30 until 1972) the same instant is
    /// printed in UTC, with `Z`.
    pub fn format(&self, ts: i64) -> String {
        let Ok(t) = Timestamp::from_second(ts) else {
            // Unreachable for window bounds (the aggregator checks them); never a panic.
            return ts.to_string();
        };
        if self.utc || self.tz.to_offset(t).seconds() % 60 != 0 {
            t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
        } else {
            t.to_zoned(self.tz.clone())
                .strftime("%Y-%m-%dT%H:%M:%S%:z")
                .to_string()
        }
    }
}

#[inline(always)]
fn fixed(ts: i64, len: i64, phase: i64) -> Span {
    let start = ts - (ts - phase).rem_euclid(len);
    Span {
        start,
        end: start + len,
    }
}

/// A set of granularities, as a bitmask.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GranularitySet(u8);

impl GranularitySet {
    pub fn insert(&mut self, g: Granularity) {
        self.0 |= 1 << g as u8;
    }
    pub fn contains(&self, g: Granularity) -> bool {
        self.0 & (1 << g as u8) != 0
    }
    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }
    pub fn len(&self) -> usize {
        self.0.count_ones() as usize
    }
    pub fn iter(self) -> impl Iterator<Item = Granularity> {
        Granularity::ALL
            .into_iter()
            .filter(move |g| self.contains(*g))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> i64 {
        s.parse::<Timestamp>().unwrap().as_second()
    }

    fn show(cal: &Calendar, g: Granularity, at: &str) -> (String, String) {
        let w = cal.window(g, ts(at));
        (cal.format(w.start), cal.format(w.end))
    }

    fn pair(a: &str, b: &str) -> (String, String) {
        (a.to_string(), b.to_string())
    }

    #[test]
    fn utc_fast_paths_match_jiff() {
        let cal = Calendar::utc();
        for t in [
            0,
            1,
            59,
            60,
            86_399,
            1_468_244_384,
            1_700_000_000,
            4_102_444_799,
        ] {
            for g in [
                Granularity::Minute,
                Granularity::Hour,
                Granularity::Day,
                Granularity::Week,
            ] {
                assert_eq!(
                    cal.window(g, t),
                    cal.window_zoned(g, t).unwrap(),
                    "{g} at {t}"
                );
            }
        }
    }

    #[test]
    fn sample_minute_and_week_in_utc() {
        let cal = Calendar::utc();
        assert_eq!(
            show(&cal, Granularity::Minute, "2016-07-11T13:39:44Z"),
            pair("2016-07-11T13:39:00Z", "2016-07-11T13:40:00Z")
        );
        // 2016-07-11 was a Monday.
        assert_eq!(
            show(&cal, Granularity::Week, "2016-07-17T23:59:59Z"),
            pair("2016-07-11T00:00:00Z", "2016-07-18T00:00:00Z")
        );
    }

    #[test]
    fn zurich_spring_forward_day_is_23_hours() {
        let cal = Calendar::for_zone("Europe/Zurich").unwrap();
        let w = cal.window(Granularity::Day, ts("2024-03-31T12:00:00Z"));
        assert_eq!(w.end - w.start, 23 * 3600);
        assert_eq!(
            (cal.format(w.start), cal.format(w.end)),
            pair("2024-03-31T00:00:00+01:00", "2024-04-01T00:00:00+02:00")
        );
        // 01:59:59 CET is followed by 03:00 CEST: the hour after 01:00 starts at 03:00.
        assert_eq!(
            show(&cal, Granularity::Hour, "2024-03-31T00:30:00Z"),
            pair("2024-03-31T01:00:00+01:00", "2024-03-31T03:00:00+02:00")
        );
    }

    #[test]
    fn zurich_fall_back_day_is_25_hours_with_two_2am_hours() {
        let cal = Calendar::for_zone("Europe/Zurich").unwrap();
        let w = cal.window(Granularity::Day, ts("2024-10-27T12:00:00Z"));
        assert_eq!(w.end - w.start, 25 * 3600);
        assert_eq!(
            show(&cal, Granularity::Hour, "2024-10-27T00:30:00Z"),
            pair("2024-10-27T02:00:00+02:00", "2024-10-27T02:00:00+01:00")
        );
        assert_eq!(
            show(&cal, Granularity::Hour, "2024-10-27T01:30:00Z"),
            pair("2024-10-27T02:00:00+01:00", "2024-10-27T03:00:00+01:00")
        );
    }

    #[test]
    fn local_midnight_not_utc_midnight() {
        let cal = Calendar::for_zone("Europe/Zurich").unwrap();
        // 23:30 UTC on Jan 1 is already Jan 2 in Zurich.
        assert_eq!(
            show(&cal, Granularity::Day, "2024-01-01T23:30:00Z"),
            pair("2024-01-02T00:00:00+01:00", "2024-01-03T00:00:00+01:00")
        );
        assert_eq!(
            show(&cal, Granularity::Year, "2023-12-31T23:30:00Z"),
            pair("2024-01-01T00:00:00+01:00", "2025-01-01T00:00:00+01:00")
        );
    }

    #[test]
    fn iso_week_53_spans_the_new_year() {
        // 2020 has ISO week 53: Monday 2020-12-28 to Sunday 2021-01-03.
        let cal = Calendar::utc();
        for at in [
            "2020-12-28T00:00:00Z",
            "2021-01-01T12:00:00Z",
            "2021-01-03T23:59:59Z",
        ] {
            assert_eq!(
                show(&cal, Granularity::Week, at),
                pair("2020-12-28T00:00:00Z", "2021-01-04T00:00:00Z"),
                "{at}"
            );
        }
        let zurich = Calendar::for_zone("Europe/Zurich").unwrap();
        assert_eq!(
            show(&zurich, Granularity::Week, "2021-01-03T22:59:59Z"),
            pair("2020-12-28T00:00:00+01:00", "2021-01-04T00:00:00+01:00")
        );
    }

    #[test]
    fn month_ends_and_leap_years() {
        let cal = Calendar::utc();
        assert_eq!(
            show(&cal, Granularity::Month, "2024-02-29T23:59:59Z"),
            pair("2024-02-01T00:00:00Z", "2024-03-01T00:00:00Z")
        );
        assert_eq!(
            show(&cal, Granularity::Month, "2023-02-28T12:00:00Z"),
            pair("2023-02-01T00:00:00Z", "2023-03-01T00:00:00Z")
        );
        assert_eq!(
            show(&cal, Granularity::Month, "2024-12-31T23:59:59Z"),
            pair("2024-12-01T00:00:00Z", "2025-01-01T00:00:00Z")
        );
        let y = cal.window(Granularity::Year, ts("2024-06-01T00:00:00Z"));
        assert_eq!(y.end - y.start, 366 * DAY);
        let y = cal.window(Granularity::Year, ts("2100-06-01T00:00:00Z"));
        assert_eq!(y.end - y.start, 365 * DAY, "2100 is not a leap year");
    }

    #[test]
    fn half_hour_zone_hours_start_at_half_past_utc() {
        let cal = Calendar::for_zone("Asia/Kolkata").unwrap();
        assert_eq!(
            show(&cal, Granularity::Hour, "2024-01-01T10:10:00Z"),
            pair("2024-01-01T15:00:00+05:30", "2024-01-01T16:00:00+05:30")
        );
        assert_eq!(
            show(&cal, Granularity::Minute, "2024-01-01T10:10:30Z"),
            pair("2024-01-01T15:40:00+05:30", "2024-01-01T15:41:00+05:30")
        );
    }

    fn span(start: &str, end: &str) -> Span {
        Span {
            start: ts(start),
            end: ts(end),
        }
    }

    /// The hour windows from `from` up to `to`, each starting where the last ended.
    fn hours_between(cal: &Calendar, from: i64, to: i64) -> Vec<Span> {
        let mut out = vec![cal.window(Granularity::Hour, from)];
        while out.last().unwrap().end < to {
            out.push(cal.window(Granularity::Hour, out.last().unwrap().end));
        }
        out
    }

    // The expected spans below are worked out by hand from the tz database's rules,
    // not from this module. Australia/Lord_Howe keeps +10:30 in winter and +11:00 in
    // summer. 2024-04-07: at 02:00 +11:00 (2024-04-06T15:00Z) the clock goes back to
    // 01:30 +10:30, so 01:00 +11:00 ends at the change after one hour, 01:30 to
    // 02:00 +10:30 is a half-hour window, and the local day lasts 24.5 hours.
    #[test]
    fn lord_howe_fall_back_half_hour() {
        let cal = Calendar::for_zone("Australia/Lord_Howe").unwrap();
        let hour = |at: &str| cal.window(Granularity::Hour, ts(at));
        assert_eq!(
            hour("2024-04-06T14:59:59Z"),
            span("2024-04-06T14:00:00Z", "2024-04-06T15:00:00Z")
        );
        for at in ["2024-04-06T15:00:00Z", "2024-04-06T15:29:59Z"] {
            assert_eq!(
                hour(at),
                span("2024-04-06T15:00:00Z", "2024-04-06T15:30:00Z"),
                "{at}"
            );
        }
        assert_eq!(
            hour("2024-04-06T15:30:00Z"),
            span("2024-04-06T15:30:00Z", "2024-04-06T16:30:00Z")
        );
        assert_eq!(
            show(&cal, Granularity::Hour, "2024-04-06T15:10:00Z"),
            pair("2024-04-07T01:30:00+10:30", "2024-04-07T02:00:00+10:30")
        );
        assert_eq!(
            show(&cal, Granularity::Hour, "2024-04-06T14:10:00Z"),
            pair("2024-04-07T01:00:00+11:00", "2024-04-07T01:30:00+10:30")
        );
        // The local day: 00:00 +11:00 to 00:00 +10:30 the next day. Two hours at
        // +11:00, the half hour, then 22 hours at +10:30.
        let day = cal.window(Granularity::Day, ts("2024-04-07T00:00:00Z"));
        assert_eq!(day, span("2024-04-06T13:00:00Z", "2024-04-07T13:30:00Z"));
        let hours = hours_between(&cal, day.start, day.end);
        assert_eq!(hours.len(), 25);
        assert_eq!(hours.last().unwrap().end, day.end);
        assert_eq!(
            hours[..4],
            [
                span("2024-04-06T13:00:00Z", "2024-04-06T14:00:00Z"),
                span("2024-04-06T14:00:00Z", "2024-04-06T15:00:00Z"),
                span("2024-04-06T15:00:00Z", "2024-04-06T15:30:00Z"),
                span("2024-04-06T15:30:00Z", "2024-04-06T16:30:00Z"),
            ]
        );
    }

    // 2024-10-06: at 02:00 +10:30 (2024-10-05T15:30Z) the clock goes forward to
    // 02:30 +11:00, so 01:00 +10:30 ends at the change after one hour, 02:30 to
    // 03:00 +11:00 is a half-hour window, and the local day lasts 23.5 hours.
    #[test]
    fn lord_howe_spring_forward_half_hour() {
        let cal = Calendar::for_zone("Australia/Lord_Howe").unwrap();
        let hour = |at: &str| cal.window(Granularity::Hour, ts(at));
        assert_eq!(
            hour("2024-10-05T15:29:59Z"),
            span("2024-10-05T14:30:00Z", "2024-10-05T15:30:00Z")
        );
        assert_eq!(
            hour("2024-10-05T15:30:00Z"),
            span("2024-10-05T15:30:00Z", "2024-10-05T16:00:00Z")
        );
        assert_eq!(
            hour("2024-10-05T16:00:00Z"),
            span("2024-10-05T16:00:00Z", "2024-10-05T17:00:00Z")
        );
        assert_eq!(
            show(&cal, Granularity::Hour, "2024-10-05T15:00:00Z"),
            pair("2024-10-06T01:00:00+10:30", "2024-10-06T02:30:00+11:00")
        );
        assert_eq!(
            show(&cal, Granularity::Hour, "2024-10-05T15:45:00Z"),
            pair("2024-10-06T02:30:00+11:00", "2024-10-06T03:00:00+11:00")
        );
        let day = cal.window(Granularity::Day, ts("2024-10-06T00:00:00Z"));
        assert_eq!(day, span("2024-10-05T13:30:00Z", "2024-10-06T13:00:00Z"));
        let hours = hours_between(&cal, day.start, day.end);
        assert_eq!(hours.len(), 24);
        assert_eq!(hours.last().unwrap().end, day.end);
    }

    // Africa/Monrovia kept -00:44:30 until 1972-01-07 00:00 local, i.e.
    // 1972-01-07T00:44:30Z, then GMT. Before the change its clock reads :00 seconds
    // at :30 seconds UTC, and a whole hour at :44:30 UTC; after it, at :00 UTC. The
    // change ends a minute and an hour (local midnight), and starts a 30-second
    // minute and a 15.5-minute hour. Offsets with seconds print in UTC.
    #[test]
    fn monrovia_offset_with_seconds() {
        let cal = Calendar::for_zone("Africa/Monrovia").unwrap();
        let minute = |at: &str| cal.window(Granularity::Minute, ts(at));
        let hour = |at: &str| cal.window(Granularity::Hour, ts(at));
        assert_eq!(
            minute("1971-06-01T12:00:00Z"),
            span("1971-06-01T11:59:30Z", "1971-06-01T12:00:30Z")
        );
        assert_eq!(
            minute("1972-01-07T00:44:29Z"),
            span("1972-01-07T00:43:30Z", "1972-01-07T00:44:30Z")
        );
        assert_eq!(
            minute("1972-01-07T00:44:30Z"),
            span("1972-01-07T00:44:30Z", "1972-01-07T00:45:00Z")
        );
        assert_eq!(
            minute("1972-01-07T00:45:00Z"),
            span("1972-01-07T00:45:00Z", "1972-01-07T00:46:00Z")
        );
        assert_eq!(
            hour("1971-06-01T12:00:00Z"),
            span("1971-06-01T11:44:30Z", "1971-06-01T12:44:30Z")
        );
        assert_eq!(
            hour("1972-01-07T00:00:00Z"),
            span("1972-01-06T23:44:30Z", "1972-01-07T00:44:30Z")
        );
        assert_eq!(
            hour("1972-01-07T00:50:00Z"),
            span("1972-01-07T00:44:30Z", "1972-01-07T01:00:00Z")
        );
        assert_eq!(
            cal.window(Granularity::Day, ts("1972-01-07T12:00:00Z")),
            span("1972-01-07T00:44:30Z", "1972-01-08T00:00:00Z")
        );
        assert_eq!(
            show(&cal, Granularity::Hour, "1972-01-07T00:00:00Z"),
            pair("1972-01-06T23:44:30Z", "1972-01-07T00:44:30+00:00")
        );
        assert_eq!(
            show(&cal, Granularity::Day, "1972-01-06T12:00:00Z"),
            pair("1972-01-06T00:44:30Z", "1972-01-07T00:44:30+00:00")
        );
    }

    // Antarctica/Casey went from +11:00 back to +08:00 at 2010-03-05 02:00 +11:00
    // (2010-03-04T15:00Z): the clock read 23:00 on March 4 again for an hour. March 5
    // began at its first midnight, 00:00 +11:00 (2010-03-04T13:00Z), and lasted to
    // 2010-03-06 00:00 +08:00 (2010-03-05T16:00Z), 27 hours; the repeated hour of
    // March 4 lies within it, and so does its hour window.
    #[test]
    fn casey_clock_back_across_midnight_stays_in_the_day_begun() {
        let cal = Calendar::for_zone("Antarctica/Casey").unwrap();
        let march_5 = span("2010-03-04T13:00:00Z", "2010-03-05T16:00:00Z");
        for at in [
            "2010-03-04T13:00:00Z",
            "2010-03-04T14:59:59Z",
            "2010-03-04T15:00:00Z",
            "2010-03-04T15:30:00Z",
            "2010-03-05T15:59:59Z",
        ] {
            assert_eq!(cal.window(Granularity::Day, ts(at)), march_5, "{at}");
        }
        assert_eq!(
            cal.window(Granularity::Day, ts("2010-03-04T12:59:59Z")),
            span("2010-03-03T13:00:00Z", "2010-03-04T13:00:00Z")
        );
        assert_eq!(
            show(&cal, Granularity::Hour, "2010-03-04T15:30:00Z"),
            pair("2010-03-04T23:00:00+08:00", "2010-03-05T00:00:00+08:00")
        );
        assert_eq!(
            show(&cal, Granularity::Day, "2010-03-04T15:30:00Z"),
            pair("2010-03-05T00:00:00+11:00", "2010-03-06T00:00:00+08:00")
        );
    }

    // The tz database has transitions that change only the abbreviation or the DST
    // flag; they are no boundary. Since 1970 all of them fall on whole local hours,
    // where they would not show, so this zone puts them off the minute: "AAA" and "BBB"
    // are both +01:00, and switch at 01:30:30 local time on the last Sundays of March
    // and October (2024-03-31 and 2024-10-27).
    #[test]
    fn a_transition_that_keeps_the_offset_cuts_no_window() {
        let tz = TimeZone::posix("AAA-1BBB-1,M3.5.0/1:30:30,M10.5.0/1:30:30").unwrap();
        let cal = Calendar { tz, utc: false };
        let switch = cal
            .tz
            .following(Timestamp::from_second(ts("2024-03-30T00:00:00Z")).unwrap());
        assert_eq!(
            switch.map(|tr| tr.timestamp().as_second()).next(),
            Some(ts("2024-03-31T00:30:30Z")),
            "jiff lists the switch as a transition"
        );
        assert_eq!(
            cal.window(Granularity::Hour, ts("2024-03-31T00:45:00Z")),
            span("2024-03-31T00:00:00Z", "2024-03-31T01:00:00Z")
        );
        assert_eq!(
            cal.window(Granularity::Minute, ts("2024-03-31T00:30:40Z")),
            span("2024-03-31T00:30:00Z", "2024-03-31T00:31:00Z")
        );
    }

    #[test]
    fn windows_tile_time_without_gaps() {
        let cal = Calendar::for_zone("Europe/Zurich").unwrap();
        for g in Granularity::ALL {
            let mut t = ts("2024-03-01T00:00:00Z");
            let stop = ts("2024-11-30T00:00:00Z");
            let mut w = cal.window(g, t);
            while t < stop {
                assert!(w.contains(t), "{g}: {w:?} should contain {t}");
                let next = cal.window(g, w.end);
                assert_eq!(next.start, w.end, "{g}: windows must tile");
                t = w.end + (w.end - w.start) / 2;
                w = cal.window(g, t);
            }
        }
    }

    #[test]
    fn parses_granularity_names() {
        assert_eq!("Week".parse::<Granularity>().unwrap(), Granularity::Week);
        assert!(
            "fortnight"
                .parse::<Granularity>()
                .unwrap_err()
                .contains("fortnight")
        );
    }
}
