//! One stream-join run: its open tables, join state and progress, and its batches. Per batch:
//! plan each input's new commits (a pending batch's recorded versions first), join, persist
//! state and progress as pending, commit late rows and the output with `txn(job_id, b)`, mark
//! the batch done.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{Schema, SchemaRef};
use delta_io::{open_or_create, open_table, read_progress, AppendCommit, DeltaIoError, DeltaTable, WithCommitParts};
use delta_source::{IncrementalJob, Resume, SourceLimits, SourcePlan};
use job_runtime::{crash_point, RunSummary};
use pipeline_config::{IncrementalOptions, JoinSide, JoinType};

use crate::checkpoint::{CheckpointStore, Progress};
use crate::error::StreamJoinError;
use crate::events::BatchJoined;
use crate::operator::{self, state_schema, Arrivals};
use crate::spec::{late_schema, JoinSpec};
use crate::watermark::{self, Watermarks};

/// An input's table and the columns the job reads from it.
struct Source {
    table: DeltaTable,
    schema: SchemaRef,
    state_schema: SchemaRef,
}

/// Rows of each side that may still match, in state schema.
#[derive(Debug, Default)]
struct JoinState {
    left: Vec<RecordBatch>,
    right: Vec<RecordBatch>,
}

/// What a batch reads: its number and each input's commits.
pub(crate) struct JoinPlan {
    batch: i64,
    /// A pending batch of an earlier run, run again (its record exists).
    rerun: bool,
    left: SourcePlan,
    right: SourcePlan,
}

/// A batch joined in memory, before anything is written.
struct Joined {
    rows: Vec<RecordBatch>,
    late: [Vec<RecordBatch>; 2],
    rows_in: u64,
    state: JoinState,
    /// Memory `state` holds.
    state_bytes: u64,
    watermarks: Watermarks,
}

/// A run's open tables and where it stands.
pub(crate) struct JoinRun<'a> {
    spec: &'a JoinSpec,
    limits: SourceLimits,
    output: DeltaTable,
    late_table: Option<DeltaTable>,
    left: Source,
    right: Source,
    checkpoint: CheckpointStore,
    previous: Progress,
    rerun: Option<Progress>,
    state: JoinState,
    /// `max_state_bytes`.
    max_state_bytes: u64,
}

impl JoinState {
    /// Memory the rows of a state's two sides hold.
    fn bytes_of(left: &[RecordBatch], right: &[RecordBatch]) -> u64 {
        left.iter().chain(right).map(|b| b.get_array_memory_size() as u64).sum()
    }
}

impl<'a> JoinRun<'a> {
    /// Opens the tables and the checkpoint. A pending batch whose output landed is adopted with
    /// its state; otherwise it is re-run from the previous batch's state with the source
    /// versions it recorded. The state is loaded once; later batches continue from theirs.
    pub(crate) async fn open(spec: &'a JoinSpec, options: &IncrementalOptions) -> Result<Self, StreamJoinError> {
        let output = open_or_create(&spec.output).await?;
        let late_table = match &spec.late {
            Some(late) => Some(open_or_create(late).await?),
            None => None,
        };
        let checkpoint = CheckpointStore::open(&spec.checkpoint, &spec.storage)?;
        let Resume { previous, rerun } = checkpoint.resume(read_progress(&output, &spec.job_id).await?).await?;
        let state =
            JoinState { left: checkpoint.state(previous.batch, "left").await?, right: checkpoint.state(previous.batch, "right").await? };
        Ok(Self {
            limits: SourceLimits::from(options),
            left: open_source(spec, JoinSide::Left).await?,
            right: open_source(spec, JoinSide::Right).await?,
            spec,
            output,
            late_table,
            checkpoint,
            previous,
            rerun,
            state,
            max_state_bytes: options.max_state_bytes.0,
        })
    }
}

async fn open_source(spec: &JoinSpec, side: JoinSide) -> Result<Source, StreamJoinError> {
    let input = spec.input(side);
    let table = open_table(&input.location, &spec.storage).await?;
    let full = table.snapshot().map_err(DeltaIoError::delta(&input.location))?.snapshot().arrow_schema();
    let missing = |c: &String| StreamJoinError::MissingColumn { table: input.name.clone(), column: c.clone() };
    let fields = input.columns.iter().map(|c| full.field_with_name(c).cloned().map_err(|_| missing(c))).collect::<Result<Vec<_>, _>>()?;
    let schema = Arc::new(Schema::new(fields));
    Ok(Source { state_schema: state_schema(&schema, side), table, schema })
}

impl IncrementalJob for JoinRun<'_> {
    type Plan = JoinPlan;
    type Error = StreamJoinError;

    /// Loads both sources' newest versions and plans the next batch: the source versions a
    /// pending batch recorded (a re-run), or what is new since the previous batch.
    async fn plan(&mut self) -> Result<Option<JoinPlan>, StreamJoinError> {
        for (source, input) in [(&mut self.left, &self.spec.left), (&mut self.right, &self.spec.right)] {
            source.table.update_state().await.map_err(DeltaIoError::delta(&input.location))?;
        }
        let recorded = self.rerun.take();
        let (left, right) = match &recorded {
            Some(p) => (
                delta_source::plan_recorded(&self.left.table, &p.left, self.limits.ignore_deletes).await?,
                delta_source::plan_recorded(&self.right.table, &p.right, self.limits.ignore_deletes).await?,
            ),
            None => (
                delta_source::plan(&self.left.table, &self.previous.left, &self.limits).await?,
                delta_source::plan(&self.right.table, &self.previous.right, &self.limits).await?,
            ),
        };
        if left.is_empty() && right.is_empty() {
            return Ok(None);
        }
        let batch = recorded.as_ref().map_or(self.previous.batch + 1, |p| p.batch);
        Ok(Some(JoinPlan { batch, rerun: recorded.is_some(), left, right }))
    }

    async fn run_batch(&mut self, plan: JoinPlan, summary: &mut RunSummary) -> Result<(), StreamJoinError> {
        let started = Instant::now();
        let joined = self.join(&plan).await?;
        if joined.state_bytes > self.max_state_bytes {
            return Err(StreamJoinError::StateTooLarge { batch: plan.batch, bytes: joined.state_bytes, cap: self.max_state_bytes });
        }
        let progress = Progress {
            batch: plan.batch,
            left: plan.left.range(),
            right: plan.right.range(),
            left_watermark: joined.watermarks.left,
            right_watermark: joined.watermarks.right,
            watermark: joined.watermarks.job,
            done: false,
        };
        let (version, retries) = self.commit(&plan, progress.clone(), &joined).await?;
        self.record(summary, &plan, &joined, version, retries, started);
        self.previous = Progress { done: true, ..progress };
        self.state = joined.state;
        Ok(())
    }
}

impl JoinRun<'_> {
    /// Reads the batch's rows, separates late ones, joins the rest against the state and each
    /// other, advances the watermarks and evicts state no future row can match (emitting
    /// unmatched left rows for a left-outer join).
    async fn join(&mut self, plan: &JoinPlan) -> Result<Joined, StreamJoinError> {
        let spec = self.spec;
        let (left_rows, right_rows) = tokio::try_join!(
            delta_source::read(&self.left.table, &plan.left, &self.left.schema),
            delta_source::read(&self.right.table, &plan.right, &self.right.schema)
        )?;
        let watermark = self.previous.watermark;
        let la: Arrivals = operator::arrivals(&spec.left, JoinSide::Left, plan.batch, left_rows, watermark)?;
        let ra: Arrivals = operator::arrivals(&spec.right, JoinSide::Right, plan.batch, right_rows, watermark)?;
        let JoinState { left: left_state, right: right_state } = std::mem::take(&mut self.state);
        let (joined, matched) =
            operator::join(spec, &left_state, &la.on_time, &right_state, &ra.on_time, &self.left.state_schema, &self.right.state_schema)
                .await?;
        let left_all = operator::merge_left(left_state, la.on_time, &matched)?;
        let right_all: Vec<RecordBatch> = right_state.into_iter().chain(ra.on_time).collect();

        let before = Watermarks { left: self.previous.left_watermark, right: self.previous.right_watermark, job: watermark };
        let watermarks = watermark::advance(before, spec.policy, [la.max_time, ra.max_time], [spec.left.delay, spec.right.delay]);
        let (left_kept, left_evicted) = operator::evict(left_all, -spec.lower, watermarks.job)?;
        let (right_kept, _) = operator::evict(right_all, spec.upper, watermarks.job)?;
        let mut rows = joined;
        if spec.join_type == JoinType::LeftOuter {
            rows.extend(operator::unmatched_left(spec, &left_evicted)?);
        }
        Ok(Joined {
            rows,
            late: [la.late, ra.late],
            rows_in: la.rows + ra.rows,
            state_bytes: JoinState::bytes_of(&left_kept, &right_kept),
            state: JoinState { left: left_kept, right: right_kept },
            watermarks,
        })
    }

    /// Records the batch as pending (a new batch only if no other run did: one writer per
    /// job), persists the state while the output's files are written (only their commit must
    /// wait for the state: a crash before it leaves them orphaned, never visible), then commits
    /// late rows and the output and marks the batch done. Returns the output's version and the
    /// commits' retries.
    async fn commit(&mut self, plan: &JoinPlan, mut progress: Progress, joined: &Joined) -> Result<(u64, u64), StreamJoinError> {
        let spec = self.spec;
        let batch = plan.batch;
        crash_point!("stream_join::before_state_write");
        let checkpoint = &self.checkpoint;
        checkpoint.record_pending(&progress, plan.rerun).await?;
        let state_written = async {
            tokio::try_join!(
                checkpoint.put_state(batch, "left", &self.left.state_schema, &joined.state.left),
                checkpoint.put_state(batch, "right", &self.right.state_schema, &joined.state.right)
            )
            .map(|_| ())
        };
        let files_written = delta_io::write_derived_partition_runs(
            &self.output,
            spec.output.schema.clone(),
            &spec.output.partition_columns,
            &spec.partitions,
            &joined.rows,
            128 << 20,
        );
        let (state_written, files_written) = tokio::join!(state_written, files_written);
        state_written?;
        let adds = files_written?;
        crash_point!("stream_join::after_state_write");

        let mut retries = 0;
        if let Some(late_table) = self.late_table.as_mut().filter(|_| late_rows(joined) > 0) {
            retries +=
                commit_late_rows(spec, late_table, batch, self.previous.watermark, &joined.late, commit_info(&spec.job_id, plan)).await?;
        }
        let append =
            AppendCommit::new(&spec.job_id, batch).with_adds(adds).with_batch_progress().with_info(commit_info(&spec.job_id, plan));
        let done = append.commit(&mut self.output).await?;
        crash_point!("stream_join::after_sink_commit");
        progress.done = true;
        self.checkpoint.put_progress(&progress).await?;
        crash_point!("stream_join::after_done");
        self.checkpoint.forget_before(batch - 1).await?;
        Ok((done.version, retries + done.retries))
    }

    /// Counts a committed batch in the summary and logs it.
    fn record(&self, summary: &mut RunSummary, plan: &JoinPlan, joined: &Joined, version: u64, retries: u64, started: Instant) {
        let spec = self.spec;
        BatchJoined {
            batch: plan.batch,
            output: &spec.output.name,
            version,
            retries,
            rows_in: joined.rows_in,
            bytes_in: plan.left.bytes() + plan.right.bytes(),
            rows_out: operator::rows(&joined.rows),
            late: late_rows(joined),
            lag: [
                (&spec.left.name, plan.left.versions_behind(&self.left.table)),
                (&spec.right.name, plan.right.versions_behind(&self.right.table)),
            ],
            state_rows: [operator::rows(&joined.state.left), operator::rows(&joined.state.right)],
            state_bytes: joined.state_bytes,
            watermark: joined.watermarks.job,
            ms: started.elapsed().as_millis() as u64,
        }
        .emit(summary);
    }
}

fn late_rows(joined: &Joined) -> u64 {
    joined.late.iter().map(|l| operator::rows(l)).sum()
}

/// Appends the batch's late rows (left, then right) to the late-rows table with
/// `txn(job, batch)`, unless a re-run finds them there; returns the commit's retries.
async fn commit_late_rows(
    spec: &JoinSpec,
    late_table: &mut DeltaTable,
    batch: i64,
    watermark: Option<i64>,
    late: &[Vec<RecordBatch>; 2],
    info: HashMap<String, serde_json::Value>,
) -> Result<u64, StreamJoinError> {
    let mut late_rows = Vec::new();
    for ((side, input), batches) in [("left", &spec.left), ("right", &spec.right)].into_iter().zip(late) {
        for b in batches {
            late_rows.push(late_batch(side, &input.time, b, watermark, batch)?);
        }
    }
    let done = AppendCommit::new(&spec.job_id, batch).with_info(info).commit_once(late_table, &late_rows).await?;
    Ok(done.map_or(0, |done| done.retries))
}

/// Late rows as late-table rows (the row as JSON).
fn late_batch(side: &str, time: &str, b: &RecordBatch, watermark: Option<i64>, batch: i64) -> Result<RecordBatch, StreamJoinError> {
    let mut writer = arrow_json::LineDelimitedWriter::new(Vec::new());
    writer.write(b)?;
    writer.finish()?;
    let text = String::from_utf8(writer.into_inner()).map_err(|e| StreamJoinError::Internal(e.to_string()))?;
    let lines: Vec<&str> = text.lines().collect();
    let n = b.num_rows();
    let event = arrow::compute::cast(b.column(b.schema().index_of(time)?), &pipeline_config::ColumnType::Timestamp.arrow_type())?;
    Ok(RecordBatch::try_new(
        late_schema(),
        vec![
            Arc::new(StringArray::from(vec![side; n])),
            Arc::new(StringArray::from(lines)),
            event,
            Arc::new(TimestampMicrosecondArray::from(vec![watermark; n]).with_timezone("UTC")),
            Arc::new(Int64Array::from(vec![batch; n])),
        ],
    )?)
}

fn commit_info(job_id: &str, plan: &JoinPlan) -> HashMap<String, serde_json::Value> {
    HashMap::from([(
        "lakehouse.job".to_string(),
        serde_json::json!({ "name": "stream-join", "job_id": job_id, "batch": plan.batch,
            "left": plan.left.range(), "right": plan.right.range() }),
    )])
}
