//! Observable events of raw-append: each logs once and updates the run's counters, so logs and
//! the JSON summary never disagree.

use job_runtime::RunSummary;

/// A batch landed in a table.
pub struct BatchCommitted<'a> {
    /// Table name.
    pub table: &'a str,
    /// New table version.
    pub version: u64,
    /// Times the commit was retried after a concurrent commit.
    pub retries: u64,
    /// Rows written.
    pub rows: u64,
    /// Files added.
    pub files: usize,
    /// Source partitions whose progress the commit recorded.
    pub partitions: usize,
    /// Time spent decoding the whole batch (all tables).
    pub decode_ms: u64,
    /// Time spent encoding and uploading this table's files.
    pub write_ms: u64,
    /// Time spent committing to the log.
    pub commit_ms: u64,
}

impl BatchCommitted<'_> {
    /// Logs and counts.
    pub fn emit(&self, summary: &mut RunSummary) {
        tracing::info!(
            stage = "commit",
            table = self.table,
            version = self.version,
            rows = self.rows,
            files = self.files,
            partitions = self.partitions,
            decode_ms = self.decode_ms,
            write_ms = self.write_ms,
            commit_ms = self.commit_ms,
            "batch committed"
        );
        summary.wrote(self.table, self.rows);
        summary.committed(self.table, self.version, self.retries);
    }
}

/// Messages were rejected into the dead-letter table.
pub struct DeadLettered<'a> {
    /// Dead-letter table name.
    pub table: &'a str,
    /// New version of the dead-letter table.
    pub version: u64,
    /// Times the commit was retried after a concurrent commit.
    pub retries: u64,
    /// Messages rejected.
    pub count: u64,
    /// One example reason, for the log line.
    pub example: &'a str,
}

impl DeadLettered<'_> {
    /// Logs (one line per batch, not per message) and counts.
    pub fn emit(&self, summary: &mut RunSummary) {
        tracing::warn!(stage = "dead_letter", error_code = "invalid_message", table = self.table, version = self.version, count = self.count, example = self.example, "messages rejected to the dead-letter table");
        summary.dead_lettered(self.count);
        summary.committed(self.table, self.version, self.retries);
    }
}

/// A batch was read from Kafka.
pub struct BatchRead {
    /// Messages.
    pub messages: u64,
    /// Payload bytes.
    pub bytes: u64,
}

impl BatchRead {
    /// Logs at debug level and counts.
    pub fn emit(&self, summary: &mut RunSummary) {
        tracing::debug!(stage = "read", messages = self.messages, bytes = self.bytes, "batch read");
        summary.read(self.messages, self.bytes);
    }
}
