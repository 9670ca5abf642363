//! Checkpoints for `count` over files (`--state-dir`): every `--checkpoint-interval`
//! and when the run ends, so that a killed backfill resumes at the checkpointed byte
//! of the checkpointed file. The Kafka counterpart is `kafka::commit`.

use std::time::Instant;

use crate::checkpoint::{Checkpointing, InputPosition};
use crate::pipeline::{Hooks, PipelineError, StateView};

/// Checkpoints for `count` on files: every `interval`, and when the run ends.
pub struct FileCheckpoints {
    pub checkpointing: Checkpointing,
    pub interval: std::time::Duration,
    last: Instant,
    /// Reject sinks made durable before each checkpoint (a dead-letter topic's
    /// records acknowledged), so that no checkpoint passes a frame they lost.
    pub rejects_first: Vec<Box<dyn crate::sink::Reject>>,
    /// The `--rejects` file, whose length each checkpoint records.
    pub rejects_file: Option<crate::sink::RejectSink>,
}

impl FileCheckpoints {
    pub fn new(checkpointing: Checkpointing, interval: std::time::Duration) -> FileCheckpoints {
        FileCheckpoints {
            checkpointing,
            interval,
            last: Instant::now(),
            rejects_first: Vec::new(),
            rejects_file: None,
        }
    }

    fn save(&mut self, state: &mut dyn StateView, complete: bool) -> Result<(), PipelineError> {
        let Some((input, offset, next_line)) = state.file_position() else {
            return Ok(());
        };
        for r in &mut self.rejects_first {
            r.flush()?;
        }
        let rejects_bytes = match &self.rejects_file {
            Some(f) => Some(f.flushed_len()?),
            None => None,
        };
        let input = InputPosition::Files {
            input,
            offset,
            next_line,
            complete,
        };
        self.checkpointing
            .save(input, rejects_bytes, state.totals(), |changes| {
                state.checkpoint(changes)
            })
            .map_err(|e| PipelineError::Live(e.to_string()))
    }
}

impl Hooks for FileCheckpoints {
    fn progress(
        &mut self,
        state: &mut dyn StateView,
        _now_ms: Option<u64>,
    ) -> Result<(), PipelineError> {
        if self.last.elapsed() >= self.interval {
            self.last = Instant::now();
            self.save(state, false)?;
        }
        Ok(())
    }

    fn finished(&mut self, state: &mut dyn StateView, complete: bool) -> Result<(), PipelineError> {
        self.save(state, complete)
    }

    fn checkpoint_summary(&self) -> String {
        self.checkpointing.summary()
    }
}
