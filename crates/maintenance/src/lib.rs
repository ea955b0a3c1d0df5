//! Keeping Delta tables healthy for their readers: bin-packing compaction, vacuum, symlink
//! manifests for Hive-style readers (Athena, Presto), Athena DDL, checkpoints.
//!
//! Each operation is a builder over an opened table (`with_*` options) awaited for its
//! metrics, like delta-rs operations.

mod bin_pack;
mod catalog;
mod checkpoint;
mod compact;
mod error;
mod manifest;
mod vacuum;

pub use bin_pack::CompactMetrics;
pub use catalog::{
    athena_ddl, catalog_tables, plan_sync, AthenaDdl, CatalogState, CatalogTables, Column, DesiredCatalog, GlueCatalog, GluePartition,
    GlueTable, PartitionDef, SyncCatalog, SyncMetrics, SyncPlan, TableAction, TableDef, TableFormat,
};
pub use checkpoint::{Checkpoint, CheckpointMetrics};
pub use compact::Compact;
pub use error::MaintenanceError;
pub use manifest::{
    hive_escape, manifests_enabled, partition_directory, update_touched_manifests, ManifestMetrics, Manifests, MANIFEST_DIR,
};
pub use vacuum::{Vacuum, VacuumMetrics, DEFAULT_RETENTION_HOURS};
