//! Turning one partition's decoded messages into table rows: derived partition columns and
//! source metadata columns.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::buffer::{Buffer, OffsetBuffer};
use arrow::compute::filter_record_batch;
use chrono::{DateTime, Utc};
use delta_io::partition_path_problem;
use json_arrow::{unknown_fields, Decoded, Reject};
use kafka_source::{PartitionChunk, PartitionKey};
use pipeline_config::{MetadataColumn, PartitionSource};

use crate::routes::Route;

/// Table rows of one partition chunk plus the messages rejected on the way.
pub struct ChunkRows {
    /// Rows in the route's table schema.
    pub batch: RecordBatch,
    /// When every partition column is derived from ingestion time, their values (one
    /// partition for the whole chunk), so the writer can skip grouping rows.
    pub constant_partition: Option<Vec<(String, Option<String>)>>,
    /// Rejected messages (index into the chunk).
    pub rejects: RejectList,
    /// For each row of `batch`, the index of its message in the chunk.
    pub messages: Vec<u32>,
}

/// Builds table rows from a chunk's decoded messages; `ingested_at` feeds ingestion-time partitions.
pub fn build(
    route: &Route,
    key: &PartitionKey,
    chunk: &PartitionChunk,
    decoded: Decoded,
    ingested_at: DateTime<Utc>,
) -> Result<ChunkRows, arrow::error::ArrowError> {
    let Decoded { batch, rows, mut rejects } = decoded;
    let n = batch.num_rows();
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    columns.extend(route.metadata.iter().map(|m| metadata_column(*m, key, chunk, &rows)));
    if let Some(known) = &route.rescue {
        columns.push(Arc::new(StringArray::from_iter(rows.iter().map(|&r| unknown_fields(chunk.payload(r as usize), known)))));
    }
    let mut ingestion_values: Vec<(String, Option<String>)> = Vec::new();
    let mut keep: Option<Vec<bool>> = None;
    for p in route.partitions.iter().filter(|p| p.source != PartitionSource::Column) {
        let format = p.format.as_deref().unwrap_or("%Y");
        let col: ArrayRef = match p.source {
            PartitionSource::IngestionTime => {
                let value = ingested_at.format(format).to_string();
                let col = Arc::new(constant_strings(&value, n));
                ingestion_values.push((p.column.clone(), Some(value)));
                col
            }
            PartitionSource::Field => {
                let field = p.field.as_deref().unwrap_or_default();
                let idx = batch.schema().index_of(field)?;
                let ts = batch
                    .column(idx)
                    .as_any()
                    .downcast_ref::<TimestampMicrosecondArray>()
                    .ok_or_else(|| arrow::error::ArrowError::SchemaError(format!("partition field {field} is not a timestamp")))?;
                let keep = keep.get_or_insert_with(|| vec![true; n]);
                let values: StringArray = ts
                    .iter()
                    .enumerate()
                    .map(|(row, v)| match v.and_then(DateTime::from_timestamp_micros) {
                        Some(t) => Some(t.format(format).to_string()),
                        None => {
                            if keep[row] {
                                keep[row] = false;
                                rejects.push(Reject {
                                    index: rows[row] as usize,
                                    reason: format!("event-time partition field '{field}' is null"),
                                });
                            }
                            None
                        }
                    })
                    .collect();
                Arc::new(values)
            }
            PartitionSource::Column => unreachable!("filtered above"),
        };
        columns.push(col);
    }
    reject_unwritable_paths(route, &batch, &rows, &mut keep, &mut rejects);
    if let Some(order) = &route.order {
        columns = order.iter().map(|&i| columns[i].clone()).collect();
    }
    // A route without columns yet (a table still to be inferred) keeps its row count.
    let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(n));
    let mut out = RecordBatch::try_new_with_options(route.schema().clone(), columns, &options)?;
    let mut messages = rows;
    if let Some(keep) = keep {
        if keep.iter().any(|k| !k) {
            messages = messages.into_iter().zip(&keep).filter_map(|(m, k)| k.then_some(m)).collect();
            out = filter_record_batch(&out, &BooleanArray::from(keep))?;
            rejects.sort_by_key(|r| r.index);
        }
    }
    let constant_partition = (!ingestion_values.is_empty() && ingestion_values.len() == route.partitions.len()).then_some(ingestion_values);
    Ok(ChunkRows { batch: out, rejects: RejectList::from(rejects), constant_partition, messages })
}

/// Rejected messages of a chunk, their reasons in one buffer. Built on the decoding thread,
/// so the reasons' own strings are freed where they were allocated: a million rejects freed
/// on the run loop's thread cost more in allocator locks than they took to decode.
#[derive(Debug, Default)]
pub struct RejectList {
    indexes: Vec<u32>,
    reasons: String,
    ends: Vec<usize>,
}

impl RejectList {
    /// Adds message `index` of the chunk with `reason`.
    pub fn push(&mut self, index: u32, reason: &str) {
        self.indexes.push(index);
        self.reasons.push_str(reason);
        self.ends.push(self.reasons.len());
    }

    /// Whether no message was rejected.
    pub fn is_empty(&self) -> bool {
        self.indexes.is_empty()
    }

    /// The rejected messages: index into the chunk and reason, in the order added.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &str)> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        self.indexes.iter().zip(starts.zip(&self.ends)).map(|(&index, (start, &end))| (index as usize, &self.reasons[start..end]))
    }
}

impl From<Vec<Reject>> for RejectList {
    fn from(rejects: Vec<Reject>) -> Self {
        let mut list = Self {
            indexes: Vec::with_capacity(rejects.len()),
            reasons: String::with_capacity(rejects.iter().map(|r| r.reason.len()).sum()),
            ends: Vec::with_capacity(rejects.len()),
        };
        for reject in &rejects {
            list.push(reject.index as u32, &reject.reason);
        }
        list
    }
}

/// `n` rows of `value`, built from two buffers rather than row by row (ingestion-time
/// partition values and topic names fill whole chunks).
fn constant_strings(value: &str, n: usize) -> StringArray {
    let offsets = OffsetBuffer::from_lengths(std::iter::repeat_n(value.len(), n));
    StringArray::new(offsets, Buffer::from_vec(value.as_bytes().repeat(n)), None)
}

/// The source metadata column `m` for the decoded `rows` of a chunk of partition `key`.
fn metadata_column(m: MetadataColumn, key: &PartitionKey, chunk: &PartitionChunk, rows: &[u32]) -> ArrayRef {
    let n = rows.len();
    match m {
        MetadataColumn::Topic | MetadataColumn::Stream => Arc::new(constant_strings(&key.topic, n)),
        MetadataColumn::Partition => Arc::new(Int32Array::from(vec![key.partition; n])),
        MetadataColumn::Offset => Arc::new(Int64Array::from_iter_values(rows.iter().map(|&r| chunk.offsets[r as usize]))),
        MetadataColumn::Timestamp | MetadataColumn::ArrivalTime => Arc::new(
            TimestampMicrosecondArray::from_iter(rows.iter().map(|&r| chunk.timestamps[r as usize].map(|ms| ms * 1000)))
                .with_timezone("UTC"),
        ),
        MetadataColumn::Key | MetadataColumn::PartitionKey => {
            Arc::new(StringArray::from_iter(rows.iter().map(|&r| chunk.key(r as usize).map(|k| String::from_utf8_lossy(k).into_owned()))))
        }
        MetadataColumn::ShardId => {
            let id = kinesis_source::shard_id(key.partition);
            Arc::new(constant_strings(&id, n))
        }
        MetadataColumn::SequenceNumber => {
            Arc::new(StringArray::from_iter(rows.iter().map(|&r| chunk.sequence(r as usize).map(|(s, _)| s))))
        }
        MetadataColumn::RawMessage => Arc::new(BinaryArray::from_iter_values(rows.iter().map(|&r| chunk.payload(r as usize)))),
        MetadataColumn::SubSequenceNumber => {
            Arc::new(Int64Array::from_iter(rows.iter().map(|&r| chunk.sequence(r as usize).map(|(_, sub)| sub as i64))))
        }
    }
}

/// Rejects rows whose plain-column partition values cannot be directory names (too long once
/// encoded, control characters): writing them would fail the batch on every retry.
fn reject_unwritable_paths(route: &Route, batch: &RecordBatch, rows: &[u32], keep: &mut Option<Vec<bool>>, rejects: &mut Vec<Reject>) {
    let columns: Vec<(&str, &StringArray)> = route
        .partitions
        .iter()
        .filter(|p| p.source == PartitionSource::Column)
        .filter_map(|p| {
            let idx = batch.schema().index_of(&p.column).ok()?;
            Some((p.column.as_str(), batch.column(idx).as_any().downcast_ref::<StringArray>()?))
        })
        .collect();
    if columns.is_empty() {
        return;
    }
    let n = batch.num_rows();
    let mut values = Vec::with_capacity(columns.len());
    for row in 0..n {
        values.clear();
        values.extend(columns.iter().map(|(column, array)| (*column, array.is_valid(row).then(|| array.value(row)))));
        if let Some(reason) = partition_path_problem(route.table_key_bytes, &values) {
            let keep = keep.get_or_insert_with(|| vec![true; n]);
            if keep[row] {
                keep[row] = false;
                rejects.push(Reject { index: rows[row] as usize, reason });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_constant_column_holds_its_value_in_every_row() {
        assert_eq!(constant_strings("2026", 3), StringArray::from(vec!["2026"; 3]));
        assert_eq!(constant_strings("", 2), StringArray::from(vec![""; 2]));
        assert_eq!(constant_strings("héllo", 0).len(), 0);
    }

    #[test]
    fn a_reject_list_gives_back_each_index_with_its_own_reason() {
        let rejects = vec![
            Reject { index: 3, reason: "field 'a': x is not a number".into() },
            Reject { index: 5, reason: String::new() },
            Reject { index: 9, reason: "malformed JSON: truncated value".into() },
        ];
        let mut list = RejectList::from(rejects);
        list.push(12, "no field of the message can be a column of table t");
        let got: Vec<(usize, &str)> = list.iter().collect();
        assert_eq!(
            got,
            vec![
                (3, "field 'a': x is not a number"),
                (5, ""),
                (9, "malformed JSON: truncated value"),
                (12, "no field of the message can be a column of table t")
            ]
        );
        assert!(!list.is_empty());
        assert!(RejectList::from(Vec::new()).is_empty());
    }
}
