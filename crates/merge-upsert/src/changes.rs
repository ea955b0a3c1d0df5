//! A batch's changes reduced to the last one per key: the greatest sequence wins, equal
//! sequences go to the later row in source order.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, StringArray, UInt32Array};
use arrow::compute::{cast, concat_batches, filter_record_batch, take_record_batch};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::error::ArrowError;
use arrow::row::{RowConverter, Rows, SortField};

/// Which columns identify, order and classify a change.
#[derive(Debug, Clone)]
pub struct ChangeColumns {
    /// Key column names.
    pub key: Vec<String>,
    /// Sequence column name.
    pub sequence: String,
    /// Operation column and the values that delete.
    pub operation: Option<(String, Vec<String>)>,
}

/// Order-preserving byte encodings of keys and sequences, shared by everything a batch
/// compares (source rows, target rows, tombstones) so their encodings compare.
pub struct Encoders {
    key: RowConverter,
    sequence: RowConverter,
}

impl Encoders {
    /// Encoders for the key and sequence columns of `schema`.
    pub fn new(schema: &SchemaRef, columns: &ChangeColumns) -> Result<Self, ArrowError> {
        let key = columns
            .key
            .iter()
            .map(|k| Ok(SortField::new(schema.field_with_name(k)?.data_type().clone())))
            .collect::<Result<Vec<_>, ArrowError>>()?;
        let sequence = SortField::new(schema.field_with_name(&columns.sequence)?.data_type().clone());
        Ok(Self { key: RowConverter::new(key)?, sequence: RowConverter::new(vec![sequence])? })
    }

    /// The keys of `rows` (which hold the key columns by name).
    pub fn keys(&self, rows: &RecordBatch, columns: &ChangeColumns) -> Result<Rows, ArrowError> {
        let arrays: Vec<ArrayRef> =
            columns.key.iter().map(|k| Ok(rows.column(rows.schema().index_of(k)?).clone())).collect::<Result<_, ArrowError>>()?;
        self.key.convert_columns(&arrays)
    }

    /// The sequences of `rows`, from its column `name`.
    pub fn sequences(&self, rows: &RecordBatch, name: &str) -> Result<Rows, ArrowError> {
        self.sequence.convert_columns(&[rows.column(rows.schema().index_of(name)?).clone()])
    }
}

/// Rejected rows and each one's reason.
pub type Rejected = (RecordBatch, Vec<String>);

/// Splits a source file's rows into usable ones and rejected ones with their reasons (a null
/// key or sequence cannot be placed).
pub fn split_rejected(rows: &RecordBatch, columns: &ChangeColumns) -> Result<(RecordBatch, Option<Rejected>), ArrowError> {
    let n = rows.num_rows();
    let mut reasons: Vec<Option<String>> = vec![None; n];
    for name in columns.key.iter().chain(std::iter::once(&columns.sequence)) {
        let column = rows.column(rows.schema().index_of(name)?);
        if column.null_count() == 0 {
            continue;
        }
        let what = if *name == columns.sequence { "sequence" } else { "key" };
        for (i, reason) in reasons.iter_mut().enumerate() {
            if column.is_null(i) && reason.is_none() {
                *reason = Some(format!("null {what} column '{name}': the row cannot be merged"));
            }
        }
    }
    if reasons.iter().all(Option::is_none) {
        return Ok((rows.clone(), None));
    }
    let keep: BooleanArray = reasons.iter().map(|r| Some(r.is_none())).collect();
    let reject: BooleanArray = reasons.iter().map(|r| Some(r.is_some())).collect();
    let rejected = filter_record_batch(rows, &reject)?;
    Ok((filter_record_batch(rows, &keep)?, Some((rejected, reasons.into_iter().flatten().collect()))))
}

/// The last change per key of a batch.
#[derive(Debug)]
pub struct Changes {
    /// One row per key, in source order of the winning rows.
    pub rows: RecordBatch,
    /// Whether each row deletes its key.
    pub deletes: Vec<bool>,
}

impl Changes {
    /// Reduces `batches` (in source order, no null keys or sequences) to the last change per
    /// key.
    pub fn latest(schema: &SchemaRef, batches: &[RecordBatch], columns: &ChangeColumns, encoders: &Encoders) -> Result<Self, ArrowError> {
        let all = concat_batches(schema, batches)?;
        let keys = encoders.keys(&all, columns)?;
        let sequences = encoders.sequences(&all, &columns.sequence)?;
        let mut winner: HashMap<arrow::row::Row<'_>, usize> = HashMap::with_capacity(all.num_rows());
        for i in 0..all.num_rows() {
            match winner.entry(keys.row(i)) {
                Entry::Vacant(e) => {
                    e.insert(i);
                }
                Entry::Occupied(mut e) => {
                    if sequences.row(i) >= sequences.row(*e.get()) {
                        e.insert(i);
                    }
                }
            }
        }
        let mut indices: Vec<u32> = winner.into_values().map(|i| i as u32).collect();
        indices.sort_unstable();
        let rows = take_record_batch(&all, &UInt32Array::from(indices))?;
        let deletes = deletes(&rows, columns)?;
        Ok(Self { rows, deletes })
    }

    /// Number of keys changed.
    pub fn len(&self) -> usize {
        self.rows.num_rows()
    }

    /// True when the batch changes nothing.
    pub fn is_empty(&self) -> bool {
        self.rows.num_rows() == 0
    }
}

/// Whether each row's operation is one of the delete values (a null operation upserts).
fn deletes(rows: &RecordBatch, columns: &ChangeColumns) -> Result<Vec<bool>, ArrowError> {
    let Some((column, values)) = &columns.operation else {
        return Ok(vec![false; rows.num_rows()]);
    };
    let ops = cast(rows.column(rows.schema().index_of(column)?), &DataType::Utf8)?;
    let ops = ops
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| ArrowError::CastError(format!("operation column {column} is not text")))?;
    Ok(ops.iter().map(|op| op.is_some_and(|op| values.iter().any(|v| v.eq_ignore_ascii_case(op)))).collect())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{Field, Schema};

    use super::*;

    fn batch(rows: &[(Option<i64>, Option<i64>, &str, &str)]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("seq", DataType::Int64, true),
            Field::new("v", DataType::Utf8, true),
            Field::new("op", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())),
                Arc::new(Int64Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())),
                Arc::new(StringArray::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())),
                Arc::new(StringArray::from(rows.iter().map(|r| r.3).collect::<Vec<_>>())),
            ],
        )
        .unwrap()
    }

    fn columns() -> ChangeColumns {
        ChangeColumns { key: vec!["id".into()], sequence: "seq".into(), operation: Some(("op".into(), vec!["delete".into()])) }
    }

    #[test]
    fn greatest_sequence_wins_and_ties_go_to_the_later_row() {
        let first = batch(&[(Some(1), Some(5), "a", "insert"), (Some(2), Some(1), "b", "insert"), (Some(1), Some(3), "older", "update")]);
        let second =
            batch(&[(Some(2), Some(1), "tie-later", "update"), (Some(3), Some(9), "c", "DELETE"), (Some(1), Some(5), "tie", "update")]);
        let schema = first.schema();
        let encoders = Encoders::new(&schema, &columns()).unwrap();
        let changes = Changes::latest(&schema, &[first, second], &columns(), &encoders).unwrap();
        let ids = changes.rows.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        let values = changes.rows.column(2).as_any().downcast_ref::<StringArray>().unwrap();
        let got: Vec<(i64, &str)> = (0..changes.len()).map(|i| (ids.value(i), values.value(i))).collect();
        assert_eq!(got, vec![(2, "tie-later"), (3, "c"), (1, "tie")]);
        assert_eq!(changes.deletes, vec![false, true, false]);
    }

    #[test]
    fn null_keys_and_sequences_are_rejected_with_a_reason() {
        let rows = batch(&[(Some(1), Some(1), "ok", "insert"), (None, Some(2), "no key", "insert"), (Some(3), None, "no seq", "insert")]);
        let (kept, rejected) = split_rejected(&rows, &columns()).unwrap();
        assert_eq!(kept.num_rows(), 1);
        let (rejected, reasons) = rejected.unwrap();
        assert_eq!(rejected.num_rows(), 2);
        assert_eq!(reasons, vec!["null key column 'id': the row cannot be merged", "null sequence column 'seq': the row cannot be merged"]);
    }
}
