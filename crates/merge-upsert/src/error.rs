//! Why a merge-upsert run fails.

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum MergeUpsertError {
    /// The configuration has no `[merge_upsert]` section.
    #[error("merge_upsert: section missing from the configuration; add [merge_upsert] (see schemas/pipeline.toml)")]
    NotConfigured,
    /// Delta access, a commit, the source, the checkpoint or building rows failed.
    #[error(transparent)]
    Table(delta_source::TableJobError),
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
    /// The target holds batches the checkpoint does not know, and the target's commit of the
    /// latest does not record the source versions it read.
    #[error(
        "{0}, and the target's commit of batch {sink} records no source versions (lakehouse.job metadata; log cleanup may \
         have removed it). Restore the checkpoint folder, or rebuild the target from scratch (delete it, its tombstone and \
         dead-letter tables and the checkpoint folder, then run again)", sink = .0.sink
    )]
    CheckpointBehind(delta_source::CheckpointBehind),
    /// The tombstones outgrew the state cap: the batch was not merged.
    #[error(
        "the tombstones hold {bytes} bytes before batch {batch}, over merge_upsert.max_state_bytes = {cap}: nothing of the \
         batch was merged. Raise max_state_bytes (and the task's memory), or shorten merge_upsert.tombstone_retention"
    )]
    StateTooLarge {
        /// The batch.
        batch: i64,
        /// The tombstones' size in memory.
        bytes: u64,
        /// The cap.
        cap: u64,
    },
    /// Another instance of the job planned the same batch first.
    #[error(transparent)]
    AnotherRun(#[from] delta_source::BatchTaken),
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

/// A checkpoint behind the target that its commits cannot rebuild exits 5; source data gone or
/// replaced 4; every other failure 1.
impl job_runtime::ExitStatus for MergeUpsertError {
    fn exit_code(&self) -> job_runtime::ExitCode {
        match self {
            Self::CheckpointBehind(_) => job_runtime::ExitCode::CheckpointBehind,
            Self::Table(e) if e.is_source_gone() => job_runtime::ExitCode::SourceDataGone,
            _ => job_runtime::ExitCode::Failure,
        }
    }
}

delta_source::table_job_error_from!(MergeUpsertError);
