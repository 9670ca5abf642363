//! Each subcommand's body: open the inputs and sinks, call the library, map the
//! outcome to an exit code.

use super::*;

/// A combination of options that cannot work; main exits 2 for it, as for clap's own.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Runs the parsed command. Errors are for main to print: status 2 for a
/// [`UsageError`], 1 for everything else.
/// An error and its causes on one line, each cause once: library errors often say
/// their cause in their own message too (`cannot open x: No such file …`), and
/// anyhow's chain would print it again.
pub fn describe(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !out.contains(&cause) {
            out.push_str(": ");
            out.push_str(&cause);
        }
    }
    out
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Count(args) => count(args),
        Command::Run(args) => run_kafka(args),
        Command::Produce(args) => produce(args),
        Command::Consume(args) => consume(args),
        Command::Gen(args) => gen_frames(args),
        Command::Demo(args) => demo(args),
        Command::Chart(args) => chart(args),
        Command::Merge(args) => merge(args),
    }
}

/// Opens every input (stdin if none) first, so that a missing file fails before
/// any output, adding the bytes read to `read` if given.
pub(super) fn open_files(
    files: &[String],
    read: Option<Arc<AtomicU64>>,
) -> Result<(Vec<Input>, Vec<OpenInput>)> {
    let stdin = ["-".to_string()];
    let files = if files.is_empty() { &stdin[..] } else { files };
    let inputs: Vec<Input> = files.iter().map(|f| Input::from_arg(f)).collect();
    let opened = inputs
        .iter()
        .map(|input| {
            Ok(OpenInput {
                name: input.name(),
                reader: input.open_later(read.clone())?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((inputs, opened))
}

/// [`open_files`] for counting: also starts a progress bar over their size on a
/// terminal (unless `--quiet`), fed from the run's shared telemetry.
pub(super) fn open_inputs(
    files: &[String],
    opts: &CountingOptions,
    config: &mut CountConfig,
) -> Result<(Vec<OpenInput>, Option<Progress>)> {
    let read = (!opts.quiet && Progress::on_terminal()).then(|| Arc::new(AtomicU64::new(0)));
    let (inputs, opened) = open_files(files, read.clone())?;
    let progress = read.map(|read| {
        let total = inputs.iter().map(Input::size).sum::<Option<u64>>();
        let metrics = config.metrics.get_or_insert_with(Metrics::new).clone();
        Progress::start(Goal::Bytes { total, read }, metrics)
    });
    Ok((opened, progress))
}

pub(super) fn count(args: CountArgs) -> Result<ExitCode> {
    if let Some(rejects) = &args.counting.rejects {
        refuse_an_input_as_output(&args.files, "--rejects", rejects)?;
    }
    if let Some(out) = &args.partials_out {
        return count_partials(&args, out);
    }
    let Some(dir) = &args.state.state_dir else {
        return count_inputs(&args);
    };
    if args.files.is_empty() || args.files.iter().any(|f| f == "-") {
        return Err(UsageError(
            "--state-dir needs files: stdin cannot be resumed from a checkpoint".into(),
        )
        .into());
    }
    let identity = format!(
        "files {} {}",
        files_identity(&args.files)?,
        args.counting.identity()
    );
    let state_dir = StateDir::open(dir)?;
    let loaded = match state_dir.load(&identity, args.state.reset_state) {
        // Checkpoints written before files were known by what they are name them;
        // the same names, in the same order, still resume.
        Err(crate::checkpoint::CheckpointError::Foreign { found, .. })
            if found
                == format!(
                    "files {} {}",
                    args.files.join(","),
                    args.counting.identity()
                ) =>
        {
            state_dir.load(&found, false)
        }
        other => other,
    };
    let restore = match loaded? {
        Some(Checkpoint {
            input: InputPosition::Files { complete: true, .. },
            ..
        }) => {
            crate::say!(
                "cardinal: the checkpoint in {} says these files were counted to the end; nothing to do \
                 (pass --reset-state to count them again)",
                dir.display()
            );
            return Ok(ExitCode::SUCCESS);
        }
        Some(Checkpoint {
            input:
                InputPosition::Files {
                    input,
                    offset,
                    next_line,
                    ..
                },
            state,
            rejects_bytes,
            totals,
            ..
        }) => {
            tracing::info!(event = "checkpoint_restored", input, offset, next_line);
            Some((
                pipeline::Restored { state, totals },
                FileResume {
                    input,
                    offset,
                    next_line,
                },
                rejects_bytes,
            ))
        }
        Some(_) => bail!(
            "{} holds a checkpoint of a Kafka run, not of files",
            dir.display()
        ),
        None => None,
    };
    let mut config = args.counting.config()?;
    let (inputs, progress) = open_inputs(&args.files, &args.counting, &mut config)?;
    let _server = args.counting.serve(&config)?;
    let (restore, rejects_bytes) = match restore {
        // A checkpoint from before lengths were recorded (format 3): append.
        Some((state, at, bytes)) => (Some((state, at)), Some(bytes.unwrap_or(u64::MAX))),
        None => (None, None),
    };
    let (mut sinks, dlq, rejects_file) = args.sinks_resuming(rejects_bytes)?;
    let mut hooks = FileCheckpoints::new(
        Checkpointing::new(state_dir, identity).with_metrics(config.metrics.clone()),
        args.state.checkpoint_interval,
    );
    hooks.rejects_file = rejects_file;
    if let Some(dlq) = dlq {
        hooks.rejects_first.push(Box::new(dlq));
    }
    let started = Instant::now();
    let report = pipeline::count_from(
        &config,
        inputs,
        &mut sinks,
        &mut hooks,
        restore,
        Some(shutdown_flag()?),
    )?;
    drop(progress);
    if !args.counting.quiet && !report.output_closed {
        crate::say_raw!(
            "{}{}",
            report.telemetry.summary(started.elapsed()),
            report.checkpoint_summary
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// SIGINT and SIGTERM ask for a graceful stop: commit what is safe, exit 0.
pub(super) fn shutdown_flag() -> Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, flag.clone()).context("cannot install signal handlers")?;
    }
    Ok(flag)
}

pub(super) fn run_kafka(args: RunArgs) -> Result<ExitCode> {
    let state = args
        .state
        .state_dir
        .as_ref()
        .map(|dir| kafka::StateOptions {
            dir: dir.clone(),
            reset: args.state.reset_state,
            rejects_file: None,
            identity: format!(
                "kafka topic={} group={} {}{}",
                args.topic,
                args.group,
                args.counting.identity(),
                record_fields_identity(args.uid_from, args.ts_from)
            ),
        });
    if args.results_topic.as_ref() == Some(&args.topic) {
        // The results would be read back as frames and rejected as missing_uid.
        return Err(UsageError(format!(
            "--results-topic {} must differ from --topic: the results would be read back as frames",
            args.topic
        ))
        .into());
    }
    if let Some(dlq) = &args.rejects_topic {
        // Read back as input, a rejected frame would be rejected again, for ever; mixed
        // into the results, it would break their one-record-per-window contract.
        if *dlq == args.topic || args.results_topic.as_ref() == Some(dlq) {
            return Err(UsageError(format!(
                "--rejects-topic {dlq} must differ from --topic and --results-topic"
            ))
            .into());
        }
    }
    let mut kafka = args.kafka.options()?;
    if let Some(id) = &args.instance_id {
        // First, so that an explicit -X group.instance.id still wins.
        kafka
            .properties
            .insert(0, ("group.instance.id".into(), id.clone()));
    }
    let mut opts = RunOptions {
        kafka,
        topic: args.topic,
        group: args.group,
        results_topic: args.results_topic,
        rejects_topic: args.rejects_topic,
        state,
        from: args.from,
        until: if args.until_end {
            Until::EndAtStart
        } else {
            Until::Forever
        },
        fed: None,
        commit_interval: args.state.checkpoint_interval,
        stall_timeout: Duration::from_secs(args.stall_timeout.max(1) as u64),
        scale_out: args.scale_out.then_some(kafka::ScaleOutOptions {
            emit_sketch: args.counting.emit_sketch,
        }),
        exactly_once: args.exactly_once,
    };
    if args.exactly_once {
        let refuse = |why: &str| Err(UsageError(format!("--exactly-once {why}")).into());
        if opts.results_topic.is_none() {
            return refuse("needs --results-topic: the transaction is the results'");
        }
        if opts.state.is_some() {
            return refuse(
                "does not work with --state-dir yet: a checkpoint written before a \
                 transaction that then aborts would skip its results",
            );
        }
        if opts.scale_out.is_some() {
            return refuse("does not work with --scale-out yet");
        }
    }
    if args.scale_out {
        let refuse = |why: &str| Err(UsageError(format!("--scale-out {why}")).into());
        if opts.results_topic.is_none() {
            return refuse("needs --results-topic: the merged results are published there");
        }
        if opts.state.is_some() {
            return refuse(
                "keeps its state in the partials topic (GROUP.partials), not in --state-dir: drop --state-dir",
            );
        }
        if args.ts_from == TsFrom::RecordTimestamp {
            return refuse(
                "cannot hand a partition's uncounted frames over with their record timestamps yet: use --ts-from json",
            );
        }
    }
    let mut config = args.counting.config()?;
    if args.scale_out {
        // Windows an instance closes go to the partials topic with their counters.
        config.settings.keep_state = true;
        config.settings.keep_changes = true;
    }
    config.frames = config.frames.taking(args.uid_from, args.ts_from);
    config.settings.alignment = Some(Alignment {
        max_waiting: args.max_waiting as usize,
        max_drift: args.max_drift.max(1),
        drift_timeout_ms: args.drift_timeout as u64 * 1000,
    });
    let goal = if args.until_end {
        (!args.counting.quiet && Progress::on_terminal()).then_some(Goal::Backfill)
    } else {
        (args.status_interval > 0).then(|| Goal::Live {
            every: Duration::from_secs(args.status_interval as u64),
        })
    };
    let progress = goal.map(|goal| {
        let metrics = config.metrics.get_or_insert_with(Metrics::new).clone();
        Progress::start(goal, metrics)
    });
    let _server = args.counting.serve(&config)?;
    // With a checkpoint to resume from, the rejects file is cut back to its length
    // once the checkpoint is read (kafka::run), not truncated now.
    let resuming = opts.state.as_ref().map(|_| u64::MAX);
    let (mut sinks, rejects_file) = args.counting.sinks_resuming(resuming)?;
    if let Some(st) = &mut opts.state {
        st.rejects_file = rejects_file;
    }
    let started = Instant::now();
    let report = kafka::run(&opts, &config, &mut sinks, shutdown_flag()?);
    drop(progress);
    let report = report?;
    if !args.counting.quiet {
        crate::say_raw!(
            "{}{}",
            report.telemetry.summary(started.elapsed()),
            report.checkpoint_summary
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn consume(args: ConsumeArgs) -> Result<ExitCode> {
    let mut out = io::BufWriter::new(io::stdout().lock());
    let mut latest: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = Default::default();
    let mut write_error = None;
    let opts = args.kafka.options()?;
    kafka::consume_to_end(&opts, &args.topic, |m| {
        if args.latest_per_key {
            latest.insert(m.key.unwrap_or_default(), m.payload);
            return true;
        }
        let mut line = Vec::with_capacity(m.payload.len() + 64);
        if args.keys {
            line.extend_from_slice(m.key.as_deref().unwrap_or_default());
            line.push(b'\t');
        }
        if args.headers {
            let headers: serde_json::Map<String, serde_json::Value> = m
                .headers
                .iter()
                .map(|(k, v)| {
                    let v = v
                        .as_deref()
                        .map(|v| String::from_utf8_lossy(v).into_owned());
                    (k.clone(), v.map_or(serde_json::Value::Null, Into::into))
                })
                .collect();
            line.extend_from_slice(serde_json::Value::Object(headers).to_string().as_bytes());
            line.push(b'\t');
        }
        line.extend_from_slice(&m.payload);
        line.push(b'\n');
        match out.write_all(&line) {
            Ok(()) => true,
            Err(e) => {
                write_error = Some(e);
                false
            }
        }
    })?;
    for (k, v) in latest {
        let res = if args.keys {
            out.write_all(&k).and_then(|_| out.write_all(b"\t"))
        } else {
            Ok(())
        };
        if let Err(e) = res
            .and_then(|_| out.write_all(&v))
            .and_then(|_| out.write_all(b"\n"))
        {
            write_error = Some(e);
            break;
        }
    }
    match write_error.map_or_else(|| out.flush(), Err) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e).context("cannot write to stdout"),
        _ => Ok(ExitCode::SUCCESS),
    }
}

pub(super) fn produce(args: ProduceArgs) -> Result<ExitCode> {
    let opts = args.kafka.options()?;
    let (_, inputs) = open_files(&args.files, None)?;
    let started = Instant::now();
    let from = kafka::RecordFrom {
        key_field: args.key_field.as_deref(),
        timestamp_field: args
            .timestamp_field
            .as_deref()
            .map(|f| (f, args.timestamp_unit)),
    };
    let report = kafka::produce(&opts, &args.topic, &from, inputs)?;
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    let mut blank = if report.skipped_blank > 0 {
        format!(", {} blank lines skipped", report.skipped_blank)
    } else {
        String::new()
    };
    if report.without_key > 0 {
        blank.push_str(&format!(
            ", {} without a string {} in a valid frame (sent without a key)",
            report.without_key,
            args.key_field.as_deref().unwrap_or_default()
        ));
    }
    if report.without_timestamp > 0 {
        blank.push_str(&format!(
            ", {} without a usable {} (timestamped by the producer's clock)",
            report.without_timestamp,
            args.timestamp_field.as_deref().unwrap_or_default()
        ));
    }
    crate::say!(
        "cardinal: produced {} messages ({:.1} MB) to {} in {:.2}s: {:.0} msg/s{blank}",
        report.messages,
        report.bytes as f64 / 1e6,
        args.topic,
        secs,
        report.messages as f64 / secs,
    );
    Ok(ExitCode::SUCCESS)
}

/// The inputs of a checkpointed count, by what they are rather than by name:
/// device, inode, size and modification time of each, in order. `./in.json` and
/// `in.json` are one input; a file replaced by other data under the same name (of
/// the same size, even) is another, whose checkpointed offset means nothing.
fn files_identity(files: &[String]) -> Result<String> {
    use std::os::unix::fs::MetadataExt;
    let ids: Vec<String> = (files.iter())
        .map(|f| {
            let m = std::fs::metadata(f).with_context(|| format!("cannot read {f}"))?;
            Ok(format!(
                "{}:{}:{}:{}.{}",
                m.dev(),
                m.ino(),
                m.len(),
                m.mtime(),
                m.mtime_nsec()
            ))
        })
        .collect::<Result<_>>()?;
    Ok(ids.join(","))
}

/// What `--uid-from` and `--ts-from` add to a run's checkpoint identity: the
/// counters hold hashes of whatever stood for the uid, and a restart that took it
/// from elsewhere would mix two kinds of user. Nothing for the defaults, so that
/// checkpoints written before these options existed are still accepted.
fn record_fields_identity(uid_from: UidFrom, ts_from: TsFrom) -> String {
    let mut out = String::new();
    if uid_from == UidFrom::Key {
        out.push_str(" uid_from=key");
    }
    if ts_from == TsFrom::RecordTimestamp {
        out.push_str(" ts_from=record-timestamp");
    }
    out
}

/// Refuses an output file that is one of the inputs, by what it is (device and
/// inode), not by its name (`./in.json` and `in.json`, a link): creating it would
/// empty the input before a line of it is read.
fn refuse_an_input_as_output(
    inputs: &[String],
    option: &str,
    output: &std::path::Path,
) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let Ok(out) = std::fs::metadata(output) else {
        return Ok(()); // not there yet: no input can be it
    };
    let same = |input: &&String| {
        std::fs::metadata(input.as_str())
            .is_ok_and(|m| (m.dev(), m.ino()) == (out.dev(), out.ino()))
    };
    match inputs.iter().filter(|f| *f != "-").find(same) {
        Some(input) => Err(UsageError(format!(
            "{option} {} is the input {input}: writing it would destroy the input",
            output.display()
        ))
        .into()),
        None => Ok(()),
    }
}

pub(super) fn count_inputs(args: &CountArgs) -> Result<ExitCode> {
    let opts = &args.counting;
    let mut config = opts.config()?;
    let (inputs, progress) = open_inputs(&args.files, opts, &mut config)?;
    let _server = opts.serve(&config)?;
    let (mut sinks, _) = args.sinks()?;
    let started = Instant::now();
    let report = pipeline::count(&config, inputs, &mut sinks)?;
    drop(progress);
    if !opts.quiet && !report.output_closed {
        crate::say_raw!("{}", report.telemetry.summary(started.elapsed()));
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn gen_frames(args: GenArgs) -> Result<ExitCode> {
    let cfg = GenConfig::from(&args.frames);
    let stats = match &args.output {
        None => match generator::generate(&cfg, &mut io::stdout().lock()) {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(ExitCode::SUCCESS),
            other => other.context("cannot write frames to stdout")?,
        },
        Some(path) => {
            let file = std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            let write = |w: &mut dyn Write| -> io::Result<generator::GenStats> {
                let mut w = io::BufWriter::with_capacity(1 << 20, w);
                let stats = generator::generate(&cfg, &mut w)?;
                w.flush()?;
                Ok(stats)
            };
            let is_gz = path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("gz"));
            if is_gz {
                let mut enc = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
                let stats = write(&mut enc);
                enc.finish().map(|_| ()).and(stats)
            } else {
                let mut file = file;
                write(&mut file)
            }
            .with_context(|| format!("cannot write frames to {}", path.display()))?
        }
    };
    tracing::info!(
        frames = stats.frames,
        bytes = stats.bytes,
        malformed = stats.malformed,
        bitflipped = stats.bitflipped,
        "generated"
    );
    Ok(ExitCode::SUCCESS)
}

/// `count --partials-out`: the windows' states go to a file, not their counts to stdout.
pub(super) fn count_partials(args: &CountArgs, dir: &std::path::Path) -> Result<ExitCode> {
    if args.state.state_dir.is_some() {
        return Err(UsageError(
            "--partials-out and --state-dir do not combine yet: count each share whole".into(),
        )
        .into());
    }
    let opts = &args.counting;
    let mut config = opts.config()?;
    config.settings.keep_state = true;
    let shape = partials::Shape {
        windows: config.settings.granularities.clone(),
        tz: opts.tz.zone_name().to_string(),
        counter: match opts.counter {
            CounterArg::Exact => "exact".into(),
            CounterArg::Hll => format!("hll/{}", opts.precision),
        },
    };
    let (inputs, progress) = open_inputs(&args.files, opts, &mut config)?;
    let names = inputs.iter().map(|i| i.name.clone()).collect();
    let mut hooks = partials::PartialsOut::new(dir, shape, names)?;
    let _server = opts.serve(&config)?;
    let mut sinks = Sinks {
        results: Vec::new(),
        rejects: args.sinks()?.0.rejects,
    };
    let started = Instant::now();
    let report = pipeline::count_from(
        &config,
        inputs,
        &mut sinks,
        &mut hooks,
        None,
        Some(shutdown_flag()?),
    )?;
    drop(progress);
    if !opts.quiet {
        crate::say_raw!("{}", report.telemetry.summary(started.elapsed()));
    }
    crate::say!(
        "cardinal: partial results of {} windows in {}; `cardinal merge {}` gives the results",
        hooks.windows(),
        hooks.path().display(),
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

pub(super) fn merge(args: MergeArgs) -> Result<ExitCode> {
    if args.emit_sketch && args.format != Format::Json {
        return Err(UsageError("--emit-sketch needs --format json".into()).into());
    }
    let merged = partials::merge(&args.paths, args.emit_sketch)?;
    let mut out = String::new();
    for w in &merged.windows {
        crate::emitter::render(args.format, w, &merged.calendar, &mut out);
    }
    match io::stdout().lock().write_all(out.as_bytes()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
        other => other.context("cannot write to stdout")?,
    }
    crate::say!(
        "cardinal merge: {} windows from {} partial files",
        merged.windows.len(),
        merged.files
    );
    Ok(ExitCode::SUCCESS)
}

pub(super) fn chart(args: ChartArgs) -> Result<ExitCode> {
    if let Some(out) = &args.output
        && !out
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("svg"))
    {
        return Err(UsageError(format!(
            "--output {}: only SVG is drawn; name it .svg (and convert it, e.g. rsvg-convert chart.svg > chart.png)",
            out.display()
        ))
        .into());
    }
    let input = Input::from_arg(&args.input);
    let reader = io::BufReader::new(input.open()?);
    let series = crate::chart::read(reader, &input.name())?;
    if series.is_empty() {
        crate::say!("cardinal chart: no results in {}", input.name());
    }
    let svg = crate::chart::svg(&series);
    match &args.output {
        Some(path) => {
            std::fs::write(path, svg).with_context(|| format!("cannot write {}", path.display()))?
        }
        None => match io::stdout().lock().write_all(svg.as_bytes()) {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
            other => other.context("cannot write to stdout")?,
        },
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn demo(args: DemoArgs) -> Result<ExitCode> {
    let frames = GenConfig {
        frames: args.frames,
        ..GenConfig::default()
    };
    crate::say!(
        "cardinal demo: {} production-like frames (~2 KB each, {} users, from 2016-07-11 13:39:44 UTC) \
         through Kafka, counting unique users per minute and hour",
        frames.frames,
        frames.users
    );
    let opts = CountingOptions::try_parse_demo()?;
    let config = opts.config()?;
    let mut sinks = opts.sinks()?;
    let started = Instant::now();
    let telemetry = crate::demo::run(args.broker, frames, &config, &mut sinks)?;
    crate::say_raw!("{}", telemetry.summary(started.elapsed()));
    Ok(ExitCode::SUCCESS)
}
