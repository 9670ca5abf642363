//! Metrics and health over HTTP (`--http ADDR`): the run's telemetry in the
//! Prometheus text format at `/metrics`, and `/healthz` and `/readyz` for probes.
//!
//! The hot path never touches this module. About once a second the aggregating
//! stage copies its [`Telemetry`] (the counters the logs and the summary use too)
//! and a few gauges here, and the Kafka source adds consumer lag and readiness; a
//! scrape encodes the latest copies. So the metrics may trail the run by a second,
//! and never disagree with its logs or its summary.
//!
//! Here: the store (what the stages publish, the health policy and the live
//! page's JSON); `exposition` encodes it for Prometheus; `server` serves it.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;

use crate::chart;
use crate::emitter::Record;
use crate::telemetry::{Histogram, Telemetry};
use crate::window::Granularity;

mod exposition;
mod server;

pub use server::Server;

/// What the aggregating stage publishes.
#[derive(Debug, Clone, Default)]
pub struct StageView {
    pub telemetry: Telemetry,
    /// The stream's watermark (unix seconds).
    pub watermark: Option<i64>,
    /// Each lane's (partition's) watermark.
    pub lane_watermarks: Vec<(usize, i64)>,
    pub open_windows: usize,
    /// Distinct users summed over the open windows (estimates, for HLL).
    pub open_users: u64,
}

/// What the Kafka source and sink publish.
#[derive(Debug, Clone, Default)]
pub struct KafkaView {
    /// High watermark minus our read position, per partition.
    pub consumer_lag: BTreeMap<i32, i64>,
    /// Per partition: messages between the group's committed offset and the high
    /// watermark, what Kafka's own tools show as the group's lag.
    pub commit_lag: BTreeMap<i32, i64>,
    /// Partitions the group gave us.
    pub assigned: usize,
    /// The client's last error while the broker is unreachable; `None` when it works.
    pub broker_down: Option<String>,
    /// Result records produced, and not yet acknowledged by the broker.
    pub results_produced: u64,
    pub results_unacked: u64,
}

#[derive(Debug, Default)]
struct Checkpoints {
    duration: Histogram,
    last_bytes: u64,
    written: u64,
}

/// The shared state behind the endpoints.
#[derive(Debug)]
pub struct Metrics {
    stage: Mutex<(StageView, Option<Instant>)>,
    /// The windows emitted lately, for the live page: the latest version of each.
    recent: Mutex<Vec<Record>>,
    kafka: Mutex<Option<KafkaView>>,
    checkpoints: Mutex<Checkpoints>,
}

/// The aggregating stage must publish more often than this, or `/healthz` fails.
pub const STALLED_AFTER: Duration = Duration::from_secs(60);

const CHECKPOINT_SECONDS: &[f64] = &[0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0];

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics {
            stage: Mutex::new((StageView::default(), None)),
            recent: Mutex::new(Vec::new()),
            kafka: Mutex::new(None),
            checkpoints: Mutex::new(Checkpoints {
                duration: Histogram::new(CHECKPOINT_SECONDS),
                ..Checkpoints::default()
            }),
        })
    }

    /// The aggregating stage's latest state; also its heartbeat for `/healthz`.
    pub fn publish_stage(&self, view: StageView) {
        *self.stage.lock() = (view, Some(Instant::now()));
    }

    /// Windows just emitted. Keeps, per granularity, the latest version of the most
    /// recent windows: an hour of minutes, three days of hours, and so on.
    pub fn windows_emitted(&self, records: impl IntoIterator<Item = Record>) {
        let mut recent = self.recent.lock();
        recent.extend(records);
        let Ok(series) = chart::series(&recent) else {
            return;
        };
        let keep = |g: Granularity| match g {
            Granularity::Minute => 60,
            Granularity::Hour => 72,
            Granularity::Day => 90,
            Granularity::Week => 52,
            Granularity::Month => 24,
            Granularity::Year => 10,
        };
        let starts: std::collections::HashSet<(String, String, u32)> = series
            .iter()
            .flat_map(|(g, points)| {
                let skip = points.len().saturating_sub(keep(*g));
                points[skip..]
                    .iter()
                    .map(|p| (g.name().to_string(), p.start.clone(), p.version))
            })
            .collect();
        recent.retain(|r| starts.contains(&(r.window.clone(), r.start.clone(), r.version)));
    }

    /// The live page's chart.
    pub fn chart_svg(&self) -> String {
        chart::svg(&chart::series(&self.recent.lock()).unwrap_or_default())
    }

    /// The live page's tables, as JSON.
    pub fn state_json(&self) -> String {
        let (stage, _) = self.stage.lock().clone();
        let kafka = self.kafka.lock().clone().unwrap_or_default();
        let t = &stage.telemetry;
        let partitions: Vec<serde_json::Value> = stage
            .lane_watermarks
            .iter()
            .map(|(p, w)| {
                serde_json::json!({
                    "partition": p,
                    "watermark": iso(*w),
                    "lag": kafka.consumer_lag.get(&(*p as i32)),
                })
            })
            .collect();
        let rejects: BTreeMap<&str, u64> = t
            .not_counted_by_reason()
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| (r.name(), n))
            .collect();
        serde_json::json!({
            "frames_read": t.frames_received,
            "frames_counted": t.frames_counted,
            "watermark": stage.watermark.map(iso),
            "event_time_lag_s": stage.watermark.map(|w| unix_now() - w),
            "open_windows": stage.open_windows,
            "partitions": partitions,
            "rejects": rejects,
        })
        .to_string()
    }

    /// The aggregating stage's latest copy.
    pub fn stage(&self) -> StageView {
        self.stage.lock().0.clone()
    }

    /// The Kafka source's latest view, for Kafka runs.
    pub fn kafka(&self) -> Option<KafkaView> {
        self.kafka.lock().clone()
    }

    /// Kafka runs: updates the source's view (a Kafka run is ready only with it).
    pub fn update_kafka(&self, f: impl FnOnce(&mut KafkaView)) {
        f(self.kafka.lock().get_or_insert_with(KafkaView::default));
    }

    pub fn checkpoint_written(&self, took: Duration, bytes: u64) {
        let mut c = self.checkpoints.lock();
        c.duration.observe(took.as_secs_f64());
        c.last_bytes = bytes;
        c.written += 1;
    }

    /// `/healthz`: the aggregating stage is moving.
    pub fn health(&self) -> Result<String, String> {
        match self.stage.lock().1 {
            Some(at) if at.elapsed() > STALLED_AFTER => Err(format!(
                "the aggregating stage has not moved for {} s",
                at.elapsed().as_secs()
            )),
            _ => Ok("ok\n".into()),
        }
    }

    /// `/readyz`: the run is counting; for Kafka, it has partitions and a broker.
    pub fn readiness(&self) -> Result<String, String> {
        if self.stage.lock().1.is_none() {
            return Err("starting: nothing counted yet\n".into());
        }
        match &*self.kafka.lock() {
            Some(k) if k.broker_down.is_some() => Err(format!(
                "the broker is unreachable: {}\n",
                k.broker_down.as_deref().unwrap_or_default()
            )),
            Some(k) if k.assigned == 0 => Err("no partitions assigned\n".into()),
            _ => Ok("ready\n".into()),
        }
    }

    /// The Prometheus text exposition of everything above.
    pub fn render(self: &Arc<Self>) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Arc::clone(self)));
        let mut out = String::new();
        // Only a `fmt::Write` into a String: it cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
        out
    }
}

fn iso(ts: i64) -> String {
    jiff::Timestamp::from_second(ts).map_or_else(|_| ts.to_string(), |t| t.to_string())
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_is_cumulative_and_ends_with_inf() {
        let m = Metrics::new();
        let mut t = Telemetry::default();
        for v in [0.2, 3.0, 3.0, 7200.0] {
            t.emit_latency.observe(v);
        }
        m.publish_stage(StageView {
            telemetry: t,
            ..StageView::default()
        });
        let text = m.render();
        assert!(
            text.contains("cardinal_emit_latency_seconds_bucket{le=\"0.5\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("cardinal_emit_latency_seconds_bucket{le=\"5\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("cardinal_emit_latency_seconds_bucket{le=\"+Inf\"} 4"),
            "{text}"
        );
        assert!(
            text.contains("cardinal_emit_latency_seconds_count 4"),
            "{text}"
        );
    }

    #[test]
    fn health_and_readiness_say_why_not() {
        let m = Metrics::new();
        assert!(m.readiness().unwrap_err().contains("starting"));
        m.publish_stage(StageView::default());
        assert!(m.readiness().is_ok(), "files: ready once counting");
        m.update_kafka(|k| k.assigned = 0);
        assert!(m.readiness().unwrap_err().contains("no partitions"));
        m.update_kafka(|k| {
            k.assigned = 3;
            k.broker_down = Some("all brokers down".into())
        });
        assert!(m.readiness().unwrap_err().contains("all brokers down"));
        assert!(m.health().is_ok());
    }
}
