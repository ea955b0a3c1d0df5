//! Vacuum: delete files no version inside the retention window needs.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::Duration;

use deltalake::logstore::object_store::ObjectStoreExt as _;
use deltalake::operations::vacuum::VacuumMode;
use deltalake::table::config::TablePropertiesExt as _;
use deltalake::{DeltaTable, Path};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::MaintenanceError;

/// Retention when none is given: 7 days, Delta's default, which keeps a week of time travel
/// and outlasts any reader or writer still working from an older version.
pub const DEFAULT_RETENTION_HOURS: u64 = 168;

/// What a vacuum did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct VacuumMetrics {
    /// Whether files were left in place.
    pub dry_run: bool,
    /// Whether files absent from the log were considered too.
    pub full: bool,
    /// Retention applied, in hours.
    pub retention_hours: u64,
    /// Files deleted (or to delete), relative to the table root.
    pub files: Vec<String>,
    /// Their total size in bytes.
    pub bytes: u64,
}

/// Deletes data files that were removed from the table longer ago than the retention; in
/// full mode also files the log never mentions (orphans of failed writers). Retention below
/// the table's configured minimum (`delta.deletedFileRetentionDuration`, 168 h by default) is
/// refused unless explicitly allowed: it can break time travel and running readers.
pub struct Vacuum {
    table: DeltaTable,
    retention_hours: u64,
    allow_short_retention: bool,
    dry_run: bool,
    full: bool,
}

impl Vacuum {
    /// A vacuum of `table` with the default retention.
    pub fn new(table: DeltaTable) -> Self {
        Self { table, retention_hours: DEFAULT_RETENTION_HOURS, allow_short_retention: false, dry_run: false, full: false }
    }

    /// Retention in hours.
    pub fn with_retention_hours(mut self, hours: u64) -> Self {
        self.retention_hours = hours;
        self
    }

    /// Accept a retention below the table's minimum.
    pub fn with_allow_short_retention(mut self, allow: bool) -> Self {
        self.allow_short_retention = allow;
        self
    }

    /// List what would be deleted, delete nothing.
    pub fn with_dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// Also delete files that no log entry refers to.
    pub fn with_full(mut self, full: bool) -> Self {
        self.full = full;
        self
    }

    async fn execute(self) -> Result<(DeltaTable, VacuumMetrics), MaintenanceError> {
        let location = self.table.table_url().to_string();
        let snapshot = self.table.snapshot().map_err(MaintenanceError::delta(&location))?;
        let minimum = snapshot.table_config().deleted_file_retention_duration();
        let retention = Duration::from_secs(self.retention_hours * 3600);
        if retention < minimum && !self.allow_short_retention {
            return Err(MaintenanceError::Refused(format!(
                "vacuum of {location}: a retention of {} h is below the table's minimum of {} h (delta.deletedFileRetentionDuration); \
                 readers and time travel within that window would lose files. Pass --allow-short-retention if no reader or writer can still need them",
                self.retention_hours,
                minimum.as_secs() / 3600
            )));
        }
        let store = self.table.object_store();
        let period = chrono::Duration::from_std(retention).map_err(|e| MaintenanceError::Refused(format!("retention: {e}")))?;
        let (table, result) = self
            .table
            .vacuum()
            .with_retention_period(period)
            .with_enforce_retention_duration(!self.allow_short_retention)
            .with_dry_run(self.dry_run)
            .with_mode(if self.full { VacuumMode::Full } else { VacuumMode::Lite })
            .await
            .map_err(MaintenanceError::delta(&location))?;
        // The file list is what the plan chose; sizes come from the store (already gone
        // after a real run, so they are summed only in a dry run).
        let bytes = if self.dry_run {
            futures::stream::iter(result.files_deleted.iter().cloned())
                .map(|f| {
                    let store = store.clone();
                    async move {
                        match Path::parse(&f) {
                            Ok(p) => store.head(&p).await.map(|m| m.size).or_else(|e| match e {
                                deltalake::ObjectStoreError::NotFound { .. } => Ok(0),
                                e => Err(e),
                            }),
                            Err(_) => Ok(0),
                        }
                    }
                })
                .buffer_unordered(16)
                .try_fold(0u64, |acc, size| async move { Ok(acc + size) })
                .await
                .map_err(MaintenanceError::store(&location))?
        } else {
            0
        };
        let mut files = result.files_deleted;
        files.sort();
        Ok((table, VacuumMetrics { dry_run: self.dry_run, full: self.full, retention_hours: self.retention_hours, files, bytes }))
    }
}

impl IntoFuture for Vacuum {
    type Output = Result<(DeltaTable, VacuumMetrics), MaintenanceError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.execute())
    }
}
