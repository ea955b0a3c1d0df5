//! Object-store requests retried after a 5xx, a 429, a timeout or a reset connection.
//! object_store retries inside each request and only logs it (at info, under
//! `object_store::client`); this layer counts those events, so the summary and the metrics
//! show how hard the store pushed back even when every request finally succeeded.

use std::sync::atomic::{AtomicU64, Ordering};

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

use crate::instruments::STORE_RETRIES;

static RETRIES: AtomicU64 = AtomicU64::new(0);

/// Requests retried so far in this process.
pub fn store_retries() -> u64 {
    RETRIES.load(Ordering::Relaxed)
}

/// Counts object_store's retry events (every info event of its client's retry and streaming
/// get code is one retry).
pub(crate) struct RetryCounter;

impl RetryCounter {
    /// Whether an event is one of object_store's retries.
    pub(crate) fn is_retry(target: &str, level: &Level) -> bool {
        *level == Level::INFO && (target == "object_store::client::retry" || target == "object_store::client::get")
    }
}

impl<S: Subscriber> Layer<S> for RetryCounter {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        if Self::is_retry(meta.target(), meta.level()) {
            RETRIES.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(STORE_RETRIES).increment(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_object_stores_retry_events_count() {
        assert!(RetryCounter::is_retry("object_store::client::retry", &Level::INFO));
        assert!(RetryCounter::is_retry("object_store::client::get", &Level::INFO));
        assert!(!RetryCounter::is_retry("object_store::client::retry", &Level::DEBUG));
        assert!(!RetryCounter::is_retry("object_store::aws::credential", &Level::INFO));
    }
}
