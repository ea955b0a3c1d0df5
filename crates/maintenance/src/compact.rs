//! Bin-packing compaction of small files, safe beside appending writers.

use std::future::{Future, IntoFuture};
use std::num::NonZeroU64;
use std::pin::Pin;
use std::time::Duration;

use deltalake::operations::optimize::OptimizeType;
use deltalake::{DeltaTable, FilterOp, FilterValue};

use crate::bin_pack::BinPack;
use crate::bin_pack::CompactMetrics;
use crate::MaintenanceError;

/// Default target file size: 128 MiB.
pub const DEFAULT_TARGET_SIZE: u64 = 128 << 20;

/// Rewrites each partition's small files into files near a target size (our bin-packer), or
/// z-orders them (delta-rs), committed with `dataChange=false` so incremental readers skip them. Appends to the same table may go on:
/// a blind append does not conflict with a rewrite, and delta-rs retries a commit that lost a
/// race. With a minimum commit interval, a long compaction commits in steps so one conflict
/// does not throw all its work away.
pub struct Compact {
    table: DeltaTable,
    target_size: u64,
    partitions: Vec<(String, String)>,
    zorder: Vec<String>,
    min_commit_interval: Option<Duration>,
}

impl Compact {
    /// Compaction of `table` toward 128 MiB files.
    pub fn new(table: DeltaTable) -> Self {
        Self { table, target_size: DEFAULT_TARGET_SIZE, partitions: Vec::new(), zorder: Vec::new(), min_commit_interval: None }
    }

    /// Target file size in bytes.
    pub fn with_target_size(mut self, bytes: u64) -> Self {
        self.target_size = bytes;
        self
    }

    /// Only partitions where `column = value` (each filter must hold).
    pub fn with_partition_filter(mut self, column: impl Into<String>, value: impl Into<String>) -> Self {
        self.partitions.push((column.into(), value.into()));
        self
    }

    /// Z-order the rewritten files by these columns (clusters rows for data skipping).
    pub fn with_zorder(mut self, columns: Vec<String>) -> Self {
        self.zorder = columns;
        self
    }

    /// Commit finished partitions at least this often.
    pub fn with_min_commit_interval(mut self, interval: Duration) -> Self {
        self.min_commit_interval = Some(interval);
        self
    }

    async fn execute(self) -> Result<(DeltaTable, CompactMetrics), MaintenanceError> {
        let location = self.table.table_url().to_string();
        let snapshot = self.table.snapshot().map_err(MaintenanceError::delta(&location))?;
        let version_before = snapshot.version();
        let columns = snapshot.metadata().partition_columns().to_vec();
        for (column, _) in &self.partitions {
            if !columns.contains(column) {
                return Err(MaintenanceError::Refused(format!(
                    "--partition {column}=...: {column} is not a partition column of {location} (partition columns: {})",
                    if columns.is_empty() { "none".to_string() } else { columns.join(", ") }
                )));
            }
        }
        let target = NonZeroU64::new(self.target_size).ok_or_else(|| MaintenanceError::Refused("--target-size must be above 0".into()))?;
        if self.zorder.is_empty() {
            let bin_pack =
                BinPack { target_size: self.target_size, partitions: self.partitions, min_commit_interval: self.min_commit_interval };
            return bin_pack.run(self.table).await;
        }
        let filters: Vec<_> = self.partitions.iter().map(|(c, v)| (c.as_str(), FilterOp::Eq, FilterValue::Scalar(v.as_str()))).collect();
        // Z-order rewrites whole partitions through delta-rs's optimize.
        let mut builder = self
            .table
            .optimize()
            .with_target_size(target)
            .with_filters(&filters)
            .with_writer_properties(delta_io::writer_properties())
            .with_type(OptimizeType::ZOrder(self.zorder.clone()));
        if let Some(interval) = self.min_commit_interval {
            builder = builder.with_min_commit_interval(interval);
        }
        let (table, m) = builder.await.map_err(MaintenanceError::delta(&location))?;
        let version_after = table.version().unwrap_or(version_before);
        let metrics = CompactMetrics {
            version_before,
            version_after,
            files_removed: m.num_files_removed,
            files_added: m.num_files_added,
            bytes_removed: m.files_removed.total_size.max(0) as u64,
            bytes_added: m.files_added.total_size.max(0) as u64,
            partitions_optimized: m.partitions_optimized,
            files_considered: m.total_considered_files as u64,
            files_skipped: m.total_files_skipped as u64,
            // delta-rs' z-order fails the run on a conflict instead.
            bins_dropped: 0,
        };
        Ok((table, metrics))
    }
}

impl IntoFuture for Compact {
    type Output = Result<(DeltaTable, CompactMetrics), MaintenanceError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.execute())
    }
}
