//! How a consumer group behaves on the local broker (Tansu 0.6) and on librdkafka's
//! mock cluster when one of three members leaves or dies: who gets its partitions,
//! and how fast.
//!
//! Each member is a child process (this example, `member` subcommand) that joins the
//! group with an rdkafka `BaseConsumer` and prints its assignment whenever it changes.
//! The `scenario` subcommand starts the broker, creates a 6-partition topic, starts
//! three members, then closes one (it leaves the group) or kills it with SIGKILL, and
//! reports when the survivors hold all six partitions; optionally it then starts the
//! dead member again (same name and `group.instance.id`, or a new one).
//!
//!     cargo run --example tansu_groups -- scenario --broker tansu --strategy range --end kill
//!     cargo run --example tansu_groups -- scenario --broker mock --static-ids --end kill --restart same
//!
//! Findings: /work/shared/kafka-broker.md, "Consumer groups on Tansu 0.6".

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::{Duration, Instant};

use cardinal::tansu::{Engine, Tansu};
use clap::{Parser, Subcommand, ValueEnum};
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::mocking::MockCluster;

const TOPIC: &str = "groups";
const PARTITIONS: i32 = 6;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
enum Broker {
    /// Tansu 0.6, SQLite engine.
    Tansu,
    /// Tansu 0.6, memory engine.
    TansuMemory,
    /// librdkafka's in-process mock cluster.
    Mock,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
enum End {
    /// The member closes its consumer (LeaveGroup, unless it has a static id) and exits.
    Close,
    /// The member unsubscribes and stays alive.
    Unsubscribe,
    /// The member's process is killed with SIGKILL.
    Kill,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
enum Restart {
    None,
    /// Same member name (and same group.instance.id with --static-ids).
    Same,
    /// A new member name (and a new group.instance.id with --static-ids).
    New,
}

#[derive(clap::Args, Clone, Debug)]
struct Settings {
    /// partition.assignment.strategy
    #[arg(long, default_value = "range")]
    strategy: String,
    #[arg(long, default_value_t = 6000)]
    session_ms: u64,
    #[arg(long, default_value_t = 2000)]
    heartbeat_ms: u64,
    /// Static membership: group.instance.id = the member's name.
    #[arg(long)]
    static_ids: bool,
    /// A workaround for Tansu: a member whose eager rebalance handed it back exactly
    /// the partitions it had (what a dead member's expiry looks like on Tansu 0.6)
    /// unsubscribes and subscribes again, which makes Tansu start a real rebalance.
    #[arg(long)]
    nudge: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// One group member: prints `ASSIGN <name> <partitions>` whenever its assignment
    /// changes; reads `close` or `unsubscribe` on stdin.
    Member {
        #[arg(long)]
        brokers: String,
        #[arg(long)]
        group: String,
        #[arg(long)]
        name: String,
        #[command(flatten)]
        settings: Settings,
    },
    /// Three members, one leaves or dies; see the module's documentation.
    Scenario {
        #[arg(long, value_enum, default_value = "tansu")]
        broker: Broker,
        #[arg(long, value_enum, default_value = "kill")]
        end: End,
        #[arg(long, value_enum, default_value = "none")]
        restart: Restart,
        /// The pause between starting the three members.
        #[arg(long, default_value_t = 0)]
        stagger_ms: u64,
        /// How long to wait for the survivors to take over, past the session timeout.
        #[arg(long, default_value_t = 30)]
        grace_s: u64,
        #[command(flatten)]
        settings: Settings,
    },
}

fn main() {
    match Cli::parse().cmd {
        Cmd::Member {
            brokers,
            group,
            name,
            settings,
        } => member(&brokers, &group, &name, &settings),
        Cmd::Scenario {
            broker,
            end,
            restart,
            stagger_ms,
            grace_s,
            settings,
        } => scenario(broker, end, restart, stagger_ms, grace_s, &settings),
    }
}

// ---------------------------------------------------------------- the member

struct Printer {
    name: String,
    /// What the last eager revocation took away.
    revoked: std::sync::Mutex<String>,
    /// Set when a rebalance gave back exactly what was revoked.
    same_back: AtomicBool,
}

impl ClientContext for Printer {}

impl ConsumerContext for Printer {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        let what = match r {
            Rebalance::Assign(tpl) => {
                let got = parts(tpl);
                let mut revoked = self.revoked.lock().unwrap();
                if *revoked == got && got != "[]" {
                    self.same_back.store(true, Ordering::SeqCst);
                }
                revoked.clear();
                format!("assign {got}")
            }
            Rebalance::Revoke(tpl) => {
                *self.revoked.lock().unwrap() = parts(tpl);
                format!("revoke {}", parts(tpl))
            }
            Rebalance::Error(e) => format!("error {e}"),
        };
        println!("REBALANCE {} {what}", self.name);
    }
}

fn parts(tpl: &rdkafka::TopicPartitionList) -> String {
    let mut p: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
    p.sort();
    format!("{p:?}").replace(' ', "")
}

fn member(brokers: &str, group: &str, name: &str, s: &Settings) {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("partition.assignment.strategy", &s.strategy)
        .set("session.timeout.ms", s.session_ms.to_string())
        .set("heartbeat.interval.ms", s.heartbeat_ms.to_string())
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "50");
    if s.static_ids {
        cfg.set("group.instance.id", name);
    }
    let consumer: BaseConsumer<Printer> = cfg
        .create_with_context(Printer {
            name: name.to_string(),
            revoked: Default::default(),
            same_back: AtomicBool::new(false),
        })
        .expect("consumer");
    consumer.subscribe(&[TOPIC]).expect("subscribe");
    println!("STARTED {name}");

    let close = Arc::new(AtomicBool::new(false));
    let unsubscribe = Arc::new(AtomicBool::new(false));
    {
        let (close, unsubscribe) = (close.clone(), unsubscribe.clone());
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines().map_while(Result::ok) {
                match line.trim() {
                    "close" => close.store(true, Ordering::SeqCst),
                    "unsubscribe" => unsubscribe.store(true, Ordering::SeqCst),
                    _ => {}
                }
            }
        });
    }
    let mut last = String::from("none");
    loop {
        if let Some(Err(e)) = consumer.poll(Duration::from_millis(100)) {
            println!("ERROR {name} {e}");
        }
        let now = consumer
            .assignment()
            .map(|t| parts(&t))
            .unwrap_or_else(|e| format!("error:{e}"));
        if now != last {
            println!("ASSIGN {name} {now}");
            last = now;
        }
        if consumer.context().same_back.swap(false, Ordering::SeqCst) && s.nudge {
            consumer.unsubscribe();
            consumer.subscribe(&[TOPIC]).expect("subscribe");
            println!("NUDGED {name}");
        }
        if unsubscribe.swap(false, Ordering::SeqCst) {
            consumer.unsubscribe();
            println!("UNSUBSCRIBED {name}");
        }
        if close.load(Ordering::SeqCst) {
            // Dropping a BaseConsumer of a group closes it: LeaveGroup (for a dynamic member).
            drop(consumer);
            println!("CLOSED {name}");
            return;
        }
    }
}

// ---------------------------------------------------------------- the scenario

struct Proc {
    child: Child,
    stdin: ChildStdin,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the orchestrator knows: each live member's latest assignment.
struct Group {
    brokers: String,
    group: String,
    settings: Settings,
    t0: Instant,
    tx: Sender<(Instant, String)>,
    rx: Receiver<(Instant, String)>,
    procs: BTreeMap<String, Proc>,
    assigned: BTreeMap<String, BTreeSet<i32>>,
}

impl Group {
    fn spawn(&mut self, name: &str) {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["member", "--brokers", &self.brokers, "--group", &self.group])
            .args(["--name", name, "--strategy", &self.settings.strategy])
            .args(["--session-ms", &self.settings.session_ms.to_string()])
            .args(["--heartbeat-ms", &self.settings.heartbeat_ms.to_string()])
            .args(self.settings.static_ids.then_some("--static-ids"))
            .args(self.settings.nudge.then_some("--nudge"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("member");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let tx = self.tx.clone();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take().unwrap();
        self.procs.insert(name.to_string(), Proc { child, stdin });
        self.assigned.insert(name.to_string(), BTreeSet::new());
        self.say(&format!("started {name}"));
    }

    fn say(&self, what: &str) {
        println!("{:8.3}s  {what}", self.t0.elapsed().as_secs_f64());
    }

    fn tell(&mut self, name: &str, what: &str) {
        let p = self.procs.get_mut(name).unwrap();
        writeln!(p.stdin, "{what}").unwrap();
        p.stdin.flush().unwrap();
    }

    fn kill(&mut self, name: &str) {
        drop(self.procs.remove(name)); // SIGKILL, then wait
        self.assigned.remove(name);
        self.say(&format!("killed {name} (SIGKILL)"));
    }

    fn absorb(&mut self, at: Instant, line: &str) {
        let mut w = line.splitn(3, ' ');
        let (kind, name, rest) = (
            w.next().unwrap_or(""),
            w.next().unwrap_or(""),
            w.next().unwrap_or(""),
        );
        let t = at.duration_since(self.t0).as_secs_f64();
        println!("{t:8.3}s    | {line}");
        if kind == "ASSIGN" && self.assigned.contains_key(name) {
            let set = rest
                .trim_matches(|c| c == '[' || c == ']')
                .split(',')
                .filter_map(|p| p.parse().ok())
                .collect();
            self.assigned.insert(name.to_string(), set);
            // Two live members holding one partition: both would count it.
            let mut owner = BTreeMap::new();
            for (n, ps) in &self.assigned {
                for p in ps {
                    if let Some(other) = owner.insert(*p, n) {
                        println!("{t:8.3}s  OVERLAP partition {p} held by {other} and {n}");
                    }
                }
            }
        }
        if kind == "CLOSED" {
            self.assigned.remove(name);
        }
    }

    /// Waits until `done` holds for the live members' assignments; the time it took.
    fn wait(
        &mut self,
        within: Duration,
        done: impl Fn(&BTreeMap<String, BTreeSet<i32>>) -> bool,
    ) -> Option<Duration> {
        let start = Instant::now();
        loop {
            if done(&self.assigned) {
                return Some(start.elapsed());
            }
            let left = within.checked_sub(start.elapsed())?;
            if let Ok((at, line)) = self.rx.recv_timeout(left) {
                self.absorb(at, &line);
            }
        }
    }

    /// Reads what comes for `d`, for a stable picture.
    fn settle(&mut self, d: Duration) {
        let _ = self.wait(d, |_| false);
    }

    fn picture(&self) -> String {
        self.assigned
            .iter()
            .map(|(n, p)| format!("{n}={p:?}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Every partition held by exactly one live member, and each of `names` holds some.
fn covered(a: &BTreeMap<String, BTreeSet<i32>>, names: &[&str]) -> bool {
    let total: usize = a.values().map(|p| p.len()).sum();
    let union: BTreeSet<i32> = a.values().flatten().copied().collect();
    total == PARTITIONS as usize
        && union.len() == PARTITIONS as usize
        && names
            .iter()
            .all(|n| a.get(*n).is_some_and(|p| !p.is_empty()))
}

fn report(what: &str, t: Option<Duration>, g: &Group) {
    match t {
        Some(t) => println!(
            "RESULT {what}: after {:.1}s: {}",
            t.as_secs_f64(),
            g.picture()
        ),
        None => println!("RESULT {what}: NOT within the wait: {}", g.picture()),
    }
}

fn scenario(
    broker: Broker,
    end: End,
    restart: Restart,
    stagger_ms: u64,
    grace_s: u64,
    s: &Settings,
) {
    let (_tansu, _mock, brokers) = match broker {
        Broker::Tansu | Broker::TansuMemory => {
            let engine = if broker == Broker::Tansu {
                Engine::Sqlite
            } else {
                Engine::Memory
            };
            let t = Tansu::start(engine).expect("tansu");
            t.create_topic(TOPIC, PARTITIONS, false).expect("topic");
            let addr = t.addr().to_string();
            (Some(t), None, addr)
        }
        Broker::Mock => {
            let m = MockCluster::new(1).expect("mock cluster");
            m.create_topic(TOPIC, PARTITIONS, 1).expect("topic");
            let addr = m.bootstrap_servers();
            (None, Some(m), addr)
        }
    };
    println!(
        "SCENARIO broker={broker:?} end={end:?} restart={restart:?} strategy={} session={}ms heartbeat={}ms static={} nudge={}",
        s.strategy, s.session_ms, s.heartbeat_ms, s.static_ids, s.nudge
    );
    let (tx, rx) = channel();
    let mut g = Group {
        brokers,
        group: "g".to_string(),
        settings: s.clone(),
        t0: Instant::now(),
        tx,
        rx,
        procs: BTreeMap::new(),
        assigned: BTreeMap::new(),
    };
    let session = Duration::from_millis(s.session_ms);

    // 1. Three members join at once.
    for n in ["m1", "m2", "m3"] {
        g.spawn(n);
        g.settle(Duration::from_millis(stagger_ms));
    }
    let t = g.wait(Duration::from_secs(60), |a| covered(a, &["m1", "m2", "m3"]));
    report("3 members joined, all partitions spread", t, &g);
    g.settle(Duration::from_secs(3));
    g.say(&format!("stable? {}", g.picture()));

    // 2. or 3. m3 leaves or dies.
    match end {
        End::Close => {
            g.say("m3: close");
            g.tell("m3", "close");
        }
        End::Unsubscribe => {
            g.say("m3: unsubscribe");
            g.tell("m3", "unsubscribe");
        }
        End::Kill => g.kill("m3"),
    }
    let within = session + Duration::from_secs(grace_s);
    let t = g.wait(within, |a| {
        let mut a = a.clone();
        a.remove("m3");
        covered(&a, &["m1", "m2"]) && a.values().map(|p| p.len()).sum::<usize>() == 6
    });
    report(&format!("after m3's {end:?}, m1 and m2 hold all"), t, &g);
    g.settle(Duration::from_secs(2));

    // 4. m3 comes back.
    let back = match restart {
        Restart::None => return,
        Restart::Same => "m3",
        Restart::New => "m4",
    };
    if end != End::Kill {
        if let Some(p) = g.procs.remove("m3") {
            drop(p);
        }
        g.assigned.remove("m3");
    }
    g.spawn(back);
    let t = g.wait(Duration::from_secs(60), |a| covered(a, &["m1", "m2", back]));
    report(&format!("{back} restarted, all three hold some"), t, &g);
    g.settle(Duration::from_secs(2));
    g.say(&format!("end: {}", g.picture()));
}
