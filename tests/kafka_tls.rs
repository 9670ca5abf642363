//! `security.protocol=ssl` end to end on the reference broker, Apache Kafka (a KRaft
//! node per test, `common::apache`), on an SSL listener of its own (before, Tansu
//! 0.6, which serves plain TCP, sat behind stunnel4), with a CA and a server
//! certificate that the test makes with openssl. Expected counts come from the
//! generator's ground truth.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cardinal::generator::GenConfig;
use cardinal::kafka::KafkaOptions;
use cardinal::window::Granularity;
use common::apache::ApacheKafka;
use common::cardinal;
use serde_json::Value;

fn openssl(dir: &Path, args: &[&str]) {
    let o = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A CA, and a certificate for 127.0.0.1 signed by it: (ca.pem, server.pem, server.key).
fn certificates(dir: &Path, ca: &str) -> (PathBuf, PathBuf, PathBuf) {
    let key = format!("{ca}.key");
    let pem = format!("{ca}.pem");
    openssl(
        dir,
        &[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &pem,
        ]
        .into_iter()
        .chain(["-days", "2", "-subj", &format!("/CN={ca}")])
        .collect::<Vec<_>>(),
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            &pem,
            "-CAkey",
            &key,
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
    (
        dir.join(pem),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

/// A broker whose SSL listener presents `cert` (signed by `ca`) with `key`, from a
/// PKCS12 keystore made of them with openssl.
fn tls_broker(dir: &Path, ca: &Path, cert: &Path, key: &Path) -> ApacheKafka {
    let keystore = dir.join("broker.p12");
    openssl(
        dir,
        &[
            "pkcs12",
            "-export",
            "-in",
            cert.to_str().unwrap(),
            "-inkey",
            key.to_str().unwrap(),
            "-certfile",
            ca.to_str().unwrap(),
            "-name",
            "broker",
            "-out",
            keystore.to_str().unwrap(),
            "-passout",
            "pass:changeit",
        ],
    );
    ApacheKafka::start_with_listener("SSL", |_| {
        format!(
            "ssl.keystore.type=PKCS12\nssl.keystore.location={}\n\
             ssl.keystore.password=changeit\nssl.key.password=changeit\n",
            keystore.display()
        )
    })
}

#[test]
fn frames_and_results_go_through_tls_and_a_wrong_ca_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(dir.path(), "test-ca");
    let broker = tls_broker(dir.path(), &ca, &cert, &key);
    let front = broker.listener_addr().to_string();
    let ssl = ["-X", "security.protocol=ssl", "-X"];
    let ca_location = format!("ssl.ca.location={}", ca.display());

    let opts = KafkaOptions {
        brokers: front.clone(),
        client_config: None,
        properties: vec![
            ("security.protocol".into(), "ssl".into()),
            ("ssl.ca.location".into(), ca.display().to_string()),
        ],
        timeout: Duration::from_secs(10),
    };
    cardinal::kafka::create_topic(&opts, "frames", 2, false).unwrap();
    let cfg = GenConfig {
        frames: 5000,
        rate: 50.0,
        users: 300,
        seed: 17,
        ..GenConfig::default()
    };
    let file = dir.path().join("frames.json");
    cardinal::generator::generate(&cfg, &mut std::fs::File::create(&file).unwrap()).unwrap();
    let o = cardinal()
        .args(["produce", "-b", &front, "-t", "frames"])
        .args(ssl)
        .arg(&ca_location)
        .arg(&file)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = cardinal()
        .args([
            "run",
            "-b",
            &front,
            "-t",
            "frames",
            "--until-end",
            "--format",
            "json",
        ])
        .args(ssl)
        .arg(&ca_location)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got: std::collections::BTreeMap<(String, String), u64> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                (
                    v["window"].as_str().unwrap().to_string(),
                    v["start"].as_str().unwrap().to_string(),
                ),
                v["unique_users"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        common::expected_from_truth(&cfg, &[Granularity::Minute])
    );

    // A CA that did not sign the broker's certificate: exit 1, within the timeout,
    // naming the broker and saying that the certificate did not verify.
    let (other_ca, _, _) = certificates(dir.path(), "other-ca");
    let started = Instant::now();
    let o = cardinal()
        .args([
            "run",
            "-b",
            &front,
            "-t",
            "frames",
            "--until-end",
            "--timeout",
            "5s",
        ])
        .args(ssl)
        .arg(format!("ssl.ca.location={}", other_ca.display()))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert!(err.contains(&front), "{err}");
    assert!(
        err.to_lowercase().contains("certificate verify failed"),
        "{err}"
    );
}
