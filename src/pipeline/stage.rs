//! The aggregating stage, on the calling thread: takes parsed chunks in feed order,
//! hands `(ts, key)` to the aggregator, routes rejected frames to the reject sinks,
//! renders emitted windows to the results sink, and calls the hooks (produce,
//! checkpoint, commit) between queue items.

use std::sync::Arc;
use std::sync::mpsc::{self, Receiver};

use super::feed::{Item, PausedLanes, Signal};
use super::parse::{self, ParsedChunk, Unparsed};
use super::{CountConfig, Hooks, METRICS_EVERY, PipelineError, Sinks, StateView};
use crate::aggregator::{Aggregator, Output, Snapshot, Verdict, WindowResult};
use crate::counter::Counter;
use crate::emitter;
use crate::frame::{HeldFrame, Position};
use crate::metrics::{Metrics, StageView};
use crate::parser::{self, FrameSpec, TsFrom};
use crate::reject::Reason;
use crate::sink::{Rejected, SinkError};
use crate::source::BufferPool;
use crate::telemetry::{Telemetry, Totals};
use crate::watermark::WallClock;
use crate::window::Granularity;

/// The aggregating stage as the hooks see it.
pub(super) struct View<'a, C: Counter> {
    agg: &'a mut Aggregator<C, HeldFrame>,
    file_position: Option<(usize, u64, u64)>,
    telemetry: &'a Telemetry,
}

impl<C: Counter> StateView for View<'_, C> {
    fn totals(&self) -> Totals {
        self.telemetry.totals()
    }
    fn safe_position(&self, lane: usize) -> Option<u64> {
        self.agg.safe_position(lane)
    }
    fn next_positions(&self) -> Vec<(usize, u64)> {
        self.agg.next_positions()
    }
    fn file_position(&self) -> Option<(usize, u64, u64)> {
        self.file_position
    }
    fn checkpoint(&mut self, changes: bool) -> Snapshot<HeldFrame> {
        self.agg.checkpoint(changes, HeldFrame::clone)
    }
    fn open_windows(&self) -> usize {
        self.agg.open_windows()
    }
    fn release_lane(&mut self, lane: usize) -> Vec<HeldFrame> {
        let frames = self.agg.release_lane(lane);
        frames.into_iter().map(|(_, f)| f).collect()
    }
    fn idle_lanes(&self) -> Vec<usize> {
        self.agg.idle_lanes()
    }
    fn watermark(&self) -> Option<i64> {
        self.agg.watermark()
    }
    fn quiet_ms(&self, lane: usize) -> u64 {
        self.agg.quiet_ms(lane)
    }
    fn resume_quiet(&mut self, lanes: &[(usize, u64)]) {
        for (lane, quiet) in lanes {
            self.agg.resume_quiet(*lane, *quiet);
        }
    }
    fn set_remote(&mut self, remote: &[(usize, Option<Option<i64>>)]) {
        self.agg.set_remote(remote);
    }
    fn final_through(&self) -> Vec<(Granularity, i64)> {
        self.agg.final_through()
    }
    fn resume_after(&mut self, final_through: &[(Granularity, i64)]) {
        self.agg.resume_after(final_through);
    }
}

/// The aggregating end of the pipeline, on the calling thread.
pub(super) struct Aggregate<'s, C: Counter> {
    agg: Aggregator<C, HeldFrame>,
    file_position: Option<(usize, u64, u64)>,
    /// Line number of the next line of the current input.
    next_line: u64,
    out: Output<HeldFrame>,
    emitted: Vec<WindowResult>,
    /// The enabled windows, for messages.
    windows_named: String,
    max_frame_bytes: usize,
    /// The frames' field names and ts unit, for messages.
    spec: &'s FrameSpec,
    pub(super) telemetry: Telemetry,
    /// The wall clock of a live run (unix seconds), for emission delays.
    clock_now: Option<i64>,
    metrics: Option<Arc<Metrics>>,
    metrics_shared: Option<std::time::Instant>,
    sinks: &'s mut Sinks,
    pool: BufferPool,
    paused: PausedLanes,
    hooks: &'s mut dyn Hooks,
}

impl<'s, C: Counter> Aggregate<'s, C> {
    /// The restored state was taken at `at` in the files: the position of the
    /// state until a chunk moves it on.
    pub(super) fn resumed_at(&mut self, at: super::FileResume) {
        self.file_position = Some((at.input, at.offset, at.next_line));
    }

    pub(super) fn new(
        config: &'s CountConfig,
        agg: Aggregator<C, HeldFrame>,
        sinks: &'s mut Sinks,
        hooks: &'s mut dyn Hooks,
        pool: BufferPool,
        paused: PausedLanes,
    ) -> Aggregate<'s, C> {
        Aggregate {
            agg,
            file_position: None,
            next_line: 1,
            out: Output::default(),
            emitted: Vec::new(),
            max_frame_bytes: config.max_frame_bytes,
            spec: &config.frames,
            windows_named: config
                .settings
                .granularities
                .iter()
                .map(|g| g.name())
                .collect::<Vec<_>>()
                .join(","),
            telemetry: Telemetry::default(),
            clock_now: None,
            metrics: config.metrics.clone(),
            metrics_shared: None,
            sinks,
            pool,
            paused,
            hooks,
        }
    }

    pub(super) fn consume(
        &mut self,
        order_rx: Receiver<Item<C::Key>>,
    ) -> Result<(), PipelineError> {
        let mut now_ms = None;
        loop {
            let item = if self.metrics.is_some() {
                // A quiet input must not leave the metrics behind what was counted.
                match order_rx.recv_timeout(METRICS_EVERY) {
                    Ok(item) => item,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        self.share_metrics(false);
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match order_rx.recv() {
                    Ok(item) => item,
                    Err(_) => break,
                }
            };
            match item {
                Item::Chunk(rx) => {
                    let parsed = rx.recv().unwrap_or_else(|_| {
                        Err(PipelineError::Live(
                            "a parser thread stopped without an answer".into(),
                        ))
                    })?;
                    self.chunk(&parsed)?;
                    self.share_paused();
                    self.telemetry.open_windows(self.agg.open_windows());
                    let c = &parsed.chunk;
                    if c.record_count() == 0 {
                        self.next_line += parsed.entries.len() as u64;
                        self.file_position =
                            Some((c.input, c.offset + c.input_bytes(), self.next_line));
                    }
                    parsed.chunk.recycle(&self.pool);
                }
                Item::Signal(Signal::Tick(now, clock)) => {
                    now_ms = Some(now);
                    self.set_clock(clock);
                    self.agg.heartbeat(now, &mut self.out);
                    self.share_paused();
                    self.drain_output()?;
                }
                Item::Signal(Signal::Assigned(lanes)) => {
                    for lane in &lanes {
                        self.agg.add_lane(*lane as usize);
                    }
                    let mut view = View {
                        agg: &mut self.agg,
                        file_position: self.file_position,
                        telemetry: &self.telemetry,
                    };
                    self.hooks.assigned(&mut view, &lanes)?;
                }
                Item::Signal(Signal::LanesDone(lanes)) => {
                    for lane in &lanes {
                        self.agg.remove_lane(*lane as usize, &mut self.out);
                    }
                    self.drain_output()?;
                    self.hooks.lanes_done(&lanes);
                }
                Item::Signal(Signal::Revoked(lanes)) => {
                    for lane in &lanes {
                        self.agg
                            .settle_before_release(*lane as usize, &mut self.out);
                    }
                    self.drain_output()?;
                    self.publish()?;
                    let mut view = View {
                        agg: &mut self.agg,
                        file_position: self.file_position,
                        telemetry: &self.telemetry,
                    };
                    self.hooks.revoked(&mut view, &lanes)?;
                }
                Item::Signal(Signal::End { complete }) => {
                    if complete {
                        self.agg.flush(&mut self.out);
                        self.drain_output()?;
                    }
                    self.publish()?;
                    for r in &mut self.sinks.rejects {
                        r.flush()?;
                    }
                    self.share_metrics(true);
                    let mut view = View {
                        agg: &mut self.agg,
                        file_position: self.file_position,
                        telemetry: &self.telemetry,
                    };
                    return self.hooks.finished(&mut view, complete);
                }
                Item::Signal(Signal::Failed(e)) => return Err(e),
            }
            self.publish()?;
            self.share_metrics(false);
            let mut view = View {
                agg: &mut self.agg,
                file_position: self.file_position,
                telemetry: &self.telemetry,
            };
            self.hooks.progress(&mut view, now_ms)?;
        }
        // The feeder went away without saying why: treat as stopped, not complete.
        Err(PipelineError::Live(
            "the input feeder stopped unexpectedly".into(),
        ))
    }

    /// Copies the counters and gauges for the metrics endpoint, about once a second.
    fn share_metrics(&mut self, now: bool) {
        let Some(m) = &self.metrics else {
            return;
        };
        if !now
            && self
                .metrics_shared
                .is_some_and(|t| t.elapsed() < METRICS_EVERY)
        {
            return;
        }
        self.metrics_shared = Some(std::time::Instant::now());
        m.publish_stage(StageView {
            telemetry: self.telemetry.clone(),
            watermark: self.agg.watermark(),
            lane_watermarks: self.agg.lane_watermarks(),
            open_windows: self.agg.open_windows(),
            open_users: self.agg.open_users(),
        });
    }

    fn set_clock(&mut self, clock: Option<WallClock>) {
        self.agg.set_clock(clock);
        self.clock_now = clock.filter(|c| c.trust_recent).map(|c| c.now);
    }

    /// Tells the feeder which lanes alignment wants paused: after every chunk, so a
    /// lane that ran ahead stops being read at once, not at the next tick.
    fn share_paused(&self) {
        if self.agg.alignment().is_some() {
            let lanes = self.agg.paused_lanes().into_iter().map(|l| l as u32);
            self.paused.set(lanes.collect());
        }
    }

    fn chunk(&mut self, parsed: &ParsedChunk<C::Key>) -> Result<(), PipelineError> {
        let chunk = &parsed.chunk;
        self.telemetry.bytes_received(chunk.input_bytes() as usize);
        self.set_clock(chunk.clock);
        let is_records = chunk.record_count() > 0;
        // Lines carry their index in the chunk; the line number is counted here.
        let line_base = match chunk.first_line {
            Some(first) if !is_records => {
                self.next_line = first;
                first
            }
            _ if is_records => 0,
            _ => self.next_line,
        };
        if let Some(first) = parsed.entries.first()
            && chunk.offset == 0
            && !is_records
            && first.parsed.is_err()
            && let Some((iconv, evidence)) =
                parse::utf16_sign(&chunk.data()[first.start as usize..first.end as usize])
        {
            self.telemetry.input_utf16(&chunk.source, iconv, evidence);
        }
        for (index, e) in parsed.entries.iter().enumerate() {
            self.telemetry.frame_received();
            if is_records {
                self.telemetry.frame_read_from(e.lane);
            }
            let pos = e.pos + line_base;
            let raw = || &chunk.data()[e.start as usize..e.end as usize];
            let record_key = || chunk.key(index);
            let position = || {
                if is_records {
                    Position::Offset {
                        topic: chunk.source.clone(),
                        partition: e.lane,
                        offset: pos,
                    }
                } else {
                    Position::Line {
                        source: chunk.source.clone(),
                        line: pos,
                    }
                }
            };
            match &e.parsed {
                &Ok((ts, key)) => {
                    let verdict = self.agg.ingest(
                        e.lane as usize,
                        pos,
                        ts,
                        key,
                        || HeldFrame {
                            position: position(),
                            key: record_key().map(Into::into),
                            raw: raw().into(),
                        },
                        &mut self.out,
                    );
                    match verdict {
                        Verdict::Counted => self.telemetry.frame_counted(),
                        Verdict::Held => {}
                        Verdict::OutOfRange => {
                            let (lo, hi) = self.agg.ts_range();
                            let unit = self.spec.unit();
                            let field = self.spec.ts_field();
                            let detail = if self.spec.ts_from() == TsFrom::RecordTimestamp {
                                format!(
                                    "the record's timestamp, {ts} s (floored from milliseconds, \
                                     --ts-from record-timestamp), is outside {lo}..={hi} s, the range \
                                     whose windows ({}) can be represented in {}",
                                    self.windows_named,
                                    self.agg.calendar().zone_name()
                                )
                            } else if unit == parser::TsUnit::Seconds {
                                format!(
                                    "{field} {ts} is outside {lo}..={hi}, the range whose windows \
                                     ({}) can be represented in {}",
                                    self.windows_named,
                                    self.agg.calendar().zone_name()
                                )
                            } else {
                                format!(
                                    "{field} {ts} s (read in {}, --ts-unit {}) is outside {lo}..={hi} s, \
                                     the range whose windows ({}) can be represented in {}",
                                    unit.words(),
                                    unit.name(),
                                    self.windows_named,
                                    self.agg.calendar().zone_name()
                                )
                            };
                            self.reject(Reason::BadTs, detail, &position(), record_key(), raw())?;
                        }
                        late => self.late(late, &position(), record_key(), raw())?,
                    }
                    if !self.out.is_empty() {
                        self.drain_output()?;
                    }
                }
                Err(Unparsed::Parse(err)) => self.reject(
                    err.into(),
                    err.describe(self.spec),
                    &position(),
                    record_key(),
                    raw(),
                )?,
                Err(Unparsed::Record(err)) => {
                    self.reject(err.into(), err.describe(), &position(), record_key(), raw())?
                }
                Err(Unparsed::TooLarge(len)) => {
                    // A whole line may be here (it arrived within one read): keep its head only.
                    let raw = || &raw()[..raw().len().min(crate::source::OVERSIZED_HEAD)];
                    let detail = format!(
                        "a frame of {len} bytes, over --max-frame-bytes ({}); its first {} bytes are kept",
                        self.max_frame_bytes,
                        raw().len()
                    );
                    self.reject(Reason::TooLarge, detail, &position(), record_key(), raw())?
                }
                Err(Unparsed::Tombstone) => self.reject(
                    Reason::Tombstone,
                    "tombstone (null value)".into(),
                    &position(),
                    record_key(),
                    raw(),
                )?,
                Err(Unparsed::Failed(what)) => {
                    let position = position();
                    self.telemetry.frame_failed(what, &position);
                    self.sinks.reject(Rejected {
                        reason: Reason::InternalError.name(),
                        detail: what,
                        position: &position,
                        key: record_key(),
                        raw: raw(),
                    })?;
                }
            }
        }
        Ok(())
    }

    fn reject(
        &mut self,
        reason: Reason,
        detail: String,
        position: &Position,
        key: Option<&[u8]>,
        raw: &[u8],
    ) -> Result<(), SinkError> {
        self.telemetry.frame_rejected(reason, position);
        self.sinks.reject(Rejected {
            reason: reason.name(),
            detail: &detail,
            position,
            key,
            raw,
        })
    }

    fn late(
        &mut self,
        verdict: Verdict,
        position: &Position,
        key: Option<&[u8]>,
        raw: &[u8],
    ) -> Result<(), SinkError> {
        let Verdict::Late { missed, counted } = verdict else {
            return Ok(());
        };
        self.telemetry.frame_late(missed, counted, position);
        if !self.sinks.rejects.is_empty() {
            let names: Vec<&str> = missed.iter().map(|g| g.name()).collect();
            let detail = format!("window already final: {}", names.join(","));
            self.sinks.reject(Rejected {
                reason: Reason::Late.name(),
                detail: &detail,
                position,
                key,
                raw,
            })?;
        }
        Ok(())
    }

    fn drain_output(&mut self) -> Result<(), SinkError> {
        for (lane, behind) in self.out.skewed.drain(..) {
            self.telemetry.lane_skewed(lane, behind);
        }
        self.telemetry.open_windows(self.agg.open_windows());
        for w in self.out.windows.drain(..) {
            self.telemetry.window_emitted(&w, self.clock_now);
            self.emitted.push(w);
        }
        for _ in 0..self.out.released_counted {
            self.telemetry.frame_counted();
        }
        let late = std::mem::take(&mut self.out.late);
        for (held, verdict) in late {
            self.late(verdict, &held.position, held.key.as_deref(), &held.raw)?;
        }
        for held in std::mem::take(&mut self.out.outliers) {
            self.telemetry.frame_outlier(&held.position);
            if !self.sinks.rejects.is_empty() {
                let detail = match self.agg.max_trusted() {
                    Some(max) => format!(
                        "ts far ahead of the stream, whose latest trusted ts was {max} ({}), \
                         and contradicted by the frames that followed",
                        self.agg.calendar().format(max)
                    ),
                    None => "ts far from every other frame of the stream".to_string(),
                };
                self.sinks.reject(Rejected {
                    reason: Reason::Outlier.name(),
                    detail: &detail,
                    position: &held.position,
                    key: held.key.as_deref(),
                    raw: &held.raw,
                })?;
            }
        }
        self.out.clear();
        Ok(())
    }

    /// Writes what was emitted since the last call to stdout and the hooks.
    fn publish(&mut self) -> Result<(), PipelineError> {
        if !self.emitted.is_empty() {
            for sink in &mut self.sinks.results {
                sink.write(&self.emitted, self.agg.calendar())?;
            }
            if let Some(m) = &self.metrics {
                let cal = self.agg.calendar();
                m.windows_emitted(self.emitted.iter().map(|w| emitter::Record::new(w, cal)));
            }
            self.hooks.results(&self.emitted, self.agg.calendar())?;
            self.emitted.clear();
        }
        Ok(())
    }
}
