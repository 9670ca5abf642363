//! `cardinal run`: consume frames, count, publish, commit.

use super::*;

/// `cardinal run`: consume frames, count, publish, commit.
pub fn run(
    opts: &RunOptions,
    config: &CountConfig,
    sinks: &mut Sinks,
    shutdown: Arc<AtomicBool>,
) -> Result<CountReport, PipelineError> {
    // A checkpoint, if any, says where every partition it has seen resumes.
    let mut restored = None;
    let mut positions = HashMap::new();
    let checkpoints = match &opts.state {
        Some(st) => {
            let dir = StateDir::open(&st.dir).map_err(|e| live(e.to_string()))?;
            if let Some(cp) = dir
                .load(&st.identity, st.reset)
                .map_err(|e| live(e.to_string()))?
            {
                let InputPosition::Kafka { offsets } = &cp.input else {
                    return Err(live(format!(
                        "{} holds a checkpoint of files, not of Kafka",
                        st.dir.display()
                    )));
                };
                positions.extend(offsets.iter().copied());
                if let Some(f) = &st.rejects_file {
                    // Rejects past the checkpoint are of frames read again now.
                    f.cut_back(cp.rejects_bytes.unwrap_or(u64::MAX))?;
                }
                tracing::info!(event = "checkpoint_restored", offsets = ?offsets, windows = cp.state.windows.len());
                restored = Some(pipeline::Restored {
                    state: cp.state,
                    totals: cp.totals,
                });
            } else if let Some(f) = &st.rejects_file {
                f.cut_back(0)?; // a run from the start writes them anew
            }
            wait_out_a_dead_member(&dir, &opts.kafka, &shutdown);
            dir.mark_member().map_err(|e| live(e.to_string()))?;
            Some(Checkpointing::new(dir, st.identity.clone()).with_metrics(config.metrics.clone()))
        }
        None => None,
    };
    let scale_out = match &opts.scale_out {
        Some(_) => {
            let names = scale::ScaleOut::for_group(&opts.group);
            names.ensure_topic(&opts.kafka)?;
            let handovers = scale::handover::Handovers::open(&opts.kafka, &names.partials_topic)?;
            tracing::info!(event = "scale_out", instance = %names.instance, partials = %names.partials_topic, merge_group = %names.merge_group);
            let state = Arc::new(scale::publish::ScaleState {
                instance: names.instance.clone(),
                handovers: Mutex::new(handovers),
                owned: Mutex::new(Default::default()),
                starts: Mutex::new(Default::default()),
                releasing: Mutex::new(Default::default()),
                revoked: Mutex::new(Vec::new()),
                refeed: Mutex::new(Vec::new()),
                silence: session_timeout(&opts.kafka),
                shutdown: shutdown.clone(),
            });
            Some((names, state))
        }
        None => None,
    };
    let context = RunContext {
        scale: scale_out.as_ref().map(|(_, s)| s.clone()),
        topic: opts.topic.clone(),
        from: opts.from,
        positions: Mutex::new(positions),
        assigned: Mutex::new(Vec::new()),
        holding: AtomicBool::new(false),
        metrics: config.metrics.clone(),
        all_partitions: std::sync::OnceLock::new(),
        incomplete: Mutex::new(None),
        ever_complete: AtomicBool::new(false),
        gave_up_shared: AtomicBool::new(false),
        last_error: Mutex::new(None),
    };
    if let Some(m) = &config.metrics {
        // Not ready until the group gives us partitions.
        m.update_kafka(|_| {});
    }
    let mut cfg = opts.kafka.config(CONSUMER_DEFAULTS);
    cfg.set("group.id", &opts.group);
    if matches!(opts.until, Until::EndAtStart) && cfg.get("enable.partition.eof").is_none() {
        // A backfill started at a partition's end (committed offsets there) gets no
        // message from it, only this: that it is at its end. (Not for a target set
        // later: the producer may not have reached it yet.)
        cfg.set("enable.partition.eof", "true");
    }
    if config.metrics.is_some() && cfg.get("statistics.interval.ms").is_none() {
        // Consumer lag for the metrics comes from librdkafka's statistics.
        cfg.set("statistics.interval.ms", "1000");
    }
    tracing::debug!(
        event = "client_config",
        client = "consumer",
        settings = %opts.kafka.describe(CONSUMER_DEFAULTS)
    );
    let consumer: Arc<BaseConsumer<RunContext>> = Arc::new(
        cfg.create_with_context(context)
            .map_err(|e| opts.kafka.settings_error("consumer", CONSUMER_DEFAULTS, e))?,
    );
    let partitions = partitions_of(&consumer, &opts.kafka, &opts.topic)?;
    let _ = consumer.context().all_partitions.set(partitions.clone());
    let mut results = match &opts.results_topic {
        Some(t) => {
            partitions_of(&consumer, &opts.kafka, t)?;
            tracing::debug!(
                event = "client_config",
                client = "producer",
                settings = %opts.kafka.describe(PRODUCER_DEFAULTS)
            );
            let mut producer_config = opts.kafka.config(PRODUCER_DEFAULTS);
            if opts.exactly_once {
                // One id per group and topic: a restarted run fences the one it
                // replaces, whose open transaction the broker then aborts.
                producer_config.set(
                    "transactional.id",
                    format!("cardinal-{}-{}", opts.group, opts.topic),
                );
            }
            let p: ThreadedProducer<DeliveryTracker> = producer_config
                .create_with_context(DeliveryTracker::default())
                .map_err(|e| opts.kafka.settings_error("producer", PRODUCER_DEFAULTS, e))?;
            if opts.exactly_once {
                begin_transactions(&p, t, opts.kafka.timeout)?;
            }
            warn_if_results_shared(&opts.kafka, t, &opts.group);
            let topic = ResultsTopic {
                topic: Arc::from(t.as_str()),
                group: Arc::from(opts.group.as_str()),
                producer: Arc::new(p),
                timeout: opts.kafka.timeout,
                metrics: config.metrics.clone(),
            };
            if scale_out.is_none() {
                sinks.results.push(Box::new(topic.clone()));
            }
            Some(topic)
        }
        None => None,
    };
    let rejects = match &opts.rejects_topic {
        Some(t) => {
            let sink = TopicRejects::connect(&opts.kafka, t)?;
            sinks.rejects.push(Box::new(sink.clone()));
            Some(sink)
        }
        None => None,
    };
    let end_offsets = if matches!(opts.until, Until::EndAtStart) {
        let mut ends = HashMap::new();
        for p in &partitions {
            let (low, high) = consumer
                .fetch_watermarks(&opts.topic, *p, opts.kafka.timeout)
                .map_err(|e| {
                    live(format!(
                        "cannot read the end offsets of {}[{p}]: {e}",
                        opts.topic
                    ))
                })?;
            ends.insert(*p, (low, high));
        }
        tracing::info!(event = "backfill_target", topic = %opts.topic, ends = ?ends);
        Some(ends)
    } else {
        None
    };
    consumer
        .subscribe(&[&opts.topic])
        .map_err(|e| live(format!("cannot subscribe to {}: {e}", opts.topic)))?;

    let mut merger = None;
    let publisher = match (&scale_out, &opts.scale_out) {
        (Some((names, state)), Some(so)) => {
            let Some(results_topic) = results.take() else {
                return Err(live(
                    "--scale-out needs --results-topic: the merged results go there",
                ));
            };
            let producer: ThreadedProducer<DeliveryTracker> = opts
                .kafka
                .config(PRODUCER_DEFAULTS)
                .create_with_context(DeliveryTracker::default())
                .map_err(|e| opts.kafka.settings_error("producer", PRODUCER_DEFAULTS, e))?;
            let producer = Arc::new(producer);
            // Windows closed here are partial: they go to the partials topic, never out.
            let closed = scale::publish::ClosedWindows::default();
            sinks.results.clear();
            sinks.results.push(Box::new(closed.clone()));
            let settings = scale::merger::MergerSettings {
                kafka: opts.kafka.clone(),
                partials: names.partials_topic.clone(),
                group: names.merge_group.clone(),
                partitions: partitions.clone(),
                results: results_topic,
                producer: producer.clone(),
                calendar: config.calendar.clone(),
                grace: config.settings.grace,
                keep_state: so.emit_sketch,
                until_end: matches!(opts.until, Until::EndAtStart),
                stop: Arc::new(AtomicBool::new(false)),
            };
            merger = Some(match config.counter {
                pipeline::CounterKind::Exact => {
                    scale::merger::spawn::<crate::counter::Exact>(settings, ())?
                }
                pipeline::CounterKind::Hll(c) => {
                    scale::merger::spawn::<crate::counter::Hll>(settings, c)?
                }
            });
            Some(scale::publish::Publisher::new(
                state.clone(),
                &names.partials_topic,
                producer,
                closed,
                opts.kafka.timeout,
                partitions.clone(),
            ))
        }
        _ => None,
    };
    let mut hooks = KafkaHooks {
        scale: publisher,
        consumer: consumer.clone(),
        topic: opts.topic.clone(),
        results,
        rejects,
        timeout: opts.kafka.timeout,
        session_timeout: session_timeout(&opts.kafka),
        commit_interval: opts.commit_interval,
        last_commit: Instant::now(),
        committed: HashMap::new(),
        commit_error: None,
        in_flight: None,
        checkpoints,
        rejects_file: opts.state.as_ref().and_then(|s| s.rejects_file.clone()),
        transactional: opts.exactly_once,
    };
    let feeder_consumer = consumer.clone();
    let topic: Arc<str> = Arc::from(opts.topic.as_str());
    let target = match &opts.until {
        Until::Target(t) => Some(t.clone()),
        _ => None,
    };
    let settings = FeederSettings {
        end_offsets: EndOffsets {
            at_start: end_offsets,
            target,
        },
        fed: opts.fed.clone(),
        max_frame: config.max_frame_bytes,
        keep: RecordFields {
            keys: opts.rejects_topic.is_some() || config.frames.uid_from() == UidFrom::Key,
            timestamps: config.frames.ts_from() == TsFrom::RecordTimestamp,
        },
        stall: Stall::new(opts.kafka.brokers.clone(), opts.stall_timeout),
        shared: Shared {
            group: opts.group.clone(),
            // Long enough for a crashed member's session to expire and its partitions
            // to come back; a live member of the group never lets them go.
            give_up_after: session_timeout(&opts.kafka) + Duration::from_secs(15),
            last_warning: None,
        },
    };
    let stop = shutdown.clone();
    let result = pipeline::run(config, sinks, &mut hooks, restored, move |feed| {
        feed_from_kafka(&feeder_consumer, topic, settings, &shutdown, feed)
    });
    consumer.unsubscribe();
    if let Some(m) = merger {
        // Our partitions are done (or let go): leave the group at once, so the others
        // are not kept waiting for us in a rebalance, then see the merge through.
        drop(hooks);
        drop(consumer);
        return finish_merging(m, result, &stop, session_timeout(&opts.kafka));
    }
    let report = match result {
        Ok(report) => report,
        Err(e) if consumer.context().gave_up_shared.load(Ordering::Relaxed) => {
            // The broker is fine: leave the group now, so that the member that stays
            // gets the whole topic back at once, not after our session expires.
            drop(hooks);
            drop(consumer);
            return Err(e);
        }
        Err(e) => {
            // Closing a consumer waits for the group leave, for ever if the broker is
            // gone (the error may be just that). The process is about to exit with
            // the error: leave the client to it rather than hang on the way out.
            std::mem::forget(hooks);
            std::mem::forget(consumer);
            return Err(e);
        }
    };
    if let Some(cp) = &hooks.checkpoints {
        // The group was left cleanly: the next start has nothing to wait out.
        cp.dir.clear_member();
    }
    Ok(report)
}

/// Scale-out, after the pipeline: a backfill's instance goes on merging while the
/// group `GROUP.merge` gives it the merge (until every partition is done and every
/// window published), and leaves once another member has held the merge for a
/// session timeout (the merge group may be between two assignments when this
/// instance finishes). A stopped run or a failed one stops merging at once.
fn finish_merging(
    m: scale::merger::MergerHandle,
    result: Result<CountReport, PipelineError>,
    shutdown: &AtomicBool,
    session: Duration,
) -> Result<CountReport, PipelineError> {
    if result.is_err() || shutdown.load(Ordering::Relaxed) {
        m.stop.store(true, Ordering::SeqCst);
    } else {
        tracing::info!(
            event = "merge_wait",
            "this instance's partitions are done; merging until every partition is, if the merge is ours"
        );
        let patience = session + Duration::from_secs(5);
        let mut idle_since = Instant::now();
        while !m.thread.is_finished() {
            if m.active.load(Ordering::SeqCst) {
                idle_since = Instant::now();
            }
            if shutdown.load(Ordering::Relaxed) || idle_since.elapsed() >= patience {
                m.stop.store(true, Ordering::SeqCst);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let merged = m
        .thread
        .join()
        .map_err(|_| live("the merger thread panicked"))?;
    let mut report = result?;
    let merged = merged.map_err(live)?;
    tracing::info!(
        event = "merger_stopped",
        published = merged.published,
        records_read = merged.records_read,
        rebuilds = merged.rebuilds
    );
    if merged.records_read > 0 {
        report.checkpoint_summary = format!("{}\n{}", report.checkpoint_summary, merged.summary());
    }
    Ok(report)
}

/// `--exactly-once`: registers the producer's transactional id with the broker
/// (fencing a previous run's producer and aborting its open transaction) and opens
/// the first transaction.
fn begin_transactions(
    p: &ThreadedProducer<DeliveryTracker>,
    topic: &str,
    timeout: Duration,
) -> Result<(), PipelineError> {
    p.init_transactions(timeout.max(Duration::from_secs(30)))
        .map_err(|e| {
            live(format!(
                "--exactly-once: cannot start transactions for {topic}: {e} (the broker must \
                 support them: Apache Kafka does, Tansu does not)"
            ))
        })?;
    p.begin_transaction()
        .map_err(|e| live(format!("--exactly-once: cannot begin a transaction: {e}")))
}
