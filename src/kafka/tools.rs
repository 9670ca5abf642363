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
                let key = from.key_field.and_then(|f| root_key(line, f));
                let mut record = BaseRecord::to(topic).payload(line);
                if let Some(k) = &key {
                    record = record.key(k.as_slice());
                }
                if let Some((field, unit)) = from.timestamp_field {
                    match root_timestamp_ms(line, field, unit) {
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

/// The key for `--key-field`: the root `uid` through Cardinal's parser, any other
/// root field as its raw JSON text (strings without quotes).
pub fn root_key(line: &[u8], field: &str) -> Option<Vec<u8>> {
    if field == "uid" {
        return crate::parser::parse_frame(line)
            .ok()
            .map(|f| f.uid.into_owned());
    }
    let v = sonic_rs::get(line, [field]).ok()?;
    let raw = v.as_raw_str();
    Some(
        raw.strip_prefix('"')
            .and_then(|s| s.strip_suffix('"'))
            .unwrap_or(raw)
            .as_bytes()
            .to_vec(),
    )
}

/// The record timestamp for `--timestamp-field`: the root field, an integer or a
/// string of digits in `unit`, in milliseconds (microseconds floored). `None` if
/// it is missing, not such a number, or beyond the year 9999.
pub fn root_timestamp_ms(line: &[u8], field: &str, unit: TsUnit) -> Option<i64> {
    let raw = root_key(line, field)?;
    if raw.is_empty() || raw.len() > 18 || !raw.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let v: i64 = std::str::from_utf8(&raw).ok()?.parse().ok()?;
    if v > unit.max_value() {
        return None;
    }
    Some(match unit {
        TsUnit::Seconds => v * 1000,
        TsUnit::Millis => v,
        TsUnit::Micros => v / 1000,
    })
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
    const DEFAULTS: &[(&str, &str)] = &[
        ("enable.auto.commit", "false"),
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
            Some(Err(KafkaError::PartitionEOF(_))) => {}
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
