//! How the generator writes JSON: the root fields in their many spellings, and the
//! bulk of a frame (nested values, decoy keys, escapes, raw UTF-8) from a pool of
//! pre-rendered values.

use rand::Rng;
use rand_pcg::Pcg64Mcg;

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum UidField {
    Str,
    Missing,
    Number,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TsField {
    Int(i64),
    Str(i64),
    Float(i64),
    BadString,
    Missing,
}

/// `p <= 0` draws nothing, so turning a feature off does not consume
/// randomness (and costs nothing on the hot path).
pub(super) fn chance(rng: &mut Pcg64Mcg, p: f64) -> bool {
    p > 0.0 && rng.random::<f64>() < p
}

pub(super) fn sep(buf: &mut Vec<u8>, first: &mut bool, spaced: bool) {
    if !*first {
        buf.extend_from_slice(if spaced { b", " } else { b"," });
    }
    *first = false;
}

pub(super) fn colon(buf: &mut Vec<u8>, spaced: bool) {
    buf.extend_from_slice(if spaced { b": " } else { b":" });
}

pub(super) fn push_u64(buf: &mut Vec<u8>, mut v: u64) {
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

pub(super) fn push_i64(buf: &mut Vec<u8>, v: i64) {
    if v < 0 {
        buf.push(b'-');
    }
    push_u64(buf, v.unsigned_abs());
}

/// A family of uids that stress decoding: each spelling is JSON string
/// content (without quotes) decoding to `decoded`; the user number follows.
pub(super) struct Exotic {
    pub(super) decoded: &'static str,
    pub(super) spellings: &'static [&'static [u8]],
}

pub(super) const EXOTIC: &[Exotic] = &[
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
pub(super) fn exotic(user: u64) -> Option<&'static Exotic> {
    let h = mix(user);
    h.is_multiple_of(20)
        .then(|| &EXOTIC[((h >> 32) % EXOTIC.len() as u64) as usize])
}

/// splitmix64's finalizer: cheap, and spreads consecutive users apart.
pub(super) fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

pub(super) fn decoded_uid(user: u64) -> String {
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
pub(super) const ROOT_KEYS: &[&[u8]] = &[
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
pub(super) const NESTED_KEYS: &[&[u8]] = &[
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
pub(super) const FRAGMENTS: &[&[u8]] = &[
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

/// Root keys of the challenge-shaped profile: short and plain.
pub(super) const SHORT_KEYS: &[&[u8]] = &[
    br#""a""#,
    br#""b""#,
    br#""c""#,
    br#""d""#,
    br#""e""#,
    br#""f""#,
    br#""id""#,
    br#""msg""#,
    br#""text""#,
    br#""tags""#,
    br#""body""#,
    br#""note""#,
];

/// String content of the challenge-shaped profile: what makes it hard is that
/// about one byte in eight belongs to an escape, and a third of the text is
/// two-byte Cyrillic.
pub(super) const ESCAPED_TEXT: &[&[u8]] = &[
    br"\t",
    br#"\""#,
    br"\\",
    br"\n",
    br"\f",
    br"\t\t",
    br#"\"\\"#,
    b" ",
    b"lorem ipsum dolor",
    b"sit amet",
    b"consectetur adipiscing",
    "Привет".as_bytes(),
    "съешь же ещё этих мягких французских булок".as_bytes(),
    "да выпей чаю".as_bytes(),
    "Ёжик".as_bytes(),
];

/// Lines that are not JSON objects; several still mention uid/ts.
pub(super) const NOT_OBJECTS: &[&[u8]] = &[
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
pub(super) struct Pool {
    pub(super) bytes: Vec<u8>,
    pub(super) spans: Vec<(usize, usize)>,
}

impl Pool {
    const SIZE: usize = 1024;
    pub(super) fn build(
        seed: u64,
        users: u64,
        start: i64,
        frame_bytes: usize,
        profile: Profile,
    ) -> Pool {
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
            match profile {
                Profile::Mixed => w.value(1),
                Profile::Challenge => w.challenge_value(),
            }
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
pub(super) struct ValueWriter {
    pub(super) rng: Pcg64Mcg,
    pub(super) out: Vec<u8>,
    pub(super) spaced: bool,
    pub(super) users: u64,
    pub(super) start: i64,
}

impl ValueWriter {
    pub(super) fn value(&mut self, depth: usize) {
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

    /// A root value of the challenge-shaped profile: mostly long escaped
    /// strings, some arrays of them, a few flat objects and numbers.
    pub(super) fn challenge_value(&mut self) {
        match self.rng.random_range(0..100) {
            0..70 => self.escaped_string(),
            70..88 => {
                self.out.push(b'[');
                for i in 0..self.rng.random_range(1..=6) {
                    if i > 0 {
                        self.comma();
                    }
                    self.escaped_string();
                }
                self.out.push(b']');
            }
            88..95 => {
                self.out.push(b'{');
                for i in 0..self.rng.random_range(1..=3) {
                    if i > 0 {
                        self.comma();
                    }
                    self.out
                        .extend_from_slice(SHORT_KEYS[self.rng.random_range(0..SHORT_KEYS.len())]);
                    self.colon();
                    self.escaped_string();
                }
                self.out.push(b'}');
            }
            _ => self.int(),
        }
    }

    fn escaped_string(&mut self) {
        self.out.push(b'"');
        for _ in 0..self.rng.random_range(4..=40) {
            let piece = ESCAPED_TEXT[self.rng.random_range(0..ESCAPED_TEXT.len())];
            self.out.extend_from_slice(piece);
        }
        self.out.push(b'"');
    }

    pub(super) fn scalar(&mut self) {
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

    pub(super) fn string(&mut self) {
        self.out.push(b'"');
        for _ in 0..self.rng.random_range(1..=5) {
            let frag = FRAGMENTS[self.rng.random_range(0..FRAGMENTS.len())];
            self.out.extend_from_slice(frag);
        }
        self.out.push(b'"');
    }

    pub(super) fn int(&mut self) {
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

    pub(super) fn float(&mut self) {
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

    pub(super) fn ts_like(&mut self) {
        let t = self.start + self.rng.random_range(-100_000..=100_000);
        push_i64(&mut self.out, t);
    }

    pub(super) fn fake_uid(&mut self) {
        self.out.extend_from_slice(b"\"u-");
        push_u64(&mut self.out, self.rng.random_range(0..self.users));
        self.out.push(b'"');
    }

    pub(super) fn comma(&mut self) {
        self.out
            .extend_from_slice(if self.spaced { b", " } else { b"," });
    }

    pub(super) fn colon(&mut self) {
        self.out
            .extend_from_slice(if self.spaced { b": " } else { b":" });
    }

    pub(super) fn object(&mut self, depth: usize) {
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

    pub(super) fn array(&mut self, depth: usize) {
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
    pub(super) fn record(&mut self) {
        self.out.extend_from_slice(br#"{"uid""#);
        self.colon();
        self.fake_uid();
        self.comma();
        self.out.extend_from_slice(br#""ts""#);
        self.colon();
        self.ts_like();
        self.out.push(b'}');
    }

    pub(super) fn decoy_uid(&mut self, depth: usize) {
        match self.rng.random_range(0..100) {
            0..50 => self.fake_uid(),
            50..65 => self.int(),
            _ => self.value(depth + 1),
        }
    }

    pub(super) fn decoy_ts(&mut self, depth: usize) {
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
