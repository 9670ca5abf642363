//! A local Tansu broker (crates.io `tansu`, Apache-2.0) that Cardinal starts and
//! stops itself: for `demo --broker tansu`, the Kafka tests and the Kafka benchmark.
//! Install it with `scripts/kafka.sh install`.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::kafka::{self, KafkaOptions};

/// Tansu's storage engines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// Right offsets, survives restarts: for everything that checks correctness.
    Sqlite,
    /// Fast, but its ListOffsets answers are wrong: only for reading a topic
    /// sequentially from the start, as the benchmark does.
    Memory,
}

#[derive(Debug, Error)]
pub enum TansuError {
    #[error(
        "Tansu is not installed (looked in PATH and ~/.cargo/bin): run scripts/kafka.sh install"
    )]
    NotInstalled,
    #[error("cannot start Tansu: {0}")]
    Start(#[from] std::io::Error),
    #[error("Tansu did not answer on {0} within 30 s")]
    NoAnswer(String),
    #[error(transparent)]
    Topic(#[from] crate::pipeline::PipelineError),
    #[error("cannot create the Tansu user {0}: {1}")]
    User(String, String),
}

/// A running broker on a free loopback port, with its data in a temporary
/// directory; killed when dropped.
pub struct Tansu {
    child: Child,
    addr: String,
    advertised: String,
    _dir: tempfile::TempDir,
    engine: Engine,
    /// Clients must authenticate (SASL/SCRAM): `--authentication`.
    authentication: bool,
    /// `--schema-registry`: a directory of `TOPIC.json` schemas that records must
    /// match, relative to the data directory.
    schemas: Option<PathBuf>,
}

impl Tansu {
    /// The `tansu` binary, if installed.
    pub fn find() -> Option<PathBuf> {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default();
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .chain([home.join(".cargo/bin")])
            .map(|d| d.join("tansu"))
            .find(|p| p.is_file())
    }

    pub fn start(engine: Engine) -> Result<Tansu, TansuError> {
        Tansu::start_at(engine, None, &[])
    }

    /// A broker that validates the records of each `(topic, schema)` against the JSON
    /// document `schema` (whose `properties.value` is the JSON Schema of a record's
    /// value) and refuses a produce request holding one that does not match: a topic
    /// that refuses writes.
    pub fn start_with_schemas(
        engine: Engine,
        schemas: &[(&str, &str)],
    ) -> Result<Tansu, TansuError> {
        Tansu::start_at(engine, None, schemas)
    }

    /// A broker that tells clients to reach it at `advertised`, where a proxy
    /// (a TLS terminator, say) forwards to it; [`Tansu::addr`] is where it listens.
    pub fn start_behind(engine: Engine, advertised: &str) -> Result<Tansu, TansuError> {
        Tansu::start_at(engine, Some(advertised), &[])
    }

    fn start_at(
        engine: Engine,
        advertised: Option<&str>,
        schemas: &[(&str, &str)],
    ) -> Result<Tansu, TansuError> {
        let dir = tempfile::tempdir()?;
        // Like the SQLite path, the registry's path is relative to Tansu's working directory.
        let schemas = if schemas.is_empty() {
            None
        } else {
            std::fs::create_dir(dir.path().join("schemas"))?;
            for (topic, schema) in schemas {
                std::fs::write(
                    dir.path().join("schemas").join(format!("{topic}.json")),
                    schema,
                )?;
            }
            Some(PathBuf::from("./schemas"))
        };
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = format!("127.0.0.1:{port}");
        // Clients are told to come back where it listens, unless a proxy is in front.
        let advertised = advertised.unwrap_or(&addr).to_string();
        let child = Tansu::spawn(
            dir.path(),
            &addr,
            &advertised,
            engine,
            false,
            schemas.as_deref(),
        )?;
        let broker = Tansu {
            child,
            addr,
            advertised,
            _dir: dir,
            engine,
            authentication: false,
            schemas,
        };
        broker.wait_until_it_answers()?;
        Ok(broker)
    }

    fn spawn(
        dir: &std::path::Path,
        addr: &str,
        advertised: &str,
        engine: Engine,
        authentication: bool,
        schemas: Option<&std::path::Path>,
    ) -> Result<Child, TansuError> {
        let bin = Tansu::find().ok_or(TansuError::NotInstalled)?;
        // The SQLite path is relative to Tansu's working directory.
        let storage = match engine {
            Engine::Sqlite => "sqlite://tansu.db",
            Engine::Memory => "memory://tansu/",
        };
        let mut cmd = Command::new(bin);
        cmd.current_dir(dir)
            .args(["broker", "--listener-url", &format!("tcp://{addr}")])
            .args(["--advertised-listener-url", &format!("tcp://{advertised}")])
            .args(["--storage-engine", storage])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if authentication {
            cmd.arg("--authentication");
        }
        if let Some(schemas) = schemas {
            cmd.arg("--schema-registry")
                .arg(format!("file://{}", schemas.display()));
        }
        Ok(cmd.spawn()?)
    }

    fn wait_until_it_answers(&self) -> Result<(), TansuError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(&self.addr).is_err() {
            if Instant::now() > deadline {
                return Err(TansuError::NoAnswer(self.addr.clone()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Kills the broker (SIGKILL): a crash, as far as its clients can tell.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same address and data (the SQLite engine keeps both).
    pub fn restart(&mut self) -> Result<(), TansuError> {
        self.kill();
        self.child = Tansu::spawn(
            self._dir.path(),
            &self.addr,
            &self.advertised,
            self.engine,
            self.authentication,
            self.schemas.as_deref(),
        )?;
        self.wait_until_it_answers()
    }

    /// Creates a SASL/SCRAM user (`tansu user create`; `sha` is 256 or 512). Tansu's
    /// own CLI cannot authenticate, so create users before [`Tansu::require_authentication`].
    pub fn create_scram_user(
        &self,
        name: &str,
        password: &str,
        sha: u16,
    ) -> Result<(), TansuError> {
        let bin = Tansu::find().ok_or(TansuError::NotInstalled)?;
        let out = Command::new(bin)
            .args([
                "user",
                "create",
                "--broker",
                &format!("tcp://{}", self.addr),
            ])
            .args(["--mechanism", &format!("scram{sha}"), name, password])
            .output()?;
        if !out.status.success() {
            return Err(TansuError::User(
                name.to_string(),
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
        Ok(())
    }

    /// Restarts the broker requiring SASL authentication (SCRAM-SHA-256/512; Tansu
    /// 0.6 offers no PLAIN) from every client. The SQLite engine keeps users and data.
    pub fn require_authentication(&mut self) -> Result<(), TansuError> {
        self.authentication = true;
        self.restart()
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn options(&self) -> KafkaOptions {
        KafkaOptions::new(self.addr.clone(), Duration::from_secs(30))
    }

    /// Creates a topic (Tansu does not auto-create them).
    pub fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        compacted: bool,
    ) -> Result<(), TansuError> {
        Ok(kafka::create_topic(
            &self.options(),
            name,
            partitions,
            compacted,
        )?)
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
