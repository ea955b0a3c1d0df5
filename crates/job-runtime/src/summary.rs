//! The one-line JSON summary printed as the last stdout line of every run.

use std::collections::BTreeMap;

use serde::Serialize;

/// What a run did; counters are filled by the job's events so logs and summary agree.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunSummary {
    /// Job name, e.g. `raw-append`.
    pub job: String,
    /// `once` or `continuous`.
    pub trigger: String,
    /// `ok`, `no_new_data`, `stopped` or `failed`.
    pub status: String,
    /// Messages or rows read.
    pub rows_in: u64,
    /// Rows written per table.
    pub rows_out: BTreeMap<String, u64>,
    /// Rows sent to the dead-letter table.
    pub dead_letters: u64,
    /// Rows later than the watermark (jobs with watermarks).
    pub late_rows: u64,
    /// Payload bytes read.
    pub bytes_in: u64,
    /// Batches committed.
    pub batches: u64,
    /// Last committed version per table.
    pub table_versions: BTreeMap<String, u64>,
    /// Wall time of the run.
    pub duration_ms: u64,
    /// rows_in per second of wall time.
    pub rows_per_sec: f64,
    /// Peak resident memory.
    pub peak_rss_bytes: Option<u64>,
    /// Job-specific figures (e.g. a maintenance operation's metrics).
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub details: serde_json::Map<String, serde_json::Value>,
    /// Error text when status is `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl RunSummary {
    /// A summary for `job` run with `trigger`.
    pub fn new(job: &str, trigger: &str) -> Self {
        Self { job: job.into(), trigger: trigger.into(), status: "ok".into(), ..Default::default() }
    }

    /// Prints the summary as one JSON line on stdout (`duration_ms` set by the job).
    pub fn print(&mut self) {
        let secs = (self.duration_ms as f64 / 1000.0).max(1e-3);
        self.rows_per_sec = (self.rows_in as f64 / secs * 10.0).round() / 10.0;
        self.peak_rss_bytes = crate::peak_rss_bytes();
        match serde_json::to_string(self) {
            Ok(line) => println!("{line}"),
            Err(e) => println!("{{\"status\":\"failed\",\"error\":\"summary: {e}\"}}"),
        }
    }
}

/// Logs the failure, prints a `failed` summary as the last stdout line and exits with `code`.
pub fn exit_failed(job: &str, message: &str, code: crate::ExitCode, started: std::time::Instant) -> ! {
    tracing::error!(error = message, job, "run failed");
    let mut summary = RunSummary::new(job, "");
    summary.status = "failed".into();
    summary.error = Some(message.to_string());
    summary.duration_ms = started.elapsed().as_millis() as u64;
    summary.print();
    code.exit()
}
