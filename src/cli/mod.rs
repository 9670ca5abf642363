//! The command line: argument definitions, and the glue from each subcommand to
//! the library. Option values are validated here, by clap, so that a bad value
//! exits with status 2 and a message that names the option.
//!
//! `args` (the flags and their help), `values` (parsing option values), `config`
//! (flags into the library's configuration), `commands` (each subcommand's body).

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

use crate::aggregator::{Alignment, Settings};
use crate::checkpoint::{Checkpoint, Checkpointing, InputPosition, StateDir};
use crate::counter::HllConfig;
use crate::emitter::Format;
use crate::generator::{self, GenConfig, Profile};
use crate::kafka::{self, KafkaOptions, RunOptions, StartFrom, Until};
use crate::metrics::{self, Metrics};
use crate::parser::{FrameSpec, TsFrom, TsUnit, UidFrom};
use crate::partials;
use crate::pipeline::{self, CountConfig, CounterKind, FileResume, OpenInput, Sinks};
use crate::progress::{Goal, Progress};
use crate::resume::FileCheckpoints;
use crate::sink::{Reject, RejectSink, ResultSink};
use crate::source::{CHUNK_BYTES, Input};
use crate::watermark::GuardConfig;
use crate::window::{Calendar, Granularity};

mod args;
mod commands;
mod config;
mod values;

pub use args::*;
pub use commands::*;
pub use values::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_seconds("5s"), Ok(5));
        assert_eq!(parse_seconds("90"), Ok(90));
        assert_eq!(parse_seconds("1h30m"), Ok(5400));
        assert_eq!(parse_seconds("2m"), Ok(120));
        assert!(parse_seconds("-5s").is_err());
        assert!(parse_seconds("1.5s").unwrap_err().contains("whole"));
        assert!(parse_seconds("soon").unwrap_err().contains("soon"));
    }

    #[test]
    fn cli_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn run_options_come_from_the_environment_under_one_naming() {
        let run = command().find_subcommand("run").cloned().unwrap();
        let env = |long: &str| {
            run.get_arguments()
                .find(|a| a.get_long() == Some(long))
                .and_then(|a| a.get_env())
                .map(|e| e.to_string_lossy().into_owned())
        };
        assert_eq!(env("brokers").as_deref(), Some("CARDINAL_BROKERS"));
        assert_eq!(env("topic").as_deref(), Some("CARDINAL_TOPIC"));
        assert_eq!(env("group").as_deref(), Some("CARDINAL_GROUP"));
        assert_eq!(
            env("results-topic").as_deref(),
            Some("CARDINAL_RESULTS_TOPIC")
        );
        assert_eq!(
            env("client-config").as_deref(),
            Some("CARDINAL_CLIENT_CONFIG")
        );
        assert_eq!(env("ts-unit").as_deref(), Some("CARDINAL_TS_UNIT"));
        assert_eq!(env("state-dir").as_deref(), Some("CARDINAL_STATE_DIR"));
        // Flags are not: a stray variable must not make a live run a backfill.
        assert_eq!(env("until-end"), None);
        let count = command().find_subcommand("count").cloned().unwrap();
        assert!(count.get_arguments().all(|a| a.get_env().is_none()));
    }
}
