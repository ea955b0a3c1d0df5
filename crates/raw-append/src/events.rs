//! Observable events of raw-append: each logs once and updates the run's counters, so logs and
//! the JSON summary never disagree.

use delta_io::MovedProgress;
use job_runtime::RunSummary;
use kafka_source::PartitionKey;

use crate::handover::SkippedRange;

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
        tracing::warn!(
            stage = "dead_letter",
            error_code = "invalid_message",
            table = self.table,
            version = self.version,
            count = self.count,
            example = self.example,
            "messages rejected to the dead-letter table"
        );
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

/// A batch's part for one table was dropped: another task committed its partitions since the
/// batch started (a rebalance moved them, or this task was a zombie). They are re-read.
pub struct BatchDropped<'a> {
    /// Table name.
    pub table: &'a str,
    /// Rows dropped (they are read again by whoever owns the partitions).
    pub rows: u64,
    /// The partitions whose progress moved.
    pub moved: &'a [MovedProgress],
}

impl BatchDropped<'_> {
    /// Logs and counts.
    pub fn emit(&self, summary: &mut RunSummary) {
        let moved: Vec<String> = self.moved.iter().map(ToString::to_string).collect();
        tracing::warn!(
            stage = "commit",
            error_code = "progress_moved",
            table = self.table,
            rows = self.rows,
            moved = %moved.join(", "),
            "another task committed these partitions since this batch started: batch dropped uncommitted, partitions re-read from the table"
        );
        summary.batch_dropped();
    }
}

/// Offsets that were gone were skipped (`on_missing_offsets = "skip"`) and recorded.
pub struct OffsetsSkipped<'a> {
    /// The skipped range.
    pub range: &'a SkippedRange,
}

impl OffsetsSkipped<'_> {
    /// Logs and counts.
    pub fn emit(&self, summary: &mut RunSummary) {
        let r = self.range;
        tracing::warn!(stage = "commit", error_code = "offsets_skipped", topic = %r.key.topic, partition = r.key.partition, next = r.next, resumed_at = r.resume_at, skipped = r.skipped(), "skipped offsets recorded in the dead-letter table");
        summary.skipped(r.skipped());
    }
}

/// What reading a source met besides records: throttled reads (backed off and retried) and
/// how far each Kinesis shard's read is behind the stream's tip.
pub struct SourceRead<'a> {
    /// Reads throttled since the previous slice.
    pub throttles: u64,
    /// MillisBehindLatest per shard.
    pub millis_behind: &'a [(PartitionKey, i64)],
}

impl SourceRead<'_> {
    /// Logs throttling (once per slice) and counts.
    pub fn emit(&self, summary: &mut RunSummary) {
        if self.throttles > 0 {
            tracing::warn!(
                stage = "read",
                error_code = "source_throttled",
                throttles = self.throttles,
                "source reads throttled; backed off and retried"
            );
            summary.throttled(self.throttles);
        }
        for (key, millis) in self.millis_behind {
            summary.millis_behind(&key.topic, key.partition, (*millis).max(0) as u64);
        }
    }
}

/// AWS DMS records a committed batch skipped by design (not rows, not dead letters).
pub struct DmsRecordsSkipped<'a> {
    /// Table the source writes.
    pub table: &'a str,
    /// What was skipped.
    pub skipped: crate::dms::Skipped,
}

impl DmsRecordsSkipped<'_> {
    /// Logs (when anything was skipped) and counts into the summary's details.
    pub fn emit(&self, summary: &mut RunSummary) {
        let crate::dms::Skipped { control, without_data } = self.skipped;
        if control + without_data == 0 {
            return;
        }
        tracing::info!(stage = "commit", table = self.table, control, without_data, "DMS control records and records without data skipped");
        summary.count_detail("dms_control_records", control);
        summary.count_detail("dms_records_without_data", without_data);
    }
}

/// A table's schema evolved (`unknown_fields = "add_columns"`): new fields became columns, or
/// could not.
pub struct SchemaEvolved<'a> {
    /// Table name.
    pub table: &'a str,
    /// The version of the metadata commit (None: the table held the columns already, added by
    /// an earlier run or another task).
    pub version: Option<u64>,
    /// Columns the route now writes.
    pub columns: &'a [String],
    /// How many of them the metadata commit added.
    pub added: usize,
    /// Fields that stay out of the table, with the reason (logged once per run and field).
    pub refused: &'a [(String, String)],
}

impl SchemaEvolved<'_> {
    /// Logs and counts the added columns into the summary's details (`columns_added`).
    pub fn emit(&self, summary: &mut RunSummary) {
        if !self.columns.is_empty() {
            tracing::info!(
                stage = "evolve",
                table = self.table,
                version = self.version,
                columns = ?self.columns,
                "new fields became columns; the slice is decoded again with them"
            );
        }
        if let Some(version) = self.version {
            summary.committed(self.table, version, 0);
            summary.count_detail("columns_added", self.added as u64);
        }
        if !self.refused.is_empty() {
            summary.count_detail("fields_not_added", self.refused.len() as u64);
        }
        for (field, reason) in self.refused {
            tracing::warn!(
                stage = "evolve",
                error_code = "field_not_added",
                table = self.table,
                field,
                reason,
                "a new field does not become a column: its values are not stored"
            );
        }
    }
}
