//! Every subcommand's flags, with the help text that teaches them; settings from
//! the environment (`CARDINAL_*`) for the connection flags.

use super::*;

pub(super) const AFTER_HELP: &str = "\
When is a window emitted?
  Cardinal works in event time. The watermark is the highest trusted `ts` seen
  minus --lateness. A window is final, and printed, as soon as the watermark
  passes its end; at the end of input every open window is printed as final.
  A frame for a window that is already final is late: it is counted in the
  summary and written to --rejects. With --grace, windows stay correctable for
  that long and every correction is printed again with `version` + 1.
  A frame more than --max-ahead beyond the stream is held; it becomes an outlier
  (rejected) if --confirm later frames contradict it, and is counted as soon as
  the stream catches up with it or --confirm held frames show the stream moved.
  Ordered streams are never late or outlying, whatever their gaps.

Examples:
  cardinal gen --frames 100000 -o frames.json
  cardinal count frames.json
  cardinal count --windows minute,hour,day --tz Europe/Zurich --format json frames.json.gz
  zcat day-*.json.gz | cardinal count --counter hll --rejects rejects.jsonl -
  cardinal count --brokers localhost:9092 --rejects-topic backfill-dlq day-*.json.gz";

#[derive(Debug, Parser)]
#[command(
    name = "cardinal",
    version,
    about = "Counts unique users per minute, hour, day, week, month and year from JSON click frames",
    long_about = "Counts unique users per minute, hour, day, week, month and year from a stream \
of JSON click frames (one object per line with a root-level string `uid` and unix-seconds `ts`), \
and prints each window's count as soon as it is final.\n\nLogs go to stderr; set RUST_LOG=cardinal=debug \
to see every rejected, late or outlying frame."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

impl Command {
    /// Whether the command's output (results, messages, frames) goes to stdout.
    pub fn writes_to_stdout(&self) -> bool {
        match self {
            Command::Produce(_) => false,
            Command::Gen(g) => g.output.is_none(),
            Command::Chart(c) => c.output.is_none(),
            _ => true,
        }
    }

    /// Without RUST_LOG: a service logs what operators need (assignments, restores,
    /// shutdown) at info; one-shot commands only warn.
    pub fn default_log_filter(&self) -> &'static str {
        match self {
            Command::Run(_) => "cardinal=info",
            _ => "cardinal=warn",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Count unique users per window in files or stdin.
    #[command(after_help = AFTER_HELP)]
    Count(CountArgs),
    /// Consume frames from Kafka, count them, publish results (the main job).
    #[command(after_help = RUN_AFTER_HELP)]
    Run(RunArgs),
    /// Load JSON lines from files or stdin into a Kafka topic.
    #[command(after_help = "Examples:\n  \
        cardinal produce -b localhost:9092 -t clicks --key-field uid frames.json.gz\n  \
        # key = uid, timestamp = ts (seconds) x 1000, for run --uid-from key --ts-from record-timestamp\n  \
        cardinal produce -b localhost:9092 -t clicks --key-field uid --timestamp-field ts frames.json.gz")]
    Produce(ProduceArgs),
    /// Print every message of a topic up to its current end (like kcat -C -e).
    Consume(ConsumeArgs),
    /// Write synthetic production-like frames (deterministic for a seed).
    Gen(GenArgs),
    /// Run the main job on built-in data: a million generated frames through Kafka, counted.
    Demo(DemoArgs),
    /// Merge partial results of several `count --partials-out` into final results.
    #[command(after_help = "Examples:\n  \
        cardinal count --partials-out /shared/partials day-1*.json.gz    # on machine 1\n  \
        cardinal count --partials-out /shared/partials day-2*.json.gz    # on machine 2\n  \
        cardinal merge /shared/partials --format json > results.jsonl")]
    Merge(MergeArgs),
    /// Draw results (JSON lines) as an SVG chart: one panel per window size.
    #[command(after_help = "Examples:\n  \
        cardinal count --windows minute,hour --format json frames.json > results.jsonl\n  \
        cardinal chart results.jsonl -o chart.svg\n  \
        cardinal consume -b localhost:9092 -t cardinal-results --latest-per-key | cardinal chart - -o chart.svg")]
    Chart(ChartArgs),
}

#[derive(Debug, Args)]
pub struct ChartArgs {
    /// Results as JSON lines (`count --format json`, or `consume` on the results
    /// topic); `-` or nothing for stdin. Each window's latest version is drawn, and
    /// corrected windows are marked.
    #[arg(default_value = "-")]
    pub input: String,

    /// Where to write the SVG (default: stdout). PNG is not drawn: convert the SVG
    /// (`rsvg-convert chart.svg > chart.png`) or open it in a browser.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// Options shared by every command that counts.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Counting")]
pub struct CountingOptions {
    /// Windows to count, comma-separated: minute, hour, day, week, month, year.
    #[arg(long, value_delimiter = ',', default_value = "minute", value_parser = parse_granularity)]
    pub windows: Vec<Granularity>,

    /// IANA time zone for window boundaries (days start at local midnight, DST-aware).
    #[arg(long, default_value = "UTC", value_parser = parse_zone)]
    pub tz: Calendar,

    /// How late a frame may arrive, behind the newest one, and still be counted.
    #[arg(long, default_value = "5s", value_parser = parse_seconds, allow_hyphen_values = true)]
    pub lateness: i64,

    /// How long after a window is final it still accepts late frames, as corrections.
    #[arg(long, default_value = "0s", value_parser = parse_seconds, allow_hyphen_values = true)]
    pub grace: i64,

    /// A frame further than this ahead of the stream is held as a suspected garbage timestamp.
    #[arg(long, default_value = "60s", value_parser = parse_seconds, allow_hyphen_values = true)]
    pub max_ahead: i64,

    /// Frames that must agree before the stream is believed to have jumped ahead.
    /// Held frames take memory: at most this many, and 16 MiB, per partition or
    /// file; when bytes fill first, the frames held so far decide.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub confirm: u32,

    /// Live sources: a partition without frames for this long stops holding results back.
    /// Keep it above the consumer group's session timeout (10 s), or partitions that come
    /// back after a restart may find their windows closed.
    #[arg(long, default_value = "30s", value_parser = parse_seconds, allow_hyphen_values = true)]
    pub idle_timeout: i64,

    /// Distinct counter: exact (64-bit hashes) or hll (Apache DataSketches HLL).
    #[arg(long, value_enum, ignore_case = true, default_value = "exact")]
    pub counter: CounterArg,

    /// HLL precision, log2 of the registers: 14 gives about 0.8% relative standard error.
    #[arg(long, default_value_t = HllConfig::DEFAULT_LG_K,
          value_parser = clap::value_parser!(u8).range(HllConfig::MIN_LG_K as i64..=HllConfig::MAX_LG_K as i64))]
    pub precision: u8,

    /// Output format for results on stdout.
    #[arg(long, value_enum, ignore_case = true, default_value = "text")]
    pub format: Format,

    /// With `--counter hll` and `--format json`: add each window's DataSketches HLL
    /// sketch (standard binary, base64) to its record as `sketch`, so that Druid,
    /// Spark or the `datasketches` Python package can union windows into any range.
    #[arg(long)]
    pub emit_sketch: bool,

    /// Write every rejected, late or outlying frame here, as JSON lines.
    #[arg(long, value_name = "FILE")]
    pub rejects: Option<PathBuf>,

    /// Parser threads (default: one per core; at most 64). Memory does not grow
    /// with them: the chunks between reading and counting hold at most 64 MiB of
    /// input (two frames, if --max-frame-bytes is over 32 MiB) and the parse
    /// results of 4,096 frames each, about 64 MiB more at most.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub threads: Option<u16>,

    /// Frames (lines, or Kafka messages) longer than this are skipped in constant
    /// memory and rejected as `too_large`, with their length and first KiB.
    #[arg(long, default_value = "1MiB", value_parser = parse_bytes)]
    pub max_frame_bytes: usize,

    /// Do not print the summary on stderr.
    #[arg(long, short)]
    pub quiet: bool,

    /// Serve metrics (Prometheus text at /metrics), /healthz and /readyz on this
    /// address, e.g. 127.0.0.1:9898 (port 0 picks a free one, logged as
    /// `http_listening`). Off by default. An address other than loopback, such as
    /// 0.0.0.0:9898, exposes the counts and the lag to the network: choose it only
    /// on purpose.
    #[arg(long, value_name = "ADDR", help_heading = "Operations", value_parser = parse_listen_addr)]
    pub http: Option<std::net::SocketAddr>,

    /// Root-level key that holds the user id (a non-empty string). A key written with
    /// JSON escapes counts when it decodes to this name.
    #[arg(long, default_value = "uid", value_name = "NAME", value_parser = parse_field_name)]
    pub uid_field: String,

    /// Root-level key that holds the event time (an integer, or a string of digits).
    #[arg(long, default_value = "ts", value_name = "NAME", value_parser = parse_field_name)]
    pub ts_field: String,

    /// Unit of the event time: s (unix seconds), ms or us. Converted to seconds by
    /// floor division; a value beyond the year 9999 in that unit is `bad_ts`.
    #[arg(
        long,
        value_enum,
        ignore_case = true,
        default_value = "s",
        value_name = "UNIT"
    )]
    pub ts_unit: TsUnit,
}

pub(super) fn parse_field_name(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("a field name cannot be empty".into());
    }
    Ok(s.to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CounterArg {
    Exact,
    Hll,
}

/// Checkpoints, for `count` on files and for `run`.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Checkpoints")]
pub struct StateArgs {
    /// Checkpoint the state here (every --checkpoint-interval and at shutdown) and
    /// resume from it on start. Files resume at their checkpointed byte; stdin cannot.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Discard the checkpoint in --state-dir instead of resuming from it.
    #[arg(long, requires = "state_dir")]
    pub reset_state: bool,

    /// How often to checkpoint (for `run`, offsets are committed at the same time).
    #[arg(long, default_value = "1s", value_parser = parse_duration, allow_hyphen_values = true)]
    pub checkpoint_interval: Duration,
}

#[derive(Debug, Args)]
pub struct CountArgs {
    #[command(flatten)]
    pub counting: CountingOptions,

    #[command(flatten)]
    pub state: StateArgs,

    /// Count a share of the history on this machine: write every window's counter
    /// state (not its count) to a file in DIR at the end of input, and print no
    /// results. `cardinal merge` on the files of every share gives the results of
    /// one count over all of them.
    #[arg(long, value_name = "DIR", help_heading = "Scale-out")]
    pub partials_out: Option<PathBuf>,

    /// Also produce every rejected, late or outlying frame to this Kafka topic (it must
    /// exist; needs --brokers or -F): the line's original bytes as the value, with
    /// `cardinal.source` (the file), `cardinal.line`, `cardinal.reason` and
    /// `__connect.errors.exception.message` headers. The run waits for every record to
    /// be acknowledged, and exits 1 if one is not.
    #[arg(long, value_name = "TOPIC", help_heading = "Kafka connection")]
    pub rejects_topic: Option<String>,

    #[command(flatten)]
    pub kafka: KafkaArgs,

    /// Input files (gzip, told by its first bytes, is decompressed); `-` or none reads stdin.
    #[arg(value_name = "FILE")]
    pub files: Vec<String>,
}

impl CountArgs {
    /// The counting options' sinks, and the dead-letter topic if one was asked for.
    pub(super) fn sinks(&self) -> Result<(Sinks, Option<kafka::TopicRejects>)> {
        let (sinks, dlq, _) = self.sinks_resuming(None)?;
        Ok((sinks, dlq))
    }

    /// [`CountArgs::sinks`], the `--rejects` file resumed at `rejects_bytes` (see
    /// `RejectSink::resume`), and that file's sink for the checkpoint hooks.
    pub(super) fn sinks_resuming(
        &self,
        rejects_bytes: Option<u64>,
    ) -> Result<(Sinks, Option<kafka::TopicRejects>, Option<RejectSink>)> {
        let (mut sinks, file) = self.counting.sinks_resuming(rejects_bytes)?;
        let Some(topic) = &self.rejects_topic else {
            let k = &self.kafka;
            if k.brokers.is_some() || k.client_config.is_some() || !k.property.is_empty() {
                return Err(UsageError(
                    "--brokers, --client-config and -X are for --rejects-topic, which is not set"
                        .into(),
                )
                .into());
            }
            return Ok((sinks, None, file));
        };
        let dlq = kafka::TopicRejects::connect(&self.kafka.options()?, topic)?;
        sinks.rejects.push(Box::new(dlq.clone()));
        Ok((sinks, Some(dlq), file))
    }
}

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// Partial results (`count --partials-out`): files, or directories of `*.cpart`.
    #[arg(value_name = "PATH", required = true)]
    pub paths: Vec<PathBuf>,

    /// Output format for results on stdout.
    #[arg(long, value_enum, ignore_case = true, default_value = "text")]
    pub format: Format,

    /// Add each HLL window's DataSketches sketch (base64) to its JSON record.
    #[arg(long)]
    pub emit_sketch: bool,
}

pub(super) const RUN_AFTER_HELP: &str = "\
Delivery:
  Offsets are committed only after every window the frames count in has been
  emitted and, with --results-topic, acknowledged by the broker: at-least-once.
  Results are keyed WINDOW/START, so a compacted results topic keeps the latest
  version of each window.

Watermarks:
  Each partition has its own watermark; the stream's is the minimum over the
  partitions that received frames within --idle-timeout. When no frames arrive
  at all for --idle-timeout plus --lateness, every open window is emitted.

Examples:
  cardinal run --brokers localhost:9092 --topic clicks --results-topic unique-users
  cardinal run --brokers kafka:9093 --topic clicks -X security.protocol=SASL_SSL \\
      -X sasl.mechanisms=SCRAM-SHA-512 -X sasl.username=me -X sasl.password=...
  cardinal run --brokers localhost:9092 --topic clicks --from earliest --until-end \\
      --windows minute,hour,day,week,month,year
  cardinal run --brokers localhost:9092 --topic clicks --rejects-topic clicks-dlq
  # user = the record's key, time = its timestamp: the value is never parsed
  cardinal run --brokers localhost:9092 --topic clicks --uid-from key --ts-from record-timestamp";

/// Connection options for Kafka commands.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Kafka connection")]
pub struct KafkaArgs {
    /// Bootstrap brokers, comma-separated HOST:PORT (or `bootstrap.servers` in --client-config).
    #[arg(long, short = 'b', value_name = "HOST:PORT[,...]")]
    pub brokers: Option<String>,

    /// librdkafka properties from a file of KEY=VALUE lines (`#` comments), as kcat's -F:
    /// keeps secrets off the command line. Applied before -X, so -X wins.
    #[arg(long = "client-config", short = 'F', value_name = "FILE")]
    pub client_config: Option<PathBuf>,

    /// Any librdkafka property, e.g. -X security.protocol=SASL_SSL (repeatable, wins over defaults).
    // Taken as text and split in `options()`: clap quotes a value it rejects, and a
    // malformed one may be a password whose `=` was forgotten.
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    pub property: Vec<String>,

    /// Give up with an error if the cluster does not answer within this long.
    #[arg(long, default_value = "10s", value_parser = parse_seconds, allow_hyphen_values = true)]
    pub timeout: i64,
}

impl KafkaArgs {
    /// The connection options, with the --client-config file read.
    pub fn options(&self) -> Result<KafkaOptions> {
        let client_config = match &self.client_config {
            Some(path) => Some(crate::client_config::PropertiesFile::read(path)?),
            None => None,
        };
        let brokers = match (&self.brokers, &client_config) {
            (Some(b), _) => b.clone(),
            (None, Some(file)) if file.get("bootstrap.servers").is_some() => file
                .get("bootstrap.servers")
                .unwrap_or_default()
                .to_string(),
            _ => {
                return Err(UsageError(
                    "no brokers: pass --brokers (or set CARDINAL_BROKERS), or set \
                     bootstrap.servers in --client-config"
                        .into(),
                )
                .into());
            }
        };
        let properties = (self.property.iter().enumerate())
            .map(|(i, p)| {
                parse_property(p).map_err(|e| {
                    UsageError(format!(
                        "-X number {}: {e} (its text is not repeated: it may hold a secret)",
                        i + 1
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(KafkaOptions {
            brokers,
            client_config,
            properties,
            timeout: Duration::from_secs(self.timeout.max(1) as u64),
        })
    }
}

pub(super) fn parse_property(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        // Not the text itself: it may be a secret with its `=` forgotten.
        _ => Err("not KEY=VALUE, e.g. -X security.protocol=SSL".to_string()),
    }
}

/// The command line, with settings from the environment: every option of `run`
/// that takes a value can be set as `CARDINAL_` and its long name in capitals
/// (`--results-topic` is `CARDINAL_RESULTS_TOPIC`), and the connection options
/// of `produce` and `consume` too. `--help` lists each variable. Flags, `-X` and
/// inputs are not taken from the environment: a stray variable must not turn a
/// live run into a backfill, or change what `count` reads.
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    Cli::command()
        .mut_subcommand("run", |c| with_env(c, |_| true))
        .mut_subcommand("produce", |c| with_env(c, is_connection))
        .mut_subcommand("consume", |c| with_env(c, is_connection))
}

/// Parses the process's arguments and environment; exits on a usage error, as clap does.
pub fn parse() -> Cli {
    use clap::FromArgMatches;
    Cli::from_arg_matches(&command().get_matches()).unwrap_or_else(|e| e.exit())
}

pub(super) fn is_connection(long: &str) -> bool {
    matches!(long, "brokers" | "client-config" | "timeout")
}

pub(super) fn with_env(mut cmd: clap::Command, which: fn(&str) -> bool) -> clap::Command {
    let named: Vec<(clap::Id, String)> = cmd
        .get_arguments()
        .filter(|a| a.get_action().takes_values() && !a.is_positional())
        .filter_map(|a| Some((a.get_id().clone(), a.get_long()?.to_string())))
        .filter(|(_, long)| which(long))
        .collect();
    for (id, long) in named {
        let var = format!("CARDINAL_{}", long.to_ascii_uppercase().replace('-', "_"));
        cmd = cmd.mut_arg(id, |a| a.env(var));
    }
    cmd
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Topic to read frames from.
    #[arg(long, short)]
    pub topic: String,

    /// Consumer group.
    #[arg(long, short, default_value = "cardinal")]
    pub group: String,

    /// Also produce each result as JSON to this topic, keyed WINDOW/START.
    #[arg(long, value_name = "TOPIC")]
    pub results_topic: Option<String>,

    /// Also produce every rejected, late or outlying frame to this dead-letter topic
    /// (it must exist): the original bytes and key, with Kafka Connect's dead-letter
    /// headers and `cardinal.reason`. No offset is committed past an unacknowledged one.
    #[arg(long, value_name = "TOPIC")]
    pub rejects_topic: Option<String>,

    /// Where each frame's user id comes from: json (the frame's root --uid-field) or
    /// key (the Kafka record's key, which must be non-empty UTF-8: a record without
    /// a key is rejected as missing_uid, an empty key as empty_uid, one that is not
    /// UTF-8 as uid_not_string).
    #[arg(
        long,
        value_enum,
        ignore_case = true,
        default_value = "json",
        value_name = "FROM"
    )]
    pub uid_from: UidFrom,

    /// Where each frame's event time comes from: json (the frame's root --ts-field,
    /// in --ts-unit) or record-timestamp (the Kafka record's timestamp, CreateTime or
    /// LogAppendTime: always milliseconds whatever --ts-unit, floored to seconds; a
    /// record without one is bad_ts). With --uid-from key as well, the value is never
    /// parsed and may be anything; with one field from the record, the value must
    /// still be a valid JSON frame holding the other.
    #[arg(
        long,
        value_enum,
        ignore_case = true,
        default_value = "json",
        value_name = "FROM"
    )]
    pub ts_from: TsFrom,

    /// Where to start in partitions without a position of ours.
    #[arg(long, value_enum, ignore_case = true, default_value = "committed")]
    pub from: StartFrom,

    /// Backfill: read up to the end offsets as of start, emit everything as final, exit 0.
    #[arg(long)]
    pub until_end: bool,

    /// A backfill that reads nothing for this long (the broker is down, or the group
    /// gives this process no partition) fails with exit 1 and says which. A live run
    /// never gives up: it logs the outage once per interval and resumes by itself.
    #[arg(long, default_value = "60s", value_parser = parse_seconds, allow_hyphen_values = true)]
    pub stall_timeout: i64,

    /// Share the topic with every other `run --scale-out` of the same --group, on
    /// this machine or others: the group spreads the partitions, each instance
    /// checkpoints its windows' users and its partitions' positions to the compacted
    /// topic GROUP.partials (created if missing), a partition that moves resumes
    /// where its last owner let it go, and one instance (chosen by the consumer
    /// group GROUP.merge) publishes each window to --results-topic, the union of
    /// every instance's users, once every partition is past it. Needs
    /// --results-topic; state lives in the topic, not in --state-dir.
    #[arg(long)]
    pub scale_out: bool,

    /// Static group membership (KIP-345): a stable id for this instance, such as its
    /// host or pod name. A restart with the same id takes its partitions back without a
    /// rebalance; without one, a restart after kill -9 waits out the dead member's
    /// session, and on Tansu may wait for ever. Never give two live instances one id.
    #[arg(long, value_name = "ID")]
    pub instance_id: Option<String>,

    /// Publish the results and commit the frames' offsets in one Kafka transaction
    /// per commit (every --checkpoint-interval), so that a consumer of the results
    /// topic reading with isolation.level=read_committed sees each version of each
    /// window once, across kills and restarts. Needs --results-topic and a broker
    /// with transactions (Apache Kafka; not Tansu). Not yet with --state-dir or
    /// --scale-out.
    #[arg(long)]
    pub exactly_once: bool,

    /// Watermark alignment: frames this far ahead of the slowest partition's event
    /// time wait (uncounted) until it catches up, so reading speed never makes a frame
    /// late and open windows stay bounded by the drift; partitions are paused while
    /// more than 16,384 frames wait.
    #[arg(long, default_value = "5m", value_parser = parse_seconds, allow_hyphen_values = true)]
    pub max_drift: i64,

    /// A partition behind all others by more than --max-drift for this long (a
    /// producer with a skewed clock) stops holding results back: its frames are
    /// judged against the stream, late ones rejected, and a warning names it.
    #[arg(long, default_value = "60s", value_parser = parse_seconds, allow_hyphen_values = true)]
    pub drift_timeout: i64,

    /// Frames allowed to wait for the slowest partition (see --max-drift) before the
    /// partitions they belong to are paused, until half as many wait. Memory: about
    /// this many frames' bytes.
    #[arg(long, default_value_t = crate::aggregator::Alignment::MAX_WAITING as u64, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_waiting: u64,

    /// A live run logs a one-line status (rate, lag, watermark, open windows) this
    /// often (event `status`); 0 turns it off. A backfill shows a progress bar instead,
    /// when stderr is a terminal.
    #[arg(long, default_value = "30s", value_parser = parse_seconds, help_heading = "Operations")]
    pub status_interval: i64,

    #[command(flatten)]
    pub counting: CountingOptions,

    #[command(flatten)]
    pub state: StateArgs,

    #[command(flatten)]
    pub kafka: KafkaArgs,
}

#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// Topic to write to (it must exist).
    #[arg(long, short)]
    pub topic: String,

    /// Key each message by this root-level field (e.g. uid), so a user stays on one
    /// partition (and `run --uid-from key` can count by the key). The key is the
    /// field as `count --uid-field FIELD` reads it: a string, unescaped, in a line
    /// that is valid JSON whole; other lines are sent without a key, and counted.
    #[arg(long, value_name = "FIELD")]
    pub key_field: Option<String>,

    /// Set each message's timestamp (CreateTime) from this root-level field (e.g. ts),
    /// an integer or a string of digits in --timestamp-unit, for `run --ts-from
    /// record-timestamp`: as `count --ts-field FIELD` reads it, in whole seconds. A
    /// line without a usable one gets the producer's clock, and the summary says how
    /// many did.
    #[arg(long, value_name = "FIELD")]
    pub timestamp_field: Option<String>,

    /// Unit of --timestamp-field: s, ms or us (a record timestamp is milliseconds;
    /// microseconds are floored).
    #[arg(
        long,
        value_enum,
        ignore_case = true,
        default_value = "s",
        value_name = "UNIT"
    )]
    pub timestamp_unit: TsUnit,

    /// Input files (gzip, told by its first bytes, is decompressed); `-` or none reads stdin.
    #[arg(value_name = "FILE")]
    pub files: Vec<String>,

    #[command(flatten)]
    pub kafka: KafkaArgs,
}

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// Topic to read, from the beginning of every partition to its end.
    #[arg(long, short)]
    pub topic: String,

    /// Print `KEY<TAB>VALUE` instead of the value alone.
    #[arg(long)]
    pub keys: bool,

    /// Print each record's headers before its value (after the key), as one JSON
    /// object, values decoded as UTF-8 (lossily): how a dead-letter record says why.
    #[arg(long, conflicts_with = "latest_per_key")]
    pub headers: bool,

    /// Keep only the last value per key (what a compacted topic converges to).
    #[arg(long)]
    pub latest_per_key: bool,

    #[command(flatten)]
    pub kafka: KafkaArgs,
}

#[derive(Debug, Args)]
pub struct GenArgs {
    #[command(flatten)]
    pub frames: GenOptions,

    /// Write to this file instead of stdout (`.gz` compresses).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct GenOptions {
    /// Number of frames.
    #[arg(long, default_value_t = 1_000_000)]
    pub frames: u64,
    /// Frames per second of event time.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Number of distinct users.
    #[arg(long, default_value_t = 100_000)]
    pub users: u64,
    /// First timestamp (unix seconds).
    #[arg(long, default_value_t = 1_468_244_384)]
    pub start: i64,
    /// Random seed: the same options and seed give the same bytes.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Probability that a frame arrives late.
    #[arg(long, default_value_t = 0.0)]
    pub disorder: f64,
    /// How late, at most, in seconds.
    #[arg(long, default_value_t = 5)]
    pub max_delay: i64,
    /// Probability that a frame is very late instead: a heavy tail, log-uniform
    /// from --max-delay to --tail-max-delay. `--disorder 0.3 --tail 0.001` is the
    /// challenge's stream: nearly all frames within 5 s, one in a thousand later.
    #[arg(long, default_value_t = 0.0)]
    pub tail: f64,
    /// The tail's longest delay, in seconds.
    #[arg(long, default_value_t = 300)]
    pub tail_max_delay: i64,
    /// Probability that `ts` is written as a string.
    #[arg(long, default_value_t = 0.0)]
    pub string_ts: f64,
    /// End lines with CRLF.
    #[arg(long)]
    pub crlf: bool,
    /// Probability of a bit flip in `ts` (moves it by weeks to decades).
    #[arg(long, default_value_t = 0.0)]
    pub bitflips: f64,
    /// Probability of a malformed frame.
    #[arg(long, default_value_t = 0.0)]
    pub malformed: f64,
    /// Fraction of the frames after which event time jumps ahead.
    #[arg(long)]
    pub gap_at: Option<f64>,
    /// How far it jumps, in seconds.
    #[arg(long, default_value_t = 0)]
    pub gap_seconds: i64,
    /// Average frame size in bytes (each frame 60-140% of it; small sizes overshoot a little).
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(50..=100_000_000))]
    pub frame_bytes: u64,
    /// What the rest of each frame looks like: `mixed` exercises every corner of
    /// JSON (nesting, decoy keys, numbers, emoji); `challenge` is shaped like the
    /// challenge's sample generator (short keys, long strings dense with escapes
    /// and Cyrillic), the harder case for a parser's string scanning.
    #[arg(long, value_enum, default_value_t = Profile::Mixed)]
    pub profile: Profile,
}

impl From<&GenOptions> for GenConfig {
    fn from(o: &GenOptions) -> GenConfig {
        GenConfig {
            frames: o.frames,
            rate: o.rate,
            users: o.users,
            start: o.start,
            seed: o.seed,
            disorder: o.disorder,
            max_delay: o.max_delay,
            tail: o.tail,
            tail_max_delay: o.tail_max_delay,
            string_ts: o.string_ts,
            crlf: o.crlf,
            bitflips: o.bitflips,
            malformed: o.malformed,
            gap_at: o.gap_at,
            gap_seconds: o.gap_seconds,
            frame_bytes: usize::try_from(o.frame_bytes).unwrap_or(usize::MAX),
            profile: o.profile,
        }
    }
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Number of generated frames.
    #[arg(long, default_value_t = 1_000_000)]
    pub frames: u64,

    /// The broker to go through: an embedded one, or Tansu if installed (scripts/kafka.sh install).
    #[arg(long, value_enum, ignore_case = true, default_value = "embedded")]
    pub broker: crate::demo::DemoBroker,
}
