//! The generator's tests: frames are valid where they should be, broken where
//! they should be, and their truth is what a correct parser extracts.

use super::*;
use serde_json::Value;

fn small(frames: u64) -> GenConfig {
    GenConfig {
        frames,
        ..GenConfig::default()
    }
}

fn gen_bytes(cfg: &GenConfig) -> Vec<u8> {
    let mut out = Vec::new();
    generate(cfg, &mut out).unwrap();
    out
}

/// What a strict consumer would extract: root object, string uid,
/// non-negative integer ts or a digit string.
fn root_fields(line: &[u8]) -> Option<(String, i64)> {
    let v: Value = serde_json::from_slice(line).ok()?;
    let obj = v.as_object()?;
    let uid = obj.get("uid")?.as_str()?.to_owned();
    let ts = match obj.get("ts")? {
        Value::Number(n) => i64::try_from(n.as_u64()?).ok()?,
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse().ok()?
        }
        _ => return None,
    };
    Some((uid, ts))
}

fn expected(truth: &Truth) -> Option<(String, i64)> {
    match truth {
        Truth::Valid { uid, ts } => Some((uid.clone(), *ts)),
        Truth::BitFlipped {
            uid, written_ts, ..
        } => Some((uid.clone(), *written_ts)),
        Truth::Malformed => None,
    }
}

#[test]
fn deterministic_per_seed() {
    let cfg = GenConfig {
        malformed: 0.05,
        disorder: 0.1,
        string_ts: 0.1,
        bitflips: 0.01,
        ..small(2000)
    };
    let a = gen_bytes(&cfg);
    assert_eq!(a, gen_bytes(&cfg));
    assert_ne!(a, gen_bytes(&GenConfig { seed: 2, ..cfg }));
}

#[test]
fn generate_matches_iterator() {
    let cfg = GenConfig {
        malformed: 0.1,
        bitflips: 0.05,
        crlf: true,
        ..small(1000)
    };
    let mut out = Vec::new();
    let stats = generate(&cfg, &mut out).unwrap();
    let mut joined = Vec::new();
    let (mut malformed, mut flipped) = (0, 0);
    for f in FrameGen::new(&cfg) {
        joined.extend_from_slice(&f.line);
        joined.extend_from_slice(b"\r\n");
        malformed += u64::from(f.truth == Truth::Malformed);
        flipped += u64::from(matches!(f.truth, Truth::BitFlipped { .. }));
    }
    assert_eq!(out, joined);
    let want = GenStats {
        frames: 1000,
        bytes: out.len() as u64,
        malformed,
        bitflipped: flipped,
    };
    assert_eq!(stats, want);
    assert!(malformed > 0 && flipped > 0);
}

#[test]
fn valid_frames_parse_and_match_truth() {
    let cfg = GenConfig {
        string_ts: 0.3,
        disorder: 0.2,
        bitflips: 0.05,
        ..small(2000)
    };
    let mut bytes = 0;
    let mut string_ts = 0;
    for f in FrameGen::new(&cfg) {
        assert!(!f.line.contains(&b'\n') && !f.line.contains(&b'\r'));
        let got = root_fields(&f.line);
        assert!(got.is_some(), "{}", String::from_utf8_lossy(&f.line));
        assert_eq!(got, expected(&f.truth));
        let v: Value = serde_json::from_slice(&f.line).unwrap();
        string_ts += usize::from(v["ts"].is_string());
        bytes += f.line.len();
    }
    let avg = bytes / 2000;
    assert!((1500..=2600).contains(&avg), "average frame {avg} B");
    assert!((450..=750).contains(&string_ts), "{string_ts} string ts");
}

/// The challenge profile is what its doc says: valid frames whose strings are
/// dense with escapes and Cyrillic, checked by serde_json's decoding.
#[test]
fn the_challenge_profile_is_long_escaped_strings() {
    let cfg = GenConfig {
        profile: Profile::Challenge,
        ..small(500)
    };
    let (mut bytes, mut escapes, mut cyrillic, mut numbers) = (0, 0, 0, 0);
    for f in FrameGen::new(&cfg) {
        assert_eq!(root_fields(&f.line), expected(&f.truth));
        let v: Value = serde_json::from_slice(&f.line).unwrap();
        for (key, value) in v.as_object().unwrap() {
            assert!(key.len() <= 4 && key.is_ascii(), "{key}");
            if key == "uid" || key == "ts" {
                continue;
            }
            let strings: Vec<&str> = match value {
                Value::String(s) => vec![s],
                Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                Value::Object(o) => o.values().filter_map(Value::as_str).collect(),
                _ => {
                    numbers += 1;
                    vec![]
                }
            };
            for s in strings {
                escapes += s.chars().filter(|c| "\t\n\u{c}\"\\".contains(*c)).count();
                cyrillic += s
                    .chars()
                    .filter(|c| ('\u{400}'..='\u{4ff}').contains(c))
                    .count();
            }
        }
        bytes += f.line.len();
    }
    assert!(escapes * 40 > bytes, "{escapes} escapes in {bytes} B");
    assert!(
        cyrillic * 5 > bytes,
        "{cyrillic} Cyrillic letters in {bytes} B"
    );
    assert!(numbers < 500, "{numbers} numbers besides ts in 500 frames");
}

#[test]
fn frame_bytes_sets_the_size() {
    for (size, lo, hi) in [(200, 150, 300), (8000, 6500, 9000)] {
        let cfg = GenConfig {
            frame_bytes: size,
            string_ts: 0.1,
            ..small(2000)
        };
        let mut bytes = 0;
        for f in FrameGen::new(&cfg) {
            assert_eq!(root_fields(&f.line), expected(&f.truth));
            bytes += f.line.len();
        }
        let avg = bytes / 2000;
        assert!((lo..=hi).contains(&avg), "{size}: average frame {avg} B");
    }
}

#[test]
fn decoys_are_common() {
    let (mut multi, mut in_strings) = (0, 0);
    for f in FrameGen::new(&small(1000)) {
        let line = String::from_utf8(f.line).unwrap();
        multi += usize::from(line.matches(r#""uid""#).count() > 1);
        in_strings += usize::from(line.contains(r#"\"uid\":\"fake\""#));
    }
    assert!(multi > 800, "{multi} of 1000 frames have nested uid keys");
    assert!(
        in_strings > 50,
        "{in_strings} frames have uid text in strings"
    );
}

#[test]
fn event_time_follows_rate() {
    let cfg = small(200_000);
    let mut g = FrameGen::new(&cfg);
    let mut buf = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    while let Some(truth) = g.write_next(&mut buf) {
        buf.clear();
        let Truth::Valid { ts, .. } = truth else {
            panic!("unexpected {truth:?}");
        };
        seen.insert(ts);
    }
    let span = seen.last().unwrap() - seen.first().unwrap();
    assert!((150..=250).contains(&span), "span {span} s");
    let per_second = 200_000 / seen.len();
    assert!((800..=1250).contains(&per_second), "{per_second} frames/s");
}

#[test]
fn disorder_is_bounded() {
    let cfg = GenConfig {
        disorder: 0.3,
        rate: 100.0,
        ..small(20_000)
    };
    let (mut max, mut late) = (i64::MIN, 0);
    for f in FrameGen::new(&cfg) {
        let (_, ts) = expected(&f.truth).unwrap();
        assert!(ts >= cfg.start);
        if ts < max {
            late += 1;
            assert!(max - ts <= cfg.max_delay, "{max} - {ts}");
        }
        max = max.max(ts);
    }
    assert!(late > 1000, "{late} late frames");
}

/// `--tail`: one frame in a hundred here is later than `max_delay`, up to
/// `tail_max_delay`, and as many delays fall below the geometric mean of the
/// bounds as above it (log-uniform); the rest stay within `max_delay`.
#[test]
fn the_tail_is_rare_very_late_and_log_uniform() {
    let cfg = GenConfig {
        disorder: 0.3,
        tail: 0.01,
        tail_max_delay: 300,
        rate: 100.0,
        ..small(50_000)
    };
    let (mut max, mut tail) = (cfg.start, Vec::new());
    for f in FrameGen::new(&cfg) {
        let (_, ts) = expected(&f.truth).unwrap();
        if max - ts > cfg.max_delay {
            tail.push(max - ts);
        }
        max = max.max(ts);
    }
    assert!(
        (350..=650).contains(&tail.len()),
        "{} frames in the tail",
        tail.len()
    );
    assert!(tail.iter().all(|&d| d <= 300), "{tail:?}");
    let mean = (5.0f64 * 300.0).sqrt() as i64;
    let below = tail.iter().filter(|&&d| d < mean).count();
    assert!(
        below * 10 > tail.len() * 4 && below * 10 < tail.len() * 6,
        "{below} of {} below {mean} s",
        tail.len()
    );
}

#[test]
fn bitflips_flip_one_high_bit() {
    let cfg = GenConfig {
        bitflips: 0.1,
        ..small(5000)
    };
    let mut flipped = 0;
    for f in FrameGen::new(&cfg) {
        if let Truth::BitFlipped {
            true_ts,
            written_ts,
            ..
        } = f.truth
        {
            flipped += 1;
            let d = true_ts ^ written_ts;
            assert_eq!(d.count_ones(), 1);
            assert!((20..=30).contains(&d.trailing_zeros()));
        }
    }
    assert!((350..=650).contains(&flipped), "{flipped} flipped");
}

#[test]
fn malformed_frames_are_unusable() {
    let cfg = GenConfig {
        malformed: 0.2,
        ..small(5000)
    };
    let (mut bad, mut unparsable, mut empty) = (0, 0, 0);
    for f in FrameGen::new(&cfg) {
        if f.truth == Truth::Malformed {
            bad += 1;
            empty += usize::from(f.line.is_empty());
            unparsable += usize::from(serde_json::from_slice::<Value>(&f.line).is_err());
            assert_eq!(
                root_fields(&f.line),
                None,
                "{}",
                String::from_utf8_lossy(&f.line)
            );
        } else {
            assert_eq!(root_fields(&f.line), expected(&f.truth));
        }
    }
    assert!((850..=1150).contains(&bad), "{bad} malformed");
    // Both kinds of damage occur: broken JSON and valid-but-unusable.
    assert!(unparsable > 100 && unparsable < bad - 100, "{unparsable}");
    assert!(empty > 0);
}

#[test]
fn gap_jumps_once_in_the_middle() {
    let cfg = GenConfig {
        gap_at: Some(0.5),
        gap_seconds: 10_800,
        ..small(20_000)
    };
    let mut max = cfg.start;
    let mut jumps = Vec::new();
    for (i, f) in FrameGen::new(&cfg).enumerate() {
        let (_, ts) = expected(&f.truth).unwrap();
        if ts - max >= 10_800 {
            jumps.push(i);
        }
        max = max.max(ts);
    }
    assert_eq!(jumps, [10_000]);
}

#[test]
fn line_terminators() {
    let crlf = gen_bytes(&GenConfig {
        crlf: true,
        ..small(500)
    });
    assert!(crlf.ends_with(b"\r\n"));
    let lines: Vec<&[u8]> = crlf.split_inclusive(|&b| b == b'\n').collect();
    assert_eq!(lines.len(), 500);
    assert!(lines.iter().all(|l| l.ends_with(b"\r\n")));
    assert_eq!(crlf.iter().filter(|&&b| b == b'\r').count(), 500);

    let lf = gen_bytes(&small(500));
    assert_eq!(lf.iter().filter(|&&b| b == b'\n').count(), 500);
    assert!(!lf.contains(&b'\r'));
}

#[test]
fn exotic_spellings_decode_alike() {
    for e in EXOTIC {
        for s in e.spellings {
            let quoted = [b"\"", *s, b"\""].concat();
            let decoded: String = serde_json::from_slice(&quoted).unwrap();
            assert_eq!(decoded, e.decoded, "{}", String::from_utf8_lossy(s));
        }
    }
    let exotic_users = (0..100_000).filter(|&u| exotic(u).is_some()).count();
    assert!((4000..=6000).contains(&exotic_users), "{exotic_users}");
}

#[test]
fn a_user_keeps_its_uid_across_spellings() {
    let mut g = FrameGen::new(&small(0));
    let user = (0..).find(|&u| exotic(u).is_some()).unwrap();
    let mut spellings = std::collections::BTreeSet::new();
    for _ in 0..100 {
        let mut buf = Vec::new();
        g.uid_string(&mut buf, user);
        let decoded: String = serde_json::from_slice(&buf).unwrap();
        assert_eq!(decoded, decoded_uid(user));
        spellings.insert(buf);
    }
    assert!(spellings.len() > 1);
}
