//! `cardinal produce` and `cardinal consume`, and creating topics.

use super::*;

/// `cardinal produce`: what was sent.
#[derive(Debug, Default)]
pub struct ProduceReport {
    pub messages: u64,
    pub bytes: u64,
    pub skipped_blank: u64,
    /// With a timestamp field: lines without a usable one, sent with the
    /// producer's clock as their timestamp.
    pub without_timestamp: u64,
    /// With a key field: lines that are not a frame with a string there, sent
    /// without a key.
    pub without_key: u64,
}

/// What `cardinal produce` takes from each line besides its bytes.
#[derive(Debug, Clone, Default)]
pub struct RecordFrom<'a> {
    /// `--key-field`: the record's key.
    pub key_field: Option<&'a str>,
    /// `--timestamp-field` and `--timestamp-unit`: the record's timestamp.
    pub timestamp_field: Option<(&'a str, TsUnit)>,
}

/// Loads JSON lines into `topic`, keyed by a root-level field and timestamped
/// by another when asked.
pub fn produce(
    opts: &KafkaOptions,
    topic: &str,
    from: &RecordFrom<'_>,
    inputs: Vec<pipeline::OpenInput>,
) -> Result<ProduceReport, PipelineError> {
    tracing::debug!(
        event = "client_config",
        client = "producer",
        settings = %opts.describe(PRODUCER_DEFAULTS)
    );
    let producer: ThreadedProducer<DeliveryTracker> = opts
        .config(PRODUCER_DEFAULTS)
        .create_with_context(DeliveryTracker::default())
        .map_err(|e| opts.settings_error("producer", PRODUCER_DEFAULTS, e))?;
    let probe: BaseConsumer<ErrorContext> = opts
        .config(&[])
        .create_with_context(ErrorContext)
        .map_err(|e| opts.settings_error("client", &[], e))?;
    partitions_of(&probe, opts, topic)?;
    let mut report = ProduceReport::default();
    let key_spec = from.key_field.map(|f| {
        FrameSpec::new(f, ts_placeholder(f), TsUnit::Seconds)
            .map(|s| s.taking(UidFrom::Json, TsFrom::RecordTimestamp))
    });
    let key_spec = key_spec
        .transpose()
        .map_err(|e| live(format!("--key-field: {e}")))?;
    let ts_spec = from.timestamp_field.map(|(f, unit)| {
        FrameSpec::new(uid_placeholder(f), f, unit).map(|s| s.taking(UidFrom::Key, TsFrom::Json))
    });
    let ts_spec = ts_spec
        .transpose()
        .map_err(|e| live(format!("--timestamp-field: {e}")))?;
    for input in inputs {
        let mut next_line = 1;
        for chunk in crate::source::Chunker::new(input.reader, &input.name, CHUNK_BYTES) {
            let chunk = chunk?;
            next_line = chunk.first_line.unwrap_or(next_line);
            for (_, index, line) in chunk.frames() {
                let line_no = next_line + index;
                if let Some(len) = chunk.oversized(index) {
                    return Err(live(format!(
                        "{}:{line_no}: a line of {len} bytes is over the {} byte frame limit",
                        input.name,
                        crate::source::MAX_FRAME_BYTES
                    )));
                }
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.iter().all(u8::is_ascii_whitespace) {
                    report.skipped_blank += 1;
                    continue;
                }
                let key = key_spec.as_ref().and_then(|s| root_key_with(line, s));
                if key_spec.is_some() && key.is_none() {
                    report.without_key += 1;
                }
                let mut record = BaseRecord::to(topic).payload(line);
                if let Some(k) = &key {
                    record = record.key(k.as_slice());
                }
                if let Some(spec) = &ts_spec {
                    match root_timestamp_ms_with(line, spec) {
                        Some(ms) => record = record.timestamp(ms),
                        None => report.without_timestamp += 1,
                    }
                }
                send_with_backpressure(&producer, record)
                    .map_err(|e| live(format!("{}:{line_no}: {e}", input.name)))?;
                report.messages += 1;
                report.bytes += line.len() as u64;
            }
            next_line += chunk.frames().count() as u64;
        }
    }
    // Up to a gigabyte may still be queued: wait as long as the broker keeps
    // acknowledging, and give up only when it has stopped for the whole timeout.
    let wait = opts.timeout.max(Duration::from_secs(30));
    loop {
        let before = producer.in_flight_count();
        match producer.flush(wait) {
            Ok(()) => break,
            Err(_) if producer.in_flight_count() < before => continue,
            Err(e) => {
                return Err(live(format!(
                    "messages to {topic} not acknowledged: none in {wait:?}, {} still waiting: {e}",
                    producer.in_flight_count()
                )));
            }
        }
    }
    producer.context().check().map_err(live)?;
    Ok(report)
}

/// The key for `--key-field`: the root field as `count --uid-field FIELD` would
/// count it (a string, unescaped, in a frame valid whole), so that `run --uid-from
/// key` counts the same users as the JSON would. `None` for a line that is not such
/// a frame.
pub fn root_key(line: &[u8], field: &str) -> Option<Vec<u8>> {
    let spec = FrameSpec::new(field, ts_placeholder(field), TsUnit::Seconds)
        .ok()?
        .taking(UidFrom::Json, TsFrom::RecordTimestamp);
    root_key_with(line, &spec)
}

/// [`root_key`] with its spec built once.
pub fn root_key_with(line: &[u8], spec: &FrameSpec) -> Option<Vec<u8>> {
    crate::parser::parse_frame_with(line, spec)
        .ok()
        .map(|f| f.uid.into_owned())
}

/// The record timestamp for `--timestamp-field`: the root field as `count --ts-field
/// FIELD --ts-unit UNIT` would read it, in milliseconds. That is whole seconds, as
/// Cardinal counts them (`run --ts-from record-timestamp` floors to seconds too).
/// `None` for a line that is not such a frame.
pub fn root_timestamp_ms(line: &[u8], field: &str, unit: TsUnit) -> Option<i64> {
    let spec = FrameSpec::new(uid_placeholder(field), field, unit)
        .ok()?
        .taking(UidFrom::Key, TsFrom::Json);
    root_timestamp_ms_with(line, &spec)
}

/// [`root_timestamp_ms`] with its spec built once.
pub fn root_timestamp_ms_with(line: &[u8], spec: &FrameSpec) -> Option<i64> {
    crate::parser::parse_frame_with(line, spec)
        .ok()
        .map(|f| f.ts.saturating_mul(1000))
}

/// The spec's other field is not looked for (it comes "from the record"), but it
/// needs a name other than the field's.
fn ts_placeholder(field: &str) -> &'static str {
    if field == "ts" { "ts_" } else { "ts" }
}

fn uid_placeholder(field: &str) -> &'static str {
    if field == "uid" { "uid_" } else { "uid" }
}

/// Creates a topic (for the demo and tests). Existing topics are left alone.
pub fn create_topic(
    opts: &KafkaOptions,
    topic: &str,
    partitions: i32,
    compacted: bool,
) -> Result<(), PipelineError> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = opts
        .config(&[])
        .create()
        .map_err(|e| opts.settings_error("admin client", &[], e))?;
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    if compacted {
        new = new.set("cleanup.policy", "compact");
    }
    let rt = futures_executor::block_on(admin.create_topics(
        [&new],
        &AdminOptions::new().operation_timeout(Some(opts.timeout)),
    ))
    .map_err(|e| {
        live(format!(
            "cannot create topic {topic} on {}: {e}",
            opts.brokers
        ))
    })?;
    for r in rt {
        match r {
            Ok(_) => {}
            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => return Err(live(format!("cannot create topic {t}: {e}"))),
        }
    }
    Ok(())
}

/// One message read by `cardinal consume`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumed {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    /// The record's headers in order, as (name, value; `None` for a null value).
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub payload: Vec<u8>,
}

/// Reads every partition of `topic` from the beginning up to its end offsets as of
/// the call, without a consumer group (like `kcat -C -e`). For reading results back.
pub fn consume_to_end(
    opts: &KafkaOptions,
    topic: &str,
    each: impl FnMut(Consumed) -> bool,
) -> Result<u64, PipelineError> {
    consume_up_to_end(opts, topic, |_| Offset::Beginning, each)
}

/// Reads the last record of every partition of `topic` (as of the call).
pub fn consume_latest(
    opts: &KafkaOptions,
    topic: &str,
    each: impl FnMut(Consumed) -> bool,
) -> Result<u64, PipelineError> {
    consume_up_to_end(opts, topic, |high| Offset::Offset(high - 1), each)
}

/// Reads every non-empty partition of `topic` from `from(its end offset)` to that end.
fn consume_up_to_end(
    opts: &KafkaOptions,
    topic: &str,
    from: impl Fn(i64) -> Offset,
    mut each: impl FnMut(Consumed) -> bool,
) -> Result<u64, PipelineError> {
    // The end is where the broker says a partition ends for this reader, not an
    // offset a message must reach: a transactional topic ends with commit markers,
    // which are no messages, and `read_committed` stops at the last stable offset.
    const DEFAULTS: &[(&str, &str)] = &[
        ("enable.auto.commit", "false"),
        ("enable.partition.eof", "true"),
        ("fetch.wait.max.ms", "5"),
        ("group.id", "cardinal-consume"),
    ];
    let consumer: BaseConsumer<ErrorContext> = opts
        .config(DEFAULTS)
        .create_with_context(ErrorContext)
        .map_err(|e| opts.settings_error("consumer", DEFAULTS, e))?;
    let partitions = partitions_of(&consumer, opts, topic)?;
    let mut tpl = TopicPartitionList::new();
    let mut remaining = HashMap::new();
    for p in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, opts.timeout)
            .map_err(|e| live(format!("cannot read the end offsets of {topic}[{p}]: {e}")))?;
        if high > low {
            tpl.add_partition_offset(topic, p, from(high))
                .map_err(|e| live(format!("cannot assign {topic}[{p}]: {e}")))?;
            remaining.insert(p, high);
        }
    }
    consumer
        .assign(&tpl)
        .map_err(|e| live(format!("cannot assign {topic}: {e}")))?;
    let mut read = 0;
    let mut last_message = Instant::now();
    while !remaining.is_empty() {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                last_message = Instant::now();
                read += 1;
                let done = remaining
                    .get(&m.partition())
                    .is_some_and(|high| m.offset() + 1 >= *high);
                if done {
                    remaining.remove(&m.partition());
                }
                let keep_going = each(Consumed {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    headers: m
                        .headers()
                        .map(|h| {
                            h.iter()
                                .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                                .collect()
                        })
                        .unwrap_or_default(),
                    payload: m.payload().unwrap_or_default().to_vec(),
                });
                if !keep_going {
                    break;
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                // Past the end the run began with? The end may have grown since.
                let reached = consumer
                    .position()
                    .ok()
                    .and_then(|tpl| tpl.find_partition(topic, p).map(|e| e.offset()));
                let high = remaining.get(&p).copied();
                if let (Some(Offset::Offset(at)), Some(high)) = (reached, high)
                    && at >= high
                {
                    remaining.remove(&p);
                }
                // A read_committed reader ends at the last stable offset.
                if high.is_some() && read_committed(opts) {
                    remaining.remove(&p);
                }
            }
            Some(Err(e)) => return Err(live(format!("cannot read {topic}: {e}"))),
            None if last_message.elapsed() > opts.timeout => {
                return Err(live(format!(
                    "no message from {topic} for {:?} with partitions {:?} not read to their end",
                    opts.timeout,
                    remaining.keys().collect::<Vec<_>>()
                )));
            }
            None => {}
        }
    }
    Ok(read)
}

/// Whether this reader sees only committed transactions (`-X isolation.level`).
fn read_committed(opts: &KafkaOptions) -> bool {
    (opts.layered(&[]))
        .filter(|(k, _, _)| *k == "isolation.level")
        .last()
        .is_some_and(|(_, v, _)| v == "read_committed")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 20: `produce --key-field user` keyed `{"user":"a\u0062"}` as `a\u0062`
    /// (a field reader that neither decoded escapes nor validated) while `count
    /// --uid-field user` counts `ab`. One reader now: the counting parser's.
    #[test]
    fn the_key_is_the_uid_that_count_would_count() {
        let key =
            |line: &str| root_key(line.as_bytes(), "user").map(|k| String::from_utf8(k).unwrap());
        assert_eq!(key(r#"{"user":"a\u0062","ts":1}"#).as_deref(), Some("ab"));
        assert_eq!(
            key(r#"{"x":{"user":"inner"},"user":"outer"}"#).as_deref(),
            Some("outer")
        );
        assert_eq!(key(r#"{"user":"é\n"}"#).as_deref(), Some("é\n"));
        // Not a frame `count --uid-field user` would count: no key.
        for line in [
            r#"{"user":"a","user":"b"}"#,
            r#"{"user":42}"#,
            r#"{"user":"a""#,
            r#"{"uid":"a"}"#,
            "[1]",
        ] {
            assert_eq!(key(line), None, "{line}");
        }
        // The default field, and a field named like the other one.
        assert_eq!(
            root_key(br#"{"uid":"u","ts":"x"}"#, "uid"),
            Some(b"u".to_vec())
        );
        assert_eq!(root_key(br#"{"ts":"t"}"#, "ts"), Some(b"t".to_vec()));
    }

    #[test]
    fn the_timestamp_is_the_ts_that_count_would_read() {
        let ms = |line: &str, unit| root_timestamp_ms(line.as_bytes(), "at", unit);
        assert_eq!(
            ms(r#"{"at":1700000000}"#, TsUnit::Seconds),
            Some(1_700_000_000_000)
        );
        assert_eq!(
            ms(r#"{"at":"1700000000"}"#, TsUnit::Seconds),
            Some(1_700_000_000_000)
        );
        assert_eq!(
            ms(r#"{"at":1700000000123}"#, TsUnit::Millis),
            Some(1_700_000_000_000)
        );
        for line in [
            r#"{"at":-1}"#,
            r#"{"at":1.5}"#,
            r#"{"at":1,"at":2}"#,
            r#"{"at":"1x"}"#,
        ] {
            assert_eq!(ms(line, TsUnit::Seconds), None, "{line}");
        }
        assert_eq!(
            root_timestamp_ms(br#"{"uid":5}"#, "uid", TsUnit::Seconds),
            Some(5000)
        );
    }
}
