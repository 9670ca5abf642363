//! Cardinal counts unique users per minute, hour, day, week, month and year from
//! a stream of JSON click frames, and emits each window's count as soon as it is final.
//!
//! The pipeline, in the order data flows through it:
//! 1. [`source`]: files, `.gz` files and stdin, cut into chunks of whole lines;
//!    or [`kafka`], whose consumer feeds chunks of messages.
//! 2. [`parser`]: pulls the root-level `uid` and `ts` out of each frame (or
//!    [`record`] takes them from the Kafka record's key and timestamp).
//! 3. [`aggregator`]: assigns frames to calendar [`window`]s, keeps a [`counter`] per
//!    open window, and closes windows as the [`watermark`] passes them.
//! 4. [`emitter`]: renders window results as text or JSON lines.
//! 5. [`sink`]: where results and rejected frames are written (and [`kafka`]'s
//!    producer, for a results topic).
//!
//! [`pipeline`] wires the stages together (parsing in parallel, aggregating in
//! order); [`frame`] is where a frame came from and a frame kept whole while its
//! fate waits on later ones; [`reject`] is the one list of reasons a frame is not counted, and
//! [`telemetry`] is the one place where events are counted and logged; [`metrics`]
//! serves those counts over HTTP (`--http`) with health and readiness probes, and
//! [`progress`] shows them to a person (a bar on a terminal, a status line in the log).
//! [`partials`] writes and merges windows' counter states, to count history on many
//! machines (`count --partials-out`, `cardinal merge`).
//! [`checkpoint`] keeps the state and input positions in `--state-dir`; [`resume`]
//! checkpoints a file run (a Kafka run's are in [`kafka`]).
//! [`ts_unit`] is the range and unit of a `ts`, shared by [`parser`] and [`record`].
//! [`chart`] draws results as SVG (`cardinal chart`, and the `--http` live page).
//! [`generator`] makes production-like frames for demos, tests and benchmarks.
//! [`client_config`] reads librdkafka properties files and masks secrets; [`sealed`]
//! is the one checksummed layout of the files Cardinal reads back.

// Every `unsafe` block says why it is sound, and an `unsafe fn`'s body is not one
// big unsafe block: each unsafe operation in it needs its own, with its reason.
#![warn(clippy::undocumented_unsafe_blocks)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod aggregator;
pub mod checkpoint;
pub mod cli;
pub mod client_config;
pub mod counter;
pub mod emitter;
pub mod frame;
pub mod kafka;
pub mod metrics;
pub mod parser;
pub mod partials;
pub mod pipeline;
pub mod progress;
pub mod record;
pub mod reject;
pub mod resume;
pub mod sealed;
pub mod sink;
pub mod source;
pub mod telemetry;
pub mod ts_unit;
pub mod watermark;
pub mod window;

pub mod tools;
// Their paths from before they moved under tools/, which tests and benches use.
pub use tools::{chart, demo, generator, tansu};
