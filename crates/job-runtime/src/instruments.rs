//! Every metric's name and help text, defined once: the summary counts into them and the
//! Prometheus exporter describes them.

use metrics::{KeyName, SharedString, Unit};

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

/// What a metric records.
#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every metric: name, kind, unit and help text (shown by Prometheus).
const METRICS: &[(&str, Kind, Unit, &str)] = &[
    (ROWS_IN, Kind::Counter, Unit::Count, "Rows (Kafka messages or source rows) read"),
    (BYTES_IN, Kind::Counter, Unit::Bytes, "Payload bytes read"),
    (ROWS_OUT, Kind::Counter, Unit::Count, "Rows written, per table"),
    (DEAD_LETTERS, Kind::Counter, Unit::Count, "Rows rejected to the dead-letter table"),
    (LATE_ROWS, Kind::Counter, Unit::Count, "Rows later than the watermark, dropped"),
    (COMMIT_RETRIES, Kind::Counter, Unit::Count, "Delta commits retried after a concurrent commit, per table"),
    (STORE_RETRIES, Kind::Counter, Unit::Count, "Object-store requests retried after a 5xx, 429, timeout or reset connection"),
    (STATE_BYTES, Kind::Gauge, Unit::Bytes, "Memory held by the job's state after the last batch (join state, tombstones)"),
    (BATCHES, Kind::Counter, Unit::Count, "Batches committed"),
    (BATCH_SECONDS, Kind::Histogram, Unit::Seconds, "Wall time of a committed batch"),
    (LAST_BATCH_TIME, Kind::Gauge, Unit::Seconds, "Unix time of the last committed batch"),
    (TABLE_VERSION, Kind::Gauge, Unit::Count, "Last committed Delta version, per table"),
    (CONSUMER_LAG, Kind::Gauge, Unit::Count, "Messages between a partition's high watermark and what was read"),
    (MILLIS_BEHIND_LATEST, Kind::Gauge, Unit::Milliseconds, "How far a Kinesis shard's last read was behind the stream's tip"),
    (
        SOURCE_THROTTLES,
        Kind::Counter,
        Unit::Count,
        "Source reads throttled (Kinesis ProvisionedThroughputExceeded), backed off and retried",
    ),
    (SOURCE_VERSION_LAG, Kind::Gauge, Unit::Count, "Source table commits not processed yet"),
    (SKIPPED_OFFSETS, Kind::Counter, Unit::Count, "Source offsets that were gone before they were read, skipped by configuration"),
    (
        BATCHES_DROPPED,
        Kind::Counter,
        Unit::Count,
        "Batches dropped uncommitted because another task committed their partitions first (re-read)",
    ),
];

/// Describes every metric to the installed recorder.
pub(crate) fn describe_metrics() {
    metrics::with_recorder(|recorder| {
        for &(name, kind, unit, help) in METRICS {
            let (key, help) = (KeyName::from_const_str(name), SharedString::const_str(help));
            match kind {
                Kind::Counter => recorder.describe_counter(key, Some(unit), help),
                Kind::Gauge => recorder.describe_gauge(key, Some(unit), help),
                Kind::Histogram => recorder.describe_histogram(key, Some(unit), help),
            }
        }
    });
}
