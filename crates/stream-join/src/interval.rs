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

use crate::error::StreamJoinError;

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
    pub fn build(
        right: &[RecordBatch],
        schema: &SchemaRef,
        left_key_types: &[arrow::datatypes::DataType],
        shape: Arc<JoinShape>,
    ) -> Result<Self, StreamJoinError> {
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
        order.sort_unstable_by(|&a, &b| {
            converted.row(a as usize).cmp(&converted.row(b as usize)).then(times.value(a as usize).cmp(&times.value(b as usize)))
        });
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

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{LargeStringArray, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    /// Every pair a nested loop over both sides finds (keys equal, neither null, time in the
    /// interval), as (left row, right row), against the kernel's output on the same rows.
    #[test]
    fn probes_find_exactly_the_pairs_of_a_nested_loop() {
        // Two-column keys, the right side's text key in another string type, null keys and
        // times, duplicates, times on the bounds, a negative lower bound.
        let mut seed = 42u64;
        let mut next = move |n: u64| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        let (lower, upper) = (-5, 10);
        let key = |r: u64| (r != 0).then(|| format!("k{}", r % 4));
        let left: Vec<(Option<String>, i64, Option<i64>)> =
            (0..3000).map(|_| (key(next(9)), next(3) as i64, (next(20) != 0).then(|| next(200) as i64))).collect();
        let right: Vec<(Option<String>, i64, Option<i64>)> =
            (0..500).map(|_| (key(next(9)), next(3) as i64, (next(20) != 0).then(|| next(200) as i64))).collect();

        let left_schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("n", DataType::Int64, false),
            Field::new("t", DataType::Int64, true),
            Field::new("row", DataType::Int64, false),
        ]));
        let right_schema = Arc::new(Schema::new(vec![
            Field::new("t", DataType::Int64, true),
            Field::new("k", DataType::LargeUtf8, true),
            Field::new("n", DataType::Int64, false),
            Field::new("row", DataType::Int64, false),
        ]));
        let output = Arc::new(Schema::new(vec![Field::new("l", DataType::Int64, false), Field::new("r", DataType::Int64, false)]));
        let left_batches: Vec<RecordBatch> = left
            .chunks(700)
            .enumerate()
            .map(|(c, rows)| {
                RecordBatch::try_new(
                    left_schema.clone(),
                    vec![
                        Arc::new(StringArray::from(rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>())),
                        Arc::new(Int64Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())),
                        Arc::new(Int64Array::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())),
                        Arc::new(Int64Array::from_iter_values((0..rows.len() as i64).map(|i| c as i64 * 700 + i))),
                    ],
                )
                .unwrap()
            })
            .collect();
        let right_batches: Vec<RecordBatch> = right
            .chunks(150)
            .enumerate()
            .map(|(c, rows)| {
                RecordBatch::try_new(
                    right_schema.clone(),
                    vec![
                        Arc::new(Int64Array::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())),
                        Arc::new(LargeStringArray::from(rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>())),
                        Arc::new(Int64Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())),
                        Arc::new(Int64Array::from_iter_values((0..rows.len() as i64).map(|i| c as i64 * 150 + i))),
                    ],
                )
                .unwrap()
            })
            .collect();
        let shape = Arc::new(JoinShape {
            left_key: vec![0, 1],
            right_key: vec![1, 2],
            left_time: 2,
            right_time: 0,
            lower,
            upper,
            columns: vec![Column::Left(3), Column::Right(3)],
            output,
        });
        let index = RightIndex::build(&right_batches, &right_schema, &[DataType::Utf8, DataType::Int64], shape).unwrap();
        let found = index.probe(&left_batches).unwrap();

        let mut got: Vec<(i64, i64)> = Vec::new();
        for b in &found.rows {
            let (l, r) = (int64(b.column(0)).unwrap(), int64(b.column(1)).unwrap());
            got.extend((0..b.num_rows()).map(|i| (l.value(i), r.value(i))));
        }
        let mut expected = Vec::new();
        for (i, (lk, ln, lt)) in left.iter().enumerate() {
            for (j, (rk, rn, rt)) in right.iter().enumerate() {
                if let (Some(lk), Some(lt), Some(rk), Some(rt)) = (lk, lt, rk, rt) {
                    if lk == rk && ln == rn && *lt >= rt + lower && *lt <= rt + upper {
                        expected.push((i as i64, j as i64));
                    }
                }
            }
        }
        got.sort_unstable();
        expected.sort_unstable();
        assert!(expected.len() > 1000, "the data joins plenty of pairs: {}", expected.len());
        assert_eq!(got, expected);

        // The matched rows per probed batch are the left rows of the pairs.
        let mut matched: Vec<i64> =
            found.matched.iter().enumerate().flat_map(|(c, rows)| rows.iter().map(move |&r| c as i64 * 700 + r as i64)).collect();
        let mut with_pairs: Vec<i64> = expected.iter().map(|p| p.0).collect();
        with_pairs.dedup();
        matched.sort_unstable();
        assert_eq!(matched, with_pairs);
    }
}
