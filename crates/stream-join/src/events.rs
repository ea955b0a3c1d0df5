//! Observable events of stream-join: each logs once and updates the run's counters, so logs
//! and the JSON summary never disagree.

use chrono::DateTime;
use job_runtime::RunSummary;

/// A joined batch landed in the output.
pub(crate) struct BatchJoined<'a> {
    /// Batch number.
    pub batch: i64,
    /// Output table name.
    pub output: &'a str,
    /// New output version.
    pub version: u64,
    /// The commits' retries (output and late table).
    pub retries: u64,
    /// Rows read from both inputs.
    pub rows_in: u64,
    /// Bytes of the files read.
    pub bytes_in: u64,
    /// Rows written to the output.
    pub rows_out: u64,
    /// Rows later than the watermark.
    pub late: u64,
    /// Each input's name and commits not read yet.
    pub lag: [(&'a str, u64); 2],
    /// Rows kept in the join state, per side.
    pub state_rows: [u64; 2],
    /// Memory the join state holds.
    pub state_bytes: u64,
    /// The job watermark after the batch (microseconds).
    pub watermark: Option<i64>,
    /// Wall time of the batch.
    pub ms: u64,
}

impl BatchJoined<'_> {
    /// Logs and counts.
    pub fn emit(&self, summary: &mut RunSummary) {
        summary.read(self.rows_in, self.bytes_in);
        summary.wrote(self.output, self.rows_out);
        summary.late(self.late);
        summary.committed(self.output, self.version, self.retries);
        for (table, behind) in self.lag {
            summary.source_version_lag(table, behind);
        }
        let watermark = self.watermark.and_then(DateTime::from_timestamp_micros).map(|t| t.to_rfc3339());
        summary.details.insert("state_rows_left".into(), self.state_rows[0].into());
        summary.details.insert("state_rows_right".into(), self.state_rows[1].into());
        summary.state_size(self.state_bytes);
        summary.details.insert("watermark".into(), watermark.clone().into());
        tracing::info!(
            stage = "commit",
            batch = self.batch,
            rows_in = self.rows_in,
            rows_out = self.rows_out,
            late_rows = self.late,
            watermark,
            ms = self.ms,
            "batch committed"
        );
    }
}
