//! The Prometheus text exposition of the store: every family, its help and its
//! labels, encoded by `prometheus-client` from the latest copies at scrape time.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::*;

/// Encodes one metric: a plain value, or one value per label set.
struct Out<'a, 'b>(&'a mut DescriptorEncoder<'b>);

impl Out<'_, '_> {
    fn one(&mut self, name: &str, help: &str, m: impl EncodeMetric) -> std::fmt::Result {
        m.encode(
            self.0
                .encode_descriptor(name, help, None, m.metric_type())?,
        )
    }

    fn family<M: EncodeMetric>(
        &mut self,
        name: &str,
        help: &str,
        kind: MetricType,
        label: &'static str,
        values: impl IntoIterator<Item = (String, M)>,
    ) -> std::fmt::Result {
        let mut e = self.0.encode_descriptor(name, help, None, kind)?;
        for (value, m) in values {
            let labels = [(label, value)];
            m.encode(e.encode_family(&labels)?)?;
        }
        Ok(())
    }

    fn histogram(&mut self, name: &str, help: &str, h: &Histogram) -> std::fmt::Result {
        let mut e = self
            .0
            .encode_descriptor(name, help, None, MetricType::Histogram)?;
        // Per bucket, as the encoder makes them cumulative.
        let buckets: Vec<(f64, u64)> = (h.counts.iter().enumerate())
            .map(|(i, n)| (h.bounds.get(i).copied().unwrap_or(f64::INFINITY), *n))
            .collect();
        e.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            h.sum,
            h.count(),
            &buckets,
            None,
        )
    }
}

impl Collector for Metrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let (stage, _) = self.stage.lock().clone();
        let kafka = self.kafka.lock().clone();
        let t = &stage.telemetry;
        let mut o = Out(&mut encoder);
        use MetricType::{Counter as C, Gauge as G};
        o.one(
            "cardinal_frames_read",
            "Frames read from the input.",
            ConstCounter::new(t.frames_received),
        )?;
        o.one(
            "cardinal_bytes_read",
            "Bytes read from the input.",
            ConstCounter::new(t.bytes_received),
        )?;
        o.family(
            "cardinal_partition_frames_read",
            "Frames read per Kafka partition.",
            C,
            "partition",
            t.read_by_partition
                .iter()
                .enumerate()
                .map(|(p, n)| (p.to_string(), ConstCounter::new(*n))),
        )?;
        o.one(
            "cardinal_frames_counted",
            "Frames counted in at least one window.",
            ConstCounter::new(t.frames_counted),
        )?;
        o.family(
            "cardinal_frames_rejected",
            "Frames not counted, by reason, as in the rejects file (a frame late for some windows may still count in others).",
            C,
            "reason",
            t.not_counted_by_reason()
                .map(|(r, n)| (r.name().to_string(), ConstCounter::new(n))),
        )?;
        o.family(
            "cardinal_frames_late",
            "Frames too late for a window that was already final, by granularity.",
            C,
            "window",
            Granularity::ALL
                .iter()
                .zip(t.late_by_window)
                .map(|(g, n)| (g.name().to_string(), ConstCounter::new(n))),
        )?;
        o.family(
            "cardinal_windows_emitted",
            "Windows emitted as final (first versions), by granularity.",
            C,
            "window",
            Granularity::ALL
                .iter()
                .zip(t.emitted_by_window)
                .map(|(g, n)| (g.name().to_string(), ConstCounter::new(n))),
        )?;
        o.one(
            "cardinal_window_corrections",
            "Corrected versions of final windows (late frames within --grace).",
            ConstCounter::new(t.corrections_emitted),
        )?;
        o.histogram(
            "cardinal_emit_latency_seconds",
            "Live runs: wall-clock time from a window's end to its first emission.",
            &t.emit_latency,
        )?;
        o.one(
            "cardinal_open_windows",
            "Windows open now, all granularities.",
            ConstGauge::new(stage.open_windows as i64),
        )?;
        o.one(
            "cardinal_open_window_users",
            "Distinct users held by the open windows, summed over them.",
            ConstGauge::new(stage.open_users as i64),
        )?;
        if let Some(wm) = stage.watermark {
            o.one(
                "cardinal_watermark_seconds",
                "The stream's watermark: windows ending at or before it are final (unix seconds).",
                ConstGauge::new(wm),
            )?;
            o.one(
                "cardinal_event_time_lag_seconds",
                "Wall clock minus the stream's watermark.",
                ConstGauge::new(unix_now() - wm),
            )?;
        }
        o.family(
            "cardinal_partition_watermark_seconds",
            "Each partition's watermark (unix seconds).",
            G,
            "partition",
            stage
                .lane_watermarks
                .iter()
                .map(|(p, w)| (p.to_string(), ConstGauge::new(*w))),
        )?;
        let c = self.checkpoints.lock();
        if c.written > 0 {
            o.histogram(
                "cardinal_checkpoint_duration_seconds",
                "Time to write a checkpoint.",
                &c.duration,
            )?;
            o.one(
                "cardinal_checkpoint_size_bytes",
                "Size of the last checkpoint.",
                ConstGauge::new(c.last_bytes as i64),
            )?;
        }
        drop(c);
        if let Some(k) = kafka {
            o.family(
                "cardinal_consumer_lag",
                "Messages between our read position and the partition's high watermark.",
                G,
                "partition",
                k.consumer_lag
                    .iter()
                    .map(|(p, lag)| (p.to_string(), ConstGauge::new(*lag))),
            )?;
            o.family(
                "cardinal_consumer_commit_lag",
                "Messages between the group's committed offset and the partition's high watermark: \
                 the LAG that kafka-consumer-groups.sh shows. It trails the read lag by the frames \
                 of windows still open, which are committed once their results are final.",
                G,
                "partition",
                k.commit_lag
                    .iter()
                    .map(|(p, lag)| (p.to_string(), ConstGauge::new(*lag))),
            )?;
            o.one(
                "cardinal_assigned_partitions",
                "Partitions the consumer group gave this instance.",
                ConstGauge::new(k.assigned as i64),
            )?;
            o.one(
                "cardinal_results_produced",
                "Result records produced to the results topic.",
                ConstCounter::new(k.results_produced),
            )?;
            o.one(
                "cardinal_results_unacknowledged",
                "Result records the broker has not acknowledged yet.",
                ConstGauge::new(k.results_unacked as i64),
            )?;
        }
        Ok(())
    }
}
