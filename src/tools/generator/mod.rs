//! Synthetic click-frame generator behind `cardinal gen`.
//!
//! Real click streams are big (~2 KB per frame), messy and adversarial for a
//! fast parser: `uid`/`ts` keys hide in nested objects and inside strings,
//! strings carry escapes and raw UTF-8, whitespace varies, some lines are
//! broken. This module produces such a stream on demand so the counter can be
//! benchmarked and tested without shipping data sets. Every frame comes with
//! its [`Truth`] (what a correct parser must extract), so tests can compute
//! exact expected answers, and the output is a pure function of the
//! [`GenConfig`], seed included.
//!
//! The bulk of each frame is copied from a pool of pre-rendered JSON values
//! built once per generator; only the parts that matter for counting (uid,
//! ts, key order, damage) are drawn per frame. That keeps generation far
//! faster than any parser that will consume it.

use std::io::{self, Write};

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;

mod json;
#[cfg(test)]
mod tests;

use json::*;

/// Knobs for the generated stream. See [`GenConfig::default`] for defaults.
#[derive(Debug, Clone)]
pub struct GenConfig {
    /// Number of lines to produce.
    pub frames: u64,
    /// Frames per second of event time: the clock advances 1 s with
    /// probability `1/rate` before each frame.
    pub rate: f64,
    /// uids are drawn uniformly from this many users.
    pub users: u64,
    /// Event time of the first frame, unix seconds.
    pub start: i64,
    /// Seed for everything random; same config => byte-identical output.
    pub seed: u64,
    /// Probability that a frame is delayed (its ts is older than the clock).
    pub disorder: f64,
    /// A delayed frame is uniform `1..=max_delay` seconds older than the clock.
    pub max_delay: i64,
    /// Probability that a frame is one of the tail's very late ones instead: its
    /// delay is log-uniform from `max_delay` to `tail_max_delay` seconds (as many
    /// a few seconds past the bulk as minutes past it), drawn after `disorder`.
    pub tail: f64,
    /// The longest delay in the tail, seconds.
    pub tail_max_delay: i64,
    /// Probability that ts is written as a string of digits.
    pub string_ts: f64,
    /// End lines with `\r\n` instead of `\n`.
    pub crlf: bool,
    /// Probability that the written ts has one bit among 20..=30 flipped.
    pub bitflips: f64,
    /// Probability that a frame is replaced by a malformed one.
    pub malformed: f64,
    /// Fraction of the frames after which event time jumps ahead once.
    pub gap_at: Option<f64>,
    /// Size of that jump, seconds.
    pub gap_seconds: i64,
    /// Average size of a frame, bytes: each frame's size is drawn uniformly
    /// from 60–140% of it (the default, 2000, gives 1200–2800 B), and the
    /// pooled nested values are capped at 35% of it. Small sizes overshoot a
    /// little, since the root fields and the first pairs are always written.
    pub frame_bytes: usize,
    /// What the frames look like besides their root `uid` and `ts`.
    pub profile: Profile,
}

/// The shape of a frame's other members, for measuring parsers on more than one
/// kind of JSON.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    /// Nested objects and arrays with decoy `uid`/`ts` keys, numbers of every
    /// form, escapes, emoji and several scripts: every corner of the grammar.
    #[default]
    Mixed,
    /// Shaped like the challenge's published sample generator: short ASCII keys,
    /// long strings dense with `\t`, `\"`, `\\`, `\n`, `\f` escapes and
    /// Cyrillic text, arrays of such strings, few numbers.
    Challenge,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            frames: 1_000_000,
            rate: 1000.0,
            users: 100_000,
            // 2016-07-11 13:39:44 UTC
            start: 1_468_244_384,
            seed: 1,
            disorder: 0.0,
            max_delay: 5,
            tail: 0.0,
            tail_max_delay: 300,
            string_ts: 0.0,
            crlf: false,
            bitflips: 0.0,
            malformed: 0.0,
            gap_at: None,
            gap_seconds: 0,
            frame_bytes: 2000,
            profile: Profile::Mixed,
        }
    }
}

/// What was generated, so tests can compute exact expected answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GenStats {
    /// Lines written, malformed ones included.
    pub frames: u64,
    /// Bytes written, line terminators included.
    pub bytes: u64,
    /// Lines that are [`Truth::Malformed`].
    pub malformed: u64,
    /// Lines that are [`Truth::BitFlipped`].
    pub bitflipped: u64,
}

/// What a frame "really" is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Truth {
    /// A well-formed frame; `uid` is the decoded string, `ts` as written.
    Valid { uid: String, ts: i64 },
    /// A well-formed frame whose written ts had one bit flipped in transit.
    BitFlipped {
        uid: String,
        true_ts: i64,
        written_ts: i64,
    },
    /// Not a usable frame: invalid JSON, or no valid root uid/ts.
    Malformed,
}

/// One generated line, without its terminator, and what it really is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenFrame {
    pub line: Vec<u8>,
    pub truth: Truth,
}

/// Writes `cfg.frames` lines to `out`. Deterministic: same cfg =>
/// byte-identical output.
pub fn generate(cfg: &GenConfig, out: &mut impl Write) -> io::Result<GenStats> {
    const FLUSH_AT: usize = 256 * 1024;
    let term: &[u8] = if cfg.crlf { b"\r\n" } else { b"\n" };
    let mut frames = FrameGen::new(cfg);
    // Slack so the frame that crosses FLUSH_AT does not reallocate.
    let mut buf = Vec::with_capacity(FLUSH_AT + 8 * 1024);
    let mut stats = GenStats::default();
    while let Some(truth) = frames.write_next(&mut buf) {
        buf.extend_from_slice(term);
        stats.frames += 1;
        match truth {
            Truth::Malformed => stats.malformed += 1,
            Truth::BitFlipped { .. } => stats.bitflipped += 1,
            Truth::Valid { .. } => {}
        }
        if buf.len() >= FLUSH_AT {
            out.write_all(&buf)?;
            stats.bytes += buf.len() as u64;
            buf.clear();
        }
    }
    out.write_all(&buf)?;
    stats.bytes += buf.len() as u64;
    out.flush()?;
    Ok(stats)
}

/// The generator as an iterator of frames; [`generate`] drives the same state
/// machine, so both produce identical lines for the same config.
#[derive(Debug, Clone)]
pub struct FrameGen {
    cfg: GenConfig,
    rng: Pcg64Mcg,
    pool: Pool,
    produced: u64,
    clock: i64,
    tick_p: f64,
    users: u64,
    /// Frame index before which the gap is applied; `u64::MAX` = never.
    gap_before: u64,
}

impl FrameGen {
    pub fn new(cfg: &GenConfig) -> FrameGen {
        // rate <= 0 or NaN has no sensible meaning; advancing every frame is
        // the least surprising reading of "very slow".
        let tick_p = if cfg.rate > 0.0 {
            (1.0 / cfg.rate).min(1.0)
        } else {
            1.0
        };
        let gap_before = match cfg.gap_at {
            Some(f) => (cfg.frames as f64 * f.clamp(0.0, 1.0)) as u64,
            None => u64::MAX,
        };
        let users = cfg.users.max(1);
        FrameGen {
            cfg: cfg.clone(),
            rng: Pcg64Mcg::seed_from_u64(cfg.seed),
            pool: Pool::build(cfg.seed, users, cfg.start, cfg.frame_bytes, cfg.profile),
            produced: 0,
            clock: cfg.start,
            tick_p,
            users,
            gap_before,
        }
    }

    /// Appends the next line (no terminator) to `buf`; appending rather than
    /// overwriting lets [`generate`] batch many frames in one buffer.
    fn write_next(&mut self, buf: &mut Vec<u8>) -> Option<Truth> {
        if self.produced >= self.cfg.frames {
            return None;
        }
        if self.produced == self.gap_before {
            self.clock += self.cfg.gap_seconds;
        }
        if chance(&mut self.rng, self.tick_p) {
            self.clock += 1;
        }
        self.produced += 1;

        let mut ts = self.clock;
        if self.cfg.max_delay >= 1 && chance(&mut self.rng, self.cfg.disorder) {
            let delay = self.rng.random_range(1..=self.cfg.max_delay);
            ts = (ts - delay).max(self.cfg.start);
        }
        if chance(&mut self.rng, self.cfg.tail) {
            let (lo, hi) = (
                self.cfg.max_delay.max(1) as f64,
                self.cfg.tail_max_delay as f64,
            );
            if hi > lo {
                let delay = (lo * (hi / lo).powf(self.rng.random::<f64>())).ceil() as i64;
                ts = (self.clock - delay.max(1)).max(self.cfg.start);
            }
        }
        let user = self.rng.random_range(0..self.users);

        if chance(&mut self.rng, self.cfg.malformed) {
            self.write_malformed(buf, user, ts);
            return Some(Truth::Malformed);
        }

        let uid = decoded_uid(user);
        let (written, truth) = if chance(&mut self.rng, self.cfg.bitflips) {
            let written = ts ^ (1i64 << self.rng.random_range(20..=30));
            let truth = Truth::BitFlipped {
                uid,
                true_ts: ts,
                written_ts: written,
            };
            (written, truth)
        } else {
            (ts, Truth::Valid { uid, ts })
        };
        // A negative number in a digit string would not be a digit string.
        let ts_field = if written >= 0 && chance(&mut self.rng, self.cfg.string_ts) {
            TsField::Str(written)
        } else {
            TsField::Int(written)
        };
        self.write_frame(buf, user, UidField::Str, ts_field);
        Some(truth)
    }

    fn write_malformed(&mut self, buf: &mut Vec<u8>, user: u64, ts: i64) {
        let begin = buf.len();
        match self.rng.random_range(0..10) {
            // Truncation is the most common damage in real streams (killed
            // writers, partial uploads), so it gets double weight.
            0 | 1 => {
                self.write_frame(buf, user, UidField::Str, TsField::Int(ts));
                // Cutting anywhere before the root's closing brace can never
                // yield valid JSON, so no re-check is needed.
                let len = buf.len() - begin;
                let cut = self.rng.random_range(1..len);
                buf.truncate(begin + cut);
            }
            2 => {
                let junk = NOT_OBJECTS[self.rng.random_range(0..NOT_OBJECTS.len())];
                buf.extend_from_slice(junk);
            }
            3 => self.write_frame(buf, user, UidField::Missing, TsField::Int(ts)),
            4 => self.write_frame(buf, user, UidField::Str, TsField::Missing),
            5 => self.write_frame(buf, user, UidField::Str, TsField::Float(ts)),
            6 => self.write_frame(buf, user, UidField::Str, TsField::Int(-ts.abs().max(1))),
            7 => self.write_frame(buf, user, UidField::Str, TsField::BadString),
            8 => self.write_frame(buf, user, UidField::Number, TsField::Int(ts)),
            _ => {} // empty line
        }
    }

    fn write_frame(&mut self, buf: &mut Vec<u8>, user: u64, uid: UidField, ts: TsField) {
        let begin = buf.len();
        let size = self.cfg.frame_bytes;
        let target = self.rng.random_range(size * 3 / 5..=size * 7 / 5);
        let spaced = chance(&mut self.rng, 0.1);
        let mut first = true;
        buf.push(b'{');
        for _ in 0..self.rng.random_range(0..=3) {
            self.other_pair(buf, &mut first, spaced);
        }
        let uid_first = chance(&mut self.rng, 0.5);
        let between = chance(&mut self.rng, 0.2);
        for i in 0..2 {
            if i == 1 && between {
                self.other_pair(buf, &mut first, spaced);
            }
            if (i == 0) == uid_first {
                self.root_uid(buf, &mut first, spaced, user, uid);
            } else {
                self.root_ts(buf, &mut first, spaced, ts);
            }
        }
        // A frame missing a root field still carries it nested, so a parser
        // that grabs the first "uid"/"ts" it sees gets caught.
        if uid == UidField::Missing {
            sep(buf, &mut first, spaced);
            buf.extend_from_slice(br#""user":{"uid":"#);
            self.uid_string(buf, user);
            buf.extend_from_slice(br#","ts":"#);
            push_i64(buf, self.clock);
            buf.push(b'}');
        }
        if ts == TsField::Missing {
            sep(buf, &mut first, spaced);
            buf.extend_from_slice(br#""meta":{"ts":"#);
            push_i64(buf, self.clock);
            buf.extend_from_slice(br#","src":"nested"}"#);
        }
        while buf.len() - begin < target {
            self.other_pair(buf, &mut first, spaced);
        }
        buf.push(b'}');
    }

    fn root_uid(
        &mut self,
        buf: &mut Vec<u8>,
        first: &mut bool,
        spaced: bool,
        user: u64,
        uid: UidField,
    ) {
        match uid {
            UidField::Missing => {}
            UidField::Str => {
                sep(buf, first, spaced);
                buf.extend_from_slice(br#""uid""#);
                colon(buf, spaced);
                self.uid_string(buf, user);
            }
            UidField::Number => {
                sep(buf, first, spaced);
                buf.extend_from_slice(br#""uid""#);
                colon(buf, spaced);
                push_u64(buf, user);
            }
        }
    }

    fn root_ts(&mut self, buf: &mut Vec<u8>, first: &mut bool, spaced: bool, ts: TsField) {
        if ts == TsField::Missing {
            return;
        }
        sep(buf, first, spaced);
        buf.extend_from_slice(br#""ts""#);
        colon(buf, spaced);
        match ts {
            TsField::Int(t) => push_i64(buf, t),
            TsField::Str(t) => {
                buf.push(b'"');
                push_i64(buf, t);
                buf.push(b'"');
            }
            TsField::Float(t) => {
                push_i64(buf, t);
                buf.extend_from_slice(b".5");
            }
            TsField::BadString => buf.extend_from_slice(br#""12ab""#),
            TsField::Missing => {}
        }
    }

    /// Writes the quoted uid, picking one of its spellings at random: all of a
    /// user's spellings decode to the same string, which is what must count.
    fn uid_string(&mut self, buf: &mut Vec<u8>, user: u64) {
        buf.push(b'"');
        match exotic(user) {
            Some(e) => {
                let spelling = e.spellings[self.rng.random_range(0..e.spellings.len())];
                buf.extend_from_slice(spelling);
            }
            None => buf.extend_from_slice(b"u-"),
        }
        push_u64(buf, user);
        buf.push(b'"');
    }

    fn other_pair(&mut self, buf: &mut Vec<u8>, first: &mut bool, spaced: bool) {
        sep(buf, first, spaced);
        let (keys, numbers) = match self.cfg.profile {
            Profile::Mixed => (ROOT_KEYS, 0.08),
            Profile::Challenge => (SHORT_KEYS, 0.02),
        };
        buf.extend_from_slice(keys[self.rng.random_range(0..keys.len())]);
        colon(buf, spaced);
        // A few values not from the pool, so frames are not mere
        // permutations of a fixed set of snippets.
        if chance(&mut self.rng, numbers) {
            push_u64(buf, self.rng.random::<u32>().into());
        } else {
            let (a, b) = self.pool.spans[self.rng.random_range(0..self.pool.spans.len())];
            buf.extend_from_slice(&self.pool.bytes[a..b]);
        }
    }
}

impl Iterator for FrameGen {
    type Item = GenFrame;

    fn next(&mut self) -> Option<GenFrame> {
        let mut line = Vec::with_capacity(3 * 1024);
        let truth = self.write_next(&mut line)?;
        Some(GenFrame { line, truth })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = usize::try_from(self.cfg.frames - self.produced).ok();
        (left.unwrap_or(usize::MAX), left)
    }
}
