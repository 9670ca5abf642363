//! From counting flags to the library's configuration (`CountConfig`, settings,
//! checkpoint identity).

use super::*;

impl CountingOptions {
    /// What a checkpoint's state depends on: restoring it under other options would be wrong.
    pub fn identity(&self) -> String {
        let windows: Vec<&str> = self.windows.iter().map(|g| g.name()).collect();
        let counter = match self.counter {
            CounterArg::Exact => "exact".to_string(),
            CounterArg::Hll => format!("hll/{}", self.precision),
        };
        // Other field names or units only: checkpoints written before these options
        // existed, with the defaults, must still be accepted.
        let frames = if self.uid_field == "uid"
            && self.ts_field == "ts"
            && self.ts_unit == TsUnit::Seconds
        {
            String::new()
        } else {
            format!(
                " uid_field={:?} ts_field={:?} ts_unit={}",
                self.uid_field,
                self.ts_field,
                self.ts_unit.name()
            )
        };
        format!(
            "windows={} tz={} lateness={} grace={} max_ahead={} confirm={} counter={counter}{frames}",
            windows.join(","),
            self.tz.zone_name(),
            self.lateness,
            self.grace,
            self.max_ahead,
            self.confirm
        )
    }

    /// The counting configuration; a usage error if the options contradict each other.
    pub fn config(&self) -> Result<CountConfig, UsageError> {
        let frames = FrameSpec::new(&self.uid_field, &self.ts_field, self.ts_unit)
            .map_err(|e| UsageError(format!("--uid-field and --ts-field: {e}")))?;
        if self.emit_sketch && self.counter != CounterArg::Hll {
            return Err(UsageError(
                "--emit-sketch needs --counter hll: an exact window's state is its whole set of users \
                 (8 bytes each); for partial exact results use count --partials-out"
                    .into(),
            ));
        }
        if self.emit_sketch && self.format != Format::Json {
            return Err(UsageError("--emit-sketch needs --format json".into()));
        }
        Ok(CountConfig {
            calendar: self.tz.clone(),
            settings: Settings {
                granularities: self.windows.clone(),
                lateness: self.lateness,
                grace: self.grace,
                guard: GuardConfig {
                    max_ahead: self.max_ahead,
                    confirm: self.confirm as usize,
                },
                idle_timeout_ms: self.idle_timeout as u64 * 1000,
                alignment: None,
                keep_state: self.emit_sketch,
                keep_changes: false,
            },
            counter: match self.counter {
                CounterArg::Exact => CounterKind::Exact,
                CounterArg::Hll => CounterKind::Hll(HllConfig {
                    lg_k: self.precision,
                }),
            },
            threads: self.threads.map_or_else(
                || std::thread::available_parallelism().map_or(2, |n| n.get().min(64)),
                usize::from,
            ),
            chunk_bytes: CHUNK_BYTES,
            max_frame_bytes: self.max_frame_bytes,
            metrics: self.http.map(|_| Metrics::new()),
            frames,
        })
    }

    /// Starts the `--http` server for `config`'s metrics; it stops when dropped.
    pub(super) fn serve(&self, config: &CountConfig) -> Result<Option<metrics::Server>> {
        let (Some(addr), Some(m)) = (self.http, &config.metrics) else {
            return Ok(None);
        };
        let server = metrics::Server::start(addr, m.clone())
            .with_context(|| format!("--http {addr}: cannot serve metrics"))?;
        Ok(Some(server))
    }

    pub(super) fn sinks(&self) -> Result<Sinks> {
        Ok(self.sinks_resuming(None)?.0)
    }

    /// The sinks, the `--rejects` file cut back to `rejects_bytes` and appended to
    /// when a checkpoint recorded its length; and that file's sink again, for the
    /// checkpoint hooks to measure.
    pub(super) fn sinks_resuming(
        &self,
        rejects_bytes: Option<u64>,
    ) -> Result<(Sinks, Option<RejectSink>)> {
        let file = match (&self.rejects, rejects_bytes) {
            (Some(p), Some(bytes)) => Some(RejectSink::resume(p, bytes)?),
            (Some(p), None) => Some(RejectSink::create(p)?),
            (None, _) => None,
        };
        let mut rejects: Vec<Box<dyn Reject>> = Vec::new();
        if let Some(f) = &file {
            rejects.push(Box::new(f.clone()));
        }
        let sinks = Sinks {
            results: vec![Box::new(ResultSink::stdout(self.format))],
            rejects,
        };
        Ok((sinks, file))
    }
}

impl CountingOptions {
    /// The demo's options: the defaults, with hour windows too.
    pub(super) fn try_parse_demo() -> Result<CountingOptions> {
        #[derive(Parser)]
        struct Wrap {
            #[command(flatten)]
            o: CountingOptions,
        }
        Ok(Wrap::try_parse_from(["demo", "--windows", "minute,hour"])?.o)
    }
}
