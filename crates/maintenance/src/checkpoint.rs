//! Checkpoints and log cleanup, so log replay stays fast as commits accumulate.

use std::future::{Future, IntoFuture};
use std::pin::Pin;

use deltalake::checkpoints::{cleanup_metadata, create_checkpoint};
use deltalake::table::config::TablePropertiesExt as _;
use deltalake::DeltaTable;
use serde::Serialize;

use crate::MaintenanceError;

/// What a checkpoint run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckpointMetrics {
    /// Version checkpointed.
    pub version: u64,
    /// Expired log files deleted.
    pub log_files_deleted: u64,
}

/// Writes a checkpoint at the table's current version, then deletes log files older than the
/// table's log retention (`delta.logRetentionDuration`, 30 days by default) that a checkpoint
/// makes unnecessary, unless `delta.enableExpiredLogCleanup` is `false`.
pub struct Checkpoint {
    table: DeltaTable,
}

impl Checkpoint {
    /// A checkpoint of `table` at its loaded version.
    pub fn new(table: DeltaTable) -> Self {
        Self { table }
    }

    async fn execute(self) -> Result<CheckpointMetrics, MaintenanceError> {
        let location = self.table.table_url().to_string();
        let snapshot = self.table.snapshot().map_err(MaintenanceError::delta(&location))?;
        let version = snapshot.version();
        let cleanup = snapshot.table_config().enable_expired_log_cleanup();
        create_checkpoint(&self.table, None).await.map_err(MaintenanceError::delta(&location))?;
        let deleted = if cleanup { cleanup_metadata(&self.table, None).await.map_err(MaintenanceError::delta(&location))? } else { 0 };
        Ok(CheckpointMetrics { version, log_files_deleted: deleted as u64 })
    }
}

impl IntoFuture for Checkpoint {
    type Output = Result<CheckpointMetrics, MaintenanceError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.execute())
    }
}
