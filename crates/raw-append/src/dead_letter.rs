//! The dead-letter table: every rejected message with its raw bytes, reason and coordinates.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{
    BinaryBuilder, BooleanArray, Int32Array, Int64Array, RecordBatch, StringArray, StringBuilder, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, Utc};
use delta_io::TableSpec;
use kafka_source::{PartitionChunk, PartitionKey};

/// Partition column of the dead-letter table (UTC date the message was rejected).
const DATE_COLUMN: &str = "failed_date";

/// Partition columns of the dead-letter table.
pub fn partition_columns() -> Vec<String> {
    vec![DATE_COLUMN.to_string()]
}

/// Schema of the dead-letter table.
pub fn schema() -> SchemaRef {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("job_id", DataType::Utf8, false),
        Field::new("topic", DataType::Utf8, false),
        Field::new("partition", DataType::Int32, false),
        Field::new("offset", DataType::Int64, false),
        Field::new("kafka_timestamp", ts.clone(), true),
        Field::new("key", DataType::Binary, true),
        Field::new("payload", DataType::Binary, true),
        Field::new("error", DataType::Utf8, false),
        Field::new("target_table", DataType::Utf8, false),
        Field::new("failed_at", ts, false),
        Field::new(DATE_COLUMN, DataType::Utf8, false),
    ]))
}

/// The dead-letter table's spec at `location`.
pub fn table_spec(location: String, storage: BTreeMap<String, String>) -> TableSpec {
    TableSpec {
        location,
        name: "dead_letter".into(),
        schema: schema(),
        partition_columns: partition_columns(),
        // Statistics on the coordinates and reason, not on raw key/payload bytes.
        properties: BTreeMap::from([(
            delta_io::STATS_COLUMNS.to_string(),
            "job_id,topic,partition,offset,kafka_timestamp,error,target_table,failed_at".to_string(),
        )]),
        storage,
    }
}

/// Accumulates rejected messages of one batch, straight into Arrow builders (no allocation
/// per message: a producer sending mostly bad messages must not cost more than a good one).
#[derive(Default)]
pub struct DeadLetters {
    partitions: Vec<PartitionKey>,
    offset: Vec<i64>,
    kafka_ts: Vec<Option<i64>>,
    key: BinaryBuilder,
    payload: BinaryBuilder,
    error: StringBuilder,
    target: StringBuilder,
    first_reason: Option<String>,
}

impl DeadLetters {
    /// Number of rejected messages held.
    pub fn len(&self) -> usize {
        self.offset.len()
    }

    /// The reason of the first rejected message (for one log line per batch).
    pub fn first_reason(&self) -> Option<&str> {
        self.first_reason.as_deref()
    }

    #[allow(clippy::too_many_arguments)] // one dead-letter row's columns
    fn push_row(
        &mut self,
        key: &PartitionKey,
        offset: i64,
        kafka_ts: Option<i64>,
        message_key: Option<&[u8]>,
        payload: &[u8],
        reason: &str,
        target_table: &str,
    ) {
        self.partitions.push(key.clone());
        self.offset.push(offset);
        self.kafka_ts.push(kafka_ts);
        self.key.append_option(message_key);
        self.payload.append_value(payload);
        self.error.append_value(reason);
        self.target.append_value(target_table);
        self.first_reason.get_or_insert_with(|| reason.to_string());
    }

    /// Adds message `index` of `chunk` with `reason`.
    pub fn push(&mut self, key: &PartitionKey, chunk: &PartitionChunk, index: usize, reason: &str, target_table: &str) {
        let kafka_ts = chunk.timestamps[index].map(|ms| ms * 1000);
        self.push_row(key, chunk.offsets[index], kafka_ts, chunk.key(index), chunk.payload(index), reason, target_table);
    }

    /// Adds a marker row for offsets that were skipped (no payload: the messages are gone).
    pub fn push_marker(&mut self, key: &PartitionKey, offset: i64, reason: &str, target_table: &str) {
        self.push_row(key, offset, None, None, &[], reason, target_table);
    }

    /// A mask of the rows above their partition's `floor` (the offsets the table already
    /// holds rejects up to).
    pub fn not_held(&self, floor: impl Fn(&PartitionKey) -> Option<i64>) -> BooleanArray {
        let mut floors: HashMap<&PartitionKey, Option<i64>> = HashMap::new();
        self.partitions
            .iter()
            .zip(&self.offset)
            .map(|(key, offset)| {
                let f = *floors.entry(key).or_insert_with(|| floor(key));
                Some(f.is_none_or(|f| *offset > f))
            })
            .collect()
    }

    /// The rows as a record batch; the byte columns move into it (once per batch: a batch
    /// of mostly bad messages holds hundreds of megabytes of them).
    pub fn take_batch(&mut self, job_id: &str, now: DateTime<Utc>) -> Result<RecordBatch, arrow::error::ArrowError> {
        let n = self.len();
        let date = now.format("%Y-%m-%d").to_string();
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(StringArray::from(vec![job_id; n])),
                Arc::new(StringArray::from_iter_values(self.partitions.iter().map(|k| k.topic.as_ref()))),
                Arc::new(Int32Array::from_iter_values(self.partitions.iter().map(|k| k.partition))),
                Arc::new(Int64Array::from(self.offset.clone())),
                Arc::new(TimestampMicrosecondArray::from(self.kafka_ts.clone()).with_timezone("UTC")),
                Arc::new(self.key.finish()),
                Arc::new(self.payload.finish()),
                Arc::new(self.error.finish()),
                Arc::new(self.target.finish()),
                Arc::new(TimestampMicrosecondArray::from(vec![now.timestamp_micros(); n]).with_timezone("UTC")),
                Arc::new(StringArray::from_iter_values(std::iter::repeat_n(date.as_str(), n))),
            ],
        )
    }
}
