//! What a checkpoint costs with all six windows open over many users: a whole
//! state (what every checkpoint wrote before change sets) against a change set
//! after one more second of traffic, interleaved, through the real `StateDir`
//! (temporary file, fsync, rename) on the disk that holds the temp directory.
//!
//! Usage: cargo bench --bench checkpoint -- [USERS=10000000] [ROUNDS=3] [PER_SECOND=100000]
//! Prints medians and the ratio; no assertion (the machine is shared and noisy).

use std::time::Instant;

use cardinal::aggregator::{Aggregator, Output, Settings};
use cardinal::checkpoint::{Checkpoint, InputPosition, StateDir};
use cardinal::counter::{Counter, Exact};
use cardinal::frame::{HeldFrame, Position};
use cardinal::window::{Calendar, Granularity};

fn agg_settings() -> Settings {
    Settings {
        granularities: Granularity::ALL.to_vec(),
        // Nothing closes: every window stays open, the worst case for a checkpoint.
        lateness: 1 << 30,
        ..Settings::default()
    }
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let users = args.first().copied().unwrap_or(10_000_000);
    let rounds = args.get(1).copied().unwrap_or(3);
    let per_second = args.get(2).copied().unwrap_or(100_000);
    let mut agg: Aggregator<Exact, ()> = Aggregator::new(Calendar::utc(), agg_settings(), ());
    let mut out = Output::default();
    let ts = 1_468_244_400; // 2016-07-11T13:40:00Z
    let started = Instant::now();
    let mut pos = 0u64;
    let mut ingest = |agg: &mut Aggregator<Exact, ()>, uid: u64| {
        let key = Exact::key(format!("user-{uid}").as_bytes());
        agg.ingest(0, pos, ts, key, || (), &mut out);
        pos += 1;
    };
    for u in 0..users {
        ingest(&mut agg, u);
    }
    eprintln!(
        "{} users in {} open windows, built in {:.1} s",
        users,
        agg.open_windows(),
        started.elapsed().as_secs_f64()
    );
    let dir = tempfile::tempdir().expect("a temporary directory");
    let state = StateDir::open(dir.path()).expect("the state directory");
    // One second of traffic: half returning users, half new.
    let mut next_new = users;
    let mut second = |agg: &mut Aggregator<Exact, ()>, round: u64| {
        for i in 0..per_second {
            if i % 2 == 0 {
                ingest(agg, (round * 7919 + i) % users);
            } else {
                ingest(agg, next_new);
                next_new += 1;
            }
        }
    };
    let save = |agg: &mut Aggregator<Exact, ()>, changes: bool| {
        let t = Instant::now();
        let checkpoint = Checkpoint {
            identity: "bench".into(),
            written_unix_ms: 0,
            rejects_bytes: None,
            totals: None,
            input: InputPosition::Kafka {
                offsets: vec![(0, 0)],
            },
            state: agg.checkpoint(changes, |_| HeldFrame {
                position: Position::Offset {
                    topic: "bench".into(),
                    partition: 0,
                    offset: 0,
                },
                key: None,
                raw: Box::default(),
            }),
        };
        let stats = state.save(&checkpoint).expect("a checkpoint written");
        assert_eq!(stats.whole, !changes);
        (t.elapsed().as_secs_f64() * 1000.0, stats.bytes)
    };
    save(&mut agg, false); // the chain starts with a whole state
    let (mut whole, mut change) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        second(&mut agg, 2 * round);
        whole.push(save(&mut agg, false));
        second(&mut agg, 2 * round + 1);
        change.push(save(&mut agg, true));
    }
    let median = |v: &mut Vec<(f64, u64)>| {
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        v[v.len() / 2]
    };
    let (wm, wb) = median(&mut whole);
    let (cm, cb) = median(&mut change);
    // What a restart pays before it reads again: the chain on disk (the last whole
    // state and one change set) read, checked and folded, and the aggregator rebuilt.
    let settings = agg_settings();
    drop(agg);
    let t = Instant::now();
    let loaded = state
        .load("bench", false)
        .expect("the checkpoint loads")
        .expect("a checkpoint");
    let load_ms = t.elapsed().as_secs_f64() * 1000.0;
    let t = Instant::now();
    let restored: Aggregator<Exact, ()> =
        Aggregator::restore(Calendar::utc(), settings, (), loaded.state, |_| {
            Some((0, ()))
        })
        .expect("the state restores");
    let restore_ms = t.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(restored.open_windows(), 6);
    println!(
        "checkpoint with all six windows open over {users} users, {per_second} frames since the last:"
    );
    println!(
        "  whole state: median {wm:.0} ms, {:.1} MB (runs: {:?})",
        wb as f64 / 1e6,
        whole.iter().map(|r| r.0.round()).collect::<Vec<_>>()
    );
    println!(
        "  change set:  median {cm:.1} ms, {:.2} MB (runs: {:?})",
        cb as f64 / 1e6,
        change.iter().map(|r| r.0.round()).collect::<Vec<_>>()
    );
    println!(
        "  the change set takes {:.1}% of the time and {:.2}% of the bytes",
        100.0 * cm / wm,
        100.0 * cb as f64 / wb as f64
    );
    println!(
        "  a restart: {load_ms:.0} ms to load and fold the chain, {restore_ms:.0} ms to rebuild the windows"
    );
    // For scripts/report.sh.
    println!(
        "tsv\t{users}\t{per_second}\t{wm:.1}\t{wb}\t{cm:.2}\t{cb}\t{load_ms:.1}\t{restore_ms:.1}"
    );
}
