//! Structured logs on stderr: JSON when stderr is not a terminal, human-readable otherwise.
//! stdout is reserved for the final JSON summary line.

use std::io::IsTerminal;

use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::Layer as _;

use crate::store_retries::RetryCounter;

/// Our crates at info; libraries at warn. The delta kernel logs expected conditions (a table
/// that does not exist yet) as errors; delta-rs returns its real errors to us anyway, and
/// warns of every concurrent commit it rebases over (routine when tasks share a table; counted
/// as `commit_retries` instead).
const DEFAULT_FILTER: &str = "warn,buoyant_kernel=off,deltalake_core::kernel::transaction=error,raw_append=info,stream_join=info,merge_upsert=info,maintenance=info,delta_source=info,job_runtime=info,kafka_source=info,delta_io=info,lakectl=info,soak=info";

/// Installs the global subscriber: logs filtered by `RUST_LOG` (default above), and the
/// object-store retry counter, which sees object_store's info events whatever the log filter.
pub fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = if std::io::stderr().is_terminal() {
        logs.compact().with_filter(filter).boxed()
    } else {
        logs.json().flatten_event(true).with_current_span(false).with_filter(filter).boxed()
    };
    let retries = RetryCounter.with_filter(Targets::new().with_target("object_store::client", tracing::Level::INFO));
    // A second init (tests) keeps the first subscriber.
    let _ = tracing_subscriber::registry().with(logs).with(retries).try_init();
}
