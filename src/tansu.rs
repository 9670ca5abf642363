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
}

/// A running broker on a free loopback port, with its data in a temporary
/// directory; killed when dropped.
pub struct Tansu {
    child: Child,
    addr: String,
    advertised: String,
    _dir: tempfile::TempDir,
    engine: Engine,
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
        Tansu::start_at(engine, None)
    }

    /// A broker that tells clients to reach it at `advertised`, where a proxy
    /// (a TLS terminator, say) forwards to it; [`Tansu::addr`] is where it listens.
    pub fn start_behind(engine: Engine, advertised: &str) -> Result<Tansu, TansuError> {
        Tansu::start_at(engine, Some(advertised))
    }

    fn start_at(engine: Engine, advertised: Option<&str>) -> Result<Tansu, TansuError> {
        let dir = tempfile::tempdir()?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = format!("127.0.0.1:{port}");
        // Clients are told to come back where it listens, unless a proxy is in front.
        let advertised = advertised.unwrap_or(&addr).to_string();
        let child = Tansu::spawn(dir.path(), &addr, &advertised, engine)?;
        let broker = Tansu {
            child,
            addr,
            advertised,
            _dir: dir,
            engine,
        };
        broker.wait_until_it_answers()?;
        Ok(broker)
    }

    fn spawn(
        dir: &std::path::Path,
        addr: &str,
        advertised: &str,
        engine: Engine,
    ) -> Result<Child, TansuError> {
        let bin = Tansu::find().ok_or(TansuError::NotInstalled)?;
        // The SQLite path is relative to Tansu's working directory.
        let storage = match engine {
            Engine::Sqlite => "sqlite://tansu.db",
            Engine::Memory => "memory://tansu/",
        };
        Ok(Command::new(bin)
            .current_dir(dir)
            .args(["broker", "--listener-url", &format!("tcp://{addr}")])
            .args(["--advertised-listener-url", &format!("tcp://{advertised}")])
            .args(["--storage-engine", storage])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?)
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
        self.child = Tansu::spawn(self._dir.path(), &self.addr, &self.advertised, self.engine)?;
        self.wait_until_it_answers()
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
