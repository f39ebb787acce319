//! Connections that fail before they become a request, logged as what they are: a
//! client's fault, not the node's.
//!
//! actix-http logs every connection it gives up on at ERROR ("stream error: request parse
//! error: invalid Header provided" for garbage bytes, a TLS hello, a header too large; an
//! I/O error for a client that resets). Those never reach the access log, and an alert on
//! ERROR lines would page on every port scanner. This layer takes them out of the log
//! and writes a WARN line instead, at most `LINES_PER_SECOND` a second per kind of
//! failure, each with the count of the ones left out since the previous line.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// WARN lines per kind of failure per second.
pub const LINES_PER_SECOND: u32 = 5;

/// Kinds tracked apart; further kinds share one count (actix's messages are a fixed set,
/// so this is only a bound).
const MAX_KINDS: usize = 32;

/// Where actix-http's HTTP/1 connection handling logs.
const ACTIX_H1: &str = "actix_http::h1";

/// The layer: add it over the formatting subscriber (`SubscriberExt::with`).
#[derive(Default)]
pub struct ClientFaultLog {
    limit: RateLimit,
}

impl ClientFaultLog {
    pub fn new() -> ClientFaultLog {
        ClientFaultLog::default()
    }
}

impl<S: Subscriber> Layer<S> for ClientFaultLog {
    /// Disables actix-http's ERROR events for every layer, and logs them as rate-limited
    /// warnings.
    fn event_enabled(&self, event: &Event<'_>, _: Context<'_, S>) -> bool {
        let meta = event.metadata();
        if *meta.level() != Level::ERROR || !meta.target().starts_with(ACTIX_H1) {
            return true;
        }
        let message = crate::telemetry::EventMessage::of(event);
        let (kind, detail) = classify(&message.0);
        if let Some(suppressed) = self.limit.admit(kind, Instant::now()) {
            // The subscriber is the global one, so this nested event is dispatched (a
            // scoped dispatcher would drop it), and it is not from actix: no recursion.
            tracing::warn!(
                kind,
                error = detail,
                suppressed,
                "a client's connection failed"
            );
        }
        false
    }
}

/// "stream error: request parse error: invalid Header provided" is of kind "request
/// parse error"; the kind is the text up to the first colon.
fn classify(message: &str) -> (&str, &str) {
    let message = message.strip_prefix("stream error: ").unwrap_or(message);
    let kind = message.split(':').next().unwrap_or(message).trim();
    (kind, message)
}

/// At most `LINES_PER_SECOND` lines per kind in each one-second window.
#[derive(Default)]
struct RateLimit {
    kinds: Mutex<HashMap<String, Window>>,
}

struct Window {
    started: Instant,
    lines: u32,
    /// Events left out since the last line of this kind.
    suppressed: u64,
}

impl RateLimit {
    /// `Some(left out since the previous line)` when a line may be written now.
    fn admit(&self, kind: &str, now: Instant) -> Option<u64> {
        let mut kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        let key = if kinds.contains_key(kind) || kinds.len() < MAX_KINDS {
            kind
        } else {
            "other"
        };
        let window = kinds.entry(key.to_owned()).or_insert(Window {
            started: now,
            lines: 0,
            suppressed: 0,
        });
        if now.duration_since(window.started) >= Duration::from_secs(1) {
            window.started = now;
            window.lines = 0;
        }
        if window.lines < LINES_PER_SECOND {
            window.lines += 1;
            Some(std::mem::take(&mut window.suppressed))
        } else {
            window.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_the_text_before_the_detail() {
        assert_eq!(
            classify("stream error: request parse error: invalid Header provided"),
            (
                "request parse error",
                "request parse error: invalid Header provided"
            )
        );
        assert_eq!(
            classify("MAX_BUFFER_SIZE unprocessed data reached, closing").0,
            "MAX_BUFFER_SIZE unprocessed data reached, closing"
        );
    }

    #[test]
    fn each_kind_gets_a_few_lines_a_second_and_the_count_of_the_rest() {
        let limit = RateLimit::default();
        let start = Instant::now();
        let admitted = (0..100)
            .filter(|_| limit.admit("parse", start).is_some())
            .count();
        assert_eq!(admitted, LINES_PER_SECOND as usize);
        // Another kind has its own budget.
        assert_eq!(limit.admit("io", start), Some(0));
        // The next second's first line tells how many were left out.
        let later = start + Duration::from_secs(1);
        assert_eq!(
            limit.admit("parse", later),
            Some(100 - LINES_PER_SECOND as u64)
        );
        assert_eq!(limit.admit("parse", later), Some(0));
    }

    #[test]
    fn the_number_of_kinds_is_bounded() {
        let limit = RateLimit::default();
        let now = Instant::now();
        for i in 0..(MAX_KINDS * 2) {
            limit.admit(&format!("kind {i}"), now);
        }
        assert!(limit.kinds.lock().unwrap().len() <= MAX_KINDS + 1);
    }
}
