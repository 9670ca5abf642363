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
            string_ts: 0.0,
            crlf: false,
            bitflips: 0.0,
            malformed: 0.0,
            gap_at: None,
            gap_seconds: 0,
            frame_bytes: 2000,
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
            pool: Pool::build(cfg.seed, users, cfg.start, cfg.frame_bytes),
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
        buf.extend_from_slice(ROOT_KEYS[self.rng.random_range(0..ROOT_KEYS.len())]);
        colon(buf, spaced);
        // A few values not from the pool, so frames are not mere
        // permutations of a fixed set of snippets.
        if chance(&mut self.rng, 0.08) {
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UidField {
    Str,
    Missing,
    Number,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TsField {
    Int(i64),
    Str(i64),
    Float(i64),
    BadString,
    Missing,
}

/// `p <= 0` draws nothing, so turning a feature off does not consume
/// randomness (and costs nothing on the hot path).
fn chance(rng: &mut Pcg64Mcg, p: f64) -> bool {
    p > 0.0 && rng.random::<f64>() < p
}

fn sep(buf: &mut Vec<u8>, first: &mut bool, spaced: bool) {
    if !*first {
        buf.extend_from_slice(if spaced { b", " } else { b"," });
    }
    *first = false;
}

fn colon(buf: &mut Vec<u8>, spaced: bool) {
    buf.extend_from_slice(if spaced { b": " } else { b":" });
}

fn push_u64(buf: &mut Vec<u8>, mut v: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    buf.extend_from_slice(&tmp[i..]);
}

fn push_i64(buf: &mut Vec<u8>, v: i64) {
    if v < 0 {
        buf.push(b'-');
    }
    push_u64(buf, v.unsigned_abs());
}

/// A family of uids that stress decoding: each spelling is JSON string
/// content (without quotes) decoding to `decoded`; the user number follows.
struct Exotic {
    decoded: &'static str,
    spellings: &'static [&'static [u8]],
}

const EXOTIC: &[Exotic] = &[
    Exotic {
        decoded: "us\"er-\u{e9}-",
        spellings: &[
            br#"us\"er-\u00e9-"#,
            r#"us\"er-é-"#.as_bytes(),
            br#"us\u0022er-\u00E9-"#,
        ],
    },
    Exotic {
        decoded: "用户-",
        spellings: &["用户-".as_bytes(), br"\u7528\u6237-"],
    },
    Exotic {
        decoded: "\u{1f600}-",
        spellings: &["😀-".as_bytes(), br"\ud83d\ude00-", br"\uD83D\uDE00-"],
    },
    Exotic {
        decoded: "a/b\\c\t-",
        spellings: &[br"a\/b\\c\t-", br"a/b\\c\u0009-"],
    },
    Exotic {
        decoded: "Zo\u{eb} \"Z\" \u{1f389}-",
        spellings: &[
            r#"Zoë \"Z\" 🎉-"#.as_bytes(),
            br#"Zo\u00eb \"Z\" \ud83c\udf89-"#,
        ],
    },
];

/// ~5% of users get an exotic uid. Keyed on the user alone (not the seed) so
/// a user's identity never depends on anything but its number.
fn exotic(user: u64) -> Option<&'static Exotic> {
    let h = mix(user);
    h.is_multiple_of(20)
        .then(|| &EXOTIC[((h >> 32) % EXOTIC.len() as u64) as usize])
}

/// splitmix64's finalizer: cheap, and spreads consecutive users apart.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn decoded_uid(user: u64) -> String {
    let prefix = exotic(user).map_or("u-", |e| e.decoded);
    let mut digits = Vec::with_capacity(20);
    push_u64(&mut digits, user);
    let mut uid = String::with_capacity(prefix.len() + digits.len());
    uid.push_str(prefix);
    uid.extend(digits.iter().map(|&d| char::from(d)));
    uid
}

/// Root keys other than uid/ts. Near-misses and escaped keys catch parsers
/// that match key bytes loosely; none of them decodes to "uid" or "ts".
const ROOT_KEYS: &[&[u8]] = &[
    br#""meta""#,
    br#""event""#,
    br#""page""#,
    br#""ctx""#,
    br#""session""#,
    br#""geo""#,
    br#""device""#,
    br#""payload""#,
    br#""items""#,
    br#""ref""#,
    br#""tags""#,
    br#""user""#,
    br#""uid_hash""#,
    br#""ts_ms""#,
    br#""Uid""#,
    br#""TS""#,
    br#""timestamp""#,
    br#""x-uid""#,
    br#""uids""#,
    br#""tsz""#,
    br#""ab""#,
    br#""""#,
    br#""k\"q""#,
    br#""\"uid\"""#,
    br#""em\u00f6ji""#,
    br#""\/path""#,
    "\"données\"".as_bytes(),
    "\"キー\"".as_bytes(),
];

/// Keys inside nested objects, besides the frequent "uid"/"ts" decoys.
/// `u\u0069d` and `t\u0073` decode to "uid"/"ts": harmless when nested, fatal
/// to a parser that does not track depth.
const NESTED_KEYS: &[&[u8]] = &[
    br#""id""#,
    br#""name""#,
    br#""value""#,
    br#""t""#,
    br#""u""#,
    br#""data""#,
    br#""list""#,
    br#""created""#,
    br#""n""#,
    br#""user""#,
    br#""UID""#,
    br#""ts ""#,
    br#""uid\"""#,
    br#""u\u0069d""#,
    br#""t\u0073""#,
    "\"時間\"".as_bytes(),
];

/// Pieces of JSON string content (already escaped, no raw quotes or control
/// characters), concatenated to form string values. Surrogate pairs are
/// always complete within one piece so concatenation stays valid.
const FRAGMENTS: &[&[u8]] = &[
    b"hello",
    b"click",
    b" ",
    b"lorem ipsum dolor sit amet, consectetur adipiscing elit",
    b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/51.0.2704.103 Safari/537.36",
    br"https:\/\/example.com\/p?q=1&r=2#frag",
    br#"\"uid\":\"fake\""#,
    br#"{\"uid\":\"u-1\",\"ts\":1468244384}"#,
    br#"\u0022uid\u0022:\u0022u-7\u0022"#,
    br#"\"ts\": 99"#,
    br"line1\nline2",
    br"tab\there",
    br"back\\slash",
    br"trailing\\",
    br#"\\\""#,
    br"caf\u00e9",
    "café".as_bytes(),
    "日本語テキスト".as_bytes(),
    "😀🎉".as_bytes(),
    "👍🏽".as_bytes(),
    "Ωμέγα Привет مرحبا".as_bytes(),
    "Ünïcödé".as_bytes(),
    br"\ud83d\ude00",
    br"\uD83C\uDF89",
    br"\u0000",
    br"\b\f\r",
    br"\/",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"uid",
    b"ts",
];

/// Lines that are not JSON objects; several still mention uid/ts.
const NOT_OBJECTS: &[&[u8]] = &[
    b"[1,2,3]",
    br#""str""#,
    b"42",
    b"null",
    b"true",
    b"garbage",
    b"not json at all",
    b"}{",
    br#"{uid: u-1, ts: 1468244384}"#,
    br#"[{"uid":"u-1","ts":1468244384}]"#,
    br#""{\"uid\":\"u-1\",\"ts\":1468244384}""#,
];

/// Pre-rendered root-level values. Copying these is what makes generation
/// run at memcpy speed instead of one random draw per byte.
#[derive(Debug, Clone)]
struct Pool {
    bytes: Vec<u8>,
    spans: Vec<(usize, usize)>,
}

impl Pool {
    const SIZE: usize = 1024;
    fn build(seed: u64, users: u64, start: i64, frame_bytes: usize) -> Pool {
        // Keeps the overshoot past a frame's target size small: 700 B at the
        // default 2000 B frames.
        let max_value = (frame_bytes * 7 / 20).max(8);
        let mut w = ValueWriter {
            // Own stream so the pool does not shift the per-frame draws.
            rng: Pcg64Mcg::seed_from_u64(seed ^ 0x706f_6f6c_7661_6c73),
            out: Vec::with_capacity(Self::SIZE * 256),
            spaced: false,
            users,
            start,
        };
        let mut spans = Vec::with_capacity(Self::SIZE);
        while spans.len() < Self::SIZE {
            w.spaced = chance(&mut w.rng, 0.1);
            let begin = w.out.len();
            w.value(1);
            if w.out.len() - begin <= max_value {
                spans.push((begin, w.out.len()));
            } else {
                w.out.truncate(begin);
            }
        }
        Pool {
            bytes: w.out,
            spans,
        }
    }
}

/// Renders random JSON values for the pool.
struct ValueWriter {
    rng: Pcg64Mcg,
    out: Vec<u8>,
    spaced: bool,
    users: u64,
    start: i64,
}

impl ValueWriter {
    fn value(&mut self, depth: usize) {
        // Falling odds of nesting keep values bounded while still reaching
        // depth ~4 below the root.
        let p_container = match depth {
            1 => 0.55,
            2 => 0.4,
            3 => 0.25,
            4 => 0.15,
            _ => 0.0,
        };
        if chance(&mut self.rng, p_container) {
            if chance(&mut self.rng, 0.65) {
                self.object(depth);
            } else {
                self.array(depth);
            }
        } else {
            self.scalar();
        }
    }

    fn scalar(&mut self) {
        match self.rng.random_range(0..100) {
            0..45 => self.string(),
            45..65 => self.int(),
            65..80 => self.float(),
            80..84 => self.out.extend_from_slice(b"true"),
            84..88 => self.out.extend_from_slice(b"false"),
            88..92 => self.out.extend_from_slice(b"null"),
            _ => self.ts_like(),
        }
    }

    fn string(&mut self) {
        self.out.push(b'"');
        for _ in 0..self.rng.random_range(1..=5) {
            let frag = FRAGMENTS[self.rng.random_range(0..FRAGMENTS.len())];
            self.out.extend_from_slice(frag);
        }
        self.out.push(b'"');
    }

    fn int(&mut self) {
        if chance(&mut self.rng, 0.3) {
            self.out.push(b'-');
        }
        if chance(&mut self.rng, 0.03) {
            // Beyond u64: parsers must skip it, not overflow on it.
            self.out.push(b'1' + self.rng.random_range(0..9));
            for _ in 0..24 {
                self.out.push(b'0' + self.rng.random_range(0..10));
            }
            return;
        }
        let digits = self.rng.random_range(1..=19);
        let v = self.rng.random_range(0..10u64.pow(digits));
        push_u64(&mut self.out, v);
    }

    fn float(&mut self) {
        if chance(&mut self.rng, 0.5) {
            self.out.push(b'-');
        }
        push_u64(&mut self.out, self.rng.random_range(0..100_000));
        let frac = chance(&mut self.rng, 0.8);
        if frac {
            self.out.push(b'.');
            for _ in 0..self.rng.random_range(1..=6) {
                self.out.push(b'0' + self.rng.random_range(0..10));
            }
        }
        if !frac || chance(&mut self.rng, 0.4) {
            self.out.push(if chance(&mut self.rng, 0.5) {
                b'e'
            } else {
                b'E'
            });
            match self.rng.random_range(0..3) {
                0 => self.out.push(b'+'),
                1 => self.out.push(b'-'),
                _ => {}
            }
            // Two exponent digits at most: serde_json rejects floats that
            // overflow f64, and those are not the point here.
            push_u64(&mut self.out, self.rng.random_range(0..100));
        }
    }

    fn ts_like(&mut self) {
        let t = self.start + self.rng.random_range(-100_000..=100_000);
        push_i64(&mut self.out, t);
    }

    fn fake_uid(&mut self) {
        self.out.extend_from_slice(b"\"u-");
        push_u64(&mut self.out, self.rng.random_range(0..self.users));
        self.out.push(b'"');
    }

    fn comma(&mut self) {
        self.out
            .extend_from_slice(if self.spaced { b", " } else { b"," });
    }

    fn colon(&mut self) {
        self.out
            .extend_from_slice(if self.spaced { b": " } else { b":" });
    }

    fn object(&mut self, depth: usize) {
        self.out.push(b'{');
        for i in 0..self.rng.random_range(0..=5) {
            if i > 0 {
                self.comma();
            }
            match self.rng.random_range(0..100) {
                0..30 => {
                    self.out.extend_from_slice(br#""uid""#);
                    self.colon();
                    self.decoy_uid(depth);
                }
                30..55 => {
                    self.out.extend_from_slice(br#""ts""#);
                    self.colon();
                    self.decoy_ts(depth);
                }
                _ => {
                    let key = NESTED_KEYS[self.rng.random_range(0..NESTED_KEYS.len())];
                    self.out.extend_from_slice(key);
                    self.colon();
                    self.value(depth + 1);
                }
            }
        }
        self.out.push(b'}');
    }

    fn array(&mut self, depth: usize) {
        self.out.push(b'[');
        let records = chance(&mut self.rng, 0.25);
        for i in 0..self.rng.random_range(0..=4) {
            if i > 0 {
                self.comma();
            }
            if records {
                self.record();
            } else {
                self.value(depth + 1);
            }
        }
        self.out.push(b']');
    }

    /// An object shaped exactly like a real frame's root fields, nested.
    fn record(&mut self) {
        self.out.extend_from_slice(br#"{"uid""#);
        self.colon();
        self.fake_uid();
        self.comma();
        self.out.extend_from_slice(br#""ts""#);
        self.colon();
        self.ts_like();
        self.out.push(b'}');
    }

    fn decoy_uid(&mut self, depth: usize) {
        match self.rng.random_range(0..100) {
            0..50 => self.fake_uid(),
            50..65 => self.int(),
            _ => self.value(depth + 1),
        }
    }

    fn decoy_ts(&mut self, depth: usize) {
        match self.rng.random_range(0..100) {
            0..40 => self.ts_like(),
            40..60 => {
                self.out.push(b'"');
                self.ts_like();
                self.out.push(b'"');
            }
            60..70 => self.float(),
            _ => self.value(depth + 1),
        }
    }
}

#[cfg(test)]
mod tests {
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
}
