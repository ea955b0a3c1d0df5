//! The `main` of a table-to-table job binary: set-up, one run, summary, exit code.

use std::fmt::Display;
use std::future::Future;
use std::time::Instant;

use crate::{exit_failed, ExitCode, ExitStatus, RunStatus, RunSummary, Shutdown, TelemetryArgs};

/// Why a job could not start: what to tell the user and the exit code (78 for a configuration
/// error, 2 for a usage error).
#[derive(Debug)]
pub struct StartError {
    /// The message (it names the key or argument and the fix).
    pub message: String,
    /// The exit code.
    pub code: ExitCode,
}

/// A configuration error (exit 78).
impl From<String> for StartError {
    fn from(message: String) -> Self {
        Self { message, code: ExitCode::Config }
    }
}

/// Runs a job to its exit code. `build` loads and validates the configuration and builds the
/// job (its error exits with its code, 78 for configuration); `start` runs it until done or shutdown
/// (its error exits with its [`ExitStatus`], 1 unless it says otherwise). A run that found
/// nothing to do exits 3. Telemetry starts first (a bad metrics address or health file exits
/// 78 too).
pub fn run_job<J, Fut, E>(
    name: &str,
    telemetry: &TelemetryArgs,
    build: impl FnOnce() -> Result<J, StartError>,
    start: impl FnOnce(J, Shutdown) -> Fut,
) -> !
where
    Fut: Future<Output = Result<RunSummary, E>>,
    E: Display + ExitStatus,
{
    let started = Instant::now();
    if let Err(e) = telemetry.install(name) {
        exit_failed(name, &e.to_string(), ExitCode::Config, started)
    }
    let job = match build() {
        Ok(job) => job,
        Err(e) => exit_failed(name, &e.message, e.code, started),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => exit_failed(name, &format!("tokio runtime: {e}"), ExitCode::Failure, started),
    };
    match runtime.block_on(async move { start(job, Shutdown::install()).await }) {
        Ok(mut summary) => {
            summary.print();
            if summary.status == RunStatus::NoNewData { ExitCode::NoNewData } else { ExitCode::Success }.exit()
        }
        Err(e) => exit_failed(name, &e.to_string(), e.exit_code(), started),
    }
}
