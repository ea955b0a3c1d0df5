//! Append commits carrying `txn` (SetTransaction) progress, and reading that progress.

use std::collections::HashMap;

use arrow::array::RecordBatch;
use deltalake::kernel::transaction::{CommitBuilder, CommitConflictError, CommitProperties, TransactionError};
use deltalake::kernel::{Action, Add, Transaction};
use deltalake::protocol::{DeltaOperation, OutputMode};
use deltalake::{DeltaTable, DeltaTableError};

use crate::DeltaIoError;

/// Why a commit did not land.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// Another writer committed progress for one of our app ids since we read it: our batch
    /// overlaps theirs and must be dropped, and progress re-read.
    #[error(
        "another writer advanced the progress of one of this batch's partitions: nothing of this batch was committed. \
         Tasks sharing a topic must share a consumer group (raw_append.group_id); a restart resumes from the table"
    )]
    ProgressConflict,
    /// A guarded commit found partitions whose progress is no longer what its batch started
    /// from (another task committed them): nothing of the batch was committed.
    #[error("progress moved under this batch (another task committed its partitions): {}", describe_moved(.moved))]
    ProgressMoved {
        /// The app ids that moved.
        moved: Vec<MovedProgress>,
    },
    /// A concurrent commit changed what a rewrite (MERGE, compaction) read: nothing of it was
    /// committed; re-plan it on the newest snapshot.
    #[error("version {version} of the table changed what this commit read ({overlap}): nothing of it was committed; run again")]
    Overlap {
        /// The concurrent commit.
        version: u64,
        /// What it changed.
        overlap: crate::overlap::Overlap,
    },
    /// A concurrent commit changed the table's metadata (schema evolution by another task):
    /// nothing of this commit landed; it may be retried on the newest snapshot when our
    /// columns are still there.
    #[error("a concurrent commit changed the table's schema or properties: nothing of this commit landed")]
    MetadataChanged,
    /// Concurrent commits kept landing first.
    #[error("{attempts} attempts lost the race with concurrent commits: nothing was committed; run again")]
    Busy {
        /// Attempts made.
        attempts: u64,
    },
    /// Any other failure.
    #[error(transparent)]
    Io(#[from] DeltaIoError),
}

fn describe_moved(moved: &[MovedProgress]) -> String {
    moved.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// An app id whose progress is not what a guarded commit expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovedProgress {
    /// Application id.
    pub app_id: String,
    /// What the batch started from.
    pub expected: Option<i64>,
    /// What the newest snapshot holds.
    pub found: Option<i64>,
}

impl std::fmt::Display for MovedProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |v: Option<i64>| v.map_or_else(|| "none".to_string(), |v| v.to_string());
        write!(f, "{} expected {} found {}", self.app_id, show(self.expected), show(self.found))
    }
}

/// A landed commit.
#[derive(Debug, Clone, Copy)]
pub struct CommitOutcome {
    /// The table version it created.
    pub version: u64,
    /// Attempts that lost a race with a concurrent commit and were retried.
    pub retries: u64,
}

/// A commit that writes a checkpoint every `delta.checkpointInterval` versions (100 by
/// default) and cleans expired logs per the table's settings: without it a streaming table's
/// log replay grows with every commit. (`CommitBuilder::default()` runs no post-commit hook.)
fn commit_builder() -> CommitBuilder {
    CommitBuilder::from(CommitProperties::default())
}

/// Commits `actions` against the table's loaded snapshot (delta-rs retries conflicts that do not
/// touch what we read) and moves the table to the new version.
async fn commit(
    table: &mut DeltaTable,
    actions: Vec<Action>,
    operation: DeltaOperation,
    app_metadata: HashMap<String, serde_json::Value>,
) -> Result<CommitOutcome, DeltaTableError> {
    commit_with_retries(table, actions, operation, app_metadata, 50).await
}

/// [`commit`] with at most `max_retries` conflict-checked retries in delta-rs (0: a concurrent
/// commit fails it with `MaxCommitAttempts`).
pub(crate) async fn commit_with_retries(
    table: &mut DeltaTable,
    actions: Vec<Action>,
    operation: DeltaOperation,
    app_metadata: HashMap<String, serde_json::Value>,
    max_retries: usize,
) -> Result<CommitOutcome, DeltaTableError> {
    let snapshot = table.snapshot()?;
    let done = commit_builder()
        .with_actions(actions)
        .with_app_metadata(app_metadata)
        .with_max_retries(max_retries)
        .build(Some(snapshot), table.log_store(), operation)
        .await?;
    let outcome = CommitOutcome { version: done.version(), retries: done.metrics.num_retries };
    table.state = Some(done.snapshot());
    Ok(outcome)
}

/// One job batch appended to a table: its data files, its `txn` progress and the job's commit
/// info, in one atomic commit (a streaming update named by the job and the batch).
#[derive(Debug, Clone)]
pub struct AppendCommit {
    job_id: String,
    batch: i64,
    parts: CommitParts,
}

/// What every job commit carries besides its own actions: data files, `txn` progress and the
/// job's commit info.
#[derive(Debug, Clone, Default)]
pub struct CommitParts {
    pub(crate) adds: Vec<Add>,
    pub(crate) progress: Vec<Transaction>,
    pub(crate) info: HashMap<String, serde_json::Value>,
}

/// The builder steps shared by the commits that carry [`CommitParts`].
pub trait WithCommitParts: Sized {
    /// The parts being filled.
    fn parts_mut(&mut self) -> &mut CommitParts;

    /// The data files.
    fn with_adds(mut self, adds: Vec<Add>) -> Self {
        self.parts_mut().adds = adds;
        self
    }

    /// `txn` actions recording the job's progress.
    fn with_progress(mut self, progress: Vec<Transaction>) -> Self {
        self.parts_mut().progress = progress;
        self
    }

    /// The job's commit info (`commitInfo` app metadata).
    fn with_info(mut self, info: HashMap<String, serde_json::Value>) -> Self {
        self.parts_mut().info = info;
        self
    }
}

impl WithCommitParts for AppendCommit {
    fn parts_mut(&mut self) -> &mut CommitParts {
        &mut self.parts
    }
}

impl AppendCommit {
    /// Batch `batch` of job `job_id`, with nothing in it yet.
    pub fn new(job_id: &str, batch: i64) -> Self {
        Self { job_id: job_id.to_string(), batch, parts: CommitParts::default() }
    }

    /// The batch itself as progress: `txn(job_id, batch)` (outputs of table-to-table jobs and
    /// side tables).
    pub fn with_batch_progress(self) -> Self {
        let txn = Transaction::new(&self.job_id, self.batch);
        self.with_progress(vec![txn])
    }

    /// Commits against the table's loaded snapshot. delta-rs retries on conflicts with blind
    /// appends; a concurrent commit that carries one of our app ids is a
    /// [`CommitError::ProgressConflict`].
    pub async fn commit(self, table: &mut DeltaTable) -> Result<CommitOutcome, CommitError> {
        let location = table.table_url().to_string();
        let CommitParts { adds, progress, info } = self.parts;
        let actions: Vec<Action> = adds.into_iter().map(Action::Add).chain(progress.into_iter().map(Action::Txn)).collect();
        let operation = DeltaOperation::StreamingUpdate { output_mode: OutputMode::Append, query_id: self.job_id, epoch_id: self.batch };
        match commit(table, actions, operation, info).await {
            Ok(done) => Ok(done),
            Err(DeltaTableError::Transaction { source: TransactionError::CommitConflict(CommitConflictError::ConcurrentTransaction) }) => {
                Err(CommitError::ProgressConflict)
            }
            Err(DeltaTableError::Transaction { source: TransactionError::CommitConflict(CommitConflictError::MetadataChanged) }) => {
                Err(CommitError::MetadataChanged)
            }
            Err(source) => Err(DeltaIoError::delta(&location)(source).into()),
        }
    }

    /// The once-per-batch side commit (dead letters, late rows, tombstones): writes `rows` and
    /// commits them with `txn(job_id, batch)`, unless the table already holds the batch (a
    /// re-run after a crash): then nothing is written and `None` returned.
    pub async fn commit_once(self, table: &mut DeltaTable, rows: &[RecordBatch]) -> Result<Option<CommitOutcome>, CommitError> {
        let Some(first) = rows.first() else { return Ok(None) };
        if read_progress(table, &self.job_id).await?.is_some_and(|v| v >= self.batch) {
            return Ok(None);
        }
        let adds = crate::write_files(table, first.schema(), &[], rows, 128 << 20).await?;
        Ok(Some(self.with_adds(adds).with_batch_progress().commit(table).await?))
    }
}

/// The `txn` version recorded for `app_id`, if any.
pub async fn read_progress(table: &DeltaTable, app_id: &str) -> Result<Option<i64>, DeltaIoError> {
    let location = table.table_url().to_string();
    let snapshot = table.snapshot().map_err(DeltaIoError::delta(&location))?;
    snapshot.transaction_version(table.log_store().as_ref(), app_id).await.map_err(DeltaIoError::delta(&location))
}
