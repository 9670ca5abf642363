//! Apache Kafka, the reference broker of the Kafka tests: a single KRaft node
//! (broker and controller in one JVM) on a free loopback port, with its data in a
//! temporary directory, started through `scripts/kafka.sh run apache` so that the
//! tests and a person at a shell start the same broker. `scripts/kafka.sh install`
//! (which scripts/test.sh runs) copies its jars from Maven Central once.
//!
//! Each test binary shares one broker ([`ApacheKafka::shared`]), started by the
//! first test that asks for it: a start costs about 5 s and 300-400 MB, and the
//! tests of a binary run in parallel threads on it. A test on it names every topic
//! and consumer group it uses with [`Names`] (the test's own name as a prefix), so
//! that what it reads back, a whole topic or a group's lag, is its own. A test
//! that kills or restarts its broker, or needs server properties of its own (a TLS
//! or SASL listener), starts its own ([`ApacheKafka::start`] and friends), killed
//! when dropped; topic-level settings (`create_topic_with`) need no broker of
//! their own.
//!
//! The JVM is the direct child of this process (the script `exec`s it) and is
//! asked to die with it (`PR_SET_PDEATHSIG`), from a thread that lives as long as
//! the process: a test that panics, or a harness that is killed, leaves no broker.
//! The shared broker lives in a static, which is never dropped: an `atexit`
//! handler kills it, waits for it and removes its data when the binary exits.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{OnceLock, mpsc};
use std::time::{Duration, Instant};

use cardinal::kafka::{self, KafkaOptions};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// Where a broker listens and keeps its data, for `ApacheKafka::start_with`.
pub struct Layout {
    /// The PLAINTEXT listener's port (`addr()`).
    pub port: u16,
    /// KRaft's controller listener.
    pub controller_port: u16,
    /// `$KAFKA_DIR`: data, logs, and any files the extra properties name.
    pub dir: PathBuf,
}

/// Topic and consumer-group names of one test's own, for the shared broker: each
/// name is the test's name, then `-`, then the name the test gives. Cardinal's
/// `run` takes `cardinal` as its group when given none, and `--scale-out` derives
/// `GROUP.partials` and `GROUP.merge` from it: a run on the shared broker is
/// always given a `-g` from here.
#[derive(Clone, Debug)]
pub struct Names {
    prefix: String,
}

impl Names {
    /// Names for the running test, from its thread's name (libtest names each
    /// test's thread after the test, `module::test_name`). Call it on that thread.
    pub fn of_this_test() -> Names {
        let thread = std::thread::current();
        let test = thread
            .name()
            .filter(|n| *n != "main")
            .expect("Names::of_this_test() on the test's own thread");
        Names::new(test)
    }

    /// Names prefixed with `test`. Kafka takes `[A-Za-z0-9._-]` in a topic's name
    /// and refuses one that differs from another only by `.` against `_`, so every
    /// other character becomes `-`.
    pub fn new(test: &str) -> Names {
        let prefix: String = test
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        Names { prefix }
    }

    /// `name`, made this test's own.
    pub fn get(&self, name: &str) -> String {
        let name = format!("{}-{name}", self.prefix);
        assert!(
            name.len() <= 249,
            "a topic's name is at most 249 bytes: {name}"
        );
        name
    }
}

/// A running Apache Kafka; killed when dropped.
pub struct ApacheKafka {
    child: Option<Child>,
    addr: String,
    port: u16,
    /// KRaft's controller listener: a second free port, the same across restarts.
    controller_port: u16,
    /// A second client listener with its own security protocol, if started with one.
    listener: Option<String>,
    dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka.sh")
}

/// A command to spawn, and where its child goes.
type SpawnJob = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawns `cmd` from a thread that never ends, so that the child's death signal
/// (sent when the thread that forked it exits) comes only with this process.
fn spawn_tied_to_process(mut cmd: Command) -> std::io::Result<Child> {
    static SPAWNER: std::sync::OnceLock<std::sync::Mutex<mpsc::Sender<SpawnJob>>> =
        std::sync::OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        std::thread::spawn(move || {
            for (mut cmd, reply) in rx {
                let _ = reply.send(cmd.spawn());
            }
            // Every sender is gone only when the process exits: park for ever.
            loop {
                std::thread::park();
            }
        });
        std::sync::Mutex::new(tx)
    });
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, reply_tx))
        .map_err(|_| std::io::Error::other("the spawning thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| std::io::Error::other("the spawning thread is gone"))?
}

impl ApacheKafka {
    /// The broker this test binary shares: started by the first test that asks for
    /// it (about 5 s), then the same for every test. Name topics and groups on it
    /// with [`Names`]. It cannot be killed or restarted (`&`, not `&mut`): a test
    /// that does either starts its own.
    pub fn shared() -> &'static ApacheKafka {
        static SHARED: OnceLock<ApacheKafka> = OnceLock::new();
        /// Kills the shared broker and removes its data as the process exits: a
        /// static is never dropped. (Killed with the process anyway, by its death
        /// signal; this also waits for it and cleans up after it.)
        extern "C" fn stop_shared() {
            if let Some(k) = SHARED.get() {
                if let Some(child) = &k.child {
                    let pid = child.id() as libc::pid_t;
                    // SAFETY: plain system calls on our own child's pid, which no one
                    // else waits for (a shared broker is never killed otherwise).
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                        libc::waitpid(pid, std::ptr::null_mut(), 0);
                    }
                }
                let _ = std::fs::remove_dir_all(k.dir.path());
            }
        }
        SHARED.get_or_init(|| {
            let kafka = ApacheKafka::start();
            // SAFETY: registers a function that lives as long as the program.
            let registered = unsafe { libc::atexit(stop_shared) };
            assert_eq!(registered, 0, "atexit");
            kafka
        })
    }

    /// Starts a broker of the caller's own and waits until it serves metadata
    /// (about 5 s): for a test that kills or restarts it; others take
    /// [`ApacheKafka::shared`].
    pub fn start() -> ApacheKafka {
        ApacheKafka::start_with(|_| String::new())
    }

    /// Starts a broker with more server properties: `extra` gets the broker's
    /// layout (ports, data directory) and returns lines for
    /// `$KAFKA_DIR/extra.properties`, which come after the generated ones and so
    /// override them (scripts/kafka.sh, kafka/NOTES.md). A listener list given
    /// there must repeat `PLAINTEXT://127.0.0.1:{port}` and the controller's.
    pub fn start_with(extra: impl FnOnce(&Layout) -> String) -> ApacheKafka {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let port = free_port();
        let mut broker = ApacheKafka {
            child: None,
            addr: format!("127.0.0.1:{port}"),
            port,
            controller_port: free_port(),
            listener: None,
            dir,
        };
        let layout = Layout {
            port: broker.port,
            controller_port: broker.controller_port,
            dir: broker.dir.path().to_path_buf(),
        };
        let lines = extra(&layout);
        if !lines.is_empty() {
            std::fs::write(broker.dir.path().join("extra.properties"), lines)
                .expect("extra.properties written");
        }
        broker.spawn();
        broker
    }

    /// Starts a broker with a second client listener, secured with `protocol`
    /// (`SSL`, `SASL_PLAINTEXT` or `SASL_SSL`), on its own port:
    /// [`ApacheKafka::listener_addr`]. [`ApacheKafka::addr`] stays the PLAINTEXT
    /// listener, for setting up (topics, users, records). `extra` gives the
    /// listener's own settings: its keystore, its SASL mechanisms.
    pub fn start_with_listener(
        protocol: &str,
        extra: impl FnOnce(&Layout) -> String,
    ) -> ApacheKafka {
        let secure = free_port();
        let mut broker = ApacheKafka::start_with(|l| {
            let (port, cport) = (l.port, l.controller_port);
            format!(
                "listeners=PLAINTEXT://127.0.0.1:{port},{protocol}://127.0.0.1:{secure},\
                 CONTROLLER://127.0.0.1:{cport}\n\
                 advertised.listeners=PLAINTEXT://127.0.0.1:{port},{protocol}://127.0.0.1:{secure}\n\
                 listener.security.protocol.map=PLAINTEXT:PLAINTEXT,{protocol}:{protocol},\
                 CONTROLLER:PLAINTEXT\n{}",
                extra(l)
            )
        });
        broker.listener = Some(format!("127.0.0.1:{secure}"));
        broker
    }

    /// The second client listener of [`ApacheKafka::start_with_listener`].
    pub fn listener_addr(&self) -> &str {
        self.listener
            .as_deref()
            .expect("a broker started with start_with_listener")
    }

    /// Adds a SCRAM-SHA-`bits` user (256 or 512) with Kafka's own ConfigCommand,
    /// through the PLAINTEXT listener.
    pub fn create_scram_user(&self, name: &str, password: &str, bits: u16) {
        let o = Command::new("bash")
            .arg(script())
            .args(["tool", "org.apache.kafka.tools.ConfigCommand"])
            .args(["--bootstrap-server", &self.addr, "--alter"])
            .args([
                "--add-config",
                &format!("SCRAM-SHA-{bits}=[password={password}]"),
            ])
            .args(["--entity-type", "users", "--entity-name", name])
            .stdin(Stdio::null())
            .output()
            .expect("scripts/kafka.sh tool");
        assert!(
            o.status.success(),
            "cannot create SCRAM user {name}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new("bash");
        cmd.arg(script())
            .args(["run", "apache"])
            .env("KAFKA_PORT", self.port.to_string())
            .env("KAFKA_CONTROLLER_PORT", self.controller_port.to_string())
            .env("KAFKA_DIR", self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(self.script_stderr());
        let child = spawn_tied_to_process(cmd)
            .unwrap_or_else(|e| panic!("cannot start Apache Kafka through scripts/kafka.sh: {e}"));
        self.child = Some(child);
        self.wait_until_it_serves();
    }

    /// The script's own complaints (a busy port, a failed format) go to a file in
    /// the data directory, for the panic that reports a failed start.
    fn script_stderr(&self) -> Stdio {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("kafka.sh.err"))
            .map_or_else(|_| Stdio::null(), Stdio::from)
    }

    fn log_tail(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.path().join(name));
        let log = read("server.log").unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let script = read("kafka.sh.err").unwrap_or_default();
        format!(
            "{}\nscripts/kafka.sh said: {script}",
            lines[lines.len().saturating_sub(30)..].join("\n")
        )
    }

    fn wait_until_it_serves(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.addr)
            .set("log_level", "0")
            .create()
            .expect("a metadata client");
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "Apache Kafka exited at start ({status}); is it installed (scripts/kafka.sh \
                     install)? Its log:\n{}",
                    self.log_tail()
                );
            }
            if let Ok(md) = consumer.fetch_metadata(None, Duration::from_secs(2))
                && !md.brokers().is_empty()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Apache Kafka did not serve metadata on {} within 120 s; its log:\n{}",
                self.addr,
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn options(&self) -> KafkaOptions {
        KafkaOptions::new(self.addr.clone(), Duration::from_secs(30))
    }

    /// Creates a topic; Cardinal's tests create every topic they use (the broker
    /// does not create them on first use, as production brokers often do not).
    pub fn create_topic(&self, name: &str, partitions: i32, compacted: bool) {
        kafka::create_topic(&self.options(), name, partitions, compacted)
            .unwrap_or_else(|e| panic!("cannot create topic {name}: {e}"));
    }

    /// Creates a topic with topic-level configs, such as a `max.message.bytes`
    /// that refuses every record written to it.
    pub fn create_topic_with(&self, name: &str, partitions: i32, configs: &[(&str, &str)]) {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        use rdkafka::client::DefaultClientContext;
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.addr)
            .create()
            .expect("an admin client");
        let mut new = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        for (k, v) in configs {
            new = new.set(k, v);
        }
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = futures_executor::block_on(admin.create_topics([&new], &opts))
            .unwrap_or_else(|e| panic!("cannot create topic {name}: {e}"));
        for r in results {
            r.unwrap_or_else(|(t, e)| panic!("cannot create topic {t}: {e}"));
        }
    }

    /// Runs one of Kafka's own tools (a class from its jars, `scripts/kafka.sh
    /// tool`) against this broker; its stdout. The broker's view, not ours.
    pub fn tool(&self, class: &str, args: &[&str]) -> String {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka.sh");
        let o = std::process::Command::new(script)
            .arg("tool")
            .arg(class)
            .args(["--bootstrap-server", &self.addr])
            .args(args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{class}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// The group's lag per partition of `topic`, as kafka-consumer-groups.sh
    /// shows it (`None`: nothing committed there yet).
    pub fn group_lag(&self, group: &str, topic: &str) -> BTreeMap<i32, Option<i64>> {
        let out = self.tool(
            "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
            &["--describe", "--group", group],
        );
        let mut rows = out
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>());
        let header = rows
            .find(|r| r.contains(&"LAG"))
            .unwrap_or_else(|| panic!("no header in {out}"));
        let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
        let (t, p, lag) = (col("TOPIC"), col("PARTITION"), col("LAG"));
        rows.filter(|r| r.len() > lag && r[t] == topic)
            .map(|r| (r[p].parse().unwrap(), r[lag].parse().ok()))
            .collect()
    }

    /// Kills the broker (SIGKILL): a crash, as far as its clients can tell.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and data, and waits until it serves.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for ApacheKafka {
    fn drop(&mut self) {
        self.kill();
    }
}
