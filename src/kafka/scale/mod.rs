//! Scale-out (`run --scale-out`): many processes in one consumer group share a
//! topic, and the results are the ones a single process would publish.
//!
//! Kafka does the distributed work. The consumer group spreads the partitions;
//! each instance counts its own and, at every checkpoint, writes what its windows
//! gained and where each of its partitions stands to the compacted topic
//! `GROUP.partials` ([`records`], [`publish`]). A partition that moves resumes on
//! its new owner from its last owner's lane record ([`handover`]): no frame is
//! replayed or lost. One instance, chosen by the consumer group `GROUP.merge`,
//! merges ([`merger`]): a distinct count is a union, so a window's result is the
//! union of every instance's users and the sum of their frames, published once
//! every partition is past it.

use super::*;

pub mod handover;
pub mod merger;
pub mod publish;
pub mod records;

/// The names scale-out derives from the group, and who this process is.
#[derive(Debug, Clone)]
pub struct ScaleOut {
    /// Unique per process (host, pid, start time): a restart is a new instance.
    pub instance: String,
    pub partials_topic: String,
    pub merge_group: String,
}

impl ScaleOut {
    pub fn for_group(group: &str) -> ScaleOut {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().replace('/', "_"))
            .unwrap_or_else(|_| "host".into());
        ScaleOut {
            instance: format!(
                "{host}-{}-{}",
                std::process::id(),
                crate::checkpoint::unix_ms()
            ),
            partials_topic: format!("{group}.partials"),
            merge_group: format!("{group}.merge"),
        }
    }

    /// Creates the partials topic if it is missing: one partition (its order is
    /// what makes a lane record cover the window records before it), compacted.
    pub fn ensure_topic(&self, opts: &KafkaOptions) -> Result<(), PipelineError> {
        create_topic(opts, &self.partials_topic, 1, true)?;
        let probe: BaseConsumer<ErrorContext> = opts
            .config(&[])
            .create_with_context(ErrorContext)
            .map_err(|e| opts.settings_error("client", &[], e))?;
        let parts = partitions_of(&probe, opts, &self.partials_topic)?;
        if parts.len() != 1 {
            return Err(live(format!(
                "{} has {} partitions; scale-out needs it to have exactly one (its order is \
                 what makes a checkpoint whole): delete it, or give the run another --group",
                self.partials_topic,
                parts.len()
            )));
        }
        Ok(())
    }
}
