//! Graceful shutdown on SIGTERM / SIGINT.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A stop flag raised by SIGTERM or SIGINT; the run loop checks it between steps.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    flag: Arc<AtomicBool>,
}

impl Shutdown {
    /// Listens for SIGTERM and SIGINT on the current tokio runtime.
    pub fn install() -> Self {
        let this = Self::default();
        let flag = this.flag.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
                tracing::error!("cannot install signal handlers");
                return;
            };
            tokio::select! {
                _ = term.recv() => tracing::info!(signal = "SIGTERM", "stopping: finishing or abandoning the batch in flight"),
                _ = int.recv() => tracing::info!(signal = "SIGINT", "stopping: finishing or abandoning the batch in flight"),
            }
            flag.store(true, Ordering::SeqCst);
        });
        this
    }

    /// True once a stop was requested.
    pub fn requested(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Sleeps for `interval` (continuous mode's pause between batches), returning early when a
    /// stop is requested.
    pub async fn sleep(&self, interval: std::time::Duration) {
        let until = std::time::Instant::now() + interval;
        while std::time::Instant::now() < until && !self.requested() {
            // Idle is healthy: the loop is alive and waiting for data.
            crate::heartbeat();
            tokio::time::sleep(std::time::Duration::from_millis(200).min(until - std::time::Instant::now())).await;
        }
    }

    /// The shared flag (for blocking threads such as the Kafka reader).
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.flag.clone()
    }
}
