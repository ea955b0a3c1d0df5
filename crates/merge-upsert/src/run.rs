//! One merge-upsert run: its open tables, tombstones and progress, and its batches.
//!
//! Batch b: record the planned source versions as pending → dead letters with `txn(job, b)` →
//! tombstones with `txn(job, b)` → the target's MERGE commit with `txn(job, b)` → mark done.
//! Each side commit is skipped when its table already holds `txn >= b`, so a re-run of b (after
//! a crash before the target commit) reads the same versions and lands each part once. A
//! re-run sees b's own tombstones, which changes nothing: a key's last change in b is either a
//! delete or an upsert, never both.

use std::collections::HashMap;

use arrow::array::RecordBatch;
use arrow::datatypes::{Field, Schema, SchemaRef};
use delta_io::{
    open_or_create, open_table, read_progress, write_files, AppendCommit, CommitError, CommitOutcome, DeltaIoError, DeltaTable,
    MergeCommit, Overlap, Transaction, WithCommitParts,
};
use delta_source::{
    CheckpointBehind, CreateError, IncrementalJob, ProgressLog, Resume, ResumeError, SourceLimits, SourcePlan, SourceRange, TableJobError,
};
use futures::TryStreamExt;
use job_runtime::{crash_point, RunSummary};
use pipeline_config::{IncrementalOptions, SchemaEvolution};
use serde::{Deserialize, Serialize};

use crate::changes::{split_rejected, ChangeColumns, Changes, Encoders};
use crate::dead_letter::DeadLetters;
use crate::error::MergeUpsertError;
use crate::events::{self, BatchMerged};
use crate::merge::{self, MergeMetrics};
use crate::spec::{MergeSpec, TargetLayout};
use crate::tombstones::{self, Tombstones};

/// Re-plans of one batch's merge after concurrent commits changed what it read.
const MAX_REPLANS: u64 = 5;

/// Where a batch stands in the checkpoint folder.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Progress {
    /// Batch number (1, 2, ...).
    batch: i64,
    /// Source versions it reads.
    source: SourceRange,
    /// The target commit of this batch landed.
    done: bool,
}

delta_source::impl_batch_record!(Progress);

/// The tables a run writes.
struct Sinks {
    target: DeltaTable,
    dead_letter: DeltaTable,
    tombstones: DeltaTable,
    tombstone_schema: SchemaRef,
}

/// What a batch reads: its number and the source's commits.
pub(crate) struct MergePlan {
    batch: i64,
    /// A pending batch of an earlier run, run again (its record exists).
    rerun: bool,
    source: SourcePlan,
}

/// A run's open tables and where it stands.
pub(crate) struct MergeRun<'a> {
    spec: &'a MergeSpec,
    limits: SourceLimits,
    source: DeltaTable,
    sinks: Sinks,
    log: ProgressLog,
    previous: Progress,
    rerun: Option<Progress>,
    columns: ChangeColumns,
    encoders: Encoders,
    tombstones: Tombstones,
    totals: MergeMetrics,
    /// `max_state_bytes`.
    max_state_bytes: u64,
}

impl<'a> MergeRun<'a> {
    /// Opens the tables and the progress log and loads the tombstones (read once, then kept
    /// current). Keys and sequences keep the target's types.
    pub(crate) async fn open(spec: &'a MergeSpec, options: &IncrementalOptions) -> Result<Self, MergeUpsertError> {
        let sinks = open_sinks(spec).await?;
        let source = open_table(&spec.source_location, &spec.storage).await?;
        let log = ProgressLog::open(&spec.checkpoint, &spec.storage)?;
        let Resume { previous, rerun } = match log.resume::<Progress>(read_progress(&sinks.target, &spec.job_id).await?).await {
            Ok(resume) => resume,
            Err(ResumeError::Behind(behind)) => {
                Resume { previous: rebuild_progress(&sinks.target, spec, &log, behind).await?, rerun: None }
            }
            Err(ResumeError::Progress(e)) => return Err(e.into()),
        };
        let columns = ChangeColumns { key: spec.key.clone(), sequence: spec.sequence.clone(), operation: spec.operation.clone() };
        let encoders = Encoders::new(&spec.target.schema, &columns)?;
        let tombstones =
            Tombstones::load(&sinks.tombstones, &sinks.tombstone_schema, &columns, &encoders, spec.tombstone_retention).await?;
        Ok(Self {
            spec,
            limits: SourceLimits::from(options),
            source,
            sinks,
            log,
            previous,
            rerun,
            columns,
            encoders,
            tombstones,
            totals: MergeMetrics::default(),
            max_state_bytes: options.max_state_bytes.0,
        })
    }

    /// The run's merge figures so far.
    pub(crate) fn totals(&self) -> &MergeMetrics {
        &self.totals
    }
}

async fn open_sinks(spec: &MergeSpec) -> Result<Sinks, MergeUpsertError> {
    let target = open_or_create(&spec.target).await?;
    let key: Vec<Field> = spec.key.iter().map(|k| spec.target.schema.field_with_name(k).cloned()).collect::<Result<_, _>>()?;
    let sequence = spec.target.schema.field_with_name(&spec.sequence)?.clone();
    let tombstone_spec = tombstones::table_spec(&spec.tombstone_location, &key, &sequence, &spec.storage);
    Ok(Sinks {
        target,
        dead_letter: open_or_create(&spec.dead_letter).await?,
        tombstones: open_or_create(&tombstone_spec).await?,
        tombstone_schema: tombstone_spec.schema,
    })
}

impl IncrementalJob for MergeRun<'_> {
    type Plan = MergePlan;
    type Error = MergeUpsertError;

    /// Loads the source's newest version and plans the next batch: the versions a pending
    /// batch recorded (a re-run), or what is new since the previous batch.
    async fn plan(&mut self) -> Result<Option<MergePlan>, MergeUpsertError> {
        self.source.update_state().await.map_err(DeltaIoError::delta(&self.spec.source_location))?;
        // The target too: a compaction since the last batch must not make the merge re-plan.
        let target = &mut self.sinks.target;
        target.update_incremental(None).await.map_err(DeltaIoError::delta(target.table_url().as_str()))?;
        let recorded = self.rerun.take();
        let source = match &recorded {
            Some(p) => delta_source::plan_recorded(&self.source, &p.source, self.limits.ignore_deletes).await?,
            None => delta_source::plan(&self.source, &self.previous.source, &self.limits).await?,
        };
        if source.is_empty() {
            return Ok(None);
        }
        let batch = recorded.as_ref().map_or(self.previous.batch + 1, |p| p.batch);
        Ok(Some(MergePlan { batch, rerun: recorded.is_some(), source }))
    }

    async fn run_batch(&mut self, plan: MergePlan, summary: &mut RunSummary) -> Result<(), MergeUpsertError> {
        let (batch, spec) = (plan.batch, self.spec);
        let mut progress = Progress { batch, source: plan.source.range(), done: false };
        crash_point!("merge_upsert::before_plan_record");
        if plan.rerun {
            self.log.put(batch, &progress).await?;
        } else {
            self.log.create(batch, &progress).await.map_err(|e| match e {
                CreateError::Taken(taken) => MergeUpsertError::AnotherRun(taken),
                CreateError::Progress(e) => e.into(),
            })?;
        }
        crash_point!("merge_upsert::after_plan");
        let info = commit_info(&spec.job_id, &plan);
        let (layout, changes) = self.read_changes(&plan, &info, summary).await?;
        self.tombstones.expire(&self.columns, &self.encoders)?;
        let bytes = self.tombstones.bytes();
        if bytes > self.max_state_bytes {
            return Err(MergeUpsertError::StateTooLarge { batch, bytes, cap: self.max_state_bytes });
        }
        // Already landed (a re-run after a crash): the tombstones read at start hold them.
        if read_progress(&self.sinks.tombstones, &spec.job_id).await?.is_none_or(|v| v < batch) {
            if let Some(done) = self.write_tombstones(&changes, batch, &info).await? {
                summary.committed(&spec.tombstone_table, done.version, done.retries);
            }
        }
        crash_point!("merge_upsert::after_tombstones");
        let (metrics, done) = self.merge_and_commit(&layout, &changes, batch, info).await?;
        progress.done = true;
        self.log.put(batch, &progress).await?;
        crash_point!("merge_upsert::after_done");
        self.log.forget_before(batch - 1, |_| Vec::new()).await?;
        BatchMerged {
            batch,
            target: &spec.target.name,
            keys: changes.len(),
            metrics: &metrics,
            version: done.version,
            retries: done.retries,
            lag: (&spec.source_name, plan.source.versions_behind(&self.source)),
            tombstones: self.tombstones.len(),
            tombstone_bytes: self.tombstones.bytes(),
        }
        .emit(summary);
        self.totals.add(&metrics);
        self.previous = progress;
        Ok(())
    }
}

impl MergeRun<'_> {
    /// Reads the batch's source rows into the latest change per key; rows without a key or
    /// sequence are committed as dead letters first.
    async fn read_changes(
        &mut self,
        plan: &MergePlan,
        info: &HashMap<String, serde_json::Value>,
        summary: &mut RunSummary,
    ) -> Result<(TargetLayout, Changes), MergeUpsertError> {
        let layout = self.layout().await?;
        let (rows, rows_in, dead_letters) = read_source(&self.source, &plan.source, &layout, &self.columns).await?;
        summary.read(rows_in, plan.source.bytes());
        if !dead_letters.is_empty() {
            summary.dead_lettered(dead_letters.len() as u64);
            let letters = dead_letters.into_batch(&self.spec.job_id, &self.spec.source_name, plan.batch)?;
            let once = AppendCommit::new(&self.spec.job_id, plan.batch).with_info(info.clone());
            if let Some(done) = once.commit_once(&mut self.sinks.dead_letter, &[letters]).await? {
                summary.committed(&self.spec.dead_letter.name, done.version, done.retries);
            }
        }
        crash_point!("merge_upsert::after_dead_letters");
        let changes = Changes::latest(&layout.input, &rows, &self.columns, &self.encoders)?;
        Ok((layout, changes))
    }

    /// Adds new source columns to the target when configured; returns the layout to merge with.
    async fn layout(&mut self) -> Result<TargetLayout, MergeUpsertError> {
        let spec = self.spec;
        let source_schema = schema_of(&self.source)?;
        let mut target_schema = schema_of(&self.sinks.target)?;
        let new = new_source_columns(spec, &source_schema, &target_schema);
        if !new.is_empty() {
            if spec.evolution != SchemaEvolution::AddColumns {
                let columns = new.iter().map(|f| f.name().clone()).collect();
                return Err(MergeUpsertError::NewSourceColumns {
                    table: spec.source_name.clone(),
                    target: spec.target.name.clone(),
                    columns,
                });
            }
            delta_io::add_nullable_columns(&mut self.sinks.target, &new).await?;
            events::columns_added(&new.iter().map(|f| f.name()).collect::<Vec<_>>());
            target_schema = schema_of(&self.sinks.target)?;
        }
        let layout = TargetLayout::new(spec, &target_schema, &source_schema);
        if let Some(f) = layout.input.fields().iter().find(|f| source_schema.field_with_name(f.name()).is_err()) {
            return Err(MergeUpsertError::MissingColumn {
                table: spec.source_name.clone(),
                target: spec.target.name.clone(),
                column: f.name().clone(),
            });
        }
        Ok(layout)
    }

    /// Records the batch's deletes as tombstones (appended, or the table rewritten without
    /// expired ones), with `txn(job, batch)`, and keeps the run's copy current.
    async fn write_tombstones(
        &mut self,
        changes: &Changes,
        batch: i64,
        info: &HashMap<String, serde_json::Value>,
    ) -> Result<Option<CommitOutcome>, MergeUpsertError> {
        let job_id = &self.spec.job_id;
        let new = self.tombstones.from_deletes(changes, &self.columns)?;
        if new.is_none() && self.tombstones.expired() == 0 {
            return Ok(None);
        }
        let table = &mut self.sinks.tombstones;
        let rewrite = self.tombstones.needs_rewrite();
        let mut outcome = None;
        if rewrite {
            let rows: Vec<_> = self.tombstones.live_rows().iter().cloned().chain(new.clone()).collect();
            let adds = write_files(table, self.sinks.tombstone_schema.clone(), &[], &rows, 128 << 20).await?;
            let snapshot = table.snapshot().map_err(DeltaIoError::delta(&self.spec.tombstone_location))?;
            let removes = snapshot.log_data().iter().map(|f| f.remove_action(true)).collect();
            let rewrite = MergeCommit::new("expired tombstones dropped").with_removes(removes).with_adds(adds);
            let txn = vec![Transaction::new(job_id, batch)];
            outcome = Some(rewrite.with_progress(txn).with_info(info.clone()).commit(table).await?);
            events::tombstones_rewritten(self.tombstones.expired());
        } else if let Some(new) = &new {
            // The caller found the batch absent from the tombstones: no second progress read.
            let adds = write_files(table, self.sinks.tombstone_schema.clone(), &[], std::slice::from_ref(new), 128 << 20).await?;
            let append = AppendCommit::new(job_id, batch).with_adds(adds).with_batch_progress().with_info(info.clone());
            outcome = Some(append.commit(table).await?);
        }
        self.tombstones.record(new, rewrite, &self.columns, &self.encoders)?;
        Ok(outcome)
    }

    /// Merges the batch's changes into the target and commits them. A concurrent commit that
    /// changed what the merge read (a compaction of a file it rewrites, other row changes)
    /// re-plans the merge on the newest snapshot; one beside it (a compaction elsewhere) does not.
    async fn merge_and_commit(
        &mut self,
        layout: &TargetLayout,
        changes: &Changes,
        batch: i64,
        info: HashMap<String, serde_json::Value>,
    ) -> Result<(MergeMetrics, CommitOutcome), MergeUpsertError> {
        let spec = self.spec;
        let mut replans = 0;
        loop {
            let actions = merge::merge(&self.sinks.target, spec, layout, changes, &self.columns, &self.encoders, &self.tombstones).await?;
            let metrics = actions.metrics.clone();
            match self.commit_target(actions, batch, info.clone()).await {
                Ok(done) => return Ok((metrics, CommitOutcome { retries: done.retries + replans, ..done })),
                Err(MergeUpsertError::Table(TableJobError::Commit(CommitError::Overlap { version, overlap })))
                    if replans < MAX_REPLANS && matches!(overlap, Overlap::Rewritten(_) | Overlap::RowsChanged(_)) =>
                {
                    events::merge_replanned(batch, version, &overlap);
                    replans += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The target's MERGE commit with `txn(job, batch)`; then the touched partitions'
    /// symlink manifests are refreshed.
    async fn commit_target(
        &mut self,
        actions: merge::MergeActions,
        batch: i64,
        info: HashMap<String, serde_json::Value>,
    ) -> Result<CommitOutcome, MergeUpsertError> {
        let spec = self.spec;
        let touched: Vec<HashMap<String, Option<String>>> = actions
            .removes
            .iter()
            .filter_map(|r| r.partition_values.clone())
            .chain(actions.adds.iter().map(|a| a.partition_values.clone()))
            .map(|m| m.into_iter().collect())
            .collect();
        let predicate = spec.key.iter().map(|k| format!("target.{k} = source.{k}")).collect::<Vec<_>>().join(" AND ");
        let merge = MergeCommit::new(&predicate).with_removes(actions.removes).with_adds(actions.adds);
        let txn = vec![Transaction::new(&spec.job_id, batch)];
        crash_point!("merge_upsert::before_target_commit");
        let done = merge.with_progress(txn).with_info(info).commit(&mut self.sinks.target).await?;
        crash_point!("merge_upsert::after_target_commit");
        maintenance::update_touched_manifests(&self.sinks.target, &spec.target.name, &touched).await;
        Ok(done)
    }
}

/// Source columns the target lacks (neither derived partitions, the operation column nor
/// ignored).
fn new_source_columns(spec: &MergeSpec, source: &Schema, target: &Schema) -> Vec<Field> {
    let derived = spec.derived_partitions();
    let operation = spec.operation.as_ref().map(|(c, _)| c.as_str());
    let is_new = |name: &str| {
        target.field_with_name(name).is_err()
            && !derived.contains(&name)
            && Some(name) != operation
            && !spec.ignore_columns.iter().any(|c| c == name)
    };
    source.fields().iter().filter(|f| is_new(f.name())).map(|f| f.as_ref().clone()).collect()
}

/// The target is ahead of the checkpoint (lost, rolled back or moved): the progress of the
/// target's latest batch, rebuilt from that commit's `lakehouse.job` metadata (the source
/// versions it read) and written back to the checkpoint, so the run continues exactly after it.
async fn rebuild_progress(
    target: &DeltaTable,
    spec: &MergeSpec,
    log: &ProgressLog,
    behind: CheckpointBehind,
) -> Result<Progress, MergeUpsertError> {
    let location = target.table_url().to_string();
    let mut history = target.history(None);
    while let Some(commit) = history.try_next().await.map_err(DeltaIoError::delta(&location))? {
        let Some(source) = commit.info.get("lakehouse.job").and_then(|job| recorded_source(job, &spec.job_id, behind.sink)) else {
            continue;
        };
        events::checkpoint_rebuilt(&behind, source.after, source.to);
        let progress = Progress { batch: behind.sink, source, done: true };
        log.put(progress.batch, &progress).await?;
        return Ok(progress);
    }
    Err(MergeUpsertError::CheckpointBehind(behind))
}

/// The source versions a commit's `lakehouse.job` metadata records for `batch` of this job
/// (commits before job ids were recorded match by the job's name).
fn recorded_source(job: &serde_json::Value, job_id: &str, batch: i64) -> Option<SourceRange> {
    let ours = job["name"] == "merge-upsert" && job.get("job_id").is_none_or(|id| id == job_id);
    (ours && job["batch"].as_i64() == Some(batch)).then(|| serde_json::from_value(job["source"].clone()).ok()).flatten()
}

fn schema_of(table: &DeltaTable) -> Result<Schema, DeltaIoError> {
    let snapshot = table.snapshot().map_err(DeltaIoError::delta(table.table_url().as_str()))?;
    Ok(snapshot.snapshot().arrow_schema().as_ref().clone())
}

fn commit_info(job_id: &str, plan: &MergePlan) -> HashMap<String, serde_json::Value> {
    let source = &plan.source;
    HashMap::from([(
        "lakehouse.job".to_string(),
        serde_json::json!({ "name": "merge-upsert", "job_id": job_id, "batch": plan.batch,
            "source": source.range() }),
    )])
}

/// Reads the batch's source files; rows missing a key or sequence go to dead letters.
/// Returns the kept rows, the rows read and the dead letters.
async fn read_source(
    source: &DeltaTable,
    plan: &SourcePlan,
    layout: &TargetLayout,
    columns: &ChangeColumns,
) -> Result<(Vec<RecordBatch>, u64, DeadLetters), MergeUpsertError> {
    let per_file = delta_source::read_each(source, plan, &layout.input).await?;
    let mut dead_letters = DeadLetters::default();
    let mut rows = Vec::new();
    let mut rows_in = 0;
    for (file, batches) in plan.files.iter().zip(per_file) {
        for b in batches {
            rows_in += b.num_rows() as u64;
            let (kept, rejected) = split_rejected(&b, columns)?;
            if let Some((rejected, reasons)) = rejected {
                dead_letters.push(file.version, &file.path, &rejected, reasons)?;
            }
            rows.push(kept);
        }
    }
    Ok((rows, rows_in, dead_letters))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_range_is_read_from_this_jobs_commit_of_the_batch() {
        let job = serde_json::json!({"name": "merge-upsert", "job_id": "mu", "batch": 7, "source": {"after": 3, "to": 9}});
        assert_eq!(recorded_source(&job, "mu", 7), Some(SourceRange { after: Some(3), to: Some(9), ..Default::default() }));
        assert_eq!(recorded_source(&job, "mu", 6), None, "another batch");
        assert_eq!(recorded_source(&job, "other", 7), None, "another job's commit");
        let before_job_ids = serde_json::json!({"name": "merge-upsert", "batch": 7, "source": {"after": null, "to": 2}});
        assert_eq!(recorded_source(&before_job_ids, "mu", 7), Some(SourceRange { to: Some(2), ..Default::default() }));
        let join = serde_json::json!({"name": "stream-join", "batch": 7, "left": {}});
        assert_eq!(recorded_source(&join, "mu", 7), None);
    }
}
