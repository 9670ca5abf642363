//! Settings from the environment (`CARDINAL_*`) and librdkafka properties from a
//! file (`-F`), end to end on the reference broker, Apache Kafka (one KRaft node
//! shared by this file's tests, on a topic and group of the test's own, also when
//! they come from `CARDINAL_TOPIC` and `CARDINAL_GROUP`, `common::apache`); and the
//! errors a bad setting gives, which must name the file and line and never show a
//! secret.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::apache::{ApacheKafka, Names};
use common::cardinal;

/// The binary with no `CARDINAL_*` or `RUST_LOG` from the caller's environment.
fn clean() -> Command {
    let mut c = cardinal();
    for (k, _) in std::env::vars() {
        if k.starts_with("CARDINAL_") && k != "CARDINAL_BIN" || k == "RUST_LOG" {
            c.env_remove(k);
        }
    }
    c
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn frames(n: usize) -> (String, Vec<(String, i64)>) {
    let mut text = String::new();
    let mut valid = Vec::new();
    for i in 0..n {
        let uid = format!("u{}", (i * 7919) % 613);
        let ts = 1_650_000_000 + (i as i64) / 3;
        text.push_str(&format!(r#"{{"uid":"{uid}","ts":{ts},"i":{i}}}"#));
        text.push('\n');
        valid.push((uid, ts));
    }
    (text, valid)
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[test]
fn a_backfill_configured_from_the_environment_and_a_properties_file_counts_exactly() {
    let (kafka, names) = (ApacheKafka::shared(), Names::of_this_test());
    let (clicks, group) = (names.get("clicks"), names.get("from-env"));
    kafka.create_topic(&clicks, 2, false);
    let dir = tempfile::tempdir().unwrap();
    let (text, valid) = frames(5000);
    let file = dir.path().join("frames.json");
    write(&file, &text);

    // `produce` takes its brokers from the environment.
    let o = clean()
        .env("CARDINAL_BROKERS", kafka.addr())
        .args(["produce", "-t", &clicks])
        .arg(&file)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));

    // The brokers and a secret come from the file; a bad value there is overridden
    // by -X, which is applied after it.
    let props = dir.path().join("client.properties");
    write(
        &props,
        &format!(
            "# as kcat -F reads it\n\nbootstrap.servers={}\nsession.timeout.ms = 6000\n\
             sasl.password=hunter2-from-the-file\n! another comment\nauto.offset.reset=bogus\n",
            kafka.addr()
        ),
    );
    let child = clean()
        .env("CARDINAL_CLIENT_CONFIG", &props)
        .env("CARDINAL_TOPIC", &clicks)
        .env("CARDINAL_GROUP", &group)
        .env("CARDINAL_FORMAT", "json")
        .env("RUST_LOG", "cardinal=debug")
        .args(["run", "--until-end", "-X", "auto.offset.reset=earliest"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let o = common::output_within(child, Duration::from_secs(120));
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert_eq!(
        common::minute_counts(&o.stdout),
        common::distinct_per_minute(valid.iter().map(|(u, t)| (u.as_str(), *t))),
    );
    // The effective settings are logged at debug, the secret masked.
    assert!(err.contains("sasl.password=[masked]"), "{err}");
    assert!(err.contains("auto.offset.reset=earliest"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");

    // --help shows the variables.
    let o = clean().args(["run", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&o.stdout);
    for var in [
        "CARDINAL_BROKERS",
        "CARDINAL_TOPIC",
        "CARDINAL_GROUP",
        "CARDINAL_CLIENT_CONFIG",
    ] {
        assert!(help.contains(var), "{var} not in run --help");
    }
}

#[test]
fn bad_settings_name_the_file_and_line_and_never_show_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let props = dir.path().join("client.properties");
    let run = |extra: &[&str]| {
        clean()
            .args(["run", "-b", "127.0.0.1:1", "-t", "t", "--timeout", "2s"])
            .args(extra)
            .output()
            .unwrap()
    };

    // A line that is not KEY=VALUE: the file and line, not the line's text.
    write(&props, "a.b=1\n\nsasl.password hunter2-no-equals\n");
    let o = run(&["-F", props.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let want = format!("{}:3: expected KEY=VALUE", props.display());
    assert!(stderr(&o).contains(&want), "{}", stderr(&o));
    assert!(!stderr(&o).contains("hunter2"), "{}", stderr(&o));

    // A misspelt secret key, in the file or with -X: librdkafka refuses it, and
    // its message would quote the value.
    write(&props, "# secrets\nsasl.passwrd=hunter2-misspelt\n");
    let o = run(&["-F", props.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let want = format!("sasl.passwrd: set in {} line 2", props.display());
    assert!(stderr(&o).contains(&want), "{}", stderr(&o));
    assert!(!stderr(&o).contains("hunter2"), "{}", stderr(&o));
    let o = run(&["-X", "ssl.key.passwrd=hunter3-misspelt"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("ssl.key.passwrd: set with -X"),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("hunter3"), "{}", stderr(&o));

    // A -X that is not KEY=VALUE (a password whose `=` was forgotten): which -X, not
    // its text (clap's own error used to quote it).
    let o = run(&["-X", "a=b", "-X", "sasl.password:hunter4-no-equals"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("-X number 2"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("hunter4"), "{}", stderr(&o));

    // A file that cannot be read is named.
    let o = run(&["-F", "/no/such/client.properties"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("/no/such/client.properties"),
        "{}",
        stderr(&o)
    );

    // No brokers anywhere is a usage error that says where they may come from.
    let o = clean().args(["run", "-t", "t"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("CARDINAL_BROKERS"), "{}", stderr(&o));
}
