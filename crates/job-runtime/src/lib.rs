//! The run contract every job keeps (DESIGN §3): exit codes, the JSON summary line, structured
//! logs, graceful shutdown, named crash points for tests, resource figures, and telemetry
//! (Prometheus, CloudWatch EMF, heartbeat file).

mod crash;
mod exit;
mod harness;
mod instruments;
mod logging;
mod main_loop;
mod progress;
mod resources;
mod shutdown;
mod store_retries;
mod summary;
mod telemetry;

pub use crash::crash_points_from_env;
pub use exit::{ExitCode, ExitStatus};
pub use harness::{run_pipeline_job, BrokerArgs, JobArgs, PipelineJob, RunOptions};
pub use logging::init_logging;
pub use main_loop::{run_job, StartError};
pub use progress::Progress;
pub use resources::{limit_malloc_arenas, lower_cpu_work_priority, peak_rss_bytes};
pub use shutdown::Shutdown;
pub use store_retries::store_retries;
pub use summary::{exit_failed, BatchDurations, RunStatus, RunSummary};
pub use telemetry::{check_health, heartbeat, now_ms, progressed, read_heartbeat, Heartbeat, TelemetryArgs, TelemetryError, Unhealthy};

/// Aborts the process at a named step when the `FAILPOINTS` environment variable enables it,
/// e.g. `FAILPOINTS=raw_append::after_upload=return` or `...=2*off->return` (third hit).
/// Tests use it to crash jobs at exact steps of the commit protocol.
#[macro_export]
macro_rules! crash_point {
    ($name:expr) => {
        $crate::__fail::fail_point!($name, |_| {
            ::tracing::warn!(crash_point = $name, "crash point reached: aborting");
            ::std::process::abort()
        })
    };
}

#[doc(hidden)]
pub use fail as __fail;
