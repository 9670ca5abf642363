//! `security.protocol=ssl` end to end: a Tansu broker behind a TLS endpoint
//! (Debian's stunnel4; Tansu 0.6 accepts --cert but serves plain TCP), with a CA and
//! a server certificate that the test makes with openssl. scripts/test.sh installs
//! stunnel4. Expected counts come from the generator's ground truth.

mod common;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cardinal::generator::GenConfig;
use cardinal::kafka::KafkaOptions;
use cardinal::tansu::{Engine, Tansu};
use cardinal::window::Granularity;
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

/// stunnel terminating TLS on `front` and forwarding to `back`, killed when dropped.
struct Tls(Child);

impl Tls {
    fn start(dir: &Path, front: &str, back: &str, cert: &Path, key: &Path) -> Tls {
        let conf = dir.join("stunnel.conf");
        std::fs::write(
            &conf,
            format!(
                "foreground = yes\npid =\n[kafka]\naccept = {front}\nconnect = {back}\ncert = {}\nkey = {}\n",
                cert.display(),
                key.display()
            ),
        )
        .unwrap();
        let child = Command::new("stunnel4")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("stunnel4 (scripts/test.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(front).is_err() {
            assert!(
                Instant::now() < deadline,
                "stunnel did not listen on {front}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Tls(child)
    }
}

impl Drop for Tls {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn frames_and_results_go_through_tls_and_a_wrong_ca_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(dir.path(), "test-ca");
    let front = format!(
        "127.0.0.1:{}",
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    );
    let broker = Tansu::start_behind(Engine::Sqlite, &front).unwrap();
    let _tls = Tls::start(dir.path(), &front, broker.addr(), &cert, &key);
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
