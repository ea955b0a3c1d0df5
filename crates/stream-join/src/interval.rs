//! The interval-join kernel: right rows indexed by key and sorted by event time, left rows
//! probed against that index. A probe finds its matches by binary search on the time bounds
//! instead of testing every right row of its key (a general hash join with the interval as a
//! residual filter tests, and copies, several times more candidate pairs than it emits).

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int64Array, RecordBatch, UInt32Array};
use arrow::compute::{cast, concat_batches, take};
use arrow::datatypes::SchemaRef;
use arrow::row::{RowConverter, SortField};

use crate::job::StreamJoinError;

/// Which side an output column comes from, and its column index there.
#[derive(Debug, Clone, Copy)]
pub enum Column {
    /// A column of the probed (left) rows.
    Left(usize),
    /// A column of the indexed (right) rows.
    Right(usize),
}

/// How to join: key columns of each side, event-time columns (microseconds, `Int64`), the
/// interval `left.t BETWEEN right.t + lower AND right.t + upper`, and the output columns.
#[derive(Debug, Clone)]
pub struct JoinShape {
    /// Left key column indices.
    pub left_key: Vec<usize>,
    /// Right key column indices (same count and order as the left's).
    pub right_key: Vec<usize>,
    /// Left event-time column index.
    pub left_time: usize,
    /// Right event-time column index.
    pub right_time: usize,
    /// Lower interval bound in microseconds.
    pub lower: i64,
    /// Upper interval bound in microseconds.
    pub upper: i64,
    /// Output columns, in `output` order.
    pub columns: Vec<Column>,
    /// Output schema.
    pub output: SchemaRef,
}

/// Right rows by key, each key's rows in event-time order.
pub struct RightIndex {
    rows: RecordBatch,
    converter: RowConverter,
    /// Key (row format) → its range in `times`/`positions`.
    groups: HashMap<Box<[u8]>, Range<usize>>,
    /// Event times, sorted within each group.
    times: Vec<i64>,
    /// Row of `rows` for each entry of `times`.
    positions: Vec<u32>,
    shape: Arc<JoinShape>,
}

/// The matches of some left rows.
pub struct Matches {
    /// Joined rows in the output schema.
    pub rows: Vec<RecordBatch>,
    /// Left rows (index into the probed batch) with at least one match, ascending, per batch.
    pub matched: Vec<Vec<u32>>,
}

impl RightIndex {
    /// Indexes `right` (rows with a null key or time never match and are left out). Left keys
    /// are compared in the left key columns' types (`left_key_types`); right keys are cast.
    pub fn build(right: &[RecordBatch], schema: &SchemaRef, left_key_types: &[arrow::datatypes::DataType], shape: Arc<JoinShape>) -> Result<Self, StreamJoinError> {
        let rows = concat_batches(schema, right)?;
        let converter = RowConverter::new(left_key_types.iter().map(|t| SortField::new(t.clone())).collect())?;
        let keys = shape
            .right_key
            .iter()
            .zip(left_key_types)
            .map(|(&i, t)| Ok(if rows.column(i).data_type() == t { rows.column(i).clone() } else { cast(rows.column(i), t)? }))
            .collect::<Result<Vec<ArrayRef>, StreamJoinError>>()?;
        let converted = converter.convert_columns(&keys)?;
        let times = int64(rows.column(shape.right_time))?;
        let valid = |i: usize| !times.is_null(i) && keys.iter().all(|k| !k.is_null(i));
        let mut order: Vec<u32> = (0..rows.num_rows() as u32).filter(|&i| valid(i as usize)).collect();
        order.sort_unstable_by(|&a, &b| converted.row(a as usize).cmp(&converted.row(b as usize)).then(times.value(a as usize).cmp(&times.value(b as usize))));
        let mut groups = HashMap::new();
        let mut start = 0;
        for end in 1..=order.len() {
            if end == order.len() || converted.row(order[end] as usize) != converted.row(order[start] as usize) {
                groups.insert(converted.row(order[start] as usize).as_ref().into(), start..end);
                start = end;
            }
        }
        let sorted_times = order.iter().map(|&i| times.value(i as usize)).collect();
        Ok(Self { rows, converter, groups, times: sorted_times, positions: order, shape })
    }

    /// Whether no right row can match.
    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    /// Joins `left` batches (each probed in full) against the index.
    pub fn probe(&self, left: &[RecordBatch]) -> Result<Matches, StreamJoinError> {
        let shape = &self.shape;
        let mut out = Matches { rows: Vec::new(), matched: Vec::new() };
        for batch in left {
            let keys: Vec<ArrayRef> = shape.left_key.iter().map(|&i| batch.column(i).clone()).collect();
            let converted = self.converter.convert_columns(&keys)?;
            let times = int64(batch.column(shape.left_time))?;
            let (mut left_rows, mut right_rows, mut matched) = (Vec::new(), Vec::new(), Vec::new());
            for i in 0..batch.num_rows() {
                if times.is_null(i) || keys.iter().any(|k| k.is_null(i)) {
                    continue;
                }
                let Some(group) = self.groups.get(converted.row(i).as_ref()) else { continue };
                // right.t + lower <= t <= right.t + upper  ⇔  t − upper <= right.t <= t − lower
                let t = times.value(i);
                let times = &self.times[group.clone()];
                let from = times.partition_point(|&r| r < t.saturating_sub(shape.upper));
                let to = times.partition_point(|&r| r <= t.saturating_sub(shape.lower));
                if from < to {
                    matched.push(i as u32);
                    for position in &self.positions[group.start + from..group.start + to] {
                        left_rows.push(i as u32);
                        right_rows.push(*position);
                    }
                }
            }
            out.matched.push(matched);
            if left_rows.is_empty() {
                continue;
            }
            let (left_rows, right_rows) = (UInt32Array::from(left_rows), UInt32Array::from(right_rows));
            let columns = shape
                .columns
                .iter()
                .zip(shape.output.fields())
                .map(|(column, field)| {
                    let taken = match column {
                        Column::Left(c) => take(batch.column(*c), &left_rows, None)?,
                        Column::Right(c) => take(self.rows.column(*c), &right_rows, None)?,
                    };
                    Ok(if taken.data_type() == field.data_type() { taken } else { cast(&taken, field.data_type())? })
                })
                .collect::<Result<Vec<ArrayRef>, StreamJoinError>>()?;
            out.rows.push(RecordBatch::try_new(shape.output.clone(), columns)?);
        }
        Ok(out)
    }
}

fn int64(column: &ArrayRef) -> Result<&Int64Array, StreamJoinError> {
    column.as_any().downcast_ref::<Int64Array>().ok_or_else(|| StreamJoinError::Internal("event time column is not Int64".into()))
}
