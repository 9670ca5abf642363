//! The HTTP endpoint (`--http`): `/metrics`, `/healthz`, `/readyz`, the live page
//! and its data, served by hyper on a single-threaded tokio runtime of its own,
//! with limits that a hostile client cannot get around.

use std::net::SocketAddr;

use super::*;

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
