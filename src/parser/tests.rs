use super::*;

fn ok(line: &str) -> (String, i64) {
    let f = parse_frame(line.as_bytes()).unwrap_or_else(|e| panic!("{line}: {e}"));
    (String::from_utf8(f.uid.into_owned()).unwrap(), f.ts)
}

fn err(line: &str) -> ParseError {
    err_bytes(line.as_bytes())
}

fn err_bytes(line: &[u8]) -> ParseError {
    let e = parse_frame(line).expect_err(&String::from_utf8_lossy(line));
    assert_eq!(
        Err(e),
        scalar::parse(line, &FrameSpec::DEFAULT),
        "scalar parser disagrees"
    );
    e
}

fn uid_bytes(line: &str) -> Vec<u8> {
    parse_frame(line.as_bytes())
        .unwrap_or_else(|e| panic!("{line}: {e}"))
        .uid
        .into_owned()
}

#[test]
fn plain_frame() {
    assert_eq!(
        ok(r#"{"uid":"abc","ts":1468244384}"#),
        ("abc".into(), 1468244384)
    );
}

#[test]
fn string_ts_and_any_key_order() {
    assert_eq!(
        ok(r#"{"ts":"1468244384","uid":"u1"}"#),
        ("u1".into(), 1468244384)
    );
}

#[test]
fn whitespace_and_crlf() {
    assert_eq!(ok(" { \"uid\" : \"a\" ,\t\"ts\" : 5 } \r"), ("a".into(), 5));
    assert_eq!(ok("\r\n\t{\"uid\":\"a\",\"ts\":5}\n"), ("a".into(), 5));
}

#[test]
fn nested_decoys_are_ignored() {
    let line = r#"{"meta":{"uid":"decoy","ts":1,"deeper":[{"uid":"x"}]},"ts":100,"arr":[1,{"ts":2},"uid"],"uid":"real"}"#;
    assert_eq!(ok(line), ("real".into(), 100));
}

#[test]
fn decoy_keys_inside_strings() {
    let line = r#"{"note":"\"uid\":\"fake\",\"ts\":1","uid":"real","ts":7}"#;
    assert_eq!(ok(line), ("real".into(), 7));
}

#[test]
fn brackets_and_escapes_inside_nested_strings() {
    let line = r#"{"a":{"s":"}]\\","t":"\\\"}{","u":["]","\\\\"]},"uid":"u","ts":3}"#;
    assert_eq!(ok(line), ("u".into(), 3));
}

#[test]
fn uid_escapes_and_unicode_are_decoded() {
    assert_eq!(
        ok(r#"{"uid":"a\"b\\c\n\u00e9\ud83d\ude00","ts":1}"#).0,
        "a\"b\\c\né😀"
    );
    assert_eq!(ok(r#"{"uid":"grüße 日本","ts":1}"#).0, "grüße 日本");
    // The same user written two ways is one user.
    assert_eq!(ok(r#"{"uid":"\u0061b","ts":1}"#).0, "ab");
    assert_eq!(
        ok(r#"{"uid":"\/\b\f\r\t\u001F","ts":1}"#).0,
        "/\x08\x0c\r\t\x1f"
    );
}

#[test]
fn escaped_root_key_is_still_the_key() {
    assert_eq!(ok(r#"{"\u0075id":"x","ts":9}"#), ("x".into(), 9));
    assert_eq!(ok(r#"{"uid":"x","\u0074\u0073":9}"#), ("x".into(), 9));
    // Escapes that spell something else are other keys.
    assert_eq!(err(r#"{"\u0075i":"x","ts":9}"#), ParseError::MissingUid);
    assert_eq!(err(r#"{"uid":"x","t\/s":9}"#), ParseError::MissingTs);
}

#[test]
fn repeated_uid_or_ts_is_a_duplicate_key_other_keys_may_repeat() {
    assert_eq!(
        ok(r#"{"a":1,"a":{"b":2},"uid":"x","ts":1,"a":[],"m":{"uid":1,"uid":2}}"#),
        ("x".into(), 1)
    );
    let dup = ParseError::DuplicateKey;
    assert_eq!(err(r#"{"uid":"x","ts":1,"uid":"y"}"#), dup("uid"));
    assert_eq!(err(r#"{"uid":"x","ts":1,"ts":2}"#), dup("ts"));
    assert_eq!(err(r#"{"uid":"x","ts":1,"\u0075id":"x"}"#), dup("uid"));
    assert_eq!(err(r#"{"t\u0073":1,"uid":"x","ts":1}"#), dup("ts"));
    // Before any other check on the values, and whatever they are.
    assert_eq!(err(r#"{"uid":"x","uid":5}"#), dup("uid"));
    assert_eq!(err(r#"{"uid":"x","uid":"x","ts":1}"#), dup("uid"));
    assert_eq!(dup("uid").reason(), "duplicate_key");
    // A syntax error still wins.
    assert_eq!(err(r#"{"uid":"x","uid":"x","ts":1"#), ParseError::Truncated);
    // Still fully checked after both are found.
    assert_eq!(
        err(r#"{"uid":"x","ts":1,"a":[{"b":2]"#),
        ParseError::Malformed(29)
    );
    assert_eq!(
        err(r#"{"uid":"x","ts":1,"a":2} z"#),
        ParseError::Malformed(25)
    );
}

#[test]
fn all_value_kinds_are_accepted() {
    let line =
        r#"{"n":-1.5e3,"t":true,"f":false,"z":null,"e":{},"ea":[],"s":"x","uid":"u","ts":1}"#;
    assert_eq!(ok(line), ("u".into(), 1));
    let nums =
        r#"[0,-0,1,-1,0.5,-0.5,1e5,1E+5,1e-5,10.25E-07,123456789012345678901234567890,1e400]"#;
    assert_eq!(
        ok(&format!(r#"{{"n":{nums},"uid":"u","ts":2}}"#)),
        ("u".into(), 2)
    );
}

#[test]
fn rejects_non_objects() {
    assert_eq!(err("[1,2]"), ParseError::NotAnObject('['));
    assert_eq!(err("[1}"), ParseError::NotAnObject('['));
    assert_eq!(err("\"uid\""), ParseError::NotAnObject('"'));
    assert_eq!(err("hello"), ParseError::NotAnObject('h'));
    assert_eq!(err("   "), ParseError::Empty);
    assert_eq!(err("\r"), ParseError::Empty);
    assert_eq!(err(""), ParseError::Empty);
}

#[test]
fn rejects_missing_fields() {
    assert_eq!(err(r#"{"ts":1}"#), ParseError::MissingUid);
    assert_eq!(err(r#"{"uid":"a"}"#), ParseError::MissingTs);
    assert_eq!(err(r#"{}"#), ParseError::MissingUid);
    assert_eq!(err(r#"{"x":{"uid":"a","ts":1}}"#), ParseError::MissingUid);
}

#[test]
fn rejects_bad_ts() {
    for ts in [
        r#""12a""#,
        "-5",
        "-0",
        "1.5",
        "1.0",
        "1e9",
        "1e5",
        "1E5",
        r#""""#,
        "null",
        "true",
        r#"" 1""#,
        r#""-1""#,
        "253402300800",
        r#""253402300800""#,
        r#""0000000000001""#,
        "123456789012345678901234567890",
        "{}",
        "[1]",
    ] {
        assert_eq!(
            err(&format!(r#"{{"uid":"a","ts":{ts}}}"#)),
            ParseError::BadTs,
            "{ts}"
        );
    }
}

#[test]
fn ts_forms_accepted() {
    for (ts, want) in [
        ("0", 0),
        ("253402300799", MAX_TS),
        (r#""253402300799""#, MAX_TS),
        // A digit string is decimal text: leading zeros are fine there.
        (r#""01468244404""#, 1468244404),
        (r#""000000000000""#, 0),
        // And it is compared after unescaping, like any JSON string.
        (r#""\u0031\u0032""#, 12),
    ] {
        assert_eq!(ok(&format!(r#"{{"uid":"a","ts":{ts}}}"#)).1, want, "{ts}");
    }
}

#[test]
fn rejects_non_string_uid() {
    assert_eq!(err(r#"{"uid":12,"ts":1}"#), ParseError::UidNotString);
    assert_eq!(
        err(r#"{"uid":{"id":"a"},"ts":1}"#),
        ParseError::UidNotString
    );
    assert_eq!(err(r#"{"uid":null}"#), ParseError::UidNotString);
    assert_eq!(err(r#"{"uid":"","ts":1}"#), ParseError::EmptyUid);
}

/// Every example of issue 7, spliced into an otherwise valid frame: rejected as
/// malformed at the first byte that cannot follow what comes before it.
#[test]
fn invalid_json_is_malformed_at_the_first_bad_byte() {
    const HEAD: &str = r#"{"uid":"a","ts":1,"x":"#;
    for (value, at) in [
        ("tru}", 3),
        ("truex}", 4),
        ("nul }", 3),
        ("NaN}", 0),
        ("Infinity}", 0),
        ("1.2.3}", 3),
        ("01}", 1),
        ("-01}", 2),
        ("+1}", 0),
        (".5}", 0),
        ("1.}", 2),
        ("1.e5}", 2),
        ("1e}", 2),
        ("1e+}", 3),
        ("-}", 1),
        ("0x1F}", 1),
        ("1 2}", 2),
        ("4-3}", 1),
        ("1+2}", 1),
        ("1e5-3}", 3),
        ("1e5e5}", 3),
        ("1e5.5}", 3),
        ("--1}", 1),
        ("-.5}", 1),
        ("1e+-5}", 3),
        ("[1}}", 2),
        ("{\"a\"}}", 4),
        ("{\"a\":}}", 5),
        ("{1:2}}", 1),
        ("{a:2}}", 1),
        ("[1,,2]}", 3),
        ("[1,]}", 3),
        ("[,1]}", 1),
        ("{\"a\":1,}}", 7),
        ("{\"a\" 1}}", 5),
        ("{\"a\":1 \"b\":2}}", 7),
        ("\"\\q\"}", 2),
        ("\"\\u12G4\"}", 5),
        ("\"\\U0041\"}", 2),
        ("\"\\x41\"}", 2),
        ("\"a\tb\"}", 2),
        ("\"a\0b\"}", 2),
        ("\"a\nb\"}", 2),
        ("\"a\x1fb\"}", 2),
        ("'a'}", 0),
        ("1]", 1),
        ("[1]]", 3),
        ("{}}}", 3),
        ("1\u{0c}}", 1),
        ("1,}", 2),
    ] {
        let line = format!("{HEAD}{value}");
        assert_eq!(
            err(&line),
            ParseError::Malformed(HEAD.len() + at),
            "{value:?}"
        );
    }
    for (line, at) in [
        (r#"{"uid":"a","ts":01468244404}"#, 17),
        (r#"{"uid":"a","ts":1,}"#, 18),
        (r#"{"uid":"a","ts":1}}"#, 18),
        (r#"{"uid":"a","ts":1}]"#, 18),
        (r#"{"uid":"a","ts":1} ,"#, 19),
        (r#"{"uid":"a","ts":1}{}"#, 18),
        (r#"{"uid":"a" "ts":1}"#, 11),
        (r#"{"uid":"a","ts":1,,"x":1}"#, 18),
        (r#"{,"uid":"a","ts":1}"#, 1),
        (r#"{"uid":"a\q","ts":1}"#, 10),
        ("{\"uid\":\"a\tb\",\"ts\":1}", 9),
        ("{\"uid\":\"\0\",\"ts\":1}", 8),
        ("\u{feff}{\"uid\":\"a\",\"ts\":1}", 0),
    ] {
        if line.starts_with('{') {
            assert_eq!(err(line), ParseError::Malformed(at), "{line}");
        } else {
            assert_eq!(err(line), ParseError::NotAnObject('\u{feff}'), "{line}");
        }
    }
}

#[test]
fn invalid_utf8_is_malformed_anywhere() {
    const HEAD: &[u8] = br#"{"uid":"a","ts":1,"x":"a"#;
    for (bytes, at) in [
        (&b"\xff"[..], 0),
        (b"\xfe", 0),
        (b"\x80", 0),
        (b"\xbf", 0),
        // Overlong forms.
        (b"\xc0\x80", 0),
        (b"\xc1\xbf", 0),
        (b"\xe0\x80\x80", 1),
        (b"\xe0\x9f\xbf", 1),
        (b"\xf0\x80\x80\x80", 1),
        (b"\xf0\x8f\xbf\xbf", 1),
        // Surrogates encoded in UTF-8, and beyond U+10FFFF.
        (b"\xed\xa0\x80", 1),
        (b"\xed\xbf\xbf", 1),
        (b"\xf4\x90\x80\x80", 1),
        (b"\xf5\x80\x80\x80", 0),
        // Sequences cut short.
        (b"\xc3\"", 1),
        (b"\xe2\x82\"", 2),
        (b"\xf0\x9f\x98\"", 3),
        (b"\xe2\x82a", 2),
        (b"\xc3\xc3\xa9", 1),
    ] {
        let line = [HEAD, bytes, b"\"}"].concat();
        assert_eq!(
            err_bytes(&line),
            ParseError::Malformed(HEAD.len() + at),
            "{bytes:x?}"
        );
    }
    // In the uid itself, in a key, and outside strings.
    assert_eq!(
        err_bytes(b"{\"uid\":\"a\xffb\",\"ts\":1}"),
        ParseError::Malformed(9)
    );
    assert_eq!(
        err_bytes(b"{\"k\xc0\":1,\"uid\":\"a\",\"ts\":1}"),
        ParseError::Malformed(3)
    );
    assert_eq!(
        err_bytes(b"{\"uid\":\"a\",\"ts\":1}\xff"),
        ParseError::Malformed(18)
    );
    assert_eq!(
        err_bytes("{\"uid\":\"a\",\"ts\":1,\"x\":é}".as_bytes()),
        ParseError::Malformed(22)
    );
    // Valid UTF-8 of every length is fine, U+10FFFF included.
    assert_eq!(
        ok("{\"uid\":\"\u{7f}\u{80}\u{7ff}\u{800}\u{d7ff}\u{e000}\u{ffff}\u{10000}\u{10ffff}\",\"ts\":1}").0,
        "\u{7f}\u{80}\u{7ff}\u{800}\u{d7ff}\u{e000}\u{ffff}\u{10000}\u{10ffff}"
    );
}

#[test]
fn lone_surrogates_stay_distinct_users() {
    let cases: [(&str, &[u8]); 8] = [
        (r"\ud800", b"\xed\xa0\x80"),
        (r"\udbff", b"\xed\xaf\xbf"),
        (r"\udc00", b"\xed\xb0\x80"),
        (r"\uDFFF", b"\xed\xbf\xbf"),
        (r"\ufffd", "\u{fffd}".as_bytes()),
        (r"\ud800\ud800", b"\xed\xa0\x80\xed\xa0\x80"),
        (r"\udc00\ud800", b"\xed\xb0\x80\xed\xa0\x80"),
        (r"\ud800x\udc00", b"\xed\xa0\x80x\xed\xb0\x80"),
    ];
    let mut seen = std::collections::HashSet::new();
    for (escaped, want) in cases {
        let got = uid_bytes(&format!(r#"{{"uid":"{escaped}","ts":1}}"#));
        assert_eq!(got, want, "{escaped}");
        assert!(seen.insert(got), "{escaped} collides");
    }
    // A pair is one character, spelled either way.
    assert_eq!(
        uid_bytes(r#"{"uid":"\ud83d\ude00","ts":1}"#),
        "😀".as_bytes()
    );
    assert_eq!(uid_bytes(r#"{"uid":"😀","ts":1}"#), "😀".as_bytes());
    // A lone surrogate in a key is just another key.
    assert_eq!(ok(r#"{"\ud800":1,"uid":"a","ts":1}"#), ("a".into(), 1));
}

#[test]
fn every_prefix_of_a_frame_is_truncated() {
    let line = "{\"a\":{\"b\":[1,\"x\\\"y\\u00e9é😀\",{\"c\":\"}\"}, -1.5e+3, true, null]},\"uid\":\"u\\\\\",\"ts\":\"12\",\"z\":[[[]]]}";
    ok(line);
    let bytes = line.as_bytes();
    for cut in 1..bytes.len() {
        assert_eq!(
            err_bytes(&bytes[..cut]),
            ParseError::Truncated,
            "prefix {cut}"
        );
    }
}

#[test]
fn rejects_trailing_garbage() {
    assert_eq!(err(r#"{"uid":"a","ts":1} x"#), ParseError::Malformed(19));
    assert_eq!(err(r#"{"uid":"a","ts":1}{}"#), ParseError::Malformed(18));
    assert_eq!(err(r#"{"uid":"a" "ts":1}"#), ParseError::Malformed(11));
}

#[test]
fn long_nested_values_cross_simd_blocks() {
    let filler = "é\\\"]}".repeat(40);
    let nested = format!(r#"{{"k":[{{"s":"{filler}"}},"{filler}",[{{"uid":"no"}}]]}}"#);
    let line = format!(r#"{{"x":{nested},"uid":"yes","y":{nested},"ts":42}}"#);
    assert_eq!(ok(&line), ("yes".into(), 42));
    // The same with an error at every position of a long line: a raw tab.
    let bytes = line.as_bytes();
    for at in 1..bytes.len() - 1 {
        if bytes[at] == b' ' || (bytes[at] as char).is_ascii_alphanumeric() {
            let mut bad = bytes.to_vec();
            bad[at] = 0;
            assert_eq!(err_bytes(&bad), ParseError::Malformed(at), "at {at}");
        }
    }
}

#[test]
fn deep_nesting_is_not_limited() {
    for depth in [63, 64, 65, 200, 100_000] {
        let open = "[".repeat(depth);
        let close = "]".repeat(depth);
        let line = format!(r#"{{"d":{open}{close},"uid":"a","ts":1}}"#);
        assert_eq!(ok(&line), ("a".into(), 1), "{depth}");
        let line = format!(r#"{{"d":{open}{close}],"uid":"a","ts":1}}"#);
        assert_eq!(err(&line), ParseError::Malformed(5 + 2 * depth), "{depth}");
        let line = format!(r#"{{"d":{open}"#);
        assert_eq!(err(&line), ParseError::Truncated, "{depth}");
    }
    let objects = r#"{"a":"#.repeat(1000) + "1" + &"}".repeat(1000);
    assert_eq!(
        ok(&format!(r#"{{"d":{objects},"uid":"a","ts":1}}"#)),
        ("a".into(), 1)
    );
}

#[test]
fn unescape_is_wtf8() {
    assert_eq!(unescape(br"a\u00e9\n").unwrap(), "aé\n".as_bytes());
    assert_eq!(unescape(br"\ud800\u0041").unwrap(), b"\xed\xa0\x80A");
    assert_eq!(unescape(br"\ud800\n").unwrap(), b"\xed\xa0\x80\n");
    assert_eq!(unescape(br"\u+123"), None);
    assert_eq!(unescape(br"\q"), None);
    assert_eq!(unescape(br"\u12"), None);
}

mod boundaries;
mod paths;

fn spec(uid: &str, ts: &str, unit: TsUnit) -> FrameSpec {
    FrameSpec::new(uid, ts, unit).unwrap()
}

/// Parsed under `spec`, by every path (the fast ones must agree with the scalar one).
fn with(line: &str, spec: &FrameSpec) -> Result<(String, i64), ParseError> {
    paths::agree_with(line.as_bytes(), spec).unwrap();
    parse_frame_with(line.as_bytes(), spec)
        .map(|f| (String::from_utf8(f.uid.into_owned()).unwrap(), f.ts))
}

#[test]
fn ts_units_are_floored_to_seconds() {
    let ms = spec("uid", "ts", TsUnit::Millis);
    let us = spec("uid", "ts", TsUnit::Micros);
    for (ts, spec, want) in [
        ("1468244384123", &ms, 1468244384),
        ("1468244384999", &ms, 1468244384),
        ("\"1468244384000\"", &ms, 1468244384),
        ("0", &ms, 0),
        ("999", &ms, 0),
        ("1468244384123456", &us, 1468244384),
        ("\"000000000000000001\"", &us, 0),
        ("253402300799999", &ms, MAX_TS),
        ("253402300799999999", &us, MAX_TS),
    ] {
        let line = format!(r#"{{"uid":"a","ts":{ts}}}"#);
        assert_eq!(with(&line, spec), Ok(("a".into(), want)), "{line}");
    }
    // Beyond the last second, negative, too many digits, or not an integer.
    for (ts, spec) in [
        ("253402300800000", &ms),
        ("253402300800000000", &us),
        ("-1", &ms),
        ("-1468244384123", &ms),
        ("\"0000000000000001\"", &ms),
        ("9999999999999999999", &us),
        ("1468244384123.5", &ms),
        ("1e12", &ms),
    ] {
        let line = format!(r#"{{"uid":"a","ts":{ts}}}"#);
        assert_eq!(with(&line, spec), Err(ParseError::BadTs), "{line}");
    }
    // Milliseconds in a seconds stream are beyond the year 9999 at 13 digits.
    assert_eq!(err(r#"{"uid":"a","ts":1468244384123}"#), ParseError::BadTs);
}

#[test]
fn other_field_names_replace_uid_and_ts() {
    let s = spec("user", "time", TsUnit::Seconds);
    // `uid` and `ts` are now just other keys, at the root or nested.
    let line = r#"{"uid":"decoy","ts":1,"m":{"user":"x","time":2},"time":100,"user":"real"}"#;
    assert_eq!(with(line, &s), Ok(("real".into(), 100)));
    assert_eq!(
        with(r#"{"uid":"a","ts":1}"#, &s),
        Err(ParseError::MissingUid)
    );
    assert_eq!(
        with(r#"{"user":"a","ts":1}"#, &s),
        Err(ParseError::MissingTs)
    );
    // Names the fast path's first-byte filter (`u`, `t`, `\`) would never look at.
    let s = spec("a", "b", TsUnit::Millis);
    assert_eq!(with(r#"{"b":5000,"a":"x"}"#, &s), Ok(("x".into(), 5)));
    // Names that are prefixes of the defaults, and the defaults swapped.
    let s = spec("u", "t", TsUnit::Seconds);
    assert_eq!(
        with(r#"{"uid":"no","u":"x","ts":1,"t":7}"#, &s),
        Ok(("x".into(), 7))
    );
    let s = spec("ts", "uid", TsUnit::Seconds);
    assert_eq!(with(r#"{"ts":"x","uid":7}"#, &s), Ok(("x".into(), 7)));
    // Non-ASCII and quoted names.
    let s = spec("ユーザー", "\"t\"", TsUnit::Seconds);
    assert_eq!(
        with(r#"{"ユーザー":"x","\"t\"":3}"#, &s),
        Ok(("x".into(), 3))
    );
}

#[test]
fn other_field_names_match_escaped_keys_as_uid_does() {
    let s = spec("user", "time", TsUnit::Seconds);
    assert_eq!(
        with(r#"{"\u0075ser":"x","time":9}"#, &s),
        Ok(("x".into(), 9))
    );
    assert_eq!(
        with(r#"{"user":"x","\u0074\u0069\u006D\u0065":9}"#, &s),
        Ok(("x".into(), 9))
    );
    assert_eq!(
        with(r#"{"us\u0065r":"x","time":9}"#, &s),
        Ok(("x".into(), 9))
    );
    // Escapes that spell something else are other keys.
    assert_eq!(
        with(r#"{"\u0075se":"x","time":9}"#, &s),
        Err(ParseError::MissingUid)
    );
    assert_eq!(
        with(r#"{"user":"x","t\/ime":9}"#, &s),
        Err(ParseError::MissingTs)
    );
    // A second one, however spelled, is a duplicate, named by its role.
    assert_eq!(
        with(r#"{"user":"x","time":1,"\u0075ser":"y"}"#, &s),
        Err(ParseError::DuplicateKey("uid"))
    );
    // Non-ASCII names, escaped as one \u or as a surrogate pair.
    let s = spec("é", "𝑡", TsUnit::Seconds);
    assert_eq!(
        with(r#"{"\u00e9":"x","\ud835\udc61":4}"#, &s),
        Ok(("x".into(), 4))
    );
    assert_eq!(with(r#"{"\u00E9":"x","𝑡":4}"#, &s), Ok(("x".into(), 4)));
    // A lone surrogate is never a valid name.
    assert_eq!(
        with(r#"{"é":"x","\ud835":4}"#, &s),
        Err(ParseError::MissingTs)
    );
}

#[test]
fn errors_name_the_fields_and_unit_of_the_spec() {
    let s = spec("user", "time", TsUnit::Millis);
    assert_eq!(
        ParseError::MissingUid.describe(&s),
        r#"no root-level "user""#
    );
    assert_eq!(
        ParseError::DuplicateKey("ts").describe(&s),
        r#"root-level "time" appears more than once"#
    );
    assert_eq!(
        ParseError::BadTs.describe(&s),
        r#"root-level "time" is not a whole number of milliseconds (--ts-unit ms) between 0 and 253402300799999"#
    );
    let d = FrameSpec::default();
    for e in [
        ParseError::BadTs,
        ParseError::MissingUid,
        ParseError::DuplicateKey("uid"),
    ] {
        assert_eq!(e.describe(&d), e.to_string());
    }
    assert!(FrameSpec::new("a", "a", TsUnit::Seconds).is_err());
    assert!(FrameSpec::new("", "a", TsUnit::Seconds).is_err());
}

/// The generated frames are what the benchmark measures: the fast path must answer
/// for every one of them, else the throughput is the scalar parser's.
#[test]
fn fast_path_answers_for_generated_frames() {
    use crate::generator::{FrameGen, GenConfig};
    let cfg = GenConfig {
        frames: 300,
        string_ts: 0.1,
        ..GenConfig::default()
    };
    for f in FrameGen::new(&cfg) {
        let line = &f.line;
        for (name, path) in paths::fast_paths("fast_path_answers_for_generated_frames") {
            // SAFETY: `fast_paths` lists only the paths whose features it detected.
            let answer = unsafe { path(line, &FrameSpec::DEFAULT) };
            assert!(
                answer.is_some(),
                "{name}: {}",
                String::from_utf8_lossy(line)
            );
        }
    }
}

/// `--uid-from key` or `--ts-from record-timestamp`: the field the record provides is
/// not looked for (its key is any other key, even repeated or of any type), the
/// other one is checked as ever, and the whole line must still be valid JSON.
#[test]
fn a_field_taken_from_the_record_is_not_looked_for() {
    let key_uid = FrameSpec::DEFAULT.taking(UidFrom::Key, TsFrom::Json);
    let record_ts = FrameSpec::DEFAULT.taking(UidFrom::Json, TsFrom::RecordTimestamp);
    // Missing, repeated, empty or not a string: the uid does not matter.
    for line in [
        r#"{"ts":7}"#,
        r#"{"uid":"a","uid":"b","ts":7}"#,
        r#"{"uid":"","ts":7}"#,
        r#"{"uid":5,"ts":"7"}"#,
        r#"{"\u0075id":1,"uid":[],"ts":7}"#,
    ] {
        assert_eq!(with(line, &key_uid), Ok((String::new(), 7)), "{line}");
    }
    // The ts is still required and checked.
    assert_eq!(with(r#"{"uid":"a"}"#, &key_uid), Err(ParseError::MissingTs));
    assert_eq!(with(r#"{"ts":1.5}"#, &key_uid), Err(ParseError::BadTs));
    assert_eq!(
        with(r#"{"ts":1,"ts":2}"#, &key_uid),
        Err(ParseError::DuplicateKey("ts"))
    );
    // The same, the other way round.
    for line in [
        r#"{"uid":"a"}"#,
        r#"{"uid":"a","ts":"soon","ts":-1}"#,
        r#"{"uid":"a","ts":1.5}"#,
    ] {
        assert_eq!(with(line, &record_ts), Ok(("a".into(), 0)), "{line}");
    }
    assert_eq!(with(r#"{"ts":1}"#, &record_ts), Err(ParseError::MissingUid));
    assert_eq!(
        with(r#"{"uid":"","ts":1}"#, &record_ts),
        Err(ParseError::EmptyUid)
    );
    // The whole-line rule is unchanged, for both.
    for spec in [&key_uid, &record_ts] {
        assert_eq!(
            with(r#"{"uid":"a" "ts":1}"#, spec),
            Err(ParseError::Malformed(11))
        );
        assert_eq!(
            with(r#"{"uid":"a","ts":1"#, spec),
            Err(ParseError::Truncated)
        );
        assert_eq!(with("[1]", spec), Err(ParseError::NotAnObject('[')));
        assert_eq!(with("", spec), Err(ParseError::Empty));
    }
    // Under other names too.
    let named = spec("user", "time", TsUnit::Millis).taking(UidFrom::Key, TsFrom::Json);
    assert_eq!(
        with(r#"{"user":1,"time":5000}"#, &named),
        Ok((String::new(), 5))
    );
}
