//! Commits that rewrite files (a MERGE, a compaction), checked against concurrent commits.
//!
//! A rewrite decides from a snapshot which files to replace. delta-rs' conflict checker ignores
//! `dataChange=false` removes when it compares them with a commit's own removes, so a
//! compaction that folded a file a merge rewrites would let both land: the replaced rows would
//! live on in the compacted file beside their new versions. And it takes a compaction to have
//! read the whole table, so any concurrent delete fails it. The check is therefore ours, against
//! what each rewrite read: a concurrent commit is an [`Overlap`] when it removed one of the
//! files the rewrite replaces, changed the schema or the job's own progress, or, for a merge
//! (whose changed keys may be in any file), changed any rows. Anything else (an append or a
//! compaction elsewhere, a checkpoint) is rebased over. On an overlap nothing lands and the
//! caller re-plans on the newest snapshot.

use std::collections::{HashMap, HashSet};

use deltalake::kernel::transaction::TransactionError;
use deltalake::kernel::{Action, Add, Remove};
use deltalake::protocol::DeltaOperation;
use deltalake::{DeltaTable, DeltaTableError};

use crate::commit::{commit_with_retries, CommitError, CommitOutcome, CommitParts, WithCommitParts};
use crate::overlap::{overlap, Overlap, ReadSet, Reads};
use crate::DeltaIoError;

/// Rebases of one rewrite commit over concurrent commits that do not overlap it.
const MAX_REBASES: u64 = 20;

/// A row-level change (MERGE): `removes` (files whose rows were rewritten or deleted) and
/// `adds`, with `dataChange=true`, plus `txn` progress, in one atomic commit that lands only
/// if no concurrent commit overlaps what the merge read (see the module docs).
#[derive(Debug, Clone)]
pub struct MergeCommit {
    removes: Vec<Remove>,
    predicate: String,
    parts: CommitParts,
}

impl WithCommitParts for MergeCommit {
    fn parts_mut(&mut self) -> &mut CommitParts {
        &mut self.parts
    }
}

impl MergeCommit {
    /// A merge on `predicate` (recorded in the commit), with nothing in it yet.
    pub fn new(predicate: &str) -> Self {
        Self { removes: Vec::new(), predicate: predicate.to_string(), parts: CommitParts::default() }
    }

    /// Files whose rows were rewritten or deleted.
    pub fn with_removes(mut self, removes: Vec<Remove>) -> Self {
        self.removes = removes;
        self
    }

    /// Commits on the table's loaded snapshot; after concurrent commits, on the newest one if
    /// none of them overlaps ([`CommitError::Overlap`] otherwise: nothing landed).
    pub async fn commit(self, table: &mut DeltaTable) -> Result<CommitOutcome, CommitError> {
        let CommitParts { adds, progress, info } = self.parts;
        let reads = Reads {
            files: self.removes.iter().map(|r| r.path.clone()).collect(),
            set: ReadSet::Rows,
            app_ids: progress.iter().map(|t| t.app_id.clone()).collect(),
        };
        let actions: Vec<Action> = self
            .removes
            .into_iter()
            .map(|r| Action::Remove(Remove { data_change: true, ..r }))
            .chain(adds.into_iter().map(|a| Action::Add(Add { data_change: true, ..a })))
            .chain(progress.into_iter().map(Action::Txn))
            .collect();
        let operation = DeltaOperation::Merge {
            predicate: None,
            merge_predicate: Some(self.predicate),
            matched_predicates: Vec::new(),
            not_matched_predicates: Vec::new(),
            not_matched_by_source_predicates: Vec::new(),
        };
        commit_checked(table, actions, operation, info, &reads).await
    }
}

/// Commits a compaction: `removes` replaced by `adds`, all with `dataChange=false` so
/// incremental readers skip it. `read_version` is the snapshot the files were read from: every
/// commit after it counts as concurrent, also when `table` has been loaded further since (an
/// earlier commit of the same compaction rebased). A concurrent commit that removed one of
/// `removes` is an [`Overlap`] (nothing lands); appends, merges and compactions of other files
/// are not.
pub async fn commit_rewrite(
    table: &mut DeltaTable,
    read_version: Option<u64>,
    removes: Vec<Remove>,
    adds: Vec<Add>,
    predicate: Option<String>,
    target_size: u64,
) -> Result<CommitOutcome, CommitError> {
    let reads = Reads { files: removes.iter().map(|r| r.path.clone()).collect(), set: ReadSet::Files, app_ids: HashSet::new() };
    let actions: Vec<Action> = removes
        .into_iter()
        .map(|r| Action::Remove(Remove { data_change: false, ..r }))
        .chain(adds.into_iter().map(|a| Action::Add(Add { data_change: false, ..a })))
        .collect();
    let operation = DeltaOperation::Optimize { predicate, target_size: target_size as i64 };
    // Commits between the snapshot read and the one loaded now were never checked against
    // these files: check them before the first attempt.
    if table.version() != read_version {
        check_concurrent(table, read_version, &reads).await?;
    }
    commit_checked(table, actions, operation, HashMap::new(), &reads).await
}

/// Commits `actions` on the loaded snapshot, rebasing over concurrent commits that do not
/// overlap `reads`.
async fn commit_checked(
    table: &mut DeltaTable,
    actions: Vec<Action>,
    operation: DeltaOperation,
    info: HashMap<String, serde_json::Value>,
    reads: &Reads,
) -> Result<CommitOutcome, CommitError> {
    let location = table.table_url().to_string();
    for rebases in 0..MAX_REBASES {
        let base = table.version();
        // No retries inside delta-rs: whether a concurrent commit overlaps is decided here.
        match commit_with_retries(table, actions.clone(), operation.clone(), info.clone(), 0).await {
            Ok(done) => return Ok(CommitOutcome { retries: rebases, ..done }),
            Err(DeltaTableError::Transaction { source: TransactionError::MaxCommitAttempts(_) }) => {}
            Err(e) => return Err(DeltaIoError::delta(&location)(e).into()),
        }
        table.update_incremental(None).await.map_err(DeltaIoError::delta(&location))?;
        check_concurrent(table, base, reads).await?;
    }
    Err(CommitError::Busy { attempts: MAX_REBASES })
}

/// Checks the commits after `base` up to the loaded version against what a rewrite read.
async fn check_concurrent(table: &DeltaTable, base: Option<u64>, reads: &Reads) -> Result<(), CommitError> {
    let location = table.table_url().to_string();
    let first = base.map_or(0, |v| v + 1);
    for version in first..=table.version().unwrap_or(0) {
        let entry = table.log_store().read_commit_entry(version).await.map_err(DeltaIoError::delta(&location))?;
        // A concurrent commit already cleaned from the log cannot be checked: assume the worst.
        let Some(entry) = entry else { return Err(CommitError::Overlap { version, overlap: Overlap::Metadata }) };
        let text = String::from_utf8_lossy(&entry);
        let found = overlap(&text, reads).map_err(|e| DeltaIoError::LogEntry { table: location.clone(), version, source: e })?;
        if let Some(overlap) = found {
            return Err(CommitError::Overlap { version, overlap });
        }
    }
    Ok(())
}
