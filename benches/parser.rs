//! Root-field extraction throughput on generated 2 KB frames: Cardinal's parser
//! (which validates the whole frame as RFC 8259 JSON) side by side, in one run so
//! that the ratios are what matters on a noisy machine, with:
//! - sonic-rs's lazy `get_many`, which checks UTF-8 but otherwise assumes valid
//!   JSON ("must be valid and well-formed, otherwise it may return unexpected
//!   result"), so it skips values rather than validating them;
//! - serde_json validating everything without building anything (`IgnoredAny`,
//!   no fields extracted), the cheapest full validation serde_json offers;
//! - a full serde_json `Value` parse.

use std::hint::black_box;

use cardinal::generator::{FrameGen, GenConfig};
use cardinal::parser::{FrameSpec, TsUnit, parse_frame, parse_frame_with};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn frames() -> Vec<Vec<u8>> {
    let cfg = GenConfig {
        frames: 4000,
        string_ts: 0.1,
        ..GenConfig::default()
    };
    FrameGen::new(&cfg).map(|f| f.line).collect()
}

fn bench(c: &mut Criterion) {
    let frames = frames();
    let bytes: usize = frames.iter().map(Vec::len).sum();
    let mut g = c.benchmark_group("root_fields");
    g.throughput(Throughput::Bytes(bytes as u64));

    g.bench_function("cardinal", |b| {
        b.iter(|| {
            let mut acc = 0i64;
            for f in &frames {
                let fr = parse_frame(black_box(f)).expect("valid frame");
                acc = acc.wrapping_add(fr.ts).wrapping_add(fr.uid.len() as i64);
            }
            acc
        })
    });

    // The same frames with every `uid` and `ts` key renamed, parsed with
    // `--uid-field member_id --ts-field event_time --ts-unit ms`: every root key is compared.
    let renamed: Vec<Vec<u8>> = frames
        .iter()
        .map(|f| {
            String::from_utf8_lossy(f)
                .replace("\"uid\":", "\"member_id\":")
                .replace("\"ts\":", "\"event_time\":")
                .into_bytes()
        })
        .collect();
    let spec = FrameSpec::new("member_id", "event_time", TsUnit::Millis).expect("distinct names");
    g.bench_function("cardinal_other_fields", |b| {
        b.iter(|| {
            let mut acc = 0i64;
            for f in &renamed {
                if let Ok(fr) = parse_frame_with(black_box(f), &spec) {
                    acc = acc.wrapping_add(fr.ts).wrapping_add(fr.uid.len() as i64);
                }
            }
            acc
        })
    });

    let mut tree = sonic_rs::PointerTree::new();
    tree.add_path(["uid"].iter());
    tree.add_path(["ts"].iter());
    g.bench_function("sonic_rs_get_many", |b| {
        b.iter(|| {
            let mut acc = 0usize;
            for f in &frames {
                let v = sonic_rs::get_many(black_box(f.as_slice()), &tree).expect("valid frame");
                acc += v
                    .iter()
                    .flatten()
                    .map(|x| x.as_raw_str().len())
                    .sum::<usize>();
            }
            acc
        })
    });

    g.bench_function("serde_json_validate_only", |b| {
        b.iter(|| {
            for f in &frames {
                serde_json::from_slice::<serde::de::IgnoredAny>(black_box(f)).expect("valid frame");
            }
        })
    });

    g.bench_function("serde_json_value", |b| {
        b.iter(|| {
            let mut acc = 0usize;
            for f in &frames {
                let v: serde_json::Value =
                    serde_json::from_slice(black_box(f)).expect("valid frame");
                acc += v["uid"].as_str().map_or(0, str::len);
            }
            acc
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(4));
    targets = bench
}
criterion_main!(benches);
