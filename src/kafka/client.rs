//! The client's own errors and logs, and what every command needs of the broker first.

use super::*;

/// A client context that only remembers errors, for probes and simple consumers.
pub struct ErrorContext;

impl ClientContext for ErrorContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        client_log(level, fac, log_message);
    }
    fn error(&self, error: KafkaError, reason: &str) {
        client_error(&error, reason);
    }
}

impl ConsumerContext for ErrorContext {}

/// What librdkafka said went wrong lately (an SSL handshake, a refused
/// connection), a few distinct messages, so that "cannot reach Kafka" can say why.
pub(super) static LAST_CLIENT_ERRORS: Mutex<Vec<String>> = Mutex::new(Vec::new());

pub(super) fn remember_client_error(message: &str) {
    let mut all = LAST_CLIENT_ERRORS.lock();
    if !all.iter().any(|m| m == message) {
        if all.len() == 3 {
            all.remove(0);
        }
        all.push(message.to_string());
    }
}

pub(super) fn client_log(level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
    use rdkafka::config::RDKafkaLogLevel as L;
    if matches!(
        level,
        L::Emerg | L::Alert | L::Critical | L::Error | L::Warning
    ) {
        tracing::debug!(event = "client_log", facility = fac, message);
        remember_client_error(message);
    }
}

pub(super) fn client_error(error: &KafkaError, reason: &str) {
    tracing::debug!(event = "client_error", error = %error, reason);
    remember_client_error(reason);
    if error.rdkafka_error_code() == Some(RDKafkaErrorCode::Authentication) {
        AUTHENTICATION_FAILED.store(true, Ordering::Relaxed);
    }
}

/// The broker refused our credentials: retrying with the same ones cannot help.
static AUTHENTICATION_FAILED: AtomicBool = AtomicBool::new(false);

/// The last client error, as a clause for an error message.
pub(super) fn last_client_error() -> String {
    let all = LAST_CLIENT_ERRORS.lock();
    if all.is_empty() {
        String::new()
    } else {
        format!(" (the client said: {})", all.join("; "))
    }
}

pub(super) fn live(msg: impl Into<String>) -> PipelineError {
    PipelineError::Live(msg.into())
}

/// Checks that the brokers answer and that `topic` exists; returns its partitions.
pub(super) fn partitions_of<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    opts: &KafkaOptions,
    topic: &str,
) -> Result<Vec<i32>, PipelineError> {
    // Asked in slices of at most a second, so that a refused login fails at once
    // rather than after the whole --timeout: nothing else would change its answer.
    let deadline = Instant::now() + opts.timeout;
    let md = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let e = match consumer.fetch_metadata(Some(topic), left.min(Duration::from_secs(1))) {
            Ok(md) => break md,
            Err(e) => e,
        };
        // The client's own errors and logs arrive as events on its queue: serve them,
        // so that the contexts record why (an SSL handshake, a refused connection).
        for _ in 0..5 {
            let _ = consumer.poll(Duration::from_millis(10));
        }
        let refused = AUTHENTICATION_FAILED.load(Ordering::Relaxed);
        if refused || Instant::now() >= deadline {
            let within = if refused {
                "(authentication refused, not retried)".to_string()
            } else {
                format!("within {:?}", opts.timeout)
            };
            return Err(live(format!(
                "cannot reach Kafka at {} {within}: {e}{}; check --brokers, that the broker is up, \
                 and the security settings (-X security.protocol, ssl.*, sasl.*), or raise --timeout",
                opts.brokers,
                last_client_error()
            )));
        }
    };
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| {
            live(format!(
                "topic {topic:?} does not exist on {}",
                opts.brokers
            ))
        })?;
    if let Some(err) = t.error() {
        return Err(live(format!(
            "topic {topic:?} is not available on {}: {err:?}; create it first (Cardinal does not auto-create topics)",
            opts.brokers
        )));
    }
    if t.partitions().is_empty() {
        return Err(live(format!(
            "topic {topic:?} does not exist on {} (no partitions)",
            opts.brokers
        )));
    }
    Ok(t.partitions().iter().map(|p| p.id()).collect())
}
