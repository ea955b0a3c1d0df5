//! The merge-upsert run: recovery, the batch loop, the commit protocol.
//!
//! Batch b: record the planned source versions as pending → dead letters with `txn(job, b)` →
//! tombstones with `txn(job, b)` → the target's MERGE commit with `txn(job, b)` → mark done.
//! Each side commit is skipped when its table already holds `txn >= b`, so a re-run of b (after
//! a crash before the target commit) reads the same versions and lands each part once. A
//! re-run sees b's own tombstones, which changes nothing: a key's last change in b is either a
//! delete or an upsert, never both.

use std::collections::HashMap;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::Instant;

use arrow::datatypes::{Field, Schema};
use delta_io::{commit_append, commit_merge, open_or_create, open_table, read_progress, write_files, CommitOutcome, DeltaIoError, DeltaTable, Transaction};
use delta_source::{BatchRecord, ProgressLog, Resume, SourceError, SourceLimits, SourcePlan, SourceRange};
use job_runtime::{crash_point, RunSummary, Shutdown};
use pipeline_config::{MergeUpsertConfig, PipelineConfig, SchemaEvolution, Trigger};
use serde::{Deserialize, Serialize};

use crate::changes::{split_rejected, ChangeColumns, Changes, Encoders};
use crate::dead_letter::DeadLetters;
use crate::merge::{self, MergeMetrics};
use crate::spec::{MergeSpec, TargetLayout};
use crate::tombstones::{self, Tombstones};

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum MergeUpsertError {
    /// The configuration has no `[merge_upsert]` section.
    #[error("merge_upsert: section missing from the configuration; add [merge_upsert] (see schemas/pipeline.toml)")]
    NotConfigured,
    /// Delta access failed.
    #[error(transparent)]
    Delta(#[from] DeltaIoError),
    /// A commit did not land.
    #[error("commit: {0}")]
    Commit(#[from] delta_io::CommitError),
    /// Reading the source failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The checkpoint folder could not be used.
    #[error(transparent)]
    Checkpoint(#[from] delta_source::ProgressError),
    /// Building rows failed.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// The source lacks a column the target needs.
    #[error("source {table} has no column '{column}', which the target {target} needs: add it to the source or remove it from the target's schema file")]
    MissingColumn {
        /// Source table.
        table: String,
        /// Target table.
        target: String,
        /// Column.
        column: String,
    },
    /// The source has columns the target does not, and evolution is off.
    #[error(
        "source {table} has columns the target {target} lacks: {columns:?}. Set merge_upsert.schema_evolution = \"add_columns\" \
         to add them (nullable), list them in merge_upsert.ignore_columns, or add them to the target's schema file"
    )]
    NewSourceColumns {
        /// Source table.
        table: String,
        /// Target table.
        target: String,
        /// The new columns.
        columns: Vec<String>,
    },
}

/// Every failure exits 1.
impl job_runtime::ExitStatus for MergeUpsertError {}

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

impl BatchRecord for Progress {
    fn batch(&self) -> i64 {
        self.batch
    }
    fn done(&self) -> bool {
        self.done
    }
    fn mark_done(&mut self) {
        self.done = true;
    }
}

/// A merge-upsert run over a validated configuration: build it, then `.await` it.
pub struct MergeUpsert {
    spec: MergeSpec,
    job: MergeUpsertConfig,
    trigger: Trigger,
    shutdown: Shutdown,
}

/// The tables a run writes.
struct Sinks {
    target: DeltaTable,
    dead_letter: DeltaTable,
    tombstones: DeltaTable,
    tombstone_schema: arrow::datatypes::SchemaRef,
}

impl MergeUpsert {
    /// A run of the configuration's `[merge_upsert]` job.
    pub fn new(config: &PipelineConfig) -> Result<Self, MergeUpsertError> {
        let job = config.merge_upsert.clone().ok_or(MergeUpsertError::NotConfigured)?;
        Ok(Self { spec: MergeSpec::resolve(config, &job), trigger: job.trigger, job, shutdown: Shutdown::default() })
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

    fn columns(&self) -> ChangeColumns {
        ChangeColumns { key: self.spec.key.clone(), sequence: self.spec.sequence.clone(), operation: self.spec.operation.clone() }
    }

    async fn open_sinks(&self) -> Result<Sinks, MergeUpsertError> {
        let spec = &self.spec;
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

    async fn execute(self) -> Result<RunSummary, MergeUpsertError> {
        let started = Instant::now();
        let mut summary = RunSummary::new("merge-upsert", if self.trigger == Trigger::Once { "once" } else { "continuous" });
        let mut sinks = self.open_sinks().await?;
        let mut source = open_table(&self.spec.source_location, &self.spec.storage).await?;
        let log = ProgressLog::open(&self.spec.checkpoint, &self.spec.storage)?;

        let sink_version = read_progress(&sinks.target, &self.spec.job_id).await?;
        let Resume { mut previous, mut rerun } = log.resume::<Progress>(sink_version).await?;

        // Keys and sequences keep the target's types; tombstones are read once and kept current.
        let columns = self.columns();
        let encoders = Encoders::new(&self.spec.target.schema, &columns)?;
        let mut tombstones = Tombstones::load(&sinks.tombstones, &sinks.tombstone_schema, &columns, &encoders, self.spec.tombstone_retention).await?;

        let limits = SourceLimits { max_files: self.job.max_files_per_batch, max_bytes: self.job.max_bytes_per_batch.0, ignore_deletes: self.job.ignore_deletes };
        let mut totals = MergeMetrics::default();
        let mut any = false;
        loop {
            if self.shutdown.requested() {
                summary.status = "stopped".into();
                break;
            }
            source.update_state().await.map_err(|e| DeltaIoError::Location(format!("{}: {e}", self.spec.source_location)))?;
            let recorded = rerun.take();
            let plan = match &recorded {
                Some(p) => delta_source::plan_recorded(&source, p.source, self.job.ignore_deletes).await?,
                None => delta_source::plan(&source, previous.source.to, None, &limits).await?,
            };
            if plan.is_empty() {
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
            let progress = self.run_batch(batch, &plan, &source, &mut sinks, &mut tombstones, &encoders, &log, &mut summary, &mut totals).await?;
            summary.batch_done(batch_started.elapsed());
            tracing::info!(stage = "commit", batch, ms = batch_started.elapsed().as_millis() as u64, "batch merged");
            previous = progress;
        }
        if !any && summary.status == "ok" {
            summary.status = "no_new_data".into();
        }
        if let serde_json::Value::Object(metrics) = serde_json::to_value(&totals).unwrap_or_default() {
            summary.details.extend(metrics);
        }
        summary.duration_ms = started.elapsed().as_millis() as u64;
        Ok(summary)
    }

    /// Adds new source columns to the target when configured; returns the layout to merge with.
    async fn layout(&self, source: &DeltaTable, target: &mut DeltaTable) -> Result<TargetLayout, MergeUpsertError> {
        let spec = &self.spec;
        let source_schema = schema_of(source)?;
        let mut target_schema = schema_of(target)?;
        let derived = spec.derived_partitions();
        let operation = spec.operation.as_ref().map(|(c, _)| c.as_str());
        let new: Vec<Field> = source_schema
            .fields()
            .iter()
            .filter(|f| {
                let name = f.name().as_str();
                target_schema.field_with_name(name).is_err() && !derived.contains(&name) && Some(name) != operation && !spec.ignore_columns.iter().any(|c| c == name)
            })
            .map(|f| f.as_ref().clone())
            .collect();
        if !new.is_empty() {
            if spec.evolution != SchemaEvolution::AddColumns {
                return Err(MergeUpsertError::NewSourceColumns {
                    table: spec.source_name.clone(),
                    target: spec.target.name.clone(),
                    columns: new.iter().map(|f| f.name().clone()).collect(),
                });
            }
            delta_io::add_nullable_columns(target, &new).await?;
            tracing::info!(columns = ?new.iter().map(|f| f.name()).collect::<Vec<_>>(), "added new source columns to the target");
            target_schema = schema_of(target)?;
        }
        let layout = TargetLayout::new(spec, &target_schema, &source_schema);
        for f in layout.input.fields() {
            if source_schema.field_with_name(f.name()).is_err() {
                return Err(MergeUpsertError::MissingColumn { table: spec.source_name.clone(), target: spec.target.name.clone(), column: f.name().clone() });
            }
        }
        Ok(layout)
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_batch(
        &self,
        batch: i64,
        plan: &SourcePlan,
        source: &DeltaTable,
        sinks: &mut Sinks,
        tombstones: &mut Tombstones,
        encoders: &Encoders,
        log: &ProgressLog,
        summary: &mut RunSummary,
        totals: &mut MergeMetrics,
    ) -> Result<Progress, MergeUpsertError> {
        let spec = &self.spec;
        let job_id = &spec.job_id;
        let mut progress = Progress { batch, source: SourceRange { after: plan.after, to: plan.to }, done: false };
        log.put(batch, &progress).await?;
        crash_point!("merge_upsert::after_plan");

        let layout = self.layout(source, &mut sinks.target).await?;
        let columns = self.columns();
        let (rows, rows_in, dead_letters) = read_source(source, plan, &layout, &columns).await?;
        let info = commit_info(batch, plan);
        summary.read(rows_in, plan.bytes());
        if !dead_letters.is_empty() {
            summary.dead_lettered(dead_letters.len() as u64);
            self.commit_dead_letters(sinks, dead_letters, batch, &info, summary).await?;
        }
        crash_point!("merge_upsert::after_dead_letters");

        let changes = Changes::latest(&layout.input, &rows, &columns, encoders)?;
        drop(rows);
        tombstones.expire(&columns, encoders)?;
        let actions = merge::merge(&sinks.target, spec, &layout, &changes, &columns, encoders, tombstones).await?;

        // Already landed (a re-run after a crash): the tombstones read at start hold them.
        if read_progress(&sinks.tombstones, job_id).await?.is_none_or(|v| v < batch) {
            if let Some(done) = self.write_tombstones(sinks, tombstones, &changes, &columns, encoders, batch, &info).await? {
                summary.committed(&self.job.tombstone_table, done.version, done.retries);
            }
        }
        crash_point!("merge_upsert::after_tombstones");

        let touched: Vec<HashMap<String, Option<String>>> = actions
            .removes
            .iter()
            .filter_map(|r| r.partition_values.clone())
            .chain(actions.adds.iter().map(|a| a.partition_values.clone()))
            .map(|m| m.into_iter().collect())
            .collect();
        let predicate = spec.key.iter().map(|k| format!("target.{k} = source.{k}")).collect::<Vec<_>>().join(" AND ");
        let metrics = actions.metrics;
        let done = commit_merge(&mut sinks.target, actions.removes, actions.adds, vec![Transaction::new(job_id, batch)], &predicate, info).await?;
        crash_point!("merge_upsert::after_target_commit");
        maintenance::update_touched_manifests(&sinks.target, &spec.target.name, &touched).await;
        progress.done = true;
        log.put(batch, &progress).await?;
        crash_point!("merge_upsert::after_done");
        log.forget_before(batch - 1, |_| Vec::new()).await?;

        summary.wrote(&spec.target.name, metrics.rows_inserted + metrics.rows_updated);
        summary.committed(&spec.target.name, done.version, done.retries);
        summary.source_version_lag(&spec.source_name, plan.versions_behind(source));
        summary.details.insert("tombstones".into(), (tombstones.len() as u64).into());
        log_merged(batch, changes.len(), &metrics, done.version);
        add_metrics(totals, &metrics);
        Ok(progress)
    }

    /// Commits the batch's rejected source rows with `txn(job, batch)`, unless a re-run finds
    /// them there.
    async fn commit_dead_letters(
        &self,
        sinks: &mut Sinks,
        dead_letters: DeadLetters,
        batch: i64,
        info: &HashMap<String, serde_json::Value>,
        summary: &mut RunSummary,
    ) -> Result<(), MergeUpsertError> {
        let spec = &self.spec;
        let job_id = &spec.job_id;
        if read_progress(&sinks.dead_letter, job_id).await?.is_some_and(|v| v >= batch) {
            return Ok(());
        }
        let letters = dead_letters.into_batch(job_id, &spec.source_name, batch)?;
        let adds = write_files(&sinks.dead_letter, letters.schema(), &[], &[letters], 128 << 20).await?;
        let done = commit_append(&mut sinks.dead_letter, adds, vec![Transaction::new(job_id, batch)], job_id, batch, info.clone()).await?;
        summary.committed(&spec.dead_letter.name, done.version, done.retries);
        Ok(())
    }

    /// Records the batch's deletes as tombstones (appended, or the table rewritten without
    /// expired ones), with `txn(job, batch)`, and keeps the run's copy current.
    #[allow(clippy::too_many_arguments)]
    async fn write_tombstones(
        &self,
        sinks: &mut Sinks,
        tombstones: &mut Tombstones,
        changes: &Changes,
        columns: &ChangeColumns,
        encoders: &Encoders,
        batch: i64,
        info: &HashMap<String, serde_json::Value>,
    ) -> Result<Option<CommitOutcome>, MergeUpsertError> {
        let job_id = &self.spec.job_id;
        let new = tombstones.from_deletes(changes, columns)?;
        if new.is_none() && tombstones.expired() == 0 {
            return Ok(None);
        }
        let txn = vec![Transaction::new(job_id, batch)];
        let schema = sinks.tombstone_schema.clone();
        let rewrite = tombstones.needs_rewrite();
        let mut outcome = None;
        if rewrite {
            let rows: Vec<_> = tombstones.live_rows().iter().cloned().chain(new.clone()).collect();
            let adds = write_files(&sinks.tombstones, schema, &[], &rows, 128 << 20).await?;
            let snapshot = sinks.tombstones.snapshot().map_err(|e| DeltaIoError::Location(format!("{}: {e}", self.spec.tombstone_location)))?;
            let removes = snapshot.log_data().iter().map(|f| f.remove_action(true)).collect();
            outcome = Some(commit_merge(&mut sinks.tombstones, removes, adds, txn, "expired tombstones dropped", info.clone()).await?);
            tracing::info!(expired = tombstones.expired(), "tombstones rewritten");
        } else if let Some(new) = &new {
            let adds = write_files(&sinks.tombstones, schema, &[], std::slice::from_ref(new), 128 << 20).await?;
            outcome = Some(commit_append(&mut sinks.tombstones, adds, txn, job_id, batch, info.clone()).await?);
        }
        tombstones.record(new, rewrite, columns, encoders)?;
        Ok(outcome)
    }
}

fn schema_of(table: &DeltaTable) -> Result<Schema, DeltaIoError> {
    let snapshot = table.snapshot().map_err(|e| DeltaIoError::Location(format!("{}: {e}", table.table_url())))?;
    Ok(snapshot.snapshot().arrow_schema().as_ref().clone())
}

fn add_metrics(totals: &mut MergeMetrics, m: &MergeMetrics) {
    totals.target_files = m.target_files;
    totals.files_scanned += m.files_scanned;
    totals.files_rewritten += m.files_rewritten;
    totals.rows_copied += m.rows_copied;
    totals.rows_inserted += m.rows_inserted;
    totals.rows_updated += m.rows_updated;
    totals.rows_deleted += m.rows_deleted;
    totals.rows_stale += m.rows_stale;
}

fn commit_info(batch: i64, plan: &SourcePlan) -> HashMap<String, serde_json::Value> {
    HashMap::from([(
        "lakehouse.job".to_string(),
        serde_json::json!({ "name": "merge-upsert", "batch": batch, "source": { "after": plan.after, "to": plan.to } }),
    )])
}

impl IntoFuture for MergeUpsert {
    type Output = Result<RunSummary, MergeUpsertError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.execute())
    }
}

/// Reads the batch's source files; rows missing a key or sequence go to dead letters.
/// Returns the kept rows, the rows read and the dead letters.
async fn read_source(source: &DeltaTable, plan: &SourcePlan, layout: &TargetLayout, columns: &ChangeColumns) -> Result<(Vec<arrow::array::RecordBatch>, u64, DeadLetters), MergeUpsertError> {
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

/// One log line per merged batch.
fn log_merged(batch: i64, keys: usize, metrics: &MergeMetrics, version: u64) {
    tracing::info!(
        batch,
        keys,
        files_scanned = metrics.files_scanned,
        files_rewritten = metrics.files_rewritten,
        inserted = metrics.rows_inserted,
        updated = metrics.rows_updated,
        deleted = metrics.rows_deleted,
        stale = metrics.rows_stale,
        version,
        "merged"
    );
}
