//! Appends guarded by compare-and-set on `txn` versions.
//!
//! Tasks of one consumer group append blindly to a shared table, each recording its source
//! partitions' progress as `txn` actions. A commit must land only when every partition it
//! records still holds the progress its batch started from: a task that lost a partition while
//! stuck (a zombie) must never land a batch the new owner also wrote. delta-rs fails a commit
//! whose app ids a concurrent commit touched, but only for commits newer than the snapshot it
//! commits on; the check against that snapshot is ours.

use std::collections::HashMap;

use deltalake::kernel::{Add, Transaction};
use deltalake::DeltaTable;

use crate::commit::{read_progress, AppendCommit, CommitError, CommitOutcome, MovedProgress, WithCommitParts};
use crate::DeltaIoError;

/// Attempts of one guarded commit (each after a concurrent commit on one of its app ids that
/// left the expected progress in place).
const MAX_ATTEMPTS: u32 = 20;

/// One `txn` of a guarded commit: the version it records and the one it expects to replace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardedTxn {
    /// Application id (`<job-id>:<topic>:<partition>` for raw-append).
    pub app_id: String,
    /// The version the table must hold for `app_id` (None: no progress yet).
    pub expected: Option<i64>,
    /// The version this commit records.
    pub version: i64,
}

/// A table with the `txn` versions known to hold in its loaded snapshot, so guarded commits
/// read the log only for app ids they have not seen at this snapshot.
pub struct ProgressTable {
    table: DeltaTable,
    /// Versions read from, or committed into, the loaded snapshot.
    known: HashMap<String, Option<i64>>,
}

impl ProgressTable {
    /// Wraps a loaded table.
    pub fn new(table: DeltaTable) -> Self {
        Self { table, known: HashMap::new() }
    }

    /// The table at its loaded snapshot.
    pub fn table(&self) -> &DeltaTable {
        &self.table
    }

    /// The `txn` version of `app_id` in the loaded snapshot.
    pub async fn progress(&mut self, app_id: &str) -> Result<Option<i64>, DeltaIoError> {
        if let Some(version) = self.known.get(app_id) {
            return Ok(*version);
        }
        let version = read_progress(&self.table, app_id).await?;
        self.known.insert(app_id.to_string(), version);
        Ok(version)
    }

    /// Loads the newest version of the table.
    pub async fn refresh(&mut self) -> Result<(), DeltaIoError> {
        let location = self.table.table_url().to_string();
        self.table.update_incremental(None).await.map_err(DeltaIoError::delta(&location))?;
        self.known.clear();
        Ok(())
    }

    /// The table's schema at the loaded snapshot.
    pub fn arrow_schema(&self) -> Result<arrow::datatypes::SchemaRef, DeltaIoError> {
        let location = self.table.table_url().to_string();
        Ok(self.table.snapshot().map_err(DeltaIoError::delta(&location))?.snapshot().arrow_schema())
    }

    /// Adds `fields` the table does not hold yet as nullable columns (a metadata-only commit;
    /// a concurrent one fails it, to be planned again on the refreshed table). Returns the new
    /// version, None when nothing was missing.
    pub async fn add_columns(&mut self, fields: &[arrow::datatypes::Field]) -> Result<Option<u64>, DeltaIoError> {
        let schema = self.arrow_schema()?;
        let missing: Vec<arrow::datatypes::Field> = fields.iter().filter(|f| schema.field_with_name(f.name()).is_err()).cloned().collect();
        if missing.is_empty() {
            return Ok(None);
        }
        crate::add_nullable_columns(&mut self.table, &missing).await?;
        Ok(self.table.version())
    }

    /// The entries of `txns` whose app id does not hold its expected version at the loaded
    /// snapshot.
    async fn moved(&mut self, txns: &[GuardedTxn]) -> Result<Vec<MovedProgress>, DeltaIoError> {
        let mut moved = Vec::new();
        for t in txns {
            let found = self.progress(&t.app_id).await?;
            if found != t.expected {
                moved.push(MovedProgress { app_id: t.app_id.clone(), expected: t.expected, found });
            }
        }
        Ok(moved)
    }

    /// Commits `adds` with `txns` in one atomic commit, only if every app id still holds its
    /// expected version ([`CommitError::ProgressMoved`] otherwise, after checking the newest
    /// snapshot; nothing lands). Concurrent commits on other app ids are retried by delta-rs;
    /// one on our app ids that left the expected versions in place (the previous owner's
    /// last commit, seen late) is retried on the newest snapshot.
    pub async fn commit_append(
        &mut self,
        adds: Vec<Add>,
        txns: Vec<GuardedTxn>,
        job_id: &str,
        batch_id: i64,
        app_metadata: HashMap<String, serde_json::Value>,
    ) -> Result<CommitOutcome, CommitError> {
        let mut refreshed = false;
        for attempt in 0..MAX_ATTEMPTS {
            let moved = self.moved(&txns).await?;
            if !moved.is_empty() {
                if refreshed {
                    return Err(CommitError::ProgressMoved { moved });
                }
                self.refresh().await?;
                refreshed = true;
                continue;
            }
            let progress = txns.iter().map(|t| Transaction::new(&t.app_id, t.version)).collect();
            let append =
                AppendCommit::new(job_id, batch_id).with_adds(adds.clone()).with_progress(progress).with_info(app_metadata.clone());
            match append.commit(&mut self.table).await {
                Ok(mut done) => {
                    if done.retries > 0 {
                        // Rebased over other commits: what we knew of other app ids may be stale.
                        self.known.clear();
                    }
                    self.known.extend(txns.iter().map(|t| (t.app_id.clone(), Some(t.version))));
                    done.retries += u64::from(attempt);
                    return Ok(done);
                }
                Err(CommitError::ProgressConflict) => {
                    self.refresh().await?;
                    refreshed = true;
                }
                // Another task added columns: our files, written without them, are still rows
                // of the table as long as every column they hold kept its type.
                Err(CommitError::MetadataChanged) => {
                    let before = self.arrow_schema()?;
                    self.refresh().await?;
                    refreshed = true;
                    if !still_holds(self.arrow_schema()?.as_ref(), &before) {
                        return Err(CommitError::MetadataChanged);
                    }
                    tracing::info!(table = %self.table.table_url(), "a concurrent commit added columns: committing again on the newest snapshot");
                }
                Err(e) => return Err(e),
            }
        }
        Err(CommitError::ProgressConflict)
    }
}

/// Every field of `before` is in `now` with the same type (columns were only added).
fn still_holds(now: &arrow::datatypes::Schema, before: &arrow::datatypes::Schema) -> bool {
    before.fields().iter().all(|f| now.field_with_name(f.name()).is_ok_and(|n| n.data_type() == f.data_type()))
}
