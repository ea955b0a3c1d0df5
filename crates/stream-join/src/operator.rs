//! One batch of the interval join over in-memory state, with DataFusion's hash join doing the
//! matching. State rows carry `__t` (event time in microseconds), `__id` (unique per row) and,
//! on the left, `__matched` (for left-outer output at eviction).

use std::sync::Arc;

use arrow::array::{new_null_array, ArrayRef, BooleanArray, Int64Array, RecordBatch};
use arrow::compute::{cast, concat_batches, filter_record_batch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use deltalake::datafusion::datasource::MemTable;
use deltalake::datafusion::prelude::SessionContext;
use pipeline_config::{JoinSide, JoinType};

use crate::job::StreamJoinError;
use crate::spec::{InputSpec, JoinSpec};

const TIME: &str = "__t";
const ID: &str = "__id";
const MATCHED: &str = "__matched";
const LEFT_ID: &str = "__lid";

/// The state schema of a side: its kept columns plus the bookkeeping columns.
pub fn state_schema(source: &SchemaRef, side: JoinSide) -> SchemaRef {
    let mut fields: Vec<Field> = source.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(TIME, DataType::Int64, true));
    fields.push(Field::new(ID, DataType::Int64, false));
    if side == JoinSide::Left {
        fields.push(Field::new(MATCHED, DataType::Boolean, false));
    }
    Arc::new(Schema::new(fields))
}

/// New rows of one side, split into on-time rows (in state schema) and late ones.
pub struct Arrivals {
    /// Rows after the watermark, ready to join.
    pub on_time: Vec<RecordBatch>,
    /// Rows at or before the watermark (or without event time), in source schema.
    pub late: Vec<RecordBatch>,
    /// Latest event time among all new rows.
    pub max_time: Option<i64>,
    /// Rows read.
    pub rows: u64,
}

/// Tags new rows with time and id and separates late ones (`time <= watermark`).
pub fn arrivals(input: &InputSpec, side: JoinSide, batch: i64, rows: Vec<RecordBatch>, watermark: Option<i64>) -> Result<Arrivals, StreamJoinError> {
    let mut out = Arrivals { on_time: Vec::new(), late: Vec::new(), max_time: None, rows: 0 };
    let mut next_row: i64 = 0;
    for b in rows {
        let n = b.num_rows();
        out.rows += n as u64;
        let time = cast(b.column(b.schema().index_of(&input.time)?), &DataType::Int64)?;
        let times = time.as_any().downcast_ref::<Int64Array>().ok_or_else(|| StreamJoinError::Internal("event time cast".into()))?;
        if let Some(m) = arrow::compute::max(times) {
            out.max_time = Some(out.max_time.map_or(m, |x| x.max(m)));
        }
        let on_time: BooleanArray = times.iter().map(|t| Some(matches!((t, watermark), (Some(t), Some(w)) if t > w) || (t.is_some() && watermark.is_none()))).collect();
        let ids = Int64Array::from_iter_values((0..n as i64).map(|i| (batch << 32) | (next_row + i)));
        next_row += n as i64;
        let mut columns: Vec<ArrayRef> = b.columns().to_vec();
        columns.push(time.clone());
        columns.push(Arc::new(ids));
        if side == JoinSide::Left {
            columns.push(Arc::new(BooleanArray::from(vec![false; n])));
        }
        let tagged = RecordBatch::try_new(state_schema(&b.schema(), side), columns)?;
        let kept = filter_record_batch(&tagged, &on_time)?;
        if kept.num_rows() > 0 {
            out.on_time.push(kept);
        }
        let late = filter_record_batch(&b, &arrow::compute::not(&on_time)?)?;
        if late.num_rows() > 0 {
            out.late.push(late);
        }
    }
    Ok(out)
}

/// Pairs formed in this batch: new left rows with all right rows, and left state with new
/// right rows. Returns the joined rows (joined schema) and, for a left-outer join (the only one
/// that needs them), the ids of left rows that matched.
pub async fn join(
    spec: &JoinSpec,
    left_state: &[RecordBatch],
    left_new: &[RecordBatch],
    right_state: &[RecordBatch],
    right_new: &[RecordBatch],
    left_schema: &SchemaRef,
    right_schema: &SchemaRef,
) -> Result<(Vec<RecordBatch>, MatchedIds), StreamJoinError> {
    if (left_new.is_empty() || (right_state.is_empty() && right_new.is_empty())) && (left_state.is_empty() || right_new.is_empty()) {
        return Ok((Vec::new(), MatchedIds::default()));
    }
    let ctx = SessionContext::new();
    for (name, schema, rows) in [("lstate", left_schema, left_state), ("lnew", left_schema, left_new), ("rstate", right_schema, right_state), ("rnew", right_schema, right_new)] {
        let table = MemTable::try_new(schema.clone(), vec![rows.to_vec()])?;
        ctx.register_table(name, Arc::new(table))?;
    }
    let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let mut select = vec![format!("l.{} AS {}", q(ID), q(LEFT_ID))];
    for (name, side, col) in &spec.projection {
        let alias = if *side == JoinSide::Left { "l" } else { "r" };
        select.push(format!("{alias}.{} AS {}", q(col), q(name)));
    }
    let mut on: Vec<String> = spec.left.key.iter().zip(&spec.right.key).map(|(l, r)| format!("l.{} = r.{}", q(l), q(r))).collect();
    on.push(format!("l.{t} >= r.{t} + ({})", spec.lower, t = q(TIME)));
    on.push(format!("l.{t} <= r.{t} + ({})", spec.upper, t = q(TIME)));
    let (select, on) = (select.join(", "), on.join(" AND "));
    let sql = format!(
        "SELECT {select} FROM lnew l JOIN (SELECT * FROM rstate UNION ALL SELECT * FROM rnew) r ON {on} \
         UNION ALL SELECT {select} FROM lstate l JOIN rnew r ON {on}"
    );
    let batches = ctx.sql(&sql).await?.collect().await?;
    let joined_schema = spec.joined_schema();
    let mut matched = Vec::new();
    let mut out = Vec::new();
    for b in batches {
        if b.num_rows() == 0 {
            continue;
        }
        if spec.join_type == JoinType::LeftOuter {
            let ids = b.column(0).as_any().downcast_ref::<Int64Array>().ok_or_else(|| StreamJoinError::Internal("left ids".into()))?;
            // A left row's matches are mostly adjacent: skip repeats before sorting.
            for id in ids.values() {
                if matched.last() != Some(id) {
                    matched.push(*id);
                }
            }
        }
        out.push(project(&b, &joined_schema)?);
    }
    matched.sort_unstable();
    matched.dedup();
    Ok((out, MatchedIds(matched)))
}

/// Ids of the left rows that matched in a batch, sorted.
#[derive(Debug, Default)]
pub struct MatchedIds(Vec<i64>);

impl MatchedIds {
    fn contains(&self, id: i64) -> bool {
        self.0.binary_search(&id).is_ok()
    }
}

/// Columns of `b` by name, cast to `schema`'s types.
fn project(b: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, StreamJoinError> {
    let columns = schema
        .fields()
        .iter()
        .map(|f| {
            let col = b.column_by_name(f.name()).ok_or_else(|| StreamJoinError::Internal(format!("joined column {} missing", f.name())))?;
            Ok(if col.data_type() == f.data_type() { col.clone() } else { cast(col, f.data_type())? })
        })
        .collect::<Result<Vec<_>, StreamJoinError>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// Left state plus new left rows with `__matched` updated.
pub fn merge_left(state: Vec<RecordBatch>, new: Vec<RecordBatch>, matched: &MatchedIds) -> Result<Vec<RecordBatch>, StreamJoinError> {
    if matched.0.is_empty() {
        return Ok(state.into_iter().chain(new).collect());
    }
    state
        .into_iter()
        .chain(new)
        .map(|b| {
            let schema = b.schema();
            let ids = b.column(schema.index_of(ID)?).as_any().downcast_ref::<Int64Array>().ok_or_else(|| StreamJoinError::Internal("ids".into()))?.clone();
            let idx = schema.index_of(MATCHED)?;
            let before = b.column(idx).as_any().downcast_ref::<BooleanArray>().ok_or_else(|| StreamJoinError::Internal("matched".into()))?.clone();
            let now: BooleanArray = before.iter().zip(ids.iter()).map(|(m, id)| Some(m.unwrap_or(false) || id.is_some_and(|id| matched.contains(id)))).collect();
            let mut columns = b.columns().to_vec();
            columns[idx] = Arc::new(now);
            Ok(RecordBatch::try_new(schema, columns)?)
        })
        .collect()
}

/// Splits state into rows kept and rows evicted: a row goes once `time + offset <= watermark`
/// (left: offset = −lower; right: offset = upper). Nothing is evicted without a watermark.
pub fn evict(state: Vec<RecordBatch>, offset: i64, watermark: Option<i64>) -> Result<(Vec<RecordBatch>, Vec<RecordBatch>), StreamJoinError> {
    let Some(w) = watermark else { return Ok((state, Vec::new())) };
    let mut kept = Vec::new();
    let mut evicted = Vec::new();
    for b in state {
        let times = b.column(b.schema().index_of(TIME)?).as_any().downcast_ref::<Int64Array>().ok_or_else(|| StreamJoinError::Internal("times".into()))?.clone();
        let keep: BooleanArray = times.iter().map(|t| Some(t.is_some_and(|t| t.saturating_add(offset) > w))).collect();
        let k = filter_record_batch(&b, &keep)?;
        let e = filter_record_batch(&b, &arrow::compute::not(&keep)?)?;
        if k.num_rows() > 0 {
            kept.push(k);
        }
        if e.num_rows() > 0 {
            evicted.push(e);
        }
    }
    // Many small batches accumulate over a long run: keep state compact.
    if kept.len() > 64 {
        let schema = kept[0].schema();
        kept = vec![concat_batches(&schema, &kept)?];
    }
    Ok((kept, evicted))
}

/// Left rows evicted without a match, as output rows with the right side's columns null.
pub fn unmatched_left(spec: &JoinSpec, evicted: &[RecordBatch]) -> Result<Vec<RecordBatch>, StreamJoinError> {
    let schema = spec.joined_schema();
    let mut out = Vec::new();
    for b in evicted {
        let matched = b.column(b.schema().index_of(MATCHED)?).as_any().downcast_ref::<BooleanArray>().ok_or_else(|| StreamJoinError::Internal("matched".into()))?.clone();
        let unmatched = arrow::compute::not(&matched)?;
        let rows = filter_record_batch(b, &unmatched)?;
        if rows.num_rows() == 0 {
            continue;
        }
        let columns = spec
            .projection
            .iter()
            .zip(schema.fields())
            .map(|((_, side, col), field)| {
                Ok(match side {
                    JoinSide::Left => {
                        let c = rows.column(rows.schema().index_of(col)?);
                        if c.data_type() == field.data_type() { c.clone() } else { cast(c, field.data_type())? }
                    }
                    JoinSide::Right => new_null_array(field.data_type(), rows.num_rows()),
                })
            })
            .collect::<Result<Vec<ArrayRef>, StreamJoinError>>()?;
        out.push(RecordBatch::try_new(schema.clone(), columns)?);
    }
    Ok(out)
}

/// Rows held by state batches.
pub fn rows(batches: &[RecordBatch]) -> u64 {
    batches.iter().map(|b| b.num_rows() as u64).sum()
}
