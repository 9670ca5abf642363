//! `cardinal run` against the reference broker, Apache Kafka (a KRaft node per test,
//! `common::apache`), on a SASL_PLAINTEXT listener of its own that requires
//! SCRAM-SHA-512: the right password through `-X` properties, and a wrong one. The
//! user is made with Kafka's ConfigCommand; topics and frames are set up through
//! the broker's PLAINTEXT listener.

mod common;

use std::process::Stdio;
use std::time::Duration;

use cardinal::generator::GenConfig;
use cardinal::window::Granularity;
use common::apache::ApacheKafka;
use common::{cardinal, output_within};

const USER: &str = "cardinal";
const PASSWORD: &str = "correct horse battery staple";

/// A broker holding `cfg`'s frames in a 2-partition `frames` topic, with a SCRAM user;
/// its SASL listener (`listener_addr`) requires authentication.
fn authenticating_broker(cfg: &GenConfig) -> ApacheKafka {
    let kafka = ApacheKafka::start_with_listener("SASL_PLAINTEXT", |_| {
        "sasl.enabled.mechanisms=SCRAM-SHA-512\n\
         listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=\
         org.apache.kafka.common.security.scram.ScramLoginModule required;\n"
            .to_string()
    });
    kafka.create_topic("frames", 2, false);
    kafka.create_scram_user(USER, PASSWORD, 512);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("frames.json");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
    cardinal::generator::generate(cfg, &mut f).unwrap();
    drop(f);
    common::produce_keyed(kafka.addr(), "frames", &file);
    kafka
}

fn run_with_password(kafka: &ApacheKafka, password: &str) -> std::process::Output {
    run_with(kafka, password, "5s", Duration::from_secs(120))
}

fn run_with(
    kafka: &ApacheKafka,
    password: &str,
    timeout: &str,
    limit: Duration,
) -> std::process::Output {
    let child = cardinal()
        .args([
            "run",
            "-b",
            kafka.listener_addr(),
            "-t",
            "frames",
            "--until-end",
        ])
        .args([
            "--windows",
            "minute",
            "--format",
            "json",
            "--timeout",
            timeout,
        ])
        .args(["-X", "session.timeout.ms=6000"])
        .args(["-X", "security.protocol=SASL_PLAINTEXT"])
        .args(["-X", "sasl.mechanism=SCRAM-SHA-512"])
        .args(["-X", &format!("sasl.username={USER}")])
        .args(["-X", &format!("sasl.password={password}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    output_within(child, limit)
}

#[test]
fn a_run_authenticated_with_scram_counts_exactly() {
    let cfg = GenConfig {
        frames: 3000,
        rate: 20.0,
        users: 500,
        seed: 44,
        ..GenConfig::default()
    };
    let kafka = authenticating_broker(&cfg);
    // The broker really refuses a client that does not authenticate.
    let o = cardinal()
        .args([
            "run",
            "-b",
            kafka.listener_addr(),
            "-t",
            "frames",
            "--until-end",
        ])
        .args(["--timeout", "3s"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let o = output_within(o, Duration::from_secs(60));
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    let o = run_with_password(&kafka, PASSWORD);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let got = common::minute_counts(&o.stdout);
    let want: std::collections::BTreeMap<i64, u64> =
        common::expected_from_truth(&cfg, &[Granularity::Minute])
            .into_iter()
            .map(|((_, start), n)| (start.parse::<jiff::Timestamp>().unwrap().as_second(), n))
            .collect();
    assert!(want.len() > 2, "{want:?}");
    assert_eq!(got, want, "{err}");
}

#[test]
fn a_wrong_password_fails_naming_the_broker_and_the_authentication() {
    let cfg = GenConfig {
        frames: 200,
        seed: 45,
        ..GenConfig::default()
    };
    let kafka = authenticating_broker(&cfg);
    // A refused login is not retried until --timeout (here 10 minutes): it fails at
    // once, well within the 2 minutes the test gives it.
    let o = run_with(&kafka, "not the password", "600s", Duration::from_secs(120));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("cannot reach Kafka at {}", kafka.listener_addr()))
            // Cardinal's own words; the client's quoted reason is the broker's, and
            // differs between brokers (Tansu: "SASL SCRAM authentication failed").
            && err.contains("authentication refused"),
        "{err}"
    );
    assert!(o.stdout.is_empty(), "nothing counted");
}
