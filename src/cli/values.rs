//! Parsers for option values (durations, sizes, zones, windows): a bad value exits
//! with status 2 and a message that names the option.

use super::*;

pub(super) fn parse_granularity(s: &str) -> Result<Granularity, String> {
    s.parse()
}

pub(super) fn parse_zone(s: &str) -> Result<Calendar, String> {
    Calendar::for_zone(s).map_err(|e| {
        format!("unknown time zone {s:?} ({e}); use an IANA name such as UTC or Europe/Zurich")
    })
}

/// A duration that may be shorter than a second: `100ms`, `1s`, `2m`.
/// The longest duration any option takes: a century, far beyond any sane lateness,
/// and small enough that milliseconds of it fit every integer type used.
pub(super) const MAX_SECONDS: i64 = 100 * 366 * 86_400;

pub(super) fn parse_duration(s: &str) -> Result<Duration, String> {
    // A bare number is seconds, as for --lateness: `0` is a duration.
    if let Ok(secs) = s.trim().parse::<u64>() {
        return if secs as i64 > MAX_SECONDS || secs > i64::MAX as u64 {
            Err(format!("{s:?} is longer than the limit of 100 years"))
        } else {
            Ok(Duration::from_secs(secs))
        };
    }
    let d: jiff::SignedDuration = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration; write e.g. 100ms, 1s or 2m"))?;
    if d.as_secs() > MAX_SECONDS {
        return Err(format!("{s:?} is longer than the limit of 100 years"));
    }
    Duration::try_from(d).map_err(|_| format!("{s:?} is negative"))
}

/// A size: `1048576`, `512KiB`, `1MiB`, `4MB`.
pub(super) fn parse_bytes(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let unit_bytes: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => {
            return Err(format!(
                "{s:?} is not a size; write e.g. 1MiB, 512KiB or 1048576"
            ));
        }
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size; write e.g. 1MiB, 512KiB or 1048576"))?;
    match n.checked_mul(unit_bytes) {
        Some(b) if (1024..=1 << 30).contains(&b) => Ok(b as usize),
        _ => Err(format!("{s:?} is out of range: between 1KiB and 1GiB")),
    }
}

/// Whole seconds: `5s`, `2m`, `1h30m`, `1 day`, or a bare number of seconds.
pub fn parse_seconds(s: &str) -> Result<i64, String> {
    let t = s.trim();
    if let Ok(n) = t.parse::<i64>() {
        return if n < 0 {
            Err(format!("{s:?} is negative"))
        } else if n > MAX_SECONDS {
            Err(format!("{s:?} is longer than the limit of 100 years"))
        } else {
            Ok(n)
        };
    }
    let d: jiff::SignedDuration = t
        .parse()
        .map_err(|_| format!("{s:?} is not a duration; write e.g. 5s, 90s, 2m or 1h30m"))?;
    if d.is_negative() {
        return Err(format!("{s:?} is negative"));
    }
    if d.as_secs() > MAX_SECONDS {
        return Err(format!("{s:?} is longer than the limit of 100 years"));
    }
    if d.subsec_nanos() != 0 {
        return Err(format!("{s:?} is not a whole number of seconds"));
    }
    Ok(d.as_secs())
}

/// A listening address: `127.0.0.1:9898`, `[::1]:9898`, or a name such as
/// `localhost:9898`, resolved now (IPv4 first, as most scrapers reach it).
pub(super) fn parse_listen_addr(s: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs;
    let addrs: Vec<std::net::SocketAddr> = (s.trim().to_socket_addrs())
        .map_err(|e| {
            format!("{s:?} is not an address to listen on ({e}); write e.g. 127.0.0.1:9898")
        })?
        .collect();
    (addrs.iter().find(|a| a.is_ipv4()).or(addrs.first()))
        .copied()
        .ok_or_else(|| format!("{s:?} resolves to no address"))
}
