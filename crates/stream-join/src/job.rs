//! The stream-join run: recovery, the batch loop, the commit protocol.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{Schema, SchemaRef};
use chrono::DateTime;
use delta_io::{commit_append, open_or_create, open_table, read_progress, write_files, DeltaIoError, DeltaTable, Transaction};
use delta_source::{Resume, SourceError, SourceLimits, SourcePlan, SourceRange};
use job_runtime::{crash_point, RunSummary, Shutdown};
use pipeline_config::{JoinSide, JoinType, PipelineConfig, StreamJoinConfig, Trigger, WatermarkPolicy};

use crate::checkpoint::{CheckpointStore, Progress};
use crate::operator::{self, state_schema};
use crate::spec::{late_schema, JoinSpec};

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamJoinError {
    /// The configuration has no `[stream_join]` section.
    #[error("stream_join: section missing from the configuration; add [stream_join] (see schemas/pipeline.toml)")]
    NotConfigured,
    /// Delta access failed.
    #[error(transparent)]
    Delta(#[from] DeltaIoError),
    /// A commit did not land.
    #[error("commit: {0}")]
    Commit(#[from] delta_io::CommitError),
    /// Reading a source failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The checkpoint folder could not be used.
    #[error(transparent)]
    Checkpoint(#[from] delta_source::ProgressError),
    /// Building rows failed.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// A source table lacks a configured column.
    #[error("source {table} has no column '{column}' (configured under [stream_join])")]
    MissingColumn {
        /// Table.
        table: String,
        /// Column.
        column: String,
    },
    /// A bug.
    #[error("internal: {0}")]
    Internal(String),
}

/// Every failure exits 1.
impl job_runtime::ExitStatus for StreamJoinError {}

/// A stream-join run over a validated configuration: build it, then `.await` it.
pub struct StreamJoin {
    spec: JoinSpec,
    job: StreamJoinConfig,
    trigger: Trigger,
    shutdown: Shutdown,
}

/// An input's table and the columns the job reads from it.
struct Source {
    table: DeltaTable,
    schema: SchemaRef,
    state_schema: SchemaRef,
}

/// What one batch did.
#[derive(Debug, Default)]
struct BatchOutcome {
    rows_in: u64,
    rows_out: u64,
    late: u64,
    version: Option<u64>,
    /// Commit retries (output and late table).
    retries: u64,
    /// The join state after the batch (what it wrote to the checkpoint).
    state: JoinState,
}

/// Rows of each side that may still match, in state schema.
#[derive(Debug, Default)]
struct JoinState {
    left: Vec<RecordBatch>,
    right: Vec<RecordBatch>,
}

impl StreamJoin {
    /// A run of the configuration's `[stream_join]` job.
    pub fn new(config: &PipelineConfig) -> Result<Self, StreamJoinError> {
        let job = config.stream_join.clone().ok_or(StreamJoinError::NotConfigured)?;
        Ok(Self { spec: JoinSpec::resolve(config, &job), trigger: job.trigger, job, shutdown: Shutdown::default() })
    }

    /// Overrides the configured trigger.
    pub fn with_trigger(mut self, trigger: Trigger) -> Self {
        self.trigger = trigger;
        self
    }

    /// Stops between batches when this flag is raised (SIGTERM/SIGINT in the binary).
    pub fn with_shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = shutdown;
        self
    }

    async fn source(&self, side: JoinSide) -> Result<Source, StreamJoinError> {
        let input = self.spec.input(side);
        let table = open_table(&input.location, &self.spec.storage).await?;
        let full = table.snapshot().map_err(|e| DeltaIoError::Location(format!("{}: {e}", input.location)))?.snapshot().arrow_schema();
        let fields = input
            .columns
            .iter()
            .map(|c| full.field_with_name(c).map(|f| f.clone()).map_err(|_| StreamJoinError::MissingColumn { table: input.name.clone(), column: c.clone() }))
            .collect::<Result<Vec<_>, _>>()?;
        let schema = Arc::new(Schema::new(fields));
        Ok(Source { state_schema: state_schema(&schema, side), table, schema })
    }

    async fn execute(self) -> Result<RunSummary, StreamJoinError> {
        let started = Instant::now();
        let trigger_name = if self.trigger == Trigger::Once { "once" } else { "continuous" };
        let mut summary = RunSummary::new("stream-join", trigger_name);
        let mut output = open_or_create(&self.spec.output).await?;
        let mut late_table = match &self.spec.late {
            Some(spec) => Some(open_or_create(spec).await?),
            None => None,
        };
        let mut left = self.source(JoinSide::Left).await?;
        let mut right = self.source(JoinSide::Right).await?;
        let checkpoint = CheckpointStore::open(&self.spec.checkpoint, &self.spec.storage)?;

        // A pending batch whose output landed is adopted with its state; otherwise it is re-run
        // from the previous batch's state with the source versions it recorded.
        let Resume { mut previous, mut rerun } = checkpoint.resume(read_progress(&output, &self.spec.job_id).await?).await?;

        // Loaded once; later batches of this run continue from the state they computed.
        let mut state = JoinState { left: checkpoint.state(previous.batch, "left").await?, right: checkpoint.state(previous.batch, "right").await? };
        let limits = SourceLimits { max_files: self.job.max_files_per_batch, max_bytes: self.job.max_bytes_per_batch.0, ignore_deletes: self.job.ignore_deletes };
        let mut any = false;
        loop {
            if self.shutdown.requested() {
                summary.status = "stopped".into();
                break;
            }
            let recorded = rerun.take();
            let (lp, rp) = self.plan_next(&mut left, &mut right, recorded.as_ref(), &previous, &limits).await?;
            if lp.is_empty() && rp.is_empty() {
                match self.trigger {
                    Trigger::Once => break,
                    Trigger::Continuous => {
                        self.shutdown.sleep(self.job.interval.0).await;
                        continue;
                    }
                }
            }
            any = true;
            let batch = recorded.as_ref().map_or(previous.batch + 1, |p| p.batch);
            let batch_started = Instant::now();
            let (progress, outcome) =
                self.run_batch(batch, &previous, std::mem::take(&mut state), &lp, &rp, &left, &right, &mut output, late_table.as_mut(), &checkpoint).await?;
            self.record_batch(&mut summary, batch, batch_started, &outcome, &progress, [(&lp, &left), (&rp, &right)]);
            previous = progress;
            state = outcome.state;
        }
        if !any && summary.status == "ok" {
            summary.status = "no_new_data".into();
        }
        summary.duration_ms = started.elapsed().as_millis() as u64;
        Ok(summary)
    }

    /// Loads both sources' newest versions and plans the next batch: the source versions a
    /// pending batch recorded (a re-run), or what is new since the previous batch.
    async fn plan_next(
        &self,
        left: &mut Source,
        right: &mut Source,
        recorded: Option<&Progress>,
        previous: &Progress,
        limits: &SourceLimits,
    ) -> Result<(SourcePlan, SourcePlan), StreamJoinError> {
        left.table.update_state().await.map_err(|e| DeltaIoError::Location(format!("{}: {e}", self.spec.left.location)))?;
        right.table.update_state().await.map_err(|e| DeltaIoError::Location(format!("{}: {e}", self.spec.right.location)))?;
        Ok(match recorded {
            Some(p) => (
                delta_source::plan_recorded(&left.table, p.left, self.job.ignore_deletes).await?,
                delta_source::plan_recorded(&right.table, p.right, self.job.ignore_deletes).await?,
            ),
            None => (
                delta_source::plan(&left.table, previous.left.to, None, limits).await?,
                delta_source::plan(&right.table, previous.right.to, None, limits).await?,
            ),
        })
    }

    /// Counts a committed batch in the summary and logs it.
    fn record_batch(&self, summary: &mut RunSummary, batch: i64, started: Instant, outcome: &BatchOutcome, progress: &Progress, sources: [(&SourcePlan, &Source); 2]) {
        let [(lp, left), (rp, right)] = sources;
        summary.read(outcome.rows_in, lp.bytes() + rp.bytes());
        summary.wrote(&self.spec.output.name, outcome.rows_out);
        summary.late(outcome.late);
        if let Some(v) = outcome.version {
            summary.committed(&self.spec.output.name, v, outcome.retries);
        }
        summary.source_version_lag(&self.spec.left.name, lp.versions_behind(&left.table));
        summary.source_version_lag(&self.spec.right.name, rp.versions_behind(&right.table));
        summary.batch_done(started.elapsed());
        let watermark = progress.watermark.and_then(DateTime::from_timestamp_micros).map(|t| t.to_rfc3339());
        summary.details.insert("state_rows_left".into(), operator::rows(&outcome.state.left).into());
        summary.details.insert("state_rows_right".into(), operator::rows(&outcome.state.right).into());
        summary.details.insert("watermark".into(), watermark.clone().into());
        tracing::info!(
            stage = "commit",
            batch,
            rows_in = outcome.rows_in,
            rows_out = outcome.rows_out,
            late_rows = outcome.late,
            watermark,
            ms = started.elapsed().as_millis() as u64,
            "batch committed"
        );
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_batch(
        &self,
        batch: i64,
        previous: &Progress,
        state: JoinState,
        lp: &SourcePlan,
        rp: &SourcePlan,
        left: &Source,
        right: &Source,
        output: &mut DeltaTable,
        late_table: Option<&mut DeltaTable>,
        checkpoint: &CheckpointStore,
    ) -> Result<(Progress, BatchOutcome), StreamJoinError> {
        let spec = &self.spec;
        let (left_rows, right_rows) = tokio::try_join!(delta_source::read(&left.table, lp, &left.schema), delta_source::read(&right.table, rp, &right.schema))?;
        let watermark = previous.watermark;
        let la = operator::arrivals(&spec.left, JoinSide::Left, batch, left_rows, watermark)?;
        let ra = operator::arrivals(&spec.right, JoinSide::Right, batch, right_rows, watermark)?;
        let JoinState { left: left_state, right: right_state } = state;

        let (joined, matched) = operator::join(spec, &left_state, &la.on_time, &right_state, &ra.on_time, &left.state_schema, &right.state_schema).await?;
        let left_all = operator::merge_left(left_state, la.on_time, &matched)?;
        let right_all: Vec<RecordBatch> = right_state.into_iter().chain(ra.on_time).collect();

        let (left_wm, right_wm, new_watermark) = advance_watermarks(spec, previous, la.max_time, ra.max_time);
        let (left_kept, left_evicted) = operator::evict(left_all, -spec.lower, new_watermark)?;
        let (right_kept, _) = operator::evict(right_all, spec.upper, new_watermark)?;
        let mut rows = joined;
        if spec.join_type == JoinType::LeftOuter {
            rows.extend(operator::unmatched_left(spec, &left_evicted)?);
        }
        let rows_out: u64 = rows.iter().map(|b| b.num_rows() as u64).sum();

        let mut progress = Progress {
            batch,
            left: SourceRange { after: lp.after, to: lp.to },
            right: SourceRange { after: rp.after, to: rp.to },
            left_watermark: left_wm,
            right_watermark: right_wm,
            watermark: new_watermark,
            done: false,
        };
        crash_point!("stream_join::before_state_write");
        // The output's files are written while the state is: only their commit must wait for
        // the state (a crash before it leaves them orphaned, never visible).
        let state_written = async {
            tokio::try_join!(
                checkpoint.put_state(batch, "left", &left.state_schema, &left_kept),
                checkpoint.put_state(batch, "right", &right.state_schema, &right_kept)
            )?;
            checkpoint.put_progress(&progress).await
        };
        let files_written = delta_io::write_derived_partition_runs(output, spec.output.schema.clone(), &spec.output.partition_columns, &spec.partitions, &rows, 128 << 20);
        let (state_written, files_written) = tokio::join!(state_written, files_written);
        state_written?;
        let adds = files_written?;
        crash_point!("stream_join::after_state_write");

        let late_count = operator::rows(&la.late) + operator::rows(&ra.late);
        let mut retries = 0;
        if let Some(late_table) = late_table.filter(|_| late_count > 0) {
            retries += self.commit_late_rows(late_table, batch, watermark, [&la.late, &ra.late], commit_info(batch, lp, rp)).await?;
        }

        let done = commit_append(output, adds, vec![Transaction::new(&spec.job_id, batch)], &spec.job_id, batch, commit_info(batch, lp, rp)).await?;
        crash_point!("stream_join::after_sink_commit");
        progress.done = true;
        checkpoint.put_progress(&progress).await?;
        crash_point!("stream_join::after_done");
        checkpoint.forget_before(batch - 1).await?;
        let state = JoinState { left: left_kept, right: right_kept };
        Ok((progress, BatchOutcome { rows_in: la.rows + ra.rows, rows_out, late: late_count, version: Some(done.version), retries: retries + done.retries, state }))
    }

    /// Appends the batch's late rows (left, then right) to the late-rows table with
    /// `txn(job, batch)`, unless a re-run finds them there; returns the commit's retries.
    async fn commit_late_rows(
        &self,
        late_table: &mut DeltaTable,
        batch: i64,
        watermark: Option<i64>,
        late: [&Vec<RecordBatch>; 2],
        info: std::collections::HashMap<String, serde_json::Value>,
    ) -> Result<u64, StreamJoinError> {
        let spec = &self.spec;
        if read_progress(late_table, &spec.job_id).await?.is_some_and(|v| v >= batch) {
            return Ok(0);
        }
        let mut late_rows = Vec::new();
        for ((side, input), batches) in [("left", &spec.left), ("right", &spec.right)].into_iter().zip(late) {
            for b in batches {
                late_rows.push(late_batch(side, &input.time, b, watermark, batch)?);
            }
        }
        let adds = write_files(late_table, late_schema(), &[], &late_rows, 128 << 20).await?;
        Ok(commit_append(late_table, adds, vec![Transaction::new(&spec.job_id, batch)], &spec.job_id, batch, info).await?.retries)
    }
}

/// Each input's watermark (its latest event time less its delay, never going back) and the
/// job's (per the policy; under `min` it waits until both inputs have reported, and it never
/// goes back either), after a batch whose inputs reached `left_max` / `right_max`.
fn advance_watermarks(spec: &JoinSpec, previous: &Progress, left_max: Option<i64>, right_max: Option<i64>) -> (Option<i64>, Option<i64>, Option<i64>) {
    let advance = |before: Option<i64>, max: Option<i64>, delay: i64| match (before, max.map(|m| m.saturating_sub(delay))) {
        (Some(b), Some(n)) => Some(b.max(n)),
        (b, n) => b.or(n),
    };
    let left = advance(previous.left_watermark, left_max, spec.left.delay);
    let right = advance(previous.right_watermark, right_max, spec.right.delay);
    let candidate = match (spec.policy, left, right) {
        (WatermarkPolicy::Min, Some(l), Some(r)) => Some(l.min(r)),
        (WatermarkPolicy::Max, l, r) => l.max(r),
        (WatermarkPolicy::Min, _, _) => None,
    };
    let job = match (previous.watermark, candidate) {
        (Some(w), Some(c)) => Some(w.max(c)),
        (w, c) => w.or(c),
    };
    (left, right, job)
}

/// Late rows as late-table rows (the row as JSON).
fn late_batch(side: &str, time: &str, b: &RecordBatch, watermark: Option<i64>, batch: i64) -> Result<RecordBatch, StreamJoinError> {
    let mut writer = arrow_json::LineDelimitedWriter::new(Vec::new());
    writer.write(b)?;
    writer.finish()?;
    let text = String::from_utf8(writer.into_inner()).map_err(|e| StreamJoinError::Internal(e.to_string()))?;
    let lines: Vec<&str> = text.lines().collect();
    let n = b.num_rows();
    let event = arrow::compute::cast(b.column(b.schema().index_of(time)?), &crate::spec::timestamp_type())?;
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

fn commit_info(batch: i64, lp: &SourcePlan, rp: &SourcePlan) -> std::collections::HashMap<String, serde_json::Value> {
    std::collections::HashMap::from([(
        "lakehouse.job".to_string(),
        serde_json::json!({ "name": "stream-join", "batch": batch,
            "left": { "after": lp.after, "to": lp.to }, "right": { "after": rp.after, "to": rp.to } }),
    )])
}

impl IntoFuture for StreamJoin {
    type Output = Result<RunSummary, StreamJoinError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.execute())
    }
}
