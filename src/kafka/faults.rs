//! Broker faults the feeder watches for: batches it cannot decode, and stalls.

use super::*;

/// A batch the client could not decode, as its error text describes it: librdkafka
/// names the codec and the offset, but the partition only travels with the error
/// event, which rdkafka does not pass on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct BadBatch {
    /// The attribute's codec number, when the error says it.
    pub(super) codec: Option<u8>,
    pub(super) offset: i64,
    pub(super) text: String,
}

impl BadBatch {
    /// A decompression failure or an unsupported codec (`Decompression (codec 0x4)
    /// of message at 25 of 41 bytes failed: …`), or a batch that fails its CRC:
    /// errors that refetching the same bytes cannot cure.
    pub(super) fn parse(code: RDKafkaErrorCode, text: &str) -> Option<BadBatch> {
        use RDKafkaErrorCode as C;
        if !matches!(code, C::BadCompression | C::NotImplemented | C::BadMessage) {
            return None;
        }
        let number_after = |marker: &str| -> Option<&str> {
            let rest = &text[text.find(marker)? + marker.len()..];
            let end = rest
                .find(|c: char| !c.is_ascii_alphanumeric())
                .unwrap_or(rest.len());
            Some(&rest[..end])
        };
        let codec = number_after("(codec 0x").and_then(|h| u8::from_str_radix(h, 16).ok());
        let offset = number_after("message at ")
            .or_else(|| number_after("offset "))
            .and_then(|n| n.parse().ok())?;
        Some(BadBatch {
            codec,
            offset,
            text: text.to_string(),
        })
    }

    pub(super) fn codec_name(&self) -> String {
        match self.codec {
            Some(0) => "no compression".into(),
            Some(1) => "gzip".into(),
            Some(2) => "snappy".into(),
            Some(3) => "lz4".into(),
            Some(4) => "zstd".into(),
            Some(n) => format!("unknown codec {n}"),
            None => "codec not named by the client".into(),
        }
    }
}

/// Undecodable batches seen, by offset, until it is clear which partition holds
/// each: librdkafka fetches a bad batch again and again (and fails each time),
/// while healthy partitions move on.
#[derive(Default)]
pub(super) struct BadBatches {
    pub(super) seen: HashMap<i64, Sighting>,
}

pub(super) struct Sighting {
    pub(super) first: Instant,
    pub(super) times: u32,
    /// Partitions that may hold the batch, with their positions when first seen.
    pub(super) candidates: Vec<(i32, Option<i64>)>,
}

impl BadBatches {
    /// Enough sightings to name the partition: 2 over at least 1 s (so that a
    /// partition that merely passed through the same offset has moved on), or 5 s.
    pub(super) const CONFIRM: Duration = Duration::from_secs(1);
    const GIVE_UP: Duration = Duration::from_secs(5);

    /// Another failure for `bad`, on one of `assigned` (not yet read to the end).
    /// Returns the error that ends the run once the partition is known.
    pub(super) fn sighted(
        &mut self,
        bad: BadBatch,
        assigned: impl Iterator<Item = i32>,
        positions: &HashMap<i32, i64>,
        topic: &str,
    ) -> Option<String> {
        let now: Vec<(i32, Option<i64>)> =
            assigned.map(|p| (p, positions.get(&p).copied())).collect();
        let s = self.seen.entry(bad.offset).or_insert_with(|| {
            // The partition stuck at the batch has read up to it, or nothing yet; one
            // that started inside it (a committed offset mid-batch) is past it.
            let at: Vec<_> = now
                .iter()
                .filter(|(_, pos)| pos.is_none_or(|p| p == bad.offset))
                .copied()
                .collect();
            let candidates = if at.is_empty() {
                now.iter()
                    .filter(|(_, pos)| pos.is_some_and(|p| p > bad.offset))
                    .copied()
                    .collect()
            } else {
                at
            };
            Sighting {
                first: Instant::now(),
                times: 0,
                candidates,
            }
        });
        s.times += 1;
        // A partition that moved is not stuck.
        s.candidates
            .retain(|(p, pos)| now.iter().any(|(q, now_pos)| q == p && now_pos == pos));
        let waited = s.first.elapsed();
        let known = s.candidates.len() == 1 && s.times >= 2 && waited >= Self::CONFIRM;
        if !known && waited < Self::GIVE_UP {
            return None;
        }
        let parts: Vec<String> = s.candidates.iter().map(|(p, _)| p.to_string()).collect();
        let which = match parts.len() {
            0 => "an unknown partition".to_string(),
            1 => format!("partition {}", parts[0]),
            _ => format!("one of partitions {}", parts.join(", ")),
        };
        Some(format!(
            "cannot decode the batch at offset {} of {topic} ({which}, compressed with {}); \
             the client said: {}. Fetching it again cannot help: the producer used a codec this \
             build cannot read, or the batch is corrupt. Skipping it would lose its frames \
             silently; to skip it on purpose, commit an offset past it for the group",
            bad.offset,
            bad.codec_name(),
            bad.text
        ))
    }
}

/// A partition a backfill has not read to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Behind {
    pub(super) partition: i32,
    /// The next offset to read: after the last one read, or where a checkpoint
    /// resumed it; `None` before either (the group's committed offset, or the start).
    pub(super) at: Option<i64>,
    /// The end offset the backfill reads to.
    pub(super) end: i64,
}

/// Where a stalled backfill is stuck, for its error: a broker is looked at per
/// partition (its leader), and an offset says which data it cannot serve.
fn stuck_at(mut behind: Vec<Behind>) -> String {
    const SHOWN: usize = 8;
    if behind.is_empty() {
        return String::new();
    }
    behind.sort_by_key(|b| b.partition);
    let mut named: Vec<String> = (behind.iter().take(SHOWN))
        .map(|b| match b.at {
            Some(at) => format!("partition {} at offset {at} (end {})", b.partition, b.end),
            None => format!(
                "partition {} before its first record (end {})",
                b.partition, b.end
            ),
        })
        .collect();
    if behind.len() > SHOWN {
        named.push(format!("and {} more", behind.len() - SHOWN));
    }
    format!("; stuck: {}", named.join(", "))
}

/// Watches a consumer for outages: a bounded run that reads nothing for the stall
/// timeout fails, naming the cause; a live one logs once per interval and goes on.
pub(super) struct Stall {
    pub(super) brokers: String,
    pub(super) timeout: Duration,
    pub(super) last_progress: Instant,
    pub(super) errors: u64,
    pub(super) last_error: Option<String>,
    pub(super) last_report: Option<Instant>,
}

impl Stall {
    const REPORT_EVERY: Duration = Duration::from_secs(30);

    pub(super) fn new(brokers: String, timeout: Duration) -> Stall {
        Stall {
            brokers,
            timeout,
            last_progress: Instant::now(),
            errors: 0,
            last_error: None,
            last_report: None,
        }
    }

    pub(super) fn progress(&mut self) {
        if self.errors > 0 {
            tracing::info!(
                event = "consumer_recovered",
                errors = self.errors,
                after_s = self.last_progress.elapsed().as_secs()
            );
            self.errors = 0;
            self.last_report = None;
        }
        self.last_progress = Instant::now();
    }

    pub(super) fn error(&mut self, e: &KafkaError) {
        self.errors += 1;
        self.last_error = Some(e.to_string());
        if self
            .last_report
            .is_none_or(|t| t.elapsed() >= Self::REPORT_EVERY)
        {
            self.last_report = Some(Instant::now());
            tracing::warn!(
                event = "consumer_error",
                error = %e,
                errors_so_far = self.errors,
                "librdkafka retries by itself; reported once per {:?}",
                Self::REPORT_EVERY
            );
        }
    }

    /// For a bounded run that has read nothing for too long: why it cannot go on.
    /// `behind` gives the partitions not read to their end (asked only then).
    pub(super) fn check(
        &mut self,
        bounded: bool,
        holding: bool,
        behind: impl FnOnce() -> Vec<Behind>,
    ) -> Option<String> {
        let quiet = self.last_progress.elapsed();
        if !bounded || quiet < self.timeout {
            return None;
        }
        Some(if !holding {
            format!(
                "the backfill got no partition from the consumer group for {} s (--stall-timeout); \
                 another member may hold them, or the group coordinator at {} is stuck",
                quiet.as_secs(),
                self.brokers
            )
        } else {
            format!(
                "the backfill read nothing from {} for {} s (--stall-timeout){}{}",
                self.brokers,
                quiet.as_secs(),
                stuck_at(behind()),
                self.last_error
                    .as_ref()
                    .map(|e| format!("; last error: {e}"))
                    .unwrap_or_default()
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{Behind, stuck_at};

    /// The partitions in order, whatever order they come in; one never read says
    /// so rather than an offset it does not know; a topic of many partitions is
    /// not listed whole.
    #[test]
    fn a_stall_names_partitions_and_offsets() {
        let b = |partition, at, end| Behind { partition, at, end };
        assert_eq!(stuck_at(vec![]), "");
        assert_eq!(
            stuck_at(vec![b(3, None, 90), b(1, Some(17), 40)]),
            "; stuck: partition 1 at offset 17 (end 40), partition 3 before its first record (end 90)"
        );
        let many: Vec<Behind> = (0..11).rev().map(|p| b(p, Some(5), 9)).collect();
        let text = stuck_at(many);
        assert!(
            text.starts_with("; stuck: partition 0 at offset 5 (end 9), "),
            "{text}"
        );
        assert!(
            text.ends_with("partition 7 at offset 5 (end 9), and 3 more"),
            "{text}"
        );
    }
}
