//! The dead-letter table: every rejected message with its raw bytes, reason and coordinates.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{BinaryArray, BooleanArray, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
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

/// Accumulates rejected messages of one batch.
#[derive(Default)]
pub struct DeadLetters {
    topic: Vec<String>,
    partition: Vec<i32>,
    offset: Vec<i64>,
    kafka_ts: Vec<Option<i64>>,
    key: Vec<Option<Vec<u8>>>,
    payload: Vec<Vec<u8>>,
    error: Vec<String>,
    target: Vec<String>,
}

impl DeadLetters {
    /// Number of rejected messages held.
    pub fn len(&self) -> usize {
        self.offset.len()
    }

    /// The reason of the first rejected message (for one log line per batch).
    pub fn first_reason(&self) -> Option<&str> {
        self.error.first().map(String::as_str)
    }

    /// Adds message `index` of `chunk` with `reason`.
    pub fn push(&mut self, key: &PartitionKey, chunk: &PartitionChunk, index: usize, reason: String, target_table: &str) {
        self.topic.push(key.topic.to_string());
        self.partition.push(key.partition);
        self.offset.push(chunk.offsets[index]);
        self.kafka_ts.push(chunk.timestamps[index].map(|ms| ms * 1000));
        self.key.push(chunk.key(index).map(<[u8]>::to_vec));
        self.payload.push(chunk.payload(index).to_vec());
        self.error.push(reason);
        self.target.push(target_table.to_string());
    }

    /// Adds a marker row for offsets that were skipped (no payload: the messages are gone).
    pub fn push_marker(&mut self, key: &PartitionKey, offset: i64, reason: String, target_table: &str) {
        self.topic.push(key.topic.to_string());
        self.partition.push(key.partition);
        self.offset.push(offset);
        self.kafka_ts.push(None);
        self.key.push(None);
        self.payload.push(Vec::new());
        self.error.push(reason);
        self.target.push(target_table.to_string());
    }

    /// A mask of the rows above their partition's `floor` (the offsets the table already
    /// holds rejects up to).
    pub fn not_held(&self, floor: impl Fn(&PartitionKey) -> Option<i64>) -> BooleanArray {
        let mut floors: HashMap<(&str, i32), Option<i64>> = HashMap::new();
        (0..self.len())
            .map(|i| {
                let f = *floors.entry((self.topic[i].as_str(), self.partition[i])).or_insert_with(|| floor(&PartitionKey::new(&self.topic[i], self.partition[i])));
                Some(f.is_none_or(|f| self.offset[i] > f))
            })
            .collect()
    }

    /// The rows as a record batch.
    pub fn to_batch(&self, job_id: &str, now: DateTime<Utc>) -> Result<RecordBatch, arrow::error::ArrowError> {
        let n = self.len();
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(StringArray::from(vec![job_id; n])),
                Arc::new(StringArray::from_iter_values(&self.topic)),
                Arc::new(Int32Array::from(self.partition.clone())),
                Arc::new(Int64Array::from(self.offset.clone())),
                Arc::new(TimestampMicrosecondArray::from(self.kafka_ts.clone()).with_timezone("UTC")),
                Arc::new(BinaryArray::from_iter(self.key.iter().map(|k| k.as_deref()))),
                Arc::new(BinaryArray::from_iter_values(self.payload.iter())),
                Arc::new(StringArray::from_iter_values(&self.error)),
                Arc::new(StringArray::from_iter_values(&self.target)),
                Arc::new(TimestampMicrosecondArray::from(vec![now.timestamp_micros(); n]).with_timezone("UTC")),
                Arc::new(StringArray::from(vec![now.format("%Y-%m-%d").to_string(); n])),
            ],
        )
    }
}
