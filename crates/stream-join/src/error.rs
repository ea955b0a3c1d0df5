//! Why a stream-join run fails.

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamJoinError {
    /// The configuration has no `[stream_join]` section.
    #[error("stream_join: section missing from the configuration; add [stream_join] (see schemas/pipeline.toml)")]
    NotConfigured,
    /// Delta access, a commit, the source, the checkpoint or building rows failed.
    #[error(transparent)]
    Table(delta_source::TableJobError),
    /// A source table lacks a configured column.
    #[error("source {table} has no column '{column}' (configured under [stream_join])")]
    MissingColumn {
        /// Table.
        table: String,
        /// Column.
        column: String,
    },
    /// The output holds batches the checkpoint does not know; the join state they left cannot
    /// be rebuilt from the output.
    #[error(
        "{0}. The join state of those batches is only in the checkpoint: restore the checkpoint folder, or rebuild the \
         output from scratch (delete the output table and the checkpoint folder, then run again)"
    )]
    CheckpointBehind(delta_source::CheckpointBehind),
    /// Another instance of the job planned the same batch first.
    #[error(transparent)]
    AnotherRun(#[from] delta_source::BatchTaken),
    /// The join state outgrew its cap: the batch was not committed.
    #[error(
        "the join state holds {bytes} bytes after batch {batch}, over stream_join.max_state_bytes = {cap}: nothing of the \
         batch was committed. Raise max_state_bytes (and the task's memory), or keep rows in state for less time (smaller \
         delays or join bounds)"
    )]
    StateTooLarge {
        /// The batch.
        batch: i64,
        /// The state's size in memory.
        bytes: u64,
        /// The cap.
        cap: u64,
    },
    /// A bug.
    #[error("internal: {0}")]
    Internal(String),
}

/// A checkpoint behind the output exits 5; source data gone or replaced 4; every other failure 1.
impl job_runtime::ExitStatus for StreamJoinError {
    fn exit_code(&self) -> job_runtime::ExitCode {
        match self {
            Self::CheckpointBehind(_) => job_runtime::ExitCode::CheckpointBehind,
            Self::Table(e) if e.is_source_gone() => job_runtime::ExitCode::SourceDataGone,
            _ => job_runtime::ExitCode::Failure,
        }
    }
}

delta_source::table_job_error_from!(StreamJoinError);
