#!/usr/bin/env python3
"""The reference calendar, written from the definitions, not from Cardinal's code:
minutes and hours start where the local clock shows :00 (an hour keeps the offset
it started with, so a DST fall-back has two 02:00 hours); days, ISO weeks (Monday),
months and years start at the first instant of their first local date. Labels are
RFC 3339 as Cardinal documents them (`Z` in UTC, the zone's offset otherwise).

Used by the tests (tests/common) and by scripts/scenarios.py. As a script: for each
unix timestamp on stdin, one line per granularity, `TS GRANULARITY START END`.
Usage: reference_calendar.py ZONE GRANULARITY[,GRANULARITY...] < timestamps
"""

import sys
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo


class Calendar:
    def __init__(self, name):
        self.tz = ZoneInfo(name)
        self.utc = name in ("UTC", "Etc/UTC")
        self.midnights = {}
        self.labels = {}

    def midnight(self, d):
        # fold=0: an ambiguous local midnight is its first occurrence; a skipped one
        # (a DST gap at 00:00) maps to the first instant of that day.
        if d not in self.midnights:
            self.midnights[d] = int(datetime(d.year, d.month, d.day, tzinfo=self.tz).timestamp())
        return self.midnights[d]

    def bounds(self, g, t):
        """(start, end) in unix seconds of the `g` window holding `t`."""
        local = datetime.fromtimestamp(t, self.tz)
        if g == "minute":
            s = t - local.second
            return s, s + 60
        if g == "hour":
            s = t - 60 * local.minute - local.second
            return s, s + 3600
        d = local.date()
        if g == "day":
            a, b = d, d + timedelta(days=1)
        elif g == "week":
            a = d - timedelta(days=d.weekday())
            b = a + timedelta(days=7)
        elif g == "month":
            a = d.replace(day=1)
            b = date(a.year + 1, 1, 1) if a.month == 12 else date(a.year, a.month + 1, 1)
        elif g == "year":
            a, b = date(d.year, 1, 1), date(d.year + 1, 1, 1)
        else:
            raise SystemExit("unknown granularity " + g)
        return self.midnight(a), self.midnight(b)

    def label(self, t):
        if t not in self.labels:
            d = datetime.fromtimestamp(t, self.tz)
            self.labels[t] = d.strftime("%Y-%m-%dT%H:%M:%SZ") if self.utc else d.isoformat()
        return self.labels[t]


def main():
    cal, grans = Calendar(sys.argv[1]), sys.argv[2].split(",")
    out = []
    for line in sys.stdin:
        t = int(line)
        for g in grans:
            s, e = cal.bounds(g, t)
            out.append("%d %s %s %s" % (t, g, cal.label(s), cal.label(e)))
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
