//! Metrics and health over HTTP (`--http ADDR`): the run's telemetry in the
//! Prometheus text format at `/metrics`, and `/healthz` and `/readyz` for probes.
//!
//! The hot path never touches this module. About once a second the aggregating
//! stage copies its [`Telemetry`] (the counters the logs and the summary use too)
//! and a few gauges here, and the Kafka source adds consumer lag and readiness; a
//! scrape encodes the latest copies. So the metrics may trail the run by a second,
//! and never disagree with its logs or its summary.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::chart;
use crate::emitter::Record;
use crate::telemetry::{Histogram, Telemetry};
use crate::window::Granularity;

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

/// At most this many connections are served at once; more are closed unread. The
/// endpoint is for a scraper, a probe and a person or two at the live page, so 32
/// is plenty, and it caps what hostile clients can hold: 32 buffers of
/// [`MAX_BUF`] and 32 answers.
const MAX_CONNECTIONS: usize = 32;

/// A request's head must fit in this (hyper answers 431 and closes otherwise). Our
/// requests are a line and a few headers; browsers send a few KiB at most.
const MAX_BUF: usize = 16 * 1024;

/// Time to send a whole request head: a client trickling one (slowloris) is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything a connection may take, reading the request and writing the answer: a
/// client that never reads its answer is dropped after this, and its slot freed.
const CONNECTION_DEADLINE: Duration = Duration::from_secs(10);

/// After an accept error (EMFILE, ENFILE, ENOBUFS…) the listener waits this long
/// and accepts again: the condition is usually transient, and retrying at once
/// would spin on it.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The HTTP server: one connection per request (no keep-alive, so no pipelined
/// backlog), on a single-threaded tokio runtime on its own thread, "http", until
/// dropped. Dropping it never waits on a client: open connections are abandoned.
pub struct Server {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Binds `addr` and serves `metrics` there.
    pub fn start(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<Server> {
        let listener = std::net::TcpListener::bind(addr)
            .map_err(|e| std::io::Error::other(format!("cannot listen on {addr}: {e}")))?;
        listener.set_nonblocking(true)?;
        // The bound address: port 0 asked for any free one.
        let bound = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("http".into())
            .spawn(move || {
                runtime.block_on(async move {
                    match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => {
                            tokio::spawn(accept_loop(listener, metrics));
                            // Until dropped (or the sender is gone).
                            let _ = stopped.await;
                        }
                        Err(e) => tracing::error!(event = "http_failed", error = %e),
                    }
                });
                // Connections still open are dropped here, whatever they wait on.
                runtime.shutdown_timeout(Duration::from_millis(200));
            })?;
        tracing::info!(event = "http_listening", addr = %bound);
        Ok(Server {
            addr: bound,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> Option<SocketAddr> {
        Some(self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Prompt: the thread only waits for the signal, then drops its tasks.
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Accepts connections for ever, serving up to [`MAX_CONNECTIONS`] at a time.
async fn accept_loop(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(event = "http_accept_error", error = %e);
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            // Full: closed without reading a byte.
            drop(stream);
            continue;
        };
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let answer = answer(&metrics, &request);
                async move { Ok::<_, std::convert::Infallible>(answer) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .keep_alive(false)
                .max_buf_size(MAX_BUF)
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            // An error or the deadline: the client's problem; the socket is closed.
            let _ = tokio::time::timeout(CONNECTION_DEADLINE, connection).await;
            drop(slot);
        });
    }
}

type Body = http_body_util::Full<hyper::body::Bytes>;

/// GET and HEAD are answered by [`respond`] (hyper leaves a HEAD answer's body
/// out); any other method gets 405.
fn answer<B>(metrics: &Arc<Metrics>, request: &hyper::Request<B>) -> hyper::Response<Body> {
    use hyper::header::{ALLOW, CONTENT_TYPE};
    let builder = hyper::Response::builder();
    let response = match *request.method() {
        hyper::Method::GET | hyper::Method::HEAD => {
            let url = request.uri().path_and_query().map_or("/", |p| p.as_str());
            let (status, body, kind) = respond(metrics, url);
            builder
                .status(status)
                .header(CONTENT_TYPE, kind)
                .body(Body::from(body))
        }
        _ => builder
            .status(405)
            .header(ALLOW, "GET, HEAD")
            .header(CONTENT_TYPE, TEXT)
            .body(Body::from("method not allowed: GET or HEAD only\n")),
    };
    // Only static, valid statuses and headers above.
    response.expect("a valid response")
}

const TEXT: &str = "text/plain; charset=utf-8";

/// The live page: self-contained (nothing fetched from elsewhere), it polls the
/// chart and the state every two seconds.
const PAGE: &str = include_str!("live.html");

fn respond(metrics: &Arc<Metrics>, url: &str) -> (u16, String, &'static str) {
    let path = url.split('?').next().unwrap_or_default();
    let status = |r: Result<String, String>| match r {
        Ok(body) => (200, body, TEXT),
        Err(why) => (503, why, TEXT),
    };
    match path {
        "/metrics" => (
            200,
            metrics.render(),
            "text/plain; version=0.0.4; charset=utf-8",
        ),
        "/healthz" => status(metrics.health()),
        "/chart.svg" => (200, metrics.chart_svg(), "image/svg+xml"),
        "/api/state" => (200, metrics.state_json(), "application/json"),
        "/readyz" => status(metrics.readiness()),
        "/" => (200, PAGE.to_string(), "text/html; charset=utf-8"),
        _ => (404, format!("no such page: {path}\n"), TEXT),
    }
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
