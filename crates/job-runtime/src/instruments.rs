//! Every metric's name and help text, defined once: the summary counts into them and the
//! Prometheus exporter describes them.

pub(crate) const ROWS_IN: &str = "lakehouse_rows_in_total";
pub(crate) const BYTES_IN: &str = "lakehouse_bytes_in_total";
pub(crate) const ROWS_OUT: &str = "lakehouse_rows_out_total";
pub(crate) const DEAD_LETTERS: &str = "lakehouse_dead_letters_total";
pub(crate) const LATE_ROWS: &str = "lakehouse_late_rows_total";
pub(crate) const COMMIT_RETRIES: &str = "lakehouse_commit_retries_total";
pub(crate) const STORE_RETRIES: &str = "lakehouse_store_retries_total";
pub(crate) const STATE_BYTES: &str = "lakehouse_state_bytes";
pub(crate) const BATCHES: &str = "lakehouse_batches_total";
pub(crate) const BATCH_SECONDS: &str = "lakehouse_batch_duration_seconds";
pub(crate) const LAST_BATCH_TIME: &str = "lakehouse_last_batch_timestamp_seconds";
pub(crate) const TABLE_VERSION: &str = "lakehouse_table_version";
pub(crate) const CONSUMER_LAG: &str = "lakehouse_consumer_lag_messages";
pub(crate) const MILLIS_BEHIND_LATEST: &str = "lakehouse_kinesis_millis_behind_latest";
pub(crate) const SOURCE_THROTTLES: &str = "lakehouse_source_throttles_total";
pub(crate) const SOURCE_VERSION_LAG: &str = "lakehouse_source_version_lag";
pub(crate) const SKIPPED_OFFSETS: &str = "lakehouse_skipped_offsets_total";
pub(crate) const BATCHES_DROPPED: &str = "lakehouse_batches_dropped_total";

/// Help text of every metric (shown by Prometheus).
pub(crate) fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(ROWS_IN, Unit::Count, "Rows (Kafka messages or source rows) read");
    describe_counter!(BYTES_IN, Unit::Bytes, "Payload bytes read");
    describe_counter!(ROWS_OUT, Unit::Count, "Rows written, per table");
    describe_counter!(DEAD_LETTERS, Unit::Count, "Rows rejected to the dead-letter table");
    describe_counter!(LATE_ROWS, Unit::Count, "Rows later than the watermark, dropped");
    describe_counter!(COMMIT_RETRIES, Unit::Count, "Delta commits retried after a concurrent commit, per table");
    describe_counter!(STORE_RETRIES, Unit::Count, "Object-store requests retried after a 5xx, 429, timeout or reset connection");
    describe_gauge!(STATE_BYTES, Unit::Bytes, "Memory held by the job's state after the last batch (join state, tombstones)");
    describe_counter!(BATCHES, Unit::Count, "Batches committed");
    describe_histogram!(BATCH_SECONDS, Unit::Seconds, "Wall time of a committed batch");
    describe_gauge!(LAST_BATCH_TIME, Unit::Seconds, "Unix time of the last committed batch");
    describe_gauge!(TABLE_VERSION, Unit::Count, "Last committed Delta version, per table");
    describe_gauge!(CONSUMER_LAG, Unit::Count, "Messages between a partition's high watermark and what was read");
    describe_gauge!(MILLIS_BEHIND_LATEST, Unit::Milliseconds, "How far a Kinesis shard's last read was behind the stream's tip");
    describe_counter!(
        SOURCE_THROTTLES,
        Unit::Count,
        "Source reads throttled (Kinesis ProvisionedThroughputExceeded), backed off and retried"
    );
    describe_gauge!(SOURCE_VERSION_LAG, Unit::Count, "Source table commits not processed yet");
    describe_counter!(SKIPPED_OFFSETS, Unit::Count, "Source offsets that were gone before they were read, skipped by configuration");
    describe_counter!(
        BATCHES_DROPPED,
        Unit::Count,
        "Batches dropped uncommitted because another task committed their partitions first (re-read)"
    );
}
