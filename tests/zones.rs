//! Minute, hour and day windows in every zone of the tz database, 1970 to 2037,
//! against a reference computed independently in Python (`zoneinfo`), and the
//! windows' own properties: they tile time (no gaps, no overlaps), nest (a minute
//! lies within an hour, an hour within a day), and their labels are RFC 3339.
//!
//! The reference finds each zone's offset changes by scanning `utcoffset`, and
//! applies the rule in words: a minute (hour) window starts at the latest instant
//! at or before `ts` at which the local clock shows a whole minute (hour) or the
//! offset changes, and ends at the earliest such instant after `ts`; a day runs
//! from the first instant of its local date to the first instant of the next
//! (where the clock goes back across midnight, the instants after the new date's
//! first instant are in the new day, though the clock reads the old date again).
//!
//! Python's tz data and jiff's bundled copy may be different releases: an instant
//! is skipped where the two disagree on the offset at it or at its windows' bounds.

use std::collections::HashSet;
use std::process::Command;
use std::time::Instant;

use cardinal::window::{Calendar, Granularity, Span};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::Deserialize;

/// One JSON line per zone file: the zone names that share it, its offset changes
/// `[instant, offset from then on]` (the first entry is the offset at 1970), and per
/// sampled instant `[ts, offset, minute start, minute end, hour start, hour end,
/// day start, day end]`, the bounds relative to `ts`.
const REFERENCE: &str = r#"
import bisect, json, os, sys, zoneinfo
from datetime import date, datetime, timedelta

LO = 0           # 1970-01-01T00:00:00Z
HI = 2145916800  # 2038-01-01T00:00:00Z
# No two offset changes of one zone lie closer than a week in 1970..2037 (the
# closest, Brazil in 2000, are 6.96 days apart): a scan in steps of 2 days sees each.
STEP = 2 * 86400

def offset_at(tz, t):
    return int(datetime.fromtimestamp(t, tz).utcoffset().total_seconds())

def transitions(tz):
    """[(instant, offset from then on)], the first entry covering LO."""
    out = [(LO, offset_at(tz, LO))]
    t, prev = LO, out[0][1]
    while t < HI:
        t2 = min(t + STEP, HI)
        if offset_at(tz, t2) == prev:
            t = t2
            continue
        lo, hi = t, t2  # offset_at(lo) == prev != offset_at(hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if offset_at(tz, mid) == prev:
                lo = mid
            else:
                hi = mid
        prev = offset_at(tz, hi)
        out.append((hi, prev))
        t = hi
    return out

def clock_window(tz, times, trans, t, length):
    # Boundaries: where the local clock shows a whole minute/hour, and the offset changes.
    i = bisect.bisect_right(times, t) - 1
    since = times[i] if i > 0 else None
    until = times[i + 1] if i + 1 < len(times) else None
    local = datetime.fromtimestamp(t, tz)
    assert int(local.utcoffset().total_seconds()) == trans[i][1], (tz, t)
    into = (local.minute * 60 + local.second) % length
    start, end = t - into, t - into + length
    if since is not None and since > start:
        start = since
    if until is not None and until < end:
        end = until
    return start, end

def first_instant(tz, times, d):
    """The first instant whose local date is d."""
    naive = datetime(d.year, d.month, d.day)
    x = int(naive.replace(tzinfo=tz).timestamp())  # fold=0: the first 00:00
    if datetime.fromtimestamp(x, tz).replace(tzinfo=None) == naive:
        return x
    # 00:00 was skipped: the day starts at the offset change that skipped it.
    for t in times[max(1, bisect.bisect_right(times, x) - 2):][:4]:
        before = datetime.fromtimestamp(t - 1, tz).replace(tzinfo=None)
        after = datetime.fromtimestamp(t, tz).replace(tzinfo=None)
        if before < naive <= after:
            return t
    raise SystemExit("no start of %s in %s" % (d, tz))

def rows(name):
    tz = zoneinfo.ZoneInfo(name)
    trans = transitions(tz)
    times = [t for t, _ in trans]
    instants = set()
    for t in times[1:]:
        for d in (-5400, -1800, -1, 0, 1, 1800, 5400):
            instants.add(t + d)
    years = 68
    for k in range(years * 4):
        instants.add(LO + 12345 + k * (HI - LO) // (years * 4))
    days = {}
    out = []
    for t in sorted(x for x in instants if LO <= x < HI):
        local = datetime.fromtimestamp(t, tz)
        off = int(local.utcoffset().total_seconds())
        ms, me = clock_window(tz, times, trans, t, 60)
        hs, he = clock_window(tz, times, trans, t, 3600)
        d = local.date()
        for day in (d, d + timedelta(days=1)):
            if day not in days:
                days[day] = (first_instant(tz, times, day), first_instant(tz, times, day + timedelta(days=1)))
        ds, de = days[d]
        if t >= de:
            # The clock went back across midnight: this instant reads date d again,
            # but the next day has begun.
            ds, de = days[d + timedelta(days=1)]
        out.append([t, off, ms - t, me - t, hs - t, he - t, ds - t, de - t])
    return trans, out

def key(name):
    # Links share a file: compute each distinct zone once.
    for p in zoneinfo.TZPATH:
        f = os.path.join(p, name)
        if os.path.isfile(f):
            with open(f, "rb") as fh:
                return fh.read()
    return name

groups = {}
for name in sorted(zoneinfo.available_timezones()):
    groups.setdefault(key(name), []).append(name)
for names in groups.values():
    trans, out = rows(names[0])
    sys.stdout.write(json.dumps({"zones": names, "trans": trans, "rows": out}, separators=(",", ":")) + "\n")
"#;

#[derive(Deserialize)]
struct Zone {
    zones: Vec<String>,
    trans: Vec<(i64, i32)>,
    rows: Vec<[i64; 8]>,
}

const GRANS: [Granularity; 3] = [Granularity::Minute, Granularity::Hour, Granularity::Day];

/// The reference's offset at `t` (its offset at 1970 before then).
fn reference_offset(trans: &[(i64, i32)], t: i64) -> i32 {
    trans[trans.partition_point(|&(at, _)| at <= t).max(1) - 1].1
}

/// `YYYY-MM-DDTHH:MM:SS` then `Z` or `±HH:MM`: RFC 3339 without fractions.
fn is_rfc3339(s: &str) -> bool {
    let pattern: &[u8] = match s.len() {
        20 => b"dddd-dd-ddTdd:dd:ddZ",
        25 => b"dddd-dd-ddTdd:dd:dd+dd:dd",
        _ => return false,
    };
    s.bytes().zip(pattern).all(|(c, &p)| match p {
        b'd' => c.is_ascii_digit(),
        b'+' => c == b'+' || c == b'-',
        _ => c == p,
    })
}

/// A window's neighbours start where it ends and end where it starts, and it is
/// the window of each of its instants.
fn check_tiling(cal: &Calendar, g: Granularity, w: Span, zone: &str, bad: &mut Vec<String>) {
    let at = |t: i64| cal.window(g, t);
    let mut check = |ok: bool, what: &str| {
        if !ok {
            bad.push(format!("{zone} {g} {w:?}: {what}"));
        }
    };
    check(w.start < w.end, "empty");
    check(at(w.start) == w, "not the window of its start");
    check(at(w.end - 1) == w, "not the window of its last second");
    check(
        at(w.end).start == w.end,
        "the next window does not start at its end",
    );
    check(
        at(w.start - 1).end == w.start,
        "the last window does not end at its start",
    );
}

/// The label of a bound is RFC 3339, names the same instant, and carries the
/// zone's offset there unless that has seconds, in which case it is UTC.
fn check_label(cal: &Calendar, tz: &TimeZone, t: i64, zone: &str, bad: &mut Vec<String>) {
    let label = cal.format(t);
    let off = tz.to_offset(Timestamp::from_second(t).unwrap()).seconds();
    let (sign, m) = (if off < 0 { '-' } else { '+' }, off.abs() / 60);
    let suffix_ok = match off {
        0 => label.ends_with('Z') || label.ends_with("+00:00"),
        _ if off % 60 != 0 => label.ends_with('Z'),
        _ => label.ends_with(&format!("{sign}{:02}:{:02}", m / 60, m % 60)),
    };
    let same_instant = label.parse::<Timestamp>().ok().map(|b| b.as_second()) == Some(t);
    if !is_rfc3339(&label) || !same_instant || !suffix_ok {
        bad.push(format!("{zone}: label {label:?} of {t}, offset {off}s"));
    }
}

#[test]
fn minute_hour_and_day_windows_in_every_zone_match_zoneinfo() {
    let started = Instant::now();
    let out = Command::new("python3")
        .args(["-c", REFERENCE])
        .output()
        .expect("python3 (with zoneinfo) computes the reference windows");
    assert!(
        out.status.success(),
        "the reference failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let python = started.elapsed();
    let (mut zones, mut instants, mut skipped, mut labels) = (0usize, 0usize, 0usize, 0usize);
    let mut unknown = Vec::new();
    let mut wrong = Vec::new();
    // Windows that do not tile or nest, and labels that are not RFC 3339.
    let mut bad = Vec::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let z: Zone = serde_json::from_str(line).unwrap();
        for name in &z.zones {
            let (Ok(cal), Ok(tz)) = (Calendar::for_zone(name), TimeZone::get(name)) else {
                unknown.push(name.clone());
                continue;
            };
            let jiff_offset = |t: i64| tz.to_offset(Timestamp::from_second(t).unwrap()).seconds();
            let mut compared = false;
            let mut tiled = HashSet::new();
            let mut labelled = HashSet::new();
            for row in &z.rows {
                let t = row[0];
                instants += 1;
                let got = GRANS.map(|g| cal.window(g, t));
                for (g, w) in GRANS.into_iter().zip(got) {
                    if !w.contains(t) {
                        bad.push(format!("{name} {g} {w:?}: does not contain {t}"));
                    }
                    if tiled.insert((g, w)) {
                        check_tiling(&cal, g, w, name, &mut bad);
                    }
                    for b in [w.start, w.end] {
                        if labelled.insert(b) {
                            check_label(&cal, &tz, b, name, &mut bad);
                            labels += 1;
                        }
                    }
                }
                for (inner, outer) in [(0, 1), (1, 2)] {
                    let (i, o) = (got[inner], got[outer]);
                    if i.start < o.start || o.end < i.end {
                        bad.push(format!(
                            "{name}: {} {i:?} not within {} {o:?}",
                            GRANS[inner], GRANS[outer]
                        ));
                    }
                }
                let want: [Span; 3] = std::array::from_fn(|i| Span {
                    start: t + row[2 + 2 * i],
                    end: t + row[3 + 2 * i],
                });
                let disagree = std::iter::once(t)
                    .chain(
                        want.iter()
                            .flat_map(|w| [w.start - 1, w.start, w.end - 1, w.end]),
                    )
                    .any(|p| jiff_offset(p) != reference_offset(&z.trans, p));
                if disagree {
                    skipped += 1;
                    continue;
                }
                assert_eq!(jiff_offset(t), row[1] as i32, "{name} at {t}");
                compared = true;
                for ((g, w), r) in GRANS.into_iter().zip(got).zip(want) {
                    if w != r {
                        wrong.push(format!(
                            "{name} {g} at {t} ({}): cardinal {}..{}, zoneinfo {}..{}",
                            cal.format(t),
                            cal.format(w.start),
                            cal.format(w.end),
                            cal.format(r.start),
                            cal.format(r.end)
                        ));
                    }
                }
            }
            zones += usize::from(compared);
        }
    }
    eprintln!(
        "{zones} zones compared, {instants} instants, {skipped} skipped (tz data differ), \
         {labels} labels; {} windows differ from zoneinfo's, {} tiling, nesting or label \
         problems; zones jiff lacks: {unknown:?}; python {python:?}, all {:?}",
        wrong.len(),
        bad.len(),
        started.elapsed()
    );
    assert!(
        bad.is_empty(),
        "{} problems, e.g.\n{}",
        bad.len(),
        bad[..bad.len().min(30)].join("\n")
    );
    assert!(
        wrong.is_empty(),
        "{} windows differ from zoneinfo's, e.g.\n{}",
        wrong.len(),
        wrong[..wrong.len().min(30)].join("\n")
    );
    assert!(zones >= 400, "only {zones} zones compared");
    assert!(
        skipped * 100 < instants,
        "{skipped} of {instants} instants skipped"
    );
}
