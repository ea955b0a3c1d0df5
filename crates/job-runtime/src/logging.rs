//! Structured logs on stderr: JSON when stderr is not a terminal, human-readable otherwise.
//! stdout is reserved for the final JSON summary line.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Our crates at info; libraries at warn. The delta kernel logs expected conditions (a table
/// that does not exist yet) as errors; delta-rs returns its real errors to us anyway, and
/// warns of every concurrent commit it rebases over (routine when tasks share a table; counted
/// as `commit_retries` instead).
const DEFAULT_FILTER: &str = "warn,buoyant_kernel=off,deltalake_core::kernel::transaction=error,raw_append=info,stream_join=info,merge_upsert=info,maintenance=info,delta_source=info,job_runtime=info,kafka_source=info,delta_io=info,lakectl=info";

/// Installs the global subscriber; `RUST_LOG` filters (default `info`, librdkafka quieter).
pub fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = if std::io::stderr().is_terminal() {
        builder.compact().try_init()
    } else {
        builder.json().flatten_event(true).with_current_span(false).try_init()
    };
    // A second init (tests) keeps the first subscriber.
    let _ = result;
}
