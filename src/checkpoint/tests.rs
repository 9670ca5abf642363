//! Checkpoints: written atomically, chained, refused when corrupt or foreign.

use super::*;
use crate::aggregator::{LaneSnapshot, WindowSnapshot};
use crate::counter::CounterState;
use crate::sealed::HEADER;
use crate::watermark::Watermark;
use crate::window::Granularity;

/// A held frame is written in checkpoint format 3's layout, and read back whole.
#[test]
fn held_frames_keep_the_stored_layout() {
    for (position, partition) in [
        (
            Position::Offset {
                topic: "clicks".into(),
                partition: 3,
                offset: 77,
            },
            Some(3),
        ),
        (
            Position::Line {
                source: "a.json".into(),
                line: 77,
            },
            None,
        ),
    ] {
        let source = if partition.is_some() {
            "clicks"
        } else {
            "a.json"
        };
        let frame = HeldFrame {
            position,
            key: Some(b"k".to_vec().into()),
            raw: b"{}".to_vec().into(),
        };
        let stored = HeldRaw {
            source: source.into(),
            pos: 77,
            partition,
            key: Some(b"k".to_vec()),
            raw: b"{}".to_vec(),
        };
        let bytes = postcard::to_allocvec(&frame).unwrap();
        assert_eq!(bytes, postcard::to_allocvec(&stored).unwrap());
        assert_eq!(postcard::from_bytes::<HeldFrame>(&bytes).unwrap(), frame);
    }
}

pub(super) fn sample() -> Checkpoint {
    Checkpoint {
        identity: "kafka topic=clicks group=g windows=minute".into(),
        written_unix_ms: 1,
        input: InputPosition::Kafka {
            offsets: vec![(0, 10), (1, 20)],
        },
        rejects_bytes: Some(7),
        totals: Some(crate::telemetry::Totals {
            frames_received: 12,
            frames_counted: 9,
            rejected: vec![("truncated".into(), 3)],
            ..Default::default()
        }),
        state: Snapshot {
            whole: true,
            stream_wm: Some(100),
            windows: vec![WindowSnapshot {
                granularity: Granularity::Minute,
                start: 60,
                end: 120,
                frames: 3,
                version: 0,
                dirty: false,
                counter: Some(CounterState::Exact(vec![1, 2, 3])),
                fresh: false,
            }],
            lanes: vec![LaneSnapshot {
                index: 0,
                watermark: Watermark::new(5),
                held: vec![],
                assigned: true,
                runs: vec![(3, 120)],
                next_pos: Some(10),
                waiting: vec![],
            }],
        },
    }
}

#[test]
fn a_failed_write_leaves_the_previous_checkpoint_intact() {
    let dir = tempfile::tempdir().unwrap();
    let sd = StateDir::open(dir.path()).unwrap();
    let first = sample();
    sd.save(&first).unwrap();
    // Something in the way of the temporary file: as good as a full disk, even for root.
    fs::create_dir(dir.path().join("checkpoint.tmp")).unwrap();
    let mut second = sample();
    second.written_unix_ms = 2;
    let e = sd.save(&second).unwrap_err().to_string();
    assert!(
        e.contains("cannot write checkpoint") && e.contains("previous checkpoint is intact"),
        "{e}"
    );
    assert_eq!(sd.load(&first.identity, false).unwrap(), Some(first));
}

/// A change set on top of `sample()`: one more user in its window, one new window.
fn changes(users: Vec<u64>, offset: i64) -> Checkpoint {
    let mut cp = sample();
    cp.input = InputPosition::Kafka {
        offsets: vec![(0, offset), (1, 20)],
    };
    cp.state.whole = false;
    cp.rejects_bytes = Some(offset as u64 * 100);
    if let Some(t) = &mut cp.totals {
        t.frames_received = offset as u64 * 10;
    }
    cp.state.windows[0].counter = Some(CounterState::Exact(users));
    cp.state.windows.push(WindowSnapshot {
        start: 120,
        end: 180,
        counter: Some(CounterState::Exact(vec![9])),
        fresh: true,
        ..cp.state.windows[0].clone()
    });
    cp
}

fn users(cp: &Checkpoint) -> Vec<Vec<u64>> {
    let mut out = Vec::new();
    for w in &cp.state.windows {
        let Some(CounterState::Exact(mut v)) = w.counter.clone() else {
            panic!("{w:?}")
        };
        v.sort();
        out.push(v);
    }
    out
}

#[test]
fn a_chain_of_change_sets_loads_as_one_state_and_a_whole_save_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let sd = StateDir::open(dir.path()).unwrap();
    assert!(sd.wants_whole(), "nothing to extend yet");
    let id = sample().identity;
    let whole = sd.save(&sample()).unwrap();
    assert!(whole.whole);
    assert!(!sd.wants_whole());
    let first = sd.save(&changes(vec![4], 11)).unwrap();
    assert!(!first.whole);
    // The window opened in the first change set is not fresh in the second.
    let mut second = changes(vec![5, 6], 12);
    second.state.windows[1].fresh = false;
    second.state.windows[1].counter = None;
    sd.save(&second).unwrap();
    let names = |d: &Path| {
        let mut v: Vec<String> = (fs::read_dir(d).unwrap())
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("checkpoint"))
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(dir.path()).len(), 3, "{:?}", names(dir.path()));

    let again = StateDir::open(dir.path());
    assert!(again.is_err(), "still locked by sd");
    let loaded = sd.load(&id, false).unwrap().unwrap();
    assert!(loaded.state.whole);
    assert_eq!(users(&loaded), vec![vec![1, 2, 3, 4, 5, 6], vec![9]]);
    assert_eq!(
        loaded.input,
        InputPosition::Kafka {
            offsets: vec![(0, 12), (1, 20)]
        }
    );
    // Everything that goes with the position is the newest link's too.
    assert_eq!(loaded.rejects_bytes, Some(1200));
    assert_eq!(loaded.totals.as_ref().map(|t| t.frames_received), Some(120));
    // Loading continues the chain: the next change set is the third.
    sd.save(&changes(vec![7], 13)).unwrap();
    assert_eq!(users(&sd.load(&id, false).unwrap().unwrap())[0].len(), 7);

    // A whole state starts over and the old chain's files go.
    let mut whole = sample();
    whole.state.windows[0].counter = Some(CounterState::Exact(vec![8]));
    sd.save(&whole).unwrap();
    assert_eq!(names(dir.path()), vec!["checkpoint".to_string()]);
    assert_eq!(sd.load(&id, false).unwrap(), Some(whole));
}

#[test]
fn change_sets_past_a_gap_are_dropped_and_a_corrupt_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sd = StateDir::open(dir.path()).unwrap();
    let id = sample().identity;
    sd.save(&sample()).unwrap();
    for (i, u) in [4, 5, 6].into_iter().enumerate() {
        let mut c = changes(vec![u], 11 + i as i64);
        if i > 0 {
            c.state.windows[1].fresh = false;
            c.state.windows[1].counter = None;
        }
        sd.save(&c).unwrap();
    }
    let link = |n: u64| {
        let g = sd.chain.lock().unwrap().generation;
        sd.change_path(g, n)
    };
    let (second, third) = (link(2), link(3));
    let good = fs::read(&third).unwrap();
    fs::remove_file(&second).unwrap();
    let loaded = sd.load(&id, false).unwrap().unwrap();
    assert_eq!(users(&loaded)[0], vec![1, 2, 3, 4], "up to the gap");
    assert!(!third.exists(), "the orphan past the gap is gone");

    fs::write(&second, &good[..good.len() - 1]).unwrap();
    let e = sd.load(&id, false).unwrap_err().to_string();
    assert!(
        e.contains(&second.display().to_string()) && e.contains("truncated"),
        "{e}"
    );
    // --reset-state discards the whole chain.
    assert_eq!(sd.load(&id, true).unwrap(), None);
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        1,
        "only the lock"
    );
}

#[test]
fn a_state_dir_has_one_user_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let first = StateDir::open(dir.path()).unwrap();
    let e = StateDir::open(dir.path()).unwrap_err().to_string();
    assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
    assert!(e.contains("in use by another Cardinal"), "{e}");
    drop(first);
    StateDir::open(dir.path()).expect("free again once the first is gone");
}

#[test]
fn saves_and_loads_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let sd = StateDir::open(dir.path()).unwrap();
    assert_eq!(sd.load("x", false).unwrap(), None);
    let cp = sample();
    let stats = sd.save(&cp).unwrap();
    assert!(stats.bytes > HEADER as u64);
    assert_eq!(sd.load(&cp.identity, false).unwrap(), Some(cp.clone()));
    assert!(!dir.path().join("checkpoint.tmp").exists());
}

#[test]
fn corrupt_truncated_and_foreign_checkpoints_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sd = StateDir::open(dir.path()).unwrap();
    let cp = sample();
    sd.save(&cp).unwrap();
    let good = fs::read(sd.path()).unwrap();

    let mut flipped = good.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x40;
    fs::write(sd.path(), &flipped).unwrap();
    let e = sd.load(&cp.identity, false).unwrap_err().to_string();
    assert!(e.contains("checksum") && e.contains("--reset-state"), "{e}");

    fs::write(sd.path(), &good[..good.len() - 5]).unwrap();
    assert!(
        sd.load(&cp.identity, false)
            .unwrap_err()
            .to_string()
            .contains("truncated")
    );

    fs::write(sd.path(), b"{\"some\":\"json\"}").unwrap();
    assert!(
        sd.load(&cp.identity, false)
            .unwrap_err()
            .to_string()
            .contains("not a Cardinal checkpoint")
    );

    fs::write(sd.path(), &good).unwrap();
    let e = sd.load("kafka topic=other", false).unwrap_err().to_string();
    assert!(
        e.contains("another job") && e.contains("topic=other"),
        "{e}"
    );

    // --reset-state discards it.
    assert_eq!(sd.load("kafka topic=other", true).unwrap(), None);
    assert!(!sd.path().exists());
}
