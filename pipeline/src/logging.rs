//! Log set-up: human or JSON lines on stderr, colour only at a terminal, and librdkafka's own
//! lines rate-limited like tessera's. While a broker is down librdkafka reports the same
//! failure (`AllBrokersDown`, `Connection refused`) many times a second from every client; one
//! line per kind per interval is kept, the rest dropped (librdkafka's FAIL lines carry their
//! own "N identical error(s) suppressed" count).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// Installs the process's logger on stderr: `RUST_LOG` (else `default_filter`) picks the
/// lines, JSON or human text, colour only at a terminal (and without `NO_COLOR`), librdkafka's
/// repeats throttled.
pub fn init(json: bool, default_filter: &str) {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let lines = tracing_subscriber::fmt::layer()
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(LibrdkafkaThrottle::new(
            tessera_actors::observe::LOG_INTERVAL,
        ));
    if json {
        registry.with(lines.json()).init();
    } else {
        registry.with(lines).init();
    }
}

/// Drops a librdkafka event when one of the same kind went through less than `every` ago.
#[derive(Debug)]
pub struct LibrdkafkaThrottle {
    every: Duration,
    last: Mutex<HashMap<String, Instant>>,
}

impl LibrdkafkaThrottle {
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// Whether an event of `kind` may be logged at `now` (and, if so, the clock restarts).
    fn allow(&self, kind: String, now: Instant) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        match last.get(&kind) {
            Some(at) if now.saturating_duration_since(*at) < self.every => false,
            _ => {
                // Kinds are few (failure classes, not addresses): the map stays small.
                last.insert(kind, now);
                true
            }
        }
    }
}

/// Whether the event comes from librdkafka (its log callback or rdkafka's error callback).
fn from_librdkafka(target: &str) -> bool {
    target.starts_with("librdkafka") || target.starts_with("rdkafka")
}

/// The kind of a librdkafka message: its text without addresses, thread names, numbers and
/// librdkafka's own suppression counts, so repeats of one failure share a kind.
pub fn message_kind(message: &str) -> String {
    let mut kind = String::with_capacity(message.len());
    let mut depth = 0usize;
    for c in message.chars() {
        match c {
            '[' | '(' => depth += 1,
            ']' | ')' => depth = depth.saturating_sub(1),
            _ if depth > 0 => {}
            c if c.is_ascii_digit() || matches!(c, '.' | '#' | '/' | ':') => {}
            c => kind.push(c),
        }
    }
    kind.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[derive(Default)]
struct MessageText(String);

impl Visit for MessageText {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        }
    }
}

impl<S: Subscriber> Layer<S> for LibrdkafkaThrottle {
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        let metadata = event.metadata();
        if !from_librdkafka(metadata.target()) {
            return true;
        }
        let mut text = MessageText::default();
        event.record(&mut text);
        let kind = format!(
            "{} {} {}",
            metadata.target(),
            metadata.level(),
            message_kind(&text.0)
        );
        self.allow(kind, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_of_one_failure_share_a_kind_and_others_do_not() {
        let a = message_kind(
            "librdkafka: FAIL [thrd:127.0.0.1:44661/1]: 127.0.0.1:44661/1: Connect to ipv4#127.0.0.1:44661 failed: Connection refused (after 0ms in state CONNECT)",
        );
        let b = message_kind(
            "librdkafka: FAIL [thrd:GroupCoordinator]: GroupCoordinator: 10.0.0.7:9092: Connect to ipv4#10.0.0.7:9092 failed: Connection refused (after 1ms in state CONNECT, 583 identical error(s) suppressed)",
        );
        let down = message_kind(
            "librdkafka: Global error: AllBrokersDown (Local: All broker connections are down): 2/2 brokers are down",
        );
        assert!(a.contains("Connection refused"), "{a}");
        assert!(down.contains("AllBrokersDown"), "{down}");
        assert_ne!(a, down);
        // The coordinator's line names it, so it is a kind of its own; the address does not.
        assert_ne!(a, b);
        let c = message_kind(
            "librdkafka: FAIL [thrd:127.0.0.1:9999/1]: 127.0.0.1:9999/1: Connect to ipv4#127.0.0.1:9999 failed: Connection refused (after 3ms in state CONNECT)",
        );
        assert_eq!(a, c);
    }

    #[test]
    fn one_line_per_kind_per_interval() {
        let throttle = LibrdkafkaThrottle::new(Duration::from_secs(10));
        let start = Instant::now();
        assert!(throttle.allow("down".into(), start));
        assert!(!throttle.allow("down".into(), start + Duration::from_secs(3)));
        assert!(throttle.allow("refused".into(), start + Duration::from_secs(3)));
        assert!(throttle.allow("down".into(), start + Duration::from_secs(11)));
    }

    #[test]
    fn only_librdkafka_is_throttled_in_a_subscriber() {
        use std::sync::Arc;
        use tracing_subscriber::layer::SubscriberExt;

        #[derive(Clone, Default)]
        struct Lines(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Lines {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                if let Ok(mut all) = self.0.lock() {
                    all.extend_from_slice(bytes);
                }
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::registry()
            .with(LibrdkafkaThrottle::new(Duration::from_secs(60)))
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(move || writer.clone()),
            );
        tracing::subscriber::with_default(subscriber, || {
            for port in 0..50 {
                tracing::error!(target: "librdkafka", "librdkafka: FAIL [thrd:b/{port}]: Connect to ipv4#127.0.0.1:{port} failed: Connection refused");
                tracing::warn!("Kafka consumer error {port}");
            }
        });
        let text = String::from_utf8(lines.0.lock().map(|l| l.clone()).unwrap_or_default())
            .unwrap_or_default();
        assert_eq!(text.matches("Connection refused").count(), 1, "{text}");
        assert_eq!(text.matches("Kafka consumer error").count(), 50);
    }
}
