//! One batch of the interval join over in-memory state, the matching done by the
//! [`crate::interval`] kernel. State rows carry `__t` (event time in microseconds), `__id`
//! (unique per row) and, on the left, `__matched` (for left-outer output at eviction).

use std::sync::Arc;

use arrow::array::{new_null_array, ArrayRef, BooleanArray, Int64Array, RecordBatch};
use arrow::compute::{cast, concat_batches, filter_record_batch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use pipeline_config::{JoinSide, JoinType};

use crate::error::StreamJoinError;
use crate::interval::{Column, JoinShape, RightIndex};
use crate::spec::{InputSpec, JoinSpec};

const TIME: &str = "__t";
const ID: &str = "__id";
const MATCHED: &str = "__matched";

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
pub fn arrivals(
    input: &InputSpec,
    side: JoinSide,
    batch: i64,
    rows: Vec<RecordBatch>,
    watermark: Option<i64>,
) -> Result<Arrivals, StreamJoinError> {
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
        let on_time: BooleanArray = times
            .iter()
            .map(|t| Some(matches!((t, watermark), (Some(t), Some(w)) if t > w) || (t.is_some() && watermark.is_none())))
            .collect();
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
/// that needs them), the ids of left rows that matched. The probes run on every core.
pub async fn join(
    spec: &JoinSpec,
    left_state: &[RecordBatch],
    left_new: &[RecordBatch],
    right_state: &[RecordBatch],
    right_new: &[RecordBatch],
    left_schema: &SchemaRef,
    right_schema: &SchemaRef,
) -> Result<(Vec<RecordBatch>, MatchedIds), StreamJoinError> {
    let index = |s: &SchemaRef, c: &str| s.index_of(c).map_err(|_| StreamJoinError::Internal(format!("state column {c} missing")));
    let left_key = spec.left.key.iter().map(|c| index(left_schema, c)).collect::<Result<Vec<_>, _>>()?;
    let columns = spec
        .projection
        .iter()
        .map(|(_, side, c)| {
            Ok(if *side == JoinSide::Left { Column::Left(index(left_schema, c)?) } else { Column::Right(index(right_schema, c)?) })
        })
        .collect::<Result<Vec<_>, StreamJoinError>>()?;
    let key_types: Vec<DataType> = left_key.iter().map(|&i| left_schema.field(i).data_type().clone()).collect();
    let shape = Arc::new(JoinShape {
        right_key: spec.right.key.iter().map(|c| index(right_schema, c)).collect::<Result<Vec<_>, _>>()?,
        left_key,
        left_time: index(left_schema, TIME)?,
        right_time: index(right_schema, TIME)?,
        lower: spec.lower,
        upper: spec.upper,
        columns,
        output: spec.joined_schema(),
    });
    let all_right: Vec<RecordBatch> = right_state.iter().chain(right_new).cloned().collect();
    let mut probes = Vec::new();
    for (right, left) in [(all_right, left_new), (right_new.to_vec(), left_state)] {
        if right.is_empty() || left.is_empty() {
            continue;
        }
        let index = Arc::new(RightIndex::build(&right, right_schema, &key_types, shape.clone())?);
        if !index.is_empty() {
            probes.push((index, left));
        }
    }
    // Contiguous chunks of left rows, a few per core, probed in order.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut tasks = Vec::new();
    for (index, left) in probes {
        let rows: usize = left.iter().map(RecordBatch::num_rows).sum();
        let chunk = rows.div_ceil(cores * 4).clamp(8_192, 131_072);
        let chunks: Vec<RecordBatch> =
            left.iter().flat_map(|b| (0..b.num_rows()).step_by(chunk).map(move |o| b.slice(o, chunk.min(b.num_rows() - o)))).collect();
        for group in chunks.chunks(chunks.len().div_ceil(cores).max(1)) {
            let (index, group) = (index.clone(), group.to_vec());
            tasks.push(tokio::task::spawn_blocking(move || index.probe(&group).map(|m| (group, m))));
        }
    }
    let id_column = index(left_schema, ID)?;
    let mut matched = Vec::new();
    let mut out = Vec::new();
    for task in tasks {
        let (probed, found) = task.await.map_err(|e| StreamJoinError::Internal(format!("join probe: {e}")))??;
        if spec.join_type == JoinType::LeftOuter {
            for (batch, rows) in probed.iter().zip(&found.matched) {
                let ids = batch
                    .column(id_column)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .ok_or_else(|| StreamJoinError::Internal("left ids".into()))?;
                matched.extend(rows.iter().map(|&r| ids.value(r as usize)));
            }
        }
        out.extend(found.rows);
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
            let ids = b
                .column(schema.index_of(ID)?)
                .as_any()
                .downcast_ref::<Int64Array>()
                .ok_or_else(|| StreamJoinError::Internal("ids".into()))?
                .clone();
            let idx = schema.index_of(MATCHED)?;
            let before =
                b.column(idx).as_any().downcast_ref::<BooleanArray>().ok_or_else(|| StreamJoinError::Internal("matched".into()))?.clone();
            let now: BooleanArray = before
                .iter()
                .zip(ids.iter())
                .map(|(m, id)| Some(m.unwrap_or(false) || id.is_some_and(|id| matched.contains(id))))
                .collect();
            let mut columns = b.columns().to_vec();
            columns[idx] = Arc::new(now);
            Ok(RecordBatch::try_new(schema, columns)?)
        })
        .collect()
}

/// Splits state into rows kept and rows evicted: a row goes once `time + offset <= watermark`
/// (left: offset = −lower; right: offset = upper). Nothing is evicted without a watermark.
pub fn evict(
    state: Vec<RecordBatch>,
    offset: i64,
    watermark: Option<i64>,
) -> Result<(Vec<RecordBatch>, Vec<RecordBatch>), StreamJoinError> {
    let Some(w) = watermark else { return Ok((state, Vec::new())) };
    let mut kept = Vec::new();
    let mut evicted = Vec::new();
    for b in state {
        let times = b
            .column(b.schema().index_of(TIME)?)
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| StreamJoinError::Internal("times".into()))?
            .clone();
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
        let matched = b
            .column(b.schema().index_of(MATCHED)?)
            .as_any()
            .downcast_ref::<BooleanArray>()
            .ok_or_else(|| StreamJoinError::Internal("matched".into()))?
            .clone();
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
                        if c.data_type() == field.data_type() {
                            c.clone()
                        } else {
                            cast(c, field.data_type())?
                        }
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
