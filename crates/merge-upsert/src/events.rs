//! Observable events of merge-upsert: each logs once and updates the run's counters, so logs
//! and the JSON summary never disagree.

use job_runtime::RunSummary;

use crate::merge::MergeMetrics;

/// A batch's MERGE landed in the target.
pub(crate) struct BatchMerged<'a> {
    /// Batch number.
    pub batch: i64,
    /// Target table name.
    pub target: &'a str,
    /// Keys changed by the batch (the latest change of each).
    pub keys: usize,
    /// What the merge did.
    pub metrics: &'a MergeMetrics,
    /// New target version.
    pub version: u64,
    /// Times the commit was retried after a concurrent commit.
    pub retries: u64,
    /// Source table name and its commits not read yet.
    pub lag: (&'a str, u64),
    /// Tombstones kept after the batch.
    pub tombstones: usize,
    /// Memory they hold.
    pub tombstone_bytes: u64,
}

impl BatchMerged<'_> {
    /// Logs and counts.
    pub fn emit(&self, summary: &mut RunSummary) {
        let m = self.metrics;
        summary.wrote(self.target, m.rows_inserted + m.rows_updated);
        summary.committed(self.target, self.version, self.retries);
        summary.source_version_lag(self.lag.0, self.lag.1);
        summary.details.insert("tombstones".into(), (self.tombstones as u64).into());
        summary.state_size(self.tombstone_bytes);
        tracing::info!(
            batch = self.batch,
            keys = self.keys,
            files_scanned = m.files_scanned,
            files_rewritten = m.files_rewritten,
            inserted = m.rows_inserted,
            updated = m.rows_updated,
            deleted = m.rows_deleted,
            stale = m.rows_stale,
            version = self.version,
            "merged"
        );
    }
}

/// Source columns were added to the target (schema evolution).
pub(crate) fn columns_added(columns: &[&String]) {
    tracing::info!(?columns, "added new source columns to the target");
}

/// The tombstone table was rewritten without expired tombstones.
pub(crate) fn tombstones_rewritten(expired: usize) {
    tracing::info!(expired, "tombstones rewritten");
}

/// The checkpoint was behind the target and was rebuilt from the target's commit metadata.
pub(crate) fn checkpoint_rebuilt(behind: &delta_source::CheckpointBehind, after: Option<u64>, to: Option<u64>) {
    tracing::warn!(
        checkpoint = behind.location,
        checkpoint_batch = behind.checkpoint,
        target_batch = behind.sink,
        source_after = after,
        source_to = to,
        "the checkpoint was behind the target: rebuilt from the target's commit of its latest batch; continuing after it"
    );
}

/// A concurrent commit changed what the batch's merge read: merged again on the newest snapshot.
pub(crate) fn merge_replanned(batch: i64, version: u64, overlap: &delta_io::Overlap) {
    tracing::warn!(batch, concurrent_version = version, %overlap, "a concurrent commit changed what the merge read: merging again");
}
